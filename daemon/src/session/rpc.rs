//! One peering session over capnp-rpc on one QUIC bidirectional stream.
//!
//! Runs inside the session thread's `LocalSet`. Inbound calls (the `PeerSession` this node
//! exports) are decoded and validated here and forwarded to the routing loop over a bounded
//! channel: a call returns only once the loop has accepted it, which is the flow control.
//! Outbound messages come from the loop on the session's own bounded queue and become
//! calls on the peer's `PeerSession`, at most `max_in_flight` at a time.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
use trellis_routing::{Message, NodeId};
use trellis_schemas::peering_capnp::{peer_session, session_open, CloseReason};

use super::{reason_name, ConnId, Event, KillSwitch, Outgoing, SessionHandle};
use crate::codec;

/// Session parameters (from the node config).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// This node.
    pub local: NodeId,
    /// Proposed hold time (0: none).
    pub hold_time: Duration,
    /// Keepalive interval (at most a third of the negotiated hold time is used).
    pub keepalive: Duration,
    /// How long the peer should keep this node's routes after a loss, seconds.
    pub graceful_restart_secs: u16,
    /// Close a peer that has not acknowledged a call for this long.
    pub send_hold: Duration,
    /// Outbound queue length.
    pub queue: usize,
    /// Calls in flight at once.
    pub max_in_flight: usize,
    /// Time allowed for the stream and both `open` calls.
    pub open_timeout: Duration,
    /// Where the connection goes once the session is up, for data-plane streams.
    pub links: Option<crate::dataplane::Links>,
}

/// How often a session samples its connection for peer scoring.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Most inbound calls a peer may have waiting at once (a well-behaved peer has at most
/// its `max_in_flight`, 16 by default): each holds its decoded message in memory.
const MAX_INBOUND_CALLS: usize = 64;

/// Decrements the waiting-call count when a call ends.
struct CallGuard(Rc<RefCell<InState>>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut state = self.0.borrow_mut();
        state.calls_waiting = state.calls_waiting.saturating_sub(1);
    }
}

/// What the inbound side learned; shared with the session task.
#[derive(Default)]
struct InState {
    calls_waiting: usize,
    hello: Option<Hello>,
    last_rx: Option<Instant>,
    failure: Option<(CloseReason, String)>,
    peer_closed: Option<(CloseReason, String)>,
    up: bool,
}

#[derive(Clone, Debug)]
struct Hello {
    node: String,
    org: String,
    version: u16,
    hold_secs: u16,
    graceful_restart_secs: u16,
    /// The peer reads trace context in data-plane stream headers.
    trace_context: bool,
}

fn read_hello(r: session_open::Reader<'_>) -> capnp::Result<Hello> {
    Ok(Hello {
        node: r.get_node_id()?.to_string()?,
        org: r.get_org_id()?.to_string()?,
        version: r.get_protocol_version(),
        hold_secs: r.get_hold_time_secs(),
        graceful_restart_secs: r.get_graceful_restart_secs(),
        // Unknown capabilities (a newer peer's) are skipped.
        trace_context: r.has_capabilities()
            && r.get_capabilities()?
                .iter()
                .any(|c| c == Ok(trellis_schemas::peering_capnp::Capability::TraceContext)),
    })
}

fn write_hello(cfg: &SessionConfig, mut b: session_open::Builder<'_>) {
    b.set_protocol_version(trellis_schemas::PROTOCOL_VERSION);
    b.set_node_id(cfg.local.as_str());
    b.set_org_id(cfg.local.org_str());
    b.set_hold_time_secs(u16::try_from(cfg.hold_time.as_secs()).unwrap_or(u16::MAX));
    b.set_graceful_restart_secs(cfg.graceful_restart_secs);
    b.init_capabilities(1)
        .set(0, trellis_schemas::peering_capnp::Capability::TraceContext);
}

/// This node's `PeerSession`: what the peer calls.
struct Inbound {
    peer: NodeId,
    conn: ConnId,
    cfg: Rc<SessionConfig>,
    events: mpsc::Sender<Event>,
    state: Rc<RefCell<InState>>,
    wake: Rc<Notify>,
    up: Rc<Notify>,
    opened: RefCell<Option<oneshot::Sender<()>>>,
}

fn rpc_err(message: impl Into<String>) -> capnp::Error {
    capnp::Error::failed(message.into())
}

impl Inbound {
    fn touch(&self) {
        self.state.borrow_mut().last_rx = Some(Instant::now());
    }

    fn require_open(&self) -> Result<(), capnp::Error> {
        self.touch();
        if self.state.borrow().hello.is_none() {
            self.fail(CloseReason::MalformedMessage, "a call before open".into());
            return Err(rpc_err("open first"));
        }
        Ok(())
    }

    /// Waits until the routing loop knows the session is up, so nothing the peer sends
    /// right after `open` reaches the loop before `Event::Up` (it would be dropped).
    async fn until_up(&self) -> Result<(), capnp::Error> {
        self.require_open()?;
        loop {
            let notified = self.up.notified();
            {
                let state = self.state.borrow();
                if state.up {
                    return Ok(());
                }
                if state.failure.is_some() {
                    return Err(rpc_err("session closing"));
                }
            }
            notified.await;
        }
    }

    fn fail(&self, reason: CloseReason, message: String) {
        let mut state = self.state.borrow_mut();
        if state.failure.is_none() {
            state.failure = Some((reason, message));
        }
        drop(state);
        self.wake.notify_one();
    }

    fn bad_input(&self, error: &codec::CodecError) -> capnp::Error {
        let reason = if error.is_oversized() {
            CloseReason::OversizedMessage
        } else {
            CloseReason::MalformedMessage
        };
        self.fail(reason, error.to_string());
        rpc_err(error.to_string())
    }

    /// A message whose structure does not decode (bad pointer, wrong list size).
    fn malformed(&self, what: &str, error: &capnp::Error) -> capnp::Error {
        self.bad_input(&codec::CodecError::Malformed(format!("{what}: {error}")))
    }

    /// Counts an inbound call; refuses (and closes the session) past `MAX_INBOUND_CALLS`
    /// calls waiting at once, so a peer cannot make this node buffer without bound.
    fn enter(&self) -> Result<CallGuard, capnp::Error> {
        let waiting = self.state.borrow().calls_waiting;
        if waiting >= MAX_INBOUND_CALLS {
            self.fail(
                CloseReason::PolicyViolation,
                format!("more than {MAX_INBOUND_CALLS} calls waiting at once"),
            );
            return Err(rpc_err("too many calls in flight"));
        }
        self.state.borrow_mut().calls_waiting += 1;
        Ok(CallGuard(self.state.clone()))
    }

    async fn forward(&self, event: Event) -> Result<(), capnp::Error> {
        self.events
            .send(event)
            .await
            .map_err(|_| rpc_err("node shutting down"))
    }
}

impl peer_session::Server for Inbound {
    fn open(
        self: Rc<Self>,
        params: peer_session::OpenParams,
        mut results: peer_session::OpenResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        self.touch();
        let hello = params.get().and_then(|p| read_hello(p.get_hello()?));
        let outcome = match hello {
            Ok(hello) => {
                self.state.borrow_mut().hello = Some(hello);
                write_hello(&self.cfg, results.get().init_hello());
                if let Some(tx) = self.opened.borrow_mut().take() {
                    let _ = tx.send(());
                }
                Ok(())
            }
            Err(e) => {
                self.fail(CloseReason::MalformedMessage, format!("bad open: {e}"));
                Err(e)
            }
        };
        std::future::ready(outcome)
    }

    async fn update(
        self: Rc<Self>,
        params: peer_session::UpdateParams,
        _: peer_session::UpdateResults,
    ) -> Result<(), capnp::Error> {
        let _guard = self.enter()?;
        self.until_up().await?;
        let batch = params
            .get()
            .and_then(|p| p.get_batch())
            .map_err(|e| self.malformed("update", &e))?;
        let trace = if crate::telemetry::exporting() && batch.has_trace_context() {
            batch
                .get_trace_context()
                .ok()
                .and_then(crate::telemetry::TraceParent::decode)
        } else {
            None
        };
        let batch = codec::update::read_batch(batch).map_err(|e| self.bad_input(&e))?;
        self.forward(Event::Update {
            peer: self.peer.clone(),
            conn: self.conn,
            batch,
            trace,
        })
        .await
    }

    async fn end_of_table(
        self: Rc<Self>,
        _: peer_session::EndOfTableParams,
        _: peer_session::EndOfTableResults,
    ) -> Result<(), capnp::Error> {
        let _guard = self.enter()?;
        self.until_up().await?;
        self.forward(Event::EndOfTable {
            peer: self.peer.clone(),
            conn: self.conn,
        })
        .await
    }

    fn keepalive(
        self: Rc<Self>,
        params: peer_session::KeepaliveParams,
        mut results: peer_session::KeepaliveResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        self.touch();
        let echoed = params
            .get()
            .and_then(|p| p.get_ka())
            .map(|ka| ka.get_sent_at_ms());
        let echoed = echoed.map_err(|e| self.malformed("keepalive", &e));
        std::future::ready(echoed.map(|ms| results.get().init_ka().set_sent_at_ms(ms)))
    }

    async fn signed(
        self: Rc<Self>,
        params: peer_session::SignedParams,
        _: peer_session::SignedResults,
    ) -> Result<(), capnp::Error> {
        let _guard = self.enter()?;
        self.until_up().await?;
        let envelope = params
            .get()
            .and_then(|p| p.get_envelope())
            .map_err(|e| self.malformed("signed", &e))?;
        let kind = envelope.get_kind().map_err(|e| {
            self.bad_input(&codec::CodecError::Malformed(format!("envelope kind: {e}")))
        })?;
        use trellis_schemas::peering_capnp::EnvelopeKind;
        let event = match kind {
            EnvelopeKind::OriginManifest => {
                let manifest =
                    codec::manifest::read_manifest(envelope).map_err(|e| self.bad_input(&e))?;
                Event::Manifest {
                    peer: self.peer.clone(),
                    conn: self.conn,
                    manifest,
                }
            }
            EnvelopeKind::TrustSnapshot => {
                let bytes = envelope_bytes(envelope).map_err(|e| self.bad_input(&e))?;
                Event::TrustSnapshot {
                    peer: self.peer.clone(),
                    envelope: bytes,
                }
            }
            EnvelopeKind::TableSnapshot => return Ok(()),
        };
        self.forward(event).await
    }

    fn close(
        self: Rc<Self>,
        params: peer_session::CloseParams,
        _: peer_session::CloseResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let closed = params.get().and_then(|p| {
            let c = p.get_close()?;
            let reason = c.get_reason().unwrap_or(CloseReason::InternalError);
            let message: String = c
                .get_message()?
                .to_string()
                .unwrap_or_default()
                .chars()
                .take(trellis_schemas::MAX_CLOSE_MESSAGE_BYTES)
                .collect();
            Ok((reason, message))
        });
        if let Ok(closed) = closed {
            self.state.borrow_mut().peer_closed = Some(closed);
            self.wake.notify_one();
        }
        std::future::ready(Ok(()))
    }
}

/// Re-encodes a received envelope as the standalone bytes `trellis-policy` verifies.
fn envelope_bytes(
    r: trellis_schemas::peering_capnp::signed_envelope::Reader<'_>,
) -> Result<Vec<u8>, codec::CodecError> {
    let bad = |e: capnp::Error| codec::CodecError::Malformed(e.to_string());
    let mut message = capnp::message::Builder::new_default();
    message.set_root(r).map_err(bad)?;
    Ok(capnp::serialize::write_message_to_words(&message))
}

fn write_envelope(
    bytes: &[u8],
    mut b: trellis_schemas::peering_capnp::signed_envelope::Builder<'_>,
) -> capnp::Result<()> {
    let words = trellis_policy::envelope::aligned(bytes).map_err(|e| rpc_err(e.to_string()))?;
    let mut slice = capnp::Word::words_to_bytes(&words);
    let message = capnp::serialize::read_message_from_flat_slice(
        &mut slice,
        trellis_schemas::reader_options(),
    )?;
    let root = message.get_root::<trellis_schemas::peering_capnp::signed_envelope::Reader>()?;
    b.set_kind(root.get_kind()?);
    b.set_payload(root.get_payload()?);
    b.set_signer(root.get_signer()?);
    b.set_algorithm(root.get_algorithm()?);
    b.set_signature(root.get_signature()?);
    Ok(())
}

type Call =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u64, Result<Option<u64>, capnp::Error>)>>>;

fn call(client: &peer_session::Client, seq: u64, item: Outgoing) -> Call {
    match item {
        Outgoing::Message(Message::Update(batch)) => {
            let mut req = client.update_request();
            codec::update::write_batch(&batch, req.get().init_batch());
            Box::pin(async move { (seq, req.send().promise.await.map(|_| None)) })
        }
        Outgoing::Traced(batch, trace) => {
            let mut req = client.update_request();
            let mut b = req.get().init_batch();
            codec::update::write_batch(&batch, b.reborrow());
            b.set_trace_context(&trace.encode());
            Box::pin(async move { (seq, req.send().promise.await.map(|_| None)) })
        }
        Outgoing::Message(Message::EndOfTable) => {
            let req = client.end_of_table_request();
            Box::pin(async move { (seq, req.send().promise.await.map(|_| None)) })
        }
        Outgoing::Message(Message::Manifest(manifest)) => {
            let mut req = client.signed_request();
            let written = codec::manifest::write_manifest(&manifest, req.get().init_envelope());
            Box::pin(async move {
                if let Err(e) = written {
                    return (seq, Err(rpc_err(e.to_string())));
                }
                (seq, req.send().promise.await.map(|_| None))
            })
        }
        Outgoing::Probe => keepalive(client, seq),
        Outgoing::TrustSnapshot(bytes) => {
            let mut req = client.signed_request();
            let written = write_envelope(&bytes, req.get().init_envelope());
            Box::pin(async move {
                if let Err(e) = written {
                    return (seq, Err(e));
                }
                (seq, req.send().promise.await.map(|_| None))
            })
        }
    }
}

fn keepalive(client: &peer_session::Client, seq: u64) -> Call {
    let mut req = client.keepalive_request();
    let sent = Instant::now();
    req.get()
        .init_ka()
        .set_sent_at_ms(crate::util::time::now_secs() * 1000);
    Box::pin(async move {
        let result = req.send().promise.await;
        (
            seq,
            result.map(|_| Some(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))),
        )
    })
}

/// Runs one session on `conn` to `peer` until it ends; reports to the routing loop. The
/// session is one span (`session`, open to close) whose `close.reason` says why it ended.
pub async fn run(
    conn: quinn::Connection,
    peer: NodeId,
    dialer: NodeId,
    conn_id: ConnId,
    cfg: Rc<SessionConfig>,
    events: mpsc::Sender<Event>,
) {
    let span = tracing::info_span!(
        "session",
        peer = peer.as_str(),
        conn = conn_id,
        dialer = dialer.as_str(),
        close.reason = tracing::field::Empty,
        close.detail = tracing::field::Empty,
    );
    tracing::Instrument::instrument(run_session(conn, peer, dialer, conn_id, cfg, events), span)
        .await;
}

/// Records why the session ended on its span.
fn record_close(reason: &str, detail: &str) {
    let span = tracing::Span::current();
    span.record("close.reason", reason);
    span.record("close.detail", detail);
}

async fn run_session(
    conn: quinn::Connection,
    peer: NodeId,
    dialer: NodeId,
    conn_id: ConnId,
    cfg: Rc<SessionConfig>,
    events: mpsc::Sender<Event>,
) {
    let outbound = dialer == cfg.local;
    let stream = async {
        if outbound {
            conn.open_bi().await
        } else {
            conn.accept_bi().await
        }
    };
    let (send, recv) = match tokio::time::timeout(cfg.open_timeout, stream).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            // A selection probe closes right after its handshake: routine, not news.
            let probe = matches!(&e, quinn::ConnectionError::ApplicationClosed(c) if c.reason.as_ref() == b"probe");
            if probe {
                record_close("probe", "");
                tracing::debug!(peer = peer.as_str(), "probed by a selection candidate");
            } else {
                record_close("no session stream", &e.to_string());
                tracing::info!(peer = peer.as_str(), error = %e, "no session stream");
            }
            return;
        }
        Err(_) => {
            record_close(
                reason_name(CloseReason::HoldTimerExpired),
                "no session stream in time",
            );
            close_conn(
                &conn,
                CloseReason::HoldTimerExpired,
                "no session stream in time",
            );
            return;
        }
    };

    // The routing session goes before data-plane streams on the same connection.
    let _ = send.set_priority(1);
    let (tx, mut outq) = mpsc::channel(cfg.queue);
    let kill = Arc::new(KillSwitch::default());
    let (reply_tx, reply_rx) = oneshot::channel();
    let serial = crate::transport::peer_identity(&conn)
        .map(|p| p.serial)
        .unwrap_or_default();
    let register = Event::Register {
        peer: peer.clone(),
        conn: conn_id,
        dialer: dialer.clone(),
        serial,
        handle: SessionHandle {
            tx,
            kill: kill.clone(),
        },
        reply: reply_tx,
    };
    if events.send(register).await.is_err() || !reply_rx.await.unwrap_or(false) {
        tracing::info!(
            peer = peer.as_str(),
            "connection lost the collision tie-break"
        );
        record_close(
            reason_name(CloseReason::CollisionResolved),
            "another connection to this peer wins",
        );
        close_conn(
            &conn,
            CloseReason::CollisionResolved,
            "another connection to this peer wins",
        );
        return;
    }

    let state = Rc::new(RefCell::new(InState::default()));
    let wake = Rc::new(Notify::new());
    let up_notify = Rc::new(Notify::new());
    let (opened_tx, opened_rx) = oneshot::channel();
    let inbound = Inbound {
        peer: peer.clone(),
        conn: conn_id,
        cfg: cfg.clone(),
        events: events.clone(),
        state: state.clone(),
        wake: wake.clone(),
        up: up_notify.clone(),
        opened: RefCell::new(Some(opened_tx)),
    };
    let network = twoparty::VatNetwork::new(
        recv.compat(),
        send.compat_write(),
        if outbound { Side::Client } else { Side::Server },
        trellis_schemas::reader_options(),
    );
    let mut rpc = RpcSystem::new(
        Box::new(network),
        Some(capnp_rpc::new_client::<peer_session::Client, _>(inbound).client),
    );
    let remote: peer_session::Client =
        rpc.bootstrap(if outbound { Side::Server } else { Side::Client });
    let disconnector = rpc.get_disconnector();
    let (rpc_done_tx, mut rpc_done) = oneshot::channel::<String>();
    tokio::task::spawn_local(async move {
        let result = rpc.await;
        let _ = rpc_done_tx.send(match result {
            Ok(()) => "stream closed".to_owned(),
            Err(e) => e.to_string(),
        });
    });

    let outcome = session_loop(
        &cfg,
        &peer,
        conn_id,
        &remote,
        &state,
        &wake,
        &kill,
        &mut outq,
        &events,
        &conn,
        opened_rx,
        &mut rpc_done,
        &up_notify,
    )
    .await;
    let (reason, message, graceful, notify_peer) = outcome;
    if matches!(
        reason,
        CloseReason::MalformedMessage
            | CloseReason::OversizedMessage
            | CloseReason::PolicyViolation
    ) {
        let _ = events
            .send(Event::BadInput {
                peer: peer.clone(),
                reason: format!("{}: {message}", reason_name(reason)),
            })
            .await;
    }
    if notify_peer {
        let mut req = remote.close_request();
        {
            let mut c = req.get().init_close();
            c.set_reason(reason);
            c.set_message(message.as_str());
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), req.send().promise).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), disconnector).await;
    if let Some(links) = &cfg.links {
        links.down(&peer, conn_id);
    }
    // Closing the connection resets every data-plane stream still on it.
    close_conn(&conn, reason, &message);
    record_close(reason_name(reason), &message);
    tracing::info!(peer = peer.as_str(), reason = reason_name(reason), detail = %message, "session closed");
    let _ = events
        .send(Event::Down {
            peer,
            conn: conn_id,
            graceful,
            reason: format!("{}: {message}", reason_name(reason)),
        })
        .await;
}

/// Why the RPC stream ended: a frame over the reader limits (capnp refuses it before
/// allocating) is the peer's oversized message; anything else is a lost stream.
fn stream_ended(detail: &str) -> Outcome {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("too large") || lower.contains("too many segments") {
        return (
            CloseReason::OversizedMessage,
            format!("a frame over the message limits: {detail}"),
            false,
            true,
        );
    }
    if lower.contains("nesting limit exceeded") || lower.contains("read limit exceeded") {
        return (
            CloseReason::MalformedMessage,
            format!("a message over the reader limits: {detail}"),
            false,
            true,
        );
    }
    (
        CloseReason::HoldTimerExpired,
        format!("session stream ended: {detail}"),
        false,
        false,
    )
}

fn close_conn(conn: &quinn::Connection, reason: CloseReason, message: &str) {
    let bytes: Vec<u8> = message
        .bytes()
        .take(trellis_schemas::MAX_CLOSE_MESSAGE_BYTES)
        .collect();
    conn.close((reason as u32).into(), &bytes);
}

/// (reason, message, graceful, tell the peer). Every loss is non-graceful: keeping a lost
/// peer's paths as stale while they lose to fresh ones let two neighbours of a dead node
/// re-advertise their stale paths to each other and forward in a loop until the window
/// ended (found by the kill-node scenario; docs/adr/0006). Routes of a lost peer are
/// withdrawn at once; a restarting node restores its own table from its store.
type Outcome = (CloseReason, String, bool, bool);

#[allow(clippy::too_many_arguments)]
async fn session_loop(
    cfg: &SessionConfig,
    peer: &NodeId,
    conn_id: ConnId,
    remote: &peer_session::Client,
    state: &Rc<RefCell<InState>>,
    wake: &Rc<Notify>,
    kill: &Arc<KillSwitch>,
    outq: &mut mpsc::Receiver<Outgoing>,
    events: &mpsc::Sender<Event>,
    conn: &quinn::Connection,
    opened_rx: oneshot::Receiver<()>,
    rpc_done: &mut oneshot::Receiver<String>,
    up_notify: &Rc<Notify>,
) -> Outcome {
    // 1. Both opens.
    let mut open_req = remote.open_request();
    write_hello(cfg, open_req.get().init_hello());
    let opening = async {
        let theirs = open_req.send().promise.await?;
        let reply = read_hello(theirs.get()?.get_hello()?)?;
        let _ = opened_rx.await;
        Ok::<_, capnp::Error>(reply)
    };
    let reply = match tokio::time::timeout(cfg.open_timeout, opening).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            // A listener that refuses our certificate closes the connection right after
            // the handshake: report its reason, not a protocol error of ours.
            if let Some(closed) = conn.close_reason() {
                return (
                    CloseReason::Unauthorized,
                    format!("the peer closed the connection during open: {closed}"),
                    false,
                    false,
                );
            }
            return (
                CloseReason::MalformedMessage,
                format!("open failed: {e}"),
                false,
                true,
            );
        }
        Err(_) => {
            return (
                CloseReason::HoldTimerExpired,
                "no open in time".into(),
                false,
                true,
            )
        }
    };
    let hello = state.borrow().hello.clone().unwrap_or(reply);
    if hello.node != peer.as_str() || hello.org != peer.org_str() {
        let message = format!(
            "open names {} but the certificate is for {}",
            hello.node,
            peer.as_str()
        );
        return (CloseReason::Unauthorized, message, false, true);
    }
    if hello.version != trellis_schemas::PROTOCOL_VERSION {
        return (
            CloseReason::UnsupportedVersion,
            format!("protocol version {}", hello.version),
            false,
            true,
        );
    }
    if hello.hold_secs != 0 && hello.hold_secs < 3 {
        return (
            CloseReason::MalformedMessage,
            format!("hold time {} s is below 3 s", hello.hold_secs),
            false,
            true,
        );
    }
    let own = cfg.hold_time.as_secs();
    let hold = match (own, u64::from(hello.hold_secs)) {
        (0, _) | (_, 0) => None,
        (a, b) => Some(Duration::from_secs(a.min(b))),
    };
    // Before the loop hears of it: once `peers list` says up, streams can use the link.
    if let Some(links) = &cfg.links {
        links.up(peer, conn_id, conn.clone(), hello.trace_context);
    }
    if events
        .send(Event::Up {
            peer: peer.clone(),
            conn: conn_id,
            graceful_restart_secs: hello.graceful_restart_secs,
        })
        .await
        .is_err()
    {
        return (
            CloseReason::AdminShutdown,
            "node shutting down".into(),
            false,
            true,
        );
    }
    state.borrow_mut().up = true;
    up_notify.notify_waiters();
    tracing::info!(
        peer = peer.as_str(),
        hold_secs = hold.map_or(0, |h| h.as_secs()),
        "session established"
    );

    // 2. Established.
    let mut inflight: FuturesUnordered<Call> = FuturesUnordered::new();
    let mut started: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut seq = 0u64;
    let tick_every = hold.map_or(Duration::from_secs(1), |h| {
        cfg.keepalive.min(h / 3).max(Duration::from_millis(500))
    });
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    state.borrow_mut().last_rx = Some(Instant::now());
    loop {
        if let Some((reason, message)) = state.borrow().failure.clone() {
            return (reason, message, false, true);
        }
        if let Some((reason, message)) = state.borrow().peer_closed.clone() {
            return (reason, format!("closed by peer: {message}"), false, false);
        }
        tokio::select! {
            item = outq.recv(), if inflight.len() < cfg.max_in_flight => match item {
                Some(item) => {
                    seq += 1;
                    started.insert(seq, Instant::now());
                    inflight.push(call(remote, seq, item));
                }
                // The routing loop dropped the handle: it kills with the real reason
                // first (trimmed, removed, replaced), which both wakeups may race.
                None => {
                    let (reason, message) = kill
                        .reason()
                        .unwrap_or((CloseReason::AdminShutdown, "node shutting down".into()));
                    return (reason, message, false, true);
                }
            },
            Some((done, result)) = inflight.next(), if !inflight.is_empty() => {
                started.remove(&done);
                match result {
                    Ok(rtt) => {
                        state.borrow_mut().last_rx = Some(Instant::now());
                        if let Some(micros) = rtt {
                            let _ = events.try_send(Event::Rtt { peer: peer.clone(), micros });
                        }
                    }
                    Err(e) => return (CloseReason::InternalError, format!("call failed: {e}"), false, false),
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(hold) = hold {
                    let last = state.borrow().last_rx.unwrap_or(now);
                    if now.duration_since(last) > hold {
                        return (CloseReason::HoldTimerExpired, format!("nothing received for {} s", hold.as_secs()), false, true);
                    }
                    seq += 1;
                    started.insert(seq, now);
                    inflight.push(keepalive(remote, seq));
                }
                if let Some((_, oldest)) = started.iter().next() {
                    if now.duration_since(*oldest) > cfg.send_hold {
                        return (CloseReason::SendHoldTimerExpired, format!("a call unacknowledged for {} s", cfg.send_hold.as_secs()), false, false);
                    }
                }
            },
            _ = sample.tick() => {
                let path = conn.stats().path;
                // Never waits: a full queue drops one sample, the next comes in a second.
                let _ = events.try_send(Event::Sample {
                    peer: peer.clone(),
                    conn: conn_id,
                    rtt: path.rtt,
                    sent: path.sent_packets,
                    lost: path.lost_packets,
                });
            },
            () = wake.notified() => {}
            (reason, message) = kill.killed() => return (reason, message, false, true),
            e = conn.closed() => return (CloseReason::HoldTimerExpired, format!("connection lost: {e}"), false, false),
            detail = &mut *rpc_done => {
                let detail = detail.unwrap_or_else(|_| "rpc system ended".into());
                if let Some(failure) = state.borrow().failure.clone() {
                    return (failure.0, failure.1, false, false);
                }
                return stream_ended(&detail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_over_the_limits_closes_as_oversized_and_tells_the_peer() {
        let (reason, message, graceful, tell) = stream_ended(
            "Message has 9000000 words, which is too large. To increase the limit on the receiving end, see capnp::message::ReaderOptions.",
        );
        assert_eq!(reason, CloseReason::OversizedMessage);
        assert!(message.contains("too large"));
        assert!(!graceful && tell);
        let (reason, ..) = stream_ended("Too many segments: 600");
        assert_eq!(reason, CloseReason::OversizedMessage);
        let (reason, ..) = stream_ended("nesting limit exceeded");
        assert_eq!(reason, CloseReason::MalformedMessage);
    }

    #[test]
    fn a_lost_stream_is_not_blamed_on_the_peer() {
        let (reason, _, _, tell) = stream_ended("connection lost");
        assert_eq!(reason, CloseReason::HoldTimerExpired);
        assert!(!tell);
    }
}
