//! The `[telemetry]` section of `trellis.toml`: where the node exports OTLP traces,
//! metrics and logs (docs/operations.md, "Telemetry"). Without `endpoint` nothing is
//! exported. The `OTEL_*` variables override each key.
//!
//! ```toml
//! [telemetry]
//! endpoint = "http://127.0.0.1:4317"   # an OpenTelemetry collector
//! protocol = "grpc"                     # or "http/protobuf" (port 4318 by convention)
//! headers = { "api-key" = "..." }       # sent with every export; never logged
//! service_name = "trellisd"             # service.instance.id is the node id
//! export_interval = "10s"               # metrics
//! timeout = "10s"                       # one export
//! traces = true                         # each signal can be turned off
//! metrics = true
//! logs = true
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source, Text};
use crate::telemetry::{check_endpoint, Protocol, Settings};

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    endpoint: Text,
    protocol: Text,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    service_name: Text,
    export_interval: Text,
    timeout: Text,
    traces: Option<bool>,
    metrics: Option<bool>,
    logs: Option<bool>,
}

pub(super) fn telemetry(src: &Source<'_>, raw: &RawTelemetry) -> Result<Settings, ConfigError> {
    let mut s = Settings::off("");
    if let Some(e) = &raw.endpoint {
        s.endpoint = Some(check_endpoint(e.get_ref()).map_err(|why| src.at(e.span(), why))?);
    }
    if let Some(p) = &raw.protocol {
        s.protocol = Protocol::parse(p.get_ref()).map_err(|why| src.at(p.span(), why))?;
    }
    for (key, value) in &raw.headers {
        let parsed = crate::telemetry::parse_headers(&format!("{key}=x"));
        if parsed.is_err() || value.get_ref().contains(['\r', '\n']) {
            return Err(src.at(
                value.span(),
                format!("header {key:?}: a name of letters, digits, - and _, and a one-line value"),
            ));
        }
        s.headers
            .insert(key.to_ascii_lowercase(), value.get_ref().clone());
    }
    if let Some(name) = &raw.service_name {
        if name.get_ref().trim().is_empty() {
            return Err(src.at(name.span(), "service_name is empty"));
        }
        s.service_name = name.get_ref().trim().to_owned();
    }
    for (slot, text) in [
        (&mut s.interval, &raw.export_interval),
        (&mut s.timeout, &raw.timeout),
    ] {
        if let Some(t) = text {
            let d = src.duration(t)?;
            if d.is_zero() {
                return Err(src.at(t.span(), "must be above 0"));
            }
            *slot = d;
        }
    }
    s.signals.traces = raw.traces.unwrap_or(true);
    s.signals.metrics = raw.metrics.unwrap_or(true);
    s.signals.logs = raw.logs.unwrap_or(true);
    Ok(s)
}
