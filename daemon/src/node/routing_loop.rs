//! The routing loop: the one task that owns the node's `trellis_routing::Router`.
//!
//! It selects over operator commands (first), session events and the router's next timer,
//! feeds each to `Router::handle`, and drains `poll_output`: messages go to the sessions'
//! bounded queues (a full queue means the peer is not reading: the session is closed),
//! best-route changes go to the read model and the store writer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use trellis_routing::{
    DisconnectReason, Input, NodeId, Output, PeerConfig, ProtocolHint, Relationship, Router,
    ServiceName,
};
use trellis_schemas::peering_capnp::CloseReason;

use super::route_store::{protocol_name, StoreOp};
use super::trust::TrustStore;
use super::view::View;
use super::view_route::{hop_names, origin_check, BestRoute};
use super::NodeStore;
use crate::admin::{ApiError, ErrorKind, PathInfo, PeerInfo, ReloadReport, RouteDetail, RouteInfo};
use crate::session::{new_connection_wins, ConnId, Event, Outgoing, SessionHandle};
use crate::util::time::now_secs;

/// A peer the node should have a session with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Its node id.
    pub node: NodeId,
    /// Where to dial it (`None`: only accept).
    pub address: Option<SocketAddr>,
    /// Its role.
    pub role: Relationship,
    /// Configured link cost (the peer's score weighs it, ADR 0014).
    pub link_cost: u32,
    /// Configured trust, 0..=100 (100 inside the org).
    pub trust: u32,
    /// Local preference.
    pub local_pref: u32,
    /// Max routes.
    pub max_routes: usize,
    /// Where it is configured.
    pub source: String,
    /// Its own failure detection (ping interval, multiplier), if not the node's.
    pub detection: Option<(std::time::Duration, u32)>,
}

/// Starts and stops dialers (handled by the runtime).
#[derive(Debug)]
pub enum DialCmd {
    /// Keep a session with this peer up.
    Start(PeerSpec),
    /// Stop dialing this peer.
    Stop(NodeId),
    /// Probe a selection candidate: handshake, measure, close ([`Event::Probed`]).
    Probe(NodeId, SocketAddr),
}

/// An operator command, answered on `reply`.
#[derive(Debug)]
pub enum Command {
    /// Originate a service.
    Advertise {
        /// Service.
        service: ServiceName,
        /// Protocol.
        protocol: ProtocolHint,
        /// Endpoint.
        endpoint: String,
        /// Answer.
        reply: oneshot::Sender<Result<RouteInfo, ApiError>>,
    },
    /// Stop originating.
    Withdraw {
        /// Service.
        service: ServiceName,
        /// Answer.
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Originate many services as one committed change (`routes advertise --file`).
    AdvertiseMany {
        /// Service, protocol, endpoint.
        routes: Vec<(ServiceName, ProtocolHint, String)>,
        /// Answer, once committed.
        reply: oneshot::Sender<Result<crate::admin::BulkResult, ApiError>>,
    },
    /// Stop originating many services as one committed change.
    WithdrawMany {
        /// Services.
        services: Vec<ServiceName>,
        /// Answer, once committed.
        reply: oneshot::Sender<Result<crate::admin::BulkResult, ApiError>>,
    },
    /// Add a peer.
    AddPeer {
        /// The peer.
        spec: PeerSpec,
        /// Persist it (added by an operator).
        persist: bool,
        /// Answer.
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Remove a peer.
    RemovePeer {
        /// The peer.
        node: NodeId,
        /// Answer.
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Reset a peer's session.
    ResetPeer {
        /// The peer.
        node: NodeId,
        /// Answer.
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Every path of a service.
    ShowRoute {
        /// Service.
        service: ServiceName,
        /// Answer.
        reply: oneshot::Sender<RouteDetail>,
    },
    /// Apply a trust snapshot fetched from the authority.
    ApplySnapshot {
        /// Encoded envelope.
        envelope: Vec<u8>,
    },
    /// A config reload: the peers the config and peering files now name (runtime
    /// `peers add` peers are left alone).
    ReplacePeers {
        /// Every wanted peer.
        specs: Vec<PeerSpec>,
        /// Answer.
        reply: oneshot::Sender<ReloadReport>,
    },
    /// The node certificate was renewed: re-sign the manifest with it.
    CertificateRenewed {
        /// New expiry.
        not_after: u64,
    },
}

struct Current {
    conn: ConnId,
    dialer: NodeId,
    /// Serial of the peer's certificate on this connection.
    serial: Vec<u8>,
    handle: SessionHandle,
    up: bool,
    /// When it came up.
    up_since: Option<Instant>,
    /// When the peer last dialed again while this session was up (and it was probed).
    redialed_at: Option<Instant>,
}

/// The loop's state.
pub struct RoutingLoop {
    pub(super) router: Router,
    pub(super) local: NodeId,
    pub(super) peers: HashMap<NodeId, PeerSpec>,
    pub(super) admitted: Arc<RwLock<HashSet<NodeId>>>,
    pub(super) view: Arc<View>,
    pub(super) store: SyncSender<StoreOp>,
    pub(super) trust: Arc<TrustStore>,
    pub(super) node_store: NodeStore,
    pub(super) ca_der: Vec<u8>,
    pub(super) own_snapshot: Option<Arc<Vec<u8>>>,
    pub(super) dial: mpsc::UnboundedSender<DialCmd>,
    sessions: HashMap<NodeId, Current>,
    epochs: HashMap<NodeId, u64>,
    /// Last session epoch handed out; starts above every epoch in the store.
    last_epoch: u64,
    /// Most peers configured at once (`limits.max_peers`).
    max_peers: usize,
    /// Route limit of a peer added without one (`limits.max_routes_per_peer`).
    default_max_routes: usize,
    /// Peers refused for a while after exceeding their max-routes limit.
    holdoff: super::holdoff::HoldOff,
    /// Every peer's score: measured RTT, loss, failures and trust → link cost.
    scores: super::scores::Scores,
    /// Peer selection inside the org, with `[selection]` (ADR 0015).
    selection: Option<super::selection::Selection>,
    /// The Cedar policies in force (ADR 0016): peer sessions and originations ask them.
    policies: Option<Arc<trellis_policy::cedar::Shared>>,
    /// Spans, trace context and histograms for telemetry.
    pub(super) observer: super::observe::Observer,
}

/// A session up this long is kept when the peer connects again (the new connection is
/// refused and the old one probed: if the peer restarted, the probe draws a stateless
/// reset and the peer's next dial gets in). Above the time both sides need to see a
/// session up (one round trip), so both sides almost always decide alike; when they do
/// not, both connections close and the next dial settles it.
const ESTABLISHED_WINS_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// A session lost within this long of its peer dialing again counts as the peer's
/// restart (graceful): the probe's stateless reset arrives within a round trip.
const RESTART_DETECTION: std::time::Duration = std::time::Duration::from_secs(5);

/// How long an operator change waits for its commit before the answer says it is not
/// saved yet.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn api(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

/// Whether a session that ended with `reason` failed (and counts against the peer's
/// score): not when an operator or a shutdown closed it, a newer connection replaced it,
/// or the peer is no longer configured or revoked.
fn is_failure(reason: &str) -> bool {
    ![
        "admin shutdown",
        "collision resolved",
        "peer unconfigured",
        "revoked",
    ]
    .iter()
    .any(|benign| reason.starts_with(benign))
}

impl RoutingLoop {
    /// A loop over `router` (peers already added to it and listed in `peers`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        router: Router,
        peers: HashMap<NodeId, PeerSpec>,
        admitted: Arc<RwLock<HashSet<NodeId>>>,
        view: Arc<View>,
        store: SyncSender<StoreOp>,
        trust: Arc<TrustStore>,
        node_store: NodeStore,
        ca_der: Vec<u8>,
        own_snapshot: Option<Arc<Vec<u8>>>,
        dial: mpsc::UnboundedSender<DialCmd>,
    ) -> Self {
        let local = router.local().clone();
        let this = Self {
            router,
            local,
            peers,
            admitted,
            view,
            store,
            trust,
            node_store,
            ca_der,
            own_snapshot,
            dial,
            sessions: HashMap::new(),
            epochs: HashMap::new(),
            last_epoch: 0,
            max_peers: usize::MAX,
            default_max_routes: 10_000,
            holdoff: super::holdoff::HoldOff::new(std::time::Duration::ZERO),
            scores: super::scores::Scores::new(Default::default(), Vec::new()),
            selection: None,
            policies: None,
            observer: super::observe::Observer::default(),
        };
        for spec in this.peers.values() {
            this.show_peer(spec, "connecting", None);
        }
        this
    }

    /// Uses `scores` (with the states restored from `node.db`); before peers are added.
    pub(super) fn set_scores(&mut self, scores: super::scores::Scores) {
        self.scores = scores;
    }

    /// Asks `policies` before each peer session and origination (ADR 0016).
    pub(super) fn set_policies(&mut self, policies: Arc<trellis_policy::cedar::Shared>) {
        self.policies = Some(policies);
    }

    /// Whether the policies in force decide `act` alike for every route (then a bulk load
    /// asks once, not once per route).
    pub(super) fn policy_uniform_over_routes(&self, act: trellis_policy::cedar::Act) -> bool {
        self.policies
            .as_ref()
            .is_none_or(|p| p.current().uniform_over_routes(act))
    }

    /// Whether the policies allow `act` on `resource` by `subject`; `Err` says why not.
    pub(super) fn policy_allows(
        &self,
        subject: &trellis_policy::cedar::Subject,
        act: trellis_policy::cedar::Act,
        resource: &trellis_policy::cedar::Resource,
    ) -> Result<(), String> {
        let Some(policies) = &self.policies else {
            return Ok(());
        };
        let verdict = policies.decide(subject, act, resource);
        if verdict.allowed {
            return Ok(());
        }
        Err(match verdict.policies.as_slice() {
            [] => format!("{} is not allowed by the policies in force", act.name()),
            names => format!("{} forbidden by {}", act.name(), names.join(", ")),
        })
    }

    /// Chooses peers among the org's directory with `selection` (ADR 0015).
    pub(super) fn set_selection(&mut self, selection: super::selection::Selection) {
        self.selection = Some(selection);
    }

    /// Caps the number of configured peers and sets the route limit of a peer added
    /// without one.
    pub(super) fn set_limits(
        &mut self,
        max_peers: usize,
        default_max_routes: usize,
        max_routes_restart: std::time::Duration,
    ) {
        self.max_peers = max_peers;
        self.default_max_routes = default_max_routes;
        self.holdoff = super::holdoff::HoldOff::new(max_routes_restart);
    }

    /// Session epochs of this run start above `max_stored`.
    pub(super) fn set_epoch_base(&mut self, max_stored: u64) {
        self.last_epoch = self.last_epoch.max(max_stored);
    }

    /// Answers `reply` with `value` once everything persisted so far is committed, so an
    /// acknowledged operator change survives a crash.
    fn reply_when_durable<T: Send + 'static>(
        &self,
        reply: oneshot::Sender<Result<T, ApiError>>,
        value: Result<T, ApiError>,
    ) {
        self.reply_when_durable_within(reply, value, DURABLE_WAIT);
    }

    /// As `reply_when_durable`, waiting at most `wait` for the commit (bulk loads).
    pub(super) fn reply_when_durable_within<T: Send + 'static>(
        &self,
        reply: oneshot::Sender<Result<T, ApiError>>,
        value: Result<T, ApiError>,
        wait: std::time::Duration,
    ) {
        let Ok(value) = value else {
            let _ = reply.send(value);
            return;
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        self.persist(StoreOp::Barrier(ack_tx));
        tokio::spawn(async move {
            let not_saved = |why: String| {
                api(
                    ErrorKind::Internal,
                    format!(
                        "applied, but not yet saved to node.db ({why}); retried in the background"
                    ),
                )
            };
            let answer = match tokio::time::timeout(wait, ack_rx).await {
                Ok(Ok(Ok(()))) => Ok(value),
                Ok(Ok(Err(e))) => Err(not_saved(e)),
                Ok(Err(_)) => Err(not_saved("the store writer stopped".into())),
                Err(_) => Err(not_saved(format!("no commit within {} s", wait.as_secs()))),
            };
            let _ = reply.send(answer);
        });
    }

    /// Records an event in the node's log (`trellis audit`).
    pub(super) fn log_event(&self, kind: &str, subject: &str, detail: String) {
        self.persist(StoreOp::Event {
            kind: kind.into(),
            subject: subject.into(),
            detail,
        });
    }

    pub(super) fn persist(&self, op: StoreOp) {
        if self.store.send(op).is_err() {
            tracing::error!("the store writer stopped; changes are no longer persisted");
        }
    }

    fn show_peer(&self, spec: &PeerSpec, state: &str, error: Option<String>) {
        let mut view = self.view.write();
        let entry = view
            .peers
            .entry(spec.node.as_str().to_owned())
            .or_insert_with(|| PeerInfo {
                node_id: spec.node.as_str().to_owned(),
                ..PeerInfo::default()
            });
        entry.address = spec.address.map(|a| a.to_string()).unwrap_or_default();
        entry.role = spec.role.name().into();
        entry.source = spec.source.clone();
        entry.link_cost = spec.link_cost;
        self.scores.show(Instant::now(), &spec.node, entry);
        if entry.state != state {
            entry.state = state.into();
            entry.since = now_secs();
            if state == "up" {
                entry.sessions += 1;
            }
        }
        if error.is_some() {
            entry.last_error = error;
        }
        entry.routes_received = self.router.peer_routes(&spec.node);
    }

    fn refresh_peer_counts(&self) {
        let mut view = self.view.write();
        for (id, info) in &mut view.peers {
            if let Ok(node) = NodeId::new(id) {
                info.routes_received = self.router.peer_routes(&node);
            }
        }
    }

    /// Runs until both channels close.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<Event>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let timer = self
                .router
                .poll_timeout()
                .into_iter()
                .chain(self.holdoff.next_end())
                .chain(self.selection.as_ref().map(|s| s.next_round()))
                .chain(self.observer.deadline())
                .min()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| {
                    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
                });
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                () = tokio::time::sleep_until(timer) => {
                    self.router.handle(Instant::now(), Input::Tick);
                    self.release_held_off(Instant::now());
                    self.select(Instant::now());
                }
            }
            self.drain();
            self.observer.tick(Instant::now());
        }
        for current in self.sessions.values() {
            current
                .handle
                .kill
                .kill(CloseReason::AdminShutdown, "node shutting down");
        }
    }

    fn drain(&mut self) {
        let mut changed = false;
        let mut bests = Vec::new();
        while let Some(output) = self.router.poll_output() {
            match output {
                Output::Send {
                    peer,
                    message: trellis_routing::Message::Update(batch),
                } => self.send(&peer, self.observer.outgoing(batch)),
                Output::Send { peer, message } => self.send(&peer, Outgoing::Message(message)),
                Output::Disconnect { peer, reason } => {
                    let code = match reason {
                        DisconnectReason::Malformed(_) => CloseReason::MalformedMessage,
                        DisconnectReason::MaxRoutes { .. } => CloseReason::MaxRoutesExceeded,
                    };
                    self.view.count("sessions_closed_by_policy", 1);
                    if let Some(current) = self.sessions.get(&peer) {
                        current.handle.kill.kill(code, reason.to_string());
                    }
                    if code == CloseReason::MaxRoutesExceeded {
                        self.hold_off(&peer, &reason.to_string());
                    }
                }
                Output::BestChanged { service, best } => {
                    changed = true;
                    bests.push(self.on_best(service, best));
                }
                Output::ManifestRejected { from, error } => {
                    tracing::warn!(from = from.as_ref().map(NodeId::as_str), error = %error, "origin manifest refused");
                }
            }
        }
        if !bests.is_empty() {
            self.persist(StoreOp::Bests(bests));
        }
        if changed {
            self.observer.best_changed(Instant::now());
            self.refresh_peer_counts();
        }
        self.view.set_router_stats(self.router.stats());
    }

    /// Shows a new best route; returns what the store keeps of it.
    fn on_best(
        &mut self,
        service: ServiceName,
        best: Option<trellis_routing::Best>,
    ) -> (ServiceName, Option<super::route_store::StoredBest>) {
        match &best {
            None => {
                self.view.write().routes.remove(service.as_str());
            }
            Some(b) => {
                let route = BestRoute {
                    next_hop: b.next_hop.clone(),
                    attrs: b.attrs.clone(),
                    metric: b.metric,
                    verified: self.router.origin_verified(&b.attrs.origin),
                };
                self.view.write().routes.insert(service.clone(), route);
            }
        }
        let best = best.map(|b| (b.next_hop.clone(), b.metric, b.attrs.origin.clone()));
        (service, best)
    }

    /// Stops dialing and admitting peers whose node id is now revoked (for good: a revoked
    /// node id never comes back), and notes it when this node itself is revoked.
    fn stop_revoked_peers(&mut self, revoked: &[NodeId]) {
        for node in revoked {
            if node == &self.local {
                tracing::error!("this node is revoked by its authority; peers refuse it");
                self.view.write().revoked = true;
                self.log_event(
                    "node.revoked",
                    node.as_str(),
                    "in the own trust snapshot".into(),
                );
                continue;
            }
            let Some(spec) = self.peers.get(node).cloned() else {
                continue;
            };
            self.admitted
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(node);
            let _ = self.dial.send(DialCmd::Stop(node.clone()));
            self.show_peer(&spec, "revoked", Some("revoked by its authority".into()));
        }
    }

    /// Re-labels every best route's origin check (a CA may have become known).
    fn refresh_origin_checks(&self) {
        let mut view = self.view.write();
        for route in view.routes.values_mut() {
            route.verified = self.router.origin_verified(&route.attrs.origin);
        }
    }

    /// Deletes what a peer that is no longer configured sent, from the store.
    pub(super) fn forget_peer_routes(&self, peer: NodeId) {
        self.persist(StoreOp::PeerCleared { peer });
    }

    /// Records the best routes found while restoring from the store (one store op).
    pub(super) fn restore_bests(
        &mut self,
        bests: Vec<(ServiceName, Option<trellis_routing::Best>)>,
    ) {
        let kept: Vec<_> = bests
            .into_iter()
            .map(|(service, best)| self.on_best(service, best))
            .collect();
        if !kept.is_empty() {
            self.persist(StoreOp::Bests(kept));
        }
    }

    fn send(&self, peer: &NodeId, item: Outgoing) {
        let Some(current) = self.sessions.get(peer).filter(|c| c.up) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = current.handle.tx.try_send(item) {
            self.view.count("sessions_send_queue_full", 1);
            current.handle.kill.kill(
                CloseReason::SendHoldTimerExpired,
                "outbound queue full: the peer is not reading",
            );
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Register {
                peer,
                conn,
                dialer,
                serial,
                handle,
                reply,
            } => {
                let accept = self.register(&peer, conn, dialer, serial, handle, now);
                let _ = reply.send(accept);
            }
            Event::Up { peer, conn, .. } => {
                let Some(current) = self.sessions.get_mut(&peer).filter(|c| c.conn == conn) else {
                    return;
                };
                current.up = true;
                current.up_since = Some(now);
                self.last_epoch += 1;
                self.epochs.insert(peer.clone(), self.last_epoch);
                self.router
                    .handle(now, Input::SessionUp { peer: peer.clone() });
                self.view.count("sessions_established", 1);
                if let Some(selection) = self.selection.as_mut() {
                    selection.up(&peer);
                }
                if let Some(spec) = self.peers.get(&peer) {
                    self.show_peer(spec, "up", None);
                }
                self.persist(StoreOp::Event {
                    kind: "session.up".into(),
                    subject: peer.as_str().into(),
                    detail: String::new(),
                });
                if let Some(snapshot) = self.own_snapshot.clone() {
                    self.send(&peer, Outgoing::TrustSnapshot(snapshot));
                }
            }
            Event::Down {
                peer,
                conn,
                graceful,
                reason,
            } => {
                if self.sessions.get(&peer).is_none_or(|c| c.conn != conn) {
                    return;
                }
                let Some(current) = self.sessions.remove(&peer) else {
                    return;
                };
                // A session that ends right after its peer dialed again ended because the
                // peer restarted (RFC 4724's receiving speaker): keep its routes as stale
                // until its new session refreshes them, instead of withdrawing them for
                // the few milliseconds until it is back.
                let graceful = graceful
                    || current
                        .redialed_at
                        .is_some_and(|t| now.saturating_duration_since(t) <= RESTART_DETECTION);
                if current.up {
                    if is_failure(&reason) {
                        self.scores.failure(now, &peer);
                    }
                    self.router.handle(
                        now,
                        Input::SessionDown {
                            peer: peer.clone(),
                            graceful,
                        },
                    );
                    if !graceful {
                        self.persist(StoreOp::PeerCleared { peer: peer.clone() });
                    }
                }
                if let Some(spec) = self.peers.get(&peer) {
                    if self.holdoff.holds(&peer, Instant::now()) {
                        // Keeps the hold-off's own line, which says for how long.
                        self.show_peer(spec, "held off", None);
                    } else if self.trust.is_revoked(&peer, &[]) {
                        self.show_peer(spec, "revoked", None);
                    } else {
                        self.show_peer(spec, "connecting", Some(reason.clone()));
                    }
                }
                self.persist(StoreOp::Event {
                    kind: "session.down".into(),
                    subject: peer.as_str().into(),
                    detail: reason,
                });
                if self.selection.as_mut().is_some_and(|s| s.down(now, &peer)) {
                    let _ = self.remove_peer(now, &peer, "selection: session ended");
                    self.show_selection();
                }
            }
            Event::Update {
                peer,
                conn,
                batch,
                trace,
            } => {
                if !self.is_current(&peer, conn) {
                    return;
                }
                let span = self.observer.batch_span(&peer, &batch, trace);
                let _entered = span.enter();
                let epoch = self.epochs.get(&peer).copied().unwrap_or(0);
                self.view.count("updates_received", 1);
                self.router.handle(
                    now,
                    Input::Update {
                        peer: peer.clone(),
                        batch: batch.clone(),
                    },
                );
                if self.router.peer_up(&peer) {
                    self.persist(StoreOp::PeerBatch { peer, epoch, batch });
                }
                self.observer.batch_done(now.elapsed());
            }
            Event::EndOfTable { peer, conn } => {
                if !self.is_current(&peer, conn) {
                    return;
                }
                self.router
                    .handle(now, Input::EndOfTable { peer: peer.clone() });
                let epoch = self.epochs.get(&peer).copied().unwrap_or(0);
                self.persist(StoreOp::PurgeStale { peer, epoch });
            }
            Event::Manifest {
                peer,
                conn,
                manifest,
            } => {
                if !self.is_current(&peer, conn) {
                    return;
                }
                let origin = manifest.manifest.origin.clone();
                self.router.handle(
                    now,
                    Input::Manifest {
                        from: Some(peer),
                        manifest: manifest.clone(),
                    },
                );
                if self.router.manifest(&origin) == Some(&manifest) {
                    self.persist(StoreOp::Manifest(manifest));
                }
            }
            Event::TrustSnapshot { peer, envelope } => self.on_snapshot(Some(peer), envelope),
            Event::BadInput { peer, reason } => {
                self.scores.invalid(now, &peer);
                self.view.count("bad_input_from_peers", 1);
                tracing::warn!(peer = peer.as_str(), %reason, "bad input from peer");
                self.log_event("peer.bad_input", peer.as_str(), reason);
            }
            Event::Probed { peer, rtt } => {
                if let Some(selection) = self.selection.as_mut() {
                    selection.probed(now, &peer, rtt);
                }
            }
            Event::Rtt { peer, micros } => {
                self.scores
                    .rtt(now, &peer, std::time::Duration::from_micros(micros));
            }
            Event::Sample {
                peer,
                conn,
                rtt,
                sent,
                lost,
            } => {
                if self.is_current(&peer, conn) {
                    self.scores.sample(now, &peer, rtt, sent, lost);
                    self.apply_scores(now, &peer);
                }
            }
        }
    }

    /// Hands the costs the scores announce to the router, refreshes the peers' records,
    /// and writes the scores that are due.
    /// `sampled` is the peer whose sample triggered this; its record and those of peers
    /// whose cost changed are refreshed.
    fn apply_scores(&mut self, now: Instant, sampled: &NodeId) {
        let changed = self.scores.evaluate(now);
        {
            let mut view = self.view.write();
            for peer in changed.iter().map(|(p, _)| p).chain([sampled]) {
                if let Some(info) = view.peers.get_mut(peer.as_str()) {
                    self.scores.show(now, peer, info);
                }
            }
        }
        for (peer, cost) in changed {
            tracing::info!(
                peer = peer.as_str(),
                cost,
                "link cost set by the peer's score"
            );
            self.view.count("link_cost_changes", 1);
            self.router.handle(now, Input::LinkCost { peer, cost });
        }
        for (peer, state) in self.scores.due(now) {
            self.persist(StoreOp::PeerScore { peer, state });
        }
    }

    fn is_current(&self, peer: &NodeId, conn: ConnId) -> bool {
        self.sessions
            .get(peer)
            .is_some_and(|c| c.conn == conn && c.up)
    }

    fn register(
        &mut self,
        peer: &NodeId,
        conn: ConnId,
        dialer: NodeId,
        serial: Vec<u8>,
        handle: SessionHandle,
        now: Instant,
    ) -> bool {
        if !self.peers.contains_key(peer) {
            // A directory node may dial us: taken while the selection has room.
            let adopted = self.selection.as_mut().and_then(|s| s.inbound(now, peer));
            let added = adopted.is_some_and(|spec| self.add_peer(spec, false).is_ok());
            self.show_selection();
            if !added {
                handle
                    .kill
                    .kill(CloseReason::PeerUnconfigured, "not configured");
                return false;
            }
        }
        if let Some(spec) = self.peers.get(peer) {
            let resource = trellis_policy::cedar::Resource::Peer {
                node: peer.as_str().to_owned(),
                org: peer.org().as_str().to_owned(),
                role: spec.role.name().to_owned(),
                trust: spec.trust,
            };
            let subject = trellis_policy::cedar::Subject::Node {
                id: peer.as_str().to_owned(),
            };
            let act = trellis_policy::cedar::Act::ConnectPeer;
            if let Err(why) = self.policy_allows(&subject, act, &resource) {
                self.view.count("sessions_refused_by_policy", 1);
                tracing::info!(peer = peer.as_str(), %why, "peer session refused");
                handle.kill.kill(
                    CloseReason::PeerUnconfigured,
                    format!("refused by policy: {why}"),
                );
                return false;
            }
        }
        if let Some(old) = self.sessions.get(peer) {
            // A session up for a while wins over any new connection (as BGP keeps an
            // Established session): a late dial, e.g. one whose first packets went to a
            // peer that was not listening yet, must not tear a working session down.
            // Between connections that are not both settled the lower dialer's wins.
            let established = old
                .up_since
                .is_some_and(|t| now.saturating_duration_since(t) >= ESTABLISHED_WINS_AFTER);
            if established || !new_connection_wins(&old.dialer, &dialer) {
                if old.up {
                    // The peer dialed although our session is up: it may have restarted.
                    // Probe the old session so a dead one ends now (stateless reset)
                    // instead of at its hold timer; the peer's next dial then wins.
                    let _ = old.handle.tx.try_send(Outgoing::Probe);
                    if let Some(old) = self.sessions.get_mut(peer) {
                        old.redialed_at = Some(now);
                    }
                }
                return false;
            }
            old.handle.kill.kill(
                CloseReason::CollisionResolved,
                "replaced by a newer connection",
            );
            if old.up {
                // The peer reconnected: treat the old session as lost (graceful restart).
                self.router.handle(
                    now,
                    Input::SessionDown {
                        peer: peer.clone(),
                        graceful: true,
                    },
                );
            }
        }
        self.sessions.insert(
            peer.clone(),
            Current {
                conn,
                dialer,
                serial,
                handle,
                up: false,
                up_since: None,
                redialed_at: None,
            },
        );
        true
    }

    /// Verifies, persists, applies and floods a trust snapshot.
    pub(super) fn on_snapshot(&mut self, from: Option<NodeId>, envelope: Vec<u8>) {
        let Ok(decoded) =
            trellis_policy::Envelope::decode(&envelope, trellis_policy::Kind::TrustSnapshot)
        else {
            self.view.count("trust_snapshots_rejected", 1);
            return;
        };
        let Ok(org) = trellis_routing::OrgId::new(&decoded.signer) else {
            self.view.count("trust_snapshots_rejected", 1);
            return;
        };
        let own = self.local.in_org(&org);
        // Own org: its CA; a partner: any CA of its bundle (a bundle may hold the old and
        // the new CA during a rollover). Verified and stored in one transaction, so the
        // version is durable before it is acted on, for partners as for the own org.
        let cas = if own {
            vec![self.ca_der.clone()]
        } else {
            self.trust.cas_for(&org)
        };
        if cas.is_empty() {
            return;
        }
        let mut applied = Err(String::new());
        for ca in &cas {
            applied = self
                .node_store
                .apply_snapshot(org.as_str(), ca, &envelope, now_secs())
                .map_err(|e| e.to_string());
            if applied.is_ok() {
                break;
            }
        }
        let snapshot = match applied {
            Ok(s) => s,
            Err(reason) => {
                if !reason.contains("not newer") {
                    self.view.count("trust_snapshots_rejected", 1);
                    tracing::info!(org = org.as_str(), %reason, "trust snapshot refused");
                }
                return;
            }
        };
        let revoked = self.trust.apply_snapshot(&org, &snapshot);
        if own {
            self.trust.pin_partner_cas(&org, &snapshot);
            if let Some(selection) = self.selection.as_mut() {
                selection.hurry(Instant::now()); // The directory may have changed.
            }
        }
        self.stop_revoked_peers(&revoked);
        // Name rules, partner CAs: every route's name and origin is checked again.
        self.router.handle(
            Instant::now(),
            Input::TrustChanged {
                rules: self.trust.name_rules(),
            },
        );
        self.refresh_origin_checks();
        tracing::info!(
            org = org.as_str(),
            version = snapshot.version,
            revoked = revoked.len(),
            "trust snapshot applied"
        );
        self.view.count("trust_snapshots_applied", 1);
        self.log_event(
            "trust.snapshot",
            org.as_str(),
            format!(
                "v{}: {} nodes revoked",
                snapshot.version,
                snapshot.revoked_nodes.len()
            ),
        );
        let shared = Arc::new(envelope);
        if own {
            self.view.write().snapshot_version = snapshot.version;
            self.own_snapshot = Some(shared.clone());
        }
        // Close every live session whose peer node or certificate serial is now revoked.
        for (node, current) in &self.sessions {
            if self.trust.is_revoked(node, &current.serial) {
                current.handle.kill.kill(
                    CloseReason::Revoked,
                    format!("{} or its certificate is revoked", node.as_str()),
                );
                self.persist(StoreOp::Event {
                    kind: "session.revoked".into(),
                    subject: node.as_str().into(),
                    detail: format!("trust snapshot {} of {}", snapshot.version, org.as_str()),
                });
            }
        }
        let targets: Vec<NodeId> = self
            .sessions
            .keys()
            .filter(|p| Some(*p) != from.as_ref())
            .cloned()
            .collect();
        for peer in targets {
            self.send(&peer, Outgoing::TrustSnapshot(shared.clone()));
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Advertise {
                service,
                protocol,
                endpoint,
                reply,
            } => {
                let route = trellis_policy::cedar::Resource::Route {
                    service: service.as_str().to_owned(),
                    origin_org: self.local.org().as_str().to_owned(),
                    communities: Vec::new(),
                    path_len: 0,
                };
                let operator = crate::admin::authz::local_operator(self.local.org().as_str());
                let act = trellis_policy::cedar::Act::OriginateRoute;
                if let Err(why) = self.policy_allows(&operator, act, &route) {
                    self.view.count("originations_refused", 1);
                    let _ = reply.send(Err(api(ErrorKind::Forbidden, why)));
                    return;
                }
                // A name this node may not use would be dropped by every receiver.
                if let Err(refusal) = self.router.may_originate(&self.local, &service) {
                    self.view.count("originations_refused", 1);
                    let _ = reply.send(Err(api(ErrorKind::BadRequest, refusal.to_string())));
                    return;
                }
                let count = {
                    let view = self.view.read();
                    view.originated.len()
                        + usize::from(!view.originated.contains_key(service.as_str()))
                };
                if let Err(e) = super::bulk::within_manifest_limit(count) {
                    self.view.count("originations_refused", 1);
                    let _ = reply.send(Err(e));
                    return;
                }
                let span = self
                    .observer
                    .origination_span("advertise", service.as_str());
                let _entered = span.enter();
                self.view.write().originated.insert(
                    service.as_str().to_owned(),
                    (endpoint.clone(), protocol_name(protocol).to_owned()),
                );
                self.router.handle(
                    now,
                    Input::Originate {
                        service: service.clone(),
                        protocol,
                    },
                );
                self.persist(StoreOp::Originate {
                    service: service.clone(),
                    protocol,
                    endpoint: endpoint.clone(),
                });
                self.log_event(
                    "route.advertise",
                    service.as_str(),
                    format!("{} {endpoint}", protocol_name(protocol)),
                );
                self.drain();
                // The endpoint shown is the one in `originated`, so a new endpoint with the
                // same protocol (which changes no route) shows at once.
                let info = self.view.route_info(service.as_str());
                self.reply_when_durable(
                    reply,
                    info.ok_or_else(|| api(ErrorKind::Internal, "the route did not appear")),
                );
            }
            Command::AdvertiseMany { routes, reply } => self.advertise_many(now, routes, reply),
            Command::WithdrawMany { services, reply } => self.withdraw_many(now, services, reply),
            Command::Withdraw { service, reply } => {
                if self
                    .view
                    .write()
                    .originated
                    .remove(service.as_str())
                    .is_none()
                {
                    let _ = reply.send(Err(api(
                        ErrorKind::NotFound,
                        format!("this node does not originate {}", service.as_str()),
                    )));
                    return;
                }
                let span = self.observer.origination_span("withdraw", service.as_str());
                let _entered = span.enter();
                self.router.handle(
                    now,
                    Input::StopOriginating {
                        service: service.clone(),
                    },
                );
                self.log_event("route.withdraw", service.as_str(), String::new());
                self.persist(StoreOp::StopOriginating(service));
                self.reply_when_durable(reply, Ok(()));
            }
            Command::AddPeer {
                spec,
                persist,
                reply,
            } => {
                let added = self.add_peer(spec, persist);
                self.reply_when_durable(reply, added);
            }
            Command::RemovePeer { node, reply } => {
                let result = self.remove_peer(now, &node, "removed by operator");
                self.reply_when_durable(reply, result);
            }
            Command::ReplacePeers { specs, reply } => {
                let report = self.replace_peers(now, specs);
                let _ = reply.send(report);
            }
            Command::ResetPeer { node, reply } => {
                let result = match self.sessions.get(&node) {
                    Some(current) => {
                        current
                            .handle
                            .kill
                            .kill(CloseReason::AdminShutdown, "reset by operator");
                        self.log_event("peer.reset", node.as_str(), String::new());
                        Ok(())
                    }
                    None if self.peers.contains_key(&node) => Ok(()),
                    None => Err(api(
                        ErrorKind::NotFound,
                        format!("no peer {}", node.as_str()),
                    )),
                };
                let _ = reply.send(result);
            }
            Command::ShowRoute { service, reply } => {
                // A service whose paths are all invalid has no best route, so `resolve`
                // skips it; show its paths under its own name anyway.
                let matched = self
                    .router
                    .resolve(&service)
                    .map(|(name, _)| name)
                    .or_else(|| (!self.router.paths(&service).is_empty()).then(|| service.clone()));
                let paths = matched
                    .as_ref()
                    .map(|name| self.router.paths(name))
                    .unwrap_or_default();
                let best_from = matched
                    .as_ref()
                    .and_then(|name| self.router.best(name))
                    .map(|b| b.next_hop);
                let paths = paths
                    .into_iter()
                    .map(|p| PathInfo {
                        best: best_from.as_ref() == Some(&p.from) && p.valid,
                        from: p.from.as_ref().map(|n| n.as_str().to_owned()),
                        path: hop_names(&p.attrs),
                        metric: p.metric,
                        origin: p.attrs.origin.as_str().to_owned(),
                        valid: p.valid,
                        origin_check: origin_check(p.valid, p.verified).into(),
                        stale: p.stale,
                    })
                    .collect();
                let _ = reply.send(RouteDetail {
                    service: service.as_str().to_owned(),
                    matched: matched.map(|m| m.as_str().to_owned()),
                    paths,
                });
            }
            Command::ApplySnapshot { envelope } => self.on_snapshot(None, envelope),
            Command::CertificateRenewed { not_after } => {
                self.view.write().cert_not_after = not_after;
                self.router.handle(now, Input::RefreshManifest);
                self.persist(StoreOp::Event {
                    kind: "cert.renew".into(),
                    subject: self.local.as_str().into(),
                    detail: format!("not_after={not_after}"),
                });
            }
        }
    }

    /// Refuses `peer` for its hold-off (it exceeded its max-routes limit): no handshake
    /// is admitted and no dial made until [`Self::release_held_off`] lets it back.
    fn hold_off(&mut self, peer: &NodeId, why: &str) {
        let Some(hold) = self.holdoff.exceeded(peer, Instant::now()) else {
            return;
        };
        self.admitted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(peer);
        let _ = self.dial.send(DialCmd::Stop(peer.clone()));
        let detail = format!("{why}; refused for {}s", hold.as_secs());
        tracing::warn!(peer = peer.as_str(), "{detail}");
        if let Some(spec) = self.peers.get(peer) {
            self.show_peer(spec, "held off", Some(detail.clone()));
        }
        self.view.count("peers_held_off", 1);
        self.log_event("peer.held_off", peer.as_str(), detail);
    }

    /// Admits and dials again the peers whose hold-off has ended.
    fn release_held_off(&mut self, now: Instant) {
        for peer in self.holdoff.released(now) {
            let Some(spec) = self.peers.get(&peer).cloned() else {
                continue;
            };
            self.admitted
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(peer.clone());
            if spec.address.is_some() {
                let _ = self.dial.send(DialCmd::Start(spec.clone()));
            }
            self.show_peer(&spec, "connecting", None);
            self.log_event("peer.released", peer.as_str(), "hold-off ended".into());
        }
    }

    /// Runs a selection round when one is due and carries out its steps.
    fn select(&mut self, now: Instant) {
        let Some(selection) = self.selection.as_mut() else {
            return;
        };
        if selection.next_round() > now {
            return;
        }
        let pinned: Vec<NodeId> = self
            .peers
            .values()
            .filter(|s| s.source != super::selection::SOURCE)
            .map(|s| s.node.clone())
            .collect();
        let scores = &self.scores;
        let steps = selection.round(now, &pinned, |n| scores.cost(n));
        for step in steps {
            match step {
                super::selection::Step::Add(spec) => {
                    let node = spec.node.clone();
                    if let Err(e) = self.add_peer(spec, false) {
                        tracing::warn!(peer = node.as_str(), error = %e.message, "selected peer not added");
                    }
                }
                super::selection::Step::Remove(node, why) => {
                    let _ = self.remove_peer(now, &node, why);
                }
                super::selection::Step::Probe(node, addr) => {
                    let _ = self.dial.send(DialCmd::Probe(node, addr));
                }
            }
        }
        self.show_selection();
    }

    /// Puts the selection's summary in the view (`trellis status`).
    fn show_selection(&mut self) {
        if let Some(selection) = &self.selection {
            self.view.write().selection = Some(selection.summary());
        }
    }

    /// Removes a peer: closes its session, withdraws its routes, forgets it.
    fn remove_peer(&mut self, now: Instant, node: &NodeId, why: &str) -> Result<(), ApiError> {
        self.router
            .remove_peer(now, node)
            .map_err(|e| api(ErrorKind::NotFound, e.to_string()))?;
        self.peers.remove(node);
        self.scores.remove(now, node);
        self.holdoff.forget(node);
        self.admitted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(node);
        if let Some(current) = self.sessions.remove(node) {
            current
                .handle
                .kill
                .kill(CloseReason::PeerUnconfigured, why.to_owned());
        }
        let _ = self.dial.send(DialCmd::Stop(node.clone()));
        self.view.write().peers.remove(node.as_str());
        self.log_event("peer.remove", node.as_str(), why.to_owned());
        self.persist(StoreOp::PeerRemoved(node.clone()));
        Ok(())
    }

    /// Makes the configured peers (not those added at runtime) exactly `specs`: adds the
    /// new, removes the gone, re-establishes those whose settings changed.
    fn replace_peers(&mut self, now: Instant, specs: Vec<PeerSpec>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut wanted: HashMap<NodeId, PeerSpec> =
            specs.into_iter().map(|s| (s.node.clone(), s)).collect();
        let mut configured: Vec<PeerSpec> = self
            .peers
            .values()
            .filter(|s| s.source != "admin")
            .cloned()
            .collect();
        configured.sort_by(|a, b| a.node.cmp(&b.node));
        for spec in configured {
            match wanted.remove(&spec.node) {
                None => {
                    let _ = self.remove_peer(now, &spec.node, "removed from the config");
                    report.removed.push(spec.node.as_str().to_owned());
                }
                Some(new) if new != spec => {
                    let _ = self.remove_peer(now, &spec.node, "settings changed in the config");
                    match self.add_peer(new, false) {
                        Ok(()) => report.changed.push(spec.node.as_str().to_owned()),
                        Err(e) => report.errors.push(e.message),
                    }
                }
                Some(_) => report.unchanged += 1,
            }
        }
        let mut new: Vec<PeerSpec> = wanted.into_values().collect();
        new.sort_by(|a, b| a.node.cmp(&b.node));
        for spec in new {
            if self.peers.contains_key(&spec.node) {
                // Added at runtime with `peers add`: that entry stays until removed.
                report.unchanged += 1;
                continue;
            }
            let node = spec.node.as_str().to_owned();
            match self.add_peer(spec, false) {
                Ok(()) => {
                    self.log_event("peer.add", &node, "added by a config reload".into());
                    report.added.push(node);
                }
                Err(e) => report.errors.push(e.message),
            }
        }
        report
    }

    /// Adds a peer to the router, the admitted set, the view and the dialers.
    pub(super) fn add_peer(&mut self, mut spec: PeerSpec, persist: bool) -> Result<(), ApiError> {
        if spec.max_routes == 0 {
            spec.max_routes = self.default_max_routes;
        }
        if !self.peers.contains_key(&spec.node) && self.peers.len() >= self.max_peers {
            return Err(api(
                ErrorKind::Conflict,
                format!(
                    "{} not added: max_peers ({}) reached",
                    spec.node.as_str(),
                    self.max_peers
                ),
            ));
        }
        let mut cfg = PeerConfig::new(spec.node.clone(), spec.role);
        cfg.link_cost = self
            .scores
            .ensure(&spec.node, spec.link_cost, spec.trust, Instant::now());
        cfg.local_pref = spec.local_pref;
        cfg.max_routes = Some(spec.max_routes);
        cfg.graceful_restart = true;
        self.router
            .add_peer(cfg)
            .map_err(|e| api(ErrorKind::Conflict, e.to_string()))?;
        if self.trust.is_revoked(&spec.node, &[]) {
            // Configured, but revoked for good: neither dialed nor admitted.
            self.show_peer(&spec, "revoked", Some("revoked by its authority".into()));
            self.peers.insert(spec.node.clone(), spec);
            return Ok(());
        }
        self.admitted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(spec.node.clone());
        self.show_peer(&spec, "connecting", None);
        if persist {
            self.log_event(
                "peer.add",
                spec.node.as_str(),
                spec.address.map(|a| a.to_string()).unwrap_or_default(),
            );
            if let Some(address) = spec.address {
                self.persist(StoreOp::PeerAdded {
                    peer: spec.node.clone(),
                    address,
                    link_cost: spec.link_cost,
                });
            }
        }
        if spec.address.is_some() {
            let _ = self.dial.send(DialCmd::Start(spec.clone()));
        }
        self.peers.insert(spec.node.clone(), spec);
        Ok(())
    }
}
