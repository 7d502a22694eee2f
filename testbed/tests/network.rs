//! The multi-process testbed, end to end: `trellis-testbed` brings up real daemons on
//! 127.0.0.1 through its link emulator, changes links at runtime, runs scenarios and
//! stops only what it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testbed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis-testbed"))
        .args(args)
        .output()
        .expect("run trellis-testbed")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn up_status_link_and_down_manage_a_running_network() {
    let dir = scratch("testbed-up");
    let d = dir.to_str().expect("path");
    let up = testbed(&["up", "--topology", "line", "--nodes", "3", "--dir", d]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(String::from_utf8_lossy(&up.stdout).contains("--data-dir"));

    // 1. Every node runs; sessions come up through the emulator.
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        status = json(&testbed(&["status", "--dir", d, "--json"]));
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["running"] == true && n["peers_up"] == n["peers"])
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    assert!(
        nodes.iter().all(|n| n["peers_up"] == n["peers"]),
        "{status}"
    );
    assert_eq!(status["emulator_running"], true);

    // 2. Links change at runtime.
    let set = json(&testbed(&[
        "link", "set", "a/n0", "a/n1", "--delay", "20ms", "--loss", "1%", "--dir", d,
    ]));
    assert_eq!(set["impairment"]["delay_ms"], 20.0);
    let cut = json(&testbed(&["link", "cut", "a/n0", "a/n1", "--dir", d]));
    assert_eq!(cut["cut"], true);
    let heal = json(&testbed(&["link", "heal", "a/n0", "a/n1", "--dir", d]));
    assert_eq!(heal["cut"], false);
    let unknown = testbed(&["link", "cut", "a/n0", "a/n2", "--dir", d]);
    assert!(
        !unknown.status.success(),
        "a/n0 and a/n2 share no link in a line"
    );

    // 3. down stops every process it started and keeps the dir.
    let down = testbed(&["down", "--dir", d]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for n in &nodes {
        let pid = n["pid"].as_u64().expect("pid");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                !String::from_utf8_lossy(&cmd).contains("trellis-testbed")
            },
            "{} still runs",
            n["node"]
        );
    }
    assert!(
        dir.join("nodes").exists(),
        "down keeps the data unless --purge"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kill_node_scenario_holds_its_invariants_on_a_ring() {
    let out = testbed(&["scenario", "kill-node", "--nodes", "4", "--json"]);
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["reconverge_ms"].as_u64().is_some(), "{report}");
    assert!(report["invariants"]
        .as_array()
        .is_some_and(|i| i.len() >= 4));
}

#[test]
fn an_unknown_scenario_is_refused() {
    let out = testbed(&["scenario", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario"));
}
