//! Real processes on loopback: an authority (`trellisd authority run`), nodes joining it
//! (`trellisd node join`) and the `trellis` CLI. Every address is 127.0.0.1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary of this workspace, next to the `trellis` binary cargo built for these tests.
pub fn bin(name: &str) -> PathBuf {
    let trellis = PathBuf::from(env!("CARGO_BIN_EXE_trellis"));
    let path = trellis.with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    pub fn join(&self, part: &str) -> PathBuf {
        self.0.join(part)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running authority process, killed on drop.
pub struct Authority {
    pub dir: PathBuf,
    pub addr: String,
    child: Child,
}

impl Authority {
    /// `trellisd authority init` + `run` on 127.0.0.1 with an OS-chosen port.
    pub fn start(dir: PathBuf, org: &str, extra: &[&str]) -> Self {
        let init = Command::new(bin("trellisd"))
            .args(["authority", "init", "--org", org, "--data-dir"])
            .arg(&dir)
            .output()
            .expect("run trellisd authority init");
        assert!(
            init.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut child = Command::new(bin("trellisd"))
            .args(["authority", "run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args(extra)
            .env("TRELLIS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn trellisd authority run");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { dir, addr, child }
    }

    /// Runs `trellis --data-dir <authority> ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        trellis(&self.dir, args)
    }

    /// Runs `trellis --json ...` and parses the output; panics on failure.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(&[&["--json"], args].concat());
        assert!(
            out.status.success(),
            "trellis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// A new join string.
    pub fn token(&self, args: &[&str]) -> String {
        let created = self.json(&[&["tokens", "create"], args].concat());
        created["join_string"]
            .as_str()
            .expect("join string")
            .to_owned()
    }

    /// Waits until a pending join for `node` shows up; returns its id.
    pub fn pending_join(&self, node: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let joins = self.json(&["joins", "list", "--pending"]);
            if let Some(j) = joins
                .as_array()
                .and_then(|a| a.iter().find(|j| j["node_id"] == node))
            {
                return j["id"].as_str().expect("id").to_owned();
            }
            assert!(Instant::now() < deadline, "no pending join for {node}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `trellis --data-dir DIR ARGS`.
pub fn trellis(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("trellis"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run trellis")
}

/// `trellisd node join` as a child process.
pub fn spawn_join(dir: &Path, name: &str, join_string: &str, extra: &[&str]) -> Child {
    Command::new(bin("trellisd"))
        .args(["node", "join", "--name", name, "--data-dir"])
        .arg(dir)
        .args(extra)
        .arg(join_string)
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trellisd node join")
}

/// Runs a join to completion.
pub fn join(dir: &Path, name: &str, join_string: &str) -> Output {
    spawn_join(dir, name, join_string, &[])
        .wait_with_output()
        .expect("join output")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}
