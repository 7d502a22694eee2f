//! The multi-process sub-commands of `trellis-testbed`: `up`, `status`, `down`, `link`,
//! and the hidden `emulate` that keeps the link emulator running for `up`.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use super::cluster::{Cluster, NetOptions};
use super::emulator::control;
use super::observe;
use super::state::{alive, stop_recorded, State};
use crate::topology_file::{resolve, TopologyFile};

/// `up`: builds the network, starts the emulator in the background, starts the
/// daemons, leaves everything running, and says how to reach each node. Every pid is
/// written to `DIR/state.json` as its process starts; if `up` fails it stops what it
/// started.
pub fn up(
    topology: &str,
    nodes: usize,
    orgs: usize,
    seed: u64,
    dir: &Path,
    net: NetOptions,
) -> Result<(), String> {
    let topo = resolve(topology, nodes, orgs, seed)?;
    if dir.join("state.json").exists() {
        return Err(format!(
            "{} already holds a testbed (state.json); run `down` or pick another --dir",
            dir.display()
        ));
    }
    let result = start(&topo, seed, dir, net);
    if let Err(e) = &result {
        if let Ok(state) = State::load(dir) {
            let stopped = stop_recorded(&state);
            let _ = std::fs::rename(dir.join("state.json"), dir.join("state.down.json"));
            eprintln!(
                "up failed: {e}; stopped the {} running processes it had started",
                stopped.running
            );
        }
    }
    result
}

fn start(topo: &TopologyFile, seed: u64, dir: &Path, net: NetOptions) -> Result<(), String> {
    println!(
        "creating {} authorities and joining {} nodes in {}",
        topo.orgs.len().max(1),
        topo.topology.nodes.len(),
        dir.display()
    );
    let mut cluster = Cluster::create(dir, topo, net, seed, true)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs/emulator.log"))
        .map_err(|e| e.to_string())?;
    let mut emulate = Command::new(exe);
    emulate
        .args(["emulate", "--seed", &seed.to_string(), "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut emulate, 0);
    let mut child = emulate.spawn().map_err(|e| format!("emulator: {e}"))?;
    cluster.state.emulator_pid = Some(child.id());
    cluster.state.save()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    if !line.starts_with("ready") {
        return Err(format!(
            "the link emulator did not start: {line:?} (see {}/logs/emulator.log)",
            dir.display()
        ));
    }
    println!(
        "link emulator running ({} links, control socket {}/control.sock)",
        cluster.state.links.len(),
        dir.display()
    );
    cluster.start_all()?;
    println!(
        "{} nodes running. Reach each with the trellis CLI, for example:",
        cluster.state.nodes.len()
    );
    for n in &cluster.state.nodes {
        println!(
            "  cargo run -q -p trellis-cli -- --data-dir {} status",
            n.dir.display()
        );
    }
    println!(
        "see the whole network: trellis-testbed status --dir {}",
        dir.display()
    );
    println!(
        "break a link:          trellis-testbed link cut A B --dir {}",
        dir.display()
    );
    println!(
        "stop it all:           trellis-testbed down --dir {}",
        dir.display()
    );
    Ok(())
}

/// `emulate` (hidden): serves the links of `DIR/state.json` until SIGTERM.
pub fn emulate(dir: &Path, seed: u64) -> Result<(), String> {
    let state = State::load(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (hub, _relays) = super::cluster::serve_links(&state, seed).await?;
        let _control = control::serve(&dir.join("control.sock"), hub)
            .await
            .map_err(|e| format!("control socket: {e}"))?;
        println!("ready");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, String>(())
    })
}

/// `status`: each process and what each node sees.
pub fn status(dir: &Path, json: bool) -> Result<(), String> {
    let state = State::load(dir)?;
    let mut rows = Vec::new();
    for n in &state.nodes {
        let running = n.pid.is_some_and(alive);
        let status = if running { observe::status(n) } else { None };
        rows.push(serde_json::json!({
            "node": n.id,
            "port": n.port,
            "pid": n.pid,
            "running": running,
            "peers_up": status.as_ref().map(|s| s.peers_up),
            "peers": status.as_ref().map(|s| s.peers_configured),
            "routes": status.as_ref().map(|s| s.routes),
            "rss_kb": n.pid.filter(|p| alive(*p)).and_then(observe::rss_kb),
        }));
    }
    let auths: Vec<_> = state
        .authorities
        .iter()
        .map(|a| serde_json::json!({"org": a.org, "pid": a.pid, "running": a.pid.is_some_and(alive), "port": a.port}))
        .collect();
    let emulator = state.emulator_pid.is_some_and(alive);
    // Which port is whose: every node listens on its own; each link has one relay port per
    // direction (the dialer of a → b dials a's relay_ab, which forwards to b).
    let links: Vec<_> = state
        .links
        .iter()
        .map(|l| {
            serde_json::json!({
                "a": state.nodes[l.a].id, "b": state.nodes[l.b].id,
                "relay_a_to_b": l.relay_ab, "relay_b_to_a": l.relay_ba,
            })
        })
        .collect();
    if json {
        let out = serde_json::json!({"nodes": rows, "authorities": auths, "links": links, "emulator_pid": state.emulator_pid, "emulator_running": emulator});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{:<20} {:>6} {:>8} {:>8} {:>7} {:>7} {:>9}",
        "NODE", "PORT", "PID", "STATE", "PEERS", "ROUTES", "RSS"
    );
    for r in &rows {
        let pid = r["pid"]
            .as_u64()
            .map_or_else(|| "-".into(), |p| p.to_string());
        let state = if r["running"].as_bool() == Some(true) {
            "running"
        } else {
            "stopped"
        };
        let peers = match (r["peers_up"].as_u64(), r["peers"].as_u64()) {
            (Some(u), Some(t)) => format!("{u}/{t}"),
            _ => "-".into(),
        };
        let routes = r["routes"]
            .as_u64()
            .map_or_else(|| "-".into(), |x| x.to_string());
        let rss = r["rss_kb"]
            .as_u64()
            .map_or_else(|| "-".into(), |k| format!("{:.1}MiB", k as f64 / 1024.0));
        println!(
            "{:<20} {:>6} {:>8} {:>8} {:>7} {:>7} {:>9}",
            r["node"].as_str().unwrap_or(""),
            r["port"].as_u64().unwrap_or(0),
            pid,
            state,
            peers,
            routes,
            rss
        );
    }
    for l in &links {
        println!(
            "link {} – {}: relay ports {} (→ {}) and {} (→ {})",
            l["a"].as_str().unwrap_or(""),
            l["b"].as_str().unwrap_or(""),
            l["relay_a_to_b"],
            l["b"].as_str().unwrap_or(""),
            l["relay_b_to_a"],
            l["a"].as_str().unwrap_or("")
        );
    }
    for a in &auths {
        println!(
            "authority {:<10} port {} {}",
            a["org"].as_str().unwrap_or(""),
            a["port"],
            if a["running"].as_bool() == Some(true) {
                "running"
            } else {
                "stopped"
            }
        );
    }
    println!(
        "link emulator {}",
        if emulator { "running" } else { "stopped" }
    );
    Ok(())
}

/// `down`: stops the processes `up` started (by pid, checking they are ours).
pub fn down(dir: &Path, purge: bool) -> Result<(), String> {
    let state = State::load(dir)?;
    let stopped = stop_recorded(&state);
    println!("stopped {} processes", stopped.running);
    let hung = (!stopped.killed.is_empty()).then(|| {
        let names: Vec<String> = stopped
            .killed
            .iter()
            .map(|pid| state.name_of(*pid))
            .collect();
        format!(
            "{} ignored SIGTERM for {:?} and needed SIGKILL: {} (their logs are in {}/logs)",
            names.len(),
            super::state::TERM_GRACE,
            names.join(", "),
            dir.display()
        )
    });
    if purge && hung.is_none() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        println!("removed {}", dir.display());
    } else {
        let _ = std::fs::rename(dir.join("state.json"), dir.join("state.down.json"));
        println!("kept {} (add --purge to remove it)", dir.display());
    }
    hung.map_or(Ok(()), Err)
}

/// `link set|cut|heal|flap|list`.
pub fn link(dir: &Path, request: serde_json::Value) -> Result<serde_json::Value, String> {
    control::request(&dir.join("control.sock"), &request)
}

/// The flags of `link set`, as typed; `None` keeps the link's current value.
#[derive(Clone, Debug, Default)]
pub struct LinkFlags<'a> {
    /// One-way delay, `50ms`.
    pub delay: Option<&'a str>,
    /// Jitter, `5ms`.
    pub jitter: Option<&'a str>,
    /// Independent loss, `5%`.
    pub loss: Option<&'a str>,
    /// Bandwidth cap, `1mbit`, or `off`.
    pub rate: Option<&'a str>,
    /// Gilbert–Elliott loss `P_ENTER,P_LEAVE,LOSS_IN_BAD` (`1%,30%,50%`), or `off`.
    pub burst: Option<&'a str>,
}

/// Parses `link set` flags into the fields of a partial impairment (an `update`
/// request): only the flags given change.
pub fn impairment(flags: &LinkFlags<'_>) -> Result<serde_json::Value, String> {
    let mut imp = serde_json::Map::new();
    if let Some(delay) = flags.delay {
        imp.insert("delay_ms".into(), control::parse_delay(delay)?.into());
    }
    if let Some(jitter) = flags.jitter {
        imp.insert("jitter_ms".into(), control::parse_delay(jitter)?.into());
    }
    if let Some(loss) = flags.loss {
        imp.insert("loss".into(), control::parse_percent(loss)?.into());
    }
    if let Some(rate) = flags.rate {
        let value = if rate.trim() == "off" {
            serde_json::Value::Null
        } else {
            control::parse_rate(rate)?.into()
        };
        imp.insert("rate_kbps".into(), value);
    }
    if let Some(burst) = flags.burst {
        imp.insert("burst".into(), parse_burst(burst)?);
    }
    if imp.is_empty() {
        return Err("nothing to set: give --delay, --jitter, --loss, --rate or --burst".into());
    }
    Ok(serde_json::Value::Object(imp))
}

/// `P_ENTER,P_LEAVE,LOSS_IN_BAD` (each `5%` or `0.05`) or `off`.
fn parse_burst(text: &str) -> Result<serde_json::Value, String> {
    if text.trim() == "off" {
        return Ok(serde_json::Value::Null);
    }
    let parts: Vec<&str> = text.split(',').collect();
    let [enter, leave, loss] = parts.as_slice() else {
        return Err(format!(
            "--burst {text:?}: write P_ENTER,P_LEAVE,LOSS_IN_BAD (e.g. 1%,30%,50%) or off"
        ));
    };
    Ok(serde_json::json!({
        "p_good_to_bad": control::parse_percent(enter)?,
        "p_bad_to_good": control::parse_percent(leave)?,
        "loss_in_bad": control::parse_percent(loss)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_set_sends_only_the_flags_given() {
        let flags = LinkFlags {
            loss: Some("2%"),
            ..LinkFlags::default()
        };
        let imp = impairment(&flags).unwrap();
        assert_eq!(imp, serde_json::json!({"loss": 0.02}));
    }

    #[test]
    fn link_set_parses_and_clears_bursts() {
        let flags = LinkFlags {
            burst: Some("1%,30%,50%"),
            rate: Some("off"),
            ..LinkFlags::default()
        };
        let imp = impairment(&flags).unwrap();
        assert_eq!(imp["burst"]["p_bad_to_good"], 0.3);
        assert_eq!(imp["rate_kbps"], serde_json::Value::Null);
        let off = LinkFlags {
            burst: Some("off"),
            ..LinkFlags::default()
        };
        assert_eq!(impairment(&off).unwrap()["burst"], serde_json::Value::Null);
        let bad = LinkFlags {
            burst: Some("1%,30%"),
            ..LinkFlags::default()
        };
        assert!(impairment(&bad).unwrap_err().contains("P_ENTER"));
        assert!(impairment(&LinkFlags::default()).is_err());
    }
}
