//! Join tokens: `ID.SECRET`, 64-bit id and 256-bit secret from the OS CSPRNG.
//!
//! Only a hash is stored: SHA-256 over a domain tag, the id and the secret. The secret
//! has 256 bits of entropy, so a fast hash is enough (no dictionary to try); comparison is
//! constant-time (`util::constant_time_eq`).

use crate::util::{hex, random_bytes, sha256};

/// Hex digits of a token id.
pub const ID_HEX_LEN: usize = 16;
/// Hex digits of a token secret.
pub const SECRET_HEX_LEN: usize = 64;

/// A token just created: the only moment its secret exists outside the node that uses it.
pub struct NewToken {
    /// Public id (shown in lists and the audit log).
    pub id: String,
    /// The secret (shown once, inside the join string).
    pub secret: String,
    /// What is stored.
    pub hash: [u8; 32],
}

/// Creates a token.
pub fn new_token() -> Result<NewToken, ring::error::Unspecified> {
    let id = hex(&random_bytes::<8>()?);
    let secret = hex(&random_bytes::<32>()?);
    let hash = hash(&id, &secret);
    Ok(NewToken { id, secret, hash })
}

/// The stored hash of a token.
pub fn hash(id: &str, secret: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(20 + id.len() + secret.len());
    input.extend_from_slice(b"trellis-token-v1\0");
    input.extend_from_slice(id.as_bytes());
    input.push(b'.');
    input.extend_from_slice(secret.as_bytes());
    sha256(&input)
}

/// Splits `ID.SECRET`; `None` if the shape is wrong.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (id.len() == ID_HEX_LEN && secret.len() == SECRET_HEX_LEN).then_some((id, secret))
}
