//! `trellisd node run`: assembles the node daemon.
//!
//! ```text
//!  accept task ─┐                         ┌─► session thread (LocalSet): one capnp-rpc
//!  dialer tasks ┴─ new connections ───────┘     session per connection
//!                                                 │ Event (bounded)      ▲ Outgoing (bounded, per session)
//!  admin socket ── Command (bounded) ──► routing loop (owns Router) ──────┘
//!        ▲ reads                             │ StoreOp (bounded)
//!        └──────────── View ◄────────────────┤
//!                                            └─► store writer thread (SQLite, batched)
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trellis_routing::{Input, NodeId, OrgId, Relationship, Router, RouterConfig};

use super::config::NodeConfig;
use super::connections::{Connections, Dialing};
use super::route_store;
use super::routing_loop::{Command, PeerSpec, RoutingLoop};
use super::trust::TrustStore;
use super::view::View;
use super::{NodeStore, Paths};
use crate::session::{Event, SessionConfig};
use crate::transport::{self, Identity};
use crate::util::files::read_secret;
use crate::util::tasks::{join_thread, OwnedTask};
use crate::{codec, pki};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Files or the store.
    #[error("{0}")]
    Local(String),
    /// Configuration.
    #[error("{0}")]
    Config(String),
    /// The listener.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
}

fn local(e: impl std::fmt::Display) -> NodeError {
    NodeError::Local(e.to_string())
}

/// The node's identity as loaded from its data dir.
struct Loaded {
    identity: Identity,
    key: rcgen::KeyPair,
    ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    cert: pki::NodeCert,
}

/// Loads the node's identity from its data dir.
fn load_identity(paths: &Paths) -> Result<Loaded, NodeError> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| NodeError::Local(format!("{}: {e}", p.display())));
    let ca_der = pki::pem_to_der(&read(&paths.ca_cert())?).map_err(local)?;
    let cert_der = pki::pem_to_der(&read(&paths.cert())?).map_err(local)?;
    let key = pki::load_key(
        &read_secret(&paths.key())
            .map_err(|e| NodeError::Local(format!("{}: {e}", paths.key().display())))?,
    )
    .map_err(local)?;
    let cert = pki::parse_node_cert(&cert_der).map_err(local)?;
    let identity = Identity {
        node: cert.node.clone(),
        chain: vec![cert_der.clone().into()],
        key: crate::tls::private_key(key.serialize_der()),
    };
    Ok(Loaded {
        identity,
        key,
        ca_der,
        cert_der,
        cert,
    })
}

/// Runs the node until SIGINT/SIGTERM.
pub async fn run(
    data_dir: &Path,
    config: NodeConfig,
    loader: super::reload::Loader,
) -> Result<(), NodeError> {
    let paths = Paths::new(data_dir);
    let node_store = NodeStore::open(&paths.db()).map_err(local)?;
    let enrollment = node_store.enrollment().map_err(local)?;
    let Loaded {
        identity,
        key,
        ca_der,
        cert_der,
        cert,
    } = load_identity(&paths)?;
    let local_id = identity.node.clone();
    if local_id.as_str() != enrollment.node_id {
        return Err(NodeError::Local(format!(
            "node.crt is for {}, node.db for {}",
            local_id.as_str(),
            enrollment.node_id
        )));
    }
    let org = local_id.org();

    // Trust: own CA for own org, the stored snapshot, partner CAs for their orgs only.
    let trust = Arc::new(TrustStore::new());
    trust.trust_ca(&org, ca_der.clone());
    let own_snapshot = stored_snapshot(&node_store, &org, &trust);
    // Partner CAs pinned by the own authority, and what those partners published.
    if let Some(own) = own_snapshot
        .as_deref()
        .and_then(|e| trellis_policy::Envelope::decode(e, trellis_policy::Kind::TrustSnapshot).ok())
        .and_then(|e| trellis_policy::TrustSnapshot::from_payload(&e.payload).ok())
    {
        for partner in trust.pin_partner_cas(&org, &own) {
            let _ = stored_snapshot(&node_store, &partner, &trust);
        }
    }
    config
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let peerings = match &config.peering_dir {
        Some(dir) => {
            super::peering::load_dir(dir, &org).map_err(|e| NodeError::Config(e.to_string()))?
        }
        None => Vec::new(),
    };
    for p in &peerings {
        for ca in &p.ca_ders {
            trust.trust_ca(&p.org, ca.clone());
        }
        // A partner's revocations learned before this start stay in force.
        let _ = stored_snapshot(&node_store, &p.org, &trust);
    }

    // Cedar decides every admin call and data-plane connection.
    let policy = Arc::new(
        super::policy::NodePolicy::start(super::policy::PolicySource {
            file: config.policy_file.clone(),
            org: org.clone(),
            allow: config.dataplane.allow.clone(),
            peering_files: peerings.iter().filter_map(|p| p.policy.clone()).collect(),
        })
        .map_err(|e| NodeError::Config(e.to_string()))?,
    );

    // Routing core.
    let sigs =
        codec::signatures::NodeSignatures::new(local_id.clone(), &key, cert_der, trust.clone())
            .map_err(local)?;
    let manifest_cert = sigs.certificate();
    let unverified = sigs.unverified_counter();
    let mut rcfg = RouterConfig::new(local_id.clone());
    rcfg.mrai = config.timers.mrai;
    rcfg.max_path_len = config.limits.max_path_len;
    rcfg.graceful_restart = config.timers.graceful_restart;
    let mut router = Router::new(rcfg, Box::new(sigs), Instant::now());
    if policy.filters_routes() {
        router.set_policy(Box::new(trellis_policy::cedar::CedarRoutes::new(
            policy.shared(),
        )));
    }

    // Store: restore, then the writer.
    let (restored, skipped) = route_store::restore(&paths.db()).map_err(local)?;
    if skipped > 0 {
        tracing::warn!(skipped, "store rows that no longer decode were skipped");
    }
    let store_failures = Arc::new(AtomicU64::new(0));
    let (store_tx, store_thread) =
        route_store::spawn_writer(paths.db(), 65_536, store_failures.clone()).map_err(local)?;

    let view = Arc::new(View::new(
        local_id.as_str().to_owned(),
        config.listen.to_string(),
        cert.not_after,
    ));
    view.write().snapshot_version = trust.snapshot_version(&org);
    if trust.is_revoked(&local_id, &cert.serial) {
        tracing::error!("this node is revoked by its authority; peers refuse it");
        view.write().revoked = true;
    }
    view.add_counter("manifests_unverified_foreign_org", unverified);
    view.add_counter("store_commit_failures", store_failures);
    if config.telemetry.enabled() {
        view.add_counter(
            "telemetry_export_failures",
            crate::telemetry::export_failures(),
        );
    }
    let observed = view.clone();
    crate::telemetry::metrics::observe(move || {
        let peers: Vec<crate::admin::PeerInfo> = observed.read().peers.values().cloned().collect();
        crate::telemetry::metrics::node_points(&observed.status(), &peers)
    });
    let admitted: Arc<RwLock<HashSet<NodeId>>> = Arc::default();
    let (dial_tx, dial_rx) = mpsc::unbounded_channel();
    let store_audit = store_tx.clone();
    let mut routing = RoutingLoop::new(
        router,
        HashMap::new(),
        admitted.clone(),
        view.clone(),
        store_tx,
        trust.clone(),
        node_store,
        ca_der,
        own_snapshot,
        dial_tx,
    );
    routing.set_scores(super::scores::Scores::new(
        config.scoring.score_config(),
        restored.peer_scores.clone(),
    ));
    routing.set_limits(
        config.limits.max_peers,
        config.limits.max_routes_per_peer,
        config.timers.max_routes_restart,
    );
    for spec in peer_specs(&config, &peerings, &restored.admin_peers) {
        if let Err(e) = routing.add_peer(spec, false) {
            tracing::warn!(error = %e, "peer not added");
        }
    }
    let directory_admit: Arc<RwLock<HashSet<NodeId>>> = Arc::default();
    if let Some(settings) = config.selection.clone() {
        routing.set_selection(super::selection::Selection::new(
            local_id.clone(),
            settings,
            trust.clone(),
            directory_admit.clone(),
            config.scoring.score_config(),
            Instant::now(),
        ));
    }
    routing.set_policies(policy.shared());
    routing.set_epoch_base(restored.max_epoch);
    restore_into(&mut routing, restored);

    // Transport.
    let limits = transport::Limits {
        idle_timeout: config.timers.detection_time(),
        keep_alive: config.timers.detect_interval,
        max_bidi_streams: config.dataplane.quic_streams(),
        stream_window: config.dataplane.stream_window,
        connection_window: config
            .dataplane
            .connection_window(transport::Limits::default().connection_window),
    };
    let admit_set = admitted.clone();
    let admit: transport::Admit = Arc::new(move |node: &NodeId| {
        let listed = |set: &RwLock<HashSet<NodeId>>| {
            set.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(node)
        };
        listed(&admit_set) || listed(&directory_admit)
    });
    let server = transport::server_config(&identity, trust.clone(), admit.clone(), &limits)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let endpoint =
        transport::endpoint(config.listen, server, &identity).map_err(|e| NodeError::Listen {
            addr: config.listen.to_string(),
            reason: e.to_string(),
        })?;
    let bound = endpoint.local_addr().map_err(local)?;
    view.write().listen = bound.to_string();

    // Admin socket first: a second daemon on this data dir stops here.
    let admin_path = paths.dir.join("admin.sock");
    let admin = super::admin_server::bind(&admin_path).map_err(|e| {
        NodeError::Local(format!(
            "{}: {e}; is another trellisd running on this data dir?",
            admin_path.display()
        ))
    })?;

    // The data plane: streams ride the sessions' connections.
    let shutdown = CancellationToken::new();
    let table = Arc::new(super::fib::NodeTable {
        view: view.clone(),
        trust: trust.clone(),
    });
    let dataplane = Arc::new(crate::dataplane::Dataplane::new(
        local_id.clone(),
        config.dataplane.clone(),
        table,
        policy.shared(),
        paths.db(),
        shutdown.clone(),
    ));
    for (name, counter) in dataplane.counters() {
        view.add_counter(&name, counter);
    }
    dataplane.restore();

    // Sessions, the accept loop and the dialers.
    let (event_tx, event_rx) = mpsc::channel::<Event>(1024);
    let session_cfg = SessionConfig {
        local: local_id.clone(),
        hold_time: config.timers.hold_time,
        graceful_restart_secs: u16::try_from(config.timers.graceful_restart.as_secs())
            .unwrap_or(u16::MAX),
        send_hold: config.timers.send_hold,
        keepalive: config.timers.keepalive,
        queue: 4096,
        max_in_flight: 16,
        open_timeout: Duration::from_secs(10),
        links: Some(dataplane.links()),
    };
    let identity = Arc::new(RwLock::new(identity));
    let dialing = Dialing {
        commands: dial_rx,
        identity: identity.clone(),
        trust: trust.clone(),
        limits: limits.clone(),
        backoff: (
            config.timers.connect_retry_min,
            config.timers.connect_retry_max,
        ),
    };
    let audit_tx = store_audit;
    let audit: super::connections::Audit = Arc::new(move |kind, subject, detail| {
        // Never blocks: an event that does not fit the writer's queue is dropped.
        let _ = audit_tx.try_send(route_store::StoreOp::Event {
            kind: kind.into(),
            subject: subject.into(),
            detail,
        });
    });
    let connections = Connections::start(
        &endpoint,
        dialing,
        event_tx,
        session_cfg,
        view.clone(),
        audit,
        shutdown.clone(),
    )
    .map_err(local)?;

    // Admin API and background trust refresh.
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    let reloader = Arc::new(super::reload::Reloader::new(
        loader,
        org.clone(),
        trust.clone(),
        cmd_tx.clone(),
        config.clone(),
        peerings.iter().map(|p| p.org.clone()).collect(),
    ));
    let admin_ctx = Arc::new(super::admin_server::AdminCtx {
        view: view.clone(),
        commands: cmd_tx.clone(),
        paths: paths.clone(),
        reloader: reloader.clone(),
        dataplane: dataplane.clone(),
        policy: policy.clone(),
    });
    let admin_task = OwnedTask::spawn(super::admin_server::serve(admin, admin_ctx.clone()));
    let remote_task = match config.remote_admin {
        None => None,
        Some(addr) => {
            let server = transport::admin::admin_server_config(identity.clone(), &limits)
                .map_err(|e| NodeError::Config(e.to_string()))?;
            let current = identity
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let remote_endpoint =
                transport::endpoint(addr, server, &current).map_err(|e| NodeError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
            tracing::info!(listen = %addr, "remote admin listening");
            let handler =
                super::remote_admin::handler(admin_ctx.clone(), trust.clone(), org.clone());
            Some(OwnedTask::spawn(crate::admin::remote_server::serve(
                remote_endpoint,
                handler,
            )))
        }
    };
    let hup_task = OwnedTask::spawn(super::reload::on_sighup(reloader));
    let renewal = Renewal {
        endpoint: endpoint.clone(),
        identity,
        manifest_cert,
        trust: trust.clone(),
        admit,
        limits: limits.clone(),
    };
    let listing = directory_listing(config.selection.as_ref(), bound);
    let subscription_task =
        OwnedTask::spawn(subscribe_trust(paths.clone(), listing, cmd_tx.clone()));
    let refresh_task = OwnedTask::spawn(refresh_trust(
        paths.clone(),
        cmd_tx,
        renewal,
        config.timers.trust_refresh,
    ));

    println!(
        "node {} listening on {bound}; admin socket {}",
        local_id.as_str(),
        admin_path.display()
    );
    tracing::info!(node = local_id.as_str(), listen = %bound, "node running");

    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(local)?;
    {
        let routing_run = routing.run(cmd_rx, event_rx, shutdown.clone());
        tokio::pin!(routing_run);
        let loop_ended = tokio::select! {
            () = &mut routing_run => true,
            _ = tokio::signal::ctrl_c() => false,
            _ = sigterm.recv() => false,
        };
        tracing::info!("node stopping");
        // The loop sees the cancellation at once and asks every session to close with
        // adminShutdown; then it is dropped, and with it the store writer's sender.
        shutdown.cancel();
        if !loop_ended {
            let _ = tokio::time::timeout(STOP_STEP, &mut routing_run).await;
        }
    }
    drop((
        admin_task,
        remote_task,
        hup_task,
        refresh_task,
        subscription_task,
    ));
    dataplane.stop();
    if !connections.stop(Duration::from_millis(250)).await {
        tracing::warn!("sessions still running at shutdown; left behind");
    }
    endpoint.close(
        (trellis_schemas::peering_capnp::CloseReason::AdminShutdown as u32).into(),
        b"node shutting down",
    );
    // Let the close frames go out; a peer that never answers does not hold us.
    let _ = tokio::time::timeout(STOP_STEP, endpoint.wait_idle()).await;
    let _ = std::fs::remove_file(&admin_path);
    // Every sender of the store writer is gone: it commits what it holds and ends.
    if !join_thread(store_thread, STORE_FLUSH).await {
        tracing::error!(
            "the store writer did not finish within {STORE_FLUSH:?}; exiting without it"
        );
    }
    tracing::info!("node stopped");
    Ok(())
}

/// Bound on the routing loop's and the close frames' step of the shutdown. With the
/// session drain (0.75 s), the store (1 s) and the runtime (0.5 s) no shutdown lasts
/// more than about 3 s; a normal one takes about half a second.
const STOP_STEP: Duration = Duration::from_millis(500);
/// Bound on the store writer's last commit at shutdown (a healthy disk takes
/// milliseconds; a failing one was already reported as "not yet saved").
const STORE_FLUSH: Duration = Duration::from_secs(1);

fn stored_snapshot(store: &NodeStore, org: &OrgId, trust: &TrustStore) -> Option<Arc<Vec<u8>>> {
    let envelope = store.snapshot_envelope(org.as_str()).ok()??;
    let decoded =
        trellis_policy::Envelope::decode(&envelope, trellis_policy::Kind::TrustSnapshot).ok()?;
    let snapshot = trellis_policy::TrustSnapshot::from_payload(&decoded.payload).ok()?;
    trust.apply_snapshot(org, &snapshot);
    Some(Arc::new(envelope))
}

/// Every configured peer: static peers, partner endpoints, peers added at runtime.
pub(super) fn peer_specs(
    config: &NodeConfig,
    peerings: &[super::peering::PeeringConfig],
    admin_peers: &[(NodeId, SocketAddr, u32)],
) -> Vec<PeerSpec> {
    let mut specs = Vec::new();
    for p in &config.peers {
        specs.push(PeerSpec {
            node: p.node_id.clone(),
            address: (!p.passive).then_some(p.address),
            role: Relationship::Internal,
            link_cost: p.link_cost,
            trust: p.trust,
            local_pref: p.local_pref,
            max_routes: p.max_routes,
            source: "config".into(),
            detection: p.detection,
        });
    }
    for peering in peerings {
        for e in &peering.endpoints {
            specs.push(PeerSpec {
                node: e.node_id.clone(),
                address: (!e.passive).then_some(e.address),
                role: peering.role,
                link_cost: peering.link_cost,
                trust: u32::from(peering.trust),
                local_pref: peering.local_pref,
                max_routes: peering.max_routes,
                source: peering.file.display().to_string(),
                detection: None,
            });
        }
    }
    for (node, address, cost) in admin_peers {
        if specs.iter().any(|s| &s.node == node) {
            continue;
        }
        specs.push(PeerSpec {
            node: node.clone(),
            address: Some(*address),
            role: Relationship::Internal,
            link_cost: *cost,
            trust: 100,
            local_pref: 100,
            max_routes: config.limits.max_routes_per_peer,
            source: "admin".into(),
            detection: None,
        });
    }
    specs
}

/// Feeds the persisted state into the router: own originations, manifests, and each
/// peer's routes as stale paths (up, batch, graceful down) until the peer refreshes them.
fn restore_into(routing: &mut RoutingLoop, restored: route_store::Restored) {
    let now = Instant::now();
    let rules = routing.trust.name_rules();
    routing.router.handle(now, Input::TrustChanged { rules });
    for m in restored.manifests {
        routing.router.handle(
            now,
            Input::Manifest {
                from: None,
                manifest: m,
            },
        );
    }
    let mut originations = Vec::with_capacity(restored.originated.len());
    for (service, protocol, endpoint) in restored.originated {
        if let Err(refusal) = routing.router.may_originate(&routing.local, &service) {
            tracing::warn!(%refusal, "a stored origination is no longer allowed; not advertised");
            continue;
        }
        routing.view.write().originated.insert(
            service.as_str().to_owned(),
            (endpoint, route_store::protocol_name(protocol).to_owned()),
        );
        originations.push((service, protocol));
    }
    // One manifest version for all of them, however many there are.
    routing.router.handle(
        now,
        Input::OriginateMany {
            routes: originations,
        },
    );
    let mut restored_paths = 0;
    for (peer, batch) in restored.peer_routes {
        if !routing.peers.contains_key(&peer) {
            // No longer configured: its rows would only come back at every start.
            routing.forget_peer_routes(peer);
            continue;
        }
        restored_paths += batch.announce.len();
        routing
            .router
            .handle(now, Input::SessionUp { peer: peer.clone() });
        routing.router.handle(
            now,
            Input::Update {
                peer: peer.clone(),
                batch,
            },
        );
        routing.router.handle(
            now,
            Input::SessionDown {
                peer,
                graceful: true,
            },
        );
    }
    // Nothing is connected yet: drop what the router wanted to send, keep the table.
    let mut bests = Vec::new();
    while let Some(output) = routing.router.poll_output() {
        if let trellis_routing::Output::BestChanged { service, best } = output {
            bests.push((service, best));
        }
    }
    routing.restore_bests(bests);
    if restored_paths > 0 {
        tracing::info!(
            paths = restored_paths,
            "table restored from the store (stale until refreshed)"
        );
    }
}

/// What a certificate renewal must update in the running node.
struct Renewal {
    endpoint: quinn::Endpoint,
    identity: Arc<RwLock<Identity>>,
    manifest_cert: codec::signatures::SharedCert,
    trust: Arc<TrustStore>,
    admit: transport::Admit,
    limits: transport::Limits,
}

impl Renewal {
    /// Loads the renewed certificate and uses it: for new inbound handshakes, for dials,
    /// and in newly signed manifests.
    fn apply(&self, paths: &Paths) -> Result<u64, NodeError> {
        let loaded = load_identity(paths)?;
        let server = transport::server_config(
            &loaded.identity,
            self.trust.clone(),
            self.admit.clone(),
            &self.limits,
        )
        .map_err(|e| NodeError::Config(e.to_string()))?;
        self.endpoint.set_server_config(Some(server));
        *self
            .identity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded.identity;
        *self
            .manifest_cert
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded.cert_der;
        Ok(loaded.cert.not_after)
    }
}

/// How this node asks to be listed in its org's node directory: only with `[selection]`,
/// at `advertise`, or else at the bound address when it is a specific one.
fn directory_listing(
    selection: Option<&super::config::Selection>,
    bound: std::net::SocketAddr,
) -> Option<crate::enroll::Listing> {
    let selection = selection?;
    let address = selection.advertise.or_else(|| {
        let specific = !bound.ip().is_unspecified();
        if !specific {
            tracing::warn!(%bound, "[selection] without advertise on an unspecified listen address: not listed in the directory");
        }
        specific.then_some(bound)
    })?;
    Some(crate::enroll::Listing {
        address: address.to_string(),
        role: super::config::role_name(selection.role).to_owned(),
    })
}

/// Keeps a subscription to the authority's trust snapshots open, so a revocation reaches
/// this node as soon as it is published; reconnects with backoff (1 s to 30 s) while the
/// authority is unreachable. Routing never waits on it; the mesh floods snapshots too.
async fn subscribe_trust(
    paths: Paths,
    listing: Option<crate::enroll::Listing>,
    commands: mpsc::Sender<Command>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let since = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let subscription = crate::enroll::client::subscribe_snapshots(
            &paths.dir,
            listing.clone(),
            move |envelope| {
                let _ = tx.send(envelope);
            },
        );
        tokio::pin!(subscription);
        let ended = loop {
            tokio::select! {
                ended = &mut subscription => break ended,
                Some(envelope) = rx.recv() => {
                    if commands.send(Command::ApplySnapshot { envelope }).await.is_err() {
                        return;
                    }
                }
            }
        };
        while let Ok(envelope) = rx.try_recv() {
            let _ = commands.send(Command::ApplySnapshot { envelope }).await;
        }
        if let Err(e) = ended {
            tracing::debug!(error = %e, "trust snapshot subscription ended");
        }
        delay = if since.elapsed() > Duration::from_secs(60) {
            Duration::from_secs(1)
        } else {
            (delay * 2).min(Duration::from_secs(30))
        };
        tokio::time::sleep(delay).await;
    }
}

/// Fetches the authority's newest trust snapshot every `timers.trust_refresh` (1 min)
/// and renews the node certificate once two thirds of its lifetime have passed; routing
/// never waits on the authority.
async fn refresh_trust(
    paths: Paths,
    commands: mpsc::Sender<Command>,
    renewal: Renewal,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match crate::enroll::client::fetch_snapshot_bytes(&paths.dir).await {
            Ok(Some(envelope)) => {
                let _ = commands.send(Command::ApplySnapshot { envelope }).await;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "authority not reachable for a trust snapshot"),
        }
        let cert = std::fs::read(paths.cert())
            .ok()
            .and_then(|pem| pki::pem_to_der(&pem).ok())
            .and_then(|der| pki::parse_node_cert(&der).ok());
        let Some(cert) = cert else { continue };
        let lifetime = cert.not_after.saturating_sub(cert.not_before);
        let left = cert.not_after.saturating_sub(crate::util::time::now_secs());
        if left >= lifetime / 3 {
            continue;
        }
        match crate::enroll::client::renew(&paths.dir).await {
            Ok(done) => match renewal.apply(&paths) {
                Ok(not_after) => {
                    tracing::info!(serial = %done.serial, not_after, "certificate renewed and in use");
                    let _ = commands
                        .send(Command::CertificateRenewed { not_after })
                        .await;
                }
                Err(e) => tracing::error!(error = %e, "renewed certificate could not be loaded"),
            },
            Err(e) => tracing::warn!(error = %e, "certificate renewal failed; will retry"),
        }
    }
}
