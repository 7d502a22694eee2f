//! Fault scenarios against real daemons: each brings a network up, every node originates
//! one service, a fault is injected, and the scenario measures convergence, black-hole
//! time (from the fault on), update batches sent and memory, and checks its invariants
//! against what the topology allows under valley-free export (docs/testbed.md).

mod degrade;
mod faults;
mod selection;
mod telemetry;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::cluster::{Cluster, NetOptions, Timers};
use super::emulator::Impairment;
use crate::topology_file::resolve;
use watch::{Run, Watch};

/// Every scenario, by name.
pub const SCENARIOS: [&str; 12] = [
    "converge",
    "kill-node",
    "restart-node",
    "partition-heal",
    "flap",
    "lossy-link",
    "revoke-node",
    "authority-down",
    "restart-storm",
    "degrade-link",
    "peer-selection",
    "telemetry-outage",
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
    /// Timers and ports.
    pub net: NetOptions,
    /// Start an OTLP receiver, have every daemon export to it, and report a summary per
    /// node (always on for `telemetry-outage`).
    pub otlp: bool,
}

/// What the link emulator did on one link (both directions).
#[derive(Clone, Debug, Serialize)]
pub struct LinkCounters {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Datagrams delivered (each after the link's delay and jitter).
    pub forwarded: u64,
    /// Dropped by random or bursty loss.
    pub dropped_loss: u64,
    /// Dropped while the link was cut.
    pub dropped_cut: u64,
    /// Dropped because a direction's queue was full (rate cap).
    pub dropped_queue: u64,
    /// One-way delay configured at the end, ms.
    pub delay_ms: f64,
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

/// One measured stretch of a scenario after its fault ("partitioned", "after the heal").
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// What was going on.
    pub name: String,
    /// From the start of the phase to the expected state, ms (`None`: not reached, or
    /// not asked for).
    pub reached_ms: Option<u64>,
    /// From the start of the phase to the last sample with a black hole, ms.
    pub black_hole_ms: Option<u64>,
    /// Samples that found a black hole.
    pub black_hole_samples: usize,
    /// Samples taken.
    pub samples: usize,
    /// (node, service) pairs that kept looping for [`PERSISTENT_LOOP`] in this phase.
    pub persistent_loops: Vec<(String, String)>,
}

/// What a scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: String,
    /// Topology.
    pub topology: String,
    /// The timer set the nodes ran with (`default` or `fast`).
    pub timers: Timers,
    /// Nodes.
    pub nodes: usize,
    /// From the first advertisement to the expected state, ms.
    pub converge_ms: u64,
    /// From the start of the last phase (the fault, or the heal) to the expected state, ms.
    pub reconverge_ms: Option<u64>,
    /// From the start of the last phase to its last sample with a black hole, ms.
    pub black_hole_ms: Option<u64>,
    /// Every phase after the fault, in order (the last one gives the two fields above).
    pub phases: Vec<Phase>,
    /// Longest time one (node, service) pair kept looping in consecutive samples, ms.
    pub longest_loop_ms: u64,
    /// Slowest sampling round (every node's table read once), ms.
    pub slowest_sample_ms: u64,
    /// Update batches sent by all routers over the whole run, summed over every daemon
    /// incarnation (a killed or restarted daemon counts up to its last reading). One
    /// batch carries any number of announcements and withdrawals.
    pub update_batches_sent: u64,
    /// Mean resident memory per daemon at the end, KiB.
    pub rss_kb_mean: u64,
    /// Largest resident memory of a daemon at the end, KiB.
    pub rss_kb_max: u64,
    /// Named timings, ms: `converge` (first advertisement to the expected state),
    /// `detect` (the fault to every neighbour showing the session down), `reroute` (the
    /// fault to the expected state), `heal` (the heal to the expected state), `revoke`
    /// (the revocation to every session with the node closed).
    pub timing: std::collections::BTreeMap<String, u64>,
    /// Named counts: `jitter_path_changes` and `jitter_cost_changes` (degrade-link: best
    /// paths and link costs changed in a minute of jitter, every node together);
    /// `sessions_max`, `sessions_mean_tenths` and `sessions_established` (peer-selection:
    /// most sessions of one node, the mean per node in tenths, and sessions brought up in
    /// all, churn included).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counts: std::collections::BTreeMap<String, u64>,
    /// The link emulator's counters per link, at the end.
    pub links: Vec<LinkCounters>,
    /// Daemons that ignored SIGTERM at the end and needed SIGKILL (fails the run).
    pub sigkilled: Vec<String>,
    /// The slowest exit of a daemon after SIGTERM at the end, ms.
    pub term_exit_ms_max: u64,
    /// Invariants checked.
    pub invariants: Vec<Invariant>,
    /// What the OTLP receiver got from each daemon (`--otlp`, `telemetry-outage`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub telemetry: Vec<trellis_otlp_receiver::Summary>,
    /// All held.
    pub ok: bool,
}

/// How long a forwarding loop must last, seen in every sample, to fail the invariant.
pub const PERSISTENT_LOOP: Duration = Duration::from_secs(2);

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
    let topo = if opts.name == "peer-selection" {
        selection::topology(opts.nodes)?
    } else {
        resolve(&opts.topology, opts.nodes, 3, opts.seed)?
    };
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
    if opts.name == "peer-selection" {
        let net = NetOptions {
            bootstrap: selection::BOOTSTRAP,
            ..opts.net
        };
        let mut cluster = Cluster::create(dir, topo, net, opts.seed, false)?;
        let collector = collector_for(opts, &mut cluster)?;
        let mut run = Run::new(cluster, topo);
        let took = selection::select(&mut run)?;
        return Ok(finish(opts, run, took, collector));
    }
    let mut cluster = Cluster::create(dir, topo, opts.net, opts.seed, false)?;
    let mut collector = collector_for(opts, &mut cluster)?;
    let mut run = Run::new(cluster, topo);
    run.cluster.start_emulator(opts.seed)?;
    let n = run.cluster.state.nodes.len();
    if opts.name == "lossy-link" {
        for (_, _, link) in run.cluster.hub.lock().map_err(|_| "hub")?.links() {
            link.set(Impairment {
                delay_ms: 20.0,
                jitter_ms: 5.0,
                loss: 0.05,
                ..Impairment::default()
            });
        }
    }
    run.cluster.start_all()?;
    let mut w = Watch::start();
    for i in 0..n {
        run.advertise(i)?;
    }
    let (expected, absent) = run.expectations(&[]);
    let converged = run.settle(&mut w, &expected, &absent);
    let detail = if converged.is_some() {
        format!(
            "{} pairs delivered, {} withheld by valley-free export",
            expected.len(),
            absent.len()
        )
    } else {
        w.problems()
    };
    run.hold(
        "every node reaches every service valley-free export allows, and holds no other",
        converged.is_some(),
        detail,
    );
    run.hold(
        "no persistent forwarding loop while converging",
        w.persistent.is_empty(),
        format!("{:?}", w.persistent),
    );
    if converged.is_some() {
        match collector.as_mut() {
            Some(c) if opts.name == "telemetry-outage" => {
                telemetry::outage(&mut run, c, (&expected, &absent))?;
            }
            _ => faults::fault(&mut run, &opts.name, n / 2)?,
        }
    }
    Ok(finish(opts, run, converged, collector))
}

/// The receiver the daemons of `cluster` export to, if the scenario asks for one.
fn collector_for(
    opts: &Options,
    cluster: &mut Cluster,
) -> Result<Option<telemetry::Collector>, String> {
    if !opts.otlp && opts.name != "telemetry-outage" {
        return Ok(None);
    }
    let collector = telemetry::Collector::start()?;
    cluster.export_to(&collector.endpoint(), telemetry::INTERVAL_MS);
    Ok(Some(collector))
}

/// Stops the network and reports; `converged` is when the scenario's first expected
/// state was reached.
fn finish(
    opts: &Options,
    mut run: Run,
    converged: Option<Duration>,
    collector: Option<telemetry::Collector>,
) -> Report {
    let n = run.cluster.state.nodes.len();
    let converge_ms = ms(converged).unwrap_or(0);
    run.record_counters();
    let rss: Vec<u64> = run
        .cluster
        .state
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .filter_map(super::observe::rss_kb)
        .collect();
    run.time("converge", converged);
    let links = run
        .cluster
        .hub
        .lock()
        .map(|hub| {
            hub.links()
                .into_iter()
                .map(|(a, b, link)| {
                    let st = link.stats();
                    LinkCounters {
                        a,
                        b,
                        forwarded: st.forwarded,
                        dropped_loss: st.dropped_loss,
                        dropped_cut: st.dropped_cut,
                        dropped_queue: st.dropped_queue,
                        delay_ms: link.impairment().delay_ms,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let stopped = run.cluster.stop_all(super::state::TERM_GRACE);
    let hung = stopped.killed;
    run.hold(
        "every daemon exits on SIGTERM (none needed SIGKILL)",
        hung.is_empty(),
        if hung.is_empty() {
            "all exited".to_owned()
        } else {
            format!("needed SIGKILL: {}", hung.join(", "))
        },
    );
    let ok = run.invariants.iter().all(|i| i.held);
    let last = run.phases.last();
    Report {
        scenario: opts.name.clone(),
        topology: if opts.name == "peer-selection" {
            "one org, no configured peers".into()
        } else {
            opts.topology.clone()
        },
        timers: opts.net.timers,
        nodes: n,
        converge_ms,
        reconverge_ms: last.and_then(|p| p.reached_ms),
        black_hole_ms: last.and_then(|p| p.black_hole_ms),
        phases: run.phases.clone(),
        update_batches_sent: run.batches_sent(),
        longest_loop_ms: ms(Some(run.longest_loop)).unwrap_or(0),
        slowest_sample_ms: ms(Some(run.slowest_sample)).unwrap_or(0),
        rss_kb_mean: if rss.is_empty() {
            0
        } else {
            rss.iter().sum::<u64>() / rss.len() as u64
        },
        rss_kb_max: rss.iter().copied().max().unwrap_or(0),
        timing: run.timing,
        counts: run.counts,
        links,
        sigkilled: hung,
        term_exit_ms_max: ms(Some(stopped.slowest)).unwrap_or(0),
        invariants: run.invariants,
        // Read after the daemons stopped: their last export (on SIGTERM) is in.
        telemetry: collector.map(|c| c.summaries()).unwrap_or_default(),
        ok,
    }
}

/// A human summary of a report.
pub fn summary(r: &Report) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("{v} ms"));
    let mut out = format!(
        "scenario {} on {} ({} nodes, {} timers): converged in {} ms; {} update batches sent; RSS per daemon mean {:.1} MiB, max {:.1} MiB\n",
        r.scenario,
        r.topology,
        r.nodes,
        r.timers,
        r.converge_ms,
        r.update_batches_sent,
        r.rss_kb_mean as f64 / 1024.0,
        r.rss_kb_max as f64 / 1024.0
    );
    for p in &r.phases {
        out.push_str(&format!(
            "  {}: expected state after {}; black holes until {} ({} of {} samples)\n",
            p.name,
            opt(p.reached_ms),
            opt(p.black_hole_ms),
            p.black_hole_samples,
            p.samples
        ));
        if !p.persistent_loops.is_empty() {
            out.push_str(&format!("    persistent loops: {:?}\n", p.persistent_loops));
        }
    }
    if !r.counts.is_empty() {
        let c: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("  counts: {}\n", c.join(", ")));
    }
    if !r.timing.is_empty() {
        let t: Vec<String> = r
            .timing
            .iter()
            .map(|(k, v)| format!("{k} {v} ms"))
            .collect();
        out.push_str(&format!("  timing: {}\n", t.join(", ")));
    }
    for l in r
        .links
        .iter()
        .filter(|l| l.dropped_loss + l.dropped_cut + l.dropped_queue > 0)
    {
        out.push_str(&format!(
            "  link {}–{}: {} forwarded, dropped {} by loss, {} while cut, {} by queue\n",
            l.a, l.b, l.forwarded, l.dropped_loss, l.dropped_cut, l.dropped_queue
        ));
    }
    out.push_str(&format!(
        "  every daemon stopped on SIGTERM within {} ms\n",
        r.term_exit_ms_max
    ));
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
    if !r.telemetry.is_empty() {
        out.push_str("telemetry received per node:\n");
        out.push_str(&trellis_otlp_receiver::render_text(&r.telemetry));
    }
    out.push_str(if r.ok {
        "all invariants held\n"
    } else {
        "an invariant failed\n"
    });
    out
}
