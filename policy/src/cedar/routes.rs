//! Cedar as the routing core's import and export filter ([`RoutePolicy`]): every route
//! imported from a peer asks `import_route`, every route exported to a peer asks
//! `export_route`, with the route's service, origin org, communities and path length.
//! The routing core asks only after its own rules (limits, loops, valley-free export)
//! have accepted the route.

use std::sync::Arc;

use trellis_routing::policy::{ImportDecision, RoutePolicy};
use trellis_routing::{Attrs, NodeId, Relationship, ServiceName};

use super::{Act, Resource, Shared, Subject};

/// The routing core's filter, deciding with the policies in force.
#[derive(Debug, Clone)]
pub struct CedarRoutes {
    policies: Arc<Shared>,
}

impl CedarRoutes {
    /// A filter over `policies` (a reload takes effect for the routes decided after it).
    pub fn new(policies: Arc<Shared>) -> Self {
        Self { policies }
    }

    fn allows(&self, act: Act, peer: &NodeId, service: &ServiceName, attrs: &Attrs) -> bool {
        let route = Resource::Route {
            service: service.as_str().to_owned(),
            origin_org: attrs.origin.org().as_str().to_owned(),
            communities: attrs.communities.iter().map(|c| c.to_string()).collect(),
            path_len: u32::try_from(attrs.path.len()).unwrap_or(u32::MAX),
        };
        let subject = Subject::Node {
            id: peer.as_str().to_owned(),
        };
        self.policies.decide(&subject, act, &route).allowed
    }
}

impl RoutePolicy for CedarRoutes {
    fn import(
        &self,
        peer: &NodeId,
        _role: Relationship,
        service: &ServiceName,
        attrs: &Attrs,
    ) -> ImportDecision {
        if self.allows(Act::ImportRoute, peer, service, attrs) {
            ImportDecision::Accept { local_pref: None }
        } else {
            ImportDecision::Reject
        }
    }

    fn export(
        &self,
        peer: &NodeId,
        _role: Relationship,
        service: &ServiceName,
        attrs: &Attrs,
    ) -> bool {
        self.allows(Act::ExportRoute, peer, service, attrs)
    }
}
