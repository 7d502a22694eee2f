//! A best route as the node's read model keeps it ([`super::view`]).
//!
//! The view used to hold each best route as the [`RouteInfo`] record `routes list`
//! prints: a dozen owned strings per route, about half of what a node spent per route
//! on a full table (docs/performance.md). It now holds the router's own shared values
//! (the next hop's id, the attributes behind their `Arc`) and builds the record when
//! asked, so a route costs the view tens of bytes.

use std::sync::Arc;

use trellis_routing::{Attrs, NodeId, PathHop, ServiceName};

use crate::admin::RouteInfo;

use super::route_store::protocol_name;

/// One best route, keyed by its service in the view.
#[derive(Clone, Debug)]
pub struct BestRoute {
    /// Next hop; `None` when this node originates it.
    pub next_hop: Option<NodeId>,
    /// The attributes as the router holds them.
    pub attrs: Arc<Attrs>,
    /// Metric including the link cost.
    pub metric: u64,
    /// The origin's manifest verified up to a CA trusted for its org.
    pub verified: bool,
}

/// How `routes list|show` name a path's origin check.
pub fn origin_check(valid: bool, verified: bool) -> &'static str {
    match (valid, verified) {
        (false, _) => "invalid",
        (true, false) => "unverified",
        (true, true) => "valid",
    }
}

/// A path's hops as names, nearest first.
pub fn hop_names(attrs: &Attrs) -> Vec<String> {
    attrs
        .path
        .iter()
        .map(|h| match h {
            PathHop::Node(n) => n.as_str().to_owned(),
            PathHop::Org(o) => o.as_str().to_owned(),
        })
        .collect()
}

impl BestRoute {
    /// The record `routes list` shows; `endpoint` is the local endpoint when this node
    /// originates the service.
    pub fn info(&self, service: &ServiceName, endpoint: Option<&str>) -> RouteInfo {
        RouteInfo {
            service: service.as_str().to_owned(),
            next_hop: self.next_hop.as_ref().map(|n| n.as_str().to_owned()),
            path: hop_names(&self.attrs),
            metric: self.metric,
            origin: self.attrs.origin.as_str().to_owned(),
            protocol: protocol_name(self.attrs.protocol).into(),
            endpoint: if self.next_hop.is_none() {
                endpoint.map(str::to_owned)
            } else {
                None
            },
            origin_check: origin_check(true, self.verified).into(),
            learned_from: self.attrs.learned_from.name().into(),
        }
    }
}
