//! Idempotent joins: a node whose approval reply was lost retries with the same join
//! string and key, and gets the certificate it was already issued instead of `NameTaken`.
//!
//! The retry must prove what the first request proved: the token's secret (the token
//! that enrolled this node, not revoked; spent or expired since is fine, the use was
//! already counted) and possession of the enrolled key (the CSR's signature, checked by
//! `pki::parse_csr`). Nothing new is issued; the newest valid certificate is sent again.

use rusqlite::{params, OptionalExtension};

use super::joins::NewJoin;
use super::{audit, to_u64, Store, StoreError};
use crate::authority::tokens;
use crate::pki;
use crate::util::constant_time_eq;

/// A certificate sent again to a retried join.
#[derive(Debug)]
pub struct Redelivered {
    /// Serial, hex.
    pub serial: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Store {
    /// The certificate already issued to `join`'s node when `join` is a retry of the
    /// approved join (same token, same key) of an active node; `None` otherwise, and the
    /// request then goes through [`Store::begin_join`] (which refuses a taken name).
    pub fn redeliver(
        &mut self,
        join: &NewJoin,
        now: u64,
    ) -> Result<Option<Redelivered>, StoreError> {
        let Some((token_id, secret)) = tokens::split(&join.token) else {
            return Ok(None);
        };
        let Ok(csr) = pki::parse_csr(&join.csr) else {
            return Ok(None);
        };
        let key = rcgen::PublicKeyData::der_bytes(&csr.public_key).to_vec();
        let node = join.node_id.as_str();
        let tx = self.immediate()?;
        let token: Option<(Vec<u8>, Option<i64>)> = tx
            .query_row(
                "SELECT hash, revoked_at FROM tokens WHERE id=?1",
                [token_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let presented = tokens::hash(token_id, secret);
        let token_ok = token.is_some_and(|(hash, revoked)| {
            constant_time_eq(&hash, &presented) && revoked.is_none()
        });
        let enrolled: Option<Vec<u8>> = tx
            .query_row(
                "SELECT n.public_key FROM nodes n
                 WHERE n.node_id=?1 AND n.state='active' AND EXISTS (
                   SELECT 1 FROM joins j
                   WHERE j.node_id=n.node_id AND j.token_id=?2 AND j.state='approved')",
                params![node, token_id],
                |r| r.get(0),
            )
            .optional()?;
        if !token_ok || enrolled.as_deref() != Some(key.as_slice()) {
            return Ok(None);
        }
        let newest: Option<(String, Vec<u8>, i64, Option<i64>)> = tx
            .query_row(
                "SELECT serial, der, not_after, revoked_at FROM certs WHERE node_id=?1
                 ORDER BY issued_at DESC, rowid DESC LIMIT 1",
                [node],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((serial, der, not_after, None)) = newest else {
            return Ok(None);
        };
        if to_u64(not_after) <= now {
            return Ok(None);
        }
        audit(
            &tx,
            now,
            &format!("source:{}", join.source),
            "join.redeliver",
            node,
            &format!("serial={serial} token={token_id} not_after={not_after}"),
        )?;
        tx.commit()?;
        Ok(Some(Redelivered { serial, der }))
    }
}
