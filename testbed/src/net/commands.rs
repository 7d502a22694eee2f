//! The multi-process sub-commands of `trellis-testbed`: `up`, `status`, `down`, `link`,
//! and the hidden `emulate` that keeps the link emulator running for `up`.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cluster::{wait_until, Cluster, State, Timers};
use super::emulator::control;
use super::observe;
use crate::topology_file::resolve;

/// `up`: builds the network, starts the emulator in the background, starts the
/// daemons, leaves everything running, and says how to reach each node.
pub fn up(topology: &str, nodes: usize, orgs: usize, seed: u64, dir: &Path) -> Result<(), String> {
    let topo = resolve(topology, nodes, orgs, seed)?;
    println!(
        "creating {} authorities and joining {} nodes in {}",
        topo.orgs.len().max(1),
        topo.topology.nodes.len(),
        dir.display()
    );
    let mut cluster = Cluster::create(dir, &topo, Timers::default(), seed, true)?;
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
    cluster.state.emulator_pid = Some(child.id());
    println!(
        "link emulator running ({} links, control socket {}/control.sock)",
        cluster.state.links.len(),
        dir.display()
    );
    cluster.start_all()?;
    cluster.state.save()?;
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

fn is_ours(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("trellis-testbed"))
        .unwrap_or(false)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && is_ours(pid)
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
    if json {
        let out =
            serde_json::json!({"nodes": rows, "authorities": auths, "emulator_running": emulator});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>7} {:>9}",
        "NODE", "PID", "STATE", "PEERS", "ROUTES", "RSS"
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
            "{:<20} {:>8} {:>8} {:>7} {:>7} {:>9}",
            r["node"].as_str().unwrap_or(""),
            pid,
            state,
            peers,
            routes,
            rss
        );
    }
    for a in &auths {
        println!(
            "authority {:<10} {}",
            a["org"].as_str().unwrap_or(""),
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
    let mut pids: Vec<u32> = state.nodes.iter().filter_map(|n| n.pid).collect();
    pids.extend(state.authorities.iter().filter_map(|a| a.pid));
    pids.extend(state.emulator_pid);
    let ours: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    for pid in &ours {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let stopped = wait_until(Duration::from_secs(10), || ours.iter().all(|&p| !alive(p)));
    if !stopped {
        for pid in ours.iter().filter(|&&p| alive(p)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    println!("stopped {} processes", ours.len());
    if purge {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        println!("removed {}", dir.display());
    } else {
        let _ = std::fs::rename(dir.join("state.json"), dir.join("state.down.json"));
        println!("kept {} (add --purge to remove it)", dir.display());
    }
    Ok(())
}

/// `link set|cut|heal|flap|list`.
pub fn link(dir: &Path, request: serde_json::Value) -> Result<serde_json::Value, String> {
    control::request(&dir.join("control.sock"), &request)
}

/// Parses `link set` flags into an impairment request.
pub fn impairment(
    delay: Option<&str>,
    jitter: Option<&str>,
    loss: Option<&str>,
    rate: Option<&str>,
) -> Result<serde_json::Value, String> {
    let mut imp = serde_json::Map::new();
    imp.insert(
        "delay_ms".into(),
        delay
            .map(control::parse_delay)
            .transpose()?
            .unwrap_or(0.0)
            .into(),
    );
    imp.insert(
        "jitter_ms".into(),
        jitter
            .map(control::parse_delay)
            .transpose()?
            .unwrap_or(0.0)
            .into(),
    );
    imp.insert(
        "loss".into(),
        loss.map(control::parse_percent)
            .transpose()?
            .unwrap_or(0.0)
            .into(),
    );
    if let Some(rate) = rate {
        imp.insert("rate_kbps".into(), control::parse_rate(rate)?.into());
    }
    Ok(serde_json::Value::Object(imp))
}
