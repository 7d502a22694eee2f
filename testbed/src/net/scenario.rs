//! Fault scenarios against real daemons: each brings a network up, every node originates
//! one service, a fault is injected, and the scenario measures convergence, black-hole
//! time, updates sent and memory, and checks its invariants (docs/testbed.md).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use trellis_daemon::admin::{client, Request};

use super::cluster::{Cluster, Timers};
use super::emulator::{self, Impairment};
use super::observe::{self, Check};
use crate::topology_file::resolve;

/// Every scenario, by name.
pub const SCENARIOS: [&str; 9] = [
    "converge",
    "kill-node",
    "restart-node",
    "partition-heal",
    "flap",
    "lossy-link",
    "revoke-node",
    "authority-down",
    "restart-storm",
];

/// How to run a scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Scenario name.
    pub name: String,
    /// Nodes (built-in topologies).
    pub nodes: usize,
    /// Topology name or file.
    pub topology: String,
    /// Seed.
    pub seed: u64,
    /// Network dir (default: a fresh temp dir, removed afterwards).
    pub dir: Option<PathBuf>,
}

/// One invariant's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Invariant {
    /// What it says.
    pub name: String,
    /// Whether it held.
    pub held: bool,
    /// Evidence.
    pub detail: String,
}

/// What a scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: String,
    /// Topology.
    pub topology: String,
    /// Nodes.
    pub nodes: usize,
    /// From the first advertisement to every node reaching every service, ms.
    pub converge_ms: u64,
    /// From the fault to the expected state, ms.
    pub reconverge_ms: Option<u64>,
    /// From the fault to the last sample with a black hole, ms.
    pub black_hole_ms: Option<u64>,
    /// Longest time one (node, service) pair kept looping in consecutive samples, ms.
    pub longest_loop_ms: u64,
    /// Slowest sampling round (every node's table read once), ms.
    pub slowest_sample_ms: u64,
    /// Update batches sent by all routers (whole run).
    pub updates_sent: u64,
    /// Mean resident memory per daemon at the end, KiB.
    pub rss_kb_mean: u64,
    /// Largest resident memory of a daemon at the end, KiB.
    pub rss_kb_max: u64,
    /// Invariants checked.
    pub invariants: Vec<Invariant>,
    /// All held.
    pub ok: bool,
}

const LIMIT: Duration = Duration::from_secs(60);

/// (node index, service) pairs.
type Pairs = Vec<(usize, String)>;

/// How long a forwarding loop must last, seen in every sample, to fail the invariant.
pub const PERSISTENT_LOOP: Duration = Duration::from_secs(2);

struct Run {
    cluster: Cluster,
    invariants: Vec<Invariant>,
    /// Longest time one (node, service) was seen looping in consecutive samples.
    longest_loop: std::cell::Cell<Duration>,
    /// Slowest sampling round (reading every node's table).
    slowest_sample: std::cell::Cell<Duration>,
}

impl Run {
    fn hold(&mut self, name: &str, held: bool, detail: impl Into<String>) {
        self.invariants.push(Invariant {
            name: name.into(),
            held,
            detail: detail.into(),
        });
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.cluster.state.nodes.len())
            .filter(|&i| self.cluster.alive(i))
            .collect()
    }

    /// Every alive node reaches the services of `origins` (alive ones).
    fn expect_all(&self, origins: &[usize]) -> Vec<(usize, String)> {
        let state = &self.cluster.state;
        let alive = self.alive();
        alive
            .iter()
            .flat_map(|&i| {
                origins
                    .iter()
                    .map(move |&o| (i, observe::service_of(state, o)))
            })
            .collect()
    }

    /// Samples until `expected` is delivered and `absent` is gone; returns (elapsed, last
    /// black-hole time, persistent loops). Tables are read node by node, so a sample mixes
    /// moments, and path-vector routing has short transient loops while a withdrawal
    /// propagates (as BGP); a loop counts as persistent when the same (node, service)
    /// keeps looping in every sample for [`PERSISTENT_LOOP`] and three sampling rounds.
    fn settle(
        &self,
        expected: &[(usize, String)],
        absent: &[(usize, String)],
    ) -> (Option<Duration>, Option<Duration>, Vec<(String, String)>) {
        let start = Instant::now();
        let mut last_hole = None;
        let mut since: std::collections::HashMap<(String, String), Instant> =
            std::collections::HashMap::new();
        let mut persistent: Vec<(String, String)> = Vec::new();
        while start.elapsed() < LIMIT {
            let sample = Instant::now();
            let t = observe::tables(&self.cluster.state);
            self.slowest_sample
                .set(self.slowest_sample.get().max(sample.elapsed()));
            let c: Check = observe::check(&self.cluster.state, &t, expected, absent);
            if !c.black_holes.is_empty() {
                last_hole = Some(start.elapsed());
            }
            since.retain(|k, _| c.loops.contains(k));
            for l in &c.loops {
                let first = *since.entry(l.clone()).or_insert_with(Instant::now);
                self.longest_loop
                    .set(self.longest_loop.get().max(first.elapsed()));
                // A sample spans the time it takes to read every table (seconds with 100
                // daemons on 2 cores), so a loop must also outlast three sampling rounds.
                let threshold = PERSISTENT_LOOP.max(self.slowest_sample.get() * 3);
                if first.elapsed() >= threshold && !persistent.contains(l) {
                    persistent.push(l.clone());
                }
            }
            if c.clean() {
                return (Some(start.elapsed()), last_hole, persistent);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (None, last_hole, persistent)
    }

    /// What should hold now: every running node not in `excluded` reaches the services of
    /// the running nodes it is connected to (over links that are not cut, through nodes
    /// not excluded), and no longer holds the others'. Returns (expected, absent).
    fn expectations(&self, excluded: &[usize]) -> (Pairs, Pairs) {
        let state = &self.cluster.state;
        let n = state.nodes.len();
        let up: Vec<bool> = (0..n)
            .map(|i| self.cluster.alive(i) && !excluded.contains(&i))
            .collect();
        let mut comp: Vec<usize> = (0..n).collect();
        fn find(comp: &mut [usize], x: usize) -> usize {
            let mut r = x;
            while comp[r] != r {
                r = comp[r];
            }
            comp[x] = r;
            r
        }
        for l in &state.links {
            let cut = self
                .cluster
                .link(&state.nodes[l.a].id, &state.nodes[l.b].id)
                .is_some_and(|link| link.is_cut());
            if up[l.a] && up[l.b] && !cut {
                let (ra, rb) = (find(&mut comp, l.a), find(&mut comp, l.b));
                comp[ra] = rb;
            }
        }
        let roots: Vec<usize> = (0..n).map(|i| find(&mut comp, i)).collect();
        let (mut expected, mut absent) = (Vec::new(), Vec::new());
        for i in (0..n).filter(|&i| up[i]) {
            for o in 0..n {
                let service = observe::service_of(state, o);
                if up[o] && roots[o] == roots[i] {
                    expected.push((i, service));
                } else if o != i {
                    absent.push((i, service));
                }
            }
        }
        (expected, absent)
    }

    /// Like [`Run::expect_all`], for the nodes `sources` only.
    fn expect_from(&self, sources: &[usize], origins: &[usize]) -> Vec<(usize, String)> {
        let state = &self.cluster.state;
        sources
            .iter()
            .flat_map(|&i| {
                origins
                    .iter()
                    .map(move |&o| (i, observe::service_of(state, o)))
            })
            .collect()
    }

    fn advertise(&self, i: usize) -> Result<(), String> {
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

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs one scenario and reports; `Err` only when the network could not be built.
pub fn run(opts: &Options) -> Result<Report, String> {
    if !SCENARIOS.contains(&opts.name.as_str()) {
        return Err(format!(
            "unknown scenario {:?} ({})",
            opts.name,
            SCENARIOS.join(", ")
        ));
    }
    let topo = resolve(&opts.topology, opts.nodes, 3, opts.seed)?;
    let temp = opts.dir.is_none();
    let dir = opts.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "trellis-scenario-{}-{}",
            opts.name,
            std::process::id()
        ))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let result = run_in(opts, &topo, &dir);
    // Keep the logs of a failed run.
    if temp && result.as_ref().is_ok_and(|r| r.ok) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(
    opts: &Options,
    topo: &crate::topology_file::TopologyFile,
    dir: &std::path::Path,
) -> Result<Report, String> {
    let cluster = Cluster::create(dir, topo, Timers::default(), opts.seed, false)?;
    let mut run = Run {
        cluster,
        invariants: Vec::new(),
        longest_loop: std::cell::Cell::default(),
        slowest_sample: std::cell::Cell::default(),
    };
    run.cluster.start_emulator(opts.seed)?;
    let n = run.cluster.state.nodes.len();
    if opts.name == "lossy-link" {
        for (a, b, link) in run.cluster.hub.lock().map_err(|_| "hub")?.links() {
            let _ = (a, b);
            link.set(Impairment {
                delay_ms: 20.0,
                jitter_ms: 5.0,
                loss: 0.05,
                ..Impairment::default()
            });
        }
    }
    run.cluster.start_all()?;
    let single_org = topo.orgs.len() <= 1;
    let all: Vec<usize> = (0..n).collect();
    let started = Instant::now();
    for i in 0..n {
        run.advertise(i)?;
    }
    let expected = if single_org {
        run.expect_all(&all)
    } else {
        own_org_pairs(&run)
    };
    let (converged, _, loops) = run.settle(&expected, &[]);
    let converge_ms = ms(converged.map(|_| started.elapsed())).unwrap_or(0);
    run.hold(
        "every node reaches every service",
        converged.is_some(),
        format!("{} pairs", expected.len()),
    );
    run.hold(
        "no persistent forwarding loop while converging",
        loops.is_empty(),
        format!("{loops:?}"),
    );
    let victim = n / 2;
    let (reconverge, black_hole) = if converged.is_some() {
        fault(&mut run, &opts.name, victim, single_org)?
    } else {
        (None, None)
    };
    let updates_sent = observe::counter_sum(&run.cluster.state, "router_batches_sent");
    let rss: Vec<u64> = run
        .cluster
        .state
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .filter_map(observe::rss_kb)
        .collect();
    let ok = run.invariants.iter().all(|i| i.held);
    Ok(Report {
        scenario: opts.name.clone(),
        topology: opts.topology.clone(),
        nodes: n,
        converge_ms,
        reconverge_ms: ms(reconverge),
        black_hole_ms: ms(black_hole),
        updates_sent,
        longest_loop_ms: ms(Some(run.longest_loop.get())).unwrap_or(0),
        slowest_sample_ms: ms(Some(run.slowest_sample.get())).unwrap_or(0),
        rss_kb_mean: if rss.is_empty() {
            0
        } else {
            rss.iter().sum::<u64>() / rss.len() as u64
        },
        rss_kb_max: rss.iter().copied().max().unwrap_or(0),
        invariants: run.invariants,
        ok,
    })
}

/// In a multi-org network: every node reaches the services of its own org.
fn own_org_pairs(run: &Run) -> Vec<(usize, String)> {
    let state = &run.cluster.state;
    let org = |i: usize| {
        state.nodes[i]
            .id
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let n = state.nodes.len();
    (0..n)
        .flat_map(|i| {
            (0..n)
                .filter(move |&o| org(o) == org(i))
                .map(move |o| (i, o))
        })
        .map(|(i, o)| (i, observe::service_of(state, o)))
        .collect()
}

type Timing = (Option<Duration>, Option<Duration>);

fn fault(run: &mut Run, name: &str, victim: usize, single_org: bool) -> Result<Timing, String> {
    let n = run.cluster.state.nodes.len();
    let all: Vec<usize> = (0..n).collect();
    let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    let victim_service = observe::service_of(&run.cluster.state, victim);
    let full = |run: &Run| {
        if single_org {
            run.expect_all(&all)
        } else {
            own_org_pairs(run)
        }
    };
    match name {
        "converge" | "lossy-link" => Ok((None, None)),
        "kill-node" => {
            run.cluster.kill_node(victim);
            let (expected, absent) = if single_org {
                run.expectations(&[])
            } else {
                (run.expect_all(&others), Vec::new())
            };
            let (done, hole, loops) = run.settle(&expected, &absent);
            run.hold(
                "what the dead node cut off is withdrawn, everything still connected stays reachable",
                done.is_some(),
                "",
            );
            run.hold(
                "no persistent forwarding loop after the failure",
                loops.is_empty(),
                format!("{loops:?}"),
            );
            Ok((done, hole))
        }
        "restart-node" => {
            run.cluster.kill_node(victim);
            std::thread::sleep(Duration::from_millis(500));
            let t = Instant::now();
            run.cluster.start_node(victim)?;
            let (done, hole, loops) = run.settle(&full(run), &[]);
            run.hold("after the restart every node reaches every service again (the restarted node restored its origination)", done.is_some(), "");
            run.hold(
                "no persistent forwarding loop",
                loops.is_empty(),
                format!("{loops:?}"),
            );
            Ok((done.map(|_| t.elapsed()), hole))
        }
        "partition-heal" | "flap" => {
            let isolated = 0;
            let iso_id = run.cluster.state.nodes[isolated].id.clone();
            let links: Vec<_> = run
                .cluster
                .hub
                .lock()
                .map_err(|_| "hub")?
                .links()
                .into_iter()
                .filter(|(a, b, _)| *a == iso_id || *b == iso_id)
                .map(|(_, _, l)| l)
                .collect();
            if name == "flap" {
                for l in &links {
                    emulator::flap(l, Some(Duration::from_secs(2)));
                }
                std::thread::sleep(Duration::from_secs(8));
                for l in &links {
                    emulator::flap(l, None);
                    l.heal();
                }
            } else {
                for l in &links {
                    l.cut();
                }
                let (expected, absent) = run.expectations(&[]);
                let (split, _, loops) = run.settle(&expected, &absent);
                run.hold("while partitioned, each side withdraws the other side's services and keeps its own", split.is_some(), "");
                run.hold(
                    "no persistent forwarding loop while partitioned",
                    loops.is_empty(),
                    format!("{loops:?}"),
                );
                for l in &links {
                    l.heal();
                }
            }
            let t = Instant::now();
            let (done, hole, loops) = run.settle(&full(run), &[]);
            run.hold(
                "after healing every node reaches every service",
                done.is_some(),
                "",
            );
            run.hold(
                "no persistent forwarding loop after healing",
                loops.is_empty(),
                format!("{loops:?}"),
            );
            Ok((done.map(|_| t.elapsed()), hole))
        }
        "revoke-node" => {
            let id = run.cluster.state.nodes[victim].id.clone();
            let org = id.split('/').next().unwrap_or_default().to_owned();
            let auth = run
                .cluster
                .state
                .authorities
                .iter()
                .find(|a| a.org == org)
                .ok_or("no authority")?
                .dir
                .join("admin.sock");
            client::call(
                &auth,
                &Request::NodesRevoke {
                    node_id: id.clone(),
                    reason: "scenario".into(),
                },
            )
            .map_err(|e| e.to_string())?;
            let t = Instant::now();
            let (expected, absent) = if single_org {
                run.expectations(&[victim])
            } else {
                let absent = others
                    .iter()
                    .map(|&i| (i, victim_service.clone()))
                    .collect();
                (run.expect_from(&others, &others), absent)
            };
            let (done, hole, _) = run.settle(&expected, &absent);
            let isolated = super::cluster::wait_until(LIMIT, || {
                others.iter().all(|&i| {
                    observe::peers(&run.cluster.state.nodes[i])
                        .is_some_and(|ps| ps.iter().all(|p| p.node_id != id || p.state != "up"))
                })
            });
            run.hold(
                "the revoked node is isolated: no session with it stays up",
                isolated,
                "",
            );
            run.hold(
                "its service is gone, the rest stays reachable",
                done.is_some(),
                "",
            );
            Ok((done.map(|_| t.elapsed()), hole))
        }
        "authority-down" => {
            let orgs: Vec<String> = run
                .cluster
                .state
                .authorities
                .iter()
                .map(|a| a.org.clone())
                .collect();
            for org in &orgs {
                run.cluster.kill_authority(org);
            }
            let t = Instant::now();
            run.cluster.kill_node(victim);
            std::thread::sleep(Duration::from_millis(500));
            run.cluster.start_node(victim)?;
            let (done, hole, _) = run.settle(&full(run), &[]);
            run.hold(
                "with every authority down, a restarted node re-peers and routing converges",
                done.is_some(),
                "",
            );
            Ok((done.map(|_| t.elapsed()), hole))
        }
        "restart-storm" => {
            let t = Instant::now();
            for i in 0..n {
                run.cluster.kill_node(i);
                run.cluster.start_node(i)?;
                std::thread::sleep(Duration::from_millis(200));
            }
            let (done, hole, loops) = run.settle(&full(run), &[]);
            run.hold(
                "after every node restarted, every node reaches every service",
                done.is_some(),
                "",
            );
            run.hold(
                "no persistent forwarding loop",
                loops.is_empty(),
                format!("{loops:?}"),
            );
            Ok((done.map(|_| t.elapsed()), hole))
        }
        other => Err(format!("unknown scenario {other}")),
    }
}

/// A human summary of a report.
pub fn summary(r: &Report) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("{v} ms"));
    let mut out = format!(
        "scenario {} on {} ({} nodes): converged in {} ms; after the fault: {} (black holes until {}); {} update batches; RSS per daemon mean {:.1} MiB, max {:.1} MiB\n",
        r.scenario,
        r.topology,
        r.nodes,
        r.converge_ms,
        opt(r.reconverge_ms),
        opt(r.black_hole_ms),
        r.updates_sent,
        r.rss_kb_mean as f64 / 1024.0,
        r.rss_kb_max as f64 / 1024.0
    );
    for i in &r.invariants {
        out.push_str(&format!(
            "  [{}] {}{}\n",
            if i.held { "ok" } else { "FAILED" },
            i.name,
            if i.held || i.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", i.detail)
            }
        ));
    }
    out.push_str(if r.ok {
        "all invariants held\n"
    } else {
        "an invariant failed\n"
    });
    out
}
