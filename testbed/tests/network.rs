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

/// Whether `pid` is a running `trellis-testbed` process.
fn ours(pid: u64) -> bool {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmd).contains("trellis-testbed")
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

    // 2. Links change at runtime; flags not given keep their values.
    let set = json(&testbed(&[
        "link", "set", "a/n0", "a/n1", "--delay", "20ms", "--loss", "1%", "--dir", d,
    ]));
    assert_eq!(set["impairment"]["delay_ms"], 20.0);
    let burst = json(&testbed(&[
        "link",
        "set",
        "a/n0",
        "a/n1",
        "--burst",
        "1%,30%,50%",
        "--dir",
        d,
    ]));
    assert_eq!(burst["impairment"]["delay_ms"], 20.0, "{burst}");
    assert_eq!(burst["impairment"]["loss"], 0.01, "{burst}");
    assert_eq!(burst["impairment"]["burst"]["loss_in_bad"], 0.5, "{burst}");
    let cut = json(&testbed(&["link", "cut", "a/n0", "a/n1", "--dir", d]));
    assert_eq!(cut["cut"], true);
    let heal = json(&testbed(&["link", "heal", "a/n0", "a/n1", "--dir", d]));
    assert_eq!(heal["cut"], false);
    let unknown = testbed(&["link", "cut", "a/n0", "a/n2", "--dir", d]);
    assert!(
        !unknown.status.success(),
        "a/n0 and a/n2 share no link in a line"
    );

    // 3. down stops every process it started (nodes, authorities, the emulator) and
    // keeps the dir.
    let mut pids: Vec<u64> = nodes.iter().filter_map(|n| n["pid"].as_u64()).collect();
    let authorities = status["authorities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    pids.extend(authorities.iter().filter_map(|a| a["pid"].as_u64()));
    pids.extend(status["emulator_pid"].as_u64());
    assert_eq!(pids.len(), 3 + 1 + 1, "{status}");
    assert!(pids.iter().all(|&p| ours(p)), "{status}");
    let down = testbed(&["down", "--dir", d]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for pid in pids {
        assert!(!ours(pid), "{pid} still runs: {status}");
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

#[test]
fn orgs_that_cannot_apply_are_refused() {
    let dir = scratch("testbed-orgs");
    let d = dir.to_str().expect("path");
    let ring = testbed(&["up", "--topology", "ring", "--orgs", "4", "--dir", d]);
    assert_eq!(ring.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&ring.stderr).contains("only to --topology multi-org"));
    let one = testbed(&[
        "sim",
        "--topology",
        "multi-org",
        "--orgs",
        "1",
        "--nodes",
        "6",
    ]);
    assert_eq!(one.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&one.stderr).contains("at least 2 orgs"));
    assert!(!dir.join("state.json").exists(), "nothing was started");
}

#[test]
fn three_orgs_converge_with_every_node_reaching_every_service_across_orgs() {
    let file = manifest_dir().join("topologies/three-orgs.toml");
    let out = testbed(&[
        "scenario",
        "converge",
        "--topology",
        file.to_str().expect("path"),
        "--json",
    ]);
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report}");
    // 9 nodes × 9 services, the cross-org ones included: the file's relations let
    // every node reach every service under valley-free export.
    let reach = &report["invariants"][0];
    assert_eq!(reach["held"], true, "{report}");
    assert_eq!(
        reach["detail"], "81 pairs delivered, 0 withheld by valley-free export",
        "{report}"
    );
}

#[test]
fn the_flap_scenario_really_flaps_and_the_network_recovers() {
    let report = json(&testbed(&["scenario", "flap", "--nodes", "3", "--json"]));
    assert_eq!(report["ok"], true, "{report}");
    let applied = report["invariants"]
        .as_array()
        .and_then(|i| {
            i.iter().find(|i| {
                i["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("flap was applied"))
            })
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(applied["held"], true, "{report}");
    let phases = report["phases"].as_array().cloned().unwrap_or_default();
    assert_eq!(phases.len(), 2, "{report}");
    assert!(
        phases[0]["black_hole_samples"].as_u64() > Some(0),
        "cutting node 0 off leaves black holes while flapping: {report}"
    );
    assert!(phases[1]["reached_ms"].as_u64().is_some(), "{report}");
}

#[test]
fn a_failed_up_stops_what_it_started_and_leaves_its_pids_on_record() {
    let dir = scratch("testbed-up-fails");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // A plain file where the emulator's control socket goes: the emulator refuses to
    // start, after the authority and the emulator process were spawned.
    std::fs::write(dir.join("control.sock"), "").expect("write");
    let d = dir.to_str().expect("path");
    let up = testbed(&["up", "--topology", "line", "--nodes", "2", "--dir", d]);
    assert_eq!(up.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(stderr.contains("stopped"), "{stderr}");
    let text = std::fs::read_to_string(dir.join("state.down.json")).expect("state kept");
    let state: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut pids: Vec<u64> = state["authorities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["pid"].as_u64())
        .collect();
    pids.extend(state["emulator_pid"].as_u64());
    assert_eq!(
        pids.len(),
        2,
        "authority and emulator were recorded: {state}"
    );
    for pid in pids {
        assert!(!ours(pid), "{pid} still runs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_base_port_places_a_testbed_and_a_taken_one_is_refused_with_the_port() {
    let dir = scratch("testbed-base-port");
    let d = dir.to_str().expect("path");
    // A port this test holds: the testbed must refuse a block that contains it.
    let (taken, held) = (0..1000)
        .map(|k| 25_000 + (std::process::id() % 3_000) as u16 + k)
        .find_map(|p| {
            std::net::UdpSocket::bind(("127.0.0.1", p))
                .ok()
                .map(|s| (p, s))
        })
        .expect("a free port to hold");
    let up_at = |base: u16| {
        testbed(&[
            "up",
            "--topology",
            "line",
            "--nodes",
            "2",
            "--dir",
            d,
            "--base-port",
            &base.to_string(),
        ])
    };
    let up = up_at(taken);
    assert_eq!(
        up.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        String::from_utf8_lossy(&up.stderr).contains(&format!("port {taken} is in use")),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(held);
    // A free block: every process listens where `status` says, from the base on.
    let base = (0..200)
        .map(|k| 24_000 + (std::process::id() % 3_000) as u16 + k * 10)
        .find(|&b| (b..b + 5).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()))
        .expect("a free block of 5 ports");
    let up = up_at(base);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = json(&testbed(&["status", "--dir", d, "--json"]));
    let mut ports: Vec<u64> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["port"].as_u64().expect("port"))
        .chain(
            status["authorities"]
                .as_array()
                .expect("auths")
                .iter()
                .map(|a| a["port"].as_u64().expect("port")),
        )
        .chain(
            status["links"]
                .as_array()
                .expect("links")
                .iter()
                .flat_map(|l| {
                    [
                        l["relay_a_to_b"].as_u64().expect("relay"),
                        l["relay_b_to_a"].as_u64().expect("relay"),
                    ]
                }),
        )
        .collect();
    ports.sort_unstable();
    let want: Vec<u64> = (u64::from(base)..u64::from(base) + 5).collect();
    assert_eq!(ports, want, "{status}");
    let down = testbed(&["down", "--dir", d, "--purge"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

/// The package dir at run time (cargo sets it for tests), so a test binary built from
/// another checkout sharing the target dir reads this checkout's files.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}
