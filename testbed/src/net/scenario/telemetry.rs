//! Telemetry in scenarios: a real OTLP receiver ([`Collector`]) that every daemon of the
//! network exports to (`scenario --otlp`, and always in `telemetry-outage`), a per-node
//! summary of what arrived, and the `telemetry-outage` scenario itself: the receiver
//! goes away for a minute while routes keep changing, and routing must not notice.
//!
//! What `telemetry-outage` holds (docs/testbed.md): every node exports metrics before
//! the outage; during it, each withdrawal and re-advertisement reaches every node as it
//! does without telemetry; the daemons' memory stays flat (bounded queues, no backlog
//! growing with the outage); every node counts its failed exports; after the receiver
//! returns on the same address, every node exports again (the exporters retried with
//! backoff, nothing was wedged).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trellis_daemon::admin::{client, Request};
use trellis_otlp_receiver::{Received, Receiver, Summary};

use super::watch::{Pairs, Run, Watch, LIMIT};
use crate::net::observe;

/// How long the receiver stays away.
pub const OUTAGE: Duration = Duration::from_secs(60);
/// Metric export interval of the daemons while a collector listens.
pub const INTERVAL_MS: u64 = 500;
/// Growth of a daemon's RSS allowed over the outage, after its first 10 s, KiB: the
/// queues are bounded, so what grows with the outage is a leak.
const FLAT_KB: u64 = 3 * 1024;

/// A receiver on 127.0.0.1, on its own runtime, that can be stopped and started again on
/// the same address.
pub struct Collector {
    runtime: tokio::runtime::Runtime,
    receiver: Option<Receiver>,
    addr: SocketAddr,
}

impl Collector {
    /// Starts a receiver on a free loopback port.
    pub fn start() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("collector runtime: {e}"))?;
        let receiver = runtime
            .block_on(Receiver::start(SocketAddr::from(([127, 0, 0, 1], 0))))
            .map_err(|e| format!("OTLP receiver: {e:#}"))?;
        let addr = receiver.addr();
        Ok(Self {
            runtime,
            receiver: Some(receiver),
            addr,
        })
    }

    /// The endpoint daemons export to (gRPC).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port: exports fail until [`Collector::restart`].
    pub fn stop(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            self.runtime.block_on(receiver.stop());
        }
    }

    /// Listens again on the same address (what was received before is gone).
    pub fn restart(&mut self) -> Result<(), String> {
        let receiver = self
            .runtime
            .block_on(Receiver::start(self.addr))
            .map_err(|e| format!("OTLP receiver again on {}: {e:#}", self.addr))?;
        self.receiver = Some(receiver);
        Ok(())
    }

    /// Waits until `done` holds (at most `limit`); the last snapshot either way.
    #[allow(clippy::result_large_err)] // Both outcomes carry the snapshot, as the receiver's.
    pub fn wait(
        &self,
        limit: Duration,
        done: impl FnMut(&Received) -> bool,
    ) -> Result<Received, Received> {
        match &self.receiver {
            Some(r) => self.runtime.block_on(r.wait_until(limit, done)),
            None => Err(Received::default()),
        }
    }

    /// Per node: spans, metrics and logs received.
    pub fn summaries(&self) -> Vec<Summary> {
        self.receiver
            .as_ref()
            .map(|r| trellis_otlp_receiver::summarize(&r.snapshot()))
            .unwrap_or_default()
    }
}

/// Whether every node in `ids` has exported `trellis.routes` (after `since`, ns).
fn all_exported(got: &Received, ids: &[String], since: u64) -> bool {
    ids.iter().all(|id| {
        got.metrics
            .iter()
            .any(|m| &m.instance == id && m.name == "trellis.routes" && m.time_unix_nanos >= since)
    })
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn rss(run: &Run) -> Vec<(String, u64)> {
    run.cluster
        .state
        .nodes
        .iter()
        .filter_map(|n| Some((n.id.clone(), observe::rss_kb(n.pid?)?)))
        .collect()
}

fn withdraw(run: &Run, i: usize) -> Result<(), String> {
    let node = &run.cluster.state.nodes[i];
    client::call(
        &observe::socket(node),
        &Request::RoutesWithdraw {
            service: observe::service_of(&run.cluster.state, i),
        },
    )
    .map(|_| ())
    .map_err(|e| format!("withdraw at {}: {e}", node.id))
}

/// `telemetry-outage`, on a converged network whose daemons export to `collector`.
pub fn outage(
    run: &mut Run,
    collector: &mut Collector,
    full: (&Pairs, &Pairs),
) -> Result<(), String> {
    let ids: Vec<String> = run
        .cluster
        .state
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .collect();
    let before = collector.wait(LIMIT, |got| all_exported(got, &ids, 0));
    run.hold(
        "every node exports metrics to the receiver",
        before.is_ok(),
        match &before {
            Ok(got) => format!(
                "{} metric points from {} instances",
                got.metrics.len(),
                got.instances().len()
            ),
            Err(got) => format!("instances seen: {:?}", got.instances()),
        },
    );
    collector.stop();
    let began = Instant::now();
    let n = ids.len();
    let mut cycles = 0u64;
    let mut slowest = Duration::ZERO;
    let mut failed = Vec::new();
    let mut early: Option<Vec<(String, u64)>> = None;
    let mut w = Watch::start();
    while began.elapsed() < OUTAGE {
        let i = usize::try_from(cycles).unwrap_or(0) % n;
        let service = observe::service_of(&run.cluster.state, i);
        let (without, gone): (Pairs, Pairs) = {
            let (expected, absent) = full;
            let kept = expected
                .iter()
                .filter(|p| p.1 != service)
                .cloned()
                .collect();
            let mut gone: Pairs = absent.clone();
            gone.extend(
                expected
                    .iter()
                    .filter(|p| p.1 == service && p.0 != i)
                    .cloned(),
            );
            (kept, gone)
        };
        let t = Instant::now();
        withdraw(run, i)?;
        let withdrawn = run.settle(&mut w, &without, &gone);
        run.advertise(i)?;
        let back = run.settle(&mut w, full.0, full.1);
        slowest = slowest.max(t.elapsed());
        if withdrawn.is_none() || back.is_none() {
            failed.push(format!("cycle {cycles} ({service}): {}", w.problems()));
        }
        cycles += 1;
        if early.is_none() && began.elapsed() >= Duration::from_secs(10) {
            early = Some(rss(run));
        }
    }
    let late = rss(run);
    run.phases.push(w.phase(
        "receiver down (a withdrawal and a re-advertisement per cycle)",
        None,
    ));
    run.counts.insert("outage_cycles".into(), cycles);
    run.timing.insert(
        "outage_slowest_cycle".into(),
        u64::try_from(slowest.as_millis()).unwrap_or(u64::MAX),
    );
    run.hold(
        "with the receiver down, every withdrawal and re-advertisement reaches every node",
        failed.is_empty() && cycles > 0,
        if failed.is_empty() {
            format!(
                "{cycles} cycles in {} s, slowest {} ms",
                OUTAGE.as_secs(),
                slowest.as_millis()
            )
        } else {
            failed.join("; ")
        },
    );
    let early = early.unwrap_or_default();
    let grown: Vec<(String, u64)> = late
        .iter()
        .filter_map(|(id, kb)| {
            let start = early.iter().find(|(e, _)| e == id)?.1;
            Some((id.clone(), kb.saturating_sub(start)))
        })
        .collect();
    let most = grown.iter().map(|g| g.1).max().unwrap_or(0);
    run.counts.insert("outage_rss_growth_kb_max".into(), most);
    run.hold(
        "daemon memory stays flat while the receiver is down",
        !grown.is_empty() && most <= FLAT_KB,
        format!(
            "RSS growth from 10 s into the outage to its end, KiB: {grown:?} (allowed {FLAT_KB})"
        ),
    );
    let failures: Vec<u64> = observe::counters(&run.cluster.state, "telemetry_export_failures")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    run.hold(
        "every node counts its failed exports (status: telemetry_export_failures)",
        failures.len() == n && failures.iter().all(|f| *f > 0),
        format!("{failures:?}"),
    );
    let back_at = now_nanos();
    collector.restart()?;
    let resumed = collector.wait(LIMIT, |got| all_exported(got, &ids, back_at));
    run.hold(
        "every node exports again once the receiver is back",
        resumed.is_ok(),
        match &resumed {
            Ok(_) => "metrics from every node after the restart".to_owned(),
            Err(got) => format!(
                "instances heard from after the restart: {:?}",
                got.instances()
            ),
        },
    );
    Ok(())
}
