//! Peering sessions: one Cap'n Proto RPC session per QUIC connection, run on the session
//! thread (capnp-rpc is `!Send`, so every session lives in one `LocalSet`), talking to the
//! routing loop over bounded channels (docs/architecture.md, "Node daemon").
//!
//! Life of a session (docs/protocol.md, "Session state machine"): the dialer opens one
//! bidirectional stream; both sides bootstrap the other's `PeerSession`; each calls `open`
//! and waits for the other's; the session registers with the routing loop (collision
//! resolution), then carries batches, end-of-table, signed documents and keepalives until
//! a close with a reason, a hold-timer expiry, a send-hold expiry or connection loss.

mod rpc;

pub use rpc::{run, SessionConfig};

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify};
use trellis_routing::{Message, NodeId, SignedManifest, UpdateBatch};
use trellis_schemas::peering_capnp::CloseReason;

/// A session's identity in the routing loop: peer plus a connection number.
pub type ConnId = u64;

/// What a session tells the routing loop.
#[derive(Debug)]
pub enum Event {
    /// A connection to `peer` is ready to open a session; the loop answers whether it may
    /// (collision resolution) and keeps `handle` to send to it.
    Register {
        /// The peer (from its TLS certificate).
        peer: NodeId,
        /// This connection.
        conn: ConnId,
        /// Who dialed this connection.
        dialer: NodeId,
        /// Serial of the peer's certificate (closed when a snapshot revokes it).
        serial: Vec<u8>,
        /// How the loop reaches the session.
        handle: SessionHandle,
        /// `true`: go on; `false`: close with `collisionResolved`.
        reply: oneshot::Sender<bool>,
    },
    /// Both `open` calls completed.
    Up {
        /// The peer.
        peer: NodeId,
        /// The connection.
        conn: ConnId,
        /// The peer asks for its routes to be kept this long after a loss (0: none).
        graceful_restart_secs: u16,
    },
    /// The session ended.
    Down {
        /// The peer.
        peer: NodeId,
        /// The connection.
        conn: ConnId,
        /// Keep the peer's routes as stale (connection loss, hold expiry).
        graceful: bool,
        /// Why, for logs and `peers show`.
        reason: String,
    },
    /// A batch arrived.
    Update {
        /// The peer.
        peer: NodeId,
        /// The connection.
        conn: ConnId,
        /// The batch.
        batch: UpdateBatch,
        /// The sender's trace context, if it sent one (telemetry).
        trace: Option<crate::telemetry::TraceParent>,
    },
    /// The peer's initial table is complete.
    EndOfTable {
        /// The peer.
        peer: NodeId,
        /// The connection.
        conn: ConnId,
    },
    /// A signed origin manifest arrived.
    Manifest {
        /// The peer.
        peer: NodeId,
        /// The connection.
        conn: ConnId,
        /// The manifest.
        manifest: SignedManifest,
    },
    /// A trust snapshot envelope arrived (flooded through the mesh).
    TrustSnapshot {
        /// The peer.
        peer: NodeId,
        /// The encoded envelope.
        envelope: Vec<u8>,
    },
    /// The peer sent something malformed or oversized; the session is closing.
    BadInput {
        /// The peer.
        peer: NodeId,
        /// What was wrong.
        reason: String,
    },
    /// The connection's measurements, once a second: QUIC's smoothed RTT and its packet
    /// counters since the connection opened.
    Sample {
        /// The peer.
        peer: NodeId,
        /// The connection.
        conn: ConnId,
        /// QUIC's RTT estimate.
        rtt: std::time::Duration,
        /// Packets sent.
        sent: u64,
        /// Packets declared lost.
        lost: u64,
    },
    /// A keepalive round trip was measured.
    Rtt {
        /// The peer.
        peer: NodeId,
        /// Round-trip time in microseconds.
        micros: u64,
    },
    /// A probe of a selection candidate ended (not a session: a handshake, then closed).
    Probed {
        /// The candidate.
        peer: NodeId,
        /// The handshake's RTT, or `None` if it failed.
        rtt: Option<std::time::Duration>,
    },
}

/// What the routing loop sends to a session.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A routing message.
    Message(Message),
    /// An update batch with the trace context of the span that caused it.
    Traced(UpdateBatch, crate::telemetry::TraceParent),
    /// A trust snapshot envelope to flood.
    TrustSnapshot(Arc<Vec<u8>>),
    /// A keepalive now: the peer dialed again while this session is up, so it may have
    /// restarted; a packet on a dead connection draws its stateless reset at once.
    Probe,
}

/// Closes a session from outside, with a reason (also when its queue is full).
#[derive(Debug, Default)]
pub struct KillSwitch {
    reason: Mutex<Option<(CloseReason, String)>>,
    notify: Notify,
}

impl KillSwitch {
    /// Asks the session to close with `reason` (the first reason wins).
    pub fn kill(&self, reason: CloseReason, message: impl Into<String>) {
        let mut slot = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some((reason, message.into()));
        }
        drop(slot);
        self.notify.notify_one();
    }

    /// The reason, once killed.
    pub fn reason(&self) -> Option<(CloseReason, String)> {
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until killed.
    pub async fn killed(&self) -> (CloseReason, String) {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

/// How the routing loop reaches one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Bounded queue of messages to send.
    pub tx: mpsc::Sender<Outgoing>,
    /// Close it.
    pub kill: Arc<KillSwitch>,
}

/// Collision resolution (as BGP's, RFC 4271 6.8, made symmetric): of two connections
/// between the same two nodes, both keep the one dialed by the node with the lower id.
/// Returns whether the connection dialed by `new_dialer` should replace the one dialed by
/// `old_dialer`.
pub fn new_connection_wins(old_dialer: &NodeId, new_dialer: &NodeId) -> bool {
    if old_dialer == new_dialer {
        // The same side dialed again: it lost the old connection (restart); the new one
        // is the live one.
        return true;
    }
    new_dialer < old_dialer
}

/// Close reason names as operators read them.
pub fn reason_name(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::AdminShutdown => "admin shutdown",
        CloseReason::HoldTimerExpired => "hold timer expired",
        CloseReason::SendHoldTimerExpired => "send hold timer expired",
        CloseReason::MalformedMessage => "malformed message",
        CloseReason::OversizedMessage => "oversized message",
        CloseReason::MaxRoutesExceeded => "max routes exceeded",
        CloseReason::Unauthorized => "unauthorized",
        CloseReason::Revoked => "revoked",
        CloseReason::CollisionResolved => "collision resolved",
        CloseReason::UnsupportedVersion => "unsupported version",
        CloseReason::PolicyViolation => "policy violation",
        CloseReason::PeerUnconfigured => "peer unconfigured",
        CloseReason::InternalError => "internal error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("id")
    }

    #[test]
    fn both_sides_keep_the_connection_dialed_by_the_lower_id() {
        let (a, b) = (id("acme/a"), id("acme/b"));
        // At a: old = its own dial, new = b's dial. At b: old = its own dial, new = a's.
        assert!(!new_connection_wins(&a, &b), "a keeps its own dial");
        assert!(new_connection_wins(&b, &a), "b switches to a's dial");
    }

    #[test]
    fn a_redial_from_the_same_side_replaces_the_old_connection() {
        let a = id("acme/a");
        assert!(new_connection_wins(&a, &a));
    }

    #[test]
    fn a_kill_switch_keeps_the_first_reason() {
        let kill = KillSwitch::default();
        kill.kill(CloseReason::Revoked, "first");
        kill.kill(CloseReason::AdminShutdown, "second");
        assert_eq!(kill.reason(), Some((CloseReason::Revoked, "first".into())));
    }
}
