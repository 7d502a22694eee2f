//! The admin API on `DATA_DIR/admin.sock`: one JSON request per line, one JSON response
//! per line (docs/adr/0004-admin-api-json-over-unix-socket.md). The socket file is mode
//! 0600 inside a 0700 data dir: file permissions are the local authentication.
//!
//! The same record types are what `trellis --json` prints, so scripts see exactly what the
//! daemon answered.

pub mod authz;
pub mod client;
mod node_records;
mod records;
pub mod remote_client;
pub mod remote_server;
pub mod server;

pub use node_records::*;
pub use records::*;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest request or response line, bytes.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Longest request line on the local admin socket: a bulk load of a million routes
/// (`routes advertise --file`) is about 60 MiB of JSON. The socket is the local
/// operator's (mode 0600); remote admin keeps its own, much smaller limit.
pub const MAX_LOCAL_REQUEST_BYTES: usize = 128 * 1024 * 1024;

/// A request to the authority's admin API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Authority status.
    Status,
    /// Create a join token.
    TokensCreate {
        /// Lifetime, seconds.
        ttl_secs: u64,
        /// How many joins it allows.
        uses: u32,
        /// Approve joins with it without an operator.
        auto_approve: bool,
        /// Roles a node joining with it may take.
        roles: Vec<String>,
    },
    /// List tokens (never their secrets).
    TokensList,
    /// Revoke a token.
    TokensRevoke {
        /// Token id.
        id: String,
    },
    /// List join requests.
    JoinsList,
    /// Approve a pending join request.
    JoinsApprove {
        /// Join request id.
        id: String,
    },
    /// Reject a pending join request.
    JoinsReject {
        /// Join request id.
        id: String,
        /// Why (shown to the node).
        reason: String,
    },
    /// List nodes.
    NodesList,
    /// Revoke a node: every certificate it holds, and a new trust snapshot.
    NodesRevoke {
        /// Node id `org/name`.
        node_id: String,
        /// Why.
        reason: String,
    },
    /// Audit events at or after `since` (seconds since the epoch).
    Audit {
        /// Lower bound, seconds since the epoch.
        since: Option<u64>,
    },
    /// A trust snapshot: the newest, or one version.
    SnapshotGet {
        /// The version; newest if absent.
        version: Option<u64>,
    },
    /// Node: configured peers and their sessions.
    PeersList,
    /// Node: one peer in detail.
    PeersShow {
        /// Node id.
        node_id: String,
    },
    /// Node: add a peer of this node's org at runtime (kept across restarts).
    PeersAdd {
        /// Node id.
        node_id: String,
        /// Its QUIC address.
        address: String,
        /// Link cost (default 10).
        link_cost: Option<u32>,
    },
    /// Node: remove a peer (its session is closed, its routes withdrawn).
    PeersRemove {
        /// Node id.
        node_id: String,
    },
    /// Node: close the session with a peer; it is redialed.
    PeersReset {
        /// Node id.
        node_id: String,
    },
    /// Node: the best route of every service.
    RoutesList,
    /// Node: every path of one service.
    RoutesShow {
        /// Service name (an aggregate or a name resolved by longest suffix).
        service: String,
    },
    /// Node: originate a service.
    RoutesAdvertise {
        /// Service name.
        service: String,
        /// Where the service listens, HOST:PORT.
        endpoint: String,
        /// `tcp`, `http` or `grpc`.
        protocol: String,
    },
    /// Node: originate many services as one committed change (all or nothing).
    RoutesAdvertiseBulk {
        /// The routes.
        routes: Vec<BulkRoute>,
    },
    /// Node: stop originating many services as one committed change (all or nothing).
    RoutesWithdrawBulk {
        /// Service names.
        services: Vec<String>,
    },
    /// Node: stop originating a service.
    RoutesWithdraw {
        /// Service name.
        service: String,
    },
    /// Node: this node, its peers and the sessions between them.
    Topology,
    /// Node: open a local TCP listener whose connections are carried to a service
    /// (kept across restarts).
    ConnectAdd {
        /// The service.
        service: String,
        /// Local address to listen on, HOST:PORT.
        listen: String,
    },
    /// Node: the connect listeners with their counters.
    ConnectList,
    /// Node: close connect listeners by listen address or by service.
    ConnectRemove {
        /// A listen address or a service name.
        target: String,
    },
    /// Node: re-read the config file and the peering files; apply peer changes.
    Reload,
    /// Authority: set which names a node of the org (or `*`, every node) may originate;
    /// no names removes the scope. Published in a new trust snapshot.
    NamesScope {
        /// A node id of the org, or `*`.
        node: String,
        /// Names or aggregates (`*.eu.acme`) of the org.
        names: Vec<String>,
    },
    /// Authority: let another org (or one of its nodes) originate names of this org; no
    /// names removes the delegation. Published in a new trust snapshot.
    NamesDelegate {
        /// An org id, or a node id of another org.
        grantee: String,
        /// Names or aggregates of this org.
        names: Vec<String>,
    },
    /// Authority: the name rules and partner CA pins.
    NamesList,
    /// Authority: pin a partner org's CA for every node of the org (PEM), or unpin it
    /// (`None`). Published in a new trust snapshot.
    /// Issue an operator token bound to a client certificate (authority).
    OperatorTokenCreate {
        /// The operator's name (the token's `sub`).
        name: String,
        /// Its role (Cedar's `principal.role`).
        role: String,
        /// Lifetime, seconds.
        ttl_secs: u64,
        /// The operator's client certificate, PEM.
        cert_pem: String,
    },
    /// Every operator token (never the tokens themselves).
    OperatorTokensList,
    /// Revoke an operator token; the next snapshot names it.
    OperatorTokenRevoke {
        /// Token id.
        jti: String,
    },
    /// Explain the decision the policies in force give (`trellis policy check`).
    PolicyCheck {
        /// `Operator::"NAME"`, `ServiceAccount::"ORG/NAME"` or `Node::"ORG/NAME"`.
        principal: String,
        /// An action of the schema (`connect_to_service`, `view_routes`, ...).
        action: String,
        /// `Daemon::"ORG"`, `Service::"NAME"`, `Route::"SERVICE"` or `Peer::"ORG/NAME"`.
        resource: String,
        /// An operator's role (default `admin`).
        #[serde(default)]
        role: Option<String>,
    },
    /// Re-read the policy file; a bad one is refused and the old policies stay.
    PolicyReload,
    PartnersCa {
        /// The partner org.
        org: String,
        /// Its CA certificate, PEM; `None` removes the pin.
        ca_pem: Option<String>,
    },
}

/// Error classes of the admin API; the CLI maps them to exit codes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a value is invalid.
    BadRequest,
    /// The thing named does not exist.
    NotFound,
    /// The request conflicts with the current state (already decided, already revoked).
    Conflict,
    /// The daemon failed (storage, signing); nothing was changed.
    Internal,
    /// The policies in force do not allow it (the message names the action).
    Forbidden,
}

/// An error answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Class of the error.
    pub kind: ErrorKind,
    /// One line for the operator.
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// One response line: `{"ok": ...}` or `{"error": {...}}`.
///
/// The result is kept as the JSON text the daemon encoded (no tree of values in between:
/// `routes list` of a large table is millions of nodes); it deserializes only with
/// `serde_json::from_str` or `from_slice`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Success with a result (a record or a list of records), encoded.
    Ok(Box<RawValue>),
    /// Failure.
    Error(ApiError),
}
