//! `trellis-testbed`: the developer's testbed command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use trellis_testbed::net::cluster::{NetOptions, Timers};
use trellis_testbed::run::{healthy, run, summary, SimOptions};
use trellis_testbed::sim::select::{self, SelectOptions};
use trellis_testbed::sim::{LinkParams, LinkSpread, SimConfig};
use trellis_testbed::topology::Shape;

#[derive(Parser)]
#[command(
    name = "trellis-testbed",
    version,
    about = "Trellis testbed: simulate and run multi-node networks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate N routing cores in one process under a virtual clock.
    Sim(SimArgs),
    /// Study peer selection inside one org: N nodes on a plane, each running the
    /// selector in rounds against a directory of every other node.
    SimSelect(SelectArgs),
    /// Start a whole network of real daemons (authorities, nodes, link emulator) and leave it running.
    Up {
        /// line, ring, star, grid, mesh, random, multi-org, or a .toml topology file.
        #[arg(long, default_value = "ring")]
        topology: String,
        /// Nodes (built-in topologies).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Orgs (multi-org only; default 3).
        #[arg(long)]
        orgs: Option<usize>,
        /// Seed (random topologies, emulated loss).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Network dir.
        #[arg(long, default_value = "trellis-net")]
        dir: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Show the processes of a network and what each node sees.
    Status {
        /// Network dir.
        #[arg(long, default_value = "trellis-net")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the processes `up` started (by pid); keep the dir unless --purge.
    Down {
        /// Network dir.
        #[arg(long, default_value = "trellis-net")]
        dir: PathBuf,
        /// Also remove the network dir.
        #[arg(long)]
        purge: bool,
    },
    /// Change a link at runtime through the link emulator.
    Link {
        #[command(subcommand)]
        op: LinkOp,
        /// Network dir.
        #[arg(long, global = true, default_value = "trellis-net")]
        dir: PathBuf,
    },
    /// Run a fault scenario against real daemons and check its invariants.
    Scenario {
        /// converge, kill-node, restart-node, partition-heal, flap, lossy-link, revoke-node, authority-down, restart-storm.
        name: String,
        /// Nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Topology (name or .toml file).
        #[arg(long, default_value = "ring")]
        topology: String,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Start an OTLP receiver, have every daemon export traces, metrics and logs to
        /// it, and print what arrived per node at the end.
        #[arg(long)]
        otlp: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Three orgs, nine nodes: converge, reroute around a cut link, cut off a revoked node.
    Demo,
    /// Benchmarks with real daemons (docs/performance.md): `dataplane`: one TCP
    /// connection through 1 and 3 hops against direct TCP, side by side; `table`: a full
    /// table from one daemon to its peer; `latency`: one change through a line of
    /// daemons; `idle`: what a node with 3 peers costs at rest.
    Bench {
        /// What to measure: dataplane, table, latency or idle.
        what: String,
        /// table: the table sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        routes: Vec<usize>,
        /// table: run each size again with the receiver polled 10×/s (status and
        /// routes list), and report the slowdown.
        #[arg(long)]
        poll: bool,
        /// table: run each size between two BIRD 2 daemons too, in the same run (skipped
        /// with a message where `bird` is not installed).
        #[arg(long)]
        bird: bool,
        /// latency: sessions in the line.
        #[arg(long, default_value_t = 10)]
        hops: usize,
        /// latency: repetitions of each change.
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// idle: seconds to watch the idle node.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// idle: the nodes' failure-detection ping interval, ms (default: the daemon's).
        #[arg(long)]
        detect_ms: Option<u64>,
        /// Bytes per bulk transfer (MiB).
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Bulk transfers per path (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Round trips and new connections per path.
        #[arg(long, default_value_t = 2000)]
        rounds: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// (internal) Serve the link emulator of a network started by `up`.
    #[command(hide = true)]
    Emulate {
        /// Network dir.
        #[arg(long)]
        dir: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// How a network of real daemons is built.
#[derive(clap::Args)]
struct NetArgs {
    /// Timers written into the nodes: `default` (the daemon's own: what a real node
    /// does) or `fast` (hold 3 s, graceful restart 5 s, redial up to 2 s, trust refresh 2 s).
    #[arg(long, default_value = "default")]
    timers: Timers,
    /// First UDP port of the network (it takes one per authority and node and two per
    /// link, consecutively). Default: free ports in 20000-29999.
    #[arg(long)]
    base_port: Option<u16>,
}

impl NetArgs {
    fn options(&self) -> NetOptions {
        NetOptions {
            timers: self.timers,
            base_port: self.base_port,
            direct: false,
            bootstrap: 0,
        }
    }
}

#[derive(Subcommand)]
enum LinkOp {
    /// Change delay, jitter, loss, bursty loss or rate of the link A–B (flags not given keep their values).
    Set {
        /// One end (node id).
        a: String,
        /// The other end.
        b: String,
        /// One-way delay, e.g. 50ms.
        #[arg(long)]
        delay: Option<String>,
        /// Jitter, e.g. 5ms.
        #[arg(long)]
        jitter: Option<String>,
        /// Loss, e.g. 5%.
        #[arg(long)]
        loss: Option<String>,
        /// Bandwidth cap, e.g. 1mbit, or off.
        #[arg(long)]
        rate: Option<String>,
        /// Gilbert–Elliott bursty loss: P_ENTER,P_LEAVE,LOSS_IN_BAD (chance per datagram
        /// to enter the bad state, to leave it, loss while in it), e.g. 1%,30%,50%; or off.
        #[arg(long)]
        burst: Option<String>,
    },
    /// Cut the link A–B.
    Cut {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// Heal the link A–B.
    Heal {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// Flap the link A–B: down and up every half period.
    Flap {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Period, e.g. 2s.
        #[arg(long, default_value = "2s")]
        period: String,
    },
    /// Every link and its state.
    List,
}

#[derive(clap::Args)]
struct SimArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// line, ring, star, grid, mesh, random or multi-org.
    #[arg(long, default_value = "random")]
    topology: Shape,
    /// Orgs in a multi-org topology (default 3).
    #[arg(long)]
    orgs: Option<usize>,
    /// Seed of the topology and of loss draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One-way delay of every link, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    link_delay_ms: f64,
    /// Loss per transmission: a fraction (0.05) or a percentage (5%).
    #[arg(long, default_value = "0")]
    loss: String,
    /// Each link's one-way delay is drawn (from the seed) in
    /// [link-delay-ms, link-delay-ms + this], in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    link_delay_spread_ms: f64,
    /// Each link's loss is drawn (from the seed) in [loss, max(loss, this)]:
    /// a fraction or a percentage.
    #[arg(long, default_value = "0")]
    link_loss_max: String,
    /// Link costs from the scoring formula (base 10, RTT twice the link's delay,
    /// its loss) instead of the common delay in milliseconds.
    #[arg(long)]
    scored_costs: bool,
    /// Batching interval of every router (MRAI), in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    mrai_ms: f64,
    /// How long a neighbour takes to notice a failure, in milliseconds.
    #[arg(long, default_value_t = 300.0)]
    detect_ms: f64,
    /// Fail this node (index or node id) after convergence and measure again.
    #[arg(long)]
    fail_node: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SelectArgs {
    /// Number of nodes (one org).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Seed of the placement, the losses and the jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One-way delay across the diagonal of the square, on top of 1 ms, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    max_delay_ms: f64,
    /// Each pair's loss is drawn in [0, this]: a fraction or a percentage.
    #[arg(long, default_value = "1%")]
    loss_max: String,
    /// Each round every measured cost is off by up to ± this many percent.
    #[arg(long, default_value_t = 10.0)]
    jitter_pct: f64,
    /// Seed nodes (indices 0, 1, ...) every node knows from its config.
    #[arg(long, default_value_t = 2)]
    bootstrap: usize,
    /// Most rounds to run.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Keep running all the rounds after the first one without changes (to see
    /// whether changes come back).
    #[arg(long)]
    run_all: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// A loss given as a fraction (0.05) or a percentage (5%), for option `--name`.
fn parse_loss(name: &str, s: &str) -> Result<f64> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("--{name} {s:?} is not a number"))?;
    let v = v / scale;
    if !(0.0..1.0).contains(&v) {
        bail!("--{name} {s:?} must be in [0, 1) (or [0%, 100%))");
    }
    Ok(v)
}

fn millis(name: &str, v: f64) -> Result<Duration> {
    if !(0.0..=3_600_000.0).contains(&v) {
        bail!("--{name} {v} must be between 0 and 3600000");
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

/// `--orgs`: only for multi-org, at least 2; 3 when not given.
fn orgs_for(topology: &str, orgs: Option<usize>) -> Result<usize> {
    let multi_org = topology == "multi-org";
    match orgs {
        None => Ok(3),
        Some(k) if !multi_org => {
            bail!("--orgs {k} applies only to --topology multi-org, not {topology}")
        }
        Some(k) if k < 2 => bail!("--orgs {k}: a multi-org topology needs at least 2 orgs"),
        Some(k) => Ok(k),
    }
}

fn sim(a: SimArgs) -> Result<ExitCode> {
    if !(2..=100_000).contains(&a.nodes) {
        bail!("--nodes {} must be between 2 and 100000", a.nodes);
    }
    let orgs = orgs_for(&a.topology.to_string(), a.orgs)?;
    let fail_node = match &a.fail_node {
        None => None,
        Some(x) => Some(match x.parse::<usize>() {
            Ok(i) => i,
            Err(_) => {
                let topo = trellis_testbed::topology::Topology::generate(
                    a.topology, a.nodes, orgs, a.seed,
                )
                .map_err(anyhow::Error::msg)?;
                topo.nodes
                    .iter()
                    .position(|n| n.as_str() == x)
                    .with_context(|| format!("--fail-node {x:?}: no such node"))?
            }
        }),
    };
    let opts = SimOptions {
        nodes: a.nodes,
        shape: a.topology,
        orgs,
        seed: a.seed,
        link: LinkParams {
            delay: millis("link-delay-ms", a.link_delay_ms)?,
            loss: parse_loss("loss", &a.loss)?,
        },
        config: SimConfig {
            mrai: millis("mrai-ms", a.mrai_ms)?,
            detect: millis("detect-ms", a.detect_ms)?,
            graceful_restart: false,
            seed: a.seed,
            spread: LinkSpread {
                delay_spread: millis("link-delay-spread-ms", a.link_delay_spread_ms)?,
                loss_max: parse_loss("link-loss-max", &a.link_loss_max)?,
            },
            scored_costs: a.scored_costs,
        },
        fail_node,
        limit: Duration::from_secs(3600),
    };
    let report = run(&opts).map_err(anyhow::Error::msg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(if healthy(&report) {
        ExitCode::SUCCESS
    } else {
        eprintln!("invariant failed: some connected pair is not delivered or loops");
        ExitCode::from(1)
    })
}

fn sim_select(a: SelectArgs) -> Result<ExitCode> {
    let opts = SelectOptions {
        nodes: a.nodes,
        seed: a.seed,
        max_delay_ms: a.max_delay_ms,
        loss_max: parse_loss("loss-max", &a.loss_max)?,
        jitter_pct: a.jitter_pct,
        bootstrap: a.bootstrap,
        rounds: a.rounds,
        run_all: a.run_all,
    };
    let report = select::run(&opts).map_err(anyhow::Error::msg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", select::summary(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn net(cmd: Cmd) -> Result<ExitCode> {
    use trellis_testbed::net::{commands, demo, scenario};
    let msg = anyhow::Error::msg;
    match cmd {
        Cmd::Sim(a) => sim(a),
        Cmd::SimSelect(a) => sim_select(a),
        Cmd::Up {
            topology,
            nodes,
            orgs,
            seed,
            dir,
            net,
        } => {
            let orgs = orgs_for(&topology, orgs)?;
            commands::up(&topology, nodes, orgs, seed, &dir, net.options()).map_err(msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { dir, json } => {
            commands::status(&dir, json).map_err(msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down { dir, purge } => {
            commands::down(&dir, purge).map_err(msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Emulate { dir, seed } => {
            commands::emulate(&dir, seed).map_err(msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Link { op, dir } => {
            let request = match op {
                LinkOp::Set {
                    a,
                    b,
                    delay,
                    jitter,
                    loss,
                    rate,
                    burst,
                } => {
                    let imp = commands::impairment(&commands::LinkFlags {
                        delay: delay.as_deref(),
                        jitter: jitter.as_deref(),
                        loss: loss.as_deref(),
                        rate: rate.as_deref(),
                        burst: burst.as_deref(),
                    })
                    .map_err(msg)?;
                    serde_json::json!({"op": "update", "a": a, "b": b, "impairment": imp})
                }
                LinkOp::Cut { a, b } => serde_json::json!({"op": "cut", "a": a, "b": b}),
                LinkOp::Heal { a, b } => serde_json::json!({"op": "heal", "a": a, "b": b}),
                LinkOp::Flap { a, b, period } => {
                    let ms = trellis_testbed::net::emulator::control::parse_delay(&period)
                        .map_err(msg)?;
                    serde_json::json!({"op": "flap", "a": a, "b": b, "period_ms": ms as u64})
                }
                LinkOp::List => serde_json::json!({"op": "list"}),
            };
            let answer = commands::link(&dir, request).map_err(msg)?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Scenario {
            name,
            nodes,
            topology,
            seed,
            json,
            otlp,
            net,
        } => {
            let report = scenario::run(&scenario::Options {
                name,
                nodes,
                topology,
                seed,
                dir: None,
                net: net.options(),
                otlp,
            })
            .map_err(msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", scenario::summary(&report));
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Bench {
            what,
            routes,
            poll,
            bird,
            hops,
            reps,
            secs,
            detect_ms,
            mib,
            runs,
            rounds,
            json,
        } => {
            use trellis_testbed::net::{bench, bench_idle, bench_latency, bench_table};
            fn show<T: serde::Serialize>(json: bool, report: &T, text: String) -> Result<()> {
                if json {
                    println!("{}", serde_json::to_string_pretty(report)?);
                } else {
                    print!("{text}");
                }
                Ok(())
            }
            let scratch = |name: &str| {
                let dir = std::env::temp_dir()
                    .join(format!("trellis-bench-{name}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                dir
            };
            match what.as_str() {
                "table" => {
                    let report = bench_table::run(&routes, poll, bird).map_err(msg)?;
                    show(json, &report, bench_table::summary(&report))?;
                }
                "latency" => {
                    let dir = scratch("latency");
                    let report = bench_latency::run(hops, reps, &dir);
                    let _ = std::fs::remove_dir_all(&dir);
                    let report = report.map_err(msg)?;
                    show(json, &report, bench_latency::summary(&report))?;
                }
                "idle" => {
                    let dir = scratch("idle");
                    let report = bench_idle::run(secs, detect_ms, &dir);
                    let _ = std::fs::remove_dir_all(&dir);
                    let report = report.map_err(msg)?;
                    show(json, &report, bench_idle::summary(&report))?;
                }
                "dataplane" => {
                    let report = bench::run(&bench::Options {
                        bytes: mib << 20,
                        runs: runs.max(1),
                        rounds: rounds.max(1),
                    })
                    .map_err(msg)?;
                    show(json, &report, bench::summary(&report))?;
                }
                other => {
                    bail!("bench {other:?}: the benchmarks are: dataplane, table, latency, idle")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo => {
            demo::run().map_err(msg)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    // Multi-call: `trellis-testbed trellisd ...` is the daemon, so one build provides
    // every process a network needs.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "trellisd") {
        return trellis_daemon::cli::main_from(args.into_iter().skip(1));
    }
    let cli = Cli::parse();
    let result = net(cli.cmd);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
