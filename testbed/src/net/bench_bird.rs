//! The BIRD side of `trellis-testbed bench table --bird`: the same full table through
//! one BGP session between two BIRD 2 daemons, in the same run (docs/performance.md).
//!
//! BIRD is an outside program: this module only runs it, from `PATH` (`bird`,
//! `birdc`; Debian's `bird2`, which `testbed/bench/table.sh` installs where apt is
//! available). Without it the BIRD columns are skipped with a message that says so.
//!
//! For a table of N routes: BIRD `a` holds N static /32 routes, each with its own MED
//! (unique attributes: no two routes can share an UPDATE, as no two Trellis services
//! share an entry), in a static protocol that starts disabled; BIRD `b` peers with it
//! over eBGP on loopback (127.0.0.1 ↔ 127.0.0.2, ports of our own) and imports
//! everything. Nothing is exported to the kernel. Once the session is established, the
//! clock starts and `a`'s static protocol is enabled (the table appears at `a`, as a
//! bulk load appears at a Trellis node); `b`'s route count is read until it holds 99 %
//! and 100 % of them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster::wait_until;
use super::observe;

/// How long one size may take before the run gives up (bounds a hang).
const LIMIT: Duration = Duration::from_secs(600);

/// BIRD's figures for one size.
#[derive(Clone, Debug, Serialize)]
pub struct BirdResult {
    /// From enabling the routes at `a` until `b` held 99 % of them, ms.
    pub p99_ms: u64,
    /// ... and all of them, ms.
    pub all_ms: u64,
    /// Routes per second to 100 % at `b`.
    pub routes_per_s: u64,
    /// Resident memory of `a` and `b` at the end, KiB.
    pub rss_a_kb: u64,
    /// `b`'s.
    pub rss_b_kb: u64,
    /// `b`'s growth from before the routes came, bytes per route.
    pub b_bytes_per_route: u64,
}

/// Whether BIRD can be run here; the reason otherwise.
pub fn available() -> Result<String, String> {
    let out = Command::new("bird")
        .arg("--version")
        .output()
        .map_err(|e| format!("bird: {e}"))?;
    // BIRD prints its version on stderr.
    let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let text = if text.is_empty() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        text
    };
    if !text.starts_with("BIRD version 2") {
        return Err(format!("bird is not BIRD 2 ({text:?})"));
    }
    Command::new("birdc")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("birdc: {e}"))?;
    Ok(text)
}

/// A free TCP port on `ip`.
fn free_port(ip: &str) -> Result<u16, String> {
    let l = std::net::TcpListener::bind((ip, 0)).map_err(|e| format!("{ip}: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The address of route `i`: 10.0.0.0/8 has room for 16 M /32s.
fn prefix(i: usize) -> String {
    format!("10.{}.{}.{}/32", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn write_configs(dir: &Path, n: usize, ports: (u16, u16)) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let mut a = std::io::BufWriter::new(std::fs::File::create(dir.join("a.conf")).map_err(io)?);
    writeln!(
        a,
        "router id 10.255.0.1;\nprotocol static st {{\n  ipv4;\n  disabled;"
    )
    .map_err(io)?;
    for i in 0..n {
        writeln!(
            a,
            "  route {} blackhole {{ bgp_med = {}; }};",
            prefix(i),
            i + 1
        )
        .map_err(io)?;
    }
    writeln!(
        a,
        "}}\nprotocol bgp peer {{\n  local 127.0.0.1 port {} as 65001;\n  \
         neighbor 127.0.0.2 port {} as 65002;\n  multihop;\n  \
         ipv4 {{ import none; export all; next hop self; }};\n}}",
        ports.0, ports.1
    )
    .map_err(io)?;
    a.flush().map_err(io)?;
    std::fs::write(
        dir.join("b.conf"),
        format!(
            "router id 10.255.0.2;\nprotocol bgp peer {{\n  local 127.0.0.2 port {} as 65002;\n  \
             neighbor 127.0.0.1 port {} as 65001;\n  multihop;\n  \
             ipv4 {{ import all; export none; }};\n}}\n",
            ports.1, ports.0
        ),
    )
    .map_err(io)
}

/// A running BIRD, killed when dropped.
struct Bird {
    child: Child,
    socket: PathBuf,
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bird {
    fn start(dir: &Path, name: &str) -> Result<Self, String> {
        let socket = dir.join(format!("{name}.sock"));
        let log = std::fs::File::create(dir.join(format!("{name}.log")))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new("bird")
            .arg("-f")
            .arg("-c")
            .arg(dir.join(format!("{name}.conf")))
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join(format!("{name}.pid")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start bird {name}: {e}"))?;
        let bird = Self { child, socket };
        if !wait_until(Duration::from_secs(120), || {
            bird.ask("show status").is_some()
        }) {
            return Err(format!(
                "bird {name} did not answer (see {}/{name}.log)",
                dir.display()
            ));
        }
        Ok(bird)
    }

    /// `birdc -s SOCKET COMMAND`'s output, `None` if it failed.
    fn ask(&self, command: &str) -> Option<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(command.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Routes in the IPv4 table (`show route count`).
    fn routes(&self) -> usize {
        self.ask("show route count")
            .and_then(|text| {
                text.lines()
                    .find(|l| l.contains("master4"))
                    .and_then(|l| l.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn rss_kb(&self) -> u64 {
        observe::rss_kb(self.child.id()).unwrap_or(0)
    }
}

/// Measures a table of `n` routes between two BIRDs in `dir`.
pub fn run(n: usize, dir: &Path) -> Result<BirdResult, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ports = (free_port("127.0.0.1")?, free_port("127.0.0.2")?);
    write_configs(dir, n, ports)?;
    let b = Bird::start(dir, "b")?;
    let a = Bird::start(dir, "a")?;
    // BIRD waits a few seconds before it first connects; the clock starts after.
    let up = wait_until(Duration::from_secs(120), || {
        a.ask("show protocols peer")
            .is_some_and(|t| t.contains("Established"))
    });
    if !up {
        return Err(format!(
            "the BIRD session did not come up (see {})",
            dir.display()
        ));
    }
    let b_before = b.rss_kb();
    let started = Instant::now();
    a.ask("enable st")
        .ok_or("birdc enable st failed at BIRD a")?;
    let want99 = n - n / 100;
    let (mut p99, mut all) = (None, None);
    while all.is_none() && started.elapsed() < LIMIT {
        let held = b.routes();
        if p99.is_none() && held >= want99 {
            p99 = Some(started.elapsed());
        }
        if held >= n {
            all = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let all = all.ok_or_else(|| format!("BIRD b did not get all {n} routes within {LIMIT:?}"))?;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (rss_a, rss_b) = (a.rss_kb(), b.rss_kb());
    Ok(BirdResult {
        p99_ms: ms(p99.unwrap_or(all)),
        all_ms: ms(all),
        routes_per_s: (n as f64 / all.as_secs_f64().max(1e-6)) as u64,
        rss_a_kb: rss_a,
        rss_b_kb: rss_b,
        b_bytes_per_route: rss_b.saturating_sub(b_before) * 1024 / n.max(1) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct_loopback_free_slash_32s() {
        assert_eq!(prefix(0), "10.0.0.0/32");
        assert_eq!(prefix(256), "10.0.1.0/32");
        assert_eq!(prefix(1_000_000), "10.15.66.64/32");
        let all: std::collections::HashSet<String> = (0..70_000).map(prefix).collect();
        assert_eq!(all.len(), 70_000);
    }

    #[test]
    fn configs_hold_every_route_with_its_own_med() {
        let dir = std::env::temp_dir().join(format!("trellis-bird-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        write_configs(&dir, 3, (1001, 1002)).expect("written");
        let a = std::fs::read_to_string(dir.join("a.conf")).expect("a");
        let b = std::fs::read_to_string(dir.join("b.conf")).expect("b");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(a.matches("blackhole").count(), 3);
        assert!(a.contains("bgp_med = 3;"));
        assert!(a.contains("disabled;"));
        assert!(a.contains("neighbor 127.0.0.2 port 1002"));
        assert!(b.contains("neighbor 127.0.0.1 port 1001"));
    }
}
