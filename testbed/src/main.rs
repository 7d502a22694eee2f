//! `trellis-testbed`: the developer's testbed command.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use trellis_testbed::run::{healthy, run, summary, SimOptions};
use trellis_testbed::sim::{LinkParams, SimConfig};
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
}

#[derive(clap::Args)]
struct SimArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// line, ring, star, grid, random or multi-org.
    #[arg(long, default_value = "random")]
    topology: Shape,
    /// Orgs in a multi-org topology.
    #[arg(long, default_value_t = 3)]
    orgs: usize,
    /// Seed of the topology and of loss draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One-way delay of every link, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    link_delay_ms: f64,
    /// Loss per transmission: a fraction (0.05) or a percentage (5%).
    #[arg(long, default_value = "0")]
    loss: String,
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

fn parse_loss(s: &str) -> Result<f64> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("--loss {s:?} is not a number"))?;
    let v = v / scale;
    if !(0.0..1.0).contains(&v) {
        bail!("--loss {s:?} must be in [0, 1) (or [0%, 100%))");
    }
    Ok(v)
}

fn millis(name: &str, v: f64) -> Result<Duration> {
    if !(0.0..=3_600_000.0).contains(&v) {
        bail!("--{name} {v} must be between 0 and 3600000");
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

fn sim(a: SimArgs) -> Result<ExitCode> {
    if !(2..=100_000).contains(&a.nodes) {
        bail!("--nodes {} must be between 2 and 100000", a.nodes);
    }
    let fail_node = match &a.fail_node {
        None => None,
        Some(x) => Some(match x.parse::<usize>() {
            Ok(i) => i,
            Err(_) => {
                let topo = trellis_testbed::topology::Topology::generate(
                    a.topology, a.nodes, a.orgs, a.seed,
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
        orgs: a.orgs,
        seed: a.seed,
        link: LinkParams {
            delay: millis("link-delay-ms", a.link_delay_ms)?,
            loss: parse_loss(&a.loss)?,
        },
        config: SimConfig {
            mrai: millis("mrai-ms", a.mrai_ms)?,
            detect: millis("detect-ms", a.detect_ms)?,
            graceful_restart: false,
            seed: a.seed,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Sim(a) => sim(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
