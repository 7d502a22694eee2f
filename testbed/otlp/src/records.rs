//! Flat records and the flattening of OTLP export requests into them.
//!
//! An OTLP export nests data as resource → scope → item (→ data point). Tests
//! want to ask "did node n2 report span X with attribute Y", so every item is
//! turned into one self-contained record that carries its resource's
//! `service.name` and `service.instance.id`, its scope name, and its own
//! fields in plain types (hex ids, JSON attribute values).
//!
//! The functions here are pure: they take a decoded request and return
//! records; they never fail and never panic, whatever the request contains
//! (missing resources, empty ids and unset oneofs map to empty values).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, NumberDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::{Deserialize, Serialize};

/// An attribute value: string, integer, double, bool, array or map.
///
/// Byte values become lowercase hex strings; doubles that JSON cannot hold
/// (NaN, ±infinity) become the strings `"NaN"`, `"inf"` and `"-inf"`.
pub use serde_json::Value;

/// Attributes keyed by name, in a stable order.
pub type Attributes = BTreeMap<String, Value>;

/// The resource attribute naming the service that sent a record.
pub const SERVICE_NAME: &str = "service.name";
/// The resource attribute naming the instance (node) that sent a record.
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// One span, as received.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// The resource's `service.name` (empty if absent).
    pub service: String,
    /// The resource's `service.instance.id` (empty if absent).
    pub instance: String,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The span name.
    pub name: String,
    /// The trace id, lowercase hex.
    pub trace_id: String,
    /// The span id, lowercase hex.
    pub span_id: String,
    /// The parent span id, lowercase hex; empty for a root span.
    pub parent_span_id: String,
    /// The OTLP `SpanKind` number (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// The span's attributes.
    pub attributes: Attributes,
    /// The OTLP `StatusCode` number (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// The status message (usually set only with an error status).
    pub status_message: String,
    /// The names of the span's events, in order.
    pub events: Vec<String>,
}

/// One metric data point, as received.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// The resource's `service.name` (empty if absent).
    pub service: String,
    /// The resource's `service.instance.id` (empty if absent).
    pub instance: String,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The metric name.
    pub name: String,
    /// The metric unit (e.g. `s`, `By`, `{route}`).
    pub unit: String,
    /// The metric description.
    pub description: String,
    /// `"sum"`, `"gauge"`, `"histogram"`, `"exponential_histogram"` or `"summary"`.
    pub kind: String,
    /// The data point's attributes.
    pub attributes: Attributes,
    /// Sum and gauge: the point's value. Histograms and summaries: their sum
    /// (0 when the sender left it out).
    pub value: f64,
    /// Histograms and summaries: the number of recorded values; otherwise 0.
    pub count: u64,
    /// The point's time, nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
}

/// One log record, as received.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The resource's `service.name` (empty if absent).
    pub service: String,
    /// The resource's `service.instance.id` (empty if absent).
    pub instance: String,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The record's event name (empty if none).
    pub event_name: String,
    /// The severity text as sent (may be empty).
    pub severity_text: String,
    /// The OTLP `SeverityNumber` (0 unspecified, 9 info, 13 warn, 17 error, ...).
    pub severity_number: i32,
    /// The body: a string body as is, any other body rendered as JSON, empty if absent.
    pub body: String,
    /// The record's attributes.
    pub attributes: Attributes,
    /// The trace id it was emitted under, lowercase hex; empty if none.
    pub trace_id: String,
    /// The span id it was emitted under, lowercase hex; empty if none.
    pub span_id: String,
    /// The event time, or the observed time when the event time is unset.
    pub time_unix_nanos: u64,
}

/// Flattens a trace export into one record per span.
pub(crate) fn spans(request: ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let (service, instance) = resource_ids(resource_spans.resource.as_ref());
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_name(scope_spans.scope.as_ref());
            for span in scope_spans.spans {
                let (status_code, status_message) = span
                    .status
                    .map(|status| (status.code, status.message))
                    .unwrap_or_default();
                out.push(SpanRecord {
                    service: service.clone(),
                    instance: instance.clone(),
                    scope: scope.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    status_code,
                    status_message,
                    events: span.events.into_iter().map(|event| event.name).collect(),
                });
            }
        }
    }
    out
}

/// Flattens a metrics export into one record per data point.
pub(crate) fn metric_points(request: ExportMetricsServiceRequest) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for resource_metrics in request.resource_metrics {
        let (service, instance) = resource_ids(resource_metrics.resource.as_ref());
        for scope_metrics in resource_metrics.scope_metrics {
            let scope = scope_name(scope_metrics.scope.as_ref());
            for metric in scope_metrics.metrics {
                let base = MetricPoint {
                    service: service.clone(),
                    instance: instance.clone(),
                    scope: scope.clone(),
                    name: metric.name,
                    unit: metric.unit,
                    description: metric.description,
                    ..MetricPoint::default()
                };
                push_points(&mut out, base, metric.data);
            }
        }
    }
    out
}

/// Appends one record per data point of `data`, each a copy of `base` with the
/// point's kind, attributes, value, count and time filled in.
fn push_points(out: &mut Vec<MetricPoint>, base: MetricPoint, data: Option<metric::Data>) {
    let point = |kind: &str, attrs: &[KeyValue], value: f64, count: u64, time: u64| MetricPoint {
        kind: kind.to_owned(),
        attributes: attributes(attrs),
        value,
        count,
        time_unix_nanos: time,
        ..base.clone()
    };
    match data {
        Some(metric::Data::Gauge(gauge)) => out.extend(
            gauge
                .data_points
                .iter()
                .map(|p| point("gauge", &p.attributes, number(p), 0, p.time_unix_nano)),
        ),
        Some(metric::Data::Sum(sum)) => out.extend(
            sum.data_points
                .iter()
                .map(|p| point("sum", &p.attributes, number(p), 0, p.time_unix_nano)),
        ),
        Some(metric::Data::Histogram(histogram)) => {
            out.extend(histogram.data_points.iter().map(|p| {
                let sum = p.sum.unwrap_or_default();
                point("histogram", &p.attributes, sum, p.count, p.time_unix_nano)
            }));
        }
        Some(metric::Data::ExponentialHistogram(histogram)) => {
            out.extend(histogram.data_points.iter().map(|p| {
                let sum = p.sum.unwrap_or_default();
                let kind = "exponential_histogram";
                point(kind, &p.attributes, sum, p.count, p.time_unix_nano)
            }));
        }
        Some(metric::Data::Summary(summary)) => out.extend(
            summary
                .data_points
                .iter()
                .map(|p| point("summary", &p.attributes, p.sum, p.count, p.time_unix_nano)),
        ),
        None => {}
    }
}

/// A number data point's value as `f64` (integers are converted; an unset value is 0).
fn number(point: &NumberDataPoint) -> f64 {
    match point.value {
        Some(number_data_point::Value::AsDouble(value)) => value,
        // Counters past 2^53 lose precision here; that is fine for assertions.
        Some(number_data_point::Value::AsInt(value)) => value as f64,
        None => 0.0,
    }
}

/// Flattens a logs export into one record per log record.
pub(crate) fn logs(request: ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for resource_logs in request.resource_logs {
        let (service, instance) = resource_ids(resource_logs.resource.as_ref());
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_name(scope_logs.scope.as_ref());
            for record in scope_logs.log_records {
                let body = match record.body.as_ref().map(any_value) {
                    Some(Value::String(text)) => text,
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                let time_unix_nanos = if record.time_unix_nano == 0 {
                    record.observed_time_unix_nano
                } else {
                    record.time_unix_nano
                };
                out.push(LogRecord {
                    service: service.clone(),
                    instance: instance.clone(),
                    scope: scope.clone(),
                    event_name: record.event_name,
                    severity_text: record.severity_text,
                    severity_number: record.severity_number,
                    body,
                    attributes: attributes(&record.attributes),
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                    time_unix_nanos,
                });
            }
        }
    }
    out
}

/// The resource's `service.name` and `service.instance.id`, empty when absent.
fn resource_ids(resource: Option<&Resource>) -> (String, String) {
    let Some(resource) = resource else {
        return (String::new(), String::new());
    };
    let find = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(|value| match any_value(value) {
                Value::String(text) => text,
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    (find(SERVICE_NAME), find(SERVICE_INSTANCE_ID))
}

fn scope_name(scope: Option<&InstrumentationScope>) -> String {
    scope.map(|scope| scope.name.clone()).unwrap_or_default()
}

/// Converts OTLP key-values into a map; a later duplicate key wins.
pub(crate) fn attributes(kvs: &[KeyValue]) -> Attributes {
    kvs.iter()
        .map(|kv| {
            let value = kv.value.as_ref().map_or(Value::Null, any_value);
            (kv.key.clone(), value)
        })
        .collect()
}

/// Converts an OTLP `AnyValue` into a JSON value.
pub(crate) fn any_value(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => Value::String(text.clone()),
        Some(any_value::Value::BoolValue(flag)) => Value::Bool(*flag),
        Some(any_value::Value::IntValue(int)) => Value::from(*int),
        Some(any_value::Value::DoubleValue(double)) => double_value(*double),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(any_value).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(
            list.values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().map_or(Value::Null, any_value);
                    (kv.key.clone(), value)
                })
                .collect(),
        ),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex(bytes)),
        // Dictionary-indexed strings (profiles only) and unset values.
        _ => Value::Null,
    }
}

fn double_value(double: f64) -> Value {
    match serde_json::Number::from_f64(double) {
        Some(number) => Value::Number(number),
        None if double.is_nan() => Value::String("NaN".to_owned()),
        None if double > 0.0 => Value::String("inf".to_owned()),
        None => Value::String("-inf".to_owned()),
    }
}

/// Lowercase hex of `bytes` (empty for no bytes).
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn any_values_map_to_json() {
        use any_value::Value as V;
        let list = KeyValueList {
            values: vec![kv("k", V::IntValue(1))],
        };
        let attrs = attributes(&[
            kv("s", V::StringValue("x".into())),
            kv("b", V::BoolValue(true)),
            kv("i", V::IntValue(-3)),
            kv("d", V::DoubleValue(1.5)),
            kv("nan", V::DoubleValue(f64::NAN)),
            kv("inf", V::DoubleValue(f64::NEG_INFINITY)),
            kv("bytes", V::BytesValue(vec![0, 0xab])),
            kv(
                "arr",
                V::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(V::StringValue("a".into())),
                    }],
                }),
            ),
            kv("map", V::KvlistValue(list)),
            KeyValue {
                key: "unset".into(),
                ..KeyValue::default()
            },
        ]);
        assert_eq!(attrs["s"], Value::from("x"));
        assert_eq!(attrs["b"], Value::from(true));
        assert_eq!(attrs["i"], Value::from(-3));
        assert_eq!(attrs["d"], Value::from(1.5));
        assert_eq!(attrs["nan"], Value::from("NaN"));
        assert_eq!(attrs["inf"], Value::from("-inf"));
        assert_eq!(attrs["bytes"], Value::from("00ab"));
        assert_eq!(attrs["arr"], serde_json::json!(["a"]));
        assert_eq!(attrs["map"], serde_json::json!({"k": 1}));
        assert_eq!(attrs["unset"], Value::Null);
    }

    #[test]
    fn an_empty_request_has_no_records() {
        assert!(spans(ExportTraceServiceRequest::default()).is_empty());
        assert!(metric_points(ExportMetricsServiceRequest::default()).is_empty());
        assert!(logs(ExportLogsServiceRequest::default()).is_empty());
    }

    #[test]
    fn a_missing_resource_gives_empty_ids() {
        assert_eq!(resource_ids(None), (String::new(), String::new()));
        let resource = Resource {
            attributes: vec![kv(SERVICE_INSTANCE_ID, any_value::Value::IntValue(7))],
            ..Resource::default()
        };
        assert_eq!(resource_ids(Some(&resource)), (String::new(), "7".into()));
    }
}
