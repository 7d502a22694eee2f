//! `degrade-link`: peer scoring against real daemons (docs/adr/0014).
//!
//! On a converged network every link gets a baseline of 10 ms ± 5 ms (one way); once
//! no link cost has changed for 12 s the scenario counts best-path and link-cost changes for a minute of
//! that jitter. Then it raises the delay of the first link of node 0's best path to a
//! service two or more hops away to 60 ms, measures how long node 0 takes to move off it
//! (`move_off`), lets the costs settle, restores the baseline and measures how long
//! the path takes to come back
//! (`win_back`), which must not be before the 30 s hold-down.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::watch::Run;
use crate::net::cluster::wait_until;
use crate::net::emulator::Impairment;
use crate::net::observe;

/// Baseline delay and jitter of every link, one way, ms.
const BASELINE: (f64, f64) = (10.0, 5.0);
/// The degraded link's delay, one way, ms.
const DEGRADED_MS: f64 = 60.0;
/// The costs have settled once no link cost changed for this long after the baseline
/// was set: longer than the first rise takes (the 5 s RTT window and the 2 s
/// confirmation) and than the gap between two steps of the band.
const QUIET: Duration = Duration::from_secs(12);
/// How long best-path changes are counted under jitter.
pub const JITTER_FOR: Duration = Duration::from_secs(60);
/// The scoring hold-down: a better cost waits this long (ScoreConfig::hold_down).
const HOLD_DOWN: Duration = Duration::from_secs(30);

fn impairment(delay_ms: f64) -> Impairment {
    Impairment {
        delay_ms,
        jitter_ms: BASELINE.1,
        ..Impairment::default()
    }
}

/// Every node's next hop per service.
fn next_hops(run: &Run) -> BTreeMap<(usize, String), Option<String>> {
    let mut out = BTreeMap::new();
    for (i, n) in run.cluster.state.nodes.iter().enumerate() {
        for r in observe::routes(n).unwrap_or_default() {
            out.insert((i, r.service), r.next_hop);
        }
    }
    out
}

fn cost_changes(run: &Run) -> u64 {
    observe::counters(&run.cluster.state, "link_cost_changes")
        .into_iter()
        .map(|(_, v)| v)
        .sum()
}

/// Waits (up to 60 s) until the network-wide count of link-cost changes has not moved
/// for [`QUIET`]; whether it did.
fn settle(run: &Run) -> bool {
    let (mut seen, mut since) = (cost_changes(run), Instant::now());
    wait_until(Duration::from_secs(60), || {
        let now = cost_changes(run);
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
        since.elapsed() >= QUIET
    })
}

/// Node 0's next hop to `service`.
fn hop_of_node0(run: &Run, service: &str) -> Option<String> {
    observe::routes(&run.cluster.state.nodes[0])?
        .into_iter()
        .find(|r| r.service == service)?
        .next_hop
}

pub(super) fn degrade_link(run: &mut Run) -> Result<(), String> {
    let links = run
        .cluster
        .hub
        .lock()
        .map_err(|_| "the emulator's link table is poisoned")?
        .links();
    for (_, _, link) in &links {
        link.set(impairment(BASELINE.0));
    }
    if !settle(run) {
        return Err("link costs did not settle within 60 s of the baseline jitter".into());
    }

    // 1. A minute of jitter: best paths and costs should hold still.
    let (before_costs, mut last) = (cost_changes(run), next_hops(run));
    let (start, mut path_changes) = (Instant::now(), 0u64);
    while start.elapsed() < JITTER_FOR {
        // The sampling rate of a fixed measurement window (changes per minute), not a
        // wait for an event.
        std::thread::sleep(Duration::from_millis(250));
        let now = next_hops(run);
        path_changes += now
            .iter()
            .filter(|(k, v)| last.get(*k).is_some_and(|old| old != *v))
            .count() as u64;
        last = now;
    }
    let costs = cost_changes(run).saturating_sub(before_costs);
    let nodes = run.cluster.state.nodes.len() as u64;
    run.counts
        .insert("jitter_path_changes".into(), path_changes);
    run.counts.insert("jitter_cost_changes".into(), costs);
    run.hold(
        "under ±5 ms jitter on every link, best paths change at most once per node in a minute",
        path_changes <= nodes,
        format!(
            "{path_changes} best-path changes, {costs} link-cost changes in {} s",
            JITTER_FOR.as_secs()
        ),
    );

    // 2. Degrade the first link of node 0's path to a service at least two hops away.
    let state = &run.cluster.state;
    let target = (2..state.nodes.len())
        .map(|j| observe::service_of(state, j))
        .find(|s| {
            hop_of_node0(run, s).is_some_and(|h| {
                h != state.nodes[0].id
                    && !s.starts_with(&format!("{}.", h.split('/').nth(1).unwrap_or_default()))
            })
        })
        .ok_or("node 0 has no route two hops away (degrade-link needs a ring of 5 or more)")?;
    let first = hop_of_node0(run, &target).ok_or("node 0 lost its route")?;
    let node0 = state.nodes[0].id.clone();
    let link = run
        .cluster
        .link(&node0, &first)
        .ok_or_else(|| format!("no link {node0}–{first}"))?;
    link.set(impairment(DEGRADED_MS));
    let degraded = Instant::now();
    // The bound only catches a path that never moves; the time is the figure.
    let moved = wait_until(Duration::from_secs(30), || {
        hop_of_node0(run, &target).is_some_and(|h| h != first)
    });
    let move_off = degraded.elapsed();
    run.time("move_off", moved.then_some(move_off));
    run.hold(
        "node 0 moves its path off a link degraded to 60 ms (within 30 s)",
        moved,
        format!(
            "{target} via {first}: moved {} after {} ms",
            if moved { "away" } else { "NOT away" },
            move_off.as_millis()
        ),
    );

    // The degraded cost rises in steps of the band; the first one that passes the other
    // path moves traffic, but it may be only just above it. Restore once the costs have
    // stopped rising, so what follows measures the hold-down, not a near tie.
    if !settle(run) {
        return Err("link costs did not settle within 60 s of the degradation".into());
    }

    // 3. Restore: the path comes back, but only after the hold-down.
    link.set(impairment(BASELINE.0));
    let restored = Instant::now();
    let back = wait_until(Duration::from_secs(120), || {
        hop_of_node0(run, &target).as_deref() == Some(first.as_str())
    });
    let win_back = restored.elapsed();
    run.time("win_back", back.then_some(win_back));
    run.hold(
        "the restored link wins its path back only after the 30 s hold-down, within 120 s",
        back && win_back >= HOLD_DOWN,
        format!("back via {first} after {} ms", win_back.as_millis()),
    );
    for (_, _, link) in &links {
        link.set(Impairment::default());
    }
    Ok(())
}
