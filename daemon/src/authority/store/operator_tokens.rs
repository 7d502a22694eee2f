//! Operator tokens the authority issued (docs/adr/0017-operator-tokens.md): who, which
//! role, bound to which certificate, until when, and revoked or not. The token itself is
//! never stored, only its id (`jti`). A revocation publishes a snapshot that names the
//! token id until the token would have expired.

use rusqlite::{params, Connection, OptionalExtension};
use trellis_policy::jwt::{OperatorClaims, TokenKey};

use super::nodes::publish;
use super::{conflict, not_found, to_i64, to_u64, Store, StoreError};
use crate::admin::OperatorTokenInfo;
use crate::pki::Ca;

/// The token key and the revoked, unexpired token ids, for a snapshot.
pub(super) fn snapshot_tokens(
    conn: &Connection,
    now: u64,
) -> Result<(Vec<TokenKey>, Vec<String>), StoreError> {
    let key: Option<(String, Vec<u8>)> = conn
        .query_row(
            "SELECT kid, public FROM token_keys ORDER BY added_at DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let keys = key
        .map(|(kid, public)| vec![TokenKey { kid, public }])
        .unwrap_or_default();
    let mut stmt = conn.prepare(
        "SELECT jti FROM operator_tokens WHERE revoked_at IS NOT NULL AND expires_at > ?1 ORDER BY jti",
    )?;
    let revoked = stmt
        .query_map([to_i64(now)], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((keys, revoked))
}

fn info(r: &rusqlite::Row<'_>) -> rusqlite::Result<OperatorTokenInfo> {
    Ok(OperatorTokenInfo {
        jti: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        cert_thumbprint: r.get(3)?,
        issued_at: to_u64(r.get(4)?),
        expires_at: to_u64(r.get(5)?),
        revoked_at: r.get::<_, Option<i64>>(6)?.map(to_u64),
    })
}

impl Store {
    /// Records `key` as the token key; publishes a snapshot carrying it when it is new.
    pub fn set_token_key(&mut self, ca: &Ca, key: &TokenKey, now: u64) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        let known: Option<String> = tx
            .query_row("SELECT kid FROM token_keys WHERE kid=?1", [&key.kid], |r| {
                r.get(0)
            })
            .optional()?;
        if known.is_none() {
            tx.execute(
                "INSERT INTO token_keys(kid, public, added_at) VALUES(?1, ?2, ?3)",
                params![key.kid, key.public, to_i64(now)],
            )?;
            publish(&tx, ca, "authority", "operator token key", now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records an issued token (never the token itself).
    pub fn record_operator_token(
        &mut self,
        claims: &OperatorClaims,
        thumbprint: &str,
        actor: &str,
    ) -> Result<OperatorTokenInfo, StoreError> {
        let tx = self.immediate()?;
        tx.execute(
            "INSERT INTO operator_tokens(jti, name, role, thumbprint, issued_at, expires_at)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                claims.jti,
                claims.sub,
                claims.role,
                thumbprint,
                to_i64(claims.iat),
                to_i64(claims.exp)
            ],
        )?;
        super::audit(
            &tx,
            claims.iat,
            actor,
            "operator_token.create",
            &claims.jti,
            &format!("{} as {} until {}", claims.sub, claims.role, claims.exp),
        )?;
        tx.commit()?;
        Ok(OperatorTokenInfo {
            jti: claims.jti.clone(),
            name: claims.sub.clone(),
            role: claims.role.clone(),
            cert_thumbprint: thumbprint.to_owned(),
            issued_at: claims.iat,
            expires_at: claims.exp,
            revoked_at: None,
        })
    }

    /// Revoked token ids that have not expired yet.
    pub fn revoked_operator_tokens(&self, now: u64) -> Result<Vec<String>, StoreError> {
        Ok(snapshot_tokens(&self.conn, now)?.1)
    }

    /// Every operator token, newest first.
    pub fn list_operator_tokens(&self) -> Result<Vec<OperatorTokenInfo>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT jti, name, role, thumbprint, issued_at, expires_at, revoked_at
             FROM operator_tokens ORDER BY issued_at DESC, jti",
        )?;
        let rows = stmt.query_map([], info)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Revokes a token and publishes a snapshot naming it; returns the snapshot version.
    pub fn revoke_operator_token(
        &mut self,
        ca: &Ca,
        jti: &str,
        actor: &str,
        now: u64,
    ) -> Result<u64, StoreError> {
        let tx = self.immediate()?;
        let revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM operator_tokens WHERE jti=?1",
                [jti],
                |r| r.get(0),
            )
            .optional()?;
        match revoked {
            None => return Err(not_found("operator token", jti)),
            Some(Some(_)) => {
                return Err(conflict(format!("operator token {jti} is already revoked")))
            }
            Some(None) => {}
        }
        tx.execute(
            "UPDATE operator_tokens SET revoked_at=?2 WHERE jti=?1",
            params![jti, to_i64(now)],
        )?;
        super::audit(&tx, now, actor, "operator_token.revoke", jti, "")?;
        let version = publish(
            &tx,
            ca,
            actor,
            &format!("operator token {jti} revoked"),
            now,
        )?;
        tx.commit()?;
        Ok(version)
    }
}
