//! Nodes, their certificates (renewal, revocation) and the signed trust snapshots.

use rusqlite::{params, Connection, OptionalExtension};
use trellis_policy::TrustSnapshot;
use trellis_routing::NodeId;

use super::joins::Refusal;
use super::{
    audit, conflict, insert_cert, json_list, not_found, to_i64, to_u64, Store, StoreError,
};
use crate::admin::{NodeInfo, Revoked, SnapshotInfo};
use crate::enroll::ErrorCode;
use crate::pki::{Ca, Issued, PkiError};
use crate::util::{hex, unhex};

/// A stored certificate: serial (hex), DER, not-before, not-after, revoked-at.
type CertRow = (String, Vec<u8>, i64, i64, Option<i64>);

/// How long a trust snapshot stays valid, seconds (7 days).
pub const SNAPSHOT_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// Age after which the authority re-signs the snapshot with a new version, seconds.
pub const SNAPSHOT_REFRESH_SECS: u64 = 24 * 3600;

fn refusal(code: ErrorCode, message: String) -> Refusal {
    Refusal { code, message }
}

/// Builds, signs and stores the next snapshot inside the caller's transaction.
pub(super) fn publish(
    conn: &Connection,
    ca: &Ca,
    actor: &str,
    why: &str,
    now: u64,
) -> Result<u64, StoreError> {
    let version: i64 =
        conn.query_row("SELECT coalesce(max(version), 0) FROM snapshots", [], |r| {
            r.get(0)
        })?;
    let version = to_u64(version) + 1;
    let mut nodes_stmt =
        conn.prepare("SELECT node_id FROM nodes WHERE state='revoked' ORDER BY node_id")?;
    let revoked_nodes = nodes_stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut serial_stmt = conn.prepare(
        "SELECT serial FROM certs WHERE revoked_at IS NOT NULL AND not_after > ?1 ORDER BY serial",
    )?;
    let revoked_serials = serial_stmt
        .query_map([to_i64(now)], |r| r.get::<_, String>(0))?
        .map(|s| {
            let s = s?;
            unhex(&s).ok_or_else(|| StoreError::Corrupt(format!("serial {s:?} is not hex")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (name_scopes, delegations, partner_cas) = super::names::snapshot_rules(conn)?;
    let directory = super::directory::snapshot_directory(conn)?;
    let (token_keys, revoked_tokens) = super::operator_tokens::snapshot_tokens(conn, now)?;
    let snapshot = TrustSnapshot {
        org: ca.org().as_str().to_owned(),
        version,
        issued_at: now,
        expires_at: now + SNAPSHOT_LIFETIME_SECS,
        revoked_serials,
        revoked_nodes,
        ca_certificate_der: ca.der().to_vec(),
        name_scopes,
        delegations,
        partner_cas,
        directory,
        token_keys,
        revoked_tokens,
    };
    let key = ca.signing_key()?;
    let envelope = snapshot
        .sign(&key)
        .map_err(|e| PkiError::BadCertificate(format!("cannot sign the trust snapshot: {e}")))?;
    conn.execute(
        "INSERT INTO snapshots(version, issued_at, expires_at, envelope) VALUES(?1, ?2, ?3, ?4)",
        params![
            to_i64(version),
            to_i64(now),
            to_i64(snapshot.expires_at),
            envelope
        ],
    )?;
    audit(
        conn,
        now,
        actor,
        "snapshot.publish",
        &format!("v{version}"),
        why,
    )?;
    Ok(version)
}

impl Store {
    /// Every node.
    pub fn list_nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT n.node_id, n.state, n.roles, n.joined_at, n.revoked_at, n.reason,
                    (SELECT serial FROM certs c WHERE c.node_id=n.node_id ORDER BY issued_at DESC, rowid DESC LIMIT 1),
                    (SELECT not_after FROM certs c WHERE c.node_id=n.node_id ORDER BY issued_at DESC, rowid DESC LIMIT 1)
             FROM nodes n ORDER BY n.node_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NodeInfo {
                node_id: r.get(0)?,
                state: r.get(1)?,
                roles: json_list(&r.get::<_, String>(2)?),
                joined_at: to_u64(r.get(3)?),
                revoked_at: r.get::<_, Option<i64>>(4)?.map(to_u64),
                reason: r.get(5)?,
                cert_serial: r.get(6)?,
                cert_not_after: r.get::<_, Option<i64>>(7)?.map(to_u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Renews the certificate of `node`, presented with serial `serial`, for the same key.
    /// Only the node's newest certificate may renew.
    pub fn renew(
        &mut self,
        node: &NodeId,
        serial: &[u8],
        public_key: &rcgen::PublicKey,
        ca: &Ca,
        now: u64,
        lifetime: u64,
    ) -> Result<Result<Issued, Refusal>, StoreError> {
        let tx = self.immediate()?;
        let id = node.as_str();
        let row: Option<(String, Vec<u8>)> = tx
            .query_row(
                "SELECT state, public_key FROM nodes WHERE node_id=?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((state, key)) = row else {
            return Ok(Err(refusal(
                ErrorCode::Unauthenticated,
                format!("node {id} is not enrolled"),
            )));
        };
        let serial_hex = hex(serial);
        let cert_revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM certs WHERE serial=?1",
                [&serial_hex],
                |r| r.get(0),
            )
            .optional()?;
        if state == "revoked" || matches!(cert_revoked, Some(Some(_))) {
            return Ok(Err(refusal(
                ErrorCode::Revoked,
                format!("node {id} is revoked"),
            )));
        }
        if cert_revoked.is_none() {
            return Ok(Err(refusal(
                ErrorCode::Unauthenticated,
                format!("certificate {serial_hex} was not issued by this authority"),
            )));
        }
        if rcgen::PublicKeyData::der_bytes(public_key) != key.as_slice() {
            return Ok(Err(refusal(
                ErrorCode::BadRequest,
                "the CSR's key differs from the enrolled key".into(),
            )));
        }
        // Only the newest certificate renews: a superseded one (kept by a copy of the node,
        // or replayed) cannot mint a parallel chain of certificates. A node whose renewal
        // reply was lost asks again with the superseded one: it gets the newest back
        // (same enrolled key, nothing new issued).
        let newest: Option<CertRow> = tx
            .query_row(
                "SELECT serial, der, not_before, not_after, revoked_at FROM certs WHERE node_id=?1
                 ORDER BY issued_at DESC, rowid DESC LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        if let Some((newest_hex, der, not_before, not_after, revoked_at)) = newest {
            if newest_hex != serial_hex {
                let not_after = u64::try_from(not_after).unwrap_or(0);
                let newest_serial = crate::util::unhex(&newest_hex);
                if revoked_at.is_some() || not_after <= now || newest_serial.is_none() {
                    return Ok(Err(refusal(
                        ErrorCode::Unauthenticated,
                        format!(
                            "certificate {serial_hex} of {id} was superseded by a newer one; only the newest certificate renews"
                        ),
                    )));
                }
                audit(
                    &tx,
                    now,
                    &format!("node:{id}"),
                    "cert.redeliver",
                    id,
                    &format!("serial={newest_hex} asked_with={serial_hex} not_after={not_after}"),
                )?;
                tx.commit()?;
                return Ok(Ok(Issued {
                    der,
                    serial: newest_serial.unwrap_or_default(),
                    not_before: u64::try_from(not_before).unwrap_or(0),
                    not_after,
                }));
            }
        }
        let issued = ca.issue_node(node, public_key, now, lifetime)?;
        let new_serial = insert_cert(&tx, &issued, id, "renew", now)?;
        audit(
            &tx,
            now,
            &format!("node:{id}"),
            "cert.renew",
            id,
            &format!(
                "serial={new_serial} previous={serial_hex} not_after={}",
                issued.not_after
            ),
        )?;
        tx.commit()?;
        Ok(Ok(issued))
    }

    /// Revokes a node and every certificate it holds, and publishes a new snapshot.
    pub fn revoke_node(
        &mut self,
        node_id: &str,
        reason: &str,
        ca: &Ca,
        actor: &str,
        now: u64,
    ) -> Result<Revoked, StoreError> {
        let tx = self.immediate()?;
        let state: Option<String> = tx
            .query_row("SELECT state FROM nodes WHERE node_id=?1", [node_id], |r| {
                r.get(0)
            })
            .optional()?;
        match state.as_deref() {
            None => return Err(not_found("node", node_id)),
            Some("revoked") => return Err(conflict(format!("node {node_id} is already revoked"))),
            Some(_) => {}
        }
        tx.execute(
            "UPDATE nodes SET state='revoked', revoked_at=?2, reason=?3 WHERE node_id=?1",
            params![node_id, to_i64(now), reason],
        )?;
        let mut stmt = tx.prepare(
            "SELECT serial FROM certs WHERE node_id=?1 AND revoked_at IS NULL ORDER BY serial",
        )?;
        let serials = stmt
            .query_map([node_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        tx.execute(
            "UPDATE certs SET revoked_at=?2 WHERE node_id=?1 AND revoked_at IS NULL",
            params![node_id, to_i64(now)],
        )?;
        audit(
            &tx,
            now,
            actor,
            "node.revoke",
            node_id,
            &format!("reason={reason} serials={}", serials.join(",")),
        )?;
        let version = publish(&tx, ca, actor, &format!("revoked {node_id}"), now)?;
        tx.commit()?;
        Ok(Revoked {
            node_id: node_id.to_owned(),
            serials,
            snapshot_version: version,
        })
    }

    /// Publishes a snapshot when none exists or the newest is older than
    /// [`SNAPSHOT_REFRESH_SECS`]; returns the newest version.
    pub fn refresh_snapshot(&mut self, ca: &Ca, now: u64) -> Result<u64, StoreError> {
        let tx = self.immediate()?;
        let newest: Option<(i64, i64)> = tx
            .query_row(
                "SELECT version, issued_at FROM snapshots ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let version = match newest {
            Some((v, issued)) if to_u64(issued) + SNAPSHOT_REFRESH_SECS > now => to_u64(v),
            Some(_) => publish(&tx, ca, "authority", "refresh before expiry", now)?,
            None => publish(&tx, ca, "authority", "initial", now)?,
        };
        tx.commit()?;
        Ok(version)
    }

    /// The signed envelope of a snapshot: the newest, or `version`.
    pub fn snapshot_envelope(
        &self,
        version: Option<u64>,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row = match version {
            Some(v) => self
                .conn
                .query_row(
                    "SELECT version, envelope FROM snapshots WHERE version=?1",
                    [to_i64(v)],
                    |r| Ok((to_u64(r.get(0)?), r.get(1)?)),
                )
                .optional()?,
            None => self
                .conn
                .query_row(
                    "SELECT version, envelope FROM snapshots ORDER BY version DESC LIMIT 1",
                    [],
                    |r| Ok((to_u64(r.get(0)?), r.get(1)?)),
                )
                .optional()?,
        };
        Ok(row)
    }

    /// A snapshot decoded for people (signature not re-checked: the store wrote it).
    pub fn snapshot_info(&self, version: Option<u64>) -> Result<SnapshotInfo, StoreError> {
        let label = version.map_or_else(|| "newest".to_owned(), |v| format!("v{v}"));
        let (_, envelope) = self
            .snapshot_envelope(version)?
            .ok_or_else(|| not_found("trust snapshot", &label))?;
        let decoded =
            trellis_policy::Envelope::decode(&envelope, trellis_policy::Kind::TrustSnapshot)
                .and_then(|e| TrustSnapshot::from_payload(&e.payload))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(SnapshotInfo {
            org: decoded.org,
            version: decoded.version,
            issued_at: decoded.issued_at,
            expires_at: decoded.expires_at,
            revoked_nodes: decoded.revoked_nodes,
            revoked_serials: decoded.revoked_serials.iter().map(|s| hex(s)).collect(),
            envelope_hex: hex(&envelope),
        })
    }
}
