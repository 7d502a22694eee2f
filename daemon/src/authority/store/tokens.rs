//! Token rows: create, list, revoke. Spending happens in `joins.rs`, with the join.

use rusqlite::params;

use super::{audit, conflict, json_list, list_json, not_found, to_i64, to_u64, Store, StoreError};
use crate::admin::TokenInfo;
use crate::authority::tokens::NewToken;

/// What an operator asked for.
pub struct TokenSpec {
    /// Lifetime, seconds.
    pub ttl_secs: u64,
    /// Joins allowed.
    pub uses: u32,
    /// Approve without an operator.
    pub auto_approve: bool,
    /// Roles in scope.
    pub roles: Vec<String>,
}

fn state(revoked: bool, uses: u32, max_uses: u32, expires_at: u64, now: u64) -> &'static str {
    if revoked {
        "revoked"
    } else if uses >= max_uses {
        "spent"
    } else if expires_at <= now {
        "expired"
    } else {
        "active"
    }
}

impl Store {
    /// Stores a new token's hash; the secret is never passed in.
    pub fn create_token(
        &mut self,
        token: &NewToken,
        spec: &TokenSpec,
        actor: &str,
        now: u64,
    ) -> Result<TokenInfo, StoreError> {
        let tx = self.immediate()?;
        let expires_at = now.saturating_add(spec.ttl_secs);
        tx.execute(
            "INSERT INTO tokens(id, hash, created_at, expires_at, max_uses, auto_approve, roles)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.id,
                &token.hash[..],
                to_i64(now),
                to_i64(expires_at),
                spec.uses,
                spec.auto_approve,
                list_json(&spec.roles)
            ],
        )?;
        audit(
            &tx,
            now,
            actor,
            "token.create",
            &token.id,
            &format!(
                "uses={} ttl={}s auto_approve={} roles={}",
                spec.uses,
                spec.ttl_secs,
                spec.auto_approve,
                spec.roles.join(",")
            ),
        )?;
        tx.commit()?;
        Ok(TokenInfo {
            id: token.id.clone(),
            state: "active".into(),
            created_at: now,
            expires_at,
            max_uses: spec.uses,
            uses: 0,
            auto_approve: spec.auto_approve,
            roles: spec.roles.clone(),
        })
    }

    /// Every token, newest first.
    pub fn list_tokens(&self, now: u64) -> Result<Vec<TokenInfo>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, created_at, expires_at, max_uses, uses, auto_approve, roles, revoked_at
             FROM tokens ORDER BY created_at DESC, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let revoked: Option<i64> = r.get(7)?;
            let (uses, max_uses): (u32, u32) = (r.get(4)?, r.get(3)?);
            let expires_at = to_u64(r.get(2)?);
            Ok(TokenInfo {
                id: r.get(0)?,
                state: state(revoked.is_some(), uses, max_uses, expires_at, now).into(),
                created_at: to_u64(r.get(1)?),
                expires_at,
                max_uses,
                uses,
                auto_approve: r.get(5)?,
                roles: json_list(&r.get::<_, String>(6)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a token: it admits no further join, and its pending join requests are
    /// rejected in the same transaction. Returns the ids of the rejected requests.
    pub fn revoke_token(
        &mut self,
        id: &str,
        actor: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.immediate()?;
        let revoked: Option<Option<i64>> = tx
            .query_row("SELECT revoked_at FROM tokens WHERE id=?1", [id], |r| {
                r.get(0)
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        match revoked {
            None => return Err(not_found("token", id)),
            Some(Some(_)) => return Err(conflict(format!("token {id} is already revoked"))),
            Some(None) => {}
        }
        tx.execute(
            "UPDATE tokens SET revoked_at=?2 WHERE id=?1",
            params![id, to_i64(now)],
        )?;
        audit(&tx, now, actor, "token.revoke", id, "")?;
        let mut stmt =
            tx.prepare("SELECT id FROM joins WHERE token_id=?1 AND state='pending' ORDER BY id")?;
        let pending = stmt
            .query_map([id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        let reason = format!("join token {id} was revoked");
        for join in &pending {
            tx.execute(
                "UPDATE joins SET state='rejected', decided_at=?2, reason=?3 WHERE id=?1",
                params![join, to_i64(now), reason],
            )?;
            audit(&tx, now, actor, "join.reject", join, &reason)?;
        }
        tx.commit()?;
        Ok(pending)
    }
}
