//! Authority trust snapshots: what an org's authority has revoked, signed with the org CA
//! key, versioned, and flooded to every node (docs/protocol.md, "Trust snapshots").
//!
//! [`verify`] is the one check every node runs before storing a snapshot: envelope kind,
//! signer, ECDSA P-384 signature by the CA the node already trusts for that org, the same
//! CA certificate inside, not expired, not issued in the future, and anti-rollback (a
//! version not newer than the stored one is refused). The caller persists the new version
//! before acting on the snapshot.

use capnp::message::Builder;
use ring::signature::EcdsaKeyPair;
use trellis_schemas::peering_capnp::trust_snapshot;

use crate::envelope::{canonical_bytes, malformed, read_canonical, Envelope, EnvelopeError, Kind};

/// How far in the future a snapshot's issue time may be (clock skew), in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Most revoked serials or node ids one snapshot carries.
pub const MAX_REVOKED: usize = 100_000;

mod directory;
mod names;
mod tokens;

pub use directory::{DirectoryEntry, MAX_DIRECTORY, SELECTION_ROLES};
pub use names::{
    NameDelegation, NameScope, PartnerCa, MAX_NAMES_PER_RULE, MAX_NAME_RULES, MAX_PARTNER_CAS,
};
pub use tokens::MAX_TOKEN_KEYS;

/// An org authority's trust state at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustSnapshot {
    /// Org id of the authority.
    pub org: String,
    /// Strictly increasing per org.
    pub version: u64,
    /// Signing time, seconds since the Unix epoch.
    pub issued_at: u64,
    /// End of validity, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Revoked certificate serial numbers (big-endian bytes as in the certificate).
    pub revoked_serials: Vec<Vec<u8>>,
    /// Node ids revoked outright.
    pub revoked_nodes: Vec<String>,
    /// The org CA certificate, DER.
    pub ca_certificate_der: Vec<u8>,
    /// Which nodes of the org may originate which of its names (empty: all, all).
    pub name_scopes: Vec<NameScope>,
    /// Names of the org that other orgs may originate.
    pub delegations: Vec<NameDelegation>,
    /// Partner CAs the org's nodes trust, each for its own org only.
    pub partner_cas: Vec<PartnerCa>,
    /// The org's node directory: where its active nodes listen, and their roles.
    pub directory: Vec<DirectoryEntry>,
    /// The keys that verify the org's operator tokens (its JWKS).
    pub token_keys: Vec<crate::jwt::TokenKey>,
    /// Revoked operator token ids (`jti`) not yet expired.
    pub revoked_tokens: Vec<String>,
}

/// Why a trust snapshot was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The envelope or payload is malformed, or its signature does not verify.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The trusted CA certificate cannot be parsed.
    #[error("trusted CA certificate of {org} is unusable: {reason}")]
    BadTrustAnchor {
        /// The org.
        org: String,
        /// Why.
        reason: String,
    },
    /// Signed by another org's authority.
    #[error("snapshot is signed by {found:?}, expected the authority of {expected:?}")]
    WrongSigner {
        /// The org expected.
        expected: String,
        /// The signer named in the envelope or payload.
        found: String,
    },
    /// The snapshot names another CA certificate than the trusted one.
    #[error(
        "snapshot of {org} carries a different CA certificate (CA rollover is not supported yet)"
    )]
    CaMismatch {
        /// The org.
        org: String,
    },
    /// The snapshot's validity ended.
    #[error("snapshot {org} v{version} expired at {expires_at} (now {now})")]
    Expired {
        /// The org.
        org: String,
        /// Its version.
        version: u64,
        /// When it expired.
        expires_at: u64,
        /// The time of the check.
        now: u64,
    },
    /// Issued further in the future than the allowed clock skew.
    #[error("snapshot {org} v{version} is issued at {issued_at}, in the future (now {now})")]
    FromFuture {
        /// The org.
        org: String,
        /// Its version.
        version: u64,
        /// Its issue time.
        issued_at: u64,
        /// The time of the check.
        now: u64,
    },
    /// Not newer than the version already stored (anti-rollback).
    #[error("snapshot {org} v{version} is not newer than the stored v{stored} (rollback refused)")]
    Rollback {
        /// The org.
        org: String,
        /// The refused version.
        version: u64,
        /// The stored version.
        stored: u64,
    },
}

impl TrustSnapshot {
    /// Whether a certificate (node id and serial) is revoked by this snapshot.
    pub fn revokes(&self, node_id: &str, serial: &[u8]) -> bool {
        self.revoked_nodes.iter().any(|n| n == node_id)
            || self.revoked_serials.iter().any(|s| s == serial)
    }

    /// The canonical payload bytes.
    pub fn to_payload(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut message = Builder::new_default();
        {
            let mut root = message.init_root::<trust_snapshot::Builder>();
            root.set_org(self.org.as_str());
            root.set_version(self.version);
            root.set_issued_at_secs(self.issued_at);
            root.set_expires_at_secs(self.expires_at);
            let len = |n: usize| u32::try_from(n).map_err(|_| malformed("too many entries"));
            let mut serials = root
                .reborrow()
                .init_revoked_serials(len(self.revoked_serials.len())?);
            for (i, serial) in self.revoked_serials.iter().enumerate() {
                serials.set(len(i)?, serial);
            }
            let mut nodes = root
                .reborrow()
                .init_revoked_nodes(len(self.revoked_nodes.len())?);
            for (i, node) in self.revoked_nodes.iter().enumerate() {
                nodes.set(len(i)?, node.as_str());
            }
            root.set_ca_certificate_der(&self.ca_certificate_der);
            names::write(
                &mut root,
                &self.name_scopes,
                &self.delegations,
                &self.partner_cas,
            )?;
            directory::write(&mut root, &self.directory)?;
            tokens::write(&mut root, &self.token_keys, &self.revoked_tokens)?;
        }
        canonical_bytes(message)
    }

    /// Parses canonical payload bytes (no signature check).
    pub fn from_payload(payload: &[u8]) -> Result<Self, EnvelopeError> {
        read_canonical(payload, |reader| {
            let root = reader
                .get_root::<trust_snapshot::Reader>()
                .map_err(malformed)?;
            let text =
                |t: capnp::Result<capnp::text::Reader<'_>>| -> Result<String, EnvelopeError> {
                    t.map_err(malformed)?.to_string().map_err(malformed)
                };
            let serials = root.get_revoked_serials().map_err(malformed)?;
            let nodes = root.get_revoked_nodes().map_err(malformed)?;
            if serials.len() as usize > MAX_REVOKED || nodes.len() as usize > MAX_REVOKED {
                return Err(malformed("too many revocations"));
            }
            let (name_scopes, delegations, partner_cas) = names::read(&root)?;
            let directory = directory::read(&root)?;
            let (token_keys, revoked_tokens) = tokens::read(&root)?;
            Ok(Self {
                directory,
                token_keys,
                revoked_tokens,
                name_scopes,
                delegations,
                partner_cas,
                org: text(root.get_org())?,
                version: root.get_version(),
                issued_at: root.get_issued_at_secs(),
                expires_at: root.get_expires_at_secs(),
                revoked_serials: serials
                    .iter()
                    .map(|s| s.map(<[u8]>::to_vec).map_err(malformed))
                    .collect::<Result<_, _>>()?,
                revoked_nodes: nodes.iter().map(text).collect::<Result<_, _>>()?,
                ca_certificate_der: root.get_ca_certificate_der().map_err(malformed)?.to_vec(),
            })
        })
    }

    /// Signs the snapshot with the org CA key; returns the encoded envelope.
    pub fn sign(&self, ca_key: &EcdsaKeyPair) -> Result<Vec<u8>, EnvelopeError> {
        let envelope = Envelope::sign(Kind::TrustSnapshot, self.to_payload()?, &self.org, ca_key)?;
        Ok(envelope.encode())
    }
}

/// The raw subject public key of a DER certificate.
pub fn certificate_public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Verifies an encoded snapshot envelope for `org` against the trusted CA certificate
/// `ca_der`, the stored version (`None` if none yet) and the current time in seconds.
pub fn verify(
    bytes: &[u8],
    org: &str,
    ca_der: &[u8],
    stored_version: Option<u64>,
    now: u64,
) -> Result<TrustSnapshot, SnapshotError> {
    let envelope = Envelope::decode(bytes, Kind::TrustSnapshot)?;
    if envelope.signer != org {
        return Err(SnapshotError::WrongSigner {
            expected: org.to_owned(),
            found: envelope.signer,
        });
    }
    let key = certificate_public_key(ca_der).map_err(|reason| SnapshotError::BadTrustAnchor {
        org: org.to_owned(),
        reason,
    })?;
    envelope.verify(&key)?;
    let snapshot = TrustSnapshot::from_payload(&envelope.payload)?;
    if snapshot.org != org {
        return Err(SnapshotError::WrongSigner {
            expected: org.to_owned(),
            found: snapshot.org,
        });
    }
    if snapshot.ca_certificate_der != ca_der {
        return Err(SnapshotError::CaMismatch {
            org: org.to_owned(),
        });
    }
    if snapshot.expires_at <= now {
        return Err(SnapshotError::Expired {
            org: snapshot.org,
            version: snapshot.version,
            expires_at: snapshot.expires_at,
            now,
        });
    }
    if snapshot.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(SnapshotError::FromFuture {
            org: snapshot.org,
            version: snapshot.version,
            issued_at: snapshot.issued_at,
            now,
        });
    }
    if let Some(stored) = stored_version {
        if snapshot.version <= stored {
            return Err(SnapshotError::Rollback {
                org: snapshot.org,
                version: snapshot.version,
                stored,
            });
        }
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests;
