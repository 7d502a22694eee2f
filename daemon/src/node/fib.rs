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
        let (key, route) = service
            .lookup_keys()
            .find_map(|k| state.routes.get_key_value(k.as_str()))?;
        let hop = match &route.next_hop {
            Some(next) => Hop::Via(next.clone()),
            // Only concrete names are originated with an endpoint.
            None => state
                .originated
                .get(key.as_str())
                .and_then(|(e, _)| e.parse().ok())
                .map(Hop::Local)?,
        };
        Some(Route {
            hop,
            learned_from: route.attrs.learned_from,
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
