//! The policy hook: import and export decisions per route.
//!
//! The core asks a [`RoutePolicy`] about every announcement it imports and
//! every route it exports. The default accepts everything; the `policy`
//! crate plugs Cedar in here. Policy is consulted after the protocol rules
//! (limits, loops, valley-free export), never instead of them.

use crate::name::{NodeId, ServiceName};
use crate::route::{Attrs, Relationship};

/// What import policy decided for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportDecision {
    /// Keep it; `local_pref` overrides the peer's default when set.
    Accept {
        /// Local preference to give the route.
        local_pref: Option<u32>,
    },
    /// Drop it (treated as a withdrawal of the peer's path).
    Reject,
}

/// Import and export filters.
pub trait RoutePolicy {
    /// Whether to import `service` with `attrs` from `peer` (whose role is `role`).
    fn import(
        &self,
        peer: &NodeId,
        role: Relationship,
        service: &ServiceName,
        attrs: &Attrs,
    ) -> ImportDecision;
    /// Whether to export `service` with `attrs` (as they would be sent) to `peer`.
    fn export(
        &self,
        peer: &NodeId,
        role: Relationship,
        service: &ServiceName,
        attrs: &Attrs,
    ) -> bool;
}

/// Accepts every route with the peer's default preference.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl RoutePolicy for AcceptAll {
    fn import(&self, _: &NodeId, _: Relationship, _: &ServiceName, _: &Attrs) -> ImportDecision {
        ImportDecision::Accept { local_pref: None }
    }
    fn export(&self, _: &NodeId, _: Relationship, _: &ServiceName, _: &Attrs) -> bool {
        true
    }
}
