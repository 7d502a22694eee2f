//! Forwarding checks: where does a packet for a service go from a node?

use trellis_routing::ServiceName;

use super::Sim;

/// The fate of traffic for one service sent from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// It reaches a node that originates the service, after `hops` hops.
    Delivered {
        /// Hops taken.
        hops: usize,
    },
    /// The first node has no route: traffic is refused at the source.
    NoRoute,
    /// A node on the way has no route, or forwards over a dead link or to a
    /// dead node: traffic is lost in the network.
    BlackHole,
    /// Traffic comes back to a node it already passed.
    Loop,
}

/// Follows next hops from `from` by each node's own table (hop by hop, as
/// the data plane does), resolving by longest suffix at every hop.
pub fn walk(sim: &Sim, from: usize, service: &ServiceName) -> Walk {
    trace(sim, from, service, &mut Vec::new())
}

/// Like [`walk`], and leaves the nodes passed (in order) in `chain`.
pub fn trace(sim: &Sim, from: usize, service: &ServiceName, chain: &mut Vec<usize>) -> Walk {
    chain.clear();
    let mut at = from;
    let mut hops = 0;
    loop {
        if chain.contains(&at) {
            return Walk::Loop;
        }
        chain.push(at);
        let Some((_, best)) = sim.router(at).resolve(service) else {
            return if hops == 0 {
                Walk::NoRoute
            } else {
                Walk::BlackHole
            };
        };
        let Some(next) = best.next_hop else {
            return Walk::Delivered { hops };
        };
        let Some(next) = sim.index_of(&next) else {
            return Walk::BlackHole;
        };
        if !sim.link_up(at, next) {
            return Walk::BlackHole;
        }
        at = next;
        hops += 1;
    }
}
