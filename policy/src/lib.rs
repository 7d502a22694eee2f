//! Pure trust logic of Trellis: signed envelopes and authority trust snapshots.
//!
//! The contract:
//!
//! - Nothing here does IO or reads a clock: time is a parameter, keys and stored versions
//!   are arguments, results are values. The daemon persists and applies what these
//!   functions accept.
//! - [`envelope`] frames a signed document (`SignedEnvelope` in `schemas/peering.capnp`)
//!   with a domain-separated signing input, so a signature over one kind of document can
//!   never be replayed as another (docs/protocol.md, "Signed documents").
//! - [`access`] holds the data plane's allow rules: which nodes may reach which services;
//!   [`access::AccessRules::to_cedar`] turns them into Cedar policies.
//! - [`jwt`] issues and verifies ES384 operator tokens bound to a client certificate.
//! - [`cedar`] decides every action with Cedar: the schema, the default policies,
//!   validated loading with `FILE:LINE:COL` errors, cached and explained decisions.
//! - [`snapshot`] builds, signs and verifies an org authority's trust snapshot: signature
//!   by the org CA key, expiry, and anti-rollback against the version the caller stored.

pub mod access;
pub mod cedar;
pub mod envelope;
pub mod jwt;
pub mod snapshot;

pub use envelope::{Envelope, EnvelopeError, Kind};
pub use snapshot::{DirectoryEntry, SnapshotError, TrustSnapshot};
