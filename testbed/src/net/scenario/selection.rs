//! `peer-selection`: peer selection inside one org against real daemons (docs/adr/0015).
//!
//! N nodes of one org (20 by default in CI), no configured peers: every node runs
//! `[selection]` with the org's first two nodes as bootstrap entries, and learns the
//! others from the signed node directory its authority publishes. The scenario waits
//! until every node has between its minimum and maximum active peers (3-5), the
//! sessions form one connected mesh, every node's selection is settled (each peer it
//! chose is up, no guest waits for room), and no node has sessions to all others; then it
//! checks that this holds for [`STABLE`] and that every node reaches every node's
//! service over the chosen mesh.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::watch::Run;
use crate::net::cluster::wait_until;
use crate::net::observe;
use crate::topology_file::TopologyFile;

/// Bootstrap entries per node.
pub const BOOTSTRAP: usize = 2;
/// The default role's active range.
const ACTIVE: (usize, usize) = (3, 5);
/// How long the selection may take to reach the target.
const LIMIT: Duration = Duration::from_secs(120);
/// How long the target must then hold, sampled every [`EVERY`].
const STABLE: Duration = Duration::from_secs(10);
/// The sampling period: a sampling rate, not a wait for an event.
const EVERY: Duration = Duration::from_millis(500);

/// `nodes` nodes of the org `sel`, no links (built here: a topology file must be
/// connected by its links, and this one is connected only by what the nodes choose).
pub fn topology(nodes: usize) -> Result<TopologyFile, String> {
    if nodes < 6 {
        return Err("peer-selection needs at least 6 nodes (--nodes)".into());
    }
    let nodes = (1..=nodes)
        .map(|i| trellis_routing::NodeId::new(&format!("sel/n{i}")).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TopologyFile {
        topology: crate::topology::Topology {
            nodes,
            links: Vec::new(),
        },
        impairments: Vec::new(),
        orgs: vec!["sel".into()],
    })
}

/// Every node's up sessions (`None` for a node that did not answer).
fn sessions(run: &Run) -> Vec<Option<BTreeSet<String>>> {
    run.cluster
        .state
        .nodes
        .iter()
        .map(|n| {
            observe::peers(n).map(|peers| {
                peers
                    .into_iter()
                    .filter(|p| p.state == "up")
                    .map(|p| p.node_id)
                    .collect()
            })
        })
        .collect()
}

/// What is wrong with a sample (empty: the target holds).
fn problems(run: &Run, sample: &[Option<BTreeSet<String>>]) -> Vec<String> {
    let ids: Vec<&str> = run
        .cluster
        .state
        .nodes
        .iter()
        .map(|n| n.id.as_str())
        .collect();
    let mut out = Vec::new();
    for (i, s) in sample.iter().enumerate() {
        match s {
            None => out.push(format!("{} did not answer", ids[i])),
            Some(s) if s.len() < ACTIVE.0 || s.len() > ACTIVE.1 => {
                out.push(format!("{} has {} sessions", ids[i], s.len()));
            }
            Some(_) => {}
        }
    }
    // Connected: a walk over the sessions from the first node reaches every node.
    let index: BTreeMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut seen = vec![false; ids.len()];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        for peer in sample[i].iter().flatten() {
            if let Some(&j) = index.get(peer.as_str()) {
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    let cut = seen.iter().filter(|s| !**s).count();
    if cut > 0 {
        out.push(format!("{cut} nodes are not connected to {}", ids[0]));
    }
    out
}

/// Nodes whose selection is not settled: a peer it chose is not up yet, or it holds a
/// guest it has not made room for (its active count differs from its up sessions).
/// Session counts alone cannot show a change under way, which would then land inside
/// the hold.
fn unsettled(run: &Run, sample: &[Option<BTreeSet<String>>]) -> Vec<String> {
    run.cluster
        .state
        .nodes
        .iter()
        .zip(sample)
        .filter_map(|(node, up)| {
            let active = observe::status(node)?.selection?.active;
            let up = up.as_ref().map_or(0, BTreeSet::len);
            (active != up).then(|| format!("{} has {active} active peers, {up} up", node.id))
        })
        .collect()
}

/// Starts the network and runs the scenario; returns when the target was first reached,
/// from the start of the first node (the nodes start one after another).
pub fn select(run: &mut Run) -> Result<Option<Duration>, String> {
    let n = run.cluster.state.nodes.len();
    let start = Instant::now();
    run.cluster.start_all()?;
    run.time("start_all", Some(start.elapsed()));
    let mut last = Vec::new();
    let reached = wait_until(LIMIT, || {
        let sample = sessions(run);
        last = problems(run, &sample);
        if last.is_empty() {
            last = unsettled(run, &sample);
        }
        last.is_empty()
    });
    let took = reached.then(|| start.elapsed());
    run.time("select", took);
    run.hold(
        &format!(
            "every node has {}-{} active peers and the sessions form one connected mesh",
            ACTIVE.0, ACTIVE.1
        ),
        reached,
        last.join("; "),
    );
    if !reached {
        return Ok(None);
    }
    // It holds: every sample for STABLE.
    let mut broken = Vec::new();
    let mut most = 0;
    let (mut total, mut samples) = (0usize, 0usize);
    let hold_start = Instant::now();
    while hold_start.elapsed() < STABLE {
        let sample = sessions(run);
        for s in sample.iter().flatten() {
            most = most.max(s.len());
            total += s.len();
        }
        samples += 1;
        let p = problems(run, &sample);
        if !p.is_empty() && broken.is_empty() {
            broken = p;
        }
        std::thread::sleep(EVERY);
    }
    run.hold(
        &format!("the mesh stays so for {} s", STABLE.as_secs()),
        broken.is_empty(),
        broken.join("; "),
    );
    run.hold(
        "no node keeps sessions to all others",
        most < n - 1,
        format!("most sessions of one node: {most} of {} others", n - 1),
    );
    run.counts.insert("sessions_max".into(), most as u64);
    run.counts.insert(
        "sessions_mean_tenths".into(),
        (total * 10 / (samples * n).max(1)) as u64,
    );
    let established: u64 = observe::counters(&run.cluster.state, "sessions_established")
        .into_iter()
        .map(|(_, v)| v)
        .sum();
    run.counts
        .insert("sessions_established".into(), established);
    // Routing over the chosen mesh: every node reaches every node's service.
    let routed_from = Instant::now();
    for i in 0..n {
        run.advertise(i)?;
    }
    let mut missing = String::new();
    let routed = wait_until(super::watch::LIMIT, || {
        let short: Vec<String> = run
            .cluster
            .state
            .nodes
            .iter()
            .filter_map(|node| {
                let have = observe::routes(node).map_or(0, |r| r.len());
                (have < n).then(|| format!("{} has {have} routes", node.id))
            })
            .collect();
        missing = short.join("; ");
        short.is_empty()
    });
    run.time("route", routed.then(|| routed_from.elapsed()));
    run.hold(
        "every node reaches every node's service over the selected mesh",
        routed,
        missing,
    );
    Ok(took)
}
