//! Topologies for the simulator: which nodes exist, in which org, and which
//! links join them with which relationship.
//!
//! Generated shapes (all seeded, all connected):
//! * `line`, `ring`, `star`, `grid` (⌈√N⌉ columns), `random` (a random
//!   spanning tree plus N/2 extra links, average degree about 3), `mesh`
//!   (every pair of nodes linked: N(N−1)/2 links, at most [`MAX_MESH_NODES`]
//!   nodes);
//! * `multi-org`: nodes split over K orgs (default 3), a ring inside each
//!   org, and between orgs a provider tree (org i's provider is org (i−1)/2)
//!   plus peer links between sibling orgs, each relation realised by two
//!   border links when the orgs have two nodes or more.
//!
//! Hand-written topologies are read from TOML files by
//! [`crate::topology_file`].

use std::fmt;
use std::str::FromStr;

use petgraph::algo::{connected_components, dijkstra};
use petgraph::graph::{NodeIndex, UnGraph};
use trellis_routing::{NodeId, Relationship};

use crate::rng::Rng;

/// A link: `a` sees `b` as `role` (and `b` sees `a` as the mirror role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// One end (node index).
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// What `b` is to `a`.
    pub role: Relationship,
}

/// Nodes and links.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Node ids, by index.
    pub nodes: Vec<NodeId>,
    /// Links.
    pub links: Vec<LinkSpec>,
}

/// The generated shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A chain.
    Line,
    /// A cycle.
    Ring,
    /// Node 0 in the middle.
    Star,
    /// A square-ish grid.
    Grid,
    /// A seeded random connected graph.
    Random,
    /// A full mesh: every pair of nodes linked.
    Mesh,
    /// Several orgs with customer / peer / provider relations.
    MultiOrg,
}

impl FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "line" => Shape::Line,
            "ring" => Shape::Ring,
            "star" => Shape::Star,
            "grid" => Shape::Grid,
            "random" => Shape::Random,
            "mesh" | "full-mesh" => Shape::Mesh,
            "multi-org" => Shape::MultiOrg,
            _ => {
                return Err(format!(
                    "unknown topology {s:?} (line, ring, star, grid, random, mesh, multi-org)"
                ))
            }
        })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Line => "line",
            Shape::Ring => "ring",
            Shape::Star => "star",
            Shape::Grid => "grid",
            Shape::Random => "random",
            Shape::Mesh => "mesh",
            Shape::MultiOrg => "multi-org",
        })
    }
}

/// Most nodes a generated `mesh` may have (it has N(N−1)/2 links).
pub const MAX_MESH_NODES: usize = 1000;

/// The relationship `a` has with `b` seen from `b`'s side.
pub fn mirror(role: Relationship) -> Relationship {
    match role {
        Relationship::Customer => Relationship::Provider,
        Relationship::Provider => Relationship::Customer,
        r => r,
    }
}

fn org_name(i: usize) -> String {
    // org ids are DNS labels: a, b, ..., z, o26, o27, ...
    if i < 26 {
        ((b'a' + i as u8) as char).to_string()
    } else {
        format!("o{i}")
    }
}

fn node(org: usize, i: usize) -> NodeId {
    // Both parts are fixed-format labels, always valid.
    NodeId::new(&format!("{}/n{i}", org_name(org))).expect("generated node id is valid")
}

impl Topology {
    /// Builds a generated shape with `n` nodes (`orgs` is used by multi-org).
    pub fn generate(shape: Shape, n: usize, orgs: usize, seed: u64) -> Result<Self, String> {
        if n < 2 {
            return Err("a topology needs at least 2 nodes".into());
        }
        if shape == Shape::MultiOrg {
            return Self::multi_org(n, orgs.max(2), seed);
        }
        if shape == Shape::Mesh && n > MAX_MESH_NODES {
            return Err(format!(
                "a mesh of {n} nodes would have {} links; at most {MAX_MESH_NODES} nodes",
                n * (n - 1) / 2
            ));
        }
        let nodes = (0..n).map(|i| node(0, i)).collect();
        let mut t = Topology {
            nodes,
            links: Vec::new(),
        };
        let mut rng = Rng::new(seed);
        match shape {
            Shape::Line | Shape::Ring => {
                for i in 1..n {
                    t.internal(i - 1, i);
                }
                if shape == Shape::Ring && n > 2 {
                    t.internal(n - 1, 0);
                }
            }
            Shape::Star => (1..n).for_each(|i| t.internal(0, i)),
            Shape::Grid => {
                let w = (n as f64).sqrt().ceil() as usize;
                for i in 0..n {
                    if (i + 1) % w != 0 && i + 1 < n {
                        t.internal(i, i + 1);
                    }
                    if i + w < n {
                        t.internal(i, i + w);
                    }
                }
            }
            Shape::Random => t.random_links(0..n, n / 2, &mut rng),
            Shape::Mesh => {
                for a in 0..n {
                    for b in a + 1..n {
                        t.internal(a, b);
                    }
                }
            }
            Shape::MultiOrg => unreachable!("handled above"),
        }
        Ok(t)
    }

    /// The topology as an undirected graph: node `i` is `NodeIndex::new(i)`, each edge
    /// carries its link's role.
    pub fn graph(&self) -> UnGraph<(), Relationship> {
        let mut g = UnGraph::with_capacity(self.nodes.len(), self.links.len());
        for _ in &self.nodes {
            g.add_node(());
        }
        for l in &self.links {
            g.add_edge(NodeIndex::new(l.a), NodeIndex::new(l.b), l.role);
        }
        g
    }

    /// Hop distances from `start` (`usize::MAX` where unreachable).
    fn distances(&self, start: usize) -> Vec<usize> {
        let by_node = dijkstra(&self.graph(), NodeIndex::new(start), None, |_| 1usize);
        (0..self.nodes.len())
            .map(|i| {
                by_node
                    .get(&NodeIndex::new(i))
                    .copied()
                    .unwrap_or(usize::MAX)
            })
            .collect()
    }

    /// Whether every node reaches every other one over the links.
    pub fn connected(&self) -> bool {
        self.nodes.is_empty() || connected_components(&self.graph()) == 1
    }

    /// A lower bound of the diameter in hops by a double BFS sweep (exact on
    /// trees and lines, close on the other shapes).
    pub fn diameter_estimate(&self) -> usize {
        if self.nodes.is_empty() {
            return 0;
        }
        let far = |d: &[usize]| {
            d.iter()
                .enumerate()
                .filter(|(_, x)| **x != usize::MAX)
                .max_by_key(|(_, x)| **x)
                .map_or((0, 0), |(i, x)| (i, *x))
        };
        let (u, _) = far(&self.distances(0));
        far(&self.distances(u)).1
    }

    fn internal(&mut self, a: usize, b: usize) {
        self.links.push(LinkSpec {
            a,
            b,
            role: Relationship::Internal,
        });
    }

    fn has_link(&self, a: usize, b: usize) -> bool {
        self.links
            .iter()
            .any(|l| (l.a, l.b) == (a, b) || (l.a, l.b) == (b, a))
    }

    /// A random spanning tree over `range` plus `extra` random internal links.
    fn random_links(&mut self, range: std::ops::Range<usize>, extra: usize, rng: &mut Rng) {
        let start = range.start;
        let len = range.len();
        for i in 1..len {
            let j = rng.below(i as u64) as usize;
            self.internal(start + j, start + i);
        }
        let mut added = 0;
        let mut tries = 0;
        while added < extra && tries < extra * 20 && len > 2 {
            tries += 1;
            let a = start + rng.below(len as u64) as usize;
            let b = start + rng.below(len as u64) as usize;
            if a != b && !self.has_link(a, b) {
                self.internal(a, b);
                added += 1;
            }
        }
    }

    fn multi_org(n: usize, orgs: usize, seed: u64) -> Result<Self, String> {
        if n < orgs {
            return Err(format!("multi-org needs at least {orgs} nodes"));
        }
        let mut rng = Rng::new(seed);
        let mut t = Topology::default();
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); orgs];
        for i in 0..n {
            let org = i % orgs;
            members[org].push(t.nodes.len());
            t.nodes.push(node(org, i));
        }
        for m in &members {
            match m.len() {
                0 | 1 => {}
                2 => t.internal(m[0], m[1]),
                len => {
                    for k in 0..len {
                        t.internal(m[k], m[(k + 1) % len]);
                    }
                    // A few chords so an org survives one internal failure.
                    for _ in 0..len / 4 {
                        let a = m[rng.below(len as u64) as usize];
                        let b = m[rng.below(len as u64) as usize];
                        if a != b && !t.has_link(a, b) {
                            t.internal(a, b);
                        }
                    }
                }
            }
        }
        let border = |t: &mut Topology, x: usize, y: usize, role: Relationship| {
            for (&a, &b) in members[x].iter().zip(&members[y]).take(2) {
                t.links.push(LinkSpec { a, b, role });
            }
        };
        for child in 1..orgs {
            // The parent is the provider: it sees the child as a customer.
            border(&mut t, (child - 1) / 2, child, Relationship::Customer);
            let sibling = child + 1;
            if child % 2 == 1 && sibling < orgs {
                border(&mut t, child, sibling, Relationship::Peer);
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_topology_is_connected() {
        for shape in [
            "line",
            "ring",
            "star",
            "grid",
            "random",
            "mesh",
            "multi-org",
        ] {
            for n in [3, 7, 30] {
                let t = Topology::generate(shape.parse().unwrap(), n, 3, 9).unwrap();
                assert_eq!(t.nodes.len(), n);
                assert!(t.connected(), "{shape} with {n} nodes");
            }
        }
    }

    #[test]
    fn multi_org_links_carry_roles_only_across_orgs() {
        let t = Topology::generate(Shape::MultiOrg, 12, 3, 1).unwrap();
        for l in &t.links {
            let same = t.nodes[l.a].org_str() == t.nodes[l.b].org_str();
            assert_eq!(same, l.role == Relationship::Internal);
        }
        assert!(t.links.iter().any(|l| l.role == Relationship::Peer));
        assert!(t.links.iter().any(|l| l.role == Relationship::Customer));
    }

    #[test]
    fn a_mesh_links_every_pair_and_simulates_healthy() {
        for name in ["mesh", "full-mesh"] {
            assert_eq!(name.parse::<Shape>(), Ok(Shape::Mesh));
        }
        assert_eq!(Shape::Mesh.to_string(), "mesh");
        assert!(Shape::from_str("hypercube").unwrap_err().contains("mesh"));
        let t = Topology::generate(Shape::Mesh, 5, 1, 1).unwrap();
        assert_eq!(t.links.len(), 10);
        for a in 0..5 {
            for b in a + 1..5 {
                assert!(t.has_link(a, b), "{a}-{b}");
            }
        }
        assert!(t.links.iter().all(|l| l.role == Relationship::Internal));
        assert_eq!(t.diameter_estimate(), 1);
        assert!(Topology::generate(Shape::Mesh, MAX_MESH_NODES + 1, 1, 1).is_err());

        let r = crate::run::run(&crate::run::SimOptions {
            nodes: 5,
            shape: Shape::Mesh,
            orgs: 1,
            seed: 1,
            link: crate::sim::LinkParams::default(),
            config: crate::sim::SimConfig::default(),
            fail_node: Some(2),
            limit: std::time::Duration::from_secs(600),
        })
        .unwrap();
        assert_eq!((r.topology.as_str(), r.nodes, r.links), ("mesh", 5, 10));
        assert!(crate::run::healthy(&r), "{}", crate::run::summary(&r));
    }
}
