//! The in-memory store behind a receiver, and the [`Received`] snapshot that
//! tests make assertions on.
//!
//! Exports from both transports land here as flat records (see
//! [`crate::records`]), with request and byte counters per signal and
//! transport. Memory is bounded: each signal keeps at most a configured
//! number of records, dropping the oldest and counting the drops. Every change
//! wakes the tasks blocked in [`Store::wait_until`], so waiting for telemetry
//! costs nothing between exports and needs no polling sleeps.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::records::{LogRecord, MetricPoint, SpanRecord, Value};

/// One of the three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    /// All signals, in a fixed order.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The signal's lowercase name: `traces`, `metrics` or `logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The OTLP/HTTP path for the signal: `/v1/traces`, `/v1/metrics` or `/v1/logs`.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an export reached the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// OTLP/gRPC (HTTP/2).
    Grpc,
    /// OTLP/HTTP with a protobuf body (HTTP/1.1 or HTTP/2).
    Http,
}

/// Accepted requests and their bytes for one signal over one transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCounters {
    /// Export requests accepted.
    pub requests: u64,
    /// Their payload bytes: the HTTP body as received, or for gRPC the
    /// protobuf length of the decoded message (without gRPC framing).
    pub bytes: u64,
}

/// Counters for one signal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalCounters {
    /// Requests over OTLP/gRPC.
    pub grpc: TransportCounters,
    /// Requests over OTLP/HTTP.
    pub http: TransportCounters,
    /// Records received in total (spans, data points or log records),
    /// including those since dropped.
    pub records: u64,
    /// Records dropped, oldest first, to stay within the per-signal bound.
    pub dropped: u64,
}

impl SignalCounters {
    /// The counters of one transport.
    pub fn transport(&self, transport: Transport) -> &TransportCounters {
        match transport {
            Transport::Grpc => &self.grpc,
            Transport::Http => &self.http,
        }
    }

    /// Requests accepted over both transports.
    pub fn requests(&self) -> u64 {
        self.grpc.requests.saturating_add(self.http.requests)
    }
}

/// All counters of a receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Trace exports.
    pub traces: SignalCounters,
    /// Metric exports.
    pub metrics: SignalCounters,
    /// Log exports.
    pub logs: SignalCounters,
    /// Requests the receiver refused itself: OTLP/HTTP requests answered with
    /// an error status (bad body, unsupported content type or encoding, wrong
    /// method, unknown path) and gRPC calls to an unknown service. gRPC
    /// messages that fail to decode are answered by tonic and not counted.
    pub rejected: u64,
}

impl Counters {
    /// The counters of one signal.
    pub fn signal(&self, signal: Signal) -> &SignalCounters {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }

    fn signal_mut(&mut self, signal: Signal) -> &mut SignalCounters {
        match signal {
            Signal::Traces => &mut self.traces,
            Signal::Metrics => &mut self.metrics,
            Signal::Logs => &mut self.logs,
        }
    }
}

/// Everything a receiver holds: the records kept, oldest first, and the counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// Spans, in arrival order.
    pub spans: VecDeque<SpanRecord>,
    /// Metric data points, in arrival order.
    pub metrics: VecDeque<MetricPoint>,
    /// Log records, in arrival order.
    pub logs: VecDeque<LogRecord>,
    /// Request, byte, record and drop counters.
    pub counters: Counters,
}

impl Received {
    /// The latest data point (greatest `time_unix_nanos`; the later arrival on
    /// a tie) of metric `name` from `instance` whose attributes include every
    /// `(key, value)` of `attrs`. An empty `attrs` matches any point.
    ///
    /// Values compare as JSON: an integer attribute matches `Value::from(3)`
    /// but not `Value::from(3.0)`.
    pub fn latest_metric(
        &self,
        instance: &str,
        name: &str,
        attrs: &[(&str, Value)],
    ) -> Option<&MetricPoint> {
        self.metrics
            .iter()
            .filter(|point| point.instance == instance && point.name == name)
            .filter(|point| {
                attrs
                    .iter()
                    .all(|(key, value)| point.attributes.get(*key) == Some(value))
            })
            .max_by_key(|point| point.time_unix_nanos)
    }

    /// All data points of metric `name`, from any instance, in arrival order.
    pub fn metrics_named(&self, name: &str) -> Vec<&MetricPoint> {
        self.metrics.iter().filter(|p| p.name == name).collect()
    }

    /// All spans named `name`, from any instance, in arrival order.
    pub fn spans_named(&self, name: &str) -> Vec<&SpanRecord> {
        self.spans.iter().filter(|s| s.name == name).collect()
    }

    /// All log records from `instance`, in arrival order.
    pub fn logs_from(&self, instance: &str) -> Vec<&LogRecord> {
        self.logs
            .iter()
            .filter(|l| l.instance == instance)
            .collect()
    }

    /// The distinct `service.instance.id` values seen in any signal (an empty
    /// string stands for records whose resource had none).
    pub fn instances(&self) -> BTreeSet<String> {
        let spans = self.spans.iter().map(|s| &s.instance);
        let metrics = self.metrics.iter().map(|m| &m.instance);
        let logs = self.logs.iter().map(|l| &l.instance);
        spans.chain(metrics).chain(logs).cloned().collect()
    }
}

/// The shared, bounded store that the servers write to.
#[derive(Debug)]
pub(crate) struct Store {
    state: Mutex<Received>,
    changed: Notify,
    limit: usize,
}

impl Store {
    /// A store keeping at most `limit` records per signal.
    pub(crate) fn new(limit: usize) -> Self {
        Store {
            state: Mutex::new(Received::default()),
            changed: Notify::new(),
            limit,
        }
    }

    /// Adds the spans of one accepted export.
    pub(crate) fn add_spans(&self, via: Transport, bytes: usize, records: Vec<SpanRecord>) {
        self.add(Signal::Traces, via, bytes, records, |r| &mut r.spans);
    }

    /// Adds the data points of one accepted export.
    pub(crate) fn add_metrics(&self, via: Transport, bytes: usize, records: Vec<MetricPoint>) {
        self.add(Signal::Metrics, via, bytes, records, |r| &mut r.metrics);
    }

    /// Adds the log records of one accepted export.
    pub(crate) fn add_logs(&self, via: Transport, bytes: usize, records: Vec<LogRecord>) {
        self.add(Signal::Logs, via, bytes, records, |r| &mut r.logs);
    }

    fn add<T>(
        &self,
        signal: Signal,
        via: Transport,
        bytes: usize,
        records: Vec<T>,
        kept: fn(&mut Received) -> &mut VecDeque<T>,
    ) {
        {
            let mut state = self.lock();
            let added = u64::try_from(records.len()).unwrap_or(u64::MAX);
            let list = kept(&mut state);
            list.extend(records);
            let excess = list.len().saturating_sub(self.limit);
            list.drain(..excess);
            let dropped = u64::try_from(excess).unwrap_or(u64::MAX);

            let counters = state.counters.signal_mut(signal);
            let transport = match via {
                Transport::Grpc => &mut counters.grpc,
                Transport::Http => &mut counters.http,
            };
            transport.requests = transport.requests.saturating_add(1);
            let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
            transport.bytes = transport.bytes.saturating_add(bytes);
            counters.records = counters.records.saturating_add(added);
            counters.dropped = counters.dropped.saturating_add(dropped);
        }
        self.changed.notify_waiters();
    }

    /// Counts one refused OTLP/HTTP request.
    pub(crate) fn reject(&self) {
        {
            let mut state = self.lock();
            state.counters.rejected = state.counters.rejected.saturating_add(1);
        }
        self.changed.notify_waiters();
    }

    /// A copy of everything held.
    pub(crate) fn snapshot(&self) -> Received {
        self.lock().clone()
    }

    /// Forgets all records and resets all counters.
    pub(crate) fn clear(&self) {
        *self.lock() = Received::default();
        self.changed.notify_waiters();
    }

    /// Waits until `done` holds for the store's contents, then returns a copy
    /// of them; after `timeout`, returns the last copy as the error.
    ///
    /// `done` runs under the store's lock, once now and once after each
    /// change, so it should be quick and must not call back into the receiver.
    #[allow(clippy::result_large_err)] // Both outcomes carry the snapshot by design.
    pub(crate) async fn wait_until<F>(
        &self,
        timeout: Duration,
        mut done: F,
    ) -> Result<Received, Received>
    where
        F: FnMut(&Received) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the next change before looking, so a change between
            // the look and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if done(&state) {
                    return Ok(state.clone());
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let state = self.lock();
                return if done(&state) {
                    Ok(state.clone())
                } else {
                    Err(state.clone())
                };
            }
        }
    }

    /// The state; a panic in another holder (e.g. a caller's `done`) does not
    /// make the store unusable.
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(instance: &str, name: &str, peer: &str, value: f64, time: u64) -> MetricPoint {
        MetricPoint {
            instance: instance.into(),
            name: name.into(),
            kind: "gauge".into(),
            attributes: [("peer".to_owned(), Value::from(peer))].into(),
            value,
            time_unix_nanos: time,
            ..MetricPoint::default()
        }
    }

    #[test]
    fn the_bound_drops_the_oldest_records_and_counts_them() {
        let store = Store::new(3);
        let batch = |from: u64| {
            (from..from + 2)
                .map(|t| point("n1", "m", "a", 0.0, t))
                .collect()
        };
        store.add_metrics(Transport::Http, 10, batch(0));
        store.add_metrics(Transport::Grpc, 5, batch(2));
        let got = store.snapshot();
        let times: Vec<u64> = got.metrics.iter().map(|p| p.time_unix_nanos).collect();
        assert_eq!(times, [1, 2, 3]);
        let counters = got.counters.metrics;
        assert_eq!((counters.records, counters.dropped), (4, 1));
        assert_eq!(
            counters.http,
            TransportCounters {
                requests: 1,
                bytes: 10
            }
        );
        assert_eq!(
            counters.grpc,
            TransportCounters {
                requests: 1,
                bytes: 5
            }
        );
        assert_eq!(counters.requests(), 2);
        assert_eq!(got.counters.traces, SignalCounters::default());
    }

    #[test]
    fn latest_metric_picks_the_latest_matching_point() {
        let store = Store::new(100);
        store.add_metrics(
            Transport::Http,
            0,
            vec![
                point("n1", "m", "a", 1.0, 10),
                point("n1", "m", "b", 2.0, 30),
                point("n1", "m", "a", 3.0, 20),
                point("n2", "m", "a", 4.0, 40),
                point("n1", "other", "a", 5.0, 50),
            ],
        );
        let got = store.snapshot();
        let value = |attrs: &[(&str, Value)]| got.latest_metric("n1", "m", attrs).map(|p| p.value);
        assert_eq!(value(&[]), Some(2.0));
        assert_eq!(value(&[("peer", "a".into())]), Some(3.0));
        assert_eq!(value(&[("peer", "c".into())]), None);
        assert_eq!(got.latest_metric("n3", "m", &[]), None);
        assert_eq!(got.metrics_named("m").len(), 4);
        let instances: Vec<String> = got.instances().into_iter().collect();
        assert_eq!(instances, ["n1", "n2"]);
    }

    #[tokio::test]
    async fn wait_until_wakes_on_a_change_and_times_out_with_the_last_snapshot() {
        let store = std::sync::Arc::new(Store::new(10));
        let writer = store.clone();
        let task = tokio::spawn(async move {
            writer.add_spans(Transport::Grpc, 1, vec![SpanRecord::default()]);
        });
        let got = store
            .wait_until(Duration::from_secs(30), |r| !r.spans.is_empty())
            .await;
        assert_eq!(got.map(|r| r.spans.len()), Ok(1));
        task.await.expect("writer task");

        let timed_out = store
            .wait_until(Duration::from_millis(20), |r| r.spans.len() > 1)
            .await;
        assert_eq!(timed_out.map_err(|r| r.spans.len()), Err(1));

        store.clear();
        assert_eq!(store.snapshot(), Received::default());
    }
}
