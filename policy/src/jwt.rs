//! ES384 operator tokens (JWT) issued by an org's authority and verified by its daemons
//! (docs/adr/0017-operator-tokens.md).
//!
//! The contract:
//! - [`issue`] signs [`OperatorClaims`] with the authority's token key (P-384, PKCS#8).
//! - [`verify`] accepts a token only if **every** check passes:
//!   - `alg` is ES384: anything else is refused before a key is looked at, so `none`,
//!     HMAC with a public key as the secret and RSA confusion cannot work;
//!   - `kid` names one of the org's published [`TokenKey`]s, and the signature verifies
//!     with it;
//!   - `iss` and `aud` are the expected ones;
//!   - `nbf` and `iat` are not in the future and `exp` has not passed, each within
//!     [`LEEWAY_SECS`];
//!   - `jti` is not revoked;
//!   - `cnf.x5t#S256` equals the SHA-256 thumbprint of the TLS client certificate the
//!     token came with (RFC 8705): a token without a binding, or replayed from another
//!     certificate, is refused.
//! - Pure: the time is a parameter, keys and revocations are arguments.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Longest token lifetime an authority issues, seconds (30 days).
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// A public key that verifies the org's operator tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKey {
    /// Its key id (the JWT header's `kid`).
    pub kid: String,
    /// The P-384 public key, uncompressed SEC1 (`04 || x || y`, 97 bytes).
    pub public: Vec<u8>,
}

/// `cnf`: what the token is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Base64url (no padding) SHA-256 of the client certificate's DER (RFC 8705).
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The claims of an operator token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorClaims {
    /// Issuer: `trellis:ORG` (the org's authority).
    pub iss: String,
    /// Audience: `trellis:ORG` (the org's daemons).
    pub aud: String,
    /// The operator.
    pub sub: String,
    /// The operator's role (Cedar's `principal.role`).
    pub role: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// Token id (revocations name it).
    pub jti: String,
    /// The certificate it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its header or claims do not parse.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not ES384.
    #[error("token algorithm {0} refused (only ES384)")]
    Algorithm(String),
    /// No published key has this `kid`.
    #[error("token key {0:?} is not one of the org's keys")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("token signature does not verify")]
    Signature,
    /// Wrong issuer.
    #[error("token issuer {0:?} is not this org's authority")]
    Issuer(String),
    /// Wrong audience.
    #[error("token audience {0:?} is not this org")]
    Audience(String),
    /// Expired.
    #[error("token expired at {0}")]
    Expired(u64),
    /// Not valid yet (or issued in the future).
    #[error("token not valid before {0}")]
    NotYetValid(u64),
    /// Revoked by the authority.
    #[error("token {0} is revoked")]
    Revoked(String),
    /// No `cnf.x5t#S256`.
    #[error("token is not bound to a client certificate (no cnf.x5t#S256)")]
    Unbound,
    /// Bound to another certificate.
    #[error("token is bound to another client certificate")]
    WrongCertificate,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The `cnf.x5t#S256` of a DER certificate.
pub fn thumbprint(cert_der: &[u8]) -> String {
    b64url(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

/// The key id of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(public: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The issuer and audience of `org`'s tokens.
pub fn org_uri(org: &str) -> String {
    format!("trellis:{org}")
}

/// The published half of the PKCS#8 P-384 key `pkcs8`.
pub fn public_key(pkcs8: &[u8]) -> Result<TokenKey, TokenError> {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_FIXED_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|e| TokenError::Malformed(format!("not a P-384 key: {e}")))?;
    let public = pair.public_key().as_ref().to_vec();
    Ok(TokenKey {
        kid: key_id(&public),
        public,
    })
}

/// Signs `claims` with the PKCS#8 P-384 key `pkcs8` under `kid`.
pub fn issue(pkcs8: &[u8], kid: &str, claims: &OperatorClaims) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(pkcs8))
        .map_err(|e| TokenError::Malformed(format!("cannot sign: {e}")))
}

/// What a verifier expects besides the token.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The org whose authority issues and whose daemons accept the token.
    pub org: &'a str,
    /// The org's published keys.
    pub keys: &'a [TokenKey],
    /// Revoked token ids.
    pub revoked: &'a [String],
    /// The DER of the client certificate the token came with.
    pub client_cert: &'a [u8],
    /// Now, seconds since the epoch.
    pub now: u64,
}

/// Verifies `token` (see the module contract); the claims if it is accepted.
pub fn verify(token: &str, expect: &Expect<'_>) -> Result<OperatorClaims, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::ES384 {
        return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let kid = header.kid.unwrap_or_default();
    let key = expect
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(TokenError::UnknownKey(kid))?;
    let mut validation = Validation::new(Algorithm::ES384);
    // Times, issuer and audience are checked below against the given `now`.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<OperatorClaims>(
        token,
        &DecodingKey::from_ec_der(&key.public),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
        _ => TokenError::Malformed(e.to_string()),
    })?;
    let c = data.claims;
    let uri = org_uri(expect.org);
    if c.iss != uri {
        return Err(TokenError::Issuer(c.iss));
    }
    if c.aud != uri {
        return Err(TokenError::Audience(c.aud));
    }
    if c.exp.saturating_add(LEEWAY_SECS) <= expect.now {
        return Err(TokenError::Expired(c.exp));
    }
    let horizon = expect.now.saturating_add(LEEWAY_SECS);
    if c.nbf > horizon || c.iat > horizon {
        return Err(TokenError::NotYetValid(c.nbf.max(c.iat)));
    }
    if expect.revoked.contains(&c.jti) {
        return Err(TokenError::Revoked(c.jti));
    }
    match &c.cnf {
        None => return Err(TokenError::Unbound),
        Some(cnf) if cnf.x5t_s256 != thumbprint(expect.client_cert) => {
            return Err(TokenError::WrongCertificate)
        }
        Some(_) => {}
    }
    Ok(c)
}

#[cfg(test)]
mod tests;
