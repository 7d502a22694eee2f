//! What the data plane reads from the node: the best route of a service (from the read
//! model the routing loop keeps current) and revocations (from the trust store).

use std::sync::Arc;

use trellis_routing::{NodeId, Relationship, ServiceName};

use super::trust::TrustStore;
use super::view::View;
use crate::dataplane::{Hop, Route, Table};

/// The node's table as the data plane sees it.
pub(super) struct NodeTable {
    pub view: Arc<View>,
    pub trust: Arc<TrustStore>,
}

impl Table for NodeTable {
    fn resolve(&self, service: &ServiceName) -> Option<Route> {
        let state = self.view.read();
        let route = service.lookup_keys().find_map(|k| state.routes.get(&k))?;
        let hop = match &route.next_hop {
            Some(next) => NodeId::new(next).ok().map(Hop::Via),
            // Only concrete names are originated with an endpoint.
            None => route
                .endpoint
                .as_deref()
                .and_then(|e| e.parse().ok())
                .map(Hop::Local),
        }?;
        Some(Route {
            hop,
            learned_from: Relationship::from_name(&route.learned_from)?,
        })
    }

    fn relationship(&self, peer: &NodeId) -> Option<Relationship> {
        let state = self.view.read();
        Relationship::from_name(&state.peers.get(peer.as_str())?.role)
    }

    fn revoked(&self, node: &NodeId) -> bool {
        self.trust.is_revoked(node, &[])
    }
}
