//! [`NodeSignatures`]: the daemon's [`Signatures`] for origin manifests, with the node's
//! P-384 key and the trust store (docs/protocol.md, "Origin manifests and signing").
//!
//! Signing: ECDSA P-384/SHA-384 over the envelope signing input of kind `originManifest`
//! and the canonical payload ([`manifest_payload`]) issued now; the result is the blob of
//! [`super::manifest`] carrying this node's certificate, so any receiver can verify it,
//! including one that never peered with this node.
//!
//! Verification of `manifest` with a blob, in this order; the first failure is the
//! [`VerifyError`]'s one-line reason:
//!
//! 1. the blob splits and its certificate is a node certificate naming `manifest.origin`;
//! 2. the certificate chains, now, to a CA trusted for the origin's org
//!    ([`TrustStore::cas_for`]; a CA never vouches for another org), with the
//!    `clientAuth` usage every node certificate has;
//! 3. neither the certificate's serial nor the node is revoked ([`TrustStore::is_revoked`]);
//! 4. the signature verifies with the certificate's key.
//!
//! Step 2 is skipped for a certificate whose chain already verified against the same CA
//! set ([`super::chain_cache`]); its validity period and revocation are still checked.
//! The routing core calls `verify` once per received manifest and caches the outcome.
//! Node certificates live a day, so a node re-signs its manifest (a new version) after it
//! renews its certificate, or manifests relayed later stop verifying.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::signature::EcdsaKeyPair;
use rustls_pki_types::{CertificateDer, UnixTime};
use trellis_policy::envelope::{Envelope, Kind};
use trellis_routing::{NodeId, OriginManifest, Signatures, VerifyError};
use webpki::KeyUsage;

use super::manifest::{join_blob, manifest_payload, split_blob, MAX_CERTIFICATE_BYTES};
use super::CodecError;
use crate::node::trust::TrustStore;
use crate::pki::{self, NodeCert};

/// This node's current certificate (DER), replaced in place when it is renewed so new
/// manifests carry the new certificate.
pub type SharedCert = Arc<std::sync::RwLock<Vec<u8>>>;

/// A clock: milliseconds since the Unix epoch.
type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

/// Signs this node's origin manifests and verifies other nodes' (see the module docs).
pub struct NodeSignatures {
    local: NodeId,
    key: EcdsaKeyPair,
    cert_der: SharedCert,
    trust: Arc<TrustStore>,
    clock: Clock,
    unverified: Arc<std::sync::atomic::AtomicU64>,
    chains: super::chain_cache::ChainCache,
}

impl std::fmt::Debug for NodeSignatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSignatures")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The system clock in milliseconds since the Unix epoch (0 before it).
fn system_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NodeSignatures {
    /// Signs as `local` with `key`, whose certificate is `cert_der`; verifies against
    /// `trust`. Uses the system clock.
    ///
    /// Fails with [`CodecError::Local`] if the key is not ECDSA P-384, or the certificate
    /// is not a node certificate of `local` for that key.
    pub fn new(
        local: NodeId,
        key: &rcgen::KeyPair,
        cert_der: Vec<u8>,
        trust: Arc<TrustStore>,
    ) -> Result<Self, CodecError> {
        let local_err = |why: String| CodecError::Local(format!("{local}: {why}"));
        let signing = pki::signing_key(key).map_err(|e| local_err(e.to_string()))?;
        if cert_der.len() > MAX_CERTIFICATE_BYTES {
            return Err(local_err(format!(
                "certificate is {} bytes, the limit is {MAX_CERTIFICATE_BYTES}",
                cert_der.len()
            )));
        }
        let cert = pki::parse_node_cert(&cert_der).map_err(|e| local_err(e.to_string()))?;
        if cert.node != local {
            return Err(local_err(format!("the certificate names {}", cert.node)));
        }
        if cert.public_key != key.public_key_raw() {
            return Err(local_err("the certificate is for another key".into()));
        }
        Ok(Self {
            local,
            key: signing,
            cert_der: Arc::new(std::sync::RwLock::new(cert_der)),
            trust,
            clock: Box::new(system_clock_ms),
            unverified: Arc::default(),
            chains: super::chain_cache::ChainCache::default(),
        })
    }

    /// Replaces the clock (milliseconds since the Unix epoch): simulated time in tests.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The shared certificate: write a renewed certificate (same key) into it, then ask
    /// the router to re-sign (`Input::RefreshManifest`).
    pub fn certificate(&self) -> SharedCert {
        self.cert_der.clone()
    }

    /// Counter of manifests accepted whose origin's org this node holds no CA for
    /// (chain unverifiable here; see `check_certificate`).
    pub fn unverified_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.unverified.clone()
    }

    /// The node this signs for.
    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// Checks that `der` is a certificate of `origin`, chaining at `now_ms` to a CA
    /// trusted for its org, and not revoked. Returns what it says; the reason otherwise.
    fn check_certificate(
        &self,
        origin: &NodeId,
        der: &[u8],
        now_ms: u64,
    ) -> Result<NodeCert, String> {
        let cert = pki::parse_node_cert(der).map_err(|e| format!("certificate: {e}"))?;
        if &cert.node != origin {
            return Err(format!("certificate names {}, not {origin}", cert.node));
        }
        let cas = self.trust.cas_for(&origin.org());
        let keys = (
            super::chain_cache::digest([der]),
            super::chain_cache::digest(cas.iter().map(Vec::as_slice)),
        );
        if !cas.is_empty() && self.chains.get(&keys.0, &keys.1, now_ms).is_some() {
            let now = now_ms / 1000;
            if cert.not_before > now || cert.not_after <= now {
                return Err(format!("certificate of {origin} is not valid now"));
            }
            if self.trust.is_revoked(origin, &cert.serial) {
                return Err(format!("certificate of {origin} is revoked"));
            }
            return Ok(cert);
        }
        let leaf = CertificateDer::from(der);
        let check = crate::node::trust::ChainCheck {
            algorithms: &[webpki::ring::ECDSA_P384_SHA384],
            now: UnixTime::since_unix_epoch(Duration::from_millis(now_ms)),
            usage: KeyUsage::client_auth(),
        };
        match self
            .trust
            .verify_chain(origin, &cert.serial, &leaf, &[], check)
        {
            Ok(()) => self.chains.put(keys.0, keys.1, cert.clone(), now_ms),
            Err(crate::node::trust::ChainError::Refused(why)) => return Err(why),
            Err(crate::node::trust::ChainError::NoCa(_)) => {
                // An org this node holds no CA for (a partner of a partner, or a partner
                // seen from an interior node): RFC 6811's "NotFound". The certificate must
                // still name the origin, be valid now and carry the key that signed; the
                // border node that holds the org's CA verified the chain (docs/adr/0007).
                let now = now_ms / 1000;
                if cert.not_before > now + 300 || cert.not_after <= now {
                    return Err(format!("certificate of {origin} is not valid now"));
                }
                if self.trust.is_revoked(origin, &cert.serial) {
                    return Err(format!("certificate of {origin} is revoked"));
                }
                self.unverified
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(cert)
    }
}

impl Signatures for NodeSignatures {
    /// Signs `manifest` now. A manifest of another origin is signed too (and logged), but
    /// will not verify anywhere, since the blob carries this node's certificate. If the
    /// key fails (no randomness), the blob's signature is empty and will not verify.
    fn sign(&self, manifest: &OriginManifest) -> Vec<u8> {
        if manifest.origin != self.local {
            tracing::error!(
                origin = %manifest.origin,
                local = %self.local,
                "signing a manifest of another origin; receivers will refuse it"
            );
        }
        let issued_at_ms = (self.clock)();
        let signed = manifest_payload(manifest, issued_at_ms)
            .and_then(|payload| {
                Envelope::sign(
                    Kind::OriginManifest,
                    payload,
                    manifest.origin.as_str(),
                    &self.key,
                )
                .map_err(|e| CodecError::Local(e.to_string()))
            })
            .map(|envelope| envelope.signature);
        let signature = signed.unwrap_or_else(|e| {
            tracing::error!(origin = %manifest.origin, error = %e, "manifest signing failed");
            Vec::new()
        });
        let cert = self
            .cert_der
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        join_blob(&cert, issued_at_ms, &signature)
    }

    fn verifies_chain(&self, origin: &NodeId) -> bool {
        self.trust.has_ca(&origin.org())
    }

    fn verify(&self, manifest: &OriginManifest, signature: &[u8]) -> Result<(), VerifyError> {
        let fail = |reason: String| VerifyError {
            signer: manifest.origin.clone(),
            reason,
        };
        let parts = split_blob(signature).map_err(|e| fail(e.to_string()))?;
        let cert = self
            .check_certificate(&manifest.origin, parts.certificate, (self.clock)())
            .map_err(fail)?;
        let payload =
            manifest_payload(manifest, parts.issued_at_ms).map_err(|e| fail(e.to_string()))?;
        let envelope = Envelope {
            kind: Kind::OriginManifest,
            payload,
            signer: manifest.origin.to_string(),
            signature: parts.signature.to_vec(),
        };
        envelope
            .verify(&cert.public_key)
            .map_err(|_| fail("signature does not verify".into()))
    }
}
