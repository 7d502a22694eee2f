//! The `sim` run: build a topology, let every node originate one service,
//! measure convergence, optionally fail a node and measure again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use trellis_routing::ServiceName;

use crate::sim::{walk, Counters, LinkParams, Sim, SimConfig, Walk};
use crate::topology::{Shape, Topology};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Shape of the network.
    pub shape: Shape,
    /// Orgs for `multi-org`.
    pub orgs: usize,
    /// Seed of the topology and of loss draws.
    pub seed: u64,
    /// Delay and loss of every link (each link's own with `config.spread`).
    pub link: LinkParams,
    /// Router and detection settings.
    pub config: SimConfig,
    /// Node to fail once the network has converged.
    pub fail_node: Option<usize>,
    /// Most virtual time a phase may take before it is reported as not quiet.
    pub limit: Duration,
}

/// Min, mean and max of a per-node quantity.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spread {
    /// Smallest.
    pub min: usize,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: usize,
}

impl Spread {
    /// Min, mean and max of `v` (zeroes when it is empty).
    pub fn of(v: &[usize]) -> Self {
        Self {
            min: v.iter().copied().min().unwrap_or(0),
            mean: v.iter().sum::<usize>() as f64 / v.len().max(1) as f64,
            max: v.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Min, mean and max of a real quantity.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SpreadF {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

impl SpreadF {
    /// Min, mean and max of `values` (zeroes when there are none).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut min, mut max, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        for v in values {
            (min, max, sum, n) = (min.min(v), max.max(v), sum + v, n + 1);
        }
        if n == 0 {
            return Self {
                min: 0.0,
                mean: 0.0,
                max: 0.0,
            };
        }
        Self {
            min,
            mean: sum / n as f64,
            max,
        }
    }
}

/// How fast the forwarding paths are: every delivered (node, service of
/// another node) pair's one-way delay along its path, against the fastest
/// path over the same links.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PathQuality {
    /// Pairs measured.
    pub pairs: usize,
    /// Mean hops.
    pub mean_hops: f64,
    /// Mean one-way delay along the paths taken (ms).
    pub mean_delay_ms: f64,
    /// Mean one-way delay of the fastest paths (ms).
    pub mean_fastest_ms: f64,
    /// Path delay over fastest delay, over pairs whose fastest delay is not zero.
    pub stretch: SpreadF,
    /// Mean of the loss rates of the links on each path, summed along it.
    pub mean_path_loss: f64,
}

/// Where `at` forwards `s`: `None` nowhere (no route, dead link or node),
/// `Some(None)` it originates `s`, else the next node.
fn next_hop(sim: &Sim, at: usize, s: &ServiceName) -> Option<Option<usize>> {
    let (_, best) = sim.router(at).resolve(s)?;
    let Some(id) = best.next_hop else {
        return Some(None);
    };
    let next = sim.index_of(&id).filter(|&next| sim.link_up(at, next))?;
    Some(Some(next))
}

/// Hops, delay (µs) and summed loss from a node to the origin along the
/// forwarding path; `None` if traffic does not get there.
type Path = Option<(usize, u64, f64)>;

/// Measures [`PathQuality`] now. Per service: one Dijkstra (by link delay)
/// from its origin, and one hop per node (each node's path is its next
/// hop's plus one link, as in [`walk`]).
pub fn path_quality(sim: &Sim) -> PathQuality {
    use petgraph::graph::{NodeIndex, UnGraph};
    let n = sim.ids().len();
    let mut g: UnGraph<(), u64> = UnGraph::with_capacity(n, sim.link_count());
    for _ in 0..n {
        g.add_node(());
    }
    for (a, b) in sim.link_ends().filter(|&(a, b)| sim.link_up(a, b)) {
        let d = sim.link(a, b).map_or(0, |(p, _)| us(p.delay));
        g.add_edge(NodeIndex::new(a), NodeIndex::new(b), d);
    }
    let (mut pairs, mut hops, mut delay, mut fastest, mut loss) = (0usize, 0usize, 0u64, 0u64, 0.0);
    let mut stretch = Vec::new();
    let mut chain = Vec::new();
    let mut memo: Vec<Option<Path>> = vec![None; n];
    for origin in (0..n).filter(|i| sim.alive(*i)) {
        let s = service_of(sim, origin);
        let best = petgraph::algo::dijkstra(&g, NodeIndex::new(origin), None, |e| *e.weight());
        memo.iter_mut().for_each(|m| *m = None);
        for from in (0..n).filter(|&i| i != origin && sim.alive(i)) {
            chain.clear();
            let mut at = from;
            let mut end = loop {
                if let Some(known) = memo[at] {
                    break known;
                }
                if chain.contains(&at) {
                    break None;
                }
                chain.push(at);
                match next_hop(sim, at, &s) {
                    None => break None,
                    Some(None) => {
                        memo[at] = Some(Some((0, 0, 0.0)));
                        chain.pop();
                        break Some((0, 0, 0.0));
                    }
                    Some(Some(next)) => at = next,
                }
            };
            // Back along the chain: each node forwards to the one after it.
            let mut next = at;
            for &node in chain.iter().rev() {
                let (p, _) = sim.link(node, next).unwrap_or_default();
                end = end.map(|(h, d, l)| (h + 1, d + us(p.delay), l + p.loss));
                memo[node] = Some(end);
                next = node;
            }
            let (Some((h, d, l)), Some(&f)) = (end, best.get(&NodeIndex::new(from))) else {
                continue;
            };
            (pairs, hops, delay, fastest, loss) =
                (pairs + 1, hops + h, delay + d, fastest + f, loss + l);
            if f > 0 {
                stretch.push(d as f64 / f as f64);
            }
        }
    }
    let per = |x: f64| x / pairs.max(1) as f64;
    PathQuality {
        pairs,
        mean_hops: per(hops as f64),
        mean_delay_ms: per(delay as f64) / 1000.0,
        mean_fastest_ms: per(fastest as f64) / 1000.0,
        stretch: SpreadF::of(stretch),
        mean_path_loss: per(loss),
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The outcome of one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Phase {
    /// Virtual milliseconds from the phase's start to the last best-route change.
    pub converge_ms: f64,
    /// Whether every event ran out before the time limit.
    pub quiet: bool,
    /// Messages and changes during the phase.
    pub counters: Counters,
    /// Forwarding at the end of the phase.
    pub end: Audit,
}

/// The node failure part of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    /// The failed node.
    pub node: String,
    /// The phase after the failure (its time counts from the failure).
    pub phase: Phase,
    /// Nodes that at some instant forwarded a still-reachable service in a loop.
    pub nodes_with_loop: usize,
    /// Nodes that at some instant black-holed a still-reachable service.
    pub nodes_with_blackhole: usize,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimReport {
    /// Topology name.
    pub topology: String,
    /// Nodes.
    pub nodes: usize,
    /// Links.
    pub links: usize,
    /// Seed.
    pub seed: u64,
    /// Link delay (ms).
    pub link_delay_ms: f64,
    /// Loss per transmission.
    pub loss: f64,
    /// Each link's delay is drawn in `[link_delay_ms, link_delay_ms + this]` (ms).
    pub link_delay_spread_ms: f64,
    /// Each link's loss is drawn in `[loss, max(loss, this)]`.
    pub link_loss_max: f64,
    /// Whether link costs come from the scoring formula (else the common delay in ms).
    pub scored_costs: bool,
    /// Link cost (as both ends configure it) over the links.
    pub link_cost: SpreadF,
    /// Batching interval (ms).
    pub mrai_ms: f64,
    /// Failure detection delay (ms).
    pub detect_ms: f64,
    /// Initial convergence after every node originates one service.
    pub initial: Phase,
    /// Loc-RIB size per node after the initial convergence.
    pub routes_per_node: Spread,
    /// Delay of the forwarding paths after the initial convergence.
    pub paths: PathQuality,
    /// The failure, if one was asked for.
    pub failure: Option<Failure>,
    /// Real time the run took (ms); not deterministic.
    pub wall_ms: u64,
}

/// The service node `i` originates: `svc-<i>.<org>`.
pub fn service_of(sim: &Sim, i: usize) -> ServiceName {
    let id = &sim.ids()[i];
    ServiceName::new(&format!("svc-{i}.{}", id.org_str())).expect("generated service name is valid")
}

/// Connected components of the alive nodes over the links that are up: each alive
/// node's component label (`usize::MAX` for a dead node).
fn components(sim: &Sim) -> Vec<usize> {
    let n = sim.ids().len();
    let mut sets = petgraph::unionfind::UnionFind::<usize>::new(n);
    for x in (0..n).filter(|&x| sim.alive(x)) {
        for y in (x + 1..n).filter(|&y| sim.alive(y) && (sim.link_up(x, y) || sim.link_up(y, x))) {
            sets.union(x, y);
        }
    }
    let labels = sets.into_labeling();
    (0..n)
        .map(|i| if sim.alive(i) { labels[i] } else { usize::MAX })
        .collect()
}

/// Counts, over alive nodes and the services of alive origins in the same
/// connected component, the pairs whose traffic is not delivered and the
/// pairs that loop. Pairs split by a partition are counted apart.
pub fn audit(sim: &Sim) -> Audit {
    let n = sim.ids().len();
    let comp = components(sim);
    let mut a = Audit::default();
    for origin in (0..n).filter(|i| sim.alive(*i)) {
        let s = service_of(sim, origin);
        for from in (0..n).filter(|i| sim.alive(*i)) {
            if comp[from] != comp[origin] {
                a.partitioned += 1;
                continue;
            }
            match walk(sim, from, &s) {
                Walk::Delivered { .. } => {}
                Walk::Loop => a.loops += 1,
                Walk::NoRoute | Walk::BlackHole => a.undelivered += 1,
            }
        }
    }
    a
}

/// The forwarding state of a whole network.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Audit {
    /// Connected (node, service) pairs whose traffic is not delivered.
    pub undelivered: usize,
    /// Connected pairs whose traffic loops.
    pub loops: usize,
    /// Pairs split by a partition (not expected to be delivered).
    pub partitioned: usize,
}

fn phase(sim: &mut Sim, start_us: u64, limit: Duration) -> Phase {
    let quiet = sim.run(limit);
    let counters = sim.counters().clone();
    let converge_us = counters.last_change_us.saturating_sub(start_us);
    Phase {
        converge_ms: converge_us as f64 / 1000.0,
        quiet,
        counters,
        end: audit(sim),
    }
}

/// Runs a simulation.
pub fn run(opts: &SimOptions) -> Result<SimReport, String> {
    let wall = Instant::now();
    let topo = Topology::generate(opts.shape, opts.nodes, opts.orgs, opts.seed)?;
    if let Some(f) = opts.fail_node {
        if f >= topo.nodes.len() {
            return Err(format!(
                "--fail-node {f} is out of range (0..{})",
                topo.nodes.len()
            ));
        }
    }
    let mut sim = Sim::new(&topo, opts.link, opts.config.clone());
    sim.start();
    for i in 0..topo.nodes.len() {
        let s = service_of(&sim, i);
        sim.originate(i, s, Duration::ZERO);
    }
    let initial = phase(&mut sim, 0, opts.limit);
    let rib: Vec<usize> = (0..topo.nodes.len())
        .map(|i| sim.router(i).loc_rib().len())
        .collect();
    let routes_per_node = Spread::of(&rib);
    let paths = path_quality(&sim);

    let failure = match opts.fail_node {
        None => None,
        Some(node) => {
            let exclude: HashSet<ServiceName> = [service_of(&sim, node)].into();
            let services: Vec<ServiceName> =
                (0..topo.nodes.len()).map(|i| service_of(&sim, i)).collect();
            sim.reset_counters();
            let gap = Duration::from_secs(1);
            let fail_at = sim.now() + gap;
            sim.fail_node(node, gap);
            sim.watch(exclude);
            sim.run(gap);
            // Traffic through the dead node is lost before anyone notices.
            sim.check_all(&services);
            let mut phase = phase(&mut sim, fail_at.as_micros() as u64, opts.limit);
            if phase.counters.best_changes == 0 {
                phase.converge_ms = 0.0;
            }
            let (looped, holed) = sim.unwatch();
            let distinct = |v: &[(usize, ServiceName)]| {
                v.iter().map(|(n, _)| *n).collect::<HashSet<_>>().len()
            };
            Some(Failure {
                node: sim.ids()[node].to_string(),
                phase,
                nodes_with_loop: distinct(&looped),
                nodes_with_blackhole: distinct(&holed),
            })
        }
    };
    Ok(SimReport {
        topology: opts.shape.to_string(),
        nodes: topo.nodes.len(),
        links: sim.link_count(),
        seed: opts.seed,
        link_delay_ms: opts.link.delay.as_secs_f64() * 1000.0,
        loss: opts.link.loss,
        link_delay_spread_ms: opts.config.spread.delay_spread.as_secs_f64() * 1000.0,
        link_loss_max: opts.config.spread.loss_max.max(opts.link.loss),
        scored_costs: opts.config.scored_costs,
        link_cost: SpreadF::of(
            sim.link_ends()
                .filter_map(|(a, b)| sim.link(a, b))
                .map(|(_, c)| f64::from(c)),
        ),
        mrai_ms: opts.config.mrai.as_secs_f64() * 1000.0,
        detect_ms: opts.config.detect.as_secs_f64() * 1000.0,
        initial,
        routes_per_node,
        paths,
        failure,
        wall_ms: wall.elapsed().as_millis() as u64,
    })
}

fn audit_line(a: &Audit) -> String {
    format!(
        "undelivered pairs {}, looping pairs {}, partitioned pairs {}",
        a.undelivered, a.loops, a.partitioned
    )
}

/// Whether the network ended every phase delivering every connected pair.
pub fn healthy(r: &SimReport) -> bool {
    let ok = |p: &Phase| p.quiet && p.end.undelivered == 0 && p.end.loops == 0;
    ok(&r.initial) && r.failure.as_ref().is_none_or(|f| ok(&f.phase))
}

/// A human summary of a report.
pub fn summary(r: &SimReport) -> String {
    let mut s = format!(
        "{} nodes, {} links ({} topology, seed {}), link delay {} ms, loss {:.1}%, MRAI {} ms\n",
        r.nodes,
        r.links,
        r.topology,
        r.seed,
        r.link_delay_ms,
        r.loss * 100.0,
        r.mrai_ms
    );
    if r.link_delay_spread_ms > 0.0 || r.link_loss_max > r.loss {
        s += &format!(
            "per link: delay {} to {} ms, loss {:.1}% to {:.1}%\n",
            r.link_delay_ms,
            r.link_delay_ms + r.link_delay_spread_ms,
            r.loss * 100.0,
            r.link_loss_max * 100.0
        );
    }
    s += &format!(
        "link costs ({}): min {} mean {:.1} max {}\n",
        if r.scored_costs {
            "scored from RTT and loss"
        } else {
            "common delay in ms"
        },
        r.link_cost.min,
        r.link_cost.mean,
        r.link_cost.max
    );
    let p = &r.initial;
    s += &format!(
        "initial: converged in {:.1} ms virtual{}; {} messages ({} update batches, {} announcements, {} withdrawals, {} manifests)\n",
        p.converge_ms,
        if p.quiet { "" } else { " (NOT quiet at the limit)" },
        p.counters.messages,
        p.counters.updates,
        p.counters.announcements,
        p.counters.withdrawals,
        p.counters.manifests,
    );
    s += &format!(
        "routes per node: min {} mean {:.1} max {}; {}\n",
        r.routes_per_node.min,
        r.routes_per_node.mean,
        r.routes_per_node.max,
        audit_line(&p.end)
    );
    let q = &r.paths;
    s += &format!(
        "paths ({} pairs): mean {:.2} hops, {:.2} ms one-way (fastest {:.2} ms), stretch mean {:.3} max {:.2}, summed loss {:.2}%\n",
        q.pairs,
        q.mean_hops,
        q.mean_delay_ms,
        q.mean_fastest_ms,
        q.stretch.mean,
        q.stretch.max,
        q.mean_path_loss * 100.0,
    );
    if let Some(f) = &r.failure {
        s += &format!(
            "after failing {}: re-converged in {:.1} ms virtual (detection {} ms){}; {} messages; nodes that ever looped: {}, ever black-holed: {}; {}\n",
            f.node,
            f.phase.converge_ms,
            r.detect_ms,
            if f.phase.quiet { "" } else { " (NOT quiet at the limit)" },
            f.phase.counters.messages,
            f.nodes_with_loop,
            f.nodes_with_blackhole,
            audit_line(&f.phase.end),
        );
    }
    s += &format!("wall time {} ms\n", r.wall_ms);
    s
}
