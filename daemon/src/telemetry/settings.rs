//! What the exporter is told: the `[telemetry]` section of a node's `trellis.toml`, the
//! `OTEL_*` variables of the OpenTelemetry specification, and the daemon's own identity
//! (service name and instance). Pure values and parsing; nothing here opens a socket.
//!
//! Precedence, lowest first: built-in defaults, the config file, then the `OTEL_*`
//! environment (as `TRELLIS_*` variables override the file elsewhere in the daemon).
//! Without an endpoint nothing is exported: no exporter, no OpenTelemetry layer, no
//! metric reader is built, so a daemon without telemetry pays nothing for it.

use std::collections::BTreeMap;
use std::time::Duration;

/// How spans, metrics and logs travel to the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (HTTP/2), default port 4317.
    Grpc,
    /// OTLP over HTTP/1.1 with protobuf bodies, default port 4318.
    HttpProtobuf,
}

impl Protocol {
    /// The name the specification gives it (`grpc`, `http/protobuf`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// Parses a name from a config file or `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" | "http" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err("OTLP http/json is not supported: use grpc or http/protobuf".into()),
            other => Err(format!(
                "unknown OTLP protocol {other:?}: use grpc or http/protobuf"
            )),
        }
    }
}

/// Which signals are exported (all three by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// Spans.
    pub traces: bool,
    /// Metrics.
    pub metrics: bool,
    /// Log records (besides the text or JSON log on stderr).
    pub logs: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            traces: true,
            metrics: true,
            logs: true,
        }
    }
}

/// The exporter's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Base URL of the receiver (`http://127.0.0.1:4317`); `None`: export nothing.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: Protocol,
    /// Extra request headers (for example an API key of a hosted backend). Their values
    /// are secrets: never logged, never shown by `status`.
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the resource.
    pub service_name: String,
    /// `service.instance.id` (the node id, or `authority.ORG`).
    pub instance: String,
    /// How often metrics are exported.
    pub interval: Duration,
    /// How long one export may take before it counts as failed.
    pub timeout: Duration,
    /// Which signals.
    pub signals: Signals,
}

/// Default `service.name`.
pub const SERVICE_NAME: &str = "trellisd";
/// Default metric export interval (the specification's 60 s is too coarse for routing).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Settings {
    /// Nothing configured: no export, for `instance`.
    pub fn off(instance: &str) -> Self {
        Self {
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            service_name: SERVICE_NAME.into(),
            instance: instance.into(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            signals: Signals::default(),
        }
    }

    /// Whether anything is exported.
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
            && (self.signals.traces || self.signals.metrics || self.signals.logs)
    }

    /// Applies the `OTEL_*` variables that `var` returns (the process environment in the
    /// daemon, a map in tests). An invalid value is an error naming the variable.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            self.endpoint = None;
            return Ok(());
        }
        if let Some(endpoint) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = Some(
                check_endpoint(&endpoint)
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?,
            );
        }
        if let Some(protocol) = get("OTEL_EXPORTER_OTLP_PROTOCOL") {
            self.protocol = Protocol::parse(&protocol)
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_PROTOCOL: {e}"))?;
        }
        if let Some(headers) = get("OTEL_EXPORTER_OTLP_HEADERS") {
            self.headers.extend(
                parse_headers(&headers).map_err(|e| format!("OTEL_EXPORTER_OTLP_HEADERS: {e}"))?,
            );
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            self.service_name = name.trim().to_owned();
        }
        if let Some(ms) = get("OTEL_METRIC_EXPORT_INTERVAL") {
            self.interval = millis(&ms).map_err(|e| format!("OTEL_METRIC_EXPORT_INTERVAL: {e}"))?;
        }
        if let Some(ms) = get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            self.timeout = millis(&ms).map_err(|e| format!("OTEL_EXPORTER_OTLP_TIMEOUT: {e}"))?;
        }
        for (name, slot) in [
            ("OTEL_TRACES_EXPORTER", &mut self.signals.traces),
            ("OTEL_METRICS_EXPORTER", &mut self.signals.metrics),
            ("OTEL_LOGS_EXPORTER", &mut self.signals.logs),
        ] {
            if let Some(value) = get(name) {
                *slot = match value.trim() {
                    "none" => false,
                    "otlp" => true,
                    other => {
                        return Err(format!(
                            "{name}: {other:?} is not supported: use otlp or none"
                        ))
                    }
                };
            }
        }
        Ok(())
    }

    /// The URL a signal is posted to: the endpoint as given for gRPC; for HTTP the
    /// endpoint with `/v1/traces`, `/v1/metrics` or `/v1/logs` appended (as the
    /// specification does for `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn signal_url(&self, signal: &str) -> Option<String> {
        let base = self.endpoint.as_deref()?;
        Some(match self.protocol {
            Protocol::Grpc => base.to_owned(),
            Protocol::HttpProtobuf => format!("{}/v1/{signal}", base.trim_end_matches('/')),
        })
    }
}

/// Checks that `text` is an `http://` or `https://` URL with a host.
pub fn check_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("{text:?} is not a URL: write http://HOST:PORT"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
        return Err(format!("{text:?} has no host: write http://HOST:PORT"));
    }
    Ok(text.to_owned())
}

/// Parses `key=value,key2=value2` (values percent-decoded, as the specification says).
pub fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| "each header is KEY=VALUE, separated by commas".to_owned())?;
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("{key:?} is not a header name"));
        }
        out.insert(key.to_ascii_lowercase(), percent_decode(value.trim())?);
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a header value has a bad %-escape".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a header value is not UTF-8 after %-decoding".to_owned())
}

fn millis(text: &str) -> Result<Duration, String> {
    let ms: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of milliseconds"))?;
    if ms == 0 {
        return Err("must be at least 1 ms".into());
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported() {
        let mut s = Settings::off("acme/n1");
        s.apply_env(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]))
            .unwrap();
        assert!(!s.enabled());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut s = Settings::off("acme/n1");
        s.endpoint = Some("http://127.0.0.1:1".into());
        s.apply_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%3Dcret, X-Team=routing",
            ),
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ]))
        .unwrap();
        assert!(s.enabled());
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.headers["api-key"], "s=cret");
        assert_eq!(s.headers["x-team"], "routing");
        assert_eq!(s.service_name, "edge");
        assert_eq!(s.interval, Duration::from_millis(250));
        assert!(!s.signals.logs && s.signals.traces);
        assert_eq!(
            s.signal_url("metrics").as_deref(),
            Some("http://127.0.0.1:4318/v1/metrics")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
        ] {
            let mut s = Settings::off("acme/n1");
            let err = s.apply_env(env(&[(name, value)])).unwrap_err();
            assert!(err.starts_with(name), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn sdk_disabled_turns_export_off() {
        let mut s = Settings::off("acme/n1");
        s.endpoint = Some("http://127.0.0.1:4317".into());
        s.apply_env(env(&[("OTEL_SDK_DISABLED", "true")])).unwrap();
        assert!(!s.enabled());
    }
}
