//! The authority's operator-token key (docs/adr/0017-operator-tokens.md): a P-384 key of
//! its own (`token.key`, mode 0600, made at the first start), never the CA key. Its
//! public half is published in every trust snapshot; tokens it signs are ES384 JWTs
//! bound to the operator's client certificate.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use trellis_policy::jwt::{self, Confirmation, OperatorClaims, TokenKey};

use crate::util::files::{read_secret, write_secret_new};

/// The token signing key.
pub(crate) struct TokenSigner {
    pkcs8: Vec<u8>,
    key: TokenKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.key.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads `path`, or makes a new key there (mode 0600) if it does not exist.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = if path.exists() {
            read_secret(path).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                .map_err(|_| "the system random generator failed".to_owned())?;
            write_secret_new(path, doc.as_ref()).map_err(|e| format!("{}: {e}", path.display()))?;
            doc.as_ref().to_vec()
        };
        let key = jwt::public_key(&pkcs8).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { key, pkcs8 })
    }

    /// The public key, as published.
    pub(crate) fn public(&self) -> &TokenKey {
        &self.key
    }

    /// The claims of a token for `name` with `role` in `org`, valid from `now` for
    /// `ttl_secs`, bound to the certificate `cert_der`, with the id `jti`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claims(
        &self,
        org: &str,
        name: &str,
        role: &str,
        cert_der: &[u8],
        jti: &str,
        now: u64,
        ttl_secs: u64,
    ) -> OperatorClaims {
        OperatorClaims {
            iss: jwt::org_uri(org),
            aud: jwt::org_uri(org),
            sub: name.to_owned(),
            role: role.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
            jti: jti.to_owned(),
            cnf: Some(Confirmation {
                x5t_s256: jwt::thumbprint(cert_der),
            }),
        }
    }

    /// The signed token of `claims`.
    pub(crate) fn sign(&self, claims: &OperatorClaims) -> Result<String, String> {
        jwt::issue(&self.pkcs8, &self.key.kid, claims).map_err(|e| e.to_string())
    }
}
