//! Moves bytes both ways between two ends of a forwarded connection (a TCP socket or a
//! QUIC stream each), with half-close, backpressure and resets.
//!
//! The contract:
//! - Each direction copies through one 64 KiB buffer: a read waits until the previous
//!   chunk is written, so a slow receiver slows the sender through TCP and QUIC flow
//!   control, and nothing is buffered without bound.
//! - End of data one way (TCP FIN, QUIC FIN) is passed on as end of data that way
//!   (TCP `shutdown(Write)`, QUIC `finish`); the other way keeps flowing.
//! - Anything else ends both ways at once: a QUIC reset or stop from one side is passed
//!   on with the same code, a TCP error becomes [`Reset::Aborted`], a lost peer
//!   connection [`Reset::PathLost`]; TCP ends are closed with RST (linger 0).
//! - Nothing moving either way for the idle timeout resets with [`Reset::IdleTimeout`];
//!   the node's shutdown resets with [`Reset::ShuttingDown`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::wire::Reset;

/// Bytes per read: 64 KiB moved the most on the project machine (1 MiB buffers made
/// short connections four times slower).
const CHUNK: usize = 64 * 1024;

/// One end of a forwarded connection.
pub(super) enum End {
    /// A TCP socket (the client at the ingress, the endpoint at the origin).
    Tcp(OwnedReadHalf, OwnedWriteHalf),
    /// A QUIC stream to a peer.
    Quic(quinn::RecvStream, quinn::SendStream),
}

impl End {
    /// A TCP socket as an end (Nagle off: the path already batches).
    pub(super) fn tcp(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Self::Tcp(r, w)
    }

    /// Ends both ways with `reset`: QUIC reset and stop with its code, TCP with RST.
    pub(super) fn abort(self, reset: Reset) {
        match self {
            End::Quic(mut recv, mut send) => {
                let _ = send.reset(reset.code());
                let _ = recv.stop(reset.code());
            }
            End::Tcp(r, w) => {
                if let Ok(stream) = r.reunite(w) {
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
            }
        }
    }
}

/// Why a relay ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Abort {
    /// The code passed on to both ends.
    pub reset: Reset,
    /// What happened, for the log.
    pub detail: String,
}

impl Abort {
    pub(super) fn new(reset: Reset, detail: impl Into<String>) -> Self {
        Self {
            reset,
            detail: detail.into(),
        }
    }
}

/// Counters a relay adds to: one list per direction (`a → b`, `b → a`).
#[derive(Default, Clone)]
pub(super) struct Meters {
    /// Bytes from `a` to `b`.
    pub forward: Vec<Arc<AtomicU64>>,
    /// Bytes from `b` to `a`.
    pub backward: Vec<Arc<AtomicU64>>,
}

/// What bounds a relay besides its ends.
pub(super) struct Bounds<'a> {
    /// Reset after this long with nothing moving either way.
    pub idle: Duration,
    /// The node's shutdown.
    pub shutdown: &'a CancellationToken,
}

/// Last time bytes moved, as milliseconds after `start`.
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Relays between `a` and `b` until both ways have ended or one failed; on failure both
/// ends are aborted with the same code. Returns the bytes moved `(a→b, b→a)`.
pub(super) async fn relay(
    mut a: End,
    mut b: End,
    meters: &Meters,
    bounds: Bounds<'_>,
) -> Result<(u64, u64), Abort> {
    let activity = Activity {
        start: tokio::time::Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let result = {
        let (a_read, a_write) = split(&mut a);
        let (b_read, b_write) = split(&mut b);
        let forward = copy(a_read, b_write, &meters.forward, &activity);
        let backward = copy(b_read, a_write, &meters.backward, &activity);
        tokio::pin!(forward, backward);
        let (mut sent, mut received) = (None, None);
        loop {
            if let (Some(s), Some(r)) = (sent, received) {
                break Ok((s, r));
            }
            tokio::select! {
                done = &mut forward, if sent.is_none() => match done {
                    Ok(n) => sent = Some(n),
                    Err(abort) => break Err(abort),
                },
                done = &mut backward, if received.is_none() => match done {
                    Ok(n) => received = Some(n),
                    Err(abort) => break Err(abort),
                },
                () = idle(&activity, bounds.idle) => {
                    break Err(Abort::new(Reset::IdleTimeout, format!("nothing moved for {:?}", bounds.idle)));
                }
                () = bounds.shutdown.cancelled() => {
                    break Err(Abort::new(Reset::ShuttingDown, "node shutting down"));
                }
            }
        }
    };
    if let Err(abort) = &result {
        a.abort(abort.reset);
        b.abort(abort.reset);
    }
    result
}

/// Resolves once `idle` has passed since the last bytes moved.
async fn idle(activity: &Activity, idle: Duration) {
    loop {
        let deadline = activity.last() + idle;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

enum Reader<'a> {
    Tcp(&'a mut OwnedReadHalf),
    Quic(&'a mut quinn::RecvStream),
}

enum Writer<'a> {
    Tcp(&'a mut OwnedWriteHalf),
    Quic(&'a mut quinn::SendStream),
}

fn split(end: &mut End) -> (Reader<'_>, Writer<'_>) {
    match end {
        End::Tcp(r, w) => (Reader::Tcp(r), Writer::Tcp(w)),
        End::Quic(r, w) => (Reader::Quic(r), Writer::Quic(w)),
    }
}

/// A QUIC connection error as the reset to pass on.
fn connection_abort(e: &quinn::ConnectionError) -> Abort {
    match e {
        quinn::ConnectionError::LocallyClosed => Abort::new(
            Reset::PathLost,
            "the session with the peer on the path ended",
        ),
        other => Abort::new(Reset::PathLost, format!("peer connection lost: {other}")),
    }
}

impl Reader<'_> {
    /// `Ok(0)` at the end of data.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Abort> {
        match self {
            Reader::Tcp(r) => r
                .read(buf)
                .await
                .map_err(|e| Abort::new(Reset::Aborted, format!("TCP read: {e}"))),
            Reader::Quic(r) => match quinn::RecvStream::read(r, buf).await {
                Ok(n) => Ok(n.unwrap_or(0)),
                Err(quinn::ReadError::Reset(code)) => {
                    let reset = Reset::from_code(code.into_inner());
                    Err(Abort::new(reset, format!("reset by the path: {reset}")))
                }
                Err(quinn::ReadError::ConnectionLost(e)) => Err(connection_abort(&e)),
                Err(e) => Err(Abort::new(Reset::Cancelled, format!("QUIC read: {e}"))),
            },
        }
    }
}

impl Writer<'_> {
    async fn write_all(&mut self, buf: &[u8]) -> Result<(), Abort> {
        match self {
            Writer::Tcp(w) => w
                .write_all(buf)
                .await
                .map_err(|e| Abort::new(Reset::Aborted, format!("TCP write: {e}"))),
            Writer::Quic(w) => quinn::SendStream::write_all(w, buf)
                .await
                .map_err(|e| match e {
                    quinn::WriteError::Stopped(code) => {
                        let reset = Reset::from_code(code.into_inner());
                        Abort::new(reset, format!("stopped by the path: {reset}"))
                    }
                    quinn::WriteError::ConnectionLost(e) => connection_abort(&e),
                    e => Abort::new(Reset::Cancelled, format!("QUIC write: {e}")),
                }),
        }
    }

    /// Passes on the end of data.
    async fn finish(&mut self) -> Result<(), Abort> {
        match self {
            Writer::Tcp(w) => w
                .shutdown()
                .await
                .map_err(|e| Abort::new(Reset::Aborted, format!("TCP shutdown: {e}"))),
            Writer::Quic(w) => w
                .finish()
                .map_err(|e| Abort::new(Reset::Cancelled, format!("QUIC finish: {e}"))),
        }
    }
}

/// Copies one way until the end of data (passed on) or a failure.
async fn copy(
    mut from: Reader<'_>,
    mut to: Writer<'_>,
    meters: &[Arc<AtomicU64>],
    activity: &Activity,
) -> Result<u64, Abort> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.finish().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        activity.touch();
        let n = n as u64;
        total += n;
        for m in meters {
            m.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Two connected TCP sockets on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_with_half_close() {
        let (mut client, near) = pair().await;
        let (far, mut server) = pair().await;
        let shutdown = CancellationToken::new();
        let meters = Meters {
            forward: vec![Arc::new(AtomicU64::new(0))],
            backward: vec![Arc::new(AtomicU64::new(0))],
        };
        let relaying = {
            let meters = meters.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let bounds = Bounds {
                    idle: Duration::from_secs(30),
                    shutdown: &shutdown,
                };
                relay(End::tcp(near), End::tcp(far), &meters, bounds).await
            })
        };
        let payload = vec![7u8; 300_000];
        client.write_all(&payload).await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        server
            .read_to_end(&mut got)
            .await
            .expect("server reads to the FIN");
        assert_eq!(got, payload);
        // The other way still works after the client's half-close.
        server.write_all(b"done").await.expect("reply");
        server.shutdown().await.expect("close");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.expect("reply");
        assert_eq!(reply, b"done");
        let moved = relaying.await.expect("join").expect("clean end");
        assert_eq!(moved, (300_000, 4));
        assert_eq!(meters.forward[0].load(Ordering::Relaxed), 300_000);
    }

    #[tokio::test]
    async fn an_idle_connection_is_reset_with_the_idle_code() {
        let (mut client, near) = pair().await;
        let (far, _server) = pair().await;
        let shutdown = CancellationToken::new();
        let bounds = Bounds {
            idle: Duration::from_millis(50),
            shutdown: &shutdown,
        };
        let err = relay(End::tcp(near), End::tcp(far), &Meters::default(), bounds)
            .await
            .expect_err("idle");
        assert_eq!(err.reset, Reset::IdleTimeout);
        // The client sees its connection reset, not a clean end.
        let mut buf = [0u8; 8];
        assert!(client.read(&mut buf).await.is_err());
    }
}
