//! Which nodes should hold a route to a service: reachability over the surviving graph
//! under the export rules of docs/protocol.md ("Export").
//!
//! A route moves from its origin towards the nodes that learn it. Inside one org it
//! may take any path. Between orgs it follows valley-free export (RFC 9234): a route
//! that entered an org from a customer (or was originated there) is exported to every
//! neighbour org; one that entered from a peer or a provider only to customers. So, in
//! the direction the route travels, a valid path is uphill steps (customer to provider),
//! then at most one peer step, then downhill steps (provider to customer). A route never
//! enters an org already on its path, its origin's org included (loop prevention), so an
//! org cut in two by a failure is not rejoined through another org.
//!
//! Pure: no IO. The scenarios feed it the nodes that run and the links that are not cut;
//! the graph is a petgraph `DiGraph` with both directions of each link, and the search
//! walks it with the route's export state (phase, orgs on the path).

use std::collections::HashSet;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use trellis_routing::Relationship;

use crate::topology::mirror;

/// A link of the graph: `role` is what `b` is to `a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// One end (node index).
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// What `b` is to `a` (`Internal` inside one org).
    pub role: Relationship,
}

/// The graph a route travels: each node's org, which nodes run, which links carry
/// traffic.
#[derive(Clone, Debug)]
pub struct Graph<'a> {
    /// Org index of each node.
    pub org: &'a [usize],
    /// Whether each node runs (and is not excluded, e.g. revoked).
    pub up: &'a [bool],
    /// Links that are not cut.
    pub edges: &'a [Edge],
}

/// How far a route has come: still allowed to go anywhere, or only down to customers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// Originated here or learned from a customer: exported to everyone.
    Up,
    /// Learned from a peer or a provider: exported only to customers.
    Down,
}

impl Graph<'_> {
    /// Which nodes learn a route originated at `origin` (`origin` itself included when
    /// it is up); all false when `origin` is down.
    pub fn reach(&self, origin: usize) -> Vec<bool> {
        let n = self.up.len();
        let mut reached = vec![false; n];
        if !self.up.get(origin).copied().unwrap_or(false) {
            return reached;
        }
        // Both directions of every live link; an edge's weight is what its target is to
        // its source.
        let mut g: DiGraph<(), Relationship> = DiGraph::with_capacity(n, 2 * self.edges.len());
        for _ in 0..n {
            g.add_node(());
        }
        for e in self.edges {
            if e.a < n && e.b < n && self.up[e.a] && self.up[e.b] {
                g.add_edge(NodeIndex::new(e.a), NodeIndex::new(e.b), e.role);
                g.add_edge(NodeIndex::new(e.b), NodeIndex::new(e.a), mirror(e.role));
            }
        }
        // State: (node, phase, orgs on the path). Orgs are few; the path set keeps the
        // search exact where an org is split.
        type State = (usize, Phase, Vec<usize>);
        let start: State = (origin, Phase::Up, vec![self.org[origin]]);
        let mut seen: HashSet<State> = HashSet::from([start.clone()]);
        let mut stack = vec![start];
        while let Some((u, phase, orgs)) = stack.pop() {
            reached[u] = true;
            for edge in g.edges(NodeIndex::new(u)) {
                let (v, role) = (edge.target().index(), *edge.weight());
                let next = if self.org[v] == self.org[u] {
                    Some((phase, orgs.clone()))
                } else if orgs.contains(&self.org[v]) {
                    None
                } else {
                    // `role` is what v is to u; the route goes from u to v.
                    let phase = match (phase, role) {
                        (Phase::Up, Relationship::Provider) => Some(Phase::Up),
                        (Phase::Up, Relationship::Peer) => Some(Phase::Down),
                        (_, Relationship::Customer) => Some(Phase::Down),
                        _ => None,
                    };
                    phase.map(|p| {
                        let mut orgs = orgs.clone();
                        orgs.push(self.org[v]);
                        orgs.sort_unstable();
                        (p, orgs)
                    })
                };
                if let Some((p, orgs)) = next {
                    let state = (v, p, orgs);
                    if seen.insert(state.clone()) {
                        stack.push(state);
                    }
                }
            }
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Relationship::{Customer, Internal, Peer, Provider};

    fn e(a: usize, b: usize, role: Relationship) -> Edge {
        Edge { a, b, role }
    }

    fn reach(org: &[usize], edges: &[Edge], origin: usize) -> Vec<bool> {
        let up = vec![true; org.len()];
        Graph {
            org,
            up: &up,
            edges,
        }
        .reach(origin)
    }

    /// testbed/topologies/three-orgs.toml: acme 0-2 (ring), globex 3-5 (line
    /// gw-west 3 - core 4 - gw-east 5), initech 6-8 (ring); acme/edge-1 (0) is a
    /// customer of globex/gw-west (3), acme/edge-2 (1) of initech/edge-1 (6);
    /// globex/gw-east (5) peers with initech/edge-2 (7).
    fn three_orgs() -> (Vec<usize>, Vec<Edge>) {
        let org = vec![0, 0, 0, 1, 1, 1, 2, 2, 2];
        let edges = vec![
            e(0, 1, Internal),
            e(1, 2, Internal),
            e(2, 0, Internal),
            e(3, 4, Internal),
            e(4, 5, Internal),
            e(6, 7, Internal),
            e(7, 8, Internal),
            e(8, 6, Internal),
            e(0, 3, Provider),
            e(1, 6, Provider),
            e(5, 7, Peer),
        ];
        (org, edges)
    }

    #[test]
    fn in_the_three_org_file_every_node_reaches_every_service() {
        let (org, edges) = three_orgs();
        for o in 0..org.len() {
            assert!(reach(&org, &edges, o).iter().all(|r| *r), "origin {o}");
        }
    }

    #[test]
    fn a_split_org_is_not_rejoined_through_a_customer_or_a_peer() {
        let (org, edges) = three_orgs();
        let mut up = vec![true; org.len()];
        up[4] = false; // globex/core
        let g = Graph {
            org: &org,
            up: &up,
            edges: &edges,
        };
        // gw-east's service would reach gw-west only through initech (peer) and acme
        // (down, then up): a valley, and globex again.
        assert!(!g.reach(5)[3]);
        // initech's services reach gw-west only over acme, a customer of both: no.
        assert!(!g.reach(8)[3]);
        // acme's go up to both providers.
        assert!(g.reach(2)[3] && g.reach(2)[5]);
        // gw-west's go down to acme and stop there: acme sends its providers only its
        // own routes.
        let from_west = g.reach(3);
        assert!(from_west[0] && from_west[1] && from_west[2]);
        assert!(!from_west[5] && !from_west[6]);
        assert!(
            !g.reach(4).iter().any(|r| *r),
            "a dead origin reaches nobody"
        );
    }

    #[test]
    fn a_route_climbs_to_a_common_provider_and_comes_down() {
        // 0 and 1 are customers of 2.
        let org = [0, 1, 2];
        let edges = [e(0, 2, Provider), e(2, 1, Customer)];
        assert_eq!(reach(&org, &edges, 0), vec![true, true, true]);
    }

    #[test]
    fn no_valley_between_two_providers_of_one_customer() {
        // 1 and 2 are providers of 0.
        let org = [0, 1, 2];
        let edges = [e(0, 1, Provider), e(0, 2, Provider)];
        assert_eq!(reach(&org, &edges, 1), vec![true, true, false]);
        assert_eq!(reach(&org, &edges, 0), vec![true, true, true]);
    }

    #[test]
    fn at_most_one_peer_step() {
        // 0 peers 1 peers 2; 3 is a customer of 2.
        let org = [0, 1, 2, 3];
        let edges = [e(0, 1, Peer), e(1, 2, Peer), e(2, 3, Customer)];
        assert_eq!(reach(&org, &edges, 0), vec![true, true, false, false]);
        assert_eq!(reach(&org, &edges, 3), vec![false, true, true, true]);
    }

    #[test]
    fn up_then_peer_then_down() {
        // 0 customer of 1; 1 peers 2; 2 provider of 3.
        let org = [0, 1, 2, 3];
        let edges = [e(0, 1, Provider), e(1, 2, Peer), e(3, 2, Provider)];
        assert!(reach(&org, &edges, 0).iter().all(|r| *r));
        assert!(reach(&org, &edges, 3).iter().all(|r| *r));
        // 2's own route: down to 3, over the peer to 1, down to 0.
        assert!(reach(&org, &edges, 2).iter().all(|r| *r));
    }

    #[test]
    fn inside_one_org_any_surviving_path_is_fine() {
        let org = [0, 0, 0, 0];
        let edges = [e(0, 1, Internal), e(1, 2, Internal), e(2, 3, Internal)];
        let up = [true, true, false, true];
        let g = Graph {
            org: &org,
            up: &up,
            edges: &edges,
        };
        assert_eq!(g.reach(0), vec![true, true, false, false]);
        let cut = [e(0, 1, Internal), e(2, 3, Internal)];
        assert_eq!(reach(&org, &cut, 3), vec![false, false, true, true]);
    }
}
