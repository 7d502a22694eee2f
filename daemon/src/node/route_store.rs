//! The node's durable routing state in `node.db`: what each peer sent (Adj-RIB-In), the
//! Loc-RIB, origin manifests, this node's own originations, peers added at runtime, and an
//! event log.
//!
//! Writes come from the routing loop as [`StoreOp`]s on a bounded channel and are applied
//! by one writer thread in batches, one transaction per batch (`synchronous=FULL`): a
//! crash at any moment keeps every committed batch. Operator changes are acknowledged
//! only after their commit ([`StoreOp::Barrier`]). A failed commit (disk full) is kept in
//! memory and retried; the daemon keeps routing meanwhile. Restart reads it all back
//! ([`restore`]); the peers' routes come back as stale until the peers refresh them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};
use trellis_routing::{Attrs, NodeId, ProtocolHint, ServiceName, SignedManifest, UpdateBatch};
use trellis_schemas::peering_capnp::{signed_envelope, update_batch};

use crate::codec;
use crate::util::files::open_sqlite;
use crate::util::time::now_secs;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS originated(service TEXT PRIMARY KEY, protocol TEXT NOT NULL,
  endpoint TEXT NOT NULL, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS manifests(origin TEXT PRIMARY KEY, version INTEGER NOT NULL,
  envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS adj_in(peer TEXT NOT NULL, service TEXT NOT NULL,
  attrs BLOB NOT NULL, epoch INTEGER NOT NULL, PRIMARY KEY(peer, service)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS loc_rib(service TEXT PRIMARY KEY, next_hop TEXT,
  metric INTEGER NOT NULL, origin TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS admin_peers(node_id TEXT PRIMARY KEY, address TEXT NOT NULL,
  link_cost INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
  kind TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
";

/// Most ops applied in one transaction.
const MAX_BATCH_OPS: usize = 20_000;

/// Events the node's log keeps (older ones are deleted as new ones arrive).
const MAX_EVENTS: i64 = 100_000;

/// How long a stopping node keeps retrying a failing store before giving up.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

/// One change to persist.
#[derive(Debug)]
pub enum StoreOp {
    /// A batch a peer sent (accepted by the routing core), in session `epoch`.
    PeerBatch {
        /// The peer.
        peer: NodeId,
        /// Session epoch.
        epoch: u64,
        /// The batch.
        batch: UpdateBatch,
    },
    /// The peer's routes are gone (session closed without graceful restart, or removed).
    PeerCleared {
        /// The peer.
        peer: NodeId,
    },
    /// End-of-table in `epoch`: rows of older epochs were not refreshed and go.
    PurgeStale {
        /// The peer.
        peer: NodeId,
        /// The current epoch.
        epoch: u64,
    },
    /// Best routes changed: per service, next hop (`None`: local), metric and origin;
    /// `None` overall: unreachable. One op per pass of the routing loop, however many.
    Bests(Vec<(ServiceName, Option<StoredBest>)>),
    /// A verified manifest was installed.
    Manifest(SignedManifest),
    /// This node originates a service.
    Originate {
        /// The service.
        service: ServiceName,
        /// Its protocol.
        protocol: ProtocolHint,
        /// Its local endpoint.
        endpoint: String,
    },
    /// This node stopped originating a service.
    StopOriginating(ServiceName),
    /// A bulk load: every (service, protocol, endpoint) originated, in one op.
    OriginateMany(Vec<(ServiceName, ProtocolHint, String)>),
    /// A bulk withdrawal, in one op.
    StopOriginatingMany(Vec<ServiceName>),
    /// A peer added with `trellis peers add`.
    PeerAdded {
        /// The peer.
        peer: NodeId,
        /// Its address.
        address: SocketAddr,
        /// Link cost.
        link_cost: u32,
    },
    /// A peer removed with `trellis peers remove`.
    PeerRemoved(NodeId),
    /// A peer's score, to survive a restart.
    PeerScore {
        /// The peer.
        peer: NodeId,
        /// Its state now.
        state: trellis_routing::scoring::ScoreState,
    },
    /// Answered once every op sent before it is committed (or `Err` after a failed
    /// commit, with the ops kept for retry): operator changes are acknowledged only
    /// when durable.
    Barrier(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// An event for the log.
    Event {
        /// Kind, e.g. `session.up`.
        kind: String,
        /// Subject, e.g. a node id.
        subject: String,
        /// Detail.
        detail: String,
    },
}

/// What a restart reads back.
#[derive(Debug, Default)]
pub struct Restored {
    /// Own originations: service, protocol, endpoint.
    pub originated: Vec<(ServiceName, ProtocolHint, String)>,
    /// Manifests of every origin heard of.
    pub manifests: Vec<SignedManifest>,
    /// What each peer had sent.
    pub peer_routes: Vec<(NodeId, UpdateBatch)>,
    /// Peers added at runtime.
    pub admin_peers: Vec<(NodeId, SocketAddr, u32)>,
    /// Peer scores as they were (aged by the time since they were written).
    pub peer_scores: Vec<(NodeId, trellis_routing::scoring::ScoreState)>,
    /// Highest session epoch stored: epochs of this run start above it, so an
    /// end-of-table purges every row an earlier run left.
    pub max_epoch: u64,
}

/// A best route as `loc_rib` keeps it: next hop (`None`: local), metric, origin.
pub type StoredBest = (Option<NodeId>, u64, NodeId);

/// Protocol hint as stored and shown.
pub fn protocol_name(p: ProtocolHint) -> &'static str {
    match p {
        ProtocolHint::Tcp => "tcp",
        ProtocolHint::Http => "http",
        ProtocolHint::Grpc => "grpc",
        _ => "unspecified",
    }
}

/// Parses a protocol hint name.
pub fn parse_protocol(name: &str) -> Option<ProtocolHint> {
    match name {
        "tcp" => Some(ProtocolHint::Tcp),
        "http" => Some(ProtocolHint::Http),
        "grpc" => Some(ProtocolHint::Grpc),
        "unspecified" => Some(ProtocolHint::Unspecified),
        _ => None,
    }
}

/// An attribute set as stored: a batch holding only that set (the service is its row's
/// key), so a set shared by many services is encoded once per batch and decoded once per
/// restore.
fn encode_attrs(attrs: &Arc<Attrs>) -> Vec<u8> {
    let batch = UpdateBatch {
        attrs: vec![attrs.clone()],
        announce: vec![],
        withdraw: vec![],
    };
    let mut message = capnp::message::Builder::new_default();
    codec::update::write_batch(&batch, message.init_root::<update_batch::Builder>());
    capnp::serialize::write_message_to_words(&message)
}

fn decode_batch(bytes: &[u8]) -> Option<UpdateBatch> {
    let mut slice = bytes;
    let message =
        capnp::serialize::read_message(&mut slice, trellis_schemas::reader_options()).ok()?;
    codec::update::read_batch(message.get_root::<update_batch::Reader>().ok()?).ok()
}

fn encode_manifest(m: &SignedManifest) -> Option<Vec<u8>> {
    let mut message = capnp::message::Builder::new_default();
    codec::manifest::write_manifest(m, message.init_root::<signed_envelope::Builder>()).ok()?;
    Some(capnp::serialize::write_message_to_words(&message))
}

fn decode_manifest(bytes: &[u8]) -> Option<SignedManifest> {
    let mut slice = bytes;
    let message =
        capnp::serialize::read_message(&mut slice, trellis_schemas::reader_options()).ok()?;
    codec::manifest::read_manifest(message.get_root::<signed_envelope::Reader>().ok()?).ok()
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open_sqlite(path)?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(super::score_store::SCHEMA)?;
    Ok(conn)
}

/// Reads the persisted state back (rows that no longer decode are skipped and counted).
pub fn restore(path: &Path) -> rusqlite::Result<(Restored, usize)> {
    let conn = open(path)?;
    let mut out = Restored::default();
    let mut skipped = 0;
    let mut stmt =
        conn.prepare("SELECT service, protocol, endpoint FROM originated ORDER BY service")?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (service, protocol, endpoint) = row?;
        match (ServiceName::new(&service), parse_protocol(&protocol)) {
            (Ok(s), Some(p)) => out.originated.push((s, p, endpoint)),
            _ => skipped += 1,
        }
    }
    let mut stmt = conn.prepare("SELECT envelope FROM manifests")?;
    for row in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
        match decode_manifest(&row?) {
            Some(m) => out.manifests.push(m),
            None => skipped += 1,
        }
    }
    let mut stmt = conn.prepare("SELECT peer, service, attrs FROM adj_in ORDER BY peer")?;
    // Per peer: the batch, and each distinct stored attribute set's index in it.
    let mut per_peer: HashMap<NodeId, (UpdateBatch, HashMap<Vec<u8>, u32>)> = HashMap::new();
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })? {
        let (peer, service, blob) = row?;
        let (Ok(peer), Ok(service)) = (NodeId::new(&peer), ServiceName::new(&service)) else {
            skipped += 1;
            continue;
        };
        let (batch, seen) = per_peer.entry(peer).or_default();
        let index = match seen.get(&blob) {
            Some(&i) => i,
            None => {
                let Some(attrs) = decode_batch(&blob).and_then(|b| b.attrs.into_iter().next())
                else {
                    skipped += 1;
                    continue;
                };
                let i = u32::try_from(batch.attrs.len()).unwrap_or(u32::MAX);
                batch.attrs.push(attrs);
                seen.insert(blob, i);
                i
            }
        };
        batch.announce.push((service, index));
    }
    out.peer_routes = per_peer
        .into_iter()
        .map(|(peer, (batch, _))| (peer, batch))
        .collect();
    let max_epoch: Option<i64> =
        conn.query_row("SELECT MAX(epoch) FROM adj_in", [], |r| r.get(0))?;
    out.max_epoch = max_epoch.and_then(|e| u64::try_from(e).ok()).unwrap_or(0);
    let mut stmt =
        conn.prepare("SELECT node_id, address, link_cost FROM admin_peers ORDER BY node_id")?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u32>(2)?,
        ))
    })? {
        let (node, address, cost) = row?;
        match (NodeId::new(&node), address.parse()) {
            (Ok(n), Ok(a)) => out.admin_peers.push((n, a, cost)),
            _ => skipped += 1,
        }
    }
    let (scores, bad) = super::score_store::load(&conn)?;
    out.peer_scores = scores;
    skipped += bad;
    Ok((out, skipped))
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &StoreOp) -> rusqlite::Result<()> {
    let now = i64::try_from(now_secs()).unwrap_or(i64::MAX);
    match op {
        StoreOp::PeerBatch { peer, epoch, batch } => {
            let epoch = i64::try_from(*epoch).unwrap_or(i64::MAX);
            let mut del = tx.prepare_cached("DELETE FROM adj_in WHERE peer=?1 AND service=?2")?;
            for service in &batch.withdraw {
                del.execute(params![peer.as_str(), service.as_str()])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT INTO adj_in(peer, service, attrs, epoch) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(peer, service) DO UPDATE SET attrs=excluded.attrs, epoch=excluded.epoch",
            )?;
            let encoded: Vec<Vec<u8>> = batch.attrs.iter().map(encode_attrs).collect();
            for (service, idx) in &batch.announce {
                if let Some(attrs) = encoded.get(*idx as usize) {
                    put.execute(params![peer.as_str(), service.as_str(), attrs, epoch])?;
                }
            }
        }
        StoreOp::PeerCleared { peer } => {
            tx.execute("DELETE FROM adj_in WHERE peer=?1", [peer.as_str()])?;
        }
        StoreOp::PurgeStale { peer, epoch } => {
            tx.execute(
                "DELETE FROM adj_in WHERE peer=?1 AND epoch<?2",
                params![peer.as_str(), i64::try_from(*epoch).unwrap_or(i64::MAX)],
            )?;
        }
        StoreOp::Bests(bests) => {
            let mut delete = tx.prepare_cached("DELETE FROM loc_rib WHERE service=?1")?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO loc_rib(service, next_hop, metric, origin, updated_at) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(service) DO UPDATE SET next_hop=excluded.next_hop, metric=excluded.metric,
                   origin=excluded.origin, updated_at=excluded.updated_at",
            )?;
            for (service, best) in bests {
                match best {
                    None => {
                        delete.execute([service.as_str()])?;
                    }
                    Some((next_hop, metric, origin)) => {
                        upsert.execute(params![
                            service.as_str(),
                            next_hop.as_ref().map(NodeId::as_str),
                            i64::try_from(*metric).unwrap_or(i64::MAX),
                            origin.as_str(),
                            now
                        ])?;
                    }
                }
            }
        }
        StoreOp::Manifest(m) => {
            if let Some(envelope) = encode_manifest(m) {
                tx.execute(
                    "INSERT INTO manifests(origin, version, envelope) VALUES(?1, ?2, ?3)
                     ON CONFLICT(origin) DO UPDATE SET version=excluded.version, envelope=excluded.envelope
                     WHERE excluded.version > manifests.version",
                    params![
                        m.manifest.origin.as_str(),
                        i64::try_from(m.manifest.version).unwrap_or(i64::MAX),
                        envelope
                    ],
                )?;
            }
        }
        StoreOp::Originate {
            service,
            protocol,
            endpoint,
        } => {
            tx.execute(
                "INSERT INTO originated(service, protocol, endpoint, since) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(service) DO UPDATE SET protocol=excluded.protocol, endpoint=excluded.endpoint",
                params![service.as_str(), protocol_name(*protocol), endpoint, now],
            )?;
        }
        StoreOp::StopOriginating(service) => {
            tx.execute(
                "DELETE FROM originated WHERE service=?1",
                [service.as_str()],
            )?;
        }
        StoreOp::OriginateMany(routes) => {
            let mut insert = tx.prepare_cached(
                "INSERT INTO originated(service, protocol, endpoint, since) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(service) DO UPDATE SET protocol=excluded.protocol, endpoint=excluded.endpoint",
            )?;
            for (service, protocol, endpoint) in routes {
                insert.execute(params![
                    service.as_str(),
                    protocol_name(*protocol),
                    endpoint,
                    now
                ])?;
            }
        }
        StoreOp::StopOriginatingMany(services) => {
            let mut delete = tx.prepare_cached("DELETE FROM originated WHERE service=?1")?;
            for service in services {
                delete.execute([service.as_str()])?;
            }
        }
        StoreOp::PeerAdded {
            peer,
            address,
            link_cost,
        } => {
            tx.execute(
                "INSERT INTO admin_peers(node_id, address, link_cost) VALUES(?1, ?2, ?3)
                 ON CONFLICT(node_id) DO UPDATE SET address=excluded.address, link_cost=excluded.link_cost",
                params![peer.as_str(), address.to_string(), link_cost],
            )?;
        }
        StoreOp::PeerRemoved(peer) => {
            tx.execute("DELETE FROM admin_peers WHERE node_id=?1", [peer.as_str()])?;
            tx.execute("DELETE FROM adj_in WHERE peer=?1", [peer.as_str()])?;
        }
        StoreOp::PeerScore { peer, state } => super::score_store::put(tx, peer, state)?,
        StoreOp::Barrier(_) => {}
        StoreOp::Event {
            kind,
            subject,
            detail,
        } => {
            tx.execute(
                "INSERT INTO events(at, kind, subject, detail) VALUES(?1, ?2, ?3, ?4)",
                params![now, kind, subject, detail],
            )?;
        }
    }
    Ok(())
}

fn commit(conn: &mut Connection, ops: &[StoreOp]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for op in ops {
        apply(&tx, op)?;
    }
    if ops.iter().any(|op| matches!(op, StoreOp::Event { .. })) {
        // The log keeps the newest MAX_EVENTS events: a flapping peer cannot fill the disk.
        tx.execute(
            "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1",
            [MAX_EVENTS],
        )?;
    }
    tx.commit()
}

/// One event of the node's log, as `trellis audit` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Sequence number.
    pub seq: u64,
    /// Seconds since the epoch.
    pub at: u64,
    /// Kind, e.g. `session.up`.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// Detail.
    pub detail: String,
}

/// Events at or after `since`, oldest first (read on its own connection: WAL readers
/// never wait on the writer).
pub fn events(path: &Path, since: u64) -> rusqlite::Result<Vec<StoredEvent>> {
    // The writer created the schema at start; a read needs no DDL.
    let conn = open_sqlite(path)?;
    let mut stmt = conn
        .prepare("SELECT seq, at, kind, subject, detail FROM events WHERE at >= ?1 ORDER BY seq")?;
    let rows = stmt.query_map([i64::try_from(since).unwrap_or(i64::MAX)], |r| {
        Ok(StoredEvent {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            at: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            kind: r.get(2)?,
            subject: r.get(3)?,
            detail: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Starts the writer thread; dropping every sender flushes and stops it. `failures`
/// counts failed commits (shown as `store_commit_failures`).
pub fn spawn_writer(
    path: PathBuf,
    capacity: usize,
    failures: Arc<AtomicU64>,
) -> rusqlite::Result<(SyncSender<StoreOp>, std::thread::JoinHandle<()>)> {
    let mut conn = open(&path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let handle = std::thread::Builder::new()
        .name("trellis-store".into())
        .spawn(move || writer(&mut conn, &rx, &failures))
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok((tx, handle))
}

/// Moves every op that has arrived into `pending`; `false` once every sender is gone.
fn take_arrived(rx: &Receiver<StoreOp>, pending: &mut VecDeque<StoreOp>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(op) => pending.push_back(op),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

/// Commits `chunk`; answers its barriers. On failure the data ops go back to the front
/// of `pending` (in order) for the next attempt; barriers are answered with the error.
fn commit_chunk(
    conn: &mut Connection,
    mut chunk: Vec<StoreOp>,
    pending: &mut VecDeque<StoreOp>,
    recorders: &crate::telemetry::metrics::Recorders,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let result = commit(conn, &chunk).map_err(|e| e.to_string());
    recorders.commit(started.elapsed(), result.is_ok());
    let mut kept = Vec::new();
    for op in chunk.drain(..) {
        match op {
            StoreOp::Barrier(ack) => {
                let _ = ack.send(result.clone());
            }
            op if result.is_err() => kept.push(op),
            _ => {}
        }
    }
    for op in kept.into_iter().rev() {
        pending.push_front(op);
    }
    result
}

/// The writer: drains the channel completely before each commit, so the routing loop
/// never waits on the disk. While commits fail (disk full, I/O error) the ops stay in
/// memory, in order, and are retried every second; nothing is dropped.
fn writer(conn: &mut Connection, rx: &Receiver<StoreOp>, failures: &AtomicU64) {
    let mut pending: VecDeque<StoreOp> = VecDeque::new();
    let recorders = crate::telemetry::metrics::Recorders::new();
    let mut open = true;
    let mut failing_since: Option<std::time::Instant> = None;
    let mut last_report: Option<std::time::Instant> = None;
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(op) => pending.push_back(op),
                Err(_) => return,
            }
        }
        open = take_arrived(rx, &mut pending) && open;
        let n = pending.len().min(MAX_BATCH_OPS);
        let chunk: Vec<StoreOp> = pending.drain(..n).collect();
        match commit_chunk(conn, chunk, &mut pending, &recorders) {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    tracing::warn!(
                        after_s = since.elapsed().as_secs(),
                        "the route store is writable again; queued changes committed"
                    );
                }
            }
            Err(e) => {
                failures.fetch_add(1, Ordering::Relaxed);
                failing_since.get_or_insert_with(std::time::Instant::now);
                if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    last_report = Some(std::time::Instant::now());
                    tracing::error!(error = %e, queued = pending.len(), "cannot write the route store; changes kept in memory and retried every second");
                }
                if !open && failing_since.is_some_and(|t| t.elapsed() > SHUTDOWN_RETRY) {
                    tracing::error!(
                        ops = pending.len(),
                        "route store changes lost at shutdown: the store stayed unwritable"
                    );
                    return;
                }
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(op) => pending.push_back(op),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "route_store_tests.rs"]
mod tests;
