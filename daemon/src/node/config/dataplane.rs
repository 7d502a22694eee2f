//! The `[dataplane]` section of `trellis.toml`: limits of the data plane and its allow
//! rules (`[[dataplane.allow]]`).
//!
//! ```toml
//! [dataplane]
//! max_streams_per_peer = 256
//! max_streams_per_service = 1024
//! idle_timeout = "5m"
//! max_hops = 16
//! stream_window = 524288
//! connect_timeout = "5s"
//!
//! [[dataplane.allow]]          # without any rule: the own org may reach everything
//! services = ["web.acme", "*.eu.acme"]
//! from = ["globex", "initech/gw-1"]
//! ```

use serde::Deserialize;
use toml::Spanned;
use trellis_policy::access::{AccessRules, AllowRule, Principal, Services};

use super::{ConfigError, Int, Source, Text, ANY_POSITIVE};
use crate::dataplane::Settings;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataplane {
    max_streams_per_peer: Int,
    max_streams_per_service: Int,
    idle_timeout: Text,
    max_hops: Int,
    stream_window: Int,
    connect_timeout: Text,
    allow: Option<Vec<RawAllow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    services: Vec<Spanned<String>>,
    from: Vec<Spanned<String>>,
}

/// Smallest and largest per-stream QUIC window: below 16 KiB a stream crawls; above
/// 16 MiB one peer could make the node buffer gigabytes.
const STREAM_WINDOW: std::ops::RangeInclusive<i64> = 16 * 1024..=16 * 1024 * 1024;

pub(super) fn dataplane(src: &Source<'_>, raw: &RawDataplane) -> Result<Settings, ConfigError> {
    let d = Settings::default();
    let duration = |v: &Text, default| match v {
        Some(v) => src.duration(v),
        None => Ok(default),
    };
    let positive = |v: &Text, key: &str, default| -> Result<std::time::Duration, ConfigError> {
        let t = duration(v, default)?;
        match v {
            Some(v) if t.is_zero() => Err(src.at(v.span(), format!("{key} must be more than 0s"))),
            _ => Ok(t),
        }
    };
    let allow = raw
        .allow
        .as_ref()
        .map(|rules| rules.iter().map(|r| allow_rule(src, r)).collect())
        .transpose()?
        .map(AccessRules::new);
    Ok(Settings {
        max_streams_per_peer: src.int_or(
            &raw.max_streams_per_peer,
            "max_streams_per_peer",
            1..=65_536,
            d.max_streams_per_peer,
        )?,
        max_streams_per_service: src.int_or(
            &raw.max_streams_per_service,
            "max_streams_per_service",
            ANY_POSITIVE,
            d.max_streams_per_service,
        )?,
        idle_timeout: positive(&raw.idle_timeout, "idle_timeout", d.idle_timeout)?,
        max_hops: src.int_or(&raw.max_hops, "max_hops", 1..=255, d.max_hops)?,
        stream_window: src.int_or(
            &raw.stream_window,
            "stream_window",
            STREAM_WINDOW,
            d.stream_window,
        )?,
        connect_timeout: positive(&raw.connect_timeout, "connect_timeout", d.connect_timeout)?,
        allow,
    })
}

fn allow_rule(src: &Source<'_>, raw: &RawAllow) -> Result<AllowRule, ConfigError> {
    let at = |v: &Spanned<String>, why: String| src.at(v.span(), why);
    if raw.services.is_empty() || raw.from.is_empty() {
        return Err(src.whole(
            "every [[dataplane.allow]] rule needs at least one service and one principal in `from`",
        ));
    }
    Ok(AllowRule {
        services: raw
            .services
            .iter()
            .map(|s| Services::parse(s.get_ref()).map_err(|e| at(s, e)))
            .collect::<Result<_, _>>()?,
        from: raw
            .from
            .iter()
            .map(|p| Principal::parse(p.get_ref()).map_err(|e| at(p, e)))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trellis_routing::{NodeId, ServiceName};

    use crate::node::config::tests::parse_text as parse;

    #[test]
    fn the_section_sets_limits_and_rules() {
        let c = parse(
            "listen = \"127.0.0.1:1\"\n[dataplane]\nmax_streams_per_peer = 4\nidle_timeout = \"30s\"\n\
             [[dataplane.allow]]\nservices = [\"web.acme\"]\nfrom = [\"globex\"]\n",
        )
        .expect("valid");
        assert_eq!(c.dataplane.max_streams_per_peer, 4);
        assert_eq!(c.dataplane.idle_timeout, Duration::from_secs(30));
        let rules = c.dataplane.allow.expect("rules");
        let web = ServiceName::new("web.acme").expect("name");
        assert!(rules
            .decide(&NodeId::new("globex/g").expect("id"), &web)
            .allowed());
        assert!(!rules
            .decide(&NodeId::new("acme/a").expect("id"), &web)
            .allowed());
    }

    #[test]
    fn no_section_means_defaults_and_an_empty_list_allows_nothing() {
        let c = parse("listen = \"127.0.0.1:1\"\n").expect("valid");
        assert_eq!(c.dataplane, crate::dataplane::Settings::default());
        let none = parse("listen = \"127.0.0.1:1\"\n[dataplane]\nallow = []\n").expect("valid");
        assert_eq!(none.dataplane.allow.map(|a| a.rules().len()), Some(0));
    }

    #[test]
    fn bad_values_are_refused_at_their_place() {
        let bad = |extra: &str| {
            parse(&format!("listen = \"127.0.0.1:1\"\n[dataplane]\n{extra}")).expect_err(extra)
        };
        assert_eq!(
            bad("stream_window = 10\n"),
            "trellis.toml:3:17: stream_window must be in 16384..=16777216, got 10"
        );
        assert!(bad("idle_timeout = \"0s\"\n").contains("idle_timeout must be more than 0s"));
        assert!(bad("max_hops = 300\n").contains("max_hops must be in 1..=255"));
        assert!(
            bad("[[dataplane.allow]]\nservices = [\"web.acme\"]\nfrom = [\"Globex\"]\n")
                .starts_with("trellis.toml:5:")
        );
        assert!(
            bad("[[dataplane.allow]]\nservices = []\nfrom = [\"globex\"]\n")
                .contains("at least one service")
        );
        assert!(bad("unknown = 1\n").contains("unknown"));
    }
}
