//! `trellis-testbed bench latency`: how fast one change crosses a line of real daemons
//! (docs/performance.md, "Propagation through a line").
//!
//! `hops + 1` nodes of one org in a line (`n0 — n1 — … — nH`), peers dialing each other
//! directly, default timers (MRAI 50 ms). Each repetition advertises one service at
//! `n0` and reads `nH`'s status until the route is there, then withdraws it and reads
//! until it is gone. Both times run from the moment the admin request is sent, so
//! they include the request itself. Between two changes the run waits 4 MRAI
//! intervals: the change measured is then always a *first* change (sent at once), not
//! one held back by the MRAI of the change before, which is what a bulk load pays.
//! Reported: the median and the 90th percentile of each direction.

use std::time::{Duration, Instant};

use serde::Serialize;
use trellis_daemon::admin::{client, Request};

use super::cluster::{wait_until, Cluster, NetOptions};
use super::observe;

/// How long one change may take to cross the line before the run gives up.
const LIMIT: Duration = Duration::from_secs(30);
/// The daemons' default MRAI; the pause between changes is a few of these.
const MRAI: Duration = Duration::from_millis(50);

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    /// Sessions between the two ends.
    pub hops: usize,
    /// Repetitions of each change.
    pub reps: usize,
    /// Advertise at one end → route at the other: median and p90, microseconds.
    pub advertise_median_us: u64,
    /// p90.
    pub advertise_p90_us: u64,
    /// Withdraw at one end → route gone at the other: median, microseconds.
    pub withdraw_median_us: u64,
    /// p90.
    pub withdraw_p90_us: u64,
    /// Every sample, microseconds, in order: advertise.
    pub advertise_us: Vec<u64>,
    /// Withdraw.
    pub withdraw_us: Vec<u64>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The `q`-quantile (0..=1) of `samples` by the nearest rank.
fn quantile(samples: &[u64], q: f64) -> u64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return 0;
    }
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn line(hops: usize) -> String {
    let names: Vec<String> = (0..=hops).map(|i| format!("\"n{i}\"")).collect();
    let mut text = format!("[[org]]\nname = \"line\"\nnodes = [{}]\n", names.join(", "));
    for i in 0..hops {
        text.push_str(&format!(
            "[[link]]\na = \"line/n{i}\"\nb = \"line/n{}\"\n",
            i + 1
        ));
    }
    text
}

/// Sends `request` to node `i` and waits until the far end holds `want` routes; the
/// time from sending to seeing it.
fn change(cluster: &Cluster, request: &Request, want: usize) -> Result<Duration, String> {
    let (near, far) = (
        &cluster.state.nodes[0],
        &cluster.state.nodes[cluster.state.nodes.len() - 1],
    );
    let started = Instant::now();
    client::call(&observe::socket(near), request).map_err(|e| format!("{}: {e}", near.id))?;
    loop {
        if observe::status(far).is_some_and(|s| s.routes == want) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > LIMIT {
            return Err(format!(
                "{} did not see the change within {LIMIT:?}",
                far.id
            ));
        }
        std::thread::yield_now();
    }
}

/// Runs the line benchmark in `dir`.
pub fn run(hops: usize, reps: usize, dir: &std::path::Path) -> Result<LatencyReport, String> {
    if hops == 0 || reps == 0 {
        return Err("bench latency needs --hops and --reps above 0".into());
    }
    let topo = crate::topology_file::parse(&line(hops))?;
    let net = NetOptions {
        direct: true,
        ..NetOptions::default()
    };
    let mut cluster = Cluster::create(dir, &topo, net, 1, false)?;
    cluster.start_all()?;
    // Every session up: each inner node has two, the ends one.
    let up = wait_until(Duration::from_secs(60), || {
        cluster.state.nodes.iter().enumerate().all(|(i, n)| {
            let want = if i == 0 || i == hops { 1 } else { 2 };
            observe::status(n).is_some_and(|s| s.peers_up >= want)
        })
    });
    if !up {
        cluster.stop_all(Duration::from_secs(10));
        return Err("the line's sessions did not all come up".into());
    }
    let service = "probe.line".to_owned();
    let (mut adv, mut wd) = (Vec::new(), Vec::new());
    let outcome = (|| {
        for _ in 0..reps {
            let advertise = Request::RoutesAdvertise {
                service: service.clone(),
                endpoint: "127.0.0.1:9".into(),
                protocol: "tcp".into(),
            };
            adv.push(us(change(&cluster, &advertise, 1)?));
            std::thread::sleep(MRAI * 4);
            let withdraw = Request::RoutesWithdraw {
                service: service.clone(),
            };
            wd.push(us(change(&cluster, &withdraw, 0)?));
            std::thread::sleep(MRAI * 4);
        }
        Ok::<(), String>(())
    })();
    cluster.stop_all(Duration::from_secs(10));
    outcome?;
    Ok(LatencyReport {
        hops,
        reps,
        advertise_median_us: quantile(&adv, 0.5),
        advertise_p90_us: quantile(&adv, 0.9),
        withdraw_median_us: quantile(&wd, 0.5),
        withdraw_p90_us: quantile(&wd, 0.9),
        advertise_us: adv,
        withdraw_us: wd,
    })
}

/// The report as text.
pub fn summary(r: &LatencyReport) -> String {
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "one change through a line of {} sessions ({} repetitions, first changes: 4 MRAI apart)\n\
         advertise → seen at the far end   median {:>7.2} ms   p90 {:>7.2} ms\n\
         withdraw  → gone at the far end   median {:>7.2} ms   p90 {:>7.2} ms\n",
        r.hops,
        r.reps,
        ms(r.advertise_median_us),
        ms(r.advertise_p90_us),
        ms(r.withdraw_median_us),
        ms(r.withdraw_p90_us),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let s: Vec<u64> = (1..=20).collect();
        assert_eq!(quantile(&s, 0.5), 10);
        assert_eq!(quantile(&s, 0.9), 18);
        assert_eq!(quantile(&[7], 0.9), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn a_line_has_one_link_per_hop() {
        let topo = crate::topology_file::parse(&line(3)).expect("parses");
        assert_eq!(topo.topology.nodes.len(), 4);
        assert_eq!(topo.topology.links.len(), 3);
    }
}
