//! Peer selection with real daemons (ADR 0015): nodes with `[selection]` are listed in
//! the signed node directory their authority publishes, and each keeps between its
//! minimum and maximum active peers chosen among the directory's nodes, starting from
//! one bootstrap entry; a configured peer stays pinned.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{org_with, trellis, wait_for, Scratch};

const NAMES: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];

/// Every node's up peers, keyed by node id.
fn sessions(nodes: &[common::Node]) -> Option<BTreeMap<String, BTreeSet<String>>> {
    nodes
        .iter()
        .map(|n| {
            let peers = n.try_json(&["peers", "list"])?;
            let up = peers
                .as_array()?
                .iter()
                .filter(|p| p["state"] == "up")
                .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
                .collect();
            Some((n.id.clone(), up))
        })
        .collect()
}

fn connected(mesh: &BTreeMap<String, BTreeSet<String>>) -> bool {
    let Some(first) = mesh.keys().next() else {
        return false;
    };
    let mut seen = BTreeSet::from([first.clone()]);
    let mut stack = vec![first.clone()];
    while let Some(n) = stack.pop() {
        for p in mesh.get(&n).into_iter().flatten() {
            if seen.insert(p.clone()) {
                stack.push(p.clone());
            }
        }
    }
    seen.len() == mesh.len()
}

#[test]
fn nodes_choose_a_few_peers_from_the_signed_directory() {
    let scratch = Scratch::new("selection");
    let (authority, mut nodes) = org_with(&scratch, "acme", &NAMES);
    let bootstrap = format!("acme/n1@127.0.0.1:{}", nodes[0].port);
    for (i, node) in nodes.iter().enumerate() {
        let selection = format!(
            "[selection]\nmin_active = 2\nmax_active = 3\nround = \"300ms\"\nbootstrap = [\"{bootstrap}\"]\n"
        );
        // n5 and n6 also peer as configured (both sides list each other, as every
        // static peering does): pinned, whatever the selection decides.
        let pinned = match i {
            4 => vec![("acme/n6", nodes[5].port)],
            5 => vec![("acme/n5", nodes[4].port)],
            _ => Vec::new(),
        };
        node.configure(&pinned, &selection);
    }
    for node in &mut nodes {
        node.start();
    }

    // Every node ends with 2-3 sessions, the sessions connect all six, and nobody keeps
    // sessions to all five others.
    let last = std::cell::RefCell::new(None);
    let mesh = common::wait_for_state(
        "a connected mesh of 2-3 peers per node with n5–n6 up",
        || {
            let mesh = sessions(&nodes)?;
            let sizes_ok = mesh.values().all(|s| (2..=3).contains(&s.len()));
            let pinned_up = mesh.get("acme/n6").is_some_and(|s| s.contains("acme/n5"));
            let done = sizes_ok && pinned_up && connected(&mesh);
            let found = done.then(|| mesh.clone());
            *last.borrow_mut() = Some(mesh);
            found
        },
        || last.borrow().clone(),
    );
    assert!(mesh.values().all(|s| s.len() < NAMES.len() - 1), "{mesh:?}");

    // Status shows the selection; the candidates are the five other directory nodes.
    let status = wait_for("n3 knows the whole directory", || {
        let s = nodes[2].try_json(&["status"])?;
        (s["selection"]["candidates"] == 5).then_some(s)
    });
    assert_eq!(status["selection"]["role"], "default", "{status}");
    assert_eq!(status["selection"]["max_active"], 3, "{status}");
    let active = status["selection"]["active"].as_u64().unwrap_or(0);
    assert!((2..=3).contains(&active), "{status}");
    let peers = nodes[2].json(&["peers", "list"]);
    let chosen: Vec<&serde_json::Value> = peers
        .as_array()
        .expect("a list")
        .iter()
        .filter(|p| p["source"] == "directory")
        .collect();
    assert!(!chosen.is_empty(), "{peers}");

    // The directory is in the signed snapshot: six nodes, each at its listen address.
    let file = scratch.join("snapshot.bin");
    let file = file.to_str().expect("utf-8 path");
    let out = authority.cli(&["snapshot", "export", file]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let ca = authority.dir.join("ca.crt");
    let out = trellis(
        &authority.dir,
        &[
            "--json",
            "snapshot",
            "verify",
            file,
            "--ca",
            ca.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed: BTreeMap<String, String> = snapshot["directory"]
        .as_array()
        .expect("a directory")
        .iter()
        .map(|d| {
            (
                d["node_id"].as_str().unwrap_or_default().to_owned(),
                d["address"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for node in &nodes {
        assert_eq!(
            listed.get(&node.id),
            Some(&format!("127.0.0.1:{}", node.port)),
            "{snapshot}"
        );
    }
}
