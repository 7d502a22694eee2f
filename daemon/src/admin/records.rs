//! Records the admin API returns (and `trellis --json` prints). None carries a secret,
//! except [`TokenCreated::join_string`], shown once at creation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One route of a bulk load.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkRoute {
    /// Service name.
    pub service: String,
    /// Where the service listens, IP:PORT.
    pub endpoint: String,
    /// `tcp`, `http` or `grpc` (default `tcp`).
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// Answer to a bulk load or withdrawal, once committed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkResult {
    /// Routes in the request.
    pub requested: usize,
    /// Routes that were new or changed (withdrawn, for a withdrawal).
    pub changed: usize,
}

/// Answer to `tokens create`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenCreated {
    /// Token id.
    pub id: String,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
    /// Joins it allows.
    pub max_uses: u32,
    /// Joins approved without an operator.
    pub auto_approve: bool,
    /// Roles in scope.
    pub roles: Vec<String>,
    /// The join string (carries the secret; shown only here, once).
    pub join_string: String,
}

/// A token as listed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Token id.
    pub id: String,
    /// `active`, `expired`, `spent` or `revoked`.
    pub state: String,
    /// Creation, seconds since the epoch.
    pub created_at: u64,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
    /// Joins it allows.
    pub max_uses: u32,
    /// Joins made with it.
    pub uses: u32,
    /// Joins approved without an operator.
    pub auto_approve: bool,
    /// Roles in scope.
    pub roles: Vec<String>,
}

/// A join request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinInfo {
    /// Join request id.
    pub id: String,
    /// Node id asked for.
    pub node_id: String,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub state: String,
    /// Token used.
    pub token_id: String,
    /// Source address of the request.
    pub source: String,
    /// Facts the node reported.
    pub facts: BTreeMap<String, String>,
    /// Capabilities the node reported.
    pub capabilities: Vec<String>,
    /// Roles granted on approval.
    pub roles: Vec<String>,
    /// SHA-256 of the node's public key, hex (to compare with the node's own output).
    pub key_sha256: String,
    /// When it arrived.
    pub created_at: u64,
    /// When it was decided.
    pub decided_at: Option<u64>,
    /// Rejection reason.
    pub reason: Option<String>,
}

/// A node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub node_id: String,
    /// `active` or `revoked`.
    pub state: String,
    /// Roles.
    pub roles: Vec<String>,
    /// When it joined.
    pub joined_at: u64,
    /// Serial (hex) of its newest certificate.
    pub cert_serial: Option<String>,
    /// Expiry of its newest certificate.
    pub cert_not_after: Option<u64>,
    /// When it was revoked.
    pub revoked_at: Option<u64>,
    /// Why.
    pub reason: Option<String>,
}

/// Answer to `nodes revoke`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    /// The node.
    pub node_id: String,
    /// Certificates revoked (hex serials).
    pub serials: Vec<String>,
    /// Version of the new trust snapshot.
    pub snapshot_version: u64,
}

/// One audit event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// Sequence number.
    pub seq: u64,
    /// Time, seconds since the epoch.
    pub at: u64,
    /// Who: `operator` (admin socket), `node:ORG/NAME`, `source:ADDR` or `authority`.
    pub actor: String,
    /// What, e.g. `token.create`, `join.approve`, `cert.issue`, `node.revoke`.
    pub action: String,
    /// On what: a token id, join id, node id or snapshot version.
    pub subject: String,
    /// Details (never a secret).
    pub detail: String,
}

/// A trust snapshot as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Org.
    pub org: String,
    /// Version.
    pub version: u64,
    /// Signing time.
    pub issued_at: u64,
    /// Expiry.
    pub expires_at: u64,
    /// Revoked node ids.
    pub revoked_nodes: Vec<String>,
    /// Revoked serials (hex).
    pub revoked_serials: Vec<String>,
    /// The signed envelope, hex (what `snapshot export` writes, decoded).
    pub envelope_hex: String,
}

/// Authority status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorityStatus {
    /// Always `authority`.
    pub role: String,
    /// Org.
    pub org: String,
    /// CA fingerprint, `sha256:HEX`.
    pub ca_fingerprint: String,
    /// Enrollment address.
    pub listen: String,
    /// Newest trust snapshot version.
    pub snapshot_version: u64,
    /// Active nodes.
    pub nodes_active: u64,
    /// Revoked nodes.
    pub nodes_revoked: u64,
    /// Pending join requests.
    pub joins_pending: u64,
    /// Usable tokens.
    pub tokens_active: u64,
    /// Counters since start: join requests, decisions, revocations, renewals.
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// One name rule as the authority lists it (`names list`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameRuleInfo {
    /// `scope` or `delegation`.
    pub kind: String,
    /// A node of the org or `*` (scope); an org or a node of another org (delegation).
    pub subject: String,
    /// Names or aggregates of the org.
    pub names: Vec<String>,
}

/// A partner CA pin as the authority lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartnerCaInfo {
    /// The partner org.
    pub org: String,
    /// SHA-256 of its CA certificate, hex.
    pub fingerprint: String,
}

/// Answer to `names list`, and to every change of names or partners.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamesInfo {
    /// Scopes and delegations.
    pub rules: Vec<NameRuleInfo>,
    /// Partner CA pins.
    pub partner_cas: Vec<PartnerCaInfo>,
    /// The trust snapshot version that carries them.
    pub snapshot_version: u64,
}
