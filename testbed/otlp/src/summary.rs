//! A per-node overview of what a receiver got, for people and for JSON.
//!
//! [`summarize`] groups a [`Received`] snapshot by `service.instance.id`: for
//! each node, how many spans of each name, the latest value of each metric
//! and how many log records of each severity. [`render_text`] prints one
//! table block per node (for test failure messages and testbed reports); the
//! same [`Summary`] values serialize to JSON with serde.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::records::MetricPoint;
use crate::store::Received;

/// What one node (one `service.instance.id`) sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The node's `service.instance.id` (empty for records without one).
    pub instance: String,
    /// The `service.name` values its records carried.
    pub services: BTreeSet<String>,
    /// Spans kept, in total.
    pub span_count: u64,
    /// Spans with an error status.
    pub error_spans: u64,
    /// Span counts by span name.
    pub spans: BTreeMap<String, u64>,
    /// Metric data points kept, in total.
    pub metric_point_count: u64,
    /// Per metric name, its latest state.
    pub metrics: BTreeMap<String, MetricSummary>,
    /// Log records kept, in total.
    pub log_count: u64,
    /// Log record counts by severity (`TRACE`, `DEBUG`, `INFO`, `WARN`,
    /// `ERROR`, `FATAL` from the severity number; else the severity text;
    /// else `UNSPECIFIED`).
    pub logs_by_severity: BTreeMap<String, u64>,
}

/// The latest state of one metric on one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// `sum`, `gauge`, `histogram`, ... (of the latest point).
    pub kind: String,
    /// The unit (of the latest point).
    pub unit: String,
    /// Data points kept.
    pub points: u64,
    /// Distinct attribute sets (time series).
    pub series: u64,
    /// The value of the latest point (by time) over all series: a sum or
    /// gauge value, or a histogram's sum.
    pub latest: f64,
    /// The sum over all series of each series' latest value: the node's total
    /// for a counter split by attributes.
    pub latest_sum: f64,
    /// The count of the latest point (histograms and summaries; else 0).
    pub latest_count: u64,
    /// The time of the latest point, nanoseconds since the Unix epoch.
    pub latest_time_unix_nanos: u64,
}

/// One [`Summary`] per node seen in `received`, ordered by instance id.
pub fn summarize(received: &Received) -> Vec<Summary> {
    let mut nodes: BTreeMap<&str, Summary> = BTreeMap::new();
    for span in &received.spans {
        let summary = node(&mut nodes, &span.instance, &span.service);
        summary.span_count += 1;
        if span.status_code == ERROR_STATUS {
            summary.error_spans += 1;
        }
        *summary.spans.entry(span.name.clone()).or_default() += 1;
    }
    for log in &received.logs {
        let summary = node(&mut nodes, &log.instance, &log.service);
        summary.log_count += 1;
        let severity = severity_name(log.severity_number, &log.severity_text);
        *summary.logs_by_severity.entry(severity).or_default() += 1;
    }
    let mut series: BTreeMap<(&str, &str), BTreeMap<String, &MetricPoint>> = BTreeMap::new();
    for point in &received.metrics {
        let summary = node(&mut nodes, &point.instance, &point.service);
        summary.metric_point_count += 1;
        let metric = summary.metrics.entry(point.name.clone()).or_default();
        metric.points += 1;
        if metric.points == 1 || point.time_unix_nanos >= metric.latest_time_unix_nanos {
            metric.kind.clone_from(&point.kind);
            metric.unit.clone_from(&point.unit);
            metric.latest = point.value;
            metric.latest_count = point.count;
            metric.latest_time_unix_nanos = point.time_unix_nanos;
        }
        // Attribute maps are ordered, so their JSON text identifies a series.
        let key = serde_json::to_string(&point.attributes).unwrap_or_default();
        let latest = series.entry((&point.instance, &point.name)).or_default();
        match latest.get(&key) {
            Some(seen) if seen.time_unix_nanos > point.time_unix_nanos => {}
            _ => {
                latest.insert(key, point);
            }
        }
    }
    for ((instance, name), latest) in series {
        if let Some(metric) = nodes
            .get_mut(instance)
            .and_then(|summary| summary.metrics.get_mut(name))
        {
            metric.series = u64::try_from(latest.len()).unwrap_or(u64::MAX);
            metric.latest_sum = latest.values().map(|point| point.value).sum();
        }
    }
    nodes.into_values().collect()
}

/// The summary of `instance`, created on first sight, noting `service`.
fn node<'m, 'k>(
    nodes: &'m mut BTreeMap<&'k str, Summary>,
    instance: &'k str,
    service: &str,
) -> &'m mut Summary {
    let summary = nodes.entry(instance).or_insert_with(|| Summary {
        instance: instance.to_owned(),
        ..Summary::default()
    });
    if !summary.services.contains(service) {
        summary.services.insert(service.to_owned());
    }
    summary
}

/// The OTLP status code of a failed span.
const ERROR_STATUS: i32 = 2;

/// The severity bucket of a log record.
fn severity_name(number: i32, text: &str) -> String {
    let name = match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ if !text.is_empty() => return text.to_owned(),
        _ => "UNSPECIFIED",
    };
    name.to_owned()
}

/// All summaries as text, one table block per node.
pub fn render_text(summaries: &[Summary]) -> String {
    if summaries.is_empty() {
        return "no telemetry received\n".to_owned();
    }
    summaries
        .iter()
        .map(Summary::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let instance = if self.instance.is_empty() {
            "(no service.instance.id)"
        } else {
            &self.instance
        };
        let services: Vec<&str> = self.services.iter().map(String::as_str).collect();
        writeln!(
            f,
            "== node {instance} (service {}) — spans {} (errors {}), metric points {}, logs {}",
            services.join(", "),
            self.span_count,
            self.error_spans,
            self.metric_point_count,
            self.log_count,
        )?;
        if !self.spans.is_empty() {
            let rows = self
                .spans
                .iter()
                .map(|(name, count)| vec![name.clone(), count.to_string()]);
            table(f, &["SPAN", "COUNT"], rows)?;
        }
        if !self.metrics.is_empty() {
            let rows = self.metrics.iter().map(|(name, m)| {
                let count = match m.kind.as_str() {
                    "sum" | "gauge" => String::new(),
                    _ => m.latest_count.to_string(),
                };
                vec![
                    name.clone(),
                    m.kind.clone(),
                    m.unit.clone(),
                    m.series.to_string(),
                    m.latest.to_string(),
                    m.latest_sum.to_string(),
                    count,
                ]
            });
            let header = [
                "METRIC",
                "KIND",
                "UNIT",
                "SERIES",
                "LATEST",
                "LATEST_SUM",
                "COUNT",
            ];
            table(f, &header, rows)?;
        }
        if !self.logs_by_severity.is_empty() {
            let rows = self
                .logs_by_severity
                .iter()
                .map(|(severity, count)| vec![severity.clone(), count.to_string()]);
            table(f, &["LOG SEVERITY", "COUNT"], rows)?;
        }
        Ok(())
    }
}

/// Writes an indented table: the first column left-aligned, the others right-aligned.
fn table(
    f: &mut fmt::Formatter<'_>,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> fmt::Result {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::from("  ");
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if column == 0 {
                let _ = write!(line, "{cell:<width$}");
            } else {
                let _ = write!(line, "  {cell:>width$}");
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{LogRecord, SpanRecord, Value};

    fn received() -> Received {
        let span = |instance: &str, name: &str, status_code: i32| SpanRecord {
            service: "trellis".into(),
            instance: instance.into(),
            name: name.into(),
            status_code,
            ..SpanRecord::default()
        };
        let point = |peer: &str, value: f64, time: u64| MetricPoint {
            service: "trellis".into(),
            instance: "n1".into(),
            name: "trellis.messages".into(),
            unit: "{message}".into(),
            kind: "sum".into(),
            attributes: [("peer".to_owned(), Value::from(peer))].into(),
            value,
            time_unix_nanos: time,
            ..MetricPoint::default()
        };
        let log = |severity_number: i32, severity_text: &str| LogRecord {
            service: "trellis".into(),
            instance: "n2".into(),
            severity_number,
            severity_text: severity_text.into(),
            ..LogRecord::default()
        };
        Received {
            spans: [
                span("n1", "route.compute", 0),
                span("n1", "route.compute", 2),
                span("n2", "peer.connect", 0),
            ]
            .into(),
            metrics: [point("a", 1.0, 1), point("b", 5.0, 2), point("a", 3.0, 3)].into(),
            logs: [log(9, "INFO"), log(17, ""), log(0, "custom"), log(0, "")].into(),
            ..Received::default()
        }
    }

    #[test]
    fn nodes_are_summarized_separately() {
        let summaries = summarize(&received());
        assert_eq!(summaries.len(), 2);
        let n1 = &summaries[0];
        assert_eq!(n1.instance, "n1");
        assert_eq!((n1.span_count, n1.error_spans), (2, 1));
        assert_eq!(n1.spans["route.compute"], 2);
        let messages = &n1.metrics["trellis.messages"];
        assert_eq!((messages.points, messages.series), (3, 2));
        assert_eq!((messages.latest, messages.latest_sum), (3.0, 8.0));
        let n2 = &summaries[1];
        let severities: Vec<(&str, u64)> = n2
            .logs_by_severity
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            severities,
            [("ERROR", 1), ("INFO", 1), ("UNSPECIFIED", 1), ("custom", 1)]
        );
        assert_eq!(n2.services.iter().collect::<Vec<_>>(), ["trellis"]);
    }

    #[test]
    fn the_text_has_a_block_per_node_and_the_json_round_trips() {
        let summaries = summarize(&received());
        let text = render_text(&summaries);
        assert!(text.contains("== node n1 (service trellis)"), "{text}");
        assert!(text.contains("== node n2 (service trellis)"), "{text}");
        assert!(text.contains("route.compute"), "{text}");
        assert!(text.contains("trellis.messages"), "{text}");
        let json = serde_json::to_string(&summaries).expect("serialize");
        let back: Vec<Summary> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, summaries);
        assert_eq!(render_text(&[]), "no telemetry received\n");
    }
}
