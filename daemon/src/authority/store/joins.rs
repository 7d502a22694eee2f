//! Join requests: atomic admission (token check and spend with the request insert), then
//! approval (certificate issued in the same transaction), rejection or expiry.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use trellis_routing::NodeId;

use super::{
    audit, conflict, insert_cert, json_list, list_json, not_found, to_i64, to_u64, Store,
    StoreError,
};
use crate::admin::JoinInfo;
use crate::authority::tokens;
use crate::enroll::ErrorCode;
use crate::pki::{self, Ca, Issued};
use crate::util::{constant_time_eq, hex, random_bytes};

/// A join request as received (the token is checked, never stored).
pub struct NewJoin {
    /// The full token, `ID.SECRET`.
    pub token: String,
    /// Node id asked for.
    pub node_id: NodeId,
    /// CSR, DER (signature already checked).
    pub csr: Vec<u8>,
    /// SHA-256 of the public key, hex.
    pub key_sha256: String,
    /// Reported facts.
    pub facts: BTreeMap<String, String>,
    /// Reported capabilities.
    pub capabilities: Vec<String>,
    /// Roles asked for.
    pub roles: Vec<String>,
    /// Source address.
    pub source: String,
}

/// An admitted join request.
#[derive(Debug)]
pub struct Admission {
    /// Join request id.
    pub join_id: String,
    /// Whether the token approves without an operator.
    pub auto_approve: bool,
    /// The token id (for the audit trail of an automatic approval).
    pub token_id: String,
}

/// A refused join request; `counts_as_failure` feeds the per-source rate limit.
#[derive(Debug)]
pub struct Refusal {
    /// Code for the node.
    pub code: ErrorCode,
    /// One line for the node's operator.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Whether the refusal is a failed token attempt (rate-limited per source).
    pub fn counts_as_failure(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::InvalidToken
                | ErrorCode::TokenExpired
                | ErrorCode::TokenSpent
                | ErrorCode::TokenRevoked
        )
    }
}

struct TokenRow {
    hash: Vec<u8>,
    expires_at: u64,
    max_uses: u32,
    uses: u32,
    auto_approve: bool,
    roles: Vec<String>,
    revoked: bool,
}

const JOIN_COLUMNS: &str = "id, node_id, state, token_id, source, facts, capabilities, roles,
    key_sha256, created_at, decided_at, reason";

fn join_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JoinInfo> {
    Ok(JoinInfo {
        id: r.get(0)?,
        node_id: r.get(1)?,
        state: r.get(2)?,
        token_id: r.get(3)?,
        source: r.get(4)?,
        facts: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        capabilities: json_list(&r.get::<_, String>(6)?),
        roles: json_list(&r.get::<_, String>(7)?),
        key_sha256: r.get(8)?,
        created_at: to_u64(r.get(9)?),
        decided_at: r.get::<_, Option<i64>>(10)?.map(to_u64),
        reason: r.get(11)?,
    })
}

impl Store {
    /// Checks the token and, in the same transaction, spends one use and records the
    /// pending request. `Ok(Err(_))` is a refusal for the node; `Err(_)` a store failure.
    pub fn begin_join(
        &mut self,
        join: &NewJoin,
        now: u64,
    ) -> Result<Result<Admission, Refusal>, StoreError> {
        let Some((id, secret)) = tokens::split(&join.token) else {
            return Ok(Err(Refusal::new(
                ErrorCode::InvalidToken,
                "invalid join token",
            )));
        };
        let tx = self.immediate()?;
        let row = tx
            .query_row(
                "SELECT hash, expires_at, max_uses, uses, auto_approve, roles, revoked_at
                 FROM tokens WHERE id=?1",
                [id],
                |r| {
                    Ok(TokenRow {
                        hash: r.get(0)?,
                        expires_at: to_u64(r.get(1)?),
                        max_uses: r.get(2)?,
                        uses: r.get(3)?,
                        auto_approve: r.get(4)?,
                        roles: json_list(&r.get::<_, String>(5)?),
                        revoked: r.get::<_, Option<i64>>(6)?.is_some(),
                    })
                },
            )
            .optional()?;
        // Same answer for an unknown id and a wrong secret: nothing to learn by probing.
        let presented = tokens::hash(id, secret);
        let Some(token) = row.filter(|t| constant_time_eq(&t.hash, &presented)) else {
            return Ok(Err(Refusal::new(
                ErrorCode::InvalidToken,
                "invalid join token",
            )));
        };
        if token.revoked {
            return Ok(Err(Refusal::new(
                ErrorCode::TokenRevoked,
                format!("join token {id} was revoked"),
            )));
        }
        if token.expires_at <= now {
            return Ok(Err(Refusal::new(
                ErrorCode::TokenExpired,
                format!("join token {id} has expired"),
            )));
        }
        if token.uses >= token.max_uses {
            return Ok(Err(Refusal::new(
                ErrorCode::TokenSpent,
                format!(
                    "join token {id} is spent ({} of {} uses)",
                    token.uses, token.max_uses
                ),
            )));
        }
        let roles = if join.roles.is_empty() {
            token.roles.clone()
        } else {
            join.roles.clone()
        };
        if let Some(extra) = roles.iter().find(|r| !token.roles.contains(r)) {
            return Ok(Err(Refusal::new(
                ErrorCode::Scope,
                format!(
                    "role {extra:?} is outside the token's scope [{}]",
                    token.roles.join(",")
                ),
            )));
        }
        let node = join.node_id.as_str();
        let existing: Option<(String, Vec<u8>)> = tx
            .query_row(
                "SELECT state, public_key FROM nodes WHERE node_id=?1",
                [node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((state, _)) = existing {
            let why = if state == "revoked" {
                "is revoked"
            } else {
                "is already enrolled"
            };
            return Ok(Err(Refusal::new(
                ErrorCode::NameTaken,
                format!("node {node} {why}"),
            )));
        }
        let pending: i64 = tx.query_row(
            "SELECT count(*) FROM joins WHERE node_id=?1 AND state='pending'",
            [node],
            |r| r.get(0),
        )?;
        if pending > 0 {
            return Ok(Err(Refusal::new(
                ErrorCode::NameTaken,
                format!("a join request for {node} is already pending"),
            )));
        }
        let spent = tx.execute(
            "UPDATE tokens SET uses = uses + 1
             WHERE id=?1 AND uses < max_uses AND revoked_at IS NULL AND expires_at > ?2",
            params![id, to_i64(now)],
        )?;
        if spent != 1 {
            return Ok(Err(Refusal::new(
                ErrorCode::TokenSpent,
                format!("join token {id} is spent"),
            )));
        }
        let join_id = format!(
            "j-{}",
            hex(&random_bytes::<6>().map_err(|_| pki::PkiError::Random)?)
        );
        tx.execute(
            "INSERT INTO joins(id, token_id, node_id, csr, key_sha256, facts, capabilities, roles,
                               source, state, created_at)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10)",
            params![
                join_id,
                id,
                node,
                join.csr,
                join.key_sha256,
                serde_json::to_string(&join.facts).unwrap_or_else(|_| "{}".into()),
                list_json(&join.capabilities),
                list_json(&roles),
                join.source,
                to_i64(now)
            ],
        )?;
        audit(
            &tx,
            now,
            &format!("source:{}", join.source),
            "join.request",
            &join_id,
            &format!("node={node} token={id} key_sha256={}", join.key_sha256),
        )?;
        tx.commit()?;
        Ok(Ok(Admission {
            join_id,
            auto_approve: token.auto_approve,
            token_id: id.to_owned(),
        }))
    }

    /// One join request.
    pub fn join(&self, id: &str) -> Result<Option<JoinInfo>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {JOIN_COLUMNS} FROM joins WHERE id=?1"),
                [id],
                join_row,
            )
            .optional()?)
    }

    /// Every join request, newest first.
    pub fn list_joins(&self) -> Result<Vec<JoinInfo>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {JOIN_COLUMNS} FROM joins ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map([], join_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The certificate issued for an approved join.
    pub fn join_certificate(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT c.der FROM joins j JOIN certs c ON c.serial = j.serial WHERE j.id=?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Approves a pending join: enrolls the node and issues its certificate, atomically.
    pub fn approve_join(
        &mut self,
        id: &str,
        ca: &Ca,
        actor: &str,
        now: u64,
        lifetime: u64,
    ) -> Result<(JoinInfo, Issued), StoreError> {
        let tx = self.immediate()?;
        let row: Option<(String, String, Vec<u8>, String, String)> = tx
            .query_row(
                "SELECT state, node_id, csr, roles, token_id FROM joins WHERE id=?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((state, node_id, csr, roles, token_id)) = row else {
            return Err(not_found("join request", id));
        };
        if state != "pending" {
            return Err(conflict(format!(
                "join request {id} is {state}, not pending"
            )));
        }
        // A revoked token takes back its pending requests too (revoke_token rejects them;
        // this also covers requests recorded before that rule).
        let token_revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM tokens WHERE id=?1",
                [&token_id],
                |r| r.get(0),
            )
            .optional()?;
        match token_revoked {
            Some(None) => {}
            Some(Some(_)) => {
                return Err(conflict(format!(
                    "join request {id} came with join token {token_id}, which was revoked; \
                     it cannot be approved"
                )))
            }
            None => {
                return Err(StoreError::Corrupt(format!(
                    "join request {id} names unknown token {token_id}"
                )))
            }
        }
        let node = NodeId::new(&node_id).map_err(|e| super::StoreError::Corrupt(e.to_string()))?;
        let taken: Option<String> = tx
            .query_row(
                "SELECT state FROM nodes WHERE node_id=?1",
                [&node_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(state) = taken {
            return Err(conflict(format!("node {node_id} already exists ({state})")));
        }
        let request = pki::parse_csr(&csr)?;
        let issued = ca.issue_node(&node, &request.public_key, now, lifetime)?;
        tx.execute(
            "INSERT INTO nodes(node_id, public_key, roles, state, joined_at) VALUES(?1, ?2, ?3, 'active', ?4)",
            params![node_id, rcgen::PublicKeyData::der_bytes(&request.public_key), roles, to_i64(now)],
        )?;
        let serial = insert_cert(&tx, &issued, &node_id, "join", now)?;
        tx.execute(
            "UPDATE joins SET state='approved', decided_at=?2, serial=?3 WHERE id=?1",
            params![id, to_i64(now), serial],
        )?;
        audit(
            &tx,
            now,
            actor,
            "join.approve",
            id,
            &format!("node={node_id}"),
        )?;
        audit(
            &tx,
            now,
            actor,
            "cert.issue",
            &node_id,
            &format!("serial={serial} not_after={} reason=join", issued.not_after),
        )?;
        tx.commit()?;
        let info = self
            .join(id)?
            .ok_or_else(|| not_found("join request", id))?;
        Ok((info, issued))
    }

    /// Rejects a pending join with a reason (shown to the node).
    pub fn reject_join(
        &mut self,
        id: &str,
        reason: &str,
        actor: &str,
        now: u64,
    ) -> Result<JoinInfo, StoreError> {
        self.decide(
            id,
            "rejected",
            Some(reason),
            actor,
            "join.reject",
            now,
            false,
        )
    }

    /// Expires a pending join whose node went away or waited too long, giving the token
    /// use back so the same join string can be retried.
    pub fn expire_join(&mut self, id: &str, now: u64) -> Result<JoinInfo, StoreError> {
        self.decide(id, "expired", None, "authority", "join.expire", now, true)
    }

    /// Withdraws a pending join whose automatic approval failed: rejected with `reason`,
    /// the token use given back, so the node can retry with the same join string.
    pub fn fail_auto_approval(
        &mut self,
        id: &str,
        reason: &str,
        now: u64,
    ) -> Result<JoinInfo, StoreError> {
        self.decide(
            id,
            "rejected",
            Some(reason),
            "authority",
            "join.auto_approve_fail",
            now,
            true,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        id: &str,
        state: &str,
        reason: Option<&str>,
        actor: &str,
        action: &str,
        now: u64,
        refund: bool,
    ) -> Result<JoinInfo, StoreError> {
        let tx = self.immediate()?;
        let row: Option<(String, String)> = tx
            .query_row("SELECT state, token_id FROM joins WHERE id=?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((current, token_id)) = row else {
            return Err(not_found("join request", id));
        };
        if current != "pending" {
            return Err(conflict(format!(
                "join request {id} is {current}, not pending"
            )));
        }
        tx.execute(
            "UPDATE joins SET state=?2, decided_at=?3, reason=?4 WHERE id=?1",
            params![id, state, to_i64(now), reason],
        )?;
        if refund {
            tx.execute(
                "UPDATE tokens SET uses = uses - 1 WHERE id=?1 AND uses > 0",
                [&token_id],
            )?;
        }
        audit(&tx, now, actor, action, id, reason.unwrap_or(""))?;
        tx.commit()?;
        self.join(id)?.ok_or_else(|| not_found("join request", id))
    }
}
