//! `trellis connect` listeners: each accepted TCP connection is checked against the
//! node's own allow rules and sent on as a stream toward the service.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use trellis_routing::ServiceName;

use super::relay::{End, Meters};
use super::stats::{take_slot, ListenerStats};
use super::wire::{Reset, StreamHeader};
use super::Engine;
use crate::util::tasks::OwnedTask;

/// Connections one listener may have open at once (each holds two sockets' buffers).
const MAX_CONNECTIONS_PER_LISTENER: usize = 4096;
/// How often a listener whose address is taken tries again.
const REBIND_EVERY: Duration = Duration::from_secs(5);

/// One open listener.
pub(super) struct Listener {
    pub service: ServiceName,
    pub stats: Arc<ListenerStats>,
    bound: Arc<std::sync::atomic::AtomicBool>,
    _task: OwnedTask,
}

impl Listener {
    /// Binds `listen` now (an operator's `connect`: a taken address is an error).
    pub(super) async fn bind(
        engine: &Arc<Engine>,
        service: ServiceName,
        listen: SocketAddr,
    ) -> Result<Self, String> {
        let socket = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let stats = Arc::new(ListenerStats::default());
        let bound = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let task = OwnedTask::spawn(accept_loop(
            engine.clone(),
            socket,
            service.clone(),
            stats.clone(),
        ));
        Ok(Self {
            service,
            stats,
            bound,
            _task: task,
        })
    }

    /// Binds `listen` in the background, retrying while the address is taken (a
    /// listener restored at start).
    pub(super) fn start_retrying(
        engine: &Arc<Engine>,
        service: ServiceName,
        listen: SocketAddr,
    ) -> Self {
        let stats = Arc::new(ListenerStats::default());
        let bound = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (engine, task_stats, task_bound, task_service) = (
            engine.clone(),
            stats.clone(),
            bound.clone(),
            service.clone(),
        );
        let task = OwnedTask::spawn(async move {
            let socket = loop {
                match TcpListener::bind(listen).await {
                    Ok(socket) => break socket,
                    Err(e) => {
                        let why = format!("cannot listen on {listen}: {e}; retrying");
                        tracing::warn!(service = %task_service, "{why}");
                        task_stats.note_error(why);
                        tokio::time::sleep(REBIND_EVERY).await;
                    }
                }
            };
            task_bound.store(true, Ordering::Relaxed);
            tracing::info!(service = %task_service, %listen, "connect listener restored");
            accept_loop(engine, socket, task_service, task_stats).await;
        });
        Self {
            service,
            stats,
            bound,
            _task: task,
        }
    }

    /// Whether the socket is bound.
    pub(super) fn listening(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    engine: Arc<Engine>,
    socket: TcpListener,
    service: ServiceName,
    stats: Arc<ListenerStats>,
) {
    loop {
        match socket.accept().await {
            Ok((tcp, _)) => {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let (engine, service, stats) = (engine.clone(), service.clone(), stats.clone());
                tokio::spawn(serve(engine, tcp, service, stats));
            }
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(%service, error = %e, "connect listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Random id of a new stream (logs and traces at every hop).
fn stream_id() -> u64 {
    crate::util::random_bytes::<8>().map_or(0, u64::from_be_bytes)
}

async fn serve(
    engine: Arc<Engine>,
    tcp: TcpStream,
    service: ServiceName,
    stats: Arc<ListenerStats>,
) {
    let client = End::tcp(tcp);
    let refuse = |reset: Reset, why: String, client: End| {
        engine.refuse(reset, service.as_str(), &why);
        stats.refused.fetch_add(1, Ordering::Relaxed);
        stats.note_error(why.clone());
        client.abort(reset);
    };
    let Some(slot) = take_slot(&stats.active, MAX_CONNECTIONS_PER_LISTENER) else {
        let why = format!("{MAX_CONNECTIONS_PER_LISTENER} connections open on this listener");
        refuse(Reset::ServiceLimit, why, client);
        return;
    };
    if let Err(why) = engine.may_connect(&engine.local, &service) {
        refuse(Reset::Unauthorized, why, client);
        return;
    }
    let header = StreamHeader {
        service: service.clone(),
        requester: engine.local.clone(),
        hops: 0,
        stream_id: stream_id(),
        trace: None,
    };
    let meters = Meters {
        forward: vec![stats.sent.clone()],
        backward: vec![stats.received.clone()],
    };
    if let Some(abort) = super::forward::carry(&engine, header, client, None, meters, slot).await {
        stats.note_error(abort.detail.clone());
        if abort.reset.is_refusal() {
            stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        if abort.reset != Reset::ShuttingDown {
            tracing::info!(%service, reason = abort.reset.name(), detail = abort.detail, "connection through connect listener reset");
        }
    }
}
