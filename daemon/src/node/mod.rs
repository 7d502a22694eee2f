//! The node's durable identity and trust state: its key and certificate files and
//! `node.db` (SQLite, WAL): enrollment facts and the newest trust snapshot per org.
//!
//! Data dir (mode 0700): `node.key` (0600, made locally, never sent anywhere), `node.crt`,
//! `ca.crt`, `node.db`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use trellis_policy::snapshot::{self, SnapshotError};
use trellis_policy::TrustSnapshot;

pub mod admin_server;
mod bulk;
pub mod config;
mod connections;
mod fib;
mod holdoff;
mod observe;
pub mod peering;
pub mod policy;
pub mod reload;
pub mod remote_admin;
pub mod route_store;
pub mod routing_loop;
pub mod run;
mod score_store;
mod scores;
mod selection;
pub mod trust;
pub mod view;
pub mod view_route;

/// The files of a node's data dir.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The data dir.
    pub dir: PathBuf,
}

impl Paths {
    /// For `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
    /// The node's private key (0600).
    pub fn key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    /// The node's certificate, PEM.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }
    /// The org CA certificate, PEM.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The node's store.
    pub fn db(&self) -> PathBuf {
        self.dir.join("node.db")
    }
}

/// Why the node store failed or refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeStoreError {
    /// SQLite failed.
    #[error("node store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A snapshot was refused.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The node has not joined.
    #[error(
        "this node has not joined an org yet (no enrollment in node.db); run `trellisd node join`"
    )]
    NotJoined,
}

/// How the node is enrolled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Enrollment {
    /// Node id.
    pub node_id: String,
    /// Org.
    pub org: String,
    /// Authority enrollment address.
    pub authority: String,
}

/// `node.db`.
pub struct NodeStore {
    conn: Connection,
}

impl NodeStore {
    /// Opens (creating) the store.
    pub fn open(path: &Path) -> Result<Self, NodeStoreError> {
        let conn = crate::util::files::open_sqlite(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS trust_snapshots(
               org TEXT PRIMARY KEY, version INTEGER NOT NULL, envelope BLOB NOT NULL,
               applied_at INTEGER NOT NULL);",
        )?;
        Ok(Self { conn })
    }

    /// Records the enrollment.
    pub fn set_enrollment(&self, e: &Enrollment) -> Result<(), NodeStoreError> {
        for (k, v) in [
            ("node_id", &e.node_id),
            ("org", &e.org),
            ("authority", &e.authority),
        ] {
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES(?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                params![k, v],
            )?;
        }
        Ok(())
    }

    /// The enrollment.
    pub fn enrollment(&self) -> Result<Enrollment, NodeStoreError> {
        let get = |k: &str| -> Result<Option<String>, NodeStoreError> {
            Ok(self
                .conn
                .query_row("SELECT value FROM meta WHERE key=?1", [k], |r| r.get(0))
                .optional()?)
        };
        match (get("node_id")?, get("org")?, get("authority")?) {
            (Some(node_id), Some(org), Some(authority)) => Ok(Enrollment {
                node_id,
                org,
                authority,
            }),
            _ => Err(NodeStoreError::NotJoined),
        }
    }

    /// The stored snapshot version of `org`.
    pub fn snapshot_version(&self, org: &str) -> Result<Option<u64>, NodeStoreError> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT version FROM trust_snapshots WHERE org=?1",
                [org],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
    }

    /// The stored snapshot envelope of `org`.
    pub fn snapshot_envelope(&self, org: &str) -> Result<Option<Vec<u8>>, NodeStoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT envelope FROM trust_snapshots WHERE org=?1",
                [org],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Verifies a snapshot of `org` against `ca_der` and the stored version without
    /// storing it.
    pub fn check_snapshot(
        &self,
        org: &str,
        ca_der: &[u8],
        envelope: &[u8],
        now: u64,
    ) -> Result<TrustSnapshot, NodeStoreError> {
        let stored = self.snapshot_version(org)?;
        Ok(snapshot::verify(envelope, org, ca_der, stored, now)?)
    }

    /// Verifies and stores a snapshot in one transaction: the new version is durable
    /// before the caller acts on the returned snapshot (anti-rollback survives a crash).
    pub fn apply_snapshot(
        &mut self,
        org: &str,
        ca_der: &[u8],
        envelope: &[u8],
        now: u64,
    ) -> Result<TrustSnapshot, NodeStoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let stored: Option<i64> = tx
            .query_row(
                "SELECT version FROM trust_snapshots WHERE org=?1",
                [org],
                |r| r.get(0),
            )
            .optional()?;
        let stored = stored.map(|v| u64::try_from(v).unwrap_or(0));
        let snapshot = snapshot::verify(envelope, org, ca_der, stored, now)?;
        tx.execute(
            "INSERT INTO trust_snapshots(org, version, envelope, applied_at) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(org) DO UPDATE SET version=excluded.version, envelope=excluded.envelope,
                                            applied_at=excluded.applied_at",
            params![
                org,
                i64::try_from(snapshot.version).unwrap_or(i64::MAX),
                envelope,
                i64::try_from(now).unwrap_or(i64::MAX)
            ],
        )?;
        tx.commit()?;
        Ok(snapshot)
    }
}
