//! The operator-token parts of a trust snapshot: the org's token keys (its JWKS) and the
//! revoked token ids (docs/adr/0017-operator-tokens.md).

use trellis_schemas::peering_capnp::trust_snapshot;

use crate::envelope::{malformed, EnvelopeError};
use crate::jwt::TokenKey;

/// Most token keys one snapshot carries.
pub const MAX_TOKEN_KEYS: usize = 16;

fn count(n: usize) -> Result<u32, EnvelopeError> {
    u32::try_from(n).map_err(|_| malformed("too many token entries"))
}

/// Writes the keys and revocations into `root`.
pub(super) fn write(
    root: &mut trust_snapshot::Builder<'_>,
    keys: &[TokenKey],
    revoked: &[String],
) -> Result<(), EnvelopeError> {
    let mut list = root.reborrow().init_token_keys(count(keys.len())?);
    for (i, k) in keys.iter().enumerate() {
        let mut b = list.reborrow().get(count(i)?);
        b.set_kid(k.kid.as_str());
        b.set_public_key(&k.public);
    }
    let mut list = root.reborrow().init_revoked_tokens(count(revoked.len())?);
    for (i, jti) in revoked.iter().enumerate() {
        list.set(count(i)?, jti.as_str());
    }
    Ok(())
}

/// Reads the keys and revocations (empty in snapshots of older authorities).
pub(super) fn read(
    root: &trust_snapshot::Reader<'_>,
) -> Result<(Vec<TokenKey>, Vec<String>), EnvelopeError> {
    let text = |t: capnp::Result<capnp::text::Reader<'_>>| -> Result<String, EnvelopeError> {
        t.map_err(malformed)?.to_string().map_err(malformed)
    };
    let keys = root.get_token_keys().map_err(malformed)?;
    let revoked = root.get_revoked_tokens().map_err(malformed)?;
    if keys.len() as usize > MAX_TOKEN_KEYS || revoked.len() as usize > super::MAX_REVOKED {
        return Err(malformed("too many token keys or revoked tokens"));
    }
    let keys = keys
        .iter()
        .map(|k| {
            Ok(TokenKey {
                kid: text(k.get_kid())?,
                public: k.get_public_key().map_err(malformed)?.to_vec(),
            })
        })
        .collect::<Result<_, EnvelopeError>>()?;
    let revoked = revoked.iter().map(text).collect::<Result<_, _>>()?;
    Ok((keys, revoked))
}
