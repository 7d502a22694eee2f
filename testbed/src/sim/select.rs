//! A round-based model of peer selection inside one org, to study the
//! [`Selector`] at 1,000 nodes without routing or a clock.
//!
//! The model:
//! - N nodes of one org, placed uniformly at random in a square (from the
//!   seed). The one-way delay between two nodes is 1 ms plus `max_delay`
//!   times their distance over the diagonal; each pair's loss is drawn in
//!   `[0, loss_max]`. A pair's true cost is what peer scoring makes of it
//!   ([`scored_cost`]: base 10, full trust, RTT twice the delay, that loss).
//! - Every node runs a [`Selector`] with the defaults of
//!   [`NodeRole::Default`]. Its candidates each round: the `bootstrap` seed
//!   nodes (indices 0, 1, ...; a seed does not list itself) and a directory of
//!   every other node, none pinned, all reachable. A candidate's cost is known
//!   once the node has probed or activated it (from the next round on), and
//!   then each round it is the true cost times a jitter factor drawn in
//!   `1 ± jitter_pct / 100`; never measured, it is `None`.
//! - A round is one `decide` per node, in index order, with the clock moved
//!   on by `min_hold`, so every active peer may be swapped each round. The
//!   run stops at the first round without an activation or a deactivation
//!   (unless `run_all`), or after `rounds` rounds.
//!
//! Node ids are `a/n` plus the index zero-padded, so id order is index order:
//! the selector ranks unmeasured candidates by id.
//!
//! Pure and deterministic: the same options give the same report, except
//! `wall_ms`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use petgraph::unionfind::UnionFind;
use serde::Serialize;
use trellis_routing::selection::{Action, Candidate, NodeRole, SelectionConfig, Selector};
use trellis_routing::NodeId;

use super::{scored_cost, LinkParams};
use crate::rng::Rng;
use crate::run::Spread;

/// The most nodes a study takes (each round costs N² candidate entries).
pub const MAX_NODES: usize = 10_000;

/// What to study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of the placement, the losses and the jitter.
    pub seed: u64,
    /// One-way delay across the whole diagonal, on top of 1 ms (ms).
    pub max_delay_ms: f64,
    /// Each pair's loss is drawn in `[0, loss_max]`.
    pub loss_max: f64,
    /// Each round a measured cost is off by up to ± this many percent.
    pub jitter_pct: f64,
    /// Seed nodes every node knows from its config (indices `0..bootstrap`).
    pub bootstrap: usize,
    /// Most rounds to run.
    pub rounds: usize,
    /// Keep running after the first round without changes.
    pub run_all: bool,
}

impl Default for SelectOptions {
    fn default() -> Self {
        Self {
            nodes: 1000,
            seed: 1,
            max_delay_ms: 50.0,
            loss_max: 0.01,
            jitter_pct: 10.0,
            bootstrap: 2,
            rounds: 200,
            run_all: false,
        }
    }
}

/// The actions of one round, summed over nodes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct RoundStat {
    /// Round number, from 1.
    pub round: usize,
    /// Sessions opened.
    pub activations: usize,
    /// Sessions closed (after the first round, each is one swap).
    pub deactivations: usize,
    /// Probes.
    pub probes: usize,
}

/// Everything a study reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SelectReport {
    /// The options, as given.
    pub options: SelectOptions,
    /// The selector's `(min_active, max_active)`.
    pub active_range: (usize, usize),
    /// Rounds run.
    pub rounds_run: usize,
    /// The first round without an activation or a deactivation.
    pub stable_round: Option<usize>,
    /// Activations and deactivations after that round (only with `run_all`).
    pub changes_after_stable: usize,
    /// Times a node's active set changed back to a set it had left before
    /// (oscillation).
    pub returns: u64,
    /// The last (up to) 10 rounds.
    pub last_rounds: Vec<RoundStat>,
    /// Peers each node activated.
    pub out_degree: Spread,
    /// Peers each node has a session with, either side having activated it.
    pub degree: Spread,
    /// The nodes with the most sessions (up to 5) and how many each has, most first.
    pub hubs: Vec<(String, usize)>,
    /// Connected components of the session graph.
    pub components: usize,
    /// Whether the session graph is connected.
    pub connected: bool,
    /// Candidates each node ever measured (probed or activated).
    pub measured: Spread,
    /// Mean true cost of the activated peers.
    pub mean_cost: f64,
    /// Mean true cost of each node's `min_active` cheapest candidates.
    pub mean_best_cost: f64,
    /// `mean_cost / mean_best_cost`.
    pub cost_ratio: f64,
    /// Probes, all rounds.
    pub probes: u64,
    /// Activations, all rounds.
    pub activations: u64,
    /// Deactivations, all rounds.
    pub deactivations: u64,
    /// Real time the run took (ms); not deterministic.
    pub wall_ms: u64,
}

/// Where the nodes are and what each pair's link is like.
struct World {
    pos: Vec<(f64, f64)>,
    seed: u64,
    max_delay: Duration,
    loss_max: f64,
}

impl World {
    fn new(o: &SelectOptions) -> Self {
        let mut rng = Rng::new(o.seed);
        let pos = (0..o.nodes).map(|_| (rng.unit(), rng.unit())).collect();
        Self {
            pos,
            seed: o.seed,
            max_delay: Duration::from_secs_f64(o.max_delay_ms / 1000.0),
            loss_max: o.loss_max,
        }
    }

    fn delay(&self, i: usize, j: usize) -> Duration {
        let ((x1, y1), (x2, y2)) = (self.pos[i], self.pos[j]);
        let frac = ((x1 - x2).hypot(y1 - y2) / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
        Duration::from_millis(1) + self.max_delay.mul_f64(frac)
    }

    /// The same for `(i, j)` and `(j, i)`, independent of any other draw.
    fn loss(&self, i: usize, j: usize) -> f64 {
        let key = ((i.min(j) as u64) << 32) | i.max(j) as u64;
        let mut r = Rng::new(self.seed ^ key.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        r.next_u64();
        r.unit() * self.loss_max
    }

    /// The true cost, as the simulator's scored links have it.
    fn cost(&self, i: usize, j: usize) -> u32 {
        let (delay, loss) = (self.delay(i, j), self.loss(i, j));
        scored_cost(LinkParams { delay, loss })
    }
}

fn check(o: &SelectOptions) -> Result<(), String> {
    let bad = if !(2..=MAX_NODES).contains(&o.nodes) {
        format!("--nodes {} must be between 2 and {MAX_NODES}", o.nodes)
    } else if o.bootstrap > o.nodes {
        format!("--bootstrap {} exceeds --nodes {}", o.bootstrap, o.nodes)
    } else if !(0.0..100.0).contains(&o.jitter_pct) {
        format!("--jitter-pct {} must be in [0, 100)", o.jitter_pct)
    } else if !(0.0..1.0).contains(&o.loss_max) {
        format!("--loss-max {} must be in [0, 1)", o.loss_max)
    } else if !(0.0..=3_600_000.0).contains(&o.max_delay_ms) {
        format!(
            "--max-delay-ms {} must be between 0 and 3600000",
            o.max_delay_ms
        )
    } else if o.rounds == 0 {
        "--rounds must be at least 1".into()
    } else {
        return Ok(());
    };
    Err(bad)
}

/// Runs a study.
pub fn run(o: &SelectOptions) -> Result<SelectReport, String> {
    check(o)?;
    let wall = Instant::now();
    let n = o.nodes;
    let world = World::new(o);
    let width = (n - 1).to_string().len();
    let ids: Vec<NodeId> = (0..n)
        .map(|i| NodeId::new(&format!("a/n{i:0width$}")).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let index: HashMap<NodeId, usize> = ids.iter().cloned().zip(0..).collect();
    let cfg = SelectionConfig::for_role(NodeRole::Default);
    let hold = cfg.min_hold;
    // Each node spreads ties by its own id, as a daemon does.
    let mut selectors: Vec<Selector> = ids
        .iter()
        .map(|id| Selector::new(cfg.clone().salted(id)))
        .collect();
    // Per node, the candidates it has measured, sorted.
    let mut measured: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut jitter = Rng::new(o.seed ^ 0x4A49_5454_4552);
    let spread_pct = o.jitter_pct / 100.0;
    let t0 = Instant::now();
    let mut stats: Vec<RoundStat> = Vec::new();
    let (mut stable_round, mut changes_after_stable) = (None, 0);
    // Every active set each node has had, to see one come back.
    let (mut sets_seen, mut returns) = (vec![HashSet::new(); n], 0);
    let mut costs: Vec<Option<u32>> = vec![None; n];
    let mut cands: Vec<Candidate> = Vec::with_capacity(n + o.bootstrap);
    for round in 1..=o.rounds {
        let now = t0 + hold.saturating_mul(u32::try_from(round - 1).unwrap_or(u32::MAX));
        let mut st = RoundStat {
            round,
            ..RoundStat::default()
        };
        for i in 0..n {
            costs.iter_mut().for_each(|c| *c = None);
            for &j in &measured[i] {
                let factor = 1.0 + spread_pct * (2.0 * jitter.unit() - 1.0);
                let c = (f64::from(world.cost(i, j)) * factor).round().max(1.0);
                costs[j] = Some(c as u32);
            }
            cands.clear();
            let listed = (0..o.bootstrap).chain(0..n).filter(|&j| j != i);
            cands.extend(listed.map(|j| Candidate {
                node: ids[j].clone(),
                pinned: false,
                cost: costs[j],
                reachable: true,
            }));
            let (act0, deact0) = (st.activations, st.deactivations);
            for action in selectors[i].decide(now, &cands) {
                let (Action::Activate(id) | Action::Deactivate(id) | Action::Probe(id)) = &action;
                let Some(&j) = index.get(id) else { continue };
                match action {
                    Action::Activate(_) => st.activations += 1,
                    Action::Deactivate(_) => st.deactivations += 1,
                    Action::Probe(_) => st.probes += 1,
                }
                if let Err(at) = measured[i].binary_search(&j) {
                    measured[i].insert(at, j);
                }
            }
            if (act0, deact0) != (st.activations, st.deactivations) {
                let set: Vec<usize> = selectors[i]
                    .active()
                    .filter_map(|id| index.get(id).copied())
                    .collect();
                returns += u64::from(!sets_seen[i].insert(set));
            }
        }
        stats.push(st);
        let changes = st.activations + st.deactivations;
        if stable_round.is_some() {
            changes_after_stable += changes;
        } else if changes == 0 {
            stable_round = Some(round);
            if !o.run_all {
                break;
            }
        }
    }

    // The session graph.
    let out: Vec<Vec<usize>> = selectors
        .iter()
        .map(|s| s.active().filter_map(|id| index.get(id).copied()).collect())
        .collect();
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut sets = UnionFind::<usize>::new(n);
    for (i, peers) in out.iter().enumerate() {
        for &j in peers {
            adj[i].push(j);
            adj[j].push(i);
            sets.union(i, j);
        }
    }
    for a in &mut adj {
        a.sort_unstable();
        a.dedup();
    }
    let mut labels = sets.into_labeling();
    labels.sort_unstable();
    labels.dedup();
    let degree: Vec<usize> = adj.iter().map(Vec::len).collect();
    let mut by_degree: Vec<usize> = (0..n).collect();
    by_degree.sort_by_key(|&i| (std::cmp::Reverse(degree[i]), i));
    let hubs = by_degree.iter().take(5);
    let hubs = hubs.map(|&i| (ids[i].to_string(), degree[i])).collect();

    // Costs: what was chosen against the best `min_active` of all.
    let k = cfg.min_active.min(n - 1);
    let (mut all, mut chosen, mut best) = (Vec::with_capacity(n), 0.0, 0.0);
    for (i, peers) in out.iter().enumerate() {
        chosen += peers
            .iter()
            .map(|&j| f64::from(world.cost(i, j)))
            .sum::<f64>();
        all.clear();
        all.extend((0..n).filter(|&j| j != i).map(|j| world.cost(i, j)));
        all.select_nth_unstable(k - 1);
        best += all[..k].iter().map(|c| f64::from(*c)).sum::<f64>();
    }
    let mean_cost = chosen / out.iter().map(Vec::len).sum::<usize>().max(1) as f64;
    let mean_best_cost = best / (n * k) as f64;
    let sum = |f: fn(&RoundStat) -> usize| stats.iter().map(|s| f(s) as u64).sum::<u64>();
    Ok(SelectReport {
        options: o.clone(),
        active_range: (cfg.min_active, cfg.max_active),
        rounds_run: stats.len(),
        stable_round,
        changes_after_stable,
        returns,
        last_rounds: stats[stats.len().saturating_sub(10)..].to_vec(),
        out_degree: Spread::of(&out.iter().map(Vec::len).collect::<Vec<_>>()),
        degree: Spread::of(&degree),
        hubs,
        components: labels.len(),
        connected: labels.len() == 1,
        measured: Spread::of(&measured.iter().map(Vec::len).collect::<Vec<_>>()),
        mean_cost,
        mean_best_cost,
        cost_ratio: mean_cost / mean_best_cost.max(f64::MIN_POSITIVE),
        probes: sum(|s| s.probes),
        activations: sum(|s| s.activations),
        deactivations: sum(|s| s.deactivations),
        wall_ms: wall.elapsed().as_millis() as u64,
    })
}

/// A human summary of a report.
pub fn summary(r: &SelectReport) -> String {
    let (o, (lo, hi)) = (&r.options, r.active_range);
    let mut s = format!(
        "{} nodes (seed {}), delay 1 + up to {} ms, loss up to {:.1}%, jitter ±{}%, {} bootstrap, {lo}-{hi} active\n",
        o.nodes, o.seed, o.max_delay_ms, o.loss_max * 100.0, o.jitter_pct, o.bootstrap
    );
    s += &match r.stable_round {
        Some(k) => format!(
            "{} rounds run; stable from round {k}, {} changes after it",
            r.rounds_run, r.changes_after_stable
        ),
        None => format!("{} rounds run; NOT stable", r.rounds_run),
    };
    s += &format!(
        "; active sets returning to an earlier one: {}\nlast rounds (activations/deactivations/probes):",
        r.returns
    );
    for t in &r.last_rounds {
        s += &format!(
            " {}: {}/{}/{}",
            t.round, t.activations, t.deactivations, t.probes
        );
    }
    let sp = |x: &Spread| format!("min {} mean {:.2} max {}", x.min, x.mean, x.max);
    let hubs: Vec<String> = r.hubs.iter().map(|(n, d)| format!("{n} ({d})")).collect();
    s + &format!(
        "\nactivated per node: {}; sessions per node: {}; candidates measured per node: {}\n\
         session graph: {} component(s){}; most sessions: {}\n\
         mean cost of active peers {:.1} vs best {lo} {:.1} (ratio {:.2}); {} probes, {} activations, {} deactivations; wall time {} ms\n",
        sp(&r.out_degree),
        sp(&r.degree),
        sp(&r.measured),
        r.components,
        if r.connected { "" } else { " (NOT connected)" },
        hubs.join(", "),
        r.mean_cost,
        r.mean_best_cost,
        r.cost_ratio,
        r.probes,
        r.activations,
        r.deactivations,
        r.wall_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SelectOptions {
        SelectOptions {
            nodes: 30,
            seed,
            rounds: 40,
            ..SelectOptions::default()
        }
    }

    #[test]
    fn small_networks_settle_bounded_connected_without_oscillation() {
        for seed in 1..=8 {
            let o = SelectOptions {
                run_all: true,
                ..small(seed)
            };
            let r = run(&o).unwrap();
            let why = summary(&r);
            assert!(r.stable_round.is_some_and(|k| k < 40), "seed {seed}: {why}");
            let (lo, hi) = r.active_range;
            assert!(lo <= r.out_degree.min && r.out_degree.max <= hi, "{why}");
            assert!(r.connected, "seed {seed}: {why}");
            assert!(r.degree.max < o.nodes - 1, "seed {seed}: {why}");
            assert!(r.mean_cost >= r.mean_best_cost, "{why}");
            // ±10 % jitter against a 30 % margin: every swap is a real gain.
            assert_eq!(r.returns, 0, "seed {seed}: {why}");
        }
    }

    /// What the selector does today with a directory of every node, pinned
    /// here so that a change shows: cold candidates rank by node id for every
    /// node alike, and probes go to measured candidates first, so once
    /// `max_warm` idle candidates are measured no cold one is probed again.
    /// Every node measures only the `min_active + max_warm` lowest ids, and
    /// they take all the sessions: with seed 14 one of them has a session
    /// with every other node (1 seed in 20 at 30 nodes).
    #[test]
    fn salted_selectors_spread_sessions_and_keep_exploring() {
        // Every node used to pick the same lowest ids: one node ended with sessions to
        // all others. Salted ties and a probe kept for a cold candidate spread them.
        for seed in 1..=20 {
            let r = run(&small(seed)).unwrap();
            assert!(r.degree.max < 29, "seed {seed}: {}", summary(&r));
            assert!(r.measured.max > 7, "seed {seed}: {}", summary(&r));
        }
    }

    #[test]
    fn a_seed_gives_one_report() {
        let o = SelectOptions {
            run_all: true,
            ..small(3)
        };
        let (mut a, mut b) = (run(&o).unwrap(), run(&o).unwrap());
        (a.wall_ms, b.wall_ms) = (0, 0);
        assert_eq!(a, b);
        assert_eq!(a.rounds_run, 40);
        let mut c = run(&small(4)).unwrap();
        c.wall_ms = 0;
        assert_ne!(a, c);
    }

    #[test]
    fn pairs_are_symmetric_and_in_range() {
        let o = small(5);
        let w = World::new(&o);
        for (i, j) in [(0, 1), (3, 17), (29, 2)] {
            assert_eq!(w.delay(i, j), w.delay(j, i));
            assert_eq!(w.loss(i, j), w.loss(j, i));
            let d = w.delay(i, j);
            assert!(Duration::from_millis(1) <= d && d <= Duration::from_millis(51));
            assert!((0.0..=0.01).contains(&w.loss(i, j)));
            assert!(w.cost(i, j) >= 10);
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let bad: [fn(&mut SelectOptions); 6] = [
            |o| o.nodes = 1,
            |o| o.bootstrap = 31,
            |o| o.jitter_pct = 100.0,
            |o| o.jitter_pct = f64::NAN,
            |o| o.loss_max = 1.0,
            |o| o.rounds = 0,
        ];
        for spoil in bad {
            let mut o = small(1);
            spoil(&mut o);
            assert!(run(&o).is_err(), "{o:?}");
        }
    }
}
