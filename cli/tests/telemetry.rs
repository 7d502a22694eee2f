//! Telemetry for real: an authority and a line of three `trellisd node run` processes
//! export OTLP to a real receiver (tonic's gRPC server and an HTTP/protobuf endpoint, from
//! `trellis-otlp-receiver`), and what arrives is checked by name, attribute and value.
//!
//! ```text
//!   authority.acme ──(grpc)──┐
//!   a ── b ── c              ├── receiver on 127.0.0.1
//!   a, b: grpc; c: http/protobuf, JSON logs on stderr
//! ```
//!
//! Checked (docs/adr/0018-telemetry.md): the metrics of every node and of the authority
//! (sessions by state, routes, per-peer RTT, update batches equal to the status counter,
//! histograms of batch processing and store commits, data-plane bytes, joins); one
//! advertisement followed from a to c as one trace (route.change → update.batch at b →
//! update.batch at c); one `trellis connect` connection as one trace through three
//! hops; join spans at the authority; session spans with their close reason; log
//! records over OTLP, and JSON log lines that carry the trace ids the receiver holds.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{echo_server, free_tcp_port, wait_for, Authority, Node, Scratch};
use trellis_otlp_receiver::{MetricPoint, Received, Receiver, SpanRecord, Value};

/// Bounds a hang; every wait ends on the event it waits for.
const HANG: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn attr<'a>(span: &'a SpanRecord, key: &str) -> Option<&'a str> {
    span.attributes.get(key).and_then(Value::as_str)
}

fn spans<'a>(got: &'a Received, instance: &str, name: &str) -> Vec<&'a SpanRecord> {
    got.spans
        .iter()
        .filter(|s| s.instance == instance && s.name == name)
        .collect()
}

fn metric<'a>(
    got: &'a Received,
    instance: &str,
    name: &str,
    attrs: &[(&str, &str)],
) -> Option<&'a MetricPoint> {
    let attrs: Vec<(&str, Value)> = attrs.iter().map(|(k, v)| (*k, Value::from(*v))).collect();
    got.latest_metric(instance, name, &attrs)
}

/// Waits until `done` holds for what the receiver has; panics with a summary if not.
fn wait(
    rt: &tokio::runtime::Runtime,
    receiver: &Receiver,
    what: &str,
    done: impl FnMut(&Received) -> bool,
) -> Received {
    match rt.block_on(receiver.wait_until(HANG, done)) {
        Ok(got) => got,
        Err(got) => panic!(
            "{what}: not seen within {HANG:?}; the receiver has:\n{}",
            trellis_otlp_receiver::render_text(&trellis_otlp_receiver::summarize(&got))
        ),
    }
}

/// The `update.batch` span at `instance` whose parent is `parent` (same trace).
fn child_batch<'a>(
    got: &'a Received,
    instance: &str,
    parent: &SpanRecord,
) -> Option<&'a SpanRecord> {
    spans(got, instance, "update.batch")
        .into_iter()
        .find(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
}

#[test]
fn a_line_of_three_nodes_exports_metrics_traces_and_logs() {
    let rt = runtime();
    let receiver = rt
        .block_on(Receiver::start("127.0.0.1:0".parse().expect("addr")))
        .expect("start the receiver");
    let grpc = receiver.grpc_endpoint();
    let http = receiver.http_endpoint();
    let scratch = Scratch::new("telemetry");
    let authority = Authority::start_with_env(
        scratch.join("auth-acme"),
        "acme",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    );
    let js = authority.token(&["--auto-approve", "--uses", "3"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    let mut c = Node::join(&scratch, &authority, "acme", "c", &js);
    let telemetry = |protocol: &str, endpoint: &str| {
        format!(
            "[telemetry]\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\n\
             export_interval = \"200ms\"\nheaders = {{ \"x-test\" = \"secret-value\" }}\n"
        )
    };
    a.configure(&[(&b.id, b.port)], &telemetry("grpc", &grpc));
    b.configure(
        &[(&a.id, a.port), (&c.id, c.port)],
        &telemetry("grpc", &grpc),
    );
    c.configure(&[(&b.id, b.port)], &telemetry("http/protobuf", &http));
    let c_log = scratch.join("c.log");
    c.log_to(c_log.clone());
    c.env("TRELLIS_LOG_FORMAT", "json");
    for node in [&mut a, &mut b, &mut c] {
        node.env("TRELLIS_LOG", "info");
        node.start();
    }
    wait_for("a–b and b–c up", || {
        (b.peer_up("acme/a") && b.peer_up("acme/c")).then_some(())
    });

    // One advertisement at a, followed to c.
    let echo = echo_server();
    let endpoint = format!("127.0.0.1:{echo}");
    a.json(&["routes", "advertise", "echo.acme", "--endpoint", &endpoint]);
    wait_for("echo.acme at c", || c.route("echo.acme"));
    let got = wait(
        &rt,
        &receiver,
        "the advertisement's trace a → b → c",
        |got| {
            spans(got, "acme/a", "route.change").iter().any(|root| {
                attr(root, "service") == Some("echo.acme")
                    && child_batch(got, "acme/b", root)
                        .is_some_and(|at_b| child_batch(got, "acme/c", at_b).is_some())
            })
        },
    );
    let root = spans(&got, "acme/a", "route.change")
        .into_iter()
        .find(|s| attr(s, "service") == Some("echo.acme"))
        .expect("root");
    assert_eq!(
        root.parent_span_id, "",
        "the advertisement starts the trace"
    );
    assert_eq!(attr(root, "change"), Some("advertise"));
    let at_b = child_batch(&got, "acme/b", root).expect("b");
    assert_eq!(attr(at_b, "peer"), Some("acme/a"));
    assert_eq!(at_b.attributes.get("announcements"), Some(&Value::from(1)));
    assert!(at_b.end_unix_nanos >= at_b.start_unix_nanos);

    // One connection through the data plane: c (ingress) → b → a (origin).
    let port = free_tcp_port();
    c.json(&[
        "connect",
        "echo.acme",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(HANG)).expect("timeout");
    conn.write_all(b"traced bytes").expect("write");
    conn.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    conn.read_to_end(&mut back).expect("read the echo");
    assert_eq!(back, b"traced bytes");
    let got = wait(
        &rt,
        &receiver,
        "the connection's trace c → b → a",
        |got| {
            spans(got, "acme/c", "dataplane.stream")
                .iter()
                .any(|ingress| {
                    spans(got, "acme/b", "dataplane.stream")
                        .iter()
                        .any(|transit| {
                            transit.parent_span_id == ingress.span_id
                                && spans(got, "acme/a", "dataplane.stream")
                                    .iter()
                                    .any(|origin| origin.parent_span_id == transit.span_id)
                        })
                })
        },
    );
    let ingress = spans(&got, "acme/c", "dataplane.stream")[0];
    assert_eq!(attr(ingress, "service"), Some("echo.acme"));
    assert_eq!(attr(ingress, "requester"), Some("acme/c"));
    let origin = spans(&got, "acme/a", "dataplane.stream")[0];
    assert_eq!(
        origin.trace_id, ingress.trace_id,
        "one trace through three hops"
    );
    assert_eq!(attr(origin, "from"), Some("acme/b"));

    // Metrics: every node and the authority, with the values status shows.
    let expected_up = [("acme/a", 1.0), ("acme/b", 2.0), ("acme/c", 1.0)];
    let got = wait(&rt, &receiver, "the metrics of the mesh", |got| {
        expected_up.iter().all(|(node, up)| {
            metric(got, node, "trellis.sessions", &[("state", "up")]).map(|p| p.value) == Some(*up)
                && metric(got, node, "trellis.routes", &[]).is_some_and(|p| p.value >= 1.0)
        }) && metric(got, "acme/a", "trellis.dataplane.bytes", &[]).is_some_and(|p| p.value >= 24.0)
            && metric(
                got,
                "authority.acme",
                "trellis.authority.join.requests",
                &[],
            )
            .is_some_and(|p| p.value == 3.0)
    });
    let rtt = metric(&got, "acme/a", "trellis.peer.rtt", &[("peer", "acme/b")]).expect("rtt");
    assert_eq!(rtt.unit, "s");
    assert!(rtt.value > 0.0 && rtt.value < 10.0, "{rtt:?}");
    let batches = metric(&got, "acme/b", "trellis.update.batch.duration", &[]).expect("histogram");
    assert_eq!(batches.kind, "histogram");
    assert!(batches.count >= 1);
    let commits = metric(
        &got,
        "acme/a",
        "trellis.store.commit.duration",
        &[("result", "ok")],
    )
    .expect("commits");
    assert!(commits.count >= 1);
    let nodes = metric(
        &got,
        "authority.acme",
        "trellis.authority.nodes",
        &[("state", "active")],
    )
    .expect("nodes");
    assert_eq!(nodes.value, 3.0);
    let routes = metric(&got, "acme/c", "trellis.routes", &[]).expect("routes");
    assert_eq!(routes.unit, "{route}");
    assert_eq!(routes.service, "trellisd");
    // One source of truth: the metric is the status counter, read at each export.
    wait_for("b's batches in the metric equal its status counter", || {
        let status = b.json(&["status"])["counters"]["updates_received"].as_u64()?;
        let snapshot = receiver.snapshot();
        let exported = metric(
            &snapshot,
            "acme/b",
            "trellis.update.batches",
            &[("direction", "in")],
        )?;
        (exported.value == status as f64).then_some(())
    });

    // Joins at the authority: one span each, approved automatically.
    let joins = spans(&got, "authority.acme", "authority.join");
    let names: BTreeSet<&str> = joins.iter().filter_map(|s| attr(s, "node")).collect();
    assert_eq!(names, BTreeSet::from(["a", "b", "c"]), "{joins:?}");
    assert!(joins.iter().all(|s| attr(s, "outcome") == Some("approved")));

    // Logs over OTLP from every node; some carry the trace they were written in.
    let got = wait(&rt, &receiver, "log records of every node", |got| {
        ["acme/a", "acme/b", "acme/c"]
            .iter()
            .all(|n| !got.logs_from(n).is_empty())
    });
    assert!(
        got.logs.iter().all(|l| l.severity_number >= 9),
        "info and above"
    );
    assert!(
        got.logs.iter().any(|l| !l.trace_id.is_empty()),
        "a log record written inside a span carries its trace id"
    );
    assert!(
        !got.logs.iter().any(|l| l.body.contains("secret-value")),
        "headers are never logged"
    );

    // A session span ends with its close reason when c stops.
    let status = c.stop_with("-TERM");
    assert!(status.success(), "{status:?}");
    let got = wait(
        &rt,
        &receiver,
        "c's session span with its close reason",
        |got| {
            spans(got, "acme/c", "session")
                .iter()
                .any(|s| attr(s, "close.reason") == Some("admin shutdown"))
        },
    );
    let session = spans(&got, "acme/c", "session")
        .into_iter()
        .find(|s| attr(s, "close.reason") == Some("admin shutdown"))
        .expect("session");
    assert_eq!(attr(session, "peer"), Some("acme/b"));

    // c logged JSON lines on stderr, and some carry a trace id the receiver holds.
    let log = std::fs::read_to_string(&c_log).expect("c's log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} missing: {line}");
        }
    }
    let traces: BTreeSet<&str> = got.spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert!(
        lines
            .iter()
            .filter_map(|l| l["trace_id"].as_str())
            .any(|t| traces.contains(t)),
        "no JSON log line carries an exported trace id:\n{log}"
    );
    assert!(!log.contains("secret-value"), "headers are never logged");
    drop((a, b));
    rt.block_on(receiver.stop());
}
