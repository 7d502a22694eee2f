//! End-to-end tests: the real OpenTelemetry SDK and OTLP exporters send
//! traces, metrics and logs to a receiver over OTLP/gRPC and over
//! OTLP/HTTP (protobuf), and the flattened records are checked field by field.
//!
//! The exporters are driven the way the daemon drives them: the SDK's
//! async-runtime batch processors and periodic reader on the test's tokio
//! runtime (the hyper HTTP client needs a runtime, so the default
//! thread-based processors cannot be used with it). Providers are flushed
//! from a blocking thread, then the test waits on the receiver; timeouts only
//! bound a hang.

use std::time::Duration;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::logs::{log_processor_with_async_runtime, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{periodic_reader_with_async_runtime, SdkMeterProvider};
use opentelemetry_sdk::trace::{span_processor_with_async_runtime, SdkTracerProvider};
use opentelemetry_sdk::{runtime, Resource};
use trellis_otlp_receiver::{render_text, summarize, Received, Receiver, Signal, Transport, Value};

/// Bounds every wait; a healthy run takes milliseconds.
const TIMEOUT: Duration = Duration::from_secs(30);
const SERVICE: &str = "trellis-test";

/// The three SDK providers of one simulated node, exporting over one transport.
struct Node {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    logger: SdkLoggerProvider,
}

impl Node {
    fn new(receiver: &Receiver, transport: Transport, instance: &str) -> anyhow::Result<Node> {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", SERVICE),
                KeyValue::new("service.instance.id", instance.to_owned()),
            ])
            .build();
        let (spans, metrics, logs) = match transport {
            Transport::Grpc => (
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(receiver.grpc_endpoint())
                    .with_timeout(TIMEOUT)
                    .build()?,
                MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(receiver.grpc_endpoint())
                    .with_timeout(TIMEOUT)
                    .build()?,
                LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(receiver.grpc_endpoint())
                    .with_timeout(TIMEOUT)
                    .build()?,
            ),
            // With an endpoint set in code, the HTTP exporters use it verbatim:
            // the signal path must be part of it.
            Transport::Http => (
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(receiver.http_url(Signal::Traces))
                    .with_timeout(TIMEOUT)
                    .build()?,
                MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(receiver.http_url(Signal::Metrics))
                    .with_timeout(TIMEOUT)
                    .build()?,
                LogExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(receiver.http_url(Signal::Logs))
                    .with_timeout(TIMEOUT)
                    .build()?,
            ),
        };
        let tracer = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_span_processor(
                span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    spans,
                    runtime::Tokio,
                )
                .build(),
            )
            .build();
        let meter = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(
                periodic_reader_with_async_runtime::PeriodicReader::builder(
                    metrics,
                    runtime::Tokio,
                )
                .build(),
            )
            .build();
        let logger = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_log_processor(
                log_processor_with_async_runtime::BatchLogProcessor::builder(logs, runtime::Tokio)
                    .build(),
            )
            .build();
        Ok(Node {
            tracer,
            meter,
            logger,
        })
    }

    /// Records a parent and a child span, a log record inside the child, and
    /// a counter, a gauge, a histogram and an up-down counter.
    fn record(&self) -> SentIds {
        let tracer = self.tracer.tracer("receiver-test");
        let logger = self.logger.logger("receiver-test");
        let meter = self.meter.meter("receiver-test");

        let parent = tracer
            .span_builder("route.compute")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("route.prefix", "10.0.0.0/8"),
                KeyValue::new("route.count", 3_i64),
                KeyValue::new("route.cost", 1.5),
                KeyValue::new("route.best", true),
            ])
            .start(&tracer);
        let parent_cx = Context::current_with_span(parent);
        let ids = {
            let _attached = parent_cx.clone().attach();
            let mut child = tracer.start("route.install");
            child.add_event("installed", vec![KeyValue::new("table", "main")]);
            child.set_status(Status::error("table full"));
            let child_context = child.span_context().clone();
            let ids = SentIds {
                trace_id: child_context.trace_id().to_string(),
                parent_span_id: parent_cx.span().span_context().span_id().to_string(),
                child_span_id: child_context.span_id().to_string(),
            };
            let child_cx = Context::current_with_span(child);
            {
                let _in_child = child_cx.clone().attach();
                let mut log = logger.create_log_record();
                log.set_event_name("peer.down");
                log.set_severity_number(Severity::Warn);
                log.set_severity_text("WARN");
                log.set_body(AnyValue::from("peer n2 went down"));
                log.add_attribute("peer", "n2");
                logger.emit(log);
            }
            child_cx.span().end();
            ids
        };
        parent_cx.span().end();

        let updates = meter
            .u64_counter("trellis.updates")
            .with_unit("{update}")
            .with_description("Updates sent")
            .build();
        updates.add(3, &[KeyValue::new("peer", "n2")]);
        updates.add(4, &[KeyValue::new("peer", "n2")]);
        updates.add(1, &[KeyValue::new("peer", "n3")]);
        let routes = meter
            .f64_gauge("trellis.routes")
            .with_unit("{route}")
            .build();
        routes.record(42.0, &[]);
        let duration = meter
            .f64_histogram("trellis.compute.duration")
            .with_unit("s")
            .build();
        duration.record(0.5, &[]);
        duration.record(1.5, &[]);
        let sessions = meter.i64_up_down_counter("trellis.sessions").build();
        sessions.add(2, &[]);
        sessions.add(-1, &[]);
        ids
    }

    /// Flushes and shuts down all three providers. Their calls block until
    /// the runtime has exported, so they run on a blocking thread.
    async fn finish(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            self.tracer.force_flush()?;
            self.meter.force_flush()?;
            self.logger.force_flush()?;
            self.tracer.shutdown()?;
            self.meter.shutdown()?;
            self.logger.shutdown()?;
            Ok(())
        })
        .await?
    }
}

/// The ids the test recorded, to compare with what arrived.
struct SentIds {
    trace_id: String,
    parent_span_id: String,
    child_span_id: String,
}

/// Whether everything `Node::record` sends from `instance` has arrived.
fn all_arrived(got: &Received, instance: &str) -> bool {
    let spans = got.spans.iter().filter(|s| s.instance == instance).count();
    let logs = got.logs.iter().filter(|l| l.instance == instance).count();
    let metrics = [
        "trellis.updates",
        "trellis.routes",
        "trellis.compute.duration",
        "trellis.sessions",
    ];
    spans >= 2
        && logs >= 1
        && metrics
            .iter()
            .all(|name| got.latest_metric(instance, name, &[]).is_some())
}

/// Checks every record `Node::record` sent from `instance`.
fn check_node(got: &Received, instance: &str, sent: &SentIds) {
    let from_node = |span: &&trellis_otlp_receiver::SpanRecord| span.instance == instance;
    let parents: Vec<_> = got
        .spans_named("route.compute")
        .into_iter()
        .filter(from_node)
        .collect();
    let children: Vec<_> = got
        .spans_named("route.install")
        .into_iter()
        .filter(from_node)
        .collect();
    assert_eq!((parents.len(), children.len()), (1, 1), "{got:#?}");
    let (parent, child) = (parents[0], children[0]);

    assert_eq!(parent.service, SERVICE);
    assert_eq!(parent.scope, "receiver-test");
    assert_eq!(parent.trace_id, sent.trace_id);
    assert_eq!(parent.span_id, sent.parent_span_id);
    assert_eq!(parent.parent_span_id, "", "the parent is a root span");
    assert_eq!(parent.kind, 2, "server");
    assert_eq!(parent.attributes["route.prefix"], Value::from("10.0.0.0/8"));
    assert_eq!(parent.attributes["route.count"], Value::from(3));
    assert_eq!(parent.attributes["route.cost"], Value::from(1.5));
    assert_eq!(parent.attributes["route.best"], Value::from(true));
    assert!(parent.start_unix_nanos > 0 && parent.end_unix_nanos >= parent.start_unix_nanos);

    assert_eq!(child.trace_id, sent.trace_id);
    assert_eq!(child.span_id, sent.child_span_id);
    assert_eq!(child.parent_span_id, parent.span_id);
    assert_eq!(child.kind, 1, "internal");
    assert_eq!(child.events, ["installed"]);
    assert_eq!(
        (child.status_code, child.status_message.as_str()),
        (2, "table full")
    );
    assert_eq!(sent.trace_id.len(), 32);
    assert_eq!(sent.child_span_id.len(), 16);

    let logs = got.logs_from(instance);
    assert_eq!(logs.len(), 1, "{logs:#?}");
    let log = logs[0];
    assert_eq!(log.service, SERVICE);
    assert_eq!(log.event_name, "peer.down");
    assert_eq!(
        (log.severity_number, log.severity_text.as_str()),
        (13, "WARN")
    );
    assert_eq!(log.body, "peer n2 went down");
    assert_eq!(log.attributes["peer"], Value::from("n2"));
    assert_eq!(
        log.trace_id, sent.trace_id,
        "the log carries the active span's trace"
    );
    assert_eq!(log.span_id, sent.child_span_id);
    assert!(log.time_unix_nanos > 0);

    let metric = |name: &str, attrs: &[(&str, Value)]| {
        got.latest_metric(instance, name, attrs)
            .unwrap_or_else(|| panic!("no {name} {attrs:?} from {instance}: {got:#?}"))
    };
    let n2 = metric("trellis.updates", &[("peer", "n2".into())]);
    assert_eq!((n2.kind.as_str(), n2.unit.as_str()), ("sum", "{update}"));
    assert_eq!(n2.description, "Updates sent");
    assert_eq!(n2.value, 7.0);
    assert_eq!(n2.service, SERVICE);
    assert_eq!(
        metric("trellis.updates", &[("peer", "n3".into())]).value,
        1.0
    );
    let routes = metric("trellis.routes", &[]);
    assert_eq!(
        (routes.kind.as_str(), routes.unit.as_str(), routes.value),
        ("gauge", "{route}", 42.0)
    );
    let duration = metric("trellis.compute.duration", &[]);
    assert_eq!(duration.kind, "histogram");
    assert_eq!(
        (duration.unit.as_str(), duration.value, duration.count),
        ("s", 2.0, 2)
    );
    let sessions = metric("trellis.sessions", &[]);
    assert_eq!((sessions.kind.as_str(), sessions.value), ("sum", 1.0));
}

/// Sends everything from one node over `transport` and checks it arrived
/// intact, over that transport only.
async fn round_trip(transport: Transport) -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0".parse()?).await?;
    let node = Node::new(&receiver, transport, "n1")?;
    let sent = node.record();
    node.finish().await?;

    let got = receiver
        .wait_until(TIMEOUT, |got| all_arrived(got, "n1"))
        .await
        .unwrap_or_else(|got| panic!("timed out; got:\n{}", render_text(&summarize(&got))));
    check_node(&got, "n1", &sent);

    let other = match transport {
        Transport::Grpc => Transport::Http,
        Transport::Http => Transport::Grpc,
    };
    for signal in Signal::ALL {
        let counters = got.counters.signal(signal);
        let used = counters.transport(transport);
        assert!(
            used.requests >= 1 && used.bytes > 0,
            "{signal}: {counters:?}"
        );
        assert_eq!(
            counters.transport(other).requests,
            0,
            "{signal}: {counters:?}"
        );
        assert_eq!(counters.dropped, 0);
    }
    assert_eq!(got.counters.rejected, 0);
    assert_eq!(got.instances().into_iter().collect::<Vec<_>>(), ["n1"]);
    receiver.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exports_arrive_intact() -> anyhow::Result<()> {
    round_trip(Transport::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_exports_arrive_intact() -> anyhow::Result<()> {
    round_trip(Transport::Http).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_share_one_port_and_nodes_are_told_apart() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0".parse()?).await?;
    let over_grpc = Node::new(&receiver, Transport::Grpc, "n-grpc")?;
    let over_http = Node::new(&receiver, Transport::Http, "n-http")?;
    let sent_grpc = over_grpc.record();
    let sent_http = over_http.record();
    let (grpc_done, http_done) = tokio::join!(over_grpc.finish(), over_http.finish());
    grpc_done?;
    http_done?;

    let got = receiver
        .wait_until(TIMEOUT, |got| {
            all_arrived(got, "n-grpc") && all_arrived(got, "n-http")
        })
        .await
        .unwrap_or_else(|got| panic!("timed out; got:\n{}", render_text(&summarize(&got))));
    check_node(&got, "n-grpc", &sent_grpc);
    check_node(&got, "n-http", &sent_http);
    assert_eq!(
        got.instances().into_iter().collect::<Vec<_>>(),
        ["n-grpc", "n-http"]
    );
    for signal in Signal::ALL {
        let counters = got.counters.signal(signal);
        assert!(
            counters.grpc.requests >= 1 && counters.http.requests >= 1,
            "{signal}: {counters:?}"
        );
    }

    let summaries = summarize(&got);
    assert_eq!(summaries.len(), 2);
    for summary in &summaries {
        assert_eq!(summary.services.iter().collect::<Vec<_>>(), [SERVICE]);
        assert_eq!((summary.span_count, summary.error_spans), (2, 1));
        assert_eq!(summary.spans["route.compute"], 1);
        assert_eq!(summary.logs_by_severity["WARN"], 1);
        let updates = &summary.metrics["trellis.updates"];
        assert_eq!((updates.series, updates.latest_sum), (2, 8.0));
    }
    let text = render_text(&summaries);
    assert!(
        text.contains("== node n-grpc") && text.contains("== node n-http"),
        "{text}"
    );

    // Clearing forgets records and counters; the receiver keeps serving.
    receiver.clear();
    let cleared = receiver.snapshot();
    assert!(cleared.spans.is_empty() && cleared.metrics.is_empty() && cleared.logs.is_empty());
    assert_eq!(cleared.counters.traces.requests(), 0);
    receiver.stop().await;
    Ok(())
}
