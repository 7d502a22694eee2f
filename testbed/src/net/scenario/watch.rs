//! A scenario's view of its network while it runs: what should hold (from the topology
//! graph under valley-free export, [`crate::net::reach`]), forwarding samples measured
//! from a fault on, invariants, and counters per daemon incarnation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trellis_daemon::admin::{client, Request};

use super::{Invariant, Phase, PERSISTENT_LOOP};
use crate::net::cluster::Cluster;
use crate::net::observe::{self, Check};
use crate::net::reach::{Edge, Graph};
use crate::topology_file::TopologyFile;

/// How long a scenario waits for an expected state.
pub const LIMIT: Duration = Duration::from_secs(60);

/// (node index, service) pairs.
pub type Pairs = Vec<(usize, String)>;

/// One measurement window: from a fault (or a heal) on.
pub struct Watch {
    start: Instant,
    last_hole: Option<Duration>,
    samples: usize,
    hole_samples: usize,
    since: HashMap<(String, String), Instant>,
    /// (node, service) pairs that kept looping for [`PERSISTENT_LOOP`].
    pub persistent: Vec<(String, String)>,
    /// The latest sample's findings.
    pub last: Check,
}

impl Watch {
    /// A window starting now: call it at the moment of the fault.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
            last_hole: None,
            samples: 0,
            hole_samples: 0,
            since: HashMap::new(),
            persistent: Vec::new(),
            last: Check::default(),
        }
    }

    /// Time since the window started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The phase record of this window.
    pub fn phase(&self, name: &str, reached: Option<Duration>) -> Phase {
        Phase {
            name: name.into(),
            reached_ms: super::ms(reached),
            black_hole_ms: super::ms(self.last_hole),
            black_hole_samples: self.hole_samples,
            samples: self.samples,
            persistent_loops: self.persistent.clone(),
        }
    }

    /// A short account of what was still wrong at the last sample.
    pub fn problems(&self) -> String {
        let show = |what: &str, v: &[(String, String)]| {
            if v.is_empty() {
                return String::new();
            }
            let first: Vec<String> = v.iter().take(3).map(|(n, s)| format!("{n}→{s}")).collect();
            format!("{} {what} (e.g. {}); ", v.len(), first.join(", "))
        };
        let c = &self.last;
        format!(
            "{}{}{}",
            show("black holes", &c.black_holes),
            show("loops", &c.loops),
            show("routes that should be gone", &c.unexpected)
        )
        .trim_end_matches("; ")
        .to_owned()
    }
}

/// The running scenario.
pub struct Run {
    /// The network.
    pub cluster: Cluster,
    /// Invariants checked so far.
    pub invariants: Vec<Invariant>,
    /// Phases measured so far.
    pub phases: Vec<Phase>,
    /// Longest time one (node, service) was seen looping in consecutive samples.
    pub longest_loop: Duration,
    /// Slowest sampling round (reading every node's table).
    pub slowest_sample: Duration,
    /// Named timings of the run, ms: `converge`, `detect`, `reroute`, `heal`, `revoke`.
    pub timing: std::collections::BTreeMap<String, u64>,
    /// Named counts (`jitter_path_changes`, ...).
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Org index of each node.
    org: Vec<usize>,
    /// The graph's links, parallel to `cluster.state.links`.
    edges: Vec<Edge>,
    /// Last `router_batches_sent` seen, by (node, pid): one entry per incarnation.
    batches: HashMap<(usize, u32), u64>,
}

impl Run {
    /// A scenario over `cluster`, built from `topo`.
    pub fn new(cluster: Cluster, topo: &TopologyFile) -> Self {
        let t = &topo.topology;
        let org = t
            .nodes
            .iter()
            .map(|n| topo.orgs.iter().position(|o| o == n.org_str()).unwrap_or(0))
            .collect();
        let edges = t
            .links
            .iter()
            .map(|l| Edge {
                a: l.a,
                b: l.b,
                role: l.role,
            })
            .collect();
        Self {
            cluster,
            invariants: Vec::new(),
            phases: Vec::new(),
            longest_loop: Duration::ZERO,
            slowest_sample: Duration::ZERO,
            timing: std::collections::BTreeMap::new(),
            counts: std::collections::BTreeMap::new(),
            org,
            edges,
            batches: HashMap::new(),
        }
    }

    /// Records an invariant.
    pub fn hold(&mut self, name: &str, held: bool, detail: impl Into<String>) {
        self.invariants.push(Invariant {
            name: name.into(),
            held,
            detail: detail.into(),
        });
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        let nodes = &self.cluster.state.nodes;
        self.cluster
            .link(&nodes[a].id, &nodes[b].id)
            .is_some_and(|l| l.is_cut())
    }

    /// What should hold now: every running node not in `excluded` holds a route to each
    /// service whose origin runs, is not excluded, and reaches it over links that are
    /// not cut under valley-free export; and none to any other. Returns (expected,
    /// absent).
    pub fn expectations(&self, excluded: &[usize]) -> (Pairs, Pairs) {
        let state = &self.cluster.state;
        let n = state.nodes.len();
        let up: Vec<bool> = (0..n)
            .map(|i| self.cluster.alive(i) && !excluded.contains(&i))
            .collect();
        let edges: Vec<Edge> = self
            .edges
            .iter()
            .copied()
            .filter(|e| !self.cut(e.a, e.b))
            .collect();
        let graph = Graph {
            org: &self.org,
            up: &up,
            edges: &edges,
        };
        let (mut expected, mut absent) = (Vec::new(), Vec::new());
        for o in 0..n {
            let reached = graph.reach(o);
            let service = observe::service_of(state, o);
            for i in (0..n).filter(|&i| up[i]) {
                if reached[i] {
                    expected.push((i, service.clone()));
                } else if i != o {
                    absent.push((i, service.clone()));
                }
            }
        }
        (expected, absent)
    }

    /// Reads every table once and records what it finds in `w`. Tables are read node by
    /// node, so a sample mixes moments, and path-vector routing has short transient
    /// loops while a withdrawal propagates (as BGP); a loop counts as persistent when
    /// the same (node, service) keeps looping in every sample for [`PERSISTENT_LOOP`]
    /// and three sampling rounds.
    pub fn sample(
        &mut self,
        w: &mut Watch,
        expected: &[(usize, String)],
        absent: &[(usize, String)],
    ) {
        let begun = Instant::now();
        let t = observe::tables(&self.cluster.state, |a, b| self.cut(a, b));
        self.slowest_sample = self.slowest_sample.max(begun.elapsed());
        let c = observe::check(&self.cluster.state, &t, expected, absent);
        w.samples += 1;
        if !c.black_holes.is_empty() {
            w.last_hole = Some(w.start.elapsed());
            w.hole_samples += 1;
        }
        w.since.retain(|k, _| c.loops.contains(k));
        for l in &c.loops {
            let first = *w.since.entry(l.clone()).or_insert_with(Instant::now);
            self.longest_loop = self.longest_loop.max(first.elapsed());
            // A sample spans the time it takes to read every table (seconds with 100
            // daemons on 2 cores), so a loop must also outlast three sampling rounds.
            let threshold = PERSISTENT_LOOP.max(self.slowest_sample * 3);
            if first.elapsed() >= threshold && !w.persistent.contains(l) {
                w.persistent.push(l.clone());
            }
        }
        w.last = c;
    }

    /// Samples for `span` whatever it finds (an outage, a flap).
    pub fn observe_for(&mut self, w: &mut Watch, span: Duration, expected: &[(usize, String)]) {
        let end = Instant::now() + span;
        while Instant::now() < end {
            self.sample(w, expected, &[]);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Samples until `expected` is delivered and `absent` is gone, at most [`LIMIT`];
    /// returns the time since the window started, `None` if it never happened.
    pub fn settle(
        &mut self,
        w: &mut Watch,
        expected: &[(usize, String)],
        absent: &[(usize, String)],
    ) -> Option<Duration> {
        let begun = Instant::now();
        let mut reached = None;
        while begun.elapsed() < LIMIT {
            self.sample(w, expected, absent);
            if w.last.clean() {
                reached = Some(w.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.record_counters();
        reached
    }

    /// Samples for `span`; `Ok(samples)` if every sample was clean, else `Err` with
    /// what the first unclean one found.
    pub fn hold_clean(
        &mut self,
        w: &mut Watch,
        span: Duration,
        expected: &[(usize, String)],
        absent: &[(usize, String)],
    ) -> Result<usize, String> {
        let begun = Instant::now();
        let mut samples = 0;
        while begun.elapsed() <= span {
            self.sample(w, expected, absent);
            samples += 1;
            if !w.last.clean() {
                return Err(format!(
                    "after {} ms: {}",
                    begun.elapsed().as_millis(),
                    w.problems()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(samples)
    }

    /// Reads `router_batches_sent` of every running daemon.
    pub fn record_counters(&mut self) {
        for (key, value) in observe::counters(&self.cluster.state, "router_batches_sent") {
            self.batches.insert(key, value);
        }
    }

    /// Update batches sent, summed over every daemon incarnation seen.
    pub fn batches_sent(&self) -> u64 {
        self.batches.values().sum()
    }

    /// Kills node `i` (`kill -9`) after reading its counters.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(node) = self.cluster.state.nodes.get(i) {
            if let (Some(pid), Some(s)) = (node.pid, observe::status(node)) {
                let sent = s.counters.get("router_batches_sent").copied().unwrap_or(0);
                self.batches.insert((i, pid), sent);
            }
        }
        self.cluster.kill_node(i);
    }

    /// Records a named timing of the run (`detect`, `reroute`, ...), ms.
    pub fn time(&mut self, name: &str, took: Option<Duration>) {
        if let Some(d) = took {
            self.timing.insert(
                name.to_owned(),
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            );
        }
    }

    /// Waits (up to [`LIMIT`]) until every running node has its session up with every
    /// running peer; whether that happened.
    pub fn sessions_up(&self) -> bool {
        let nodes = &self.cluster.state.nodes;
        let running: std::collections::HashSet<&str> = nodes
            .iter()
            .filter(|n| n.pid.is_some())
            .map(|n| n.id.as_str())
            .collect();
        crate::net::cluster::wait_until(LIMIT, || {
            nodes.iter().filter(|n| n.pid.is_some()).all(|n| {
                observe::peers(n).is_some_and(|peers| {
                    peers
                        .iter()
                        .all(|p| p.state == "up" || !running.contains(p.node_id.as_str()))
                })
            })
        })
    }

    /// Node `i` originates its scenario service.
    pub fn advertise(&self, i: usize) -> Result<(), String> {
        let node = &self.cluster.state.nodes[i];
        client::call(
            &observe::socket(node),
            &Request::RoutesAdvertise {
                service: observe::service_of(&self.cluster.state, i),
                endpoint: "127.0.0.1:9".into(),
                protocol: "tcp".into(),
            },
        )
        .map(|_| ())
        .map_err(|e| format!("advertise at {}: {e}", node.id))
    }
}
