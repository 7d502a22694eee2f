//! Metric names, units and attributes (OpenTelemetry conventions: dotted lower-case names
//! under `trellis.`, UCUM units, no `_total` suffix; `direction`, `result`, `reason`,
//! `state` and `peer` as attributes).
//!
//! One source of truth: the counters `trellis status` shows are not counted twice. At
//! each export the metric reader calls back into [`Catalogue`] instruments, which read
//! the daemon's status once (cached for the collection) and map each status counter to
//! its metric in [`COUNTERS`]. A counter without an entry is still exported, as
//! `trellis.node.counter{name=...}`. Durations that status cannot show (a batch's
//! processing time, convergence, store commits) are histograms recorded as they happen,
//! through [`Recorders`]; without an endpoint they record into a no-op meter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::KeyValue;

use crate::admin::{AuthorityStatus, NodeStatus, PeerInfo};

/// A status counter's metric: (counter, metric, attributes).
type CounterEntry = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Status counters and the metric each one is exported as.
#[rustfmt::skip]
pub const COUNTERS: &[CounterEntry] = &[
    ("sessions_established", "trellis.sessions.established", &[]),
    ("sessions_closed_by_policy", "trellis.sessions.closed", &[("reason", "policy")]),
    ("sessions_send_queue_full", "trellis.sessions.closed", &[("reason", "send_queue_full")]),
    ("sessions_refused_by_policy", "trellis.sessions.refused", &[("reason", "policy")]),
    ("handshakes_refused", "trellis.sessions.refused", &[("reason", "handshake")]),
    ("updates_received", "trellis.update.batches", &[("direction", "in")]),
    ("router_batches_sent", "trellis.update.batches", &[("direction", "out")]),
    ("router_announcements_received", "trellis.update.routes", &[("direction", "in")]),
    ("router_announcements_sent", "trellis.update.routes", &[("direction", "out")]),
    ("router_withdrawals_received", "trellis.update.withdrawals", &[("direction", "in")]),
    ("router_withdrawals_sent", "trellis.update.withdrawals", &[("direction", "out")]),
    ("router_updates_received", "trellis.update.batches.accepted", &[]),
    ("router_manifests_accepted", "trellis.manifests", &[("result", "accepted")]),
    ("router_manifests_rejected", "trellis.manifests", &[("result", "rejected")]),
    ("manifests_unverified_foreign_org", "trellis.manifests", &[("result", "unverified_foreign_org")]),
    ("bad_input_from_peers", "trellis.bad_input", &[("reason", "protocol")]),
    ("router_batches_malformed", "trellis.bad_input", &[("reason", "malformed_batch")]),
    ("router_max_routes_exceeded", "trellis.bad_input", &[("reason", "max_routes")]),
    ("router_routes_rejected_malformed", "trellis.routes.rejected", &[("reason", "malformed")]),
    ("router_routes_rejected_loop", "trellis.routes.rejected", &[("reason", "loop")]),
    ("router_routes_rejected_policy", "trellis.routes.rejected", &[("reason", "policy")]),
    ("router_routes_rejected_name_owner", "trellis.routes.rejected", &[("reason", "name_owner")]),
    ("router_routes_origin_unverified", "trellis.routes.origin_unverified", &[]),
    ("router_stale_paths_purged", "trellis.routes.stale_purged", &[]),
    ("originations_refused", "trellis.routes.originations_refused", &[]),
    ("link_cost_changes", "trellis.peer.cost_changes", &[]),
    ("peers_held_off", "trellis.peer.held_off", &[]),
    ("trust_snapshots_applied", "trellis.trust.snapshots", &[("result", "applied")]),
    ("trust_snapshots_rejected", "trellis.trust.snapshots", &[("result", "rejected")]),
    ("remote_admin_refused", "trellis.admin.remote_refused", &[]),
    ("store_commit_failures", "trellis.store.commit.failures", &[]),
    ("dataplane_streams_opened", "trellis.dataplane.streams", &[("event", "opened")]),
    ("dataplane_streams_refused", "trellis.dataplane.streams", &[("event", "refused")]),
    ("dataplane_streams_reset", "trellis.dataplane.streams", &[("event", "reset")]),
    ("dataplane_bytes_forwarded", "trellis.dataplane.bytes", &[]),
    ("authority_join_requests", "trellis.authority.join.requests", &[]),
    ("authority_joins_approved", "trellis.authority.joins", &[("result", "approved")]),
    ("authority_joins_denied", "trellis.authority.joins", &[("result", "denied")]),
    ("authority_joins_refused", "trellis.authority.joins", &[("result", "refused")]),
    ("authority_revocations", "trellis.authority.revocations", &[]),
    ("authority_renewals", "trellis.authority.renewals", &[]),
    ("telemetry_export_failures", "trellis.telemetry.export.failures", &[]),
];

/// Counters exported as gauges (they go down too).
const GAUGE_COUNTERS: &[(&str, &str)] = &[(
    "dataplane_streams_active",
    "trellis.dataplane.streams.active",
)];

/// A prefix of status counters whose rest is the `reason` attribute.
const REASON_PREFIXES: &[(&str, &str)] = &[("dataplane_refused_", "trellis.dataplane.refused")];

/// The catch-all for a counter without an entry.
const OTHER: &str = "trellis.node.counter";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Every observed instrument: name, unit, description, kind.
#[rustfmt::skip]
const CATALOGUE: &[(&str, &str, &str, Kind)] = &[
    ("trellis.sessions.established", "{session}", "Sessions that came up", Kind::Counter),
    ("trellis.sessions.closed", "{session}", "Sessions closed by this node, by reason", Kind::Counter),
    ("trellis.sessions.refused", "{session}", "Sessions refused before they came up, by reason", Kind::Counter),
    ("trellis.update.batches", "{batch}", "Update batches received and sent", Kind::Counter),
    ("trellis.update.batches.accepted", "{batch}", "Received batches the router processed", Kind::Counter),
    ("trellis.update.routes", "{route}", "Route announcements received and sent", Kind::Counter),
    ("trellis.update.withdrawals", "{route}", "Route withdrawals received and sent", Kind::Counter),
    ("trellis.manifests", "{manifest}", "Origin manifests, by result", Kind::Counter),
    ("trellis.bad_input", "{event}", "Bad input from peers, by reason", Kind::Counter),
    ("trellis.routes.rejected", "{route}", "Routes refused on import, by reason", Kind::Counter),
    ("trellis.routes.origin_unverified", "{route}", "Routes imported without a manifest listing them", Kind::Counter),
    ("trellis.routes.stale_purged", "{route}", "Stale paths removed after a graceful restart", Kind::Counter),
    ("trellis.routes.originations_refused", "{route}", "Local advertisements refused", Kind::Counter),
    ("trellis.peer.cost_changes", "{change}", "Link cost changes from peer scoring", Kind::Counter),
    ("trellis.peer.held_off", "{event}", "Peers held off after exceeding a limit", Kind::Counter),
    ("trellis.trust.snapshots", "{snapshot}", "Trust snapshots, by result", Kind::Counter),
    ("trellis.admin.remote_refused", "{request}", "Remote admin requests refused", Kind::Counter),
    ("trellis.store.commit.failures", "{commit}", "Store transactions that failed", Kind::Counter),
    ("trellis.dataplane.streams", "{stream}", "Data-plane streams, by event", Kind::Counter),
    ("trellis.dataplane.bytes", "By", "Bytes forwarded by the data plane", Kind::Counter),
    ("trellis.dataplane.refused", "{stream}", "Data-plane streams refused, by reason", Kind::Counter),
    ("trellis.authority.join.requests", "{request}", "Join requests received", Kind::Counter),
    ("trellis.authority.joins", "{request}", "Join requests decided, by result", Kind::Counter),
    ("trellis.authority.revocations", "{node}", "Nodes revoked", Kind::Counter),
    ("trellis.authority.renewals", "{certificate}", "Certificates renewed", Kind::Counter),
    ("trellis.session.flaps", "{flap}", "Sessions with a peer after the first, per peer", Kind::Counter),
    ("trellis.telemetry.export.failures", "{export}", "OTLP exports that failed", Kind::Counter),
    (OTHER, "{event}", "A status counter without its own metric, by name", Kind::Counter),
    ("trellis.dataplane.streams.active", "{stream}", "Data-plane streams open now", Kind::Gauge),
    ("trellis.routes", "{route}", "Services with a usable best route", Kind::Gauge),
    ("trellis.routes.originated", "{route}", "Services originated by this node", Kind::Gauge),
    ("trellis.sessions", "{session}", "Peers by session state", Kind::Gauge),
    ("trellis.peer.routes", "{route}", "Paths held from each peer", Kind::Gauge),
    ("trellis.peer.rtt", "s", "Smoothed round-trip time to each peer", Kind::Gauge),
    ("trellis.peer.loss", "1", "Packet loss to each peer over the last 30 s (ratio)", Kind::Gauge),
    ("trellis.peer.trust", "1", "Trust in each peer (0-100)", Kind::Gauge),
    ("trellis.peer.link_cost", "1", "Link cost in use for each peer (its score)", Kind::Gauge),
    ("trellis.trust.snapshot.version", "1", "Version of the own org's trust snapshot", Kind::Gauge),
    ("trellis.uptime", "s", "Seconds since the daemon started", Kind::Gauge),
    ("trellis.authority.nodes", "{node}", "Nodes of the org, by state", Kind::Gauge),
    ("trellis.authority.joins.pending", "{request}", "Join requests waiting for an operator", Kind::Gauge),
];

/// One observed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Metric name (in [`CATALOGUE`]).
    pub name: &'static str,
    /// Attributes.
    pub attrs: Vec<KeyValue>,
    /// Value.
    pub value: f64,
}

fn point(name: &'static str, attrs: Vec<KeyValue>, value: f64) -> Point {
    Point { name, attrs, value }
}

/// The points of the status counters (shared by nodes and the authority).
pub fn counter_points(counters: &BTreeMap<String, u64>) -> Vec<Point> {
    let mut out = Vec::new();
    for (name, value) in counters {
        let v = *value as f64;
        if let Some((_, metric, attrs)) = COUNTERS.iter().find(|(c, _, _)| c == name) {
            let attrs = attrs.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
            out.push(point(metric, attrs, v));
        } else if let Some((_, metric)) = GAUGE_COUNTERS.iter().find(|(c, _)| c == name) {
            out.push(point(metric, vec![], v));
        } else if let Some((prefix, metric)) =
            REASON_PREFIXES.iter().find(|(p, _)| name.starts_with(p))
        {
            let reason = name[prefix.len()..].to_owned();
            out.push(point(metric, vec![KeyValue::new("reason", reason)], v));
        } else {
            out.push(point(OTHER, vec![KeyValue::new("name", name.clone())], v));
        }
    }
    out
}

/// A node's points: its status and its peers.
pub fn node_points(status: &NodeStatus, peers: &[PeerInfo]) -> Vec<Point> {
    let mut out = counter_points(&status.counters);
    out.push(point("trellis.routes", vec![], status.routes as f64));
    out.push(point(
        "trellis.routes.originated",
        vec![],
        status.originated as f64,
    ));
    out.push(point(
        "trellis.trust.snapshot.version",
        vec![],
        status.snapshot_version as f64,
    ));
    out.push(point("trellis.uptime", vec![], status.uptime_secs as f64));
    let mut states: BTreeMap<&str, u64> = ["up", "connecting", "down"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for p in peers {
        *states.entry(p.state.as_str()).or_default() += 1;
        let peer = || vec![KeyValue::new("peer", p.node_id.clone())];
        out.push(point(
            "trellis.peer.routes",
            peer(),
            p.routes_received as f64,
        ));
        out.push(point(
            "trellis.session.flaps",
            peer(),
            p.sessions.saturating_sub(1) as f64,
        ));
        if let Some(rtt) = p.rtt_us {
            out.push(point("trellis.peer.rtt", peer(), rtt as f64 / 1e6));
        }
        out.push(point(
            "trellis.peer.loss",
            peer(),
            f64::from(p.loss_ppm) / 1e6,
        ));
        out.push(point("trellis.peer.trust", peer(), f64::from(p.trust)));
        out.push(point(
            "trellis.peer.link_cost",
            peer(),
            f64::from(p.link_cost),
        ));
    }
    for (state, n) in states {
        out.push(point(
            "trellis.sessions",
            vec![KeyValue::new("state", state.to_owned())],
            n as f64,
        ));
    }
    out
}

/// The authority's points.
pub fn authority_points(status: &AuthorityStatus) -> Vec<Point> {
    let mut out = counter_points(&status.counters);
    for (state, n) in [
        ("active", status.nodes_active),
        ("revoked", status.nodes_revoked),
    ] {
        out.push(point(
            "trellis.authority.nodes",
            vec![KeyValue::new("state", state)],
            n as f64,
        ));
    }
    out.push(point(
        "trellis.authority.joins.pending",
        vec![],
        status.joins_pending as f64,
    ));
    out.push(point(
        "trellis.trust.snapshot.version",
        vec![],
        status.snapshot_version as f64,
    ));
    out
}

/// How long one reading serves the callbacks of one collection.
const FRESH: Duration = Duration::from_millis(200);

struct Cache {
    read: Box<dyn Fn() -> Vec<Point> + Send + Sync>,
    last: Mutex<Option<(Instant, Arc<Vec<Point>>)>>,
}

impl Cache {
    fn points(&self) -> Arc<Vec<Point>> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, points)) = last.as_ref() {
            if at.elapsed() < FRESH {
                return points.clone();
            }
        }
        let points = Arc::new((self.read)());
        *last = Some((Instant::now(), points.clone()));
        points
    }
}

/// Registers every catalogued instrument on the global meter; each reads the points
/// `read` returns (called at most once per collection). Without an endpoint the global
/// meter is a no-op and `read` is never called.
pub fn observe(read: impl Fn() -> Vec<Point> + Send + Sync + 'static) {
    let meter = opentelemetry::global::meter("trellisd");
    let cache = Arc::new(Cache {
        read: Box::new(read),
        last: Mutex::new(None),
    });
    for &(name, unit, description, kind) in CATALOGUE {
        let cache = cache.clone();
        let each = move |observe: &dyn Fn(f64, &[KeyValue])| {
            for p in cache.points().iter().filter(|p| p.name == name) {
                observe(p.value, &p.attrs);
            }
        };
        match kind {
            Kind::Counter => {
                meter
                    .u64_observable_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(move |o| each(&|v, a| o.observe(v as u64, a)))
                    .build();
            }
            Kind::Gauge => {
                meter
                    .f64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(move |o| each(&|v, a| o.observe(v, a)))
                    .build();
            }
        }
    }
}

/// Bucket bounds for durations, in seconds (100 µs to 10 s).
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Histograms recorded where things happen. Cheap to clone.
#[derive(Clone)]
pub struct Recorders {
    batch: Histogram<f64>,
    convergence: Histogram<f64>,
    commit: Histogram<f64>,
}

fn seconds(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(SECONDS.to_vec())
        .build()
}

impl Recorders {
    /// The histograms, on the global meter (after telemetry started).
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("trellisd");
        Self {
            batch: seconds(
                &meter,
                "trellis.update.batch.duration",
                "Time to process one received update batch",
            ),
            convergence: seconds(
                &meter,
                "trellis.convergence.duration",
                "From the first best-path change after a quiet second to the last change",
            ),
            commit: seconds(
                &meter,
                "trellis.store.commit.duration",
                "Time to commit one store transaction",
            ),
        }
    }

    /// A received batch took `d` to process.
    pub fn batch(&self, d: Duration) {
        self.batch.record(d.as_secs_f64(), &[]);
    }

    /// A convergence episode took `d`.
    pub fn convergence(&self, d: Duration) {
        self.convergence.record(d.as_secs_f64(), &[]);
    }

    /// A store commit took `d` (`ok`: it succeeded).
    pub fn commit(&self, d: Duration, ok: bool) {
        self.commit.record(
            d.as_secs_f64(),
            &[KeyValue::new("result", if ok { "ok" } else { "failed" })],
        );
    }
}

impl Default for Recorders {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_metric_is_catalogued() {
        let names: Vec<&str> = CATALOGUE.iter().map(|c| c.0).collect();
        for (_, metric, _) in COUNTERS {
            assert!(names.contains(metric), "{metric} is not in the catalogue");
        }
        for (_, metric) in GAUGE_COUNTERS.iter().chain(REASON_PREFIXES) {
            assert!(names.contains(metric), "{metric}");
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "a metric is catalogued twice");
        for name in names {
            assert!(
                name.starts_with("trellis.") && !name.ends_with("_total"),
                "{name}"
            );
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'));
        }
    }

    #[test]
    fn counters_map_to_metrics_with_attributes() {
        let counters: BTreeMap<String, u64> = [
            ("updates_received", 4),
            ("router_batches_sent", 3),
            ("dataplane_refused_no_route", 2),
            ("dataplane_streams_active", 1),
            ("something_new", 9),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let points = counter_points(&counters);
        let find = |name: &str, attr: Option<(&str, &str)>| {
            points
                .iter()
                .find(|p| {
                    p.name == name
                        && attr.is_none_or(|(k, v)| {
                            p.attrs
                                .iter()
                                .any(|kv| kv.key.as_str() == k && kv.value.as_str() == v)
                        })
                })
                .map(|p| p.value)
        };
        assert_eq!(
            find("trellis.update.batches", Some(("direction", "in"))),
            Some(4.0)
        );
        assert_eq!(
            find("trellis.update.batches", Some(("direction", "out"))),
            Some(3.0)
        );
        assert_eq!(
            find("trellis.dataplane.refused", Some(("reason", "no_route"))),
            Some(2.0)
        );
        assert_eq!(find("trellis.dataplane.streams.active", None), Some(1.0));
        assert_eq!(find(OTHER, Some(("name", "something_new"))), Some(9.0));
        assert_eq!(points.len(), 5, "each counter once");
    }

    #[test]
    fn peers_give_states_and_per_peer_gauges() {
        let status = NodeStatus {
            routes: 7,
            ..NodeStatus::default()
        };
        let peer = PeerInfo {
            node_id: "acme/n2".into(),
            state: "up".into(),
            routes_received: 5,
            rtt_us: Some(1500),
            loss_ppm: 20_000,
            sessions: 3,
            ..PeerInfo::default()
        };
        let points = node_points(&status, &[peer]);
        let value = |name: &str| points.iter().find(|p| p.name == name).map(|p| p.value);
        assert_eq!(value("trellis.routes"), Some(7.0));
        assert_eq!(value("trellis.peer.rtt"), Some(0.0015));
        assert_eq!(value("trellis.peer.loss"), Some(0.02));
        assert_eq!(value("trellis.session.flaps"), Some(2.0));
        let up = points
            .iter()
            .find(|p| p.name == "trellis.sessions" && p.attrs[0].value.as_str() == "up");
        assert_eq!(up.map(|p| p.value), Some(1.0));
    }
}
