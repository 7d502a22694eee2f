//! Records a node daemon's admin API returns (and `trellis --json` prints).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Node status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Always `node`.
    pub role: String,
    /// This node.
    pub node_id: String,
    /// QUIC listen address.
    pub listen: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Peers configured.
    pub peers_configured: usize,
    /// Sessions established.
    pub peers_up: usize,
    /// Services with a usable best route.
    pub routes: usize,
    /// Services this node originates.
    pub originated: usize,
    /// Trust snapshot version held for the own org.
    pub snapshot_version: u64,
    /// Expiry of the node certificate.
    pub cert_not_after: u64,
    /// This node is revoked by its org's authority: no peer accepts it any more; join
    /// again with a new token under a new name.
    #[serde(default)]
    pub revoked: bool,
    /// Counters: bad input from peers, manifests rejected, sessions, updates.
    pub counters: BTreeMap<String, u64>,
    /// Peer selection inside the org, when `[selection]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionStatus>,
}

/// A policy decision explained (`trellis policy check`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyVerdict {
    /// `allow` or `deny`.
    pub decision: String,
    /// The policies that decided: the permits that allowed it or the forbids that denied
    /// it (empty: nothing permitted it, so Cedar's default deny).
    pub policies: Vec<String>,
    /// Errors met while evaluating (a policy that failed to evaluate is skipped).
    pub errors: Vec<String>,
    /// Where the policies in force came from.
    pub source: String,
}

/// An operator token as the authority lists it (never the token itself).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorTokenInfo {
    /// Token id.
    pub jti: String,
    /// The operator.
    pub name: String,
    /// Its role.
    pub role: String,
    /// `x5t#S256` of the client certificate it is bound to.
    pub cert_thumbprint: String,
    /// Issued at.
    pub issued_at: u64,
    /// Expires at.
    pub expires_at: u64,
    /// When it was revoked.
    pub revoked_at: Option<u64>,
}

/// A new operator token: the token (shown once; write it to a 0600 file) and its record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorTokenCreated {
    /// The ES384 JWT.
    pub token: String,
    /// What the authority keeps of it.
    pub info: OperatorTokenInfo,
}

/// What `trellis policy reload` did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyLoaded {
    /// Where the policies in force come from now.
    pub source: String,
    /// How many policies are in force.
    pub policies: usize,
}

/// What `trellis status` shows of peer selection (docs/adr/0015).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SelectionStatus {
    /// `default`, `relay` or `thin`.
    pub role: String,
    /// Fewest active peers wanted.
    pub min_active: usize,
    /// Most active peers kept (configured peers count, and stay beyond it).
    pub max_active: usize,
    /// Active peers now (configured ones included).
    pub active: usize,
    /// Candidates with a fresh probe (warm).
    pub warm: usize,
    /// Directory and bootstrap nodes known (cold and warm included).
    pub candidates: usize,
}

/// A peer and its session.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    /// Node id.
    pub node_id: String,
    /// Address dialed (empty for passive peers).
    pub address: String,
    /// `internal`, `customer`, `peer` or `provider`.
    pub role: String,
    /// Where it is configured: `config`, `admin`, or the peering config file.
    pub source: String,
    /// `up`, `connecting` or `down`.
    pub state: String,
    /// When the state last changed, seconds since the epoch.
    pub since: u64,
    /// Paths held from it.
    pub routes_received: usize,
    /// Link cost in use: the configured cost weighed by the peer's score (ADR 0014).
    pub link_cost: u32,
    /// The configured link cost.
    #[serde(default)]
    pub base_cost: u32,
    /// Smoothed round trip (QUIC's estimate and keepalives), microseconds.
    pub rtt_us: Option<u64>,
    /// Packets lost over the last 30 s, parts per million.
    #[serde(default)]
    pub loss_ppm: u32,
    /// Session failures in the last 10 minutes.
    #[serde(default)]
    pub failures: u32,
    /// Trust now (0..=100): the configured level, lowered by failures and bad input.
    #[serde(default)]
    pub trust: u32,
    /// How many times the link cost changed since the daemon started.
    #[serde(default)]
    pub cost_changes: u64,
    /// Why the last session ended.
    pub last_error: Option<String>,
    /// Sessions established with it since start.
    pub sessions: u64,
}

/// The best route of a service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteInfo {
    /// Service.
    pub service: String,
    /// Next hop; `None` when this node originates it.
    pub next_hop: Option<String>,
    /// Path, nearest hop first.
    pub path: Vec<String>,
    /// Metric including the link cost.
    pub metric: u64,
    /// Origin node.
    pub origin: String,
    /// `tcp`, `http`, `grpc` or `unspecified`.
    pub protocol: String,
    /// Local endpoint, for services this node originates.
    pub endpoint: Option<String>,
    /// `valid` (the origin's manifest verified up to a CA trusted for its org) or
    /// `unverified` (only self-consistent: no CA for the origin's org is known here).
    #[serde(default)]
    pub origin_check: String,
    /// How the route entered this org: `internal` (originated in it), `customer`, `peer`
    /// or `provider`; decides to which peers it is announced, and so for which peers
    /// this node carries traffic to the service (valley-free).
    #[serde(default)]
    pub learned_from: String,
}

/// One path of a service (`routes show`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathInfo {
    /// Peer it came from; `None` for this node's own.
    pub from: Option<String>,
    /// Path, nearest hop first.
    pub path: Vec<String>,
    /// Metric including the link cost.
    pub metric: u64,
    /// Origin node.
    pub origin: String,
    /// Usable: the origin's manifest lists it and the origin may use the name.
    pub valid: bool,
    /// `valid`, `unverified` (usable, but the origin's chain could not be checked here)
    /// or `invalid` (not listed, or the origin may not use the name).
    #[serde(default)]
    pub origin_check: String,
    /// Kept across a graceful restart.
    pub stale: bool,
    /// The best path.
    pub best: bool,
}

/// Every path of one service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteDetail {
    /// The service asked for.
    pub service: String,
    /// The table entry it resolved to (itself, or the longest matching aggregate).
    pub matched: Option<String>,
    /// Paths, best first.
    pub paths: Vec<PathInfo>,
}

/// This node and its sessions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Topology {
    /// This node.
    pub node_id: String,
    /// Its peers.
    pub peers: Vec<PeerInfo>,
    /// Origins whose routes this node holds, with the next hop used.
    pub origins: BTreeMap<String, Option<String>>,
    /// Per origin, the best path from this node to it (nearest hop first; empty for this
    /// node's own services): the routing tree as seen from here.
    #[serde(default)]
    pub paths: BTreeMap<String, Vec<String>>,
}

/// What a config reload changed (`trellis reload`, SIGHUP).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Peers added.
    pub added: Vec<String>,
    /// Peers removed (their sessions closed, their routes withdrawn).
    pub removed: Vec<String>,
    /// Peers whose settings changed (their sessions re-established).
    pub changed: Vec<String>,
    /// Peers left as they were.
    pub unchanged: usize,
    /// Peers that could not be added, with why.
    pub errors: Vec<String>,
    /// Settings that changed in the file but take effect only after a restart.
    pub restart_needed: Vec<String>,
}

/// A `trellis connect` listener and what went through it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The service connected to.
    pub service: String,
    /// The local TCP address listened on.
    pub listen: String,
    /// Whether the address is bound (a restored listener whose address is taken retries).
    pub listening: bool,
    /// The next hop new connections take now (`local ENDPOINT` when this node
    /// originates the service); `None`: no route, connections are refused.
    pub next_hop: Option<String>,
    /// Connections open now.
    pub active: u64,
    /// Connections accepted since the daemon started.
    pub connections: u64,
    /// Connections refused (here or by a hop on the path).
    pub refused: u64,
    /// Bytes from clients toward the service.
    pub bytes_sent: u64,
    /// Bytes from the service toward clients.
    pub bytes_received: u64,
    /// The last refusal or reset, with its reason.
    pub last_error: Option<String>,
}
