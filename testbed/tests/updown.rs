//! `up` and `down` in a row on every topology, as CI and developers use them: each `up`
//! must start every process (no torn `state.json` read by the link emulator), each `down`
//! must stop every daemon with SIGTERM (none needing SIGKILL) and free the dir.
//!
//! `TRELLIS_UPDOWN_ROUNDS` sets the rounds (default 2 here; the 100-round run and its
//! command are in docs/testbed.md).

use std::path::Path;
use std::process::{Command, Output};

fn testbed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis-testbed"))
        .args(args)
        .output()
        .expect("run trellis-testbed")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const TOPOLOGIES: [(&str, &str); 7] = [
    ("line", "4"),
    ("ring", "5"),
    ("star", "5"),
    ("grid", "4"),
    ("mesh", "4"),
    ("random", "5"),
    ("multi-org", "6"),
];

#[test]
fn up_and_down_in_a_row_on_every_topology_never_fail() {
    let rounds: usize = std::env::var("TRELLIS_UPDOWN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let base =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("updown-{}", std::process::id()));
    for round in 0..rounds {
        for (topology, nodes) in TOPOLOGIES {
            let dir = base.join(format!("{topology}-{round}"));
            let d = dir.to_str().expect("path");
            let up = testbed(&["up", "--topology", topology, "--nodes", nodes, "--dir", d]);
            assert!(
                up.status.success(),
                "round {round}, {topology}: up failed: {}",
                text(&up)
            );
            let down = testbed(&["down", "--dir", d, "--purge"]);
            assert!(
                down.status.success(),
                "round {round}, {topology}: down failed: {}",
                text(&down)
            );
            assert!(!dir.exists(), "round {round}, {topology}: the dir is left");
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
