//! What runs where: `DIR/state.json`, written by `up` and the scenarios as each process
//! starts (so a failed `up` leaves nothing `down` cannot find), read by `status`, `down`
//! and the demo's Ctrl-C handler; and free ports for the processes.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::emulator::Impairment;

/// An authority as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthorityState {
    /// Org.
    pub org: String,
    /// Data dir.
    pub dir: PathBuf,
    /// Enrollment port on 127.0.0.1.
    pub port: u16,
    /// Process id while running.
    pub pid: Option<u32>,
}

/// A node as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeState {
    /// Node id.
    pub id: String,
    /// Data dir.
    pub dir: PathBuf,
    /// QUIC port on 127.0.0.1.
    pub port: u16,
    /// Process id while running.
    pub pid: Option<u32>,
}

/// A link as recorded: `a` dials `b` at `relay_ab`, `b` dials `a` at `relay_ba`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkState {
    /// One end (node index).
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// Relay port a → b.
    pub relay_ab: u16,
    /// Relay port b → a.
    pub relay_ba: u16,
    /// Impairment at start.
    pub impairment: Impairment,
}

/// Everything `status` and `down` need.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Network dir.
    pub dir: PathBuf,
    /// Authorities.
    pub authorities: Vec<AuthorityState>,
    /// Nodes.
    pub nodes: Vec<NodeState>,
    /// Links.
    pub links: Vec<LinkState>,
    /// The background emulator process (`up` only).
    pub emulator_pid: Option<u32>,
}

impl State {
    /// Reads `DIR/state.json`. The file is only ever replaced whole (temp file and
    /// rename), so a reader sees the old or the new state; a file that does not parse (one
    /// written by hand, or by an older testbed without atomic writes) is read again a few
    /// times before it is an error.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("state.json");
        let mut tries = 0;
        loop {
            let text = fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e} (is a testbed up in this dir?)", path.display()))?;
            match serde_json::from_str(&text) {
                Ok(state) => return Ok(state),
                Err(_) if tries < 5 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    }

    /// Writes `DIR/state.json` atomically (temp file, fsync, rename).
    pub fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        write_file(&self.dir.join("state.json"), text.as_bytes())
    }

    /// Index of a node by id.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }
}

/// Where testbeds take their ports when no `--base-port` is given. The tests of this
/// repository take theirs from 10000-19999, and the kernel hands out ephemeral ports from
/// 32768 up, so a testbed never collides with either.
pub const TESTBED_PORTS: std::ops::Range<u16> = 20_000..30_000;

/// `n` distinct free UDP ports on 127.0.0.1 for one testbed: `base..base + n` exactly when
/// a base is given (an error names the first port in use), otherwise free ports found in
/// [`TESTBED_PORTS`] from an offset that differs between processes, so two testbeds
/// started at once do not race for the same ports.
pub fn free_ports(n: usize, base: Option<u16>) -> Result<Vec<u16>, String> {
    let count = u16::try_from(n).map_err(|_| format!("{n} ports is too many"))?;
    if let Some(base) = base {
        if base < 1024 {
            return Err(format!("--base-port {base}: use a port of 1024 or more"));
        }
        let end = base
            .checked_add(count)
            .filter(|&end| end <= 32_768)
            .ok_or_else(|| {
                format!("--base-port {base} + {n} ports runs into the ephemeral range (32768 up)")
            })?;
        let mut held = Vec::new();
        for port in base..end {
            match std::net::UdpSocket::bind(("127.0.0.1", port)) {
                Ok(socket) => held.push(socket),
                Err(e) => {
                    return Err(format!(
                        "port {port} is in use ({e}); this testbed needs {n} ports from {base}: pick another --base-port"
                    ))
                }
            }
        }
        return Ok((base..end).collect());
    }
    let (first, span) = (
        TESTBED_PORTS.start,
        u32::from(TESTBED_PORTS.end - TESTBED_PORTS.start),
    );
    let start = (std::process::id().wrapping_mul(7919)) % span;
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for k in 0..span {
        if ports.len() == n {
            break;
        }
        let port = first + u16::try_from((start + k) % span).unwrap_or(0);
        if let Ok(socket) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
            held.push(socket);
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(format!(
            "only {} free ports in {}-{}",
            ports.len(),
            TESTBED_PORTS.start,
            TESTBED_PORTS.end - 1
        ));
    }
    Ok(ports)
}

impl State {
    /// What the process `pid` is: a node id, `authority ORG`, or `link emulator`.
    pub fn name_of(&self, pid: u32) -> String {
        if let Some(n) = self.nodes.iter().find(|n| n.pid == Some(pid)) {
            return format!("{} (pid {pid})", n.id);
        }
        if let Some(a) = self.authorities.iter().find(|a| a.pid == Some(pid)) {
            return format!("authority {} (pid {pid})", a.org);
        }
        if self.emulator_pid == Some(pid) {
            return format!("link emulator (pid {pid})");
        }
        format!("pid {pid}")
    }

    /// Every process id recorded: nodes, authorities, the emulator process.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.nodes.iter().filter_map(|n| n.pid).collect();
        pids.extend(self.authorities.iter().filter_map(|a| a.pid));
        pids.extend(self.emulator_pid);
        pids
    }
}

/// Whether `pid` runs and is a `trellis-testbed` process (a pid reused by something
/// else is left alone).
pub fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("trellis-testbed"))
        .unwrap_or(false)
}

/// Writes a testbed file atomically (temp file, fsync, rename, fsync dir), so a process
/// reading it at the same time sees the old or the new content, never a torn file.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    trellis_daemon::util::files::write_atomic(path, bytes, 0o644)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Sends `signal` (`-TERM`, `-KILL`) to `pid`.
pub fn signal(signal: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// How long a daemon may take to exit after SIGTERM before it counts as hung.
pub const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`stop_recorded`] did.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Processes that were still running.
    pub running: usize,
    /// Of those, the pids that ignored SIGTERM for [`TERM_GRACE`] and were SIGKILLed.
    pub killed: Vec<u32>,
}

/// Stops every recorded process that is still ours: SIGTERM, then SIGKILL for any still
/// running after [`TERM_GRACE`] (reported, so a hung daemon is not hidden).
pub fn stop_recorded(state: &State) -> Stopped {
    let ours: Vec<u32> = state.pids().into_iter().filter(|&p| alive(p)).collect();
    for &pid in &ours {
        signal("-TERM", pid);
    }
    let stopped = super::cluster::wait_until(TERM_GRACE, || ours.iter().all(|&p| !alive(p)));
    let mut killed = Vec::new();
    if !stopped {
        for &pid in ours.iter().filter(|&&p| alive(p)) {
            signal("-KILL", pid);
            killed.push(pid);
        }
    }
    Stopped {
        running: ours.len(),
        killed,
    }
}
