//! The authority's SQLite store (`authority.db`, WAL, `synchronous=FULL`): tokens (hashes
//! only), join requests, nodes, certificates, trust snapshots and the audit log.
//!
//! Every state change and its audit event commit in one transaction, so the log never
//! misses an action and an action never happens without its event. Token spending is a
//! conditional `UPDATE` inside an `IMMEDIATE` transaction: two concurrent joins with a
//! one-use token cannot both win, even across processes.

mod directory;
mod joins;
mod names;
mod nodes;
mod operator_tokens;
mod redeliver;
mod tokens;

pub use directory::Listed;
pub use joins::{Admission, NewJoin, Refusal};
pub use names::RuleKind;
pub use nodes::{SNAPSHOT_LIFETIME_SECS, SNAPSHOT_REFRESH_SECS};
pub use redeliver::Redelivered;
pub use tokens::TokenSpec;

/// A token spec from the admin request's fields.
pub fn tokens_spec(ttl_secs: u64, uses: u32, auto_approve: bool, roles: Vec<String>) -> TokenSpec {
    TokenSpec {
        ttl_secs,
        uses,
        auto_approve,
        roles,
    }
}

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::admin::{ApiError, AuditEvent, ErrorKind};

/// Schema version this code writes.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(
  id TEXT PRIMARY KEY, hash BLOB NOT NULL, created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, max_uses INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0,
  auto_approve INTEGER NOT NULL, roles TEXT NOT NULL, revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS joins(
  id TEXT PRIMARY KEY, token_id TEXT NOT NULL, node_id TEXT NOT NULL, csr BLOB NOT NULL,
  key_sha256 TEXT NOT NULL, facts TEXT NOT NULL, capabilities TEXT NOT NULL,
  roles TEXT NOT NULL, source TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,
  created_at INTEGER NOT NULL, decided_at INTEGER, serial TEXT);
CREATE TABLE IF NOT EXISTS nodes(
  node_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, roles TEXT NOT NULL,
  state TEXT NOT NULL, joined_at INTEGER NOT NULL, revoked_at INTEGER, reason TEXT);
CREATE TABLE IF NOT EXISTS certs(
  serial TEXT PRIMARY KEY, node_id TEXT NOT NULL, not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL, issued_at INTEGER NOT NULL, reason TEXT NOT NULL,
  der BLOB NOT NULL, revoked_at INTEGER);
CREATE INDEX IF NOT EXISTS certs_by_node ON certs(node_id);
CREATE TABLE IF NOT EXISTS snapshots(
  version INTEGER PRIMARY KEY, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS name_rules(
  kind TEXT NOT NULL, subject TEXT NOT NULL, names TEXT NOT NULL, updated_at INTEGER NOT NULL,
  PRIMARY KEY(kind, subject));
CREATE TABLE IF NOT EXISTS partner_cas(
  org TEXT PRIMARY KEY, der BLOB NOT NULL, fingerprint TEXT NOT NULL, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS directory(
  node_id TEXT PRIMARY KEY, address TEXT NOT NULL, role TEXT NOT NULL,
  updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS token_keys(
  kid TEXT PRIMARY KEY, public BLOB NOT NULL, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS operator_tokens(
  jti TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, thumbprint TEXT NOT NULL,
  issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS audit(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (disk full, locked, corrupt).
    #[error("authority store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value is not what this code wrote.
    #[error("authority store is corrupt: {0}")]
    Corrupt(String),
    /// An operator-facing refusal (not found, conflict, bad value).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Issuing or signing failed.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

impl StoreError {
    /// The admin API error for this failure.
    pub fn to_api(&self) -> ApiError {
        match self {
            Self::Api(e) => e.clone(),
            other => ApiError::new(ErrorKind::Internal, other.to_string()),
        }
    }
}

pub(crate) fn not_found(what: &str, id: &str) -> StoreError {
    ApiError::new(ErrorKind::NotFound, format!("no {what} {id:?}")).into()
}

pub(crate) fn conflict(message: String) -> StoreError {
    ApiError::new(ErrorKind::Conflict, message).into()
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

pub(crate) fn list_json(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// The authority's store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = crate::util::files::open_sqlite(path)?;
        conn.execute_batch(SCHEMA)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version.as_deref() {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {v}, this trellisd knows {SCHEMA_VERSION}"
                )))
            }
        }
        Ok(Self { conn })
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key=?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES(?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Records an audit event on its own.
    pub fn audit(
        &self,
        now: u64,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        audit(&self.conn, now, actor, action, subject, detail)
    }

    /// Audit events at or after `since`.
    pub fn list_audit(&self, since: u64) -> Result<Vec<AuditEvent>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at, actor, action, subject, detail FROM audit WHERE at >= ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([to_i64(since)], |r| {
            Ok(AuditEvent {
                seq: to_u64(r.get(0)?),
                at: to_u64(r.get(1)?),
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn immediate(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Counts for the status answer: (active nodes, revoked nodes, pending joins, usable tokens).
    pub fn counts(&self, now: u64) -> Result<(u64, u64, u64, u64), StoreError> {
        let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
            Ok(to_u64(self.conn.query_row(sql, p, |r| r.get(0))?))
        };
        Ok((
            count("SELECT count(*) FROM nodes WHERE state='active'", &[])?,
            count("SELECT count(*) FROM nodes WHERE state='revoked'", &[])?,
            count("SELECT count(*) FROM joins WHERE state='pending'", &[])?,
            count(
                "SELECT count(*) FROM tokens WHERE revoked_at IS NULL AND uses < max_uses AND expires_at > ?1",
                &[&to_i64(now)],
            )?,
        ))
    }
}

/// Records an issued certificate inside the caller's transaction; returns its hex serial.
pub(crate) fn insert_cert(
    conn: &Connection,
    issued: &crate::pki::Issued,
    node_id: &str,
    reason: &str,
    now: u64,
) -> Result<String, StoreError> {
    let serial = crate::util::hex(&issued.serial);
    conn.execute(
        "INSERT INTO certs(serial, node_id, not_before, not_after, issued_at, reason, der)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            serial,
            node_id,
            to_i64(issued.not_before),
            to_i64(issued.not_after),
            to_i64(now),
            reason,
            issued.der
        ],
    )?;
    Ok(serial)
}

/// Appends an audit event inside the caller's transaction.
pub(crate) fn audit(
    conn: &Connection,
    now: u64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit(at, actor, action, subject, detail) VALUES(?1, ?2, ?3, ?4, ?5)",
        params![to_i64(now), actor, action, subject, detail],
    )?;
    Ok(())
}

#[cfg(test)]
mod decision_tests;
#[cfg(test)]
mod tests;
