//! A whole Trellis network on one machine: one authority per org, every node joined and
//! approved, configs and peering configs written, daemons started as real processes, and
//! every peering link passing through the link emulator.
//!
//! Layout of the network dir:
//! ```text
//! DIR/state.json            what runs where (pids, ports, links): `status` and `down` read it
//! DIR/control.sock          the link emulator's control socket (`link set|cut|heal|flap`)
//! DIR/auth-ORG/             an authority's data dir
//! DIR/nodes/ORG-NAME/       a node's data dir (trellis.toml, peerings/, admin.sock)
//! DIR/logs/*.log            stdout and stderr of every process
//! ```
//! A node reaches each peer at a relay port of the emulator; the relay forwards to the
//! peer's real port (docs/testbed.md, "Link emulator").

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_daemon::admin::{client, Request, TokenCreated};
use trellis_routing::Relationship;

use super::emulator::{self, Hub, Impairment, Link, Relay};
use super::state::write_file;
pub use super::state::{free_ports, AuthorityState, LinkState, NodeState, State};
use crate::topology::mirror;
use crate::topology_file::TopologyFile;

/// The timers a testbed writes into its nodes (`--timers`). Every report names the set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timers {
    /// Nothing: every node runs with the daemon's defaults (hold 9 s, failure detection
    /// 1 s, graceful restart 120 s, redial 200 ms to 10 s, trust refresh 60 s), so
    /// figures are what a default node does.
    #[default]
    Default,
    /// Shortened for quick runs: hold 3 s, graceful restart 5 s, redial 100 ms to 2 s,
    /// trust refresh 2 s (failure detection stays 1 s).
    Fast,
}

/// How a network is built, beyond its topology: `--timers` and `--base-port`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetOptions {
    /// The timer set written into the nodes.
    pub timers: Timers,
    /// The first of the network's ports (`None`: free ports in
    /// [`super::state::TESTBED_PORTS`]).
    pub base_port: Option<u16>,
    /// Peers dial each other directly, not through the link emulator (benchmarks: the
    /// emulator is a userspace relay that would cost CPU on every hop).
    pub direct: bool,
    /// With N > 0, every node runs peer selection (`[selection]`) with the first N nodes
    /// of its org as bootstrap entries, and dials directly (the `peer-selection`
    /// scenario); topology links still become configured (pinned) peers.
    pub bootstrap: usize,
}

impl std::str::FromStr for Timers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Self::Default),
            "fast" => Ok(Self::Fast),
            other => Err(format!("--timers {other:?}: default or fast")),
        }
    }
}

impl std::fmt::Display for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Fast => "fast",
        })
    }
}

impl Timers {
    /// The `[timers]` section written into each node config.
    fn section(self) -> &'static str {
        match self {
            Self::Default => "",
            Self::Fast => "[timers]\nhold_time = \"3s\"\ngraceful_restart = \"5s\"\nconnect_retry_min = \"100ms\"\nconnect_retry_max = \"2s\"\ntrust_refresh = \"2s\"\n",
        }
    }
}

/// The data plane's allow rules of a testbed node: its own org may reach everything, and
/// every org of the network may reach the services of the node's org (an open federation;
/// docs/testbed.md).
fn allow_rules(org: &str, orgs: &[String]) -> String {
    let mut text = format!("[[dataplane.allow]]\nservices = [\"*\"]\nfrom = [\"{org}\"]\n");
    let others: Vec<String> = orgs
        .iter()
        .filter(|o| o.as_str() != org)
        .map(|o| format!("\"{o}\""))
        .collect();
    if !others.is_empty() {
        text.push_str(&format!(
            "[[dataplane.allow]]\nservices = [\"*.{org}\"]\nfrom = [{}]\n",
            others.join(", ")
        ));
    }
    text
}

/// The running network.
pub struct Cluster {
    /// What runs where.
    pub state: State,
    /// Timers in the node configs.
    pub timers: Timers,
    /// Peers dial each other's own port (no emulator).
    direct: bool,
    /// Bootstrap entries per node, 0: no peer selection.
    bootstrap: usize,
    exe: PathBuf,
    children: HashMap<String, Child>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Link states, shared with the emulator.
    pub hub: Arc<Mutex<Hub>>,
    relays: Vec<Relay>,
    detached: bool,
    /// Where daemons export OTLP (`OTEL_EXPORTER_OTLP_ENDPOINT`), if anywhere.
    otlp: Option<String>,
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio, String> {
    let path = dir
        .join("logs")
        .join(format!("{}.log", name.replace('/', "-")));
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(Stdio::from)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What [`Cluster::stop_all`] saw.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Daemons that ignored SIGTERM and were SIGKILLed.
    pub killed: Vec<String>,
    /// How long the slowest daemon that did exit took after SIGTERM.
    pub slowest: Duration,
}

/// Waits until `check` passes, up to `limit`.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

impl Cluster {
    /// Creates authorities, joins every node and writes every config; starts nothing but
    /// the authorities. `detached`: processes get their own process group and outlive
    /// this one (`up`); otherwise they stop with it.
    pub fn create(
        dir: &Path,
        topo: &TopologyFile,
        net: NetOptions,
        seed: u64,
        detached: bool,
    ) -> Result<Self, String> {
        let (timers, base_port) = (net.timers, net.base_port);
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the testbed binary: {e}"))?;
        fs::create_dir_all(dir.join("logs")).map_err(|e| format!("{}: {e}", dir.display()))?;
        fs::create_dir_all(dir.join("nodes")).map_err(|e| format!("{}: {e}", dir.display()))?;
        if dir.join("state.json").exists() {
            return Err(format!(
                "{} already holds a testbed (state.json); run `down` or pick another --dir",
                dir.display()
            ));
        }
        let mut cluster = Self {
            state: State {
                dir: dir.to_owned(),
                authorities: Vec::new(),
                nodes: Vec::new(),
                links: Vec::new(),
                emulator_pid: None,
            },
            timers,
            direct: net.direct || net.bootstrap > 0,
            bootstrap: net.bootstrap,
            exe,
            children: HashMap::new(),
            runtime: None,
            hub: Arc::new(Mutex::new(Hub::new())),
            relays: Vec::new(),
            detached,
            otlp: None,
        };
        let t = &topo.topology;
        let mut orgs: Vec<String> = t.nodes.iter().map(|n| n.org_str().to_owned()).collect();
        orgs.sort();
        orgs.dedup();
        // Every port of this testbed at once: authorities, then nodes, then two relays
        // per link (`status` lists whose each one is).
        let mut ports =
            free_ports(orgs.len() + t.nodes.len() + 2 * t.links.len(), base_port)?.into_iter();
        let mut next_port = || ports.next().ok_or_else(|| "ran out of ports".to_owned());
        for org in &orgs {
            cluster.start_authority(org, next_port()?)?;
        }
        // Tokens and joins, all nodes of an org in parallel.
        let mut joins = Vec::new();
        for org in &orgs {
            let count = t.nodes.iter().filter(|n| n.org_str() == org).count();
            let auth = cluster.authority(org)?;
            let created: TokenCreated = client::call_as(
                &auth.dir.join("admin.sock"),
                &Request::TokensCreate {
                    ttl_secs: 3600,
                    uses: u32::try_from(count).unwrap_or(u32::MAX),
                    auto_approve: true,
                    roles: vec![],
                },
            )
            .map_err(|e| format!("token for {org}: {e}"))?;
            for node in t.nodes.iter().filter(|n| n.org_str() == org) {
                let name = node
                    .as_str()
                    .split('/')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let ndir = dir.join("nodes").join(node.as_str().replace('/', "-"));
                let child = cluster
                    .trellisd()
                    .args(["node", "join", "--name", &name, "--data-dir"])
                    .arg(&ndir)
                    .arg(&created.join_string)
                    .env("TRELLIS_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(log_file(dir, &format!("join-{}", node.as_str()))?)
                    .spawn()
                    .map_err(|e| format!("join {}: {e}", node.as_str()))?;
                joins.push((node.as_str().to_owned(), child));
            }
        }
        let mut failed = None;
        for (id, mut child) in joins {
            if failed.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            match child.wait() {
                Ok(status) if status.success() => {}
                Ok(_) => {
                    failed = Some(format!(
                        "{id} could not join (see {}/logs/join-{}.log)",
                        dir.display(),
                        id.replace('/', "-")
                    ))
                }
                Err(e) => failed = Some(format!("join {id}: {e}")),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for node in &t.nodes {
            cluster.state.nodes.push(NodeState {
                id: node.as_str().to_owned(),
                dir: dir.join("nodes").join(node.as_str().replace('/', "-")),
                port: next_port()?,
                pid: None,
            });
        }
        for (i, link) in t.links.iter().enumerate() {
            let impairment = topo.impairments.get(i).map(|imp| Impairment {
                delay_ms: imp.delay_ms,
                jitter_ms: imp.jitter_ms,
                loss: imp.loss,
                ..Impairment::default()
            });
            cluster.state.links.push(LinkState {
                a: link.a,
                b: link.b,
                relay_ab: next_port()?,
                relay_ba: next_port()?,
                impairment: impairment.unwrap_or_default(),
            });
        }
        cluster.write_configs(topo, seed)?;
        cluster.state.save()?;
        Ok(cluster)
    }

    fn authority(&self, org: &str) -> Result<&AuthorityState, String> {
        self.state
            .authorities
            .iter()
            .find(|a| a.org == org)
            .ok_or_else(|| format!("no authority for {org}"))
    }

    fn start_authority(&mut self, org: &str, port: u16) -> Result<(), String> {
        let dir = self.state.dir.join(format!("auth-{org}"));
        let init = self
            .trellisd()
            .args(["authority", "init", "--org", org, "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(log_file(&self.state.dir, &format!("auth-{org}"))?)
            .status()
            .map_err(|e| format!("authority init {org}: {e}"))?;
        if !init.success() {
            return Err(format!("authority init {org} failed"));
        }
        self.state.authorities.push(AuthorityState {
            org: org.to_owned(),
            dir,
            port,
            pid: None,
        });
        self.run_authority(org)
    }

    /// Starts the recorded authority of `org`, records its pid in `state.json` at once,
    /// then waits until it answers.
    fn run_authority(&mut self, org: &str) -> Result<(), String> {
        let state = self.authority(org)?.clone();
        let child = self
            .trellisd()
            .args(["authority", "run", "--listen"])
            .arg(format!("127.0.0.1:{}", state.port))
            .arg("--data-dir")
            .arg(&state.dir)
            .env("TRELLIS_LOG", "warn")
            .stdout(log_file(&self.state.dir, &format!("auth-{}", state.org))?)
            .stderr(log_file(&self.state.dir, &format!("auth-{}", state.org))?)
            .spawn()
            .map_err(|e| format!("authority run {}: {e}", state.org))?;
        let pid = child.id();
        self.children.insert(format!("auth:{}", state.org), child);
        if let Some(a) = self.state.authorities.iter_mut().find(|a| a.org == org) {
            a.pid = Some(pid);
        }
        self.state.save()?;
        let socket = state.dir.join("admin.sock");
        if !wait_until(Duration::from_secs(20), || {
            client::call(&socket, &Request::Status).is_ok()
        }) {
            return Err(format!("authority {} did not start (see logs)", state.org));
        }
        Ok(())
    }

    /// Stops (SIGKILL) the authority of `org`.
    pub fn kill_authority(&mut self, org: &str) {
        if let Some(mut child) = self.children.remove(&format!("auth:{org}")) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(a) = self.state.authorities.iter_mut().find(|a| a.org == org) {
            a.pid = None;
        }
    }

    /// Starts the authority of `org` again.
    pub fn restart_authority(&mut self, org: &str) -> Result<(), String> {
        self.run_authority(org)
    }

    fn write_configs(&self, topo: &TopologyFile, _seed: u64) -> Result<(), String> {
        let t = &topo.topology;
        let nodes = &self.state.nodes;
        for (i, node) in nodes.iter().enumerate() {
            let org = t.nodes[i].org_str();
            let mut text = format!(
                "listen = \"127.0.0.1:{}\"\npeering_dir = \"peerings\"\n{}",
                node.port,
                self.timers.section()
            );
            // Partner org → (role of partner, endpoints).
            let mut partners: BTreeMap<String, (Relationship, Vec<(u16, String)>)> =
                BTreeMap::new();
            for (li, link) in self.state.links.iter().enumerate() {
                let spec = &t.links[li];
                let (other, relay, role) = if link.a == i {
                    (link.b, link.relay_ab, spec.role)
                } else if link.b == i {
                    (link.a, link.relay_ba, mirror(spec.role))
                } else {
                    continue;
                };
                let relay = if self.direct {
                    nodes[other].port
                } else {
                    relay
                };
                let other_id = &nodes[other].id;
                let other_org = t.nodes[other].org_str();
                if other_org == org {
                    text.push_str(&format!(
                        "[[peer]]\naddress = \"127.0.0.1:{relay}\"\nnode_id = \"{other_id}\"\n"
                    ));
                } else {
                    let entry = partners
                        .entry(other_org.to_owned())
                        .or_insert((role, Vec::new()));
                    if entry.0 != role {
                        return Err(format!(
                            "{} has links to {other_org} with different roles",
                            node.id
                        ));
                    }
                    entry.1.push((relay, other_id.clone()));
                }
            }
            text.push_str(&allow_rules(org, &topo.orgs));
            text.push_str(&self.selection_section(org));
            let peerings = node.dir.join("peerings");
            fs::create_dir_all(&peerings).map_err(|e| format!("{}: {e}", peerings.display()))?;
            for (partner, (role, endpoints)) in partners {
                let ca = self.authority(&partner)?.dir.join("ca.crt");
                fs::copy(&ca, peerings.join(format!("{partner}-ca.pem")))
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
                let mut p = format!(
                    "org = \"{partner}\"\nca = \"{partner}-ca.pem\"\nrole = \"{}\"\n",
                    role.name()
                );
                for (relay, id) in endpoints {
                    p.push_str(&format!(
                        "[[endpoint]]\naddress = \"127.0.0.1:{relay}\"\nnode_id = \"{id}\"\n"
                    ));
                }
                write_file(&peerings.join(format!("{partner}.toml")), p.as_bytes())?;
            }
            write_file(&node.dir.join("trellis.toml"), text.as_bytes())?;
        }
        Ok(())
    }

    /// The `[selection]` section of a node of `org` (empty without `bootstrap`).
    fn selection_section(&self, org: &str) -> String {
        if self.bootstrap == 0 {
            return String::new();
        }
        let entries: Vec<String> = self
            .state
            .nodes
            .iter()
            .filter(|n| n.id.split_once('/').is_some_and(|(o, _)| o == org))
            .take(self.bootstrap)
            .map(|n| format!("\"{}@127.0.0.1:{}\"", n.id, n.port))
            .collect();
        format!(
            "[selection]\nround = \"1s\"\nbootstrap = [{}]\n",
            entries.join(", ")
        )
    }

    /// Runs the link emulator in this process (scenarios and the demo).
    pub fn start_emulator(&mut self, seed: u64) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("emulator runtime: {e}"))?;
        let (hub, relays) = runtime.block_on(serve_links(&self.state, seed))?;
        self.hub = hub;
        self.relays = relays;
        let control = self.state.dir.join("control.sock");
        let hub = self.hub.clone();
        runtime
            .block_on(emulator::control::serve(&control, hub))
            .map_err(|e| format!("control socket: {e}"))?;
        self.runtime = Some(runtime);
        Ok(())
    }

    /// Starts node `i` and waits until its admin socket answers.
    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        let node = self.state.nodes.get(i).cloned().ok_or("no such node")?;
        let child = self
            .trellisd()
            .args(["node", "run", "--data-dir"])
            .arg(&node.dir)
            .arg("--config")
            .arg(node.dir.join("trellis.toml"))
            .env("TRELLIS_LOG", "info")
            .stdout(log_file(&self.state.dir, &node.id)?)
            .stderr(log_file(&self.state.dir, &node.id)?)
            .spawn()
            .map_err(|e| format!("start {}: {e}", node.id))?;
        self.state.nodes[i].pid = Some(child.id());
        self.children.insert(node.id.clone(), child);
        self.state.save()?;
        let socket = node.dir.join("admin.sock");
        if !wait_until(Duration::from_secs(20), || {
            client::call(&socket, &Request::Status).is_ok()
        }) {
            return Err(format!(
                "{} did not start (see {}/logs)",
                node.id,
                self.state.dir.display()
            ));
        }
        Ok(())
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> Result<(), String> {
        for i in 0..self.state.nodes.len() {
            self.start_node(i)?;
        }
        self.state.save()
    }

    /// Kills node `i` at once (`kill -9`).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(node) = self.state.nodes.get_mut(i) {
            if let Some(mut child) = self.children.remove(&node.id) {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.pid = None;
        }
    }

    /// Stops every daemon this cluster started as an operator would (SIGTERM), waits up
    /// to `limit` for them to exit, and SIGKILLs the rest. Returns the names of those
    /// that needed SIGKILL: a daemon that ignores SIGTERM is a failure, not a detail.
    pub fn stop_all(&mut self, limit: Duration) -> Stopped {
        let children: Vec<(String, Child)> = self.children.drain().collect();
        for (_, child) in &children {
            super::state::signal("-TERM", child.id());
        }
        let signalled = Instant::now();
        // One waiter thread per daemon reports its exit: the exits are the events.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut pending: HashMap<String, u32> = HashMap::new();
        for (name, mut child) in children {
            pending.insert(name.clone(), child.id());
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = child.wait();
                let _ = tx.send(name);
            });
        }
        drop(tx);
        let mut stopped = Stopped::default();
        while !pending.is_empty() {
            let left = limit.saturating_sub(signalled.elapsed());
            match rx.recv_timeout(left) {
                Ok(name) => {
                    pending.remove(&name);
                    stopped.slowest = signalled.elapsed();
                }
                Err(_) => break,
            }
        }
        for (name, pid) in pending {
            // The waiter thread reaps it once it is gone.
            super::state::signal("-KILL", pid);
            stopped.killed.push(name);
        }
        for n in &mut self.state.nodes {
            n.pid = None;
        }
        for a in &mut self.state.authorities {
            a.pid = None;
        }
        stopped.killed.sort();
        stopped
    }

    /// Whether node `i` runs.
    pub fn alive(&self, i: usize) -> bool {
        self.state.nodes.get(i).is_some_and(|n| n.pid.is_some())
    }

    /// Starts flapping the link `a`–`b` with `period` on the emulator's runtime (as the
    /// control socket does for `link flap`), or stops it with `None`. `Err` if the link
    /// does not exist or the flap could not be started.
    pub fn flap(&self, a: &str, b: &str, period: Option<Duration>) -> Result<(), String> {
        let link = self
            .link(a, b)
            .ok_or_else(|| format!("no link between {a} and {b}"))?;
        let runtime = self
            .runtime
            .as_ref()
            .ok_or("the link emulator does not run in this process")?;
        let _entered = runtime.enter();
        emulator::flap(&link, period)
    }

    /// The link between nodes `a` and `b` (by id).
    pub fn link(&self, a: &str, b: &str) -> Option<Arc<Link>> {
        self.hub.lock().ok()?.get(a, b)
    }

    /// Daemons started from now on export traces, metrics and logs to `endpoint` (an
    /// OTLP/gRPC receiver), metrics every `interval_ms`.
    pub fn export_to(&mut self, endpoint: &str, interval_ms: u64) {
        self.otlp = Some(format!("{endpoint} {interval_ms}"));
    }

    /// A command running the daemon sub-command of this binary.
    fn trellisd(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("trellisd");
        if let Some((endpoint, interval)) = self.otlp.as_deref().and_then(|o| o.split_once(' ')) {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_METRIC_EXPORT_INTERVAL", interval);
        }
        if self.detached {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        for (_, mut child) in self.children.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.relays.clear();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts two relays per link (one per dialing direction) sharing one [`Link`].
pub async fn serve_links(
    state: &State,
    seed: u64,
) -> Result<(Arc<Mutex<Hub>>, Vec<Relay>), String> {
    let mut hub = Hub::new();
    let mut relays = Vec::new();
    for (i, l) in state.links.iter().enumerate() {
        let (a, b) = (&state.nodes[l.a], &state.nodes[l.b]);
        let link = Link::new(format!("{}<->{}", a.id, b.id), seed.wrapping_add(i as u64));
        link.set(l.impairment.clone());
        let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        relays.push(
            emulator::relay(addr(l.relay_ab), addr(b.port), link.clone())
                .await
                .map_err(|e| format!("relay {}→{}: {e}", a.id, b.id))?,
        );
        relays.push(
            emulator::relay(addr(l.relay_ba), addr(a.port), link.clone())
                .await
                .map_err(|e| format!("relay {}→{}: {e}", b.id, a.id))?,
        );
        hub.add(&a.id, &b.id, link);
    }
    Ok((Arc::new(Mutex::new(hub)), relays))
}
