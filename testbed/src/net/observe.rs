//! Looking at a running network through each node's admin socket: tables, forwarding
//! walks (loops and black holes), counters and memory.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use trellis_daemon::admin::{client, NodeStatus, PeerInfo, Request, RouteInfo};

use super::state::{NodeState, State};

/// The admin socket of a node.
pub fn socket(node: &NodeState) -> PathBuf {
    node.dir.join("admin.sock")
}

/// A node's best routes; `None` if it does not answer.
pub fn routes(node: &NodeState) -> Option<Vec<RouteInfo>> {
    client::call_as(&socket(node), &Request::RoutesList).ok()
}

/// A node's status; `None` if it does not answer.
pub fn status(node: &NodeState) -> Option<NodeStatus> {
    client::call_as(&socket(node), &Request::Status).ok()
}

/// A node's peers; `None` if it does not answer.
pub fn peers(node: &NodeState) -> Option<Vec<PeerInfo>> {
    client::call_as(&socket(node), &Request::PeersList).ok()
}

/// Resident memory of a process, KiB (Linux `/proc`).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every node's forwarding table: service → next hop (`None`: delivered locally), and
/// the links that carry traffic at the time of the sample. A node that does not answer
/// has no table.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    /// By node index.
    pub hops: Vec<Option<HashMap<String, Option<String>>>>,
    /// Links (lower index first) that exist and are not cut.
    pub live: HashSet<(usize, usize)>,
}

/// Reads every node's table; `cut(a, b)` says whether the link between nodes `a` and `b`
/// is cut right now (asked once per link, before the tables are read).
pub fn tables(state: &State, cut: impl Fn(usize, usize) -> bool) -> Tables {
    let live = state
        .links
        .iter()
        .filter(|l| !cut(l.a, l.b))
        .map(|l| (l.a.min(l.b), l.a.max(l.b)))
        .collect();
    Tables {
        hops: state
            .nodes
            .iter()
            .map(|n| {
                n.pid?;
                routes(n).map(|rs| rs.into_iter().map(|r| (r.service, r.next_hop)).collect())
            })
            .collect(),
        live,
    }
}

/// What is wrong with the forwarding state.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Check {
    /// (node, service) pairs expected but not delivered: the walk ended at a node
    /// without a route, at a node that is down, or at a next hop over a link that is
    /// cut or does not exist (a black hole).
    pub black_holes: Vec<(String, String)>,
    /// (node, service) pairs whose walk came back to a node it had visited.
    pub loops: Vec<(String, String)>,
    /// (node, service) pairs that still have a route although they should not.
    pub unexpected: Vec<(String, String)>,
}

impl Check {
    /// Nothing wrong.
    pub fn clean(&self) -> bool {
        self.black_holes.is_empty() && self.loops.is_empty() && self.unexpected.is_empty()
    }
}

enum Walk {
    Delivered,
    BlackHole,
    Loop,
}

fn walk(state: &State, t: &Tables, start: usize, service: &str) -> Walk {
    let index: HashMap<&str, usize> = state
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut at = start;
    loop {
        if !seen.insert(at) {
            return Walk::Loop;
        }
        let Some(Some(table)) = t.hops.get(at) else {
            return Walk::BlackHole;
        };
        match table.get(service) {
            None => return Walk::BlackHole,
            Some(None) => return Walk::Delivered,
            Some(Some(next)) => match index.get(next.as_str()) {
                // A stale route over a cut link delivers nothing.
                Some(&j) if t.live.contains(&(at.min(j), at.max(j))) => at = j,
                _ => return Walk::BlackHole,
            },
        }
    }
}

/// Checks that every `expected` (node, service) pair is delivered, no walk loops, and
/// none of the `absent` pairs has a route.
pub fn check(
    state: &State,
    t: &Tables,
    expected: &[(usize, String)],
    absent: &[(usize, String)],
) -> Check {
    let mut out = Check::default();
    for (i, service) in expected {
        let name = (state.nodes[*i].id.clone(), service.clone());
        match walk(state, t, *i, service) {
            Walk::Delivered => {}
            Walk::BlackHole => out.black_holes.push(name),
            Walk::Loop => out.loops.push(name),
        }
    }
    for (i, service) in absent {
        let has = t
            .hops
            .get(*i)
            .and_then(Option::as_ref)
            .is_some_and(|m| m.contains_key(service));
        if has {
            if let Walk::Loop = walk(state, t, *i, service) {
                out.loops
                    .push((state.nodes[*i].id.clone(), service.clone()));
            }
            out.unexpected
                .push((state.nodes[*i].id.clone(), service.clone()));
        }
    }
    out
}

/// The service node `i` originates in scenarios: `NAME.ORG`.
pub fn service_of(state: &State, i: usize) -> String {
    let id = &state.nodes[i].id;
    let (org, name) = id.split_once('/').unwrap_or((id.as_str(), "node"));
    format!("{name}.{org}")
}

/// A counter of every running node, by (node index, pid): one entry per daemon
/// incarnation. Nodes that do not answer are left out.
pub fn counters(state: &State, name: &str) -> Vec<((usize, u32), u64)> {
    state
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let pid = n.pid?;
            let s = status(n)?;
            Some(((i, pid), s.counters.get(name).copied().unwrap_or(0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::{LinkState, NodeState};

    fn line3() -> State {
        let node = |id: &str| NodeState {
            id: id.into(),
            dir: PathBuf::new(),
            port: 0,
            pid: Some(1),
        };
        let link = |a, b| LinkState {
            a,
            b,
            relay_ab: 0,
            relay_ba: 0,
            impairment: Default::default(),
        };
        State {
            dir: PathBuf::new(),
            authorities: Vec::new(),
            nodes: vec![node("a/n0"), node("a/n1"), node("a/n2")],
            links: vec![link(0, 1), link(1, 2)],
            emulator_pid: None,
        }
    }

    fn hop(to: Option<&str>) -> Option<HashMap<String, Option<String>>> {
        Some(HashMap::from([("s".to_owned(), to.map(str::to_owned))]))
    }

    #[test]
    fn a_next_hop_over_a_cut_link_is_a_black_hole() {
        let state = line3();
        let mut t = Tables {
            hops: vec![hop(Some("a/n1")), hop(Some("a/n2")), hop(None)],
            live: HashSet::from([(0, 1), (1, 2)]),
        };
        let expected = [(0, "s".to_owned())];
        assert!(check(&state, &t, &expected, &[]).clean());
        t.live.remove(&(1, 2));
        let c = check(&state, &t, &expected, &[]);
        assert_eq!(c.black_holes, vec![("a/n0".to_owned(), "s".to_owned())]);
    }

    #[test]
    fn a_next_hop_without_a_link_is_a_black_hole() {
        let state = line3();
        let t = Tables {
            hops: vec![hop(Some("a/n2")), hop(None), hop(None)],
            live: HashSet::from([(0, 1), (1, 2)]),
        };
        let c = check(&state, &t, &[(0, "s".to_owned())], &[]);
        assert_eq!(c.black_holes.len(), 1);
    }
}
