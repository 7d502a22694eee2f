//! The faults: each starts a [`Watch`] at the moment it strikes, so black holes are
//! measured from the fault on (an outage included), records one [`super::Phase`] per
//! stretch, and checks its invariants against [`Run::expectations`].

use std::time::Duration;

use trellis_daemon::admin::{client, Request};

use super::watch::{Pairs, Run, Watch, LIMIT};
use crate::net::cluster::wait_until;
use crate::net::observe;

/// The `flap` scenario's period: each half outlasts failure detection (1 s), so sessions over
/// the flapped links go down and come back.
pub const FLAP_PERIOD: Duration = Duration::from_secs(8);
/// How long the `flap` scenario flaps: two periods.
pub const FLAP_FOR: Duration = Duration::from_secs(16);

/// How long `lossy-link` watches the converged network for a session that flaps.
pub const LOSSY_HOLD: Duration = Duration::from_secs(20);

/// Every session of every node, with how many times it came up so far.
fn session_counts(run: &Run) -> Vec<(String, String, String, u64)> {
    let mut out = Vec::new();
    for n in &run.cluster.state.nodes {
        for p in observe::peers(n).unwrap_or_default() {
            out.push((n.id.clone(), p.node_id, p.state, p.sessions));
        }
    }
    out.sort();
    out
}

/// `lossy-link`: under 5 % loss and jitter on every link, failure detection must not
/// take a live peer for dead: over [`LOSSY_HOLD`] no session goes down or is re-made.
fn steady_under_loss(run: &mut Run, full: &[(usize, String)]) {
    // Routes may converge around a session whose handshake is still being retried over
    // the lossy link: watch only once every session is up.
    let all_up = wait_until(LIMIT, || {
        let counts = session_counts(run);
        !counts.is_empty() && counts.iter().all(|c| c.2 == "up")
    });
    if !all_up {
        let down: Vec<String> = session_counts(run)
            .into_iter()
            .filter(|c| c.2 != "up")
            .map(|c| format!("{}–{} {}", c.0, c.1, c.2))
            .collect();
        run.hold(
            "every session comes up under 5 % loss and ±5 ms jitter",
            false,
            down.join("; "),
        );
        return;
    }
    let before = session_counts(run);
    let mut w = Watch::start();
    run.observe_for(&mut w, LOSSY_HOLD, full);
    let after = session_counts(run);
    let flapped: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a || a.2 != "up")
        .map(|(b, a)| format!("{}–{}: {} sessions, now {} ({})", b.0, b.1, b.3, a.3, a.2))
        .collect();
    run.hold(
        "no session flaps under 5 % loss and ±5 ms jitter (20 s watched)",
        before.len() == after.len() && flapped.is_empty(),
        if flapped.is_empty() {
            format!("{} sessions stayed up", after.len())
        } else {
            flapped.join("; ")
        },
    );
    run.phases.push(w.phase("steady under loss", None));
}

/// Injects the fault `name` (victim: node `victim`) into a converged network.
pub fn fault(run: &mut Run, name: &str, victim: usize) -> Result<(), String> {
    let (full, full_absent) = run.expectations(&[]);
    match name {
        "converge" => Ok(()),
        "lossy-link" => {
            steady_under_loss(run, &full);
            Ok(())
        }
        "kill-node" => {
            let mut w = Watch::start();
            let victim_id = run.cluster.state.nodes[victim].id.clone();
            run.kill_node(victim);
            let (expected, absent) = run.expectations(&[]);
            let detected = sessions_down(run, &mut w, &[victim_id], (&expected, &absent));
            run.time("detect", detected);
            let rerouted = settle_phase(
                run,
                w,
                (&expected, &absent),
                "the dead node's service and what valley-free export no longer allows are withdrawn; everything still reachable is delivered",
                "no persistent forwarding loop after the failure",
                "after the kill",
            );
            run.time("reroute", rerouted);
            Ok(())
        }
        "restart-node" => {
            let mut w = Watch::start();
            run.kill_node(victim);
            run.observe_for(&mut w, Duration::from_millis(500), &full);
            run.cluster.start_node(victim)?;
            settle_phase(
                run,
                w,
                (&full, &full_absent),
                "after the restart everything reachable before is reachable again (the restarted node restored its origination)",
                "no persistent forwarding loop",
                "from the kill",
            );
            Ok(())
        }
        "partition-heal" => partition_heal(run, &full, &full_absent),
        "flap" => flap(run, &full, &full_absent),
        "revoke-node" => revoke(run, victim),
        "degrade-link" => super::degrade::degrade_link(run),
        "authority-down" => authority_down(run, victim, &full, &full_absent),
        "restart-storm" => {
            // The storm is measured (black holes, loops) but only what follows it is
            // held to the invariants: stale paths kept for graceful restart may loop
            // while neighbours restart one after another.
            let mut w = Watch::start();
            for i in 0..run.cluster.state.nodes.len() {
                run.kill_node(i);
                run.sample(&mut w, &full, &[]);
                run.cluster.start_node(i)?;
                run.observe_for(&mut w, Duration::from_millis(200), &full);
            }
            run.phases.push(w.phase("during the storm", None));
            settle_phase(
                run,
                Watch::start(),
                (&full, &full_absent),
                "after every node restarted, everything reachable before is reachable again",
                "no persistent forwarding loop after the storm",
                "after the last restart",
            );
            Ok(())
        }
        other => Err(format!("unknown scenario {other}")),
    }
}

/// Evidence for a settle invariant.
fn outcome(w: &Watch, expected: &Pairs, absent: &Pairs, done: Option<Duration>) -> String {
    match done {
        Some(_) => format!(
            "{} pairs delivered, {} withdrawn or withheld",
            expected.len(),
            absent.len()
        ),
        None => format!("not within {} s: {}", LIMIT.as_secs(), w.problems()),
    }
}

/// The checks after a fault, under one phase name: the network settles into `expected`
/// (and holds none of `absent`), which is invariant `settled`; no loop outlasted the
/// threshold, invariant `no_loop`. Returns when it settled.
fn settle_phase(
    run: &mut Run,
    mut w: Watch,
    (expected, absent): (&Pairs, &Pairs),
    settled: &str,
    no_loop: &str,
    phase: &str,
) -> Option<Duration> {
    let done = run.settle(&mut w, expected, absent);
    let detail = outcome(&w, expected, absent, done);
    run.hold(settled, done.is_some(), detail);
    loops(run, &w, no_loop);
    run.phases.push(w.phase(phase, done));
    done
}

fn loops(run: &mut Run, w: &Watch, name: &str) {
    run.hold(name, w.persistent.is_empty(), format!("{:?}", w.persistent));
}

/// The links of node 0, as (a, b) node ids.
fn links_of_node0(run: &Run) -> Result<Vec<(String, String)>, String> {
    let id = run.cluster.state.nodes[0].id.clone();
    Ok(run
        .cluster
        .hub
        .lock()
        .map_err(|_| "the emulator's link table is poisoned")?
        .links()
        .into_iter()
        .filter(|(a, b, _)| *a == id || *b == id)
        .map(|(a, b, _)| (a, b))
        .collect())
}

fn partition_heal(run: &mut Run, full: &Pairs, full_absent: &Pairs) -> Result<(), String> {
    let links = links_of_node0(run)?;
    let mut w = Watch::start();
    for (a, b) in &links {
        run.cluster.link(a, b).ok_or("no such link")?.cut();
    }
    let node0 = run.cluster.state.nodes[0].id.clone();
    let (expected, absent) = run.expectations(&[]);
    let detected = sessions_down(run, &mut w, &[node0], (&expected, &absent));
    run.time("detect", detected);
    let rerouted = settle_phase(
        run,
        w,
        (&expected, &absent),
        "while partitioned, each side withdraws the other side's services and keeps its own",
        "no persistent forwarding loop while partitioned",
        "partitioned",
    );
    run.time("reroute", rerouted);
    let w = Watch::start();
    for (a, b) in &links {
        run.cluster.link(a, b).ok_or("no such link")?.heal();
    }
    let healed = settle_phase(
        run,
        w,
        (full, full_absent),
        "after healing everything reachable before is reachable again",
        "no persistent forwarding loop after healing",
        "after the heal",
    );
    run.time("heal", healed);
    Ok(())
}

/// Samples the network (as the settle loop does, so black holes in the meantime count)
/// until no running node other than `gone` shows a session up with any of `gone`, up to
/// [`LIMIT`]; returns the time since `w` started: the detection time.
fn sessions_down(
    run: &mut Run,
    w: &mut Watch,
    gone: &[String],
    (expected, absent): (&Pairs, &Pairs),
) -> Option<Duration> {
    let state = run.cluster.state.clone();
    let down = || {
        state
            .nodes
            .iter()
            .filter(|n| n.pid.is_some() && !gone.contains(&n.id))
            .all(|n| {
                observe::peers(n).is_some_and(|ps| {
                    ps.iter()
                        .all(|p| !gone.contains(&p.node_id) || p.state != "up")
                })
            })
    };
    while w.elapsed() < LIMIT {
        if down() {
            return Some(w.elapsed());
        }
        run.sample(w, expected, absent);
        // Polling, not waiting: the detection time's resolution is about this.
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn flap(run: &mut Run, full: &Pairs, full_absent: &Pairs) -> Result<(), String> {
    let links = links_of_node0(run)?;
    let dropped = |run: &Run| -> Vec<u64> {
        links
            .iter()
            .map(|(a, b)| run.cluster.link(a, b).map_or(0, |l| l.stats().dropped_cut))
            .collect()
    };
    let before = dropped(run);
    let node0 = run.cluster.state.nodes[0].clone();
    let mut w = Watch::start();
    let errors: Vec<String> = links
        .iter()
        .filter_map(|(a, b)| run.cluster.flap(a, b, Some(FLAP_PERIOD)).err())
        .collect();
    // Sessions of node 0: how often they went from all up to some down and back.
    let (mut drops, mut recoveries, mut all_up) = (0, 0, true);
    while errors.is_empty() && w.elapsed() < FLAP_FOR {
        run.sample(&mut w, full, &[]);
        if let Some(s) = observe::status(&node0) {
            let now_up = s.peers_up == s.peers_configured;
            drops += usize::from(all_up && !now_up);
            recoveries += usize::from(!all_up && now_up);
            all_up = now_up;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (a, b) in &links {
        // Stopping leaves the link up; heal in case it was never flapping.
        let _ = run.cluster.flap(a, b, None);
        if let Some(l) = run.cluster.link(a, b) {
            l.heal();
        }
    }
    let after = dropped(run);
    let every_link_dropped = before.iter().zip(&after).all(|(b, a)| a > b);
    run.hold(
        "the flap was applied: every link of node 0 dropped datagrams and node 0's sessions went down and came back",
        errors.is_empty() && every_link_dropped && drops > 0 && recoveries > 0,
        if errors.is_empty() {
            format!(
                "{} links, cut drops before {before:?} after {after:?}; sessions went down {drops} times, back up {recoveries} times",
                links.len()
            )
        } else {
            errors.join("; ")
        },
    );
    run.phases.push(w.phase("flapping", None));
    settle_phase(
        run,
        Watch::start(),
        (full, full_absent),
        "after the flapping stops everything reachable before is reachable again",
        "no persistent forwarding loop after the flapping",
        "after the flapping",
    );
    Ok(())
}

fn revoke(run: &mut Run, victim: usize) -> Result<(), String> {
    let id = run.cluster.state.nodes[victim].id.clone();
    let org = id.split('/').next().unwrap_or_default().to_owned();
    let auth = run
        .cluster
        .state
        .authorities
        .iter()
        .find(|a| a.org == org)
        .ok_or("no authority")?
        .dir
        .join("admin.sock");
    let mut w = Watch::start();
    client::call(
        &auth,
        &Request::NodesRevoke {
            node_id: id.clone(),
            reason: "scenario".into(),
        },
    )
    .map_err(|e| e.to_string())?;
    // First how long until no node keeps a session with it (the authority pushes the
    // snapshot to its subscribers; the mesh floods it), then the routing outcome.
    let state = run.cluster.state.clone();
    let isolated = wait_until(LIMIT, || {
        (0..state.nodes.len()).filter(|&i| i != victim).all(|i| {
            observe::peers(&state.nodes[i])
                .is_some_and(|ps| ps.iter().all(|p| p.node_id != id || p.state != "up"))
        })
    });
    let isolated_after = w.elapsed();
    run.time("revoke", isolated.then_some(isolated_after));
    run.hold(
        "the revoked node is isolated: no session with it stays up",
        isolated,
        format!(
            "every session with it closed {} ms after the revocation",
            isolated_after.as_millis()
        ),
    );
    run.phases
        .push(w.phase("revoked node isolated", isolated.then_some(isolated_after)));
    let (expected, absent) = run.expectations(&[victim]);
    let done = run.settle(&mut w, &expected, &absent);
    let detail = outcome(&w, &expected, &absent, done);
    run.hold(
        "its service is withdrawn everywhere; what stays reachable without it under valley-free export is delivered",
        done.is_some(),
        detail,
    );
    loops(
        run,
        &w,
        "no persistent forwarding loop after the revocation",
    );
    run.phases.push(w.phase("after the revocation", done));
    Ok(())
}

fn authority_down(
    run: &mut Run,
    victim: usize,
    full: &Pairs,
    full_absent: &Pairs,
) -> Result<(), String> {
    let orgs: Vec<String> = run
        .cluster
        .state
        .authorities
        .iter()
        .map(|a| a.org.clone())
        .collect();
    let mut w = Watch::start();
    for org in &orgs {
        run.cluster.kill_authority(org);
    }
    run.kill_node(victim);
    run.observe_for(&mut w, Duration::from_millis(500), full);
    run.cluster.start_node(victim)?;
    // Converged means the expected tables and every session back up: a restarted node's
    // restored (stale) table can look complete before it has re-peered.
    let done = run
        .settle(&mut w, full, full_absent)
        .filter(|_| run.sessions_up());
    let detail = outcome(&w, full, full_absent, done);
    run.hold(
        "with every authority down, a restarted node re-peers and routing converges",
        done.is_some(),
        detail,
    );
    run.phases
        .push(w.phase("authorities down, node restarted", done));
    // Every node retries its snapshot subscription after 1, 2 and 4 s (then up to 30 s)
    // while its authority is down: hold through the first three retries.
    let window = Duration::from_secs(8);
    let mut w = Watch::start();
    let held = if done.is_some() {
        run.hold_clean(&mut w, window, full, full_absent)
    } else {
        Err("routing never converged".into())
    };
    run.hold(
        &format!(
            "routing stays unaffected for {} s with every authority down (3 subscription retries)",
            window.as_secs()
        ),
        held.as_ref().is_ok_and(|&samples| samples >= 5),
        match &held {
            Ok(samples) => format!("{samples} consecutive clean samples"),
            Err(e) => e.clone(),
        },
    );
    run.phases.push(w.phase("authorities still down", None));
    Ok(())
}
