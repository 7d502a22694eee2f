//! The data plane: carries TCP connections hop by hop over the mesh
//! (docs/architecture.md, "Data plane"; docs/adr/0013-data-plane.md).
//!
//! `trellis connect NAME --listen ADDR` opens a TCP listener at the ingress node. Each
//! accepted connection becomes a QUIC bidirectional stream, opened with a
//! [`wire::StreamHeader`], on the peer connection to the next hop of the best route for
//! NAME; every hop looks NAME up in its own table and does the same (hop by hop, as IP);
//! the node that originates NAME connects to its endpoint. Bytes then flow both ways
//! through [`relay`].
//!
//! The seams:
//! - [`Dataplane`] is what the node assembles, stops, and serves `connect` requests with;
//! - [`Links`] is what a session hands its peer connection to once it is up, and takes it
//!   back from when it ends (so a stream never outlives its peer's session);
//! - [`Table`] is how the data plane reads the routing table and the trust store,
//!   without depending on the node module.
//!
//! Authorization ([`trellis_policy::access`]) is checked at the ingress for the node
//! itself and at the origin for the requester the header names; transit hops check the
//! hop limit, their route and their limits. Every refusal is a reset with a reason
//! ([`wire::Reset`]), counted and logged.

mod decide;
mod forward;
mod ingress;
mod links;
mod relay;
mod stats;
mod store;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trellis_policy::access::AccessRules;
use trellis_policy::cedar::{Act, Resource, Shared, Subject};
use trellis_routing::{NodeId, Relationship, ServiceName};

pub use links::Links;

use crate::admin::ConnectInfo;
use stats::{ServiceGauges, Stats};

/// Where a service is reached from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// This node originates it: connect to the endpoint.
    Local(SocketAddr),
    /// Forward to this peer.
    Via(NodeId),
}

/// The best route of a service, as forwarding needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Where it leads.
    pub hop: Hop,
    /// How it entered the org (decides to which peers it is announced).
    pub learned_from: Relationship,
}

/// What the data plane reads from the rest of the node.
pub trait Table: Send + Sync + 'static {
    /// The best route for `service` (longest suffix match), if any.
    fn resolve(&self, service: &ServiceName) -> Option<Route>;
    /// Whether the node is revoked by its org's trust snapshot.
    fn revoked(&self, node: &NodeId) -> bool;
    /// How a configured peer relates to this node (`Internal` inside the org).
    fn relationship(&self, peer: &NodeId) -> Option<Relationship>;
}

/// The `[dataplane]` config section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Streams one peer may have open through this node at once; more are refused with
    /// `peer_limit` (and QUIC stops the peer a few streams later).
    pub max_streams_per_peer: u32,
    /// Streams one service may have through this node at once.
    pub max_streams_per_service: u32,
    /// A stream with nothing moving either way for this long is reset.
    pub idle_timeout: Duration,
    /// Most QUIC hops a stream may travel.
    pub max_hops: u8,
    /// Bytes a peer may send on one stream before this node reads them (QUIC window).
    pub stream_window: u32,
    /// Bound on connecting to an endpoint, opening a stream to a next hop, and a header.
    pub connect_timeout: Duration,
    /// Who may reach which service; `None`: the own org may reach everything.
    pub allow: Option<AccessRules>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_streams_per_peer: 256,
            max_streams_per_service: 1024,
            idle_timeout: Duration::from_secs(300),
            max_hops: 16,
            stream_window: 512 * 1024,
            connect_timeout: Duration::from_secs(5),
            allow: None,
        }
    }
}

/// Streams a peer may open beyond its limit before QUIC stops it: the limit is enforced
/// by refusing (counted), the QUIC limit is the backstop.
pub const PEER_STREAM_HEADROOM: u32 = 16;

impl Settings {
    /// Bidirectional streams a peer connection allows: the session's, the data plane's
    /// limit and the headroom.
    pub fn quic_streams(&self) -> u32 {
        self.max_streams_per_peer
            .saturating_add(PEER_STREAM_HEADROOM)
            .saturating_add(1)
    }

    /// The connection-level QUIC window: every stream's window plus room for the session,
    /// so data streams stalled by a slow receiver can never starve the routing session.
    pub fn connection_window(&self, session_room: u32) -> u32 {
        let streams = u64::from(self.quic_streams()) * u64::from(self.stream_window);
        u32::try_from(streams + u64::from(session_room)).unwrap_or(u32::MAX)
    }
}

/// The shared state of the data plane.
pub(crate) struct Engine {
    local: NodeId,
    settings: Settings,
    policies: Arc<Shared>,
    table: Arc<dyn Table>,
    links: links::LinkMap,
    stats: Stats,
    services: ServiceGauges,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
}

impl Engine {
    /// Whether the policies in force let `requester` reach `service`
    /// (`connect_to_service`); `Err` names the policies that forbade it, if any.
    fn may_connect(&self, requester: &NodeId, service: &ServiceName) -> Result<(), String> {
        let verdict = self.policies.decide(
            &Subject::Node {
                id: requester.as_str().to_owned(),
            },
            Act::ConnectToService,
            &Resource::Service {
                name: service.as_str().to_owned(),
                org: service
                    .as_str()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            },
        );
        if verdict.allowed {
            return Ok(());
        }
        Err(match verdict.policies.as_slice() {
            [] => format!("no policy lets {requester} reach {service}"),
            names => format!(
                "{requester} may not reach {service} (forbidden by {})",
                names.join(", ")
            ),
        })
    }

    /// Counts and logs a refusal decided here.
    fn refuse(&self, reset: wire::Reset, service: &str, detail: &str) {
        self.stats.refused(reset);
        tracing::info!(
            service,
            reason = reset.name(),
            detail,
            "data-plane stream refused"
        );
    }
}

/// The data plane of one node.
pub struct Dataplane {
    engine: Arc<Engine>,
    listeners: Mutex<BTreeMap<SocketAddr, ingress::Listener>>,
    db: PathBuf,
}

impl Dataplane {
    /// Starts the data plane of `local` (no listeners yet; see [`Dataplane::restore`]).
    /// Must be called inside the node's runtime.
    pub fn new(
        local: NodeId,
        settings: Settings,
        table: Arc<dyn Table>,
        policies: Arc<Shared>,
        db: PathBuf,
        shutdown: CancellationToken,
    ) -> Self {
        let engine = Arc::new(Engine {
            local,
            settings,
            policies,
            table,
            links: links::LinkMap::default(),
            stats: Stats::new(),
            services: ServiceGauges::default(),
            shutdown,
            runtime: tokio::runtime::Handle::current(),
        });
        Self {
            engine,
            listeners: Mutex::default(),
            db,
        }
    }

    /// Opens the listeners kept in `node.db` (a listener whose address is taken retries
    /// in the background and says so in `connect list`).
    pub fn restore(&self) {
        let stored = match store::load(&self.db) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "connect listeners could not be read from node.db");
                return;
            }
        };
        for (service, listen) in stored {
            let listener = ingress::Listener::start_retrying(&self.engine, service, listen);
            self.lock().insert(listen, listener);
        }
    }

    /// What a session hands its connection to.
    pub fn links(&self) -> Links {
        Links::new(self.engine.clone())
    }

    /// The counters for `status`.
    pub fn counters(&self) -> Vec<(String, Arc<AtomicU64>)> {
        self.engine.stats.named()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, ingress::Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a listener at `listen` for `service` and keeps it across restarts.
    pub async fn connect(
        &self,
        service: ServiceName,
        listen: SocketAddr,
    ) -> Result<ConnectInfo, String> {
        if service.is_wildcard() {
            return Err("connect to a service, not an aggregate".into());
        }
        if self.lock().contains_key(&listen) {
            return Err(format!("{listen} is already a connect listener"));
        }
        let listener = ingress::Listener::bind(&self.engine, service.clone(), listen).await?;
        let db = self.db.clone();
        let stored = service.clone();
        tokio::task::spawn_blocking(move || store::insert(&db, &stored, listen))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("not kept: node.db: {e}"))?;
        let info = self.info(listen, &listener);
        self.lock().insert(listen, listener);
        tracing::info!(%service, %listen, "connect listener opened");
        Ok(info)
    }

    /// Closes the listeners whose address or service is `target`; open connections
    /// through them go on until they end.
    pub async fn remove(&self, target: &str) -> Result<Vec<ConnectInfo>, String> {
        let matching: Vec<SocketAddr> = self
            .lock()
            .iter()
            .filter(|(addr, l)| addr.to_string() == target || l.service.as_str() == target)
            .map(|(addr, _)| *addr)
            .collect();
        if matching.is_empty() {
            return Err(format!("no connect listener is {target}"));
        }
        let db = self.db.clone();
        let gone = matching.clone();
        tokio::task::spawn_blocking(move || store::delete(&db, &gone))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("node.db: {e}"))?;
        let mut removed = Vec::new();
        for addr in matching {
            if let Some(listener) = self.lock().remove(&addr) {
                removed.push(self.info(addr, &listener));
                tracing::info!(service = %listener.service, listen = %addr, "connect listener closed");
            }
        }
        Ok(removed)
    }

    /// Every listener with its counters.
    pub fn list(&self) -> Vec<ConnectInfo> {
        self.lock()
            .iter()
            .map(|(addr, l)| self.info(*addr, l))
            .collect()
    }

    fn info(&self, listen: SocketAddr, l: &ingress::Listener) -> ConnectInfo {
        let route = match self.engine.table.resolve(&l.service).map(|r| r.hop) {
            Some(Hop::Local(endpoint)) => Some(format!("local {endpoint}")),
            Some(Hop::Via(next)) => Some(next.as_str().to_owned()),
            None => None,
        };
        ConnectInfo {
            service: l.service.as_str().to_owned(),
            listen: listen.to_string(),
            listening: l.listening(),
            next_hop: route,
            active: l.stats.active.load(Ordering::Relaxed) as u64,
            connections: l.stats.connections.load(Ordering::Relaxed),
            refused: l.stats.refused.load(Ordering::Relaxed),
            bytes_sent: l.stats.sent.load(Ordering::Relaxed),
            bytes_received: l.stats.received.load(Ordering::Relaxed),
            last_error: l.stats.last_error(),
        }
    }

    /// Closes every listener and peer link; open streams end with `shutting_down` (the
    /// shutdown token is the node's).
    pub fn stop(&self) {
        self.lock().clear();
        self.engine.links.clear();
    }
}
