//! The peer connections the data plane may use: one per peer whose session is up.
//!
//! A session registers its connection when it is up and unregisters it when it ends
//! ([`Links`]); each registered connection gets one task that accepts the streams the
//! peer opens (every bidirectional stream after the session's own is a data stream).
//! Unregistering aborts that task; the session closes the connection, which resets every
//! stream still on it, so no stream outlives its peer's session (revocation included).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use trellis_routing::NodeId;

use super::Engine;
use crate::util::tasks::OwnedTask;

/// One peer's connection.
struct Link {
    conn_id: u64,
    conn: quinn::Connection,
    /// The peer reads trace context in stream headers (`traceContext` capability).
    traced: bool,
    _accept: OwnedTask,
}

/// Peer → its current connection.
#[derive(Default)]
pub(super) struct LinkMap(Mutex<HashMap<NodeId, Link>>);

impl LinkMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Link>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection to `peer`, if its session is up, and whether it reads trace
    /// context.
    pub(super) fn get_traced(&self, peer: &NodeId) -> Option<(quinn::Connection, bool)> {
        self.lock().get(peer).map(|l| (l.conn.clone(), l.traced))
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}

/// Where sessions hand over their peer connections (cheap to clone).
#[derive(Clone)]
pub struct Links(Arc<Engine>);

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

impl Links {
    pub(super) fn new(engine: Arc<Engine>) -> Self {
        Self(engine)
    }

    /// The session `conn_id` with `peer` is up on `conn`: use it for streams to `peer`
    /// and accept the streams `peer` opens on it; `traced`: the peer listed the
    /// `traceContext` capability. Callable from any thread.
    pub fn up(&self, peer: &NodeId, conn_id: u64, conn: quinn::Connection, traced: bool) {
        let engine = self.0.clone();
        let accepting = accept_loop(engine, peer.clone(), conn.clone());
        let task = {
            let _entered = self.0.runtime.enter();
            OwnedTask::spawn(accepting)
        };
        self.0.links.lock().insert(
            peer.clone(),
            Link {
                conn_id,
                conn,
                traced,
                _accept: task,
            },
        );
    }

    /// The session `conn_id` with `peer` ended (a newer session's link is kept).
    pub fn down(&self, peer: &NodeId, conn_id: u64) {
        let mut links = self.0.links.lock();
        if links.get(peer).is_some_and(|l| l.conn_id == conn_id) {
            links.remove(peer);
        }
    }
}

/// Accepts the data streams `peer` opens on `conn` until the connection ends.
async fn accept_loop(engine: Arc<Engine>, peer: NodeId, conn: quinn::Connection) {
    let open = Arc::new(AtomicUsize::new(0));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (engine, peer, open) = (engine.clone(), peer.clone(), open.clone());
        tokio::spawn(super::forward::inbound(engine, peer, open, send, recv));
    }
}
