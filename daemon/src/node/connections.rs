//! The node's connections: the QUIC accept loop, one dialer per configured active peer
//! (redial with exponential backoff), and the session thread that runs one capnp-rpc
//! session per connection (capnp-rpc is `!Send`, so all of them share one `LocalSet`).
//!
//! [`Connections`] owns every task it starts, down to each handshake and each session:
//! stopping or dropping it ends them all, so the node's shutdown never waits on a task
//! that nobody owns (docs/architecture.md, "Shutdown").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trellis_routing::NodeId;

use super::routing_loop::DialCmd;
use super::trust::TrustStore;
use super::view::View;
use crate::session::{self, Event, SessionConfig};
use crate::transport::{self, Identity};
use crate::util::tasks::{join_thread, OwnedTask};

/// What the dialers need besides the endpoint.
pub(super) struct Dialing {
    /// Which peers to dial (from the routing loop).
    pub commands: mpsc::UnboundedReceiver<DialCmd>,
    /// The node's identity, swapped on certificate renewal.
    pub identity: Arc<RwLock<Identity>>,
    /// Which CAs and serials to accept.
    pub trust: Arc<TrustStore>,
    /// QUIC transport limits.
    pub limits: transport::Limits,
    /// Redial backoff: first and longest delay.
    pub backoff: (Duration, Duration),
}

/// Records an event in the node's log: `(kind, subject, detail)`.
pub(super) type Audit = Arc<dyn Fn(&str, &str, String) + Send + Sync>;

/// The accept loop, the dialers and the session thread, owned together.
pub(super) struct Connections {
    accept: OwnedTask,
    dial: OwnedTask,
    sessions: std::thread::JoinHandle<()>,
    /// Cancels the shutdown token when dropped, so an early return also ends the thread.
    shutdown: tokio_util::sync::DropGuard,
}

impl Connections {
    /// Starts accepting on `endpoint`, dialing as `dials` commands, and running sessions
    /// that report to `events`. Everything ends once `shutdown` is cancelled and
    /// [`Connections::stop`] has run.
    pub(super) fn start(
        endpoint: &quinn::Endpoint,
        dialing: Dialing,
        events: mpsc::Sender<Event>,
        cfg: SessionConfig,
        view: Arc<View>,
        audit: Audit,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let (conn_tx, conn_rx) = mpsc::unbounded_channel::<NewConn>();
        let sessions = spawn_session_thread(conn_rx, events.clone(), cfg, shutdown.clone())?;
        let accept = OwnedTask::spawn(accept_loop(
            endpoint.clone(),
            conn_tx.clone(),
            view.clone(),
            audit,
        ));
        let dial = OwnedTask::spawn(dial_manager(
            endpoint.clone(),
            dialing,
            conn_tx,
            view,
            events.clone(),
        ));
        Ok(Self {
            accept,
            dial,
            sessions,
            shutdown: shutdown.drop_guard(),
        })
    }

    /// Stops accepting and dialing, and gives the sessions [`SESSION_DRAIN`] to tell their
    /// peers why they close (the routing loop has asked them to), `grace` more to end.
    /// Returns `false` if the session thread was still running then; it is left behind.
    pub(super) async fn stop(self, grace: Duration) -> bool {
        drop(self.shutdown);
        drop(self.accept);
        drop(self.dial);
        // The thread waits up to SESSION_DRAIN itself; `grace` only guards a hang.
        join_thread(self.sessions, SESSION_DRAIN + grace).await
    }
}

/// How long the session thread lets closing sessions finish after shutdown.
const SESSION_DRAIN: Duration = Duration::from_millis(500);

/// A new connection for the session thread.
struct NewConn {
    conn: quinn::Connection,
    peer: NodeId,
    dialer: NodeId,
}

fn spawn_session_thread(
    mut conns: mpsc::UnboundedReceiver<NewConn>,
    events: mpsc::Sender<Event>,
    cfg: SessionConfig,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("trellis-sessions".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the session thread");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            let cfg = Rc::new(cfg);
            let ids = AtomicU64::new(1);
            local.block_on(&rt, async move {
                let mut sessions = JoinSet::new();
                loop {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        new = conns.recv() => {
                            let Some(new) = new else { break };
                            let id = ids.fetch_add(1, Ordering::Relaxed);
                            sessions.spawn_local(session::run(
                                new.conn,
                                new.peer,
                                new.dialer,
                                id,
                                cfg.clone(),
                                events.clone(),
                            ));
                        }
                        Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                    }
                }
                // The routing loop has asked every registered session to close: let them
                // say so to their peers, then drop the rest (the endpoint closes anyway).
                let drained = async { while sessions.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(SESSION_DRAIN, drained).await;
            });
        })
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    conns: mpsc::UnboundedSender<NewConn>,
    view: Arc<View>,
    audit: Audit,
) {
    let mut handshakes = JoinSet::new();
    let refusals = Arc::new(std::sync::Mutex::new(RefusalLog::default()));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let Some(incoming) = incoming else { return };
        let conns = conns.clone();
        let view = view.clone();
        let audit = audit.clone();
        let refusals = refusals.clone();
        handshakes.spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => match transport::peer_identity(&conn) {
                    Ok(peer) => {
                        let _ = conns.send(NewConn {
                            conn,
                            peer: peer.node.clone(),
                            dialer: peer.node,
                        });
                    }
                    Err(e) => tracing::warn!(%remote, error = %e, "no peer identity"),
                },
                Err(e) => {
                    view.count("handshakes_refused", 1);
                    tracing::info!(%remote, error = %e, "inbound handshake refused");
                    let first = refusals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .first_in_a_while(remote.ip(), Instant::now());
                    if first {
                        audit("peer.refused", &remote.to_string(), e.to_string());
                    }
                }
            }
        });
    }
}

/// Refused handshakes go to the event log at most once per address per
/// [`REFUSAL_LOG_EVERY`] (every one is counted): a peer that redials cannot flood it.
#[derive(Default)]
struct RefusalLog {
    last: HashMap<std::net::IpAddr, Instant>,
}

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

impl RefusalLog {
    fn first_in_a_while(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        if self.last.len() >= 4096 {
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < REFUSAL_LOG_EVERY);
        }
        match self.last.get(&ip) {
            Some(at) if now.saturating_duration_since(*at) < REFUSAL_LOG_EVERY => false,
            _ => {
                self.last.insert(ip, now);
                true
            }
        }
    }
}

/// What one dialer needs.
struct DialContext {
    identity: Arc<RwLock<Identity>>,
    trust: Arc<TrustStore>,
    limits: transport::Limits,
    backoff: (Duration, Duration),
}

impl DialContext {
    /// Dials `peer` at `addr` with the node's current identity (renewal swaps it);
    /// returns that identity's node id with the dial.
    fn dial(
        &self,
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        peer: &NodeId,
    ) -> (
        NodeId,
        impl std::future::Future<Output = Result<quinn::Connection, transport::TransportError>>,
    ) {
        let current = self
            .identity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let local = current.node.clone();
        let (endpoint, trust, limits, peer) = (
            endpoint.clone(),
            self.trust.clone(),
            self.limits.clone(),
            peer.clone(),
        );
        let dialed =
            async move { transport::dial(&endpoint, addr, &current, trust, peer, &limits).await };
        (local, dialed)
    }
}

async fn dial_manager(
    endpoint: quinn::Endpoint,
    dialing: Dialing,
    conns: mpsc::UnboundedSender<NewConn>,
    view: Arc<View>,
    events: mpsc::Sender<Event>,
) {
    let Dialing {
        mut commands,
        identity,
        trust,
        limits,
        backoff,
    } = dialing;
    let dialing = Arc::new(DialContext {
        identity,
        trust,
        limits,
        backoff,
    });
    // Owned here: aborting the manager aborts every dialer.
    let mut dialers: HashMap<NodeId, OwnedTask> = HashMap::new();
    let mut probes = JoinSet::new();
    loop {
        let cmd = tokio::select! {
            cmd = commands.recv() => cmd,
            Some(_) = probes.join_next(), if !probes.is_empty() => continue,
        };
        let Some(cmd) = cmd else { break };
        match cmd {
            DialCmd::Probe(peer, addr) => {
                probes.spawn(probe(
                    peer,
                    addr,
                    endpoint.clone(),
                    dialing.clone(),
                    events.clone(),
                ));
            }
            DialCmd::Start(spec) => {
                let Some(addr) = spec.address else { continue };
                // A peer with its own failure detection gets its own transport limits.
                let own = spec.detection.map(|(interval, multiplier)| {
                    Arc::new(DialContext {
                        identity: dialing.identity.clone(),
                        trust: dialing.trust.clone(),
                        limits: transport::Limits {
                            idle_timeout: interval.saturating_mul(multiplier),
                            keep_alive: interval,
                            ..dialing.limits.clone()
                        },
                        backoff: dialing.backoff,
                    })
                });
                let task = OwnedTask::spawn(dial_loop(
                    spec.node.clone(),
                    addr,
                    endpoint.clone(),
                    own.unwrap_or_else(|| dialing.clone()),
                    conns.clone(),
                    view.clone(),
                ));
                dialers.insert(spec.node, task);
            }
            DialCmd::Stop(node) => {
                dialers.remove(&node);
            }
        }
    }
}

/// How long a probe's handshake may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes a selection candidate: a verified handshake whose RTT is reported, then the
/// connection is closed before any stream opens.
async fn probe(
    peer: NodeId,
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    dialing: Arc<DialContext>,
    events: mpsc::Sender<Event>,
) {
    let (_, dialed) = dialing.dial(&endpoint, addr, &peer);
    let rtt = match tokio::time::timeout(PROBE_TIMEOUT, dialed).await {
        Ok(Ok(conn)) => {
            let rtt = conn.rtt();
            conn.close(0u32.into(), b"probe");
            Some(rtt)
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = peer.as_str(), %addr, error = %e, "probe failed");
            None
        }
        Err(_) => None,
    };
    let _ = events.send(Event::Probed { peer, rtt }).await;
}

/// Keeps a session with `peer` up: dial, wait for the connection to end, redial with
/// exponential backoff and ±20 % jitter.
async fn dial_loop(
    peer: NodeId,
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    dialing: Arc<DialContext>,
    conns: mpsc::UnboundedSender<NewConn>,
    view: Arc<View>,
) {
    let (min, max) = dialing.backoff;
    let mut delay = min;
    loop {
        if view.peer_up(peer.as_str()) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let (local, dialed) = dialing.dial(&endpoint, addr, &peer);
        // A dial whose first packets found no listener completes only at QUIC's next
        // retransmission; if the peer dialed us meanwhile, that late connection would
        // only contend with a working session: abandon it.
        let dialed = tokio::select! {
            dialed = dialed => dialed,
            () = until_up(&view, &peer) => continue,
        };
        match dialed {
            Ok(conn) => {
                if conns
                    .send(NewConn {
                        conn: conn.clone(),
                        peer: peer.clone(),
                        dialer: local,
                    })
                    .is_err()
                {
                    return;
                }
                let since = Instant::now();
                let closed = conn.closed().await;
                // Back off again unless the connection held or lost a collision (the peer
                // keeps another connection, or is probing a dead one of a previous run of
                // ours): a listener that refuses this node right after the handshake must
                // not be redialed every `min`.
                delay = if since.elapsed() >= STABLE_CONNECTION || lost_collision(&closed) {
                    min
                } else if held_off(&closed) {
                    max
                } else if matches!(closed, quinn::ConnectionError::TimedOut) {
                    (delay * 2).min(max).min(UNREACHABLE_RETRY_MAX)
                } else {
                    (delay * 2).min(max)
                };
            }
            Err(e) => {
                tracing::debug!(peer = peer.as_str(), %addr, error = %e, "dial failed");
                if let Some(info) = view.write().peers.get_mut(peer.as_str()) {
                    if info.state != "up" {
                        info.last_error = Some(e.to_string());
                    }
                }
                // A peer that does not answer costs a few packets per try: keep trying
                // often, so a healed link re-peers within about a second. A peer that
                // answers with a refusal does the work of a handshake: back off.
                delay = match e {
                    transport::TransportError::Unreachable { .. } => {
                        (delay * 2).min(max).min(UNREACHABLE_RETRY_MAX)
                    }
                    _ => (delay * 2).min(max),
                };
            }
        }
        tokio::time::sleep(jitter(delay)).await;
    }
}

/// Returns once the session with `peer` is up.
async fn until_up(view: &View, peer: &NodeId) {
    while !view.peer_up(peer.as_str()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the peer closed the connection because another connection between the two
/// nodes won the tie-break.
fn lost_collision(closed: &quinn::ConnectionError) -> bool {
    let collision = trellis_schemas::peering_capnp::CloseReason::CollisionResolved as u32;
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code == collision.into(),
        _ => false,
    }
}

/// Whether the peer closed the connection because this node exceeded its max-routes
/// limit there (it now refuses this node for a while).
fn held_off(closed: &quinn::ConnectionError) -> bool {
    let code = trellis_schemas::peering_capnp::CloseReason::MaxRoutesExceeded as u32;
    matches!(closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == code.into())
}

/// Longest redial delay for a peer that does not answer at all (each try already waits
/// one detection time for an answer).
const UNREACHABLE_RETRY_MAX: Duration = Duration::from_millis(500);

/// A connection that lasted this long resets the redial backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

fn jitter(d: Duration) -> Duration {
    let r = crate::util::random_bytes::<2>().map_or(0x8000, u16::from_be_bytes);
    // factor in [0.8, 1.2)
    let factor = 0.8 + 0.4 * f64::from(r) / 65_536.0;
    d.mul_f64(factor)
}
