//! The daemon's log on stderr: human text (the default) or one JSON object per line for
//! log shippers (`trellisd --log-format json`). JSON lines carry the OpenTelemetry trace
//! and span ids of the span they were written in, so a log line can be joined with the
//! trace that a receiver holds; ids appear only while spans are exported (telemetry on).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-12-02T10:00:00Z  INFO session{peer=acme/n2}: session up`.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","message":"session up","trace_id":…}`.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Writes each event as one JSON object: `timestamp` (RFC 3339, ms), `level`, `target`,
/// `message`, `fields` (the event's other fields), `spans` (outermost first, with their
/// fields), and `trace_id`/`span_id` when the event happened inside an exported span.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert("level".into(), Value::String(meta.level().as_str().into()));
        line.insert("target".into(), Value::String(meta.target().into()));
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.insert(
            "message".into(),
            Value::String(fields.message.take().unwrap_or_default()),
        );
        if !fields.map.is_empty() {
            line.insert("fields".into(), Value::Object(fields.map));
        }
        if let Some(scope) = ctx.event_scope() {
            let mut spans = Vec::new();
            for span in scope.from_root() {
                let mut entry = Map::new();
                entry.insert("name".into(), Value::String(span.name().into()));
                let extensions = span.extensions();
                if let Some(stored) = extensions.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(stored) {
                        entry.extend(map);
                    }
                }
                spans.push(Value::Object(entry));
            }
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Array(spans));
            }
        }
        if let Some((trace_id, span_id)) = super::trace_context::current_ids() {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Now as RFC 3339 with milliseconds, UTC.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = crate::util::time::rfc3339(now.as_secs());
    let millis = now.subsec_millis();
    match secs.strip_suffix('Z') {
        Some(base) => format!("{base}.{millis:03}Z"),
        None => secs,
    }
}

/// An event's fields as JSON values; `message` kept apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    map: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.map.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert!(LogFormat::parse("yaml").is_err());
    }

    #[test]
    fn timestamps_carry_milliseconds() {
        let t = timestamp();
        assert!(t.ends_with('Z') && t.contains('.'), "{t}");
        assert_eq!(t.len(), "2026-12-02T10:00:00.000Z".len(), "{t}");
    }
}
