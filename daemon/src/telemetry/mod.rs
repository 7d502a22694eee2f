//! Telemetry: the daemon's log on stderr (text or JSON) and, when an OTLP endpoint is
//! configured, the export of traces, metrics and logs to an OpenTelemetry receiver
//! (docs/operations.md, "Telemetry"; ADR 0018).
//!
//! One seam: [`start`] installs the process's `tracing` subscriber and the OTLP pipelines
//! from [`Settings`] and returns the [`Telemetry`] guard that flushes them at exit.
//! Everything else in the daemon only uses `tracing` spans and events, the metric
//! instruments of [`metrics`], and [`TraceParent`] where a message crosses nodes.
//!
//! - `settings`: `[telemetry]` and the `OTEL_*` variables (pure).
//! - `export`: the OTLP exporters and their bounded queues.
//! - `health`: export failures counted and logged (once, then every five minutes).
//! - `logging`: text or JSON lines on stderr, JSON with trace ids.
//! - `metrics`: metric names, units and attributes; the status counters read at each
//!   export (one source of truth) and the few histograms recorded as things happen.
//! - `trace_context`: the 25-byte trace context carried across hops.

mod export;
mod health;
mod logging;
pub mod metrics;
mod settings;
mod trace_context;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

pub use health::export_failures;
pub use logging::LogFormat;
pub use settings::{check_endpoint, parse_headers, Protocol, Settings, Signals};
pub use trace_context::{exporting, TraceParent};

/// How long the exit flush may take per signal.
const FLUSH: Duration = Duration::from_secs(2);

/// Owns the OTLP pipelines; [`Telemetry::shutdown`] (or drop) flushes them.
pub struct Telemetry {
    pipelines: export::Pipelines,
    /// Where telemetry goes, for the start-up log line (no headers: they may be secret).
    pub summary: Option<String>,
}

impl Telemetry {
    /// Sends what is queued (bounded by a short timeout) and stops the exporters.
    pub fn shutdown(mut self) {
        self.pipelines.shutdown(FLUSH);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.pipelines.shutdown(FLUSH);
    }
}

/// Targets whose events never become OTLP log records: the exporter's own stack (an
/// export failure logged and exported would feed itself).
fn exporter_internal(target: &str) -> bool {
    [
        "opentelemetry",
        "hyper",
        "h2",
        "tonic",
        "tower",
        "trellis_daemon::telemetry",
    ]
    .iter()
    .any(|p| target.starts_with(p))
}

/// Installs the log subscriber in `format` and, when `settings` has an endpoint, the OTLP
/// pipelines. Must run inside the tokio runtime. `TRELLIS_LOG` sets the filter (default
/// `info`). An error is one line for the operator (a bad endpoint, say).
pub fn start(format: LogFormat, settings: &Settings) -> Result<Telemetry, String> {
    let pipelines = export::build(settings)?;
    // TRELLIS_LOG filters what is logged (stderr and OTLP log records); spans are
    // exported from `info` up whatever the log level, so a quiet log keeps its traces.
    let log_filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let traces = pipelines.traces.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("trellisd"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target().starts_with("trellis") && *m.level() <= tracing::Level::INFO
            }))
    });
    let logs = pipelines.logs.as_ref().map(|p| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p)
            .with_filter(log_filter())
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                !exporter_internal(m.target())
            }))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(log_filter())
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(logging::JsonLines)
            .with_filter(log_filter())
    });
    tracing_subscriber::registry()
        .with(traces)
        .with(logs)
        .with(text)
        .with(json)
        .try_init()
        .ok();
    trace_context::set_exporting(pipelines.traces.is_some());
    if let Some(p) = &pipelines.metrics {
        opentelemetry::global::set_meter_provider(p.clone());
    }
    let summary = settings.enabled().then(|| {
        let mut signals = Vec::new();
        for (on, name) in [
            (pipelines.traces.is_some(), "traces"),
            (pipelines.metrics.is_some(), "metrics"),
            (pipelines.logs.is_some(), "logs"),
        ] {
            if on {
                signals.push(name);
            }
        }
        format!(
            "{} to {} over {} as {} ({}), metrics every {:?}",
            signals.join(", "),
            settings.endpoint.as_deref().unwrap_or(""),
            settings.protocol.name(),
            settings.service_name,
            settings.instance,
            settings.interval,
        )
    });
    Ok(Telemetry { pipelines, summary })
}
