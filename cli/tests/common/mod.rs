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
        Self::start_with_env(dir, org, extra, &[])
    }

    /// As [`Authority::start`], with extra environment variables for `authority run`.
    pub fn start_with_env(dir: PathBuf, org: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
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
            .envs(env.iter().copied())
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
        wait_for(&format!("a pending join for {node}"), || {
            let joins = self.json(&["joins", "list", "--pending"]);
            let found = joins
                .as_array()?
                .iter()
                .find(|j| j["node_id"] == node)?
                .clone();
            Some(found["id"].as_str().expect("id").to_owned())
        })
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

/// A free UDP port on 127.0.0.1 in 10000-19999: below the kernel's ephemeral range (so no
/// socket bound to port 0 takes it before the daemon binds it), apart from the testbed's
/// 20000-29999 (so a testbed running beside the tests never collides), and never handed
/// out twice by this process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
        })
        .unwrap_or(32_768);
    let (first, span) = (10_000u32, low.saturating_sub(10_001).clamp(1, 10_000));
    let base = std::process::id().wrapping_mul(7919) % span;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(k < span, "no free port left");
        let port = u16::try_from(first + (base + k) % span).expect("port");
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after 30 s.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// As [`wait_for`], and on timeout the panic shows `state()` (what was seen last).
pub fn wait_for_state<T, S: std::fmt::Debug>(
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    state: impl Fn() -> S,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `trellis tokens operator create` at `authority` for alice with `role`, bound to
/// `cert`, written to `out`; the command's output.
pub fn operator_token(authority: &Authority, role: &str, cert: &Path, out: &Path) -> Output {
    let out = authority.cli(&[
        "--json",
        "tokens",
        "operator",
        "create",
        "--name",
        "alice",
        "--role",
        role,
        "--ttl",
        "1h",
        "--cert",
        cert.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// A node process (`trellisd node run`), killed on drop.
pub struct Node {
    pub dir: PathBuf,
    pub id: String,
    pub port: u16,
    config: PathBuf,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl Node {
    /// Joins `name` to `authority`'s org with an auto-approve join string and writes its
    /// config (listen port and `peers` as `(node id, port)`); not started yet.
    pub fn join(
        scratch: &Scratch,
        authority: &Authority,
        org: &str,
        name: &str,
        join_string: &str,
    ) -> Self {
        let dir = scratch.join(&format!("{org}-{name}"));
        let out = join(&dir, name, join_string);
        assert!(out.status.success(), "join {name}: {}", stderr(&out));
        let _ = authority;
        Self {
            config: dir.join("trellis.toml"),
            dir,
            id: format!("{org}/{name}"),
            port: free_port(),
            env: Vec::new(),
            log: None,
            child: None,
        }
    }

    /// Writes the daemon's stderr (its log) to `path` from the next start on.
    pub fn log_to(&mut self, path: PathBuf) {
        self.log = Some(path);
    }

    /// Writes the config: static peers as `(node id, port)`, plus extra TOML.
    pub fn configure(&self, peers: &[(&str, u16)], extra: &str) {
        let mut text = format!("listen = \"127.0.0.1:{}\"\n{extra}\n", self.port);
        text.push_str("[timers]\nhold_time = \"3s\"\nkeepalive = \"1s\"\nconnect_retry_min = \"100ms\"\nconnect_retry_max = \"1s\"\n");
        // Every daemon of a test shares one loaded host: RTT there measures the
        // scheduler, not a link (tens of ms under a parallel build), so it must not move
        // the paths tests check. Failures, trust and loss still score.
        text.push_str("[scoring]\nrtt_floor = \"1s\"\n");
        for (id, port) in peers {
            text.push_str(&format!(
                "[[peer]]\naddress = \"127.0.0.1:{port}\"\nnode_id = \"{id}\"\n"
            ));
        }
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Sets an environment variable for the next start.
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    /// Starts the daemon and waits for its "listening" line.
    pub fn start(&mut self) {
        let mut child = Command::new(bin("trellisd"))
            .args(["node", "run", "--data-dir"])
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config)
            .env("TRELLIS_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(match &self.log {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log")),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("spawn trellisd node run");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        assert!(
            line.contains("listening on"),
            "node {} did not start: {line:?}",
            self.id
        );
        self.child = Some(child);
    }

    /// Sends `signal` (`-TERM`, `-INT`) as an operator would and waits for the daemon to
    /// exit; panics if it is still running after 20 s (the bound of a hang, not a timing).
    pub fn stop_with(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {}", child.id());
        // The exit is the event: a thread waits for it; 20 s only bound a hang.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(status) => status.expect("wait for the node"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("{} still running 20 s after kill {signal}", self.id);
            }
        }
    }

    /// Kills the daemon at once (`kill -9`).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `trellis --json ARGS` against this node, parsed; `None` if it failed.
    pub fn try_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = trellis(&self.dir, &[&["--json"], args].concat());
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `trellis --json ARGS`, panicking on failure.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = trellis(&self.dir, &[&["--json"], args].concat());
        assert!(
            out.status.success(),
            "trellis {args:?} on {}: {}",
            self.id,
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// The best route to `service`, if any.
    pub fn route(&self, service: &str) -> Option<serde_json::Value> {
        let routes = self.try_json(&["routes", "list"])?;
        routes
            .as_array()?
            .iter()
            .find(|r| r["service"] == service)
            .cloned()
    }

    /// The path of the best route to `service` as node/org names.
    pub fn path(&self, service: &str) -> Option<Vec<String>> {
        let route = self.route(service)?;
        Some(
            route["path"]
                .as_array()?
                .iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// Whether the session with `peer` is up.
    pub fn peer_up(&self, peer: &str) -> bool {
        self.try_json(&["peers", "list"])
            .and_then(|p| p.as_array().cloned())
            .is_some_and(|peers| {
                peers
                    .iter()
                    .any(|p| p["node_id"] == peer && p["state"] == "up")
            })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An authority for `org` and joined (not started) nodes named `names`.
pub fn org_with(scratch: &Scratch, org: &str, names: &[&str]) -> (Authority, Vec<Node>) {
    let authority = Authority::start(scratch.join(&format!("auth-{org}")), org, &[]);
    let uses = names.len().to_string();
    let js = authority.token(&["--auto-approve", "--uses", &uses]);
    let nodes = names
        .iter()
        .map(|n| Node::join(scratch, &authority, org, n, &js))
        .collect();
    (authority, nodes)
}

/// Writes `<node dir>/peerings/<partner org>.toml` naming `partner` (whose authority is
/// `partner_ca`) in `role` relative to `node`, with the partner's CA copied next to it.
pub fn peering(node: &Node, partner_ca: &Authority, partner: &Node, role: &str) {
    peering_with(node, partner_ca, &[partner], role);
}

/// As [`peering`], with several endpoints of one partner org.
pub fn peering_with(node: &Node, partner_ca: &Authority, partners: &[&Node], role: &str) {
    let org = partners[0]
        .id
        .split('/')
        .next()
        .expect("node id has an org");
    let dir = node.dir.join("peerings");
    std::fs::create_dir_all(&dir).expect("create the peering dir");
    let ca = format!("{org}-ca.pem");
    std::fs::copy(partner_ca.dir.join("ca.crt"), dir.join(&ca)).expect("copy the partner CA");
    let mut text = format!("org = \"{org}\"\nca = \"{ca}\"\nrole = \"{role}\"\n");
    for partner in partners {
        text.push_str(&format!(
            "[[endpoint]]\naddress = \"127.0.0.1:{}\"\nnode_id = \"{}\"\n",
            partner.port, partner.id
        ));
    }
    std::fs::write(dir.join(format!("{org}.toml")), text).expect("write the peering file");
}

/// An echo server on 127.0.0.1: every connection gets its bytes back, then a FIN after
/// the client's FIN.
pub fn echo_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// A TCP port on 127.0.0.1 that is free now (from the tests' UDP range, checked for TCP).
pub fn free_tcp_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
