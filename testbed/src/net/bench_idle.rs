//! `trellis-testbed bench idle`: what a node costs at rest (docs/performance.md,
//! "An idle node").
//!
//! A star of real daemons in one org: the node `c` with 3 peers, default timers, peers
//! dialing directly. The peers start first; then `c` starts, and the time from its
//! spawn to its first session up and to all 3 is taken. `c` originates 100 services
//! (one bulk load); once every peer holds them, `c` is watched for `--secs` seconds:
//! its CPU time (user + system, from `/proc/PID/stat`), its context switches summed
//! over its threads (each is a wakeup: keepalives, timers), and its resident memory at
//! the end, with the part of it that is private to it. The peers' memory is reported
//! beside it. `--detect-ms MS` sets every node's failure-detection ping interval
//! (`[timers] detect_interval`, 200 ms by default): at rest, those pings are the work.

use std::time::{Duration, Instant};

use serde::Serialize;
use trellis_daemon::admin::{client, BulkRoute, Request};

use super::cluster::{wait_until, Cluster, NetOptions};
use super::observe;

const STAR: &str = "[[org]]\nname = \"idle\"\nnodes = [\"c\", \"p1\", \"p2\", \"p3\"]\n\
    [[link]]\na = \"idle/c\"\nb = \"idle/p1\"\n\
    [[link]]\na = \"idle/c\"\nb = \"idle/p2\"\n\
    [[link]]\na = \"idle/c\"\nb = \"idle/p3\"\n";

/// Services `c` originates.
const ROUTES: usize = 100;
/// `/proc` reports CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_S: f64 = 100.0;

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    /// From spawning `c` to its first session up, ms.
    pub first_session_ms: u64,
    /// ... to all 3 sessions up, ms.
    pub all_sessions_ms: u64,
    /// How long `c` was watched, s.
    pub watched_s: u64,
    /// `c`'s CPU over the watch, percent of one core.
    pub cpu_percent: f64,
    /// `c`'s CPU time over the watch, ms.
    pub cpu_ms: u64,
    /// Context switches of `c`'s threads per second over the watch.
    pub wakeups_per_s: f64,
    /// `c`'s resident memory at the end, KiB.
    pub rss_kb: u64,
    /// The part of it no other process shares (`Private_*` of `/proc/PID/smaps_rollup`:
    /// heap, stacks, written data), KiB. The rest is mostly the binary's code, mapped
    /// from the file and shared by every daemon started from it.
    pub private_kb: u64,
    /// The peers' resident memory at the end, KiB.
    pub peers_rss_kb: Vec<u64>,
    /// `c`'s threads.
    pub threads: usize,
    /// The failure-detection ping interval the nodes ran with, ms (`None`: the default).
    pub detect_interval_ms: Option<u64>,
}

/// User + system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Private (unshared) resident memory of a process, KiB.
fn private_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let sum = text
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Some(sum)
}

/// Context switches summed over a process's threads, and how many threads.
fn switches(pid: u32) -> Option<(u64, usize)> {
    let mut total = 0;
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // The thread ended meanwhile.
        };
        threads += 1;
        for line in text.lines() {
            if line.starts_with("voluntary_ctxt_switches:")
                || line.starts_with("nonvoluntary_ctxt_switches:")
            {
                total += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Some((total, threads))
}

/// Runs the idle benchmark in `dir`, watching for `secs` seconds.
pub fn run(secs: u64, detect_ms: Option<u64>, dir: &std::path::Path) -> Result<IdleReport, String> {
    let topo = crate::topology_file::parse(STAR)?;
    let net = NetOptions {
        direct: true,
        ..NetOptions::default()
    };
    let mut cluster = Cluster::create(dir, &topo, net, 1, false)?;
    if let Some(ms) = detect_ms {
        // Default timers write no `[timers]` table, so one can be added.
        for node in &cluster.state.nodes {
            let path = node.dir.join("trellis.toml");
            let mut text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            text.push_str(&format!("\n[timers]\ndetect_interval = \"{ms}ms\"\n"));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let outcome = watch(&mut cluster, secs).map(|mut r| {
        r.detect_interval_ms = detect_ms;
        r
    });
    cluster.stop_all(Duration::from_secs(10));
    outcome
}

fn watch(cluster: &mut Cluster, secs: u64) -> Result<IdleReport, String> {
    for i in 1..=3 {
        cluster.start_node(i)?;
    }
    let started = Instant::now();
    cluster.start_node(0)?;
    let c = cluster.state.nodes[0].clone();
    let pid = c.pid.ok_or("c has no process")?;
    let mut first = None;
    let all = wait_until(Duration::from_secs(60), || {
        let up = observe::status(&c).map_or(0, |s| s.peers_up);
        if up >= 1 && first.is_none() {
            first = Some(started.elapsed());
        }
        up >= 3
    });
    if !all {
        return Err("c's 3 sessions did not come up within 60 s".into());
    }
    let all_sessions = started.elapsed();
    let routes: Vec<BulkRoute> = (0..ROUTES)
        .map(|i| BulkRoute {
            service: format!("s{i}.idle"),
            endpoint: "127.0.0.1:9".into(),
            protocol: "tcp".into(),
        })
        .collect();
    client::call(
        &observe::socket(&c),
        &Request::RoutesAdvertiseBulk { routes },
    )
    .map_err(|e| format!("load at c: {e}"))?;
    let held = wait_until(Duration::from_secs(60), || {
        cluster.state.nodes[1..]
            .iter()
            .all(|p| observe::status(p).is_some_and(|s| s.routes >= ROUTES))
    });
    if !held {
        return Err(format!("the peers did not all get c's {ROUTES} routes"));
    }
    let (cpu0, (sw0, _)) = (
        cpu_ticks(pid).ok_or("cannot read c's CPU time")?,
        switches(pid).ok_or("cannot read c's threads")?,
    );
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = from.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(pid).ok_or("cannot read c's CPU time")?;
    let (sw1, threads) = switches(pid).ok_or("cannot read c's threads")?;
    let cpu_s = cpu1.saturating_sub(cpu0) as f64 / TICKS_PER_S;
    let rss = |n: &super::state::NodeState| n.pid.and_then(observe::rss_kb).unwrap_or(0);
    Ok(IdleReport {
        first_session_ms: first.unwrap_or(all_sessions).as_millis() as u64,
        all_sessions_ms: all_sessions.as_millis() as u64,
        watched_s: secs,
        cpu_percent: cpu_s / elapsed * 100.0,
        cpu_ms: (cpu_s * 1000.0) as u64,
        wakeups_per_s: sw1.saturating_sub(sw0) as f64 / elapsed,
        rss_kb: rss(&c),
        private_kb: private_kb(pid).unwrap_or(0),
        peers_rss_kb: cluster.state.nodes[1..].iter().map(rss).collect(),
        threads,
        detect_interval_ms: None,
    })
}

/// The report as text.
pub fn summary(r: &IdleReport) -> String {
    let peers: Vec<String> = r
        .peers_rss_kb
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    format!(
        "idle node c: 3 peers, {ROUTES} routes originated, failure detection every {}, watched {} s\n\
         start → first session up   {:>6} ms (all 3: {} ms)\n\
         CPU                        {:>6.2} % of one core ({} ms)\n\
         wakeups (context switches) {:>6.1} /s over {} threads\n\
         RSS                        {:>6.1} MiB, {:.1} MiB of it private (peers' RSS: {} MiB)\n",
        r.detect_interval_ms
            .map_or("200 ms (default)".to_owned(), |ms| format!("{ms} ms")),
        r.watched_s,
        r.first_session_ms,
        r.all_sessions_ms,
        r.cpu_percent,
        r.cpu_ms,
        r.wakeups_per_s,
        r.threads,
        r.rss_kb as f64 / 1024.0,
        r.private_kb as f64 / 1024.0,
        peers.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time_and_threads() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(private_kb(pid).is_some_and(|k| k > 0));
        let (_, threads) = switches(pid).expect("own threads");
        assert!(threads >= 1);
    }
}
