//! Whether export works: each exporter is wrapped so that a failed export is counted
//! (`telemetry_export_failures` in `trellis status`) and said once in the log, with the
//! endpoint and the reason, then at most every five minutes while it keeps failing, and
//! once more when it works again. Nothing here blocks or retries: the exporter retries
//! with backoff, the batch queues bound what waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

/// How often a failure that goes on is logged again.
const REPEAT: Duration = Duration::from_secs(300);

/// Failed exports since start, every signal together (shown by `status`).
pub fn export_failures() -> Arc<AtomicU64> {
    static FAILURES: OnceLock<Arc<AtomicU64>> = OnceLock::new();
    FAILURES.get_or_init(Arc::default).clone()
}

/// One signal's export health.
#[derive(Debug)]
pub(super) struct Health {
    signal: &'static str,
    endpoint: String,
    failing: AtomicBool,
    failed_since_ok: AtomicU64,
    last_said: Mutex<Option<Instant>>,
}

impl Health {
    pub(super) fn new(signal: &'static str, endpoint: &str) -> Arc<Self> {
        Arc::new(Self {
            signal,
            endpoint: endpoint.to_owned(),
            failing: AtomicBool::new(false),
            failed_since_ok: AtomicU64::new(0),
            last_said: Mutex::new(None),
        })
    }

    fn note(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    let failed = self.failed_since_ok.swap(0, Ordering::Relaxed);
                    tracing::info!(signal = self.signal, endpoint = %self.endpoint, failed, "telemetry export works again");
                }
            }
            Err(e) => {
                export_failures().fetch_add(1, Ordering::Relaxed);
                self.failed_since_ok.fetch_add(1, Ordering::Relaxed);
                let first = !self.failing.swap(true, Ordering::Relaxed);
                let mut last = self
                    .last_said
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if first || last.is_none_or(|t| t.elapsed() >= REPEAT) {
                    *last = Some(Instant::now());
                    let reason = e.to_string().replace(['\n', '\r'], " ");
                    tracing::warn!(
                        signal = self.signal,
                        endpoint = %self.endpoint,
                        failed = self.failed_since_ok.load(Ordering::Relaxed),
                        %reason,
                        "telemetry export failing; retrying with backoff, dropping what does not fit the queue (routing is not affected)"
                    );
                }
            }
        }
    }
}

/// An exporter whose results are watched.
#[derive(Debug)]
pub(super) struct Watched<E> {
    inner: E,
    health: Arc<Health>,
}

impl<E> Watched<E> {
    pub(super) fn new(inner: E, health: Arc<Health>) -> Self {
        Self { inner, health }
    }
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.health.note(&result);
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Watched<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.health.note(&result);
        result
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl<E: LogExporter> LogExporter for Watched<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.health.note(&result);
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_recovery_resets_the_streak() {
        let h = Health::new("traces", "http://127.0.0.1:1");
        let before = export_failures().load(Ordering::Relaxed);
        let err = Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
            "connection refused".into(),
        ));
        h.note(&err);
        h.note(&err);
        assert!(export_failures().load(Ordering::Relaxed) >= before + 2);
        assert!(h.failing.load(Ordering::Relaxed));
        assert_eq!(h.failed_since_ok.load(Ordering::Relaxed), 2);
        h.note(&Ok(()));
        assert!(!h.failing.load(Ordering::Relaxed));
        assert_eq!(h.failed_since_ok.load(Ordering::Relaxed), 0);
    }
}
