//! Tests of `trellis.toml`: defaults, the example, env overrides, and that every refusal
//! names the right file, line and reason. The helpers are shared with the peering tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use trellis_routing::{NodeId, OrgId};

use super::*;

pub(crate) fn acme() -> OrgId {
    OrgId::new("acme").unwrap()
}

fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(text, Path::new("/etc/trellis/trellis.toml"), &acme())
}

/// Parses `text` as `trellis.toml` of an acme node; the error as its one line.
pub(crate) fn parse_text(text: &str) -> Result<NodeConfig, String> {
    NodeConfig::parse(text, Path::new("trellis.toml"), &acme()).map_err(|e| e.to_string())
}

/// The line of a located error and its one-line message.
pub(crate) fn refusal(result: Result<impl std::fmt::Debug, ConfigError>) -> (usize, String) {
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "message spans lines: {msg:?}");
    match err {
        ConfigError::At { line, .. } => (line, msg),
        other => panic!("expected a located error, got {other:?}"),
    }
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "trellis-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn ca_pem(org: &str) -> String {
    let key = crate::pki::generate_key().unwrap();
    let der = crate::pki::ca_certificate(&OrgId::new(org).unwrap(), &key, 1_800_000_000).unwrap();
    crate::pki::der_to_pem(&der)
}

#[test]
fn defaults_apply_when_only_listen_is_set() {
    let c = parse("listen = \"127.0.0.1:7201\"\n").unwrap();
    assert_eq!(c, NodeConfig::minimal("127.0.0.1:7201".parse().unwrap()));
    assert_eq!(c.timers.hold_time, Duration::from_secs(9));
    assert_eq!(c.timers.keepalive, Duration::from_secs(3));
    assert_eq!(c.timers.mrai, Duration::from_millis(50));
    assert_eq!(c.limits.max_routes_per_peer, 100_000);
    assert!(c.peering_dir.is_none() && c.peers.is_empty());
}

#[test]
fn keepalive_defaults_to_a_third_of_hold_time() {
    let c = parse("listen = \"127.0.0.1:1\"\n[timers]\nhold_time = \"30s\"\n").unwrap();
    assert_eq!(c.timers.keepalive, Duration::from_secs(10));
    let off = parse("listen = \"127.0.0.1:1\"\n[timers]\nhold_time = \"0s\"\n").unwrap();
    assert_eq!(off.timers.keepalive, Duration::ZERO);
}

#[test]
fn example_node_config_sets_every_key() {
    let file = manifest_dir().join("../examples/config/trellis.toml");
    let c = NodeConfig::load(&file, &acme()).unwrap();
    assert_eq!(c.listen, "127.0.0.1:7201".parse().unwrap());
    assert_eq!(c.peering_dir, Some(file.parent().unwrap().join("peerings")));
    assert_eq!(c.timers, Timers::default());
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.peers.len(), 2);
    let sel = c.selection.as_ref().expect("[selection]");
    assert_eq!(
        (sel.selector.min_active, sel.selector.max_active, sel.round),
        (3, 5, Duration::from_secs(2))
    );
    assert_eq!(sel.advertise, Some("127.0.0.1:7201".parse().unwrap()));
    assert_eq!(sel.bootstrap.len(), 1);
    let b = &c.peers[0];
    assert_eq!(b.node_id, NodeId::new("acme/b").unwrap());
    assert_eq!(
        (b.link_cost, b.local_pref, b.max_routes, b.passive),
        (10, 100, 50_000, false)
    );
    assert_eq!(b.trust, 100);
    let c2 = &c.peers[1];
    assert_eq!((c2.max_routes, c2.passive), (100_000, true));
    let d = &c.dataplane;
    let defaults = crate::dataplane::Settings::default();
    assert_eq!(
        crate::dataplane::Settings {
            allow: None,
            ..d.clone()
        },
        defaults
    );
    assert_eq!(d.allow.as_ref().map(|a| a.rules().len()), Some(2));
    assert_eq!(c.scoring, super::Scoring::default());
}

#[test]
fn full_file_overrides_every_default() {
    let c = parse(
        r#"listen = "[::1]:9000"
peering_dir = "/srv/peerings"
[timers]
hold_time = "30s"
keepalive = "5s"
mrai = "250ms"
graceful_restart = "2m"
connect_retry_min = "1s"
connect_retry_max = "1h"
send_hold = "1d"
[limits]
max_routes_per_peer = 7
max_peers = 3
max_path_len = 9
[[peer]]
address = "10.0.0.2:7201"
node_id = "acme/b"
link_cost = 65535
local_pref = 0
"#,
    )
    .unwrap();
    let t = &c.timers;
    assert_eq!(t.hold_time, Duration::from_secs(30));
    assert_eq!(t.keepalive, Duration::from_secs(5));
    assert_eq!(t.mrai, Duration::from_millis(250));
    assert_eq!(t.graceful_restart, Duration::from_secs(120));
    assert_eq!(t.connect_retry_max, Duration::from_secs(3600));
    assert_eq!(t.send_hold, Duration::from_secs(86_400));
    assert_eq!(c.peering_dir, Some(PathBuf::from("/srv/peerings")));
    assert_eq!((c.limits.max_peers, c.limits.max_path_len), (3, 9));
    assert_eq!(
        c.peers[0].max_routes, 7,
        "peer max_routes defaults to the limit"
    );
    assert_eq!((c.peers[0].link_cost, c.peers[0].local_pref), (65_535, 0));
}

#[test]
fn peer_outside_own_org_is_refused_at_its_line() {
    let (line, msg) = refusal(parse(
        "listen = \"127.0.0.1:1\"\n\n[[peer]]\naddress = \"127.0.0.1:2\"\nnode_id = \"acme2/x\"\n",
    ));
    assert_eq!(line, 5);
    assert_eq!(
        msg,
        "/etc/trellis/trellis.toml:5:11: peer acme2/x is not in this node's org acme; \
         partners go in a peering config"
    );
}

#[test]
fn each_validation_error_points_at_the_offending_line() {
    let peer = |n: &str, a: &str| format!("[[peer]]\naddress = \"{a}\"\nnode_id = \"{n}\"\n");
    let cases: Vec<(String, usize, &str)> = vec![
        ("listen = \"nowhere\"\n".into(), 1, "listen \"nowhere\" is not an IP:port"),
        (
            format!("listen = \"127.0.0.1:1\"\n{}", peer("Acme/B", "127.0.0.1:2")),
            4,
            "invalid label",
        ),
        (
            format!(
                "listen = \"127.0.0.1:1\"\n{}{}",
                peer("acme/b", "127.0.0.1:2"),
                peer("acme/b", "127.0.0.1:3")
            ),
            7,
            "peer acme/b is listed twice",
        ),
        (
            format!(
                "listen = \"127.0.0.1:1\"\n{}{}",
                peer("acme/b", "127.0.0.1:2"),
                peer("acme/c", "127.0.0.1:2")
            ),
            6,
            "address 127.0.0.1:2 is used by two peers",
        ),
        (
            "listen = \"127.0.0.1:1\"\n[timers]\nhold_time = \"2s\"\n".into(),
            3,
            "hold_time must be 0s or at least 3s",
        ),
        (
            "listen = \"127.0.0.1:1\"\n[timers]\nhold_time = \"6s\"\nkeepalive = \"6s\"\n".into(),
            4,
            "keepalive must be more than 0s and less than hold_time",
        ),
        (
            "listen = \"127.0.0.1:1\"\n[timers]\nkeepalive = \"10s\"\n".into(),
            3,
            "less than hold_time (9s)",
        ),
        (
            "listen = \"127.0.0.1:1\"\n[timers]\nconnect_retry_min = \"5s\"\nconnect_retry_max = \"1s\"\n"
                .into(),
            3,
            "connect_retry_min (5s) must not exceed connect_retry_max (1s)",
        ),
        (
            "listen = \"127.0.0.1:1\"\n[timers]\nmrai = \"fast\"\n".into(),
            3,
            "invalid duration \"fast\"",
        ),
        (
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_peers = 1\nmax_path_len = 0\n".into(),
            4,
            "max_path_len must be in 1..=255, got 0",
        ),
        (
            format!("listen = \"127.0.0.1:1\"\n{}link_cost = 0\n", peer("acme/b", "127.0.0.1:2")),
            5,
            "link_cost must be in 1..=65535, got 0",
        ),
        (
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_peers = \"many\"\n".into(),
            3,
            "invalid type",
        ),
    ];
    for (text, want_line, want_reason) in cases {
        let (line, msg) = refusal(parse(&text));
        assert_eq!(line, want_line, "{msg}\n---\n{text}");
        assert!(msg.contains(want_reason), "{msg:?} lacks {want_reason:?}");
        assert!(msg.starts_with("/etc/trellis/trellis.toml:"), "{msg}");
    }
}

#[test]
fn unknown_keys_are_rejected_at_their_line() {
    for (text, want_line) in [
        ("listen = \"127.0.0.1:1\"\nlisten_port = 7\n", 2),
        ("listen = \"127.0.0.1:1\"\n[timers]\n\nhold = \"9s\"\n", 4),
        ("listen = \"127.0.0.1:1\"\n[[peer]]\naddress = \"127.0.0.1:2\"\nnode_id = \"acme/b\"\ncost = 1\n", 5),
    ] {
        let (line, msg) = refusal(parse(text));
        assert_eq!(line, want_line, "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }
}

#[test]
fn syntax_errors_and_missing_listen_name_the_file() {
    let (line, _) = refusal(parse("listen = \"127.0.0.1:1\"\n[timers\n"));
    assert_eq!(line, 2);
    let msg = parse("[timers]\n").unwrap_err().to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.starts_with("/etc/trellis/trellis.toml"), "{msg}");
    assert!(msg.contains("listen"), "{msg}");
}

#[test]
fn peering_dir_is_relative_to_the_config_file() {
    let c = parse("listen = \"127.0.0.1:1\"\npeering_dir = \"peerings\"\n").unwrap();
    assert_eq!(c.peering_dir, Some(PathBuf::from("/etc/trellis/peerings")));
}

#[test]
fn durations_take_one_unit() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    for bad in [
        "",
        "3",
        "s",
        "1.5s",
        "-1s",
        "3 s",
        "3sec",
        "99999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
    }
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn env_overrides_win_over_the_file() {
    let mut c = parse(
        "listen = \"127.0.0.1:1\"\n[[peer]]\naddress = \"127.0.0.1:2\"\nnode_id = \"acme/b\"\n\
         [[peer]]\naddress = \"127.0.0.1:3\"\nnode_id = \"acme/c\"\nmax_routes = 5\n",
    )
    .unwrap();
    c.apply_env(env(&[
        ("TRELLIS_LISTEN", "0.0.0.0:7999"),
        ("TRELLIS_PEERING_DIR", "/var/peerings"),
        ("TRELLIS_HOLD_TIME", "30s"),
        ("TRELLIS_MRAI", "0ms"),
        ("TRELLIS_GRACEFUL_RESTART", "0s"),
        ("TRELLIS_MAX_ROUTES_PER_PEER", "42"),
        ("TRELLIS_UNRELATED", "x"),
    ]))
    .unwrap();
    assert_eq!(c.listen, "0.0.0.0:7999".parse().unwrap());
    assert_eq!(c.peering_dir, Some(PathBuf::from("/var/peerings")));
    assert_eq!(c.timers.hold_time, Duration::from_secs(30));
    assert_eq!(
        c.timers.keepalive,
        Duration::from_secs(10),
        "derived keepalive follows"
    );
    assert_eq!(
        (c.timers.mrai, c.timers.graceful_restart),
        (Duration::ZERO, Duration::ZERO)
    );
    assert_eq!(c.limits.max_routes_per_peer, 42);
    assert_eq!(c.peers[0].max_routes, 42, "a defaulted peer limit follows");
    assert_eq!(c.peers[1].max_routes, 5, "an explicit peer limit stays");
}

#[test]
fn bad_env_values_name_the_variable() {
    for (var, value, reason) in [
        ("TRELLIS_LISTEN", "localhost", "is not an IP:port address"),
        ("TRELLIS_HOLD_TIME", "9", "invalid duration"),
        (
            "TRELLIS_HOLD_TIME",
            "1s",
            "hold_time must be 0s or at least 3s",
        ),
        ("TRELLIS_MRAI", "soon", "invalid duration"),
        ("TRELLIS_GRACEFUL_RESTART", "2 m", "invalid duration"),
        (
            "TRELLIS_MAX_ROUTES_PER_PEER",
            "0",
            "not a whole number above 0",
        ),
    ] {
        let mut c = NodeConfig::minimal("127.0.0.1:1".parse().unwrap());
        let before = c.clone();
        let msg = c.apply_env(env(&[(var, value)])).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{var}: ")), "{msg}");
        assert!(msg.contains(reason), "{msg:?} lacks {reason:?}");
        assert_eq!(
            c.timers, before.timers,
            "a refused override changes nothing"
        );
    }
    let mut c = parse("listen = \"127.0.0.1:1\"\n[timers]\nkeepalive = \"5s\"\n").unwrap();
    let msg = c
        .apply_env(env(&[("TRELLIS_HOLD_TIME", "4s")]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("TRELLIS_HOLD_TIME: keepalive must be"),
        "{msg}"
    );
}

#[test]
fn a_refused_env_override_leaves_the_whole_config_unchanged() {
    let mut c = NodeConfig::minimal("127.0.0.1:1".parse().unwrap());
    let before = c.clone();
    let vars = env(&[
        ("TRELLIS_LISTEN", "127.0.0.1:2"),
        ("TRELLIS_HOLD_TIME", "30s"),
        ("TRELLIS_MAX_ROUTES_PER_PEER", "lots"),
    ]);
    assert!(c.apply_env(vars).is_err());
    assert_eq!(c, before);
}

#[test]
fn validate_checks_values_set_in_code() {
    let mut c = NodeConfig::minimal("127.0.0.1:1".parse().unwrap());
    assert!(c.validate().is_ok());
    c.timers.set_hold_time(Duration::from_secs(60));
    assert_eq!(c.timers.keepalive, Duration::from_secs(20));
    assert!(c.validate().is_ok());
    c.timers.hold_time = Duration::from_secs(1);
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("hold_time must be"));
    c.timers = Timers::default();
    c.limits.max_peers = 0;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "max_peers must be at least 1"
    );
}

#[test]
fn max_path_len_above_what_the_wire_carries_is_refused_at_its_line() {
    let (line, msg) = refusal(parse(
        "listen = \"127.0.0.1:1\"\n[limits]\nmax_path_len = 256\n",
    ));
    assert_eq!(line, 3, "{msg}");
    assert!(msg.contains("max_path_len"), "{msg}");
    assert!(parse("listen = \"127.0.0.1:1\"\n[limits]\nmax_path_len = 255\n").is_ok());
}

#[test]
fn trust_refresh_is_a_timer_with_an_env_override() {
    let c = parse("listen = \"127.0.0.1:1\"\n[timers]\ntrust_refresh = \"10s\"\n").unwrap();
    assert_eq!(c.timers.trust_refresh, Duration::from_secs(10));
    let mut c = NodeConfig::minimal("127.0.0.1:1".parse().unwrap());
    assert_eq!(c.timers.trust_refresh, Duration::from_secs(60));
    c.apply_env(|k| (k == "TRELLIS_TRUST_REFRESH").then(|| "2s".to_owned()))
        .unwrap();
    assert_eq!(c.timers.trust_refresh, Duration::from_secs(2));
    let err = c
        .apply_env(|k| (k == "TRELLIS_TRUST_REFRESH").then(|| "soon".to_owned()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("TRELLIS_TRUST_REFRESH"), "{err}");
    assert_eq!(c.timers.trust_refresh, Duration::from_secs(2), "unchanged");
}

#[test]
fn a_peering_dir_that_is_not_a_directory_is_refused() {
    let mut c = NodeConfig::minimal("127.0.0.1:1".parse().unwrap());
    c.peering_dir = Some(PathBuf::from("/nonexistent/trellis-peerings"));
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("peering_dir"), "{err}");
    let dir = TempDir::new();
    c.peering_dir = Some(dir.0.clone());
    assert!(c.validate().is_ok());
}

#[test]
fn failure_detection_defaults_to_one_second_and_is_checked() {
    let c = parse("listen = \"127.0.0.1:1\"\n").unwrap();
    assert_eq!(c.timers.detection_time(), Duration::from_secs(1));
    assert_eq!(c.timers.max_routes_restart, Duration::from_secs(60));
    let c = parse(
        "listen = \"127.0.0.1:1\"\n[timers]\ndetect_interval = \"50ms\"\ndetect_multiplier = 4\nmax_routes_restart = \"0s\"\n",
    )
    .unwrap();
    assert_eq!(c.timers.detection_time(), Duration::from_millis(200));
    assert!(c.timers.max_routes_restart.is_zero());
    let (line, msg) = refusal(parse(
        "listen = \"127.0.0.1:1\"\n[timers]\ndetect_interval = \"1ms\"\n",
    ));
    assert_eq!(line, 3, "{msg}");
    assert!(
        msg.contains("detect_interval must be at least 10ms"),
        "{msg}"
    );
    let (line, msg) = refusal(parse(
        "listen = \"127.0.0.1:1\"\n[timers]\ndetect_multiplier = 1\n",
    ));
    assert_eq!(line, 3, "{msg}");
    assert!(
        msg.contains("detect_multiplier must be in 2..=255"),
        "{msg}"
    );
}

#[test]
fn a_peer_may_have_its_own_failure_detection() {
    let text = "listen = \"127.0.0.1:1\"\n[timers]\ndetect_interval = \"100ms\"\n\
                [[peer]]\naddress = \"127.0.0.1:2\"\nnode_id = \"acme/b\"\ndetect_multiplier = 20\n\
                [[peer]]\naddress = \"127.0.0.1:3\"\nnode_id = \"acme/c\"\n";
    let c = parse(text).unwrap();
    assert_eq!(
        c.peers[0].detection,
        Some((Duration::from_millis(100), 20)),
        "the interval comes from [timers]"
    );
    assert_eq!(c.peers[1].detection, None);
    let (line, msg) = refusal(parse(
        "listen = \"127.0.0.1:1\"\n[[peer]]\naddress = \"127.0.0.1:2\"\nnode_id = \"acme/b\"\ndetect_interval = \"5ms\"\n",
    ));
    assert_eq!(line, 5, "{msg}");
    assert!(msg.contains("at least 10ms"), "{msg}");
}

/// The package dir at run time (cargo sets it for tests), so a test binary built from
/// another checkout sharing the target dir reads this checkout's files.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

#[test]
fn a_static_peer_may_start_from_a_lower_trust() {
    let text = "listen = \"127.0.0.1:1\"\n[[peer]]\naddress = \"127.0.0.1:2\"\nnode_id = \"acme/b\"\ntrust = 60\n";
    assert_eq!(parse(text).unwrap().peers[0].trust, 60);
    let bad = parse(&text.replace("60", "101")).unwrap_err().to_string();
    assert!(bad.contains("trust must be in 0..=100"), "{bad}");
}

#[test]
fn telemetry_is_off_without_an_endpoint_and_read_from_its_section() {
    let off = parse("listen = \"127.0.0.1:7201\"\n").unwrap();
    assert!(!off.telemetry.enabled());
    let on = parse(
        "listen = \"127.0.0.1:7201\"\n[telemetry]\nendpoint = \"http://127.0.0.1:4318\"\n\
         protocol = \"http/protobuf\"\nheaders = { \"API-Key\" = \"k\" }\n\
         export_interval = \"250ms\"\nlogs = false\n",
    )
    .unwrap();
    let t = &on.telemetry;
    assert!(t.enabled());
    assert_eq!(t.protocol, crate::telemetry::Protocol::HttpProtobuf);
    assert_eq!(t.headers.get("api-key").map(String::as_str), Some("k"));
    assert_eq!(t.interval, Duration::from_millis(250));
    assert!(t.signals.traces && t.signals.metrics && !t.signals.logs);
}

#[test]
fn bad_telemetry_keys_are_refused_at_their_line() {
    for (text, line, needle) in [
        (
            "[telemetry]\nendpoint = \"127.0.0.1:4317\"\n",
            3,
            "http://HOST:PORT",
        ),
        (
            "[telemetry]\nprotocol = \"http/json\"\n",
            3,
            "not supported",
        ),
        ("[telemetry]\nexport_interval = \"0s\"\n", 3, "above 0"),
        (
            "[telemetry]\nheaders = { \"bad key\" = \"v\" }\n",
            3,
            "header",
        ),
        ("[telemetry]\nendpiont = \"http://x:1\"\n", 3, "endpiont"),
    ] {
        let (at, msg) = refusal(parse(&format!("listen = \"127.0.0.1:7201\"\n{text}")));
        assert_eq!(at, line, "{msg}");
        assert!(msg.contains(needle), "{msg}");
    }
}

#[test]
fn otel_variables_override_the_telemetry_section() {
    let mut c =
        parse("listen = \"127.0.0.1:7201\"\n[telemetry]\nendpoint = \"http://127.0.0.1:1\"\n")
            .unwrap();
    let env: HashMap<&str, &str> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ]
    .into_iter()
    .collect();
    c.apply_env(|k| env.get(k).map(|v| (*v).to_owned()))
        .unwrap();
    assert_eq!(
        c.telemetry.endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert!(!c.telemetry.signals.traces);
    let bad: HashMap<&str, &str> = [("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]
        .into_iter()
        .collect();
    let err = c
        .apply_env(|k| bad.get(k).map(|v| (*v).to_owned()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
    assert_eq!(
        c.telemetry.endpoint.as_deref(),
        Some("http://127.0.0.1:4317"),
        "unchanged"
    );
}
