//! Forwarding checks: where does a packet for a service go from a node?

use std::collections::HashMap;

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
    loop {
        if chain.contains(&at) {
            return Walk::Loop;
        }
        chain.push(at);
        let hops = chain.len() - 1;
        match hop(sim, at, service) {
            Hop::Next(next) => at = next,
            Hop::Origin => return Walk::Delivered { hops },
            Hop::NoRoute if hops == 0 => return Walk::NoRoute,
            Hop::NoRoute | Hop::Dead => return Walk::BlackHole,
        }
    }
}

/// How one hop of a walk ends, or where it goes next.
enum Hop {
    /// The node has no route.
    NoRoute,
    /// The node originates the service.
    Origin,
    /// It forwards over a dead link or to an unknown or dead node.
    Dead,
    /// It forwards to this node.
    Next(usize),
}

fn hop(sim: &Sim, at: usize, service: &ServiceName) -> Hop {
    let Some((_, best)) = sim.router(at).resolve(service) else {
        return Hop::NoRoute;
    };
    let Some(next) = best.next_hop else {
        return Hop::Origin;
    };
    match sim.index_of(&next) {
        Some(next) if sim.link_up(at, next) => Hop::Next(next),
        _ => Hop::Dead,
    }
}

/// The [`walk`] of every node in `starts` and of every node their traffic
/// passes, at this instant, into `fates`. Walks stop at a node already in
/// `fates` and take its fate (traffic that reaches a node with no route is
/// black-holed there), so classifying every node of a network costs one hop
/// per node rather than one walk per node. The result for each node is the
/// one [`walk`] would give.
pub(crate) fn classify(
    sim: &Sim,
    service: &ServiceName,
    starts: impl IntoIterator<Item = usize>,
    fates: &mut HashMap<usize, Walk>,
    chain: &mut Vec<usize>,
) {
    for start in starts {
        if fates.contains_key(&start) {
            continue;
        }
        chain.clear();
        let mut at = start;
        // The fate of traffic that arrives at the end of the chain from the node before.
        let end = loop {
            if let Some(known) = fates.get(&at) {
                break match *known {
                    Walk::NoRoute => Walk::BlackHole,
                    Walk::Delivered { hops } => Walk::Delivered { hops: hops + 1 },
                    other => other,
                };
            }
            if chain.contains(&at) {
                break Walk::Loop;
            }
            chain.push(at);
            match hop(sim, at, service) {
                Hop::Next(next) => at = next,
                Hop::Origin => {
                    fates.insert(at, Walk::Delivered { hops: 0 });
                    chain.pop();
                    break Walk::Delivered { hops: 1 };
                }
                Hop::NoRoute => {
                    fates.insert(at, Walk::NoRoute);
                    chain.pop();
                    break Walk::BlackHole;
                }
                Hop::Dead => break Walk::BlackHole,
            }
        };
        // Every node left on the chain shares the end's fate (a node whose
        // traffic runs into a loop loops, whether or not it is on the cycle).
        let len = chain.len();
        for (i, node) in chain.iter().enumerate() {
            let fate = match end {
                Walk::Delivered { hops } => Walk::Delivered {
                    hops: hops + (len - 1 - i),
                },
                other => other,
            };
            fates.insert(*node, fate);
        }
    }
}
