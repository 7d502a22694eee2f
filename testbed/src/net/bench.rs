//! `trellis-testbed bench dataplane`: one TCP connection through Trellis's data plane
//! against a direct TCP connection, measured side by side in one run
//! (docs/performance.md, "Data plane").
//!
//! A line of four real daemons in one org (`n0 — n1 — n2 — n3`), peers dialing each
//! other directly (no link emulator), default timers. `n3` originates `sink.bench` (reads
//! everything, then answers with the byte count) and `echo.bench`; `trellis connect`
//! listeners at `n2` (1 hop) and `n0` (3 hops). For each path — direct, 1 hop, 3 hops —
//! it measures: bulk throughput of one connection (the median of `runs`), the round trip
//! of 64-byte messages on an open connection (added latency), and the time from
//! `connect()` to the first echoed byte on a new connection (setup).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use trellis_daemon::admin::{client, ConnectInfo, Request};

use super::cluster::{wait_until, Cluster, NetOptions};
use super::observe;
use super::traffic::free_tcp_port;

/// The benchmark's network.
const LINE: &str = "[[org]]\nname = \"bench\"\nnodes = [\"n0\", \"n1\", \"n2\", \"n3\"]\n\
    [[link]]\na = \"bench/n0\"\nb = \"bench/n1\"\n\
    [[link]]\na = \"bench/n1\"\nb = \"bench/n2\"\n\
    [[link]]\na = \"bench/n2\"\nb = \"bench/n3\"\n";

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes per bulk transfer.
    pub bytes: u64,
    /// Bulk transfers per path (the median is reported).
    pub runs: usize,
    /// Round trips and new connections per path.
    pub rounds: usize,
}

/// One path's figures.
#[derive(Clone, Debug, Serialize)]
pub struct PathResult {
    /// `direct`, `1 hop`, `3 hops`.
    pub path: String,
    /// QUIC hops.
    pub hops: u32,
    /// Median bulk throughput, Gb/s.
    pub throughput_gbps: f64,
    /// Every run, Gb/s.
    pub throughput_runs: Vec<f64>,
    /// Round trip of 64 bytes on an open connection, p50 and p99, µs.
    pub rtt_p50_us: f64,
    /// p99 of the round trip.
    pub rtt_p99_us: f64,
    /// `connect()` to the first echoed byte on a new connection, p50 and p99, µs.
    pub setup_p50_us: f64,
    /// p99 of the setup.
    pub setup_p99_us: f64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Bytes per bulk transfer.
    pub bytes: u64,
    /// Bulk transfers per path.
    pub runs: usize,
    /// Round trips and connections per path.
    pub rounds: usize,
    /// Direct, 1 hop, 3 hops.
    pub paths: Vec<PathResult>,
    /// Resident memory of each daemon after the run, KiB.
    pub daemon_rss_kb: Vec<(String, u64)>,
    /// CPUs of this machine.
    pub cpus: usize,
}

/// A server that reads a connection to its end, then writes the byte count (8 bytes BE).
fn sink_server() -> Result<u16, String> {
    serve(|mut conn| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(_) => return,
            }
        }
        let _ = conn.write_all(&total.to_be_bytes());
        let _ = conn.shutdown(Shutdown::Write);
    })
}

/// A server that echoes every byte.
fn echo_server() -> Result<u16, String> {
    serve(|mut conn| {
        let _ = conn.set_nodelay(true);
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
        let _ = conn.shutdown(Shutdown::Write);
    })
}

fn serve(handler: fn(TcpStream)) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("server: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || handler(conn));
        }
    });
    Ok(port)
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// Sends `bytes` through `port` and waits for the sink's count; Gb/s.
fn bulk(port: u16, bytes: u64) -> Result<f64, String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(io)?;
    let chunk = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        conn.write_all(&chunk[..n]).map_err(io)?;
        left -= n as u64;
    }
    conn.shutdown(Shutdown::Write).map_err(io)?;
    let mut count = [0u8; 8];
    conn.read_exact(&mut count).map_err(io)?;
    let secs = start.elapsed().as_secs_f64();
    if u64::from_be_bytes(count) != bytes {
        return Err(format!(
            "the sink counted {} bytes of {bytes}",
            u64::from_be_bytes(count)
        ));
    }
    Ok(bytes as f64 * 8.0 / secs / 1e9)
}

/// Round trips of 64 bytes on one open connection, µs each.
fn round_trips(port: u16, rounds: usize) -> Result<Vec<f64>, String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    conn.set_nodelay(true).map_err(io)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t = Instant::now();
        conn.write_all(&msg).map_err(io)?;
        conn.read_exact(&mut back).map_err(io)?;
        // The first tenth warms the path up and is not counted.
        if i >= rounds / 10 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(out)
}

/// New connections: `connect()` to the first echoed byte, µs each.
fn setups(port: u16, rounds: usize) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
        conn.set_nodelay(true).map_err(io)?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        conn.write_all(b"x").map_err(io)?;
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).map_err(io)?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
        let _ = conn.shutdown(Shutdown::Both);
    }
    Ok(out)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() - 1) as f64 * p).round() as usize;
    values[i.min(values.len() - 1)]
}

fn measure(path: &str, hops: u32, sink: u16, echo: u16, o: &Options) -> Result<PathResult, String> {
    let mut runs = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        runs.push(bulk(sink, o.bytes)?);
    }
    let mut sorted = runs.clone();
    let throughput = percentile(&mut sorted, 0.5);
    let mut rtt = round_trips(echo, o.rounds)?;
    let mut setup = setups(echo, o.rounds)?;
    Ok(PathResult {
        path: path.to_owned(),
        hops,
        throughput_gbps: throughput,
        throughput_runs: runs,
        rtt_p50_us: percentile(&mut rtt, 0.5),
        rtt_p99_us: percentile(&mut rtt, 0.99),
        setup_p50_us: percentile(&mut setup, 0.5),
        setup_p99_us: percentile(&mut setup, 0.99),
    })
}

/// Runs the benchmark in a scratch dir, stopping every daemon at the end.
pub fn run(o: &Options) -> Result<Report, String> {
    let dir = std::env::temp_dir().join(format!("trellis-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = bench(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn connect(cluster: &Cluster, node: usize, service: &str) -> Result<u16, String> {
    let port = free_tcp_port()?;
    let _: ConnectInfo = client::call_as(
        &observe::socket(&cluster.state.nodes[node]),
        &Request::ConnectAdd {
            service: service.into(),
            listen: format!("127.0.0.1:{port}"),
        },
    )
    .map_err(|e| format!("connect {service}: {e}"))?;
    Ok(port)
}

fn bench(o: &Options, dir: &Path) -> Result<Report, String> {
    let topo = crate::topology_file::parse(LINE)?;
    let net = NetOptions {
        direct: true,
        ..NetOptions::default()
    };
    let mut cluster = Cluster::create(dir, &topo, net, 1, false)?;
    cluster.start_all()?;
    let (sink, echo) = (sink_server()?, echo_server()?);
    let origin = observe::socket(&cluster.state.nodes[3]);
    for (service, port) in [("sink.bench", sink), ("echo.bench", echo)] {
        client::call(
            &origin,
            &Request::RoutesAdvertise {
                service: service.into(),
                endpoint: format!("127.0.0.1:{port}"),
                protocol: "tcp".into(),
            },
        )
        .map_err(|e| format!("advertise {service}: {e}"))?;
    }
    let routed = wait_until(Duration::from_secs(60), || {
        observe::routes(&cluster.state.nodes[0])
            .is_some_and(|rs| rs.iter().filter(|r| r.service.ends_with(".bench")).count() == 2)
    });
    if !routed {
        return Err("n0 did not learn the bench services within 60 s".into());
    }
    let one = (
        connect(&cluster, 2, "sink.bench")?,
        connect(&cluster, 2, "echo.bench")?,
    );
    let three = (
        connect(&cluster, 0, "sink.bench")?,
        connect(&cluster, 0, "echo.bench")?,
    );
    let paths = vec![
        measure("direct TCP", 0, sink, echo, o)?,
        measure("1 hop", 1, one.0, one.1, o)?,
        measure("3 hops", 3, three.0, three.1, o)?,
    ];
    let daemon_rss_kb = cluster
        .state
        .nodes
        .iter()
        .filter_map(|n| Some((n.id.clone(), observe::rss_kb(n.pid?)?)))
        .collect();
    let _ = cluster.stop_all(super::state::TERM_GRACE);
    Ok(Report {
        bytes: o.bytes,
        runs: o.runs,
        rounds: o.rounds,
        paths,
        daemon_rss_kb,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
    })
}

/// The report for people.
pub fn summary(r: &Report) -> String {
    let direct = r.paths.first();
    let mut out = format!(
        "data plane: one TCP connection, {} MiB per transfer (median of {}), {} round trips and {} new connections per path, {} CPUs\n",
        r.bytes >> 20,
        r.runs,
        r.rounds,
        r.rounds,
        r.cpus
    );
    out.push_str(&format!(
        "{:<11} {:>10} {:>10} {:>10} {:>12} {:>12} {:>16}\n",
        "path", "Gb/s", "rtt p50", "rtt p99", "setup p50", "setup p99", "setup added/hop"
    ));
    for p in &r.paths {
        let per_hop = match (direct, p.hops) {
            (Some(d), h) if h > 0 => {
                format!("{:.0} µs", (p.setup_p50_us - d.setup_p50_us) / f64::from(h))
            }
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<11} {:>10.2} {:>7.0} µs {:>7.0} µs {:>9.0} µs {:>9.0} µs {:>16}\n",
            p.path,
            p.throughput_gbps,
            p.rtt_p50_us,
            p.rtt_p99_us,
            p.setup_p50_us,
            p.setup_p99_us,
            per_hop
        ));
    }
    let rss: Vec<String> = r
        .daemon_rss_kb
        .iter()
        .map(|(id, kb)| format!("{id} {} MiB", kb / 1024))
        .collect();
    out.push_str(&format!(
        "daemon memory after the run: {}\n",
        rss.join(", ")
    ));
    out
}
