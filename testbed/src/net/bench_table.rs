//! `trellis-testbed bench table`: how fast a full table crosses one session between two
//! real daemons (docs/performance.md, "Full table, daemon to daemon").
//!
//! For each size, a fresh pair `a — b` in one org (peers dial directly, default timers).
//! `a` gets the whole table as one bulk load (`RoutesAdvertiseBulk`, what
//! `trellis routes advertise --file` sends); meanwhile `b`'s status is read every 5 ms.
//! Reported: when `a` answered (the load committed), when `b` held 99 % and 100 % of
//! the routes (from the moment the load was sent), routes per second to 100 %, and the
//! resident memory of both daemons, with `b`'s growth per route.
//!
//! With `--poll`, each size runs a second time on a fresh pair while another thread asks
//! `b` for its status and its whole table (`trellis status`, `trellis routes list`) ten
//! times a second, as a dashboard would; the slowdown of the 100 % time is reported.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use trellis_daemon::admin::{client, BulkRoute, Request};

use super::cluster::{wait_until, Cluster, NetOptions};
use super::observe;

const PAIR: &str = "[[org]]\nname = \"bench\"\nnodes = [\"a\", \"b\"]\n\
    [[link]]\na = \"bench/a\"\nb = \"bench/b\"\n";

/// How long one size may take before the run gives up (bounds a hang).
const LIMIT: Duration = Duration::from_secs(600);

/// One size's figures.
#[derive(Clone, Debug, Serialize)]
pub struct TableResult {
    /// Routes loaded at `a`.
    pub routes: usize,
    /// From sending the load to `a`'s answer (committed), ms.
    pub load_ms: u64,
    /// From sending the load until `b` held 99 % of the routes, ms.
    pub p99_ms: u64,
    /// ... and all of them, ms.
    pub all_ms: u64,
    /// Routes per second to 100 % at `b`.
    pub routes_per_s: u64,
    /// Resident memory of `a` and `b` at the end, KiB.
    pub rss_a_kb: u64,
    /// `b`'s.
    pub rss_b_kb: u64,
    /// `b`'s growth from before the load, bytes per route.
    pub b_bytes_per_route: u64,
    /// With `--poll`: the 100 % time of the polled run, ms.
    pub polled_all_ms: Option<u64>,
    /// With `--poll`: polls (status and table) answered during the polled run.
    pub polls: Option<u64>,
}

/// One size: Trellis's figures (or why there are none) and BIRD's beside them.
#[derive(Clone, Debug, Serialize)]
pub struct TableRow {
    /// Routes in the table.
    pub routes: usize,
    /// Trellis, daemon to daemon.
    pub trellis: Option<TableResult>,
    /// Why Trellis has no figures for this size.
    pub trellis_error: Option<String>,
    /// BIRD 2, with `--bird`.
    pub bird: Option<super::bench_bird::BirdResult>,
    /// Why BIRD has no figures for this size.
    pub bird_error: Option<String>,
}

/// Every size.
#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    /// One per size, in the order asked.
    pub rows: Vec<TableRow>,
    /// `bird --version`, when BIRD ran.
    pub bird_version: Option<String>,
    /// Why BIRD did not run, when `--bird` was given.
    pub bird_skipped: Option<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn routes_at(cluster: &Cluster, i: usize) -> usize {
    observe::status(&cluster.state.nodes[i]).map_or(0, |s| s.routes)
}

fn rss(cluster: &Cluster, i: usize) -> u64 {
    cluster.state.nodes[i]
        .pid
        .and_then(observe::rss_kb)
        .unwrap_or(0)
}

/// Asks `b` for its status and its table every 100 ms until `stop`; returns how many
/// rounds were answered.
fn poll(
    node: super::state::NodeState,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut answered = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let next = Instant::now() + Duration::from_millis(100);
            if observe::status(&node).is_some() && observe::routes(&node).is_some() {
                answered += 1;
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        answered
    })
}

fn one(n: usize, dir: &Path, polled: bool) -> Result<TableResult, String> {
    let topo = crate::topology_file::parse(PAIR)?;
    let net = NetOptions {
        direct: true,
        ..NetOptions::default()
    };
    let mut cluster = Cluster::create(dir, &topo, net, 1, false)?;
    cluster.start_all()?;
    let up = wait_until(Duration::from_secs(30), || {
        observe::peers(&cluster.state.nodes[1]).is_some_and(|p| p.iter().any(|p| p.state == "up"))
    });
    if !up {
        return Err("the session a–b did not come up".into());
    }
    let routes: Vec<BulkRoute> = (0..n)
        .map(|i| BulkRoute {
            service: format!("s{i}.bench"),
            endpoint: "127.0.0.1:9".into(),
            protocol: "tcp".into(),
        })
        .collect();
    let b_before = rss(&cluster, 1);
    let socket = observe::socket(&cluster.state.nodes[0]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = polled.then(|| poll(cluster.state.nodes[1].clone(), stop.clone()));
    let started = Instant::now();
    let loader = std::thread::spawn(move || {
        let answer = client::call(&socket, &Request::RoutesAdvertiseBulk { routes });
        (
            answer.map(|_| ()).map_err(|e| e.to_string()),
            started.elapsed(),
        )
    });
    let (mut p99, mut all) = (None, None);
    let want99 = n - n / 100;
    let mut loader = Some(loader);
    let mut load = None;
    while all.is_none() && started.elapsed() < LIMIT {
        // The answer: a refused load ends the wait at once.
        if let Some(l) = loader.take_if(|l| l.is_finished()) {
            let (answer, took) = l
                .join()
                .map_err(|_| "the load thread panicked".to_owned())?;
            answer.map_err(|e| format!("load of {n} routes: {e}"))?;
            load = Some(took);
        }
        let held = routes_at(&cluster, 1);
        if p99.is_none() && held >= want99 {
            p99 = Some(started.elapsed());
        }
        if held >= n {
            all = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let load = match (loader, load) {
        (Some(l), _) => {
            let (answer, took) = l
                .join()
                .map_err(|_| "the load thread panicked".to_owned())?;
            answer.map_err(|e| format!("load of {n} routes: {e}"))?;
            took
        }
        (None, Some(took)) => took,
        (None, None) => return Err("the load's answer was lost".into()),
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let polls = poller.map(|p| p.join().unwrap_or(0));
    let all = all.ok_or_else(|| format!("b did not get all {n} routes within {LIMIT:?}"))?;
    let (rss_a, rss_b) = (rss(&cluster, 0), rss(&cluster, 1));
    cluster.stop_all(Duration::from_secs(10));
    Ok(TableResult {
        routes: n,
        load_ms: ms(load),
        p99_ms: ms(p99.unwrap_or(all)),
        all_ms: ms(all),
        routes_per_s: (n as f64 / all.as_secs_f64().max(1e-6)) as u64,
        rss_a_kb: rss_a,
        rss_b_kb: rss_b,
        b_bytes_per_route: rss_b.saturating_sub(b_before) * 1024 / n.max(1) as u64,
        polled_all_ms: None,
        polls,
    })
}

/// One size on a fresh pair of daemons in a scratch directory.
fn fresh(n: usize, polled: bool) -> Result<TableResult, String> {
    let dir = std::env::temp_dir().join(format!(
        "trellis-bench-table-{}-{n}{}",
        std::process::id(),
        if polled { "-polled" } else { "" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let result = one(n, &dir, polled);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs every size in `sizes`, each on a fresh pair of daemons; with `polled`, each
/// size a second time with `b` polled (see the module docs); with `bird`, each size
/// between two BIRDs too ([`super::bench_bird`]). A size one side cannot do is
/// reported as such and the run goes on.
pub fn run(sizes: &[usize], polled: bool, bird: bool) -> Result<TableReport, String> {
    if sizes.contains(&0) {
        return Err("a table of 0 routes measures nothing".into());
    }
    let (mut bird_version, mut bird_skipped) = (None, None);
    if bird {
        match super::bench_bird::available() {
            Ok(v) => bird_version = Some(v),
            Err(why) => {
                eprintln!(
                    "BIRD 2 is not available ({why}): the BIRD side is skipped \
                     (install the Debian package bird2; testbed/bench/table.sh does where apt is available)"
                );
                bird_skipped = Some(why);
            }
        }
    }
    let mut rows = Vec::new();
    for &n in sizes {
        let mut row = TableRow {
            routes: n,
            trellis: None,
            trellis_error: None,
            bird: None,
            bird_error: None,
        };
        match fresh(n, false) {
            Ok(mut result) => {
                if polled {
                    let again = fresh(n, true)?;
                    result.polled_all_ms = Some(again.all_ms);
                    result.polls = again.polls;
                }
                row.trellis = Some(result);
            }
            Err(e) => row.trellis_error = Some(e),
        }
        if bird_version.is_some() {
            let dir =
                std::env::temp_dir().join(format!("trellis-bench-bird-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            match super::bench_bird::run(n, &dir) {
                Ok(b) => row.bird = Some(b),
                Err(e) => row.bird_error = Some(e),
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        rows.push(row);
    }
    Ok(TableReport {
        rows,
        bird_version,
        bird_skipped,
    })
}

/// The report as a table.
pub fn summary(r: &TableReport) -> String {
    let mut out = String::from(
        "full table a → b (one session, loopback, one bulk load at a)\n\
         routes     load (committed)  99 % at b   100 % at b   routes/s    RSS a / b           b bytes/route\n",
    );
    for row in &r.rows {
        match (&row.trellis, &row.trellis_error) {
            (Some(x), _) => out.push_str(&format!(
                "{:<10} {:>10} ms    {:>8} ms  {:>8} ms   {:>9}   {:>7.1} / {:>7.1} MiB   {:>6}\n",
                x.routes,
                x.load_ms,
                x.p99_ms,
                x.all_ms,
                x.routes_per_s,
                x.rss_a_kb as f64 / 1024.0,
                x.rss_b_kb as f64 / 1024.0,
                x.b_bytes_per_route
            )),
            (None, e) => out.push_str(&format!(
                "{:<10} not measured: {}\n",
                row.routes,
                e.as_deref().unwrap_or("?")
            )),
        }
    }
    for x in r.rows.iter().filter_map(|row| row.trellis.as_ref()) {
        if let (Some(polled), Some(polls)) = (x.polled_all_ms, x.polls) {
            out.push_str(&format!(
                "{:<10} polled 10×/s (status + routes list at b): 100 % at b in {polled} ms, \
                 {:+.0} % against quiet; {polls} polls answered\n",
                x.routes,
                (polled as f64 / x.all_ms.max(1) as f64 - 1.0) * 100.0
            ));
        }
    }
    if let Some(v) = &r.bird_version {
        out.push_str(&format!(
            "\nsame run, {v}: a → b over one eBGP session, unique attributes (a MED per route)\n\
             routes                       99 % at b   100 % at b   routes/s    RSS a / b           b bytes/route\n"
        ));
        for row in &r.rows {
            match (&row.bird, &row.bird_error) {
                (Some(b), _) => out.push_str(&format!(
                    "{:<10}                   {:>8} ms  {:>8} ms   {:>9}   {:>7.1} / {:>7.1} MiB   {:>6}\n",
                    row.routes,
                    b.p99_ms,
                    b.all_ms,
                    b.routes_per_s,
                    b.rss_a_kb as f64 / 1024.0,
                    b.rss_b_kb as f64 / 1024.0,
                    b.b_bytes_per_route
                )),
                (None, e) => out.push_str(&format!(
                    "{:<10} not measured: {}\n",
                    row.routes,
                    e.as_deref().unwrap_or("?")
                )),
            }
        }
    }
    if let Some(why) = &r.bird_skipped {
        out.push_str(&format!("\nBIRD skipped: {why}\n"));
    }
    out
}
