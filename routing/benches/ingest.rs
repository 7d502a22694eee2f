//! Ingest benchmark of the routing core: how fast a [`Router`] takes in (and
//! lets go of) a full table, and how much memory the table costs.
//!
//! Run with `cargo bench -p trellis-routing` (1,000 origins x 1,000 services =
//! 1,000,000 routes) or `cargo bench -p trellis-routing --bench ingest -- --quick`
//! (100 x 100; `--bench ingest` keeps the flag away from the unit-test
//! harness, which refuses it). `--origins N` and `--services M` set the scale.
//! Results and how to read them: docs/performance.md.
//!
//! What is timed is RIB work only: every manifest, attribute set, service name
//! and batch is built before the clock starts (names are parsed separately for
//! manifests and batches, as a decoder would). Inside the timed loop are the
//! router's own work, dropping each consumed batch, and draining the outputs
//! (counted, then dropped) as the daemon would consume them.
//!
//! Memory: the workspace forbids `unsafe_code` (`--forbid` on the command
//! line, which a bench cannot relax), so a counting `#[global_allocator]` is
//! not possible here. The bench reads `RssAnon` from `/proc/self/status`
//! instead, in a separate streaming pass that builds each batch just before
//! feeding it, so the only memory that grows is what the router keeps (table,
//! manifests, per-peer state) plus the allocator's own overhead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_routing::{
    Attrs, Input, Message, NodeId, OrgId, OriginManifest, Output, PathHop, PeerConfig,
    ProtocolHint, Relationship, Router, RouterConfig, ServiceName, Signatures, SignedManifest,
    UpdateBatch, VerifyError,
};

/// How big a table to build.
#[derive(Clone, Copy)]
struct Scale {
    origins: usize,
    services: usize,
}

impl Scale {
    fn routes(self) -> usize {
        self.origins * self.services
    }
}

/// A stand-in for the daemon's signatures: a 64-bit FNV-1a hash of
/// `origin|version|sorted names`, recomputed by `verify`.
///
/// The daemon signs manifests with P-384 (ECDSA verification is a few hundred
/// microseconds), but the core verifies once per manifest, never per route:
/// here that is 1,000 verifications for 1,000,000 routes, which the bench
/// times separately as the manifest phase. The stand-in still does the real
/// per-manifest work around the signature (sorting and hashing every name),
/// so it does not change the per-route cost that this bench measures.
struct FnvSigs;

fn fnv_signature(m: &OriginManifest) -> Vec<u8> {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut names: Vec<&str> = m.services.iter().map(ServiceName::as_str).collect();
    names.sort_unstable();
    let version = m.version.to_string();
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(m.origin.as_str().as_bytes());
    eat(b"|");
    eat(version.as_bytes());
    eat(b"|");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            eat(b",");
        }
        eat(name.as_bytes());
    }
    h.to_le_bytes().to_vec()
}

impl Signatures for FnvSigs {
    fn sign(&self, m: &OriginManifest) -> Vec<u8> {
        fnv_signature(m)
    }

    fn verify(&self, m: &OriginManifest, signature: &[u8]) -> Result<(), VerifyError> {
        if signature == fnv_signature(m).as_slice() {
            Ok(())
        } else {
            Err(VerifyError {
                signer: m.origin.clone(),
                reason: "fnv signature mismatch".into(),
            })
        }
    }
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}

fn origin(i: usize) -> NodeId {
    node(&format!("o{i}/n"))
}

/// Service `j` of origin `i`: `s0042-api.o17.svc`, 15-18 bytes at full scale.
fn service_text(i: usize, j: usize) -> String {
    format!("s{j:04}-api.o{i}.svc")
}

/// Parses the names of origin `i`. Each call allocates fresh names, as a
/// decoder would for every message read off the wire.
fn names(i: usize, scale: Scale) -> Vec<ServiceName> {
    (0..scale.services)
        .map(|j| ServiceName::new(&service_text(i, j)).expect("valid service name"))
        .collect()
}

fn signed_manifest(i: usize, scale: Scale) -> SignedManifest {
    let manifest = OriginManifest {
        origin: origin(i),
        version: 1,
        services: names(i, scale).into_iter().collect(),
    };
    let signature = fnv_signature(&manifest).into();
    SignedManifest {
        manifest: Arc::new(manifest),
        signature,
    }
}

/// The one attribute set origin `i`'s routes share when relayed by `peer`.
fn attrs(i: usize, peer: &NodeId) -> Arc<Attrs> {
    let mut a = Attrs::originated(origin(i), 1, ProtocolHint::Tcp);
    a.path = vec![
        PathHop::Node(peer.clone()),
        PathHop::Org(OrgId::new(&format!("o{i}")).expect("valid org id")),
    ];
    a.metric = 10 + (i % 50) as u32;
    a.learned_from = Relationship::Customer;
    Arc::new(a)
}

fn announce_batch(i: usize, scale: Scale, peer: &NodeId) -> UpdateBatch {
    UpdateBatch {
        attrs: vec![attrs(i, peer)],
        announce: names(i, scale).into_iter().map(|s| (s, 0)).collect(),
        withdraw: Vec::new(),
    }
}

fn withdraw_batch(i: usize, scale: Scale) -> UpdateBatch {
    UpdateBatch {
        withdraw: names(i, scale),
        ..UpdateBatch::default()
    }
}

/// One batch per origin: `services` announcements (1,000 at full scale).
fn announce_batches(scale: Scale, peer: &NodeId) -> Vec<UpdateBatch> {
    (0..scale.origins)
        .map(|i| announce_batch(i, scale, peer))
        .collect()
}

fn withdraw_batches(scale: Scale) -> Vec<UpdateBatch> {
    (0..scale.origins)
        .map(|i| withdraw_batch(i, scale))
        .collect()
}

/// What the router asked for during one phase.
#[derive(Default, Debug, Clone, Copy)]
struct Drained {
    best_changed: u64,
    announced: u64,
    withdrawn: u64,
    manifests_sent: u64,
    end_of_table: u64,
}

impl Drained {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.best_changed, "best-changed"),
            (self.announced, "announced"),
            (self.withdrawn, "withdrawn"),
            (self.manifests_sent, "manifests sent"),
            (self.end_of_table, "end-of-table"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Counts and drops every pending output.
fn drain(r: &mut Router, d: &mut Drained) {
    while let Some(out) = r.poll_output() {
        match out {
            Output::BestChanged { .. } => d.best_changed += 1,
            Output::Send {
                message: Message::Update(b),
                ..
            } => {
                d.announced += b.announce.len() as u64;
                d.withdrawn += b.withdraw.len() as u64;
            }
            Output::Send {
                message: Message::Manifest(_),
                ..
            } => d.manifests_sent += 1,
            Output::Disconnect { peer, reason } => panic!("unexpected disconnect {peer}: {reason}"),
            Output::ManifestRejected { from, error } => {
                panic!("manifest rejected (from {from:?}): {error}")
            }
            Output::Send {
                message: Message::EndOfTable,
                ..
            } => d.end_of_table += 1,
        }
    }
}

/// Virtual time: each input happens 1 ms after the previous one.
struct Clock(Instant);

impl Clock {
    fn tick(&mut self) -> Instant {
        self.0 += Duration::from_millis(1);
        self.0
    }
}

struct Bench {
    router: Router,
    clock: Clock,
}

impl Bench {
    fn new() -> Self {
        let mut cfg = RouterConfig::new(node("bench/local"));
        cfg.mrai = Duration::ZERO;
        let now = Instant::now();
        Self {
            router: Router::new(cfg, Box::new(FnvSigs), now),
            clock: Clock(now),
        }
    }

    /// Adds an internal peer and brings its session up; returns the time the
    /// session-up took (it dumps the whole table to the new peer).
    fn peer_up(&mut self, id: &NodeId) -> (Duration, Drained) {
        self.router
            .add_peer(PeerConfig::new(id.clone(), Relationship::Internal))
            .expect("peer accepted");
        self.timed(vec![Input::SessionUp { peer: id.clone() }])
    }

    /// Feeds inputs one by one, draining outputs after each, under the clock.
    fn timed(&mut self, inputs: Vec<Input>) -> (Duration, Drained) {
        let mut d = Drained::default();
        let start = Instant::now();
        for input in inputs {
            let now = self.clock.tick();
            self.router.handle(now, input);
            drain(&mut self.router, &mut d);
        }
        (start.elapsed(), d)
    }

    fn updates(peer: &NodeId, batches: Vec<UpdateBatch>) -> Vec<Input> {
        batches
            .into_iter()
            .map(|batch| Input::Update {
                peer: peer.clone(),
                batch,
            })
            .collect()
    }

    fn manifests(from: &NodeId, scale: Scale) -> Vec<Input> {
        (0..scale.origins)
            .map(|i| Input::Manifest {
                from: Some(from.clone()),
                manifest: signed_manifest(i, scale),
            })
            .collect()
    }
}

/// `RssAnon` of this process in bytes (Linux only).
fn rss_anon() -> Option<u64> {
    proc_status_kib("RssAnon:").map(|k| k * 1024)
}

/// Peak resident set (`VmHWM`) in bytes.
fn vm_hwm() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One line of the report.
fn row(what: &str, routes: usize, t: Duration, d: &Drained) {
    let secs = t.as_secs_f64();
    let rate = if secs > 0.0 {
        format!("{:>8.3} M/s", routes as f64 / secs / 1e6)
    } else {
        "-".to_string()
    };
    println!(
        "  {what:<38} {routes:>9} {:>9.1} ms {rate:>12}   outputs: {}",
        secs * 1e3,
        d.describe()
    );
}

fn check(cond: bool, what: &str) {
    assert!(cond, "bench sanity check failed: {what}");
}

/// Feeds origin `i`'s routes from `peer`, one batch built at a time.
fn stream_routes(b: &mut Bench, scale: Scale, peer: &NodeId, d: &mut Drained) {
    for i in 0..scale.origins {
        let batch = announce_batch(i, scale, peer);
        let now = b.clock.tick();
        b.router.handle(
            now,
            Input::Update {
                peer: peer.clone(),
                batch,
            },
        );
        drain(&mut b.router, d);
    }
    check(
        b.router.peer_routes(peer) == scale.routes(),
        "memory pass: every route held",
    );
}

/// RssAnon at each stage of the memory pass.
struct Rss {
    base: u64,
    manifests: u64,
    one_path: u64,
    two_paths: u64,
    /// After both sessions went down (table empty, manifests kept).
    emptied: u64,
}

/// Memory pass: streams manifests and batches (each built just before it is
/// fed, so nothing but the router's state accumulates) into a fresh router
/// and reads RssAnon between stages. Both peers are up from the start so the
/// second path is measured the same way; all peer 2 adds to the earlier
/// stages is its small per-peer export state.
fn memory_pass(scale: Scale, p1: &NodeId, p2: &NodeId) -> Option<Rss> {
    let mut b = Bench::new();
    b.peer_up(p1);
    b.peer_up(p2);
    let mut d = Drained::default();
    let base = rss_anon()?;
    for i in 0..scale.origins {
        let manifest = signed_manifest(i, scale);
        let now = b.clock.tick();
        b.router.handle(
            now,
            Input::Manifest {
                from: Some(p1.clone()),
                manifest,
            },
        );
        drain(&mut b.router, &mut d);
    }
    let manifests = rss_anon()?;
    stream_routes(&mut b, scale, p1, &mut d);
    let one_path = rss_anon()?;
    stream_routes(&mut b, scale, p2, &mut d);
    let two_paths = rss_anon()?;
    check(
        b.router.services_known() == scale.routes(),
        "memory pass: every service known",
    );
    for peer in [p1, p2] {
        let now = b.clock.tick();
        b.router.handle(
            now,
            Input::SessionDown {
                peer: peer.clone(),
                graceful: false,
            },
        );
        drain(&mut b.router, &mut d);
    }
    check(b.router.services_known() == 0, "memory pass: table empty");
    let emptied = rss_anon()?;
    Some(Rss {
        base,
        manifests,
        one_path,
        two_paths,
        emptied,
    })
}

fn parse_args() -> Scale {
    let mut scale = Scale {
        origins: 1_000,
        services: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--quick" => {
                scale = Scale {
                    origins: 100,
                    services: 100,
                }
            }
            "--origins" => scale.origins = number("--origins"),
            "--services" => scale.services = number("--services"),
            // `cargo bench` passes `--bench`; filters and other flags are ignored.
            _ => {}
        }
    }
    scale
}

fn main() {
    let scale = parse_args();
    let n = scale.routes();
    let p1 = node("bench/peer");
    let p2 = node("bench/peer2");
    let p3 = node("bench/peer3");
    let name_bytes: usize = (0..scale.origins)
        .map(|i| {
            (0..scale.services)
                .map(|j| service_text(i, j).len())
                .sum::<usize>()
        })
        .sum();
    println!(
        "trellis-routing ingest: {} origins x {} services = {n} routes \
         (service names {:.1} bytes on average), batches of {} announcements \
         sharing one attribute set",
        scale.origins,
        scale.services,
        name_bytes as f64 / n as f64,
        scale.services,
    );

    // Memory first, while the heap is fresh.
    let mem = memory_pass(scale, &p1, &p2);

    println!();
    println!(
        "  {:<38} {:>9} {:>12} {:>12}",
        "phase", "routes", "time", "rate"
    );

    // A: one internal peer: ingest, then withdraw everything.
    let mut a = Bench::new();
    a.peer_up(&p1);
    let manifests = Bench::manifests(&p1, scale);
    let (t, d) = a.timed(manifests);
    row(
        &format!("manifests ({}, verify+install)", scale.origins),
        n,
        t,
        &d,
    );
    let inputs = Bench::updates(&p1, announce_batches(scale, &p1));
    let (t_ingest, d) = a.timed(inputs);
    check(a.router.peer_routes(&p1) == n, "A: every route held");
    check(
        a.router.stats().routes_origin_unverified == 0,
        "A: every route covered by its manifest",
    );
    row("ingest, 1 peer (1 path/service)", n, t_ingest, &d);
    let inputs = Bench::updates(&p1, withdraw_batches(scale));
    let (t_withdraw, d) = a.timed(inputs);
    check(a.router.services_known() == 0, "A: table empty");
    row("withdraw all, 1 peer", n, t_withdraw, &d);
    drop(a);

    // B: a second internal peer sends the same table (2 paths per service),
    // then the first peer's session drops.
    let mut b = Bench::new();
    b.peer_up(&p1);
    b.timed(Bench::manifests(&p1, scale));
    let inputs = Bench::updates(&p1, announce_batches(scale, &p1));
    let (t, d) = b.timed(inputs);
    row("ingest, 1 peer (again, fresh router)", n, t, &d);
    let (t, d) = b.peer_up(&p2);
    row("session-up peer 2 (full-table dump)", n, t, &d);
    let inputs = Bench::updates(&p2, announce_batches(scale, &p2));
    let (t_two, d) = b.timed(inputs);
    check(b.router.peer_routes(&p2) == n, "B: every route held twice");
    row("ingest, 2nd peer (2 paths/service)", n, t_two, &d);
    // A third peer sends one origin's routes; its session-down shows what
    // dropping a small peer costs in a large table.
    b.peer_up(&p3);
    let (t, d) = b.timed(Bench::updates(&p3, vec![announce_batch(0, scale, &p3)]));
    row(
        &format!("ingest, peer 3 ({} paths)", scale.services),
        scale.services,
        t,
        &d,
    );
    let (t_small, d) = b.timed(vec![Input::SessionDown {
        peer: p3.clone(),
        graceful: false,
    }]);
    check(b.router.peer_routes(&p3) == 0, "B: peer 3 paths gone");
    row(
        &format!("session-down peer 3 ({} paths)", scale.services),
        scale.services,
        t_small,
        &d,
    );
    let (t_down, d) = b.timed(vec![Input::SessionDown {
        peer: p1.clone(),
        graceful: false,
    }]);
    check(b.router.peer_routes(&p1) == 0, "B: peer 1 paths gone");
    check(b.router.services_known() == n, "B: peer 2 paths remain");
    row("session-down peer 1 (2 -> 1 path)", n, t_down, &d);
    let (t, d) = b.timed(vec![Input::SessionDown {
        peer: p2.clone(),
        graceful: false,
    }]);
    check(b.router.services_known() == 0, "B: table empty");
    row("session-down peer 2 (1 -> 0 paths)", n, t, &d);
    drop(b);

    println!();
    match mem {
        Some(Rss {
            base,
            manifests,
            one_path: one,
            two_paths: two,
            emptied,
        }) => {
            let per = |from: u64, to: u64| to.saturating_sub(from) as f64 / n as f64;
            println!("  memory (RssAnon growth, streaming pass; includes allocator overhead):");
            println!(
                "    manifests ({} names, hash sets):   {:>8.1} MiB  {:>6.1} bytes/route",
                n,
                mib(manifests.saturating_sub(base)),
                per(base, manifests)
            );
            println!(
                "    table, 1 path per service:         {:>8.1} MiB  {:>6.1} bytes/route",
                mib(one.saturating_sub(manifests)),
                per(manifests, one)
            );
            println!(
                "    total (manifests + table):         {:>8.1} MiB  {:>6.1} bytes/route",
                mib(one.saturating_sub(base)),
                per(base, one)
            );
            println!(
                "    second path per service:           {:>8.1} MiB  {:>6.1} bytes/route",
                mib(two.saturating_sub(one)),
                per(one, two)
            );
            println!(
                "    still held once the table is empty: {:>8.1} MiB above manifests",
                mib(emptied.saturating_sub(manifests)),
            );
        }
        None => println!("  memory: /proc/self/status not readable, not measured"),
    }
    if let Some(peak) = vm_hwm() {
        println!("  peak RSS of the whole run (VmHWM): {:.1} MiB", mib(peak));
    }
    println!();
    println!(
        "  summary: ingest {:.3} M routes/s, withdraw {:.3} M routes/s, \
         2-path ingest {:.3} M routes/s, session-down ({n} paths) {:.1} ms, \
         session-down ({} paths) {:.1} ms",
        n as f64 / t_ingest.as_secs_f64() / 1e6,
        n as f64 / t_withdraw.as_secs_f64() / 1e6,
        n as f64 / t_two.as_secs_f64() / 1e6,
        t_down.as_secs_f64() * 1e3,
        scale.services,
        t_small.as_secs_f64() * 1e3,
    );
}
