//! The node's durable routing state in `node.db`: what each peer sent (Adj-RIB-In), the
//! Loc-RIB, origin manifests, this node's own originations, peers added at runtime, and an
//! event log.
//!
//! Writes come from the routing loop as [`StoreOp`]s on a bounded channel and are applied
//! by one writer thread in batches, one transaction per batch (`synchronous=FULL`): a
//! crash at any moment keeps every committed batch. A failed commit (disk full) is kept
//! and retried; the daemon keeps routing meanwhile. Restart reads it all back
//! ([`restore`]); the peers' routes come back as stale until the peers refresh them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
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
    /// The best route of a service changed.
    Best {
        /// The service.
        service: ServiceName,
        /// Next hop (`None`: local), metric and origin; `None` overall: unreachable.
        best: Option<(Option<NodeId>, u64, NodeId)>,
    },
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
}

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
        StoreOp::Best { service, best } => match best {
            None => {
                tx.execute("DELETE FROM loc_rib WHERE service=?1", [service.as_str()])?;
            }
            Some((next_hop, metric, origin)) => {
                tx.execute(
                    "INSERT INTO loc_rib(service, next_hop, metric, origin, updated_at) VALUES(?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(service) DO UPDATE SET next_hop=excluded.next_hop, metric=excluded.metric,
                       origin=excluded.origin, updated_at=excluded.updated_at",
                    params![
                        service.as_str(),
                        next_hop.as_ref().map(NodeId::as_str),
                        i64::try_from(*metric).unwrap_or(i64::MAX),
                        origin.as_str(),
                        now
                    ],
                )?;
            }
        },
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
    tx.commit()
}

/// Starts the writer thread; dropping every sender flushes and stops it.
pub fn spawn_writer(
    path: PathBuf,
    capacity: usize,
) -> rusqlite::Result<(SyncSender<StoreOp>, std::thread::JoinHandle<()>)> {
    let mut conn = open(&path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let handle = std::thread::Builder::new()
        .name("trellis-store".into())
        .spawn(move || writer(&mut conn, &rx))
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok((tx, handle))
}

fn writer(conn: &mut Connection, rx: &Receiver<StoreOp>) {
    let mut pending: Vec<StoreOp> = Vec::new();
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match rx.recv() {
                Ok(op) => pending.push(op),
                Err(_) => break,
            }
        }
        while pending.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(op) => pending.push(op),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        match commit(conn, &pending) {
            Ok(()) => pending.clear(),
            Err(e) => {
                tracing::error!(error = %e, ops = pending.len(), "cannot write the route store; retrying in 1 s");
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(op) => pending.push(op),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        if commit(conn, &pending).is_err() {
                            tracing::error!(
                                ops = pending.len(),
                                "route store changes lost at shutdown"
                            );
                            return;
                        }
                        pending.clear();
                    }
                }
            }
        }
    }
}
