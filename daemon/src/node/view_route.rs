//! A best route as the node's read model keeps it ([`super::view`]).
//!
//! The view used to hold each best route as the [`RouteInfo`] record `routes list`
//! prints: a dozen owned strings per route, about half of what a node spent per route
//! on a full table (docs/performance.md). It now holds the router's own shared values
//! (the next hop's id, the attributes behind their `Arc`) and builds the record when
//! asked, so a route costs the view tens of bytes.

use std::sync::Arc;

use serde::Serialize;
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

/// One route of a listing: the view's values, taken under the lock by `Arc` clones.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The service.
    pub service: ServiceName,
    /// Its best route.
    pub route: BestRoute,
    /// The local endpoint, when this node originates it.
    pub endpoint: Option<String>,
}

/// The JSON of a [`RouteInfo`], borrowed from a [`Listed`]: same fields, same order.
#[derive(Serialize)]
struct Record<'a> {
    service: &'a str,
    next_hop: Option<&'a str>,
    path: Vec<&'a str>,
    metric: u64,
    origin: &'a str,
    protocol: &'static str,
    endpoint: Option<&'a str>,
    origin_check: &'static str,
    learned_from: &'static str,
}

impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = &self.route;
        Record {
            service: self.service.as_str(),
            next_hop: r.next_hop.as_ref().map(NodeId::as_str),
            path: r
                .attrs
                .path
                .iter()
                .map(|h| match h {
                    PathHop::Node(n) => n.as_str(),
                    PathHop::Org(o) => o.as_str(),
                })
                .collect(),
            metric: r.metric,
            origin: r.attrs.origin.as_str(),
            protocol: protocol_name(r.attrs.protocol),
            endpoint: if r.next_hop.is_none() {
                self.endpoint.as_deref()
            } else {
                None
            },
            origin_check: origin_check(true, r.verified),
            learned_from: r.attrs.learned_from.name(),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_routing::{ProtocolHint, Relationship};

    fn listed(next_hop: Option<&str>, endpoint: Option<&str>) -> Listed {
        let origin = NodeId::new("acme/b").expect("id");
        let attrs = Attrs {
            origin: origin.clone(),
            origin_seq: 3,
            path: vec![PathHop::Node(origin)],
            metric: 10,
            communities: Vec::new(),
            protocol: ProtocolHint::Http,
            learned_from: Relationship::Internal,
        };
        Listed {
            service: ServiceName::new("books.acme").expect("name"),
            route: BestRoute {
                next_hop: next_hop.map(|n| NodeId::new(n).expect("id")),
                attrs: Arc::new(attrs),
                metric: 20,
                verified: true,
            },
            endpoint: endpoint.map(str::to_owned),
        }
    }

    #[test]
    fn a_listing_encodes_exactly_as_the_records() {
        for (hop, endpoint) in [
            (Some("acme/b"), Some("127.0.0.1:9")),
            (None, Some("127.0.0.1:9")),
            (None, None),
        ] {
            let l = listed(hop, endpoint);
            let record = l.route.info(&l.service, l.endpoint.as_deref());
            assert_eq!(
                serde_json::to_string(&l).expect("listed"),
                serde_json::to_string(&record).expect("record")
            );
        }
    }
}
