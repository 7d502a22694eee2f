//! Origin manifests: what a node says it originates, signed by that node.
//!
//! A route is valid only if its origin's current manifest lists its service
//! (the RPKI-ROA idea, per node instead of per AS). Signature checking is
//! injected through [`Signatures`] so the core stays free of key handling;
//! the core checks each manifest once and keeps the result, never per route.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::name::{NodeId, ServiceName};
use crate::ownership::NameRules;

/// Most services one manifest may list.
pub const MAX_MANIFEST_SERVICES: usize = 100_000;
/// How many refused (origin, version, signature) triples are remembered so a
/// replayed bad manifest is not verified again.
const REJECTED_CACHE: usize = 1024;

/// The list of services a node originates, with a version that only grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginManifest {
    /// The node that signs and originates.
    pub origin: NodeId,
    /// Monotonically increasing version.
    pub version: u64,
    /// Every service the node originates under this version.
    pub services: HashSet<ServiceName>,
}

/// A manifest with its signature. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: Arc<OriginManifest>,
    /// The origin's signature over the manifest's canonical encoding.
    pub signature: Arc<[u8]>,
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature of {signer} rejected: {reason}")]
pub struct VerifyError {
    /// Who was supposed to have signed.
    pub signer: NodeId,
    /// Why it failed.
    pub reason: String,
}

/// Signs this node's manifests and verifies other nodes' manifests.
///
/// The daemon implements it with the node's P-384 key and the trust store;
/// the simulator and tests use cheap deterministic stand-ins. The core calls
/// `verify` at most once per distinct signed manifest.
pub trait Signatures {
    /// Signs a manifest originated by this node.
    fn sign(&self, manifest: &OriginManifest) -> Vec<u8>;
    /// Verifies that `signature` is `manifest.origin`'s signature over `manifest`.
    fn verify(&self, manifest: &OriginManifest, signature: &[u8]) -> Result<(), VerifyError>;
    /// Whether `verify` checks `origin`'s certificate chain up to a CA trusted for its
    /// org. Where it cannot (no CA for that org here), an accepted manifest is only
    /// self-consistent: routes from it are shown as unverified, and it is verified again
    /// once the CA becomes known (docs/adr/0011).
    fn verifies_chain(&self, origin: &NodeId) -> bool {
        let _ = origin;
        true
    }
}

/// Why a received manifest was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not newer than the one already held (anti-rollback).
    #[error("manifest of {origin} version {version} is not newer than version {current}")]
    NotNewer {
        /// Origin.
        origin: NodeId,
        /// Received version.
        version: u64,
        /// Version held.
        current: u64,
    },
    /// Lists more services than allowed.
    #[error("manifest of {origin} lists {count} services, the limit is {max}")]
    TooLarge {
        /// Origin.
        origin: NodeId,
        /// Services listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The signature did not verify (now or on an earlier try).
    #[error(transparent)]
    BadSignature(#[from] VerifyError),
}

/// The current manifest of every origin heard of, plus a small memory of
/// refused ones.
#[derive(Default)]
pub(crate) struct ManifestStore {
    current: HashMap<NodeId, SignedManifest>,
    /// Origins whose current manifest was accepted without a chain to a trusted CA.
    unverified: HashSet<NodeId>,
    /// Who may originate which name.
    pub(crate) rules: NameRules,
    rejected: HashSet<(NodeId, u64, Arc<[u8]>)>,
    rejected_order: VecDeque<(NodeId, u64, Arc<[u8]>)>,
}

impl ManifestStore {
    /// The current manifest of `origin`.
    pub(crate) fn get(&self, origin: &NodeId) -> Option<&SignedManifest> {
        self.current.get(origin)
    }

    /// If `origin`'s current manifest lists `service` for a route originated under
    /// `origin_seq`, the manifest's copy of the name (so the table can share its
    /// allocation). Says nothing of whether `origin` may use the name: see [`Self::covers`].
    pub(crate) fn lists(
        &self,
        origin: &NodeId,
        service: &ServiceName,
        origin_seq: u64,
    ) -> Option<&ServiceName> {
        let m = self.current.get(origin)?;
        if m.manifest.version < origin_seq {
            return None;
        }
        m.manifest.services.get(service)
    }

    /// [`Self::lists`], and `origin` may originate `service` ([`NameRules`]): the
    /// route is valid.
    pub(crate) fn covers(
        &self,
        origin: &NodeId,
        service: &ServiceName,
        origin_seq: u64,
    ) -> Option<&ServiceName> {
        self.lists(origin, service, origin_seq)
            .filter(|_| self.rules.check(origin, service).is_ok())
    }

    /// Whether `origin`'s current manifest was verified up to a trusted CA.
    pub(crate) fn chain_verified(&self, origin: &NodeId) -> bool {
        self.current.contains_key(origin) && !self.unverified.contains(origin)
    }

    /// Verifies again every manifest accepted without a chain whose org's CA is now
    /// known. Returns the manifests that fail now; they are dropped.
    pub(crate) fn reverify(&mut self, sigs: &dyn Signatures) -> Vec<SignedManifest> {
        let mut due: Vec<NodeId> = self
            .unverified
            .iter()
            .filter(|o| sigs.verifies_chain(o))
            .cloned()
            .collect();
        due.sort();
        let mut dropped = Vec::new();
        for origin in due {
            self.unverified.remove(&origin);
            let Some(m) = self.current.get(&origin) else {
                continue;
            };
            if sigs.verify(&m.manifest, &m.signature).is_err() {
                if let Some(m) = self.current.remove(&origin) {
                    self.remember_rejected((origin, m.manifest.version, m.signature.clone()));
                    dropped.push(m);
                }
            }
        }
        dropped
    }

    /// Every origin with a current manifest, and the services it lists.
    pub(crate) fn all(&self) -> impl Iterator<Item = (&NodeId, &SignedManifest)> {
        self.current.iter()
    }

    /// Checks and installs a manifest; returns the one it replaced, if any.
    /// Verification runs only for a manifest that is newer than the current one
    /// and was not refused before.
    pub(crate) fn apply(
        &mut self,
        signed: SignedManifest,
        sigs: &dyn Signatures,
    ) -> Result<Option<SignedManifest>, ManifestError> {
        let m = &signed.manifest;
        if let Some(cur) = self.current.get(&m.origin) {
            if m.version <= cur.manifest.version {
                return Err(ManifestError::NotNewer {
                    origin: m.origin.clone(),
                    version: m.version,
                    current: cur.manifest.version,
                });
            }
        }
        if m.services.len() > MAX_MANIFEST_SERVICES {
            return Err(ManifestError::TooLarge {
                origin: m.origin.clone(),
                count: m.services.len(),
                max: MAX_MANIFEST_SERVICES,
            });
        }
        let key = (m.origin.clone(), m.version, signed.signature.clone());
        if self.rejected.contains(&key) {
            return Err(ManifestError::BadSignature(VerifyError {
                signer: m.origin.clone(),
                reason: "refused before".into(),
            }));
        }
        if let Err(e) = sigs.verify(m, &signed.signature) {
            self.remember_rejected(key);
            return Err(e.into());
        }
        if sigs.verifies_chain(&m.origin) {
            self.unverified.remove(&m.origin);
        } else {
            self.unverified.insert(m.origin.clone());
        }
        Ok(self.current.insert(m.origin.clone(), signed))
    }

    /// Installs this node's own manifest without verification.
    pub(crate) fn install_own(&mut self, signed: SignedManifest) -> Option<SignedManifest> {
        self.current.insert(signed.manifest.origin.clone(), signed)
    }

    fn remember_rejected(&mut self, key: (NodeId, u64, Arc<[u8]>)) {
        if self.rejected.len() >= REJECTED_CACHE {
            if let Some(old) = self.rejected_order.pop_front() {
                self.rejected.remove(&old);
            }
        }
        self.rejected.insert(key.clone());
        self.rejected_order.push_back(key);
    }
}
