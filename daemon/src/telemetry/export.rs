//! The OTLP pipelines: one exporter per signal (gRPC through tonic, or HTTP/protobuf
//! through hyper), each behind a bounded batch queue on the tokio runtime, so a slow or
//! dead receiver costs dropped telemetry, never a stalled routing loop.
//!
//! Bounds: spans and log records wait in queues of [`QUEUE`] entries (the excess is
//! dropped); metrics are cumulative sums read every interval, so a missed export loses
//! nothing but resolution. A failed export is retried with exponential backoff and jitter
//! by the exporter, then dropped until the next batch.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::{runtime, Resource};

use super::health::{Health, Watched};
use super::settings::{Protocol, Settings};

/// Spans or log records held while the receiver is slow (per signal).
pub const QUEUE: usize = 4096;
/// Records sent in one export request.
const BATCH: usize = 512;
/// How long a span or log record may wait before it is sent.
const DELAY: Duration = Duration::from_millis(500);

/// The providers that own the pipelines.
#[derive(Default)]
pub(super) struct Pipelines {
    pub(super) traces: Option<SdkTracerProvider>,
    pub(super) metrics: Option<SdkMeterProvider>,
    pub(super) logs: Option<SdkLoggerProvider>,
}

fn resource(settings: &Settings) -> Resource {
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", settings.instance.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build()
}

fn metadata(settings: &Settings) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for (key, value) in &settings.headers {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            map.insert(k, v);
        }
    }
    map
}

fn headers(settings: &Settings) -> HashMap<String, String> {
    settings.headers.clone().into_iter().collect()
}

/// One signal's OTLP exporter over the configured transport, watched by [`Health`]. A
/// macro, not a function: each signal's builder is its own type with the same methods.
macro_rules! exporter {
    ($builder:expr, $settings:expr, $signal:literal) => {{
        let settings: &Settings = $settings;
        let url = settings.signal_url($signal).unwrap_or_default();
        let built = match settings.protocol {
            Protocol::Grpc => $builder
                .with_tonic()
                .with_endpoint(url.clone())
                .with_timeout(settings.timeout)
                .with_metadata(metadata(settings))
                .build(),
            Protocol::HttpProtobuf => $builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url.clone())
                .with_timeout(settings.timeout)
                .with_headers(headers(settings))
                .build(),
        };
        built
            .map(|e| Watched::new(e, Health::new($signal, &url)))
            .map_err(|e| {
                format!(
                    "telemetry: cannot set up the OTLP {} exporter: {e}",
                    $signal
                )
            })
    }};
}

/// Builds the pipelines `settings` asks for. Must run inside the tokio runtime (the batch
/// queues and the metric reader are tasks on it).
pub(super) fn build(settings: &Settings) -> Result<Pipelines, String> {
    let mut out = Pipelines::default();
    if !settings.enabled() {
        return Ok(out);
    }
    let res = resource(settings);
    if settings.signals.traces {
        let exporter = exporter!(
            opentelemetry_otlp::SpanExporter::builder(),
            settings,
            "traces"
        )?;
        let config = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(BATCH)
            .with_scheduled_delay(DELAY)
            .build();
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                runtime::Tokio,
            )
            .with_batch_config(config)
            .build();
        out.traces = Some(
            SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(res.clone())
                .build(),
        );
    }
    if settings.signals.metrics {
        let exporter = exporter!(
            opentelemetry_otlp::MetricExporter::builder(),
            settings,
            "metrics"
        )?;
        let reader =
            opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
                exporter,
                runtime::Tokio,
            )
            .with_interval(settings.interval)
            .with_timeout(settings.timeout)
            .build();
        out.metrics = Some(
            SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(res.clone())
                .build(),
        );
    }
    if settings.signals.logs {
        let exporter = exporter!(opentelemetry_otlp::LogExporter::builder(), settings, "logs")?;
        let config = opentelemetry_sdk::logs::BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(BATCH)
            .with_scheduled_delay(DELAY)
            .build();
        let processor =
            opentelemetry_sdk::logs::log_processor_with_async_runtime::BatchLogProcessor::builder(
                exporter,
                runtime::Tokio,
            )
            .with_batch_config(config)
            .build();
        out.logs = Some(
            SdkLoggerProvider::builder()
                .with_log_processor(processor)
                .with_resource(res)
                .build(),
        );
    }
    Ok(out)
}

impl Pipelines {
    /// Sends what is queued and stops, waiting at most `timeout` per signal.
    pub(super) fn shutdown(&mut self, timeout: Duration) {
        if let Some(p) = self.traces.take() {
            let _ = p.shutdown_with_timeout(timeout);
        }
        if let Some(p) = self.metrics.take() {
            let _ = p.shutdown_with_timeout(timeout);
        }
        if let Some(p) = self.logs.take() {
            let _ = p.shutdown_with_timeout(timeout);
        }
    }
}
