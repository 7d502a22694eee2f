//! One relay: a UDP flow between a dialer and a listener, impaired by a
//! [`Link`].
//!
//! Two tasks, one per direction. Each receives datagrams on its inbound
//! socket, asks the link for their fate, and keeps the survivors in a
//! min-heap of (release instant, sequence number) which it drains when the
//! earliest release comes due.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{lock, Link};

/// Serialization backlog allowed per direction under a rate cap.
const RATE_QUEUE_BYTES: f64 = 256.0 * 1024.0;
/// Bytes held per direction waiting for their delay, whatever the rate.
const HEAP_BYTES: usize = 8 * 1024 * 1024;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// A running relay. Its tasks are aborted when it is dropped.
#[derive(Debug)]
pub struct Relay {
    /// The address dialers send to.
    pub listen: SocketAddr,
    /// The local address of the socket that talks to the listener.
    pub upstream_local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts a relay that listens on `listen` (port 0 picks one) and forwards to
/// `upstream`, through `link`. Both addresses must be loopback addresses.
pub async fn relay(listen: SocketAddr, upstream: SocketAddr, link: Arc<Link>) -> io::Result<Relay> {
    for addr in [listen, upstream] {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the link emulator only relays on loopback, not {addr}"),
            ));
        }
    }
    let down = Arc::new(UdpSocket::bind(listen).await?);
    let any: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    let up = Arc::new(UdpSocket::bind(SocketAddr::new(any, 0)).await?);
    let relay_listen = down.local_addr()?;
    let upstream_local = up.local_addr()?;
    let client = Arc::new(Mutex::new(None));
    let forward = pump(
        link.clone(),
        down.clone(),
        up.clone(),
        Route::Forward {
            upstream,
            client: client.clone(),
        },
    );
    let backward = pump(link, up, down, Route::Backward { upstream, client });
    Ok(Relay {
        listen: relay_listen,
        upstream_local,
        tasks: vec![tokio::spawn(forward), tokio::spawn(backward)],
    })
}

/// Where a direction sends what it receives.
enum Route {
    /// Dialer → listener: remember the dialer, send to the listener.
    Forward {
        upstream: SocketAddr,
        client: Arc<Mutex<Option<SocketAddr>>>,
    },
    /// Listener → dialer: accept only the listener, send to the last dialer.
    Backward {
        upstream: SocketAddr,
        client: Arc<Mutex<Option<SocketAddr>>>,
    },
}

impl Route {
    fn target(&self, from: SocketAddr) -> Option<SocketAddr> {
        match self {
            Route::Forward { upstream, client } => {
                *lock(client) = Some(from);
                Some(*upstream)
            }
            Route::Backward { upstream, client } => {
                if from == *upstream {
                    *lock(client)
                } else {
                    None
                }
            }
        }
    }
}

/// One direction's loop: receive, judge, queue, release.
async fn pump(link: Arc<Link>, inbound: Arc<UdpSocket>, outbound: Arc<UdpSocket>, route: Route) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut queue = Queue::default();
    loop {
        let wake = queue.next_release();
        tokio::select! {
            received = inbound.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    if let Some(to) = route.target(from) {
                        queue.admit(&link, &buf[..n], to, Instant::now());
                    }
                }
                Err(_) => {
                    // E.g. an ICMP error surfacing; back off so a persistent
                    // error cannot spin.
                    link.count_error();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                while let Some(p) = queue.pop_due(Instant::now()) {
                    if link.is_cut() {
                        link.count_cut();
                    } else if outbound.send_to(&p.data, p.to).await.is_ok() {
                        link.count_forwarded();
                    } else {
                        link.count_error();
                    }
                }
            }
        }
    }
}

/// A datagram waiting for its release.
struct Pending {
    at: Instant,
    seq: u64,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The datagrams of one direction, earliest release first.
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    bytes: usize,
    /// When the serializer is free again under a rate cap.
    next_free: Option<Instant>,
}

impl Queue {
    /// Judges `data` arriving at `now` and queues it if it survives.
    fn admit(&mut self, link: &Link, data: &[u8], to: SocketAddr, now: Instant) {
        let Some(verdict) = link.judge() else { return };
        let mut depart = now;
        if let Some(kbps) = verdict.rate_kbps {
            let bytes_per_sec = kbps.max(1) as f64 * 125.0;
            let start = self.next_free.map_or(now, |free| free.max(now));
            let backlog = (start - now).as_secs_f64() * bytes_per_sec;
            if backlog + data.len() as f64 > RATE_QUEUE_BYTES {
                link.count_queue();
                return;
            }
            let serialize = Duration::try_from_secs_f64(data.len() as f64 / bytes_per_sec)
                .unwrap_or(Duration::ZERO);
            depart = start + serialize;
            self.next_free = Some(depart);
        }
        if self.bytes + data.len() > HEAP_BYTES {
            link.count_queue();
            return;
        }
        self.seq += 1;
        self.bytes += data.len();
        self.heap.push(Reverse(Pending {
            at: depart + verdict.delay,
            seq: self.seq,
            to,
            data: data.to_vec(),
        }));
    }

    fn next_release(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(p)| p.at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Pending> {
        if self.next_release()? > now {
            return None;
        }
        let Reverse(p) = self.heap.pop()?;
        self.bytes -= p.data.len();
        Some(p)
    }
}
