//! The node's in-memory trust view: which CA is trusted for which org, and what is
//! revoked. Shared (behind a lock) by the TLS verifiers of every session, the manifest
//! verifier and the routing loop; updated when a verified trust snapshot is stored or a
//! peering config is loaded.
//!
//! A CA is trusted **only for its own org**: a partner's CA from a peering config never
//! vouches for a node claiming to be in another org (docs/security.md).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use trellis_policy::TrustSnapshot;
use trellis_routing::ownership::{Grantee, NamePattern, NameRules, OrgNames, ScopeNodes};
use trellis_routing::{NodeId, OrgId};

/// What is trusted and revoked.
#[derive(Debug, Default, Clone)]
pub struct TrustState {
    /// CA certificates (DER) trusted per org.
    pub cas: HashMap<OrgId, Vec<Vec<u8>>>,
    /// Revoked certificate serials (big-endian bytes) per org.
    pub revoked_serials: HashMap<OrgId, HashSet<Vec<u8>>>,
    /// Node ids revoked outright.
    pub revoked_nodes: HashSet<NodeId>,
    /// Newest snapshot version applied per org.
    pub snapshot_versions: HashMap<OrgId, u64>,
    /// Who may originate which name, per org whose snapshot is held (docs/adr/0011).
    pub names: NameRules,
    /// The usable entries of each org's node directory (docs/adr/0015).
    pub directories: HashMap<OrgId, Vec<Member>>,
    /// Each org's operator-token keys and revoked token ids (docs/adr/0017).
    pub operator_tokens: HashMap<OrgId, (Vec<trellis_policy::jwt::TokenKey>, Vec<String>)>,
}

/// A node of an org as its authority's directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node.
    pub node: NodeId,
    /// Where it accepts peering sessions.
    pub address: std::net::SocketAddr,
    /// Its selection role.
    pub role: trellis_routing::selection::NodeRole,
}

/// The usable entries of `org`'s directory in `snapshot`; the others are logged once.
fn members(org: &OrgId, snapshot: &TrustSnapshot) -> Vec<Member> {
    let mut out = Vec::with_capacity(snapshot.directory.len());
    for entry in &snapshot.directory {
        let checked = entry.check(org.as_str()).and_then(|address| {
            let node = NodeId::new(&entry.node).map_err(|e| e.to_string())?;
            let role = super::config::role_from_name(&entry.role)
                .ok_or_else(|| format!("unknown role {:?}", entry.role))?;
            Ok(Member {
                node,
                address,
                role,
            })
        });
        match checked {
            Ok(member) => out.push(member),
            Err(why) => tracing::warn!(org = org.as_str(), %why, "directory entry skipped"),
        }
    }
    out
}

/// How to check a chain: signature algorithms, time, key usage.
pub struct ChainCheck<'a> {
    /// Signature algorithms accepted in the chain.
    pub algorithms: &'a [&'a dyn rustls_pki_types::SignatureVerificationAlgorithm],
    /// The time of the check.
    pub now: rustls_pki_types::UnixTime,
    /// Client or server authentication.
    pub usage: webpki::KeyUsage,
}

/// Why a chain was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// No CA is trusted for this org.
    NoCa(OrgId),
    /// The chain, or the node, was refused; why.
    Refused(String),
}

/// The name rules in `org`'s snapshot; entries that do not parse, or that speak for
/// another org's names, are skipped (logged).
fn org_names(org: &OrgId, snapshot: &TrustSnapshot) -> OrgNames {
    let patterns = |names: &[String]| -> Vec<NamePattern> {
        names
            .iter()
            .filter_map(|n| match NamePattern::new(n, org) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(org = org.as_str(), error = %e, "name rule entry skipped");
                    None
                }
            })
            .collect()
    };
    let scopes = snapshot
        .name_scopes
        .iter()
        .filter_map(|s| {
            let nodes = if s.node == "*" {
                ScopeNodes::All
            } else {
                match NodeId::new(&s.node) {
                    Ok(n) if n.in_org(org) => ScopeNodes::Node(n),
                    _ => {
                        tracing::warn!(org = org.as_str(), node = %s.node, "name scope skipped");
                        return None;
                    }
                }
            };
            Some((nodes, patterns(&s.names)))
        })
        .collect();
    let delegations = snapshot
        .delegations
        .iter()
        .filter_map(|d| {
            let grantee = match NodeId::new(&d.grantee) {
                Ok(n) => Grantee::Node(n),
                Err(_) => Grantee::Org(OrgId::new(&d.grantee).ok()?),
            };
            Some((grantee, patterns(&d.names)))
        })
        .collect();
    OrgNames {
        scopes,
        delegations,
    }
}

/// The shared trust view.
#[derive(Debug, Default)]
pub struct TrustStore {
    state: RwLock<TrustState>,
}

impl TrustStore {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TrustState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TrustState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Trusts `ca_der` for nodes of `org` (idempotent).
    pub fn trust_ca(&self, org: &OrgId, ca_der: Vec<u8>) {
        let mut state = self.write();
        let cas = state.cas.entry(org.clone()).or_default();
        if !cas.contains(&ca_der) {
            cas.push(ca_der);
        }
    }

    /// Whether any CA is trusted for `org`.
    pub fn has_ca(&self, org: &OrgId) -> bool {
        self.read().cas.get(org).is_some_and(|c| !c.is_empty())
    }

    /// Trusts the partner CAs pinned in the own org's `snapshot`, each for its own org
    /// only (never for the own org). Returns the orgs pinned.
    pub fn pin_partner_cas(&self, own: &OrgId, snapshot: &TrustSnapshot) -> Vec<OrgId> {
        let mut pinned = Vec::new();
        for pin in &snapshot.partner_cas {
            match OrgId::new(&pin.org) {
                Ok(org) if &org != own => {
                    self.trust_ca(&org, pin.ca_certificate_der.clone());
                    pinned.push(org);
                }
                _ => {
                    tracing::warn!(org = %pin.org, "partner CA pin for an invalid or own org skipped")
                }
            }
        }
        pinned
    }

    /// The name rules of every org whose snapshot is held.
    pub fn name_rules(&self) -> NameRules {
        self.read().names.clone()
    }

    /// Stops trusting any CA for `org` (a peering config was removed).
    pub fn forget_org(&self, org: &OrgId) {
        self.write().cas.remove(org);
    }

    /// The CA certificates trusted for `org`.
    pub fn cas_for(&self, org: &OrgId) -> Vec<Vec<u8>> {
        self.read().cas.get(org).cloned().unwrap_or_default()
    }

    /// Whether a certificate of `node` with `serial` is revoked.
    pub fn is_revoked(&self, node: &NodeId, serial: &[u8]) -> bool {
        let state = self.read();
        state.revoked_nodes.contains(node)
            || state
                .revoked_serials
                .get(&node.org())
                .is_some_and(|s| s.contains(serial))
    }

    /// Applies a verified (and already persisted) snapshot of `org`. Returns the node ids
    /// newly revoked by it.
    pub fn apply_snapshot(&self, org: &OrgId, snapshot: &TrustSnapshot) -> Vec<NodeId> {
        let mut state = self.write();
        let current = state.snapshot_versions.get(org).copied().unwrap_or(0);
        if snapshot.version <= current {
            return Vec::new();
        }
        state
            .snapshot_versions
            .insert(org.clone(), snapshot.version);
        state.revoked_serials.insert(
            org.clone(),
            snapshot.revoked_serials.iter().cloned().collect(),
        );
        state.names.set(org.clone(), org_names(org, snapshot));
        state
            .directories
            .insert(org.clone(), members(org, snapshot));
        state.operator_tokens.insert(
            org.clone(),
            (snapshot.token_keys.clone(), snapshot.revoked_tokens.clone()),
        );
        let mut newly = Vec::new();
        for id in &snapshot.revoked_nodes {
            // Only the org's own authority can revoke its nodes.
            let Ok(node) = NodeId::new(id) else { continue };
            if node.in_org(org) && state.revoked_nodes.insert(node.clone()) {
                newly.push(node);
            }
        }
        newly
    }

    /// `org`'s operator-token keys and revoked token ids from its newest snapshot.
    pub fn operator_tokens(
        &self,
        org: &OrgId,
    ) -> (Vec<trellis_policy::jwt::TokenKey>, Vec<String>) {
        self.read()
            .operator_tokens
            .get(org)
            .cloned()
            .unwrap_or_default()
    }

    /// The node directory of `org` from its newest snapshot (empty: none held).
    pub fn directory(&self, org: &OrgId) -> Vec<Member> {
        self.read()
            .directories
            .get(org)
            .cloned()
            .unwrap_or_default()
    }

    /// The newest snapshot version applied for `org` (0: none).
    pub fn snapshot_version(&self, org: &OrgId) -> u64 {
        self.read().snapshot_versions.get(org).copied().unwrap_or(0)
    }

    /// Verifies that `leaf` (a certificate of `node`, with `intermediates`) chains at
    /// `now` to a CA trusted for `node`'s org, for `usage`, with `algorithms`, and that
    /// neither the node nor `serial` is revoked. `Err(NoCa)` when no CA is trusted for the
    /// org at all (callers decide what that means); `Err(Refused(why))` otherwise.
    /// The one chain check shared by the TLS verifiers and the manifest verifier.
    pub fn verify_chain(
        &self,
        node: &NodeId,
        serial: &[u8],
        leaf: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        chain: ChainCheck<'_>,
    ) -> Result<(), ChainError> {
        let org = node.org();
        let cas: Vec<rustls_pki_types::CertificateDer<'static>> = self
            .cas_for(&org)
            .into_iter()
            .map(rustls_pki_types::CertificateDer::from)
            .collect();
        if cas.is_empty() {
            return Err(ChainError::NoCa(org));
        }
        let anchors = cas
            .iter()
            .map(webpki::anchor_from_trusted_cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ChainError::Refused(format!("a CA trusted for org {org} is unusable: {e}"))
            })?;
        let end = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| ChainError::Refused(format!("certificate of {node} is malformed: {e}")))?;
        end.verify_for_usage(
            chain.algorithms,
            &anchors,
            intermediates,
            chain.now,
            chain.usage,
            None,
            None,
        )
        .map_err(|e| {
            ChainError::Refused(format!(
                "certificate of {node} does not verify to a CA trusted for org {org}: {e}"
            ))
        })?;
        if self.is_revoked(node, serial) {
            return Err(ChainError::Refused(format!(
                "certificate of {node} is revoked"
            )));
        }
        Ok(())
    }

    /// A copy of the whole state (status output, tests).
    pub fn snapshot(&self) -> TrustState {
        self.read().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64, nodes: &[&str], serials: &[&[u8]]) -> TrustSnapshot {
        TrustSnapshot {
            org: "acme".into(),
            version,
            issued_at: 0,
            expires_at: 1,
            revoked_serials: serials.iter().map(|s| s.to_vec()).collect(),
            revoked_nodes: nodes.iter().map(|s| (*s).to_owned()).collect(),
            ca_certificate_der: vec![],
            ..TrustSnapshot::default()
        }
    }

    #[test]
    fn revocations_apply_only_to_the_signing_org_and_only_forward() {
        let trust = TrustStore::new();
        let acme = OrgId::new("acme").expect("org");
        let newly =
            trust.apply_snapshot(&acme, &snapshot(2, &["acme/bad", "globex/x"], &[b"\x01"]));
        assert_eq!(newly, vec![NodeId::new("acme/bad").expect("id")]);
        assert!(trust.is_revoked(&NodeId::new("acme/bad").expect("id"), b"\x09"));
        assert!(trust.is_revoked(&NodeId::new("acme/ok").expect("id"), b"\x01"));
        assert!(!trust.is_revoked(&NodeId::new("globex/x").expect("id"), b"\x09"));
        assert!(!trust.is_revoked(&NodeId::new("globex/y").expect("id"), b"\x01"));
        assert!(trust
            .apply_snapshot(&acme, &snapshot(1, &["acme/other"], &[]))
            .is_empty());
        assert!(!trust.is_revoked(&NodeId::new("acme/other").expect("id"), b"\x00"));
    }

    #[test]
    fn a_ca_is_trusted_for_its_org_only() {
        let trust = TrustStore::new();
        let acme = OrgId::new("acme").expect("org");
        trust.trust_ca(&acme, vec![1, 2, 3]);
        trust.trust_ca(&acme, vec![1, 2, 3]);
        assert_eq!(trust.cas_for(&acme), vec![vec![1, 2, 3]]);
        assert!(trust
            .cas_for(&OrgId::new("globex").expect("org"))
            .is_empty());
    }
}
