//! # trellis-routing: the pure routing core of Trellis
//!
//! Contract:
//! * **No IO, no clock, no randomness.** Time is a parameter (`now`), effects
//!   are returned through [`Router::poll_output`], and the next wake-up through
//!   [`Router::poll_timeout`]. The same inputs at the same instants give the
//!   same outputs, which is what the simulator in `testbed/` relies on.
//! * **Peers are not trusted.** Every name is validated by its type
//!   ([`ServiceName`], [`NodeId`]); batches, paths and manifests are checked
//!   against limits and refused with typed errors; a peer's protocol violation
//!   becomes [`Output::Disconnect`], never a panic.
//! * **Every path is kept.** The table keeps every valid path per service, so a
//!   withdrawal of the best path promotes the next one immediately.
//! * **Origins are authenticated per manifest, not per route.** Signature
//!   checks go through the injected [`Signatures`] trait, once per manifest.
//!
//! The decision process is in [`decision`], the import checks in `import.rs`,
//! the export rules in `export.rs`; docs/protocol.md describes them for people.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod convergence;
pub mod decision;
mod export;
mod import;
pub mod manifest;
pub mod name;
pub mod ownership;
pub mod policy;
pub mod route;
mod router;
pub mod scoring;
pub mod selection;
mod table;
pub mod update;

#[cfg(test)]
mod tests;

pub use manifest::{ManifestError, OriginManifest, Signatures, SignedManifest, VerifyError};
pub use name::{NameError, NodeId, OrgId, ServiceName};
pub use ownership::{NameRules, Refusal};
pub use policy::{AcceptAll, ImportDecision, RoutePolicy};
pub use route::{Attrs, PathHop, ProtocolHint, Relationship, Route, RouteError};
pub use router::{
    Best, DisconnectReason, Input, Output, PathView, PeerConfig, PeerError, Router, RouterConfig,
};
pub use update::{BatchLimits, Message, UpdateBatch, UpdateError};

/// Counters since the router started; the daemon exports them as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions that came up.
    pub sessions_established: u64,
    /// Update batches accepted for processing.
    pub updates_received: u64,
    /// Announcements in accepted batches.
    pub announcements_received: u64,
    /// Withdrawals in accepted batches.
    pub withdrawals_received: u64,
    /// Batches from unknown peers or peers whose session is down.
    pub updates_ignored: u64,
    /// Batches that broke a structural limit (the session was closed).
    pub batches_malformed: u64,
    /// Routes refused by limits or shape (treated as withdrawals).
    pub routes_rejected_malformed: u64,
    /// Routes refused as loops.
    pub routes_rejected_loop: u64,
    /// Routes refused by import policy.
    pub routes_rejected_policy: u64,
    /// Routes imported while no current manifest of their origin listed them.
    pub routes_origin_unverified: u64,
    /// Routes whose origin lists them but may not originate the name (another org's
    /// name without a delegation, outside the origin's scope, or no org at all);
    /// treated as withdrawn.
    pub routes_rejected_name_owner: u64,
    /// Sessions closed for exceeding max-routes.
    pub max_routes_exceeded: u64,
    /// Manifests verified and installed.
    pub manifests_accepted: u64,
    /// Manifests not newer than the one held (ignored).
    pub manifests_not_newer: u64,
    /// Manifests refused (bad signature, too large).
    pub manifests_rejected: u64,
    /// Stale paths removed after a graceful restart.
    pub stale_paths_purged: u64,
    /// Graceful-restart windows that ran out.
    pub graceful_restart_expired: u64,
    /// Update batches sent.
    pub batches_sent: u64,
    /// Announcements sent.
    pub announcements_sent: u64,
    /// Withdrawals sent.
    pub withdrawals_sent: u64,
    /// Manifests sent.
    pub manifests_sent: u64,
}
