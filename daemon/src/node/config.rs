//! The node configuration file, `trellis.toml`: listen address, timers, limits and the
//! static peers inside the node's own org (partners live in peering configs, see
//! [`super::peering`]).
//!
//! Contract:
//! * A config is either fully valid or refused with one [`ConfigError`] whose message is a
//!   single line: `FILE:LINE:COL: REASON` for anything located in a file,
//!   `VAR: REASON` for an environment override. Unknown keys are errors.
//! * Layering is file → [`NodeConfig::apply_env`] → command-line flags (the caller sets the
//!   pub fields and may call [`NodeConfig::validate`]). Every layer leaves a config that
//!   satisfies the same rules.
//! * Durations are strings with one unit: `250ms`, `3s`, `2m`, `1h`, `1d`
//!   ([`parse_duration`]).
//! * Nothing here opens sockets or reads anything but the named file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use trellis_routing::{NodeId, OrgId};

mod dataplane;
mod scoring;
mod selection;
mod source;
mod telemetry;

pub use scoring::Scoring;
pub use selection::{role_from_name, role_name, Selection};
pub use source::{parse_duration, ConfigError};
pub(crate) use source::{read_text, Int, Source, Text, ANY_POSITIVE};

/// Default cost of a link to a static peer or partner endpoint.
pub const DEFAULT_LINK_COST: u32 = 10;
/// Default local preference of routes learned from a peer.
pub const DEFAULT_LOCAL_PREF: u32 = 100;
/// Shortest hold time other than 0 (as BGP, RFC 4271 §4.2).
pub const MIN_HOLD_TIME: Duration = Duration::from_secs(3);

/// Session timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Hold time offered in the session open; 0 disables, otherwise at least 3 s.
    pub hold_time: Duration,
    /// Keepalive interval; less than `hold_time` when that is not 0.
    pub keepalive: Duration,
    /// Minimum interval between update batches to one peer.
    pub mrai: Duration,
    /// How long a lost peer's routes stay as stale; 0 withdraws them at once.
    pub graceful_restart: Duration,
    /// First redial delay after a failed connect.
    pub connect_retry_min: Duration,
    /// Largest redial delay (the backoff cap).
    pub connect_retry_max: Duration,
    /// A peer that reads nothing we send for this long is dropped.
    pub send_hold: Duration,
    /// How often the node asks its authority for a newer trust snapshot (and checks
    /// whether its certificate is due for renewal).
    pub trust_refresh: Duration,
    /// Failure detection (as BFD): a QUIC ack-eliciting ping at least this often on every
    /// peer connection...
    pub detect_interval: Duration,
    /// ...and the connection is declared dead after `detect_interval × detect_multiplier`
    /// without a packet from the peer (QUIC's idle timeout).
    pub detect_multiplier: u32,
    /// How long a peer that exceeded its max-routes limit is refused before it may
    /// connect again; doubles with each repeat (0: no hold-off).
    pub max_routes_restart: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            hold_time: Duration::from_secs(9),
            keepalive: Duration::from_secs(3),
            mrai: Duration::from_millis(50),
            graceful_restart: Duration::from_secs(120),
            connect_retry_min: Duration::from_millis(200),
            connect_retry_max: Duration::from_secs(10),
            send_hold: Duration::from_secs(30),
            trust_refresh: Duration::from_secs(60),
            detect_interval: Duration::from_millis(200),
            detect_multiplier: 5,
            max_routes_restart: Duration::from_secs(60),
        }
    }
}

impl Timers {
    /// The rules every timer set must follow; `Err` names the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.hold_time.is_zero() && self.hold_time < MIN_HOLD_TIME {
            return Err((
                "hold_time",
                format!(
                    "hold_time must be 0s or at least 3s, got {:?}",
                    self.hold_time
                ),
            ));
        }
        if !self.hold_time.is_zero()
            && (self.keepalive.is_zero() || self.keepalive >= self.hold_time)
        {
            return Err((
                "keepalive",
                format!(
                    "keepalive must be more than 0s and less than hold_time ({:?}), got {:?}",
                    self.hold_time, self.keepalive
                ),
            ));
        }
        if self.connect_retry_min.is_zero() {
            return Err((
                "connect_retry_min",
                "connect_retry_min must be more than 0s".into(),
            ));
        }
        if self.connect_retry_min > self.connect_retry_max {
            return Err((
                "connect_retry_min",
                format!(
                    "connect_retry_min ({:?}) must not exceed connect_retry_max ({:?})",
                    self.connect_retry_min, self.connect_retry_max
                ),
            ));
        }
        if self.send_hold.is_zero() {
            return Err(("send_hold", "send_hold must be more than 0s".into()));
        }
        if self.trust_refresh < Duration::from_secs(1) {
            return Err(("trust_refresh", "trust_refresh must be at least 1s".into()));
        }
        if self.detect_interval < Duration::from_millis(10) {
            return Err((
                "detect_interval",
                "detect_interval must be at least 10ms".into(),
            ));
        }
        if self.detection_time() > Duration::from_secs(600) {
            return Err((
                "detect_interval",
                "detect_interval × detect_multiplier must be at most 600s".into(),
            ));
        }
        Ok(())
    }

    /// How long a silent peer connection lives: `detect_interval × detect_multiplier`.
    pub fn detection_time(&self) -> Duration {
        self.detect_interval.saturating_mul(self.detect_multiplier)
    }

    /// Sets `hold_time`; a keepalive equal to the old `hold_time / 3` (its default)
    /// becomes the new `hold_time / 3`. Does not validate; see [`Timers::check`].
    pub fn set_hold_time(&mut self, hold_time: Duration) {
        if self.keepalive == self.hold_time / 3 {
            self.keepalive = hold_time / 3;
        }
        self.hold_time = hold_time;
    }
}

/// Resource limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Routes one peer may announce before its session is closed (default per peer).
    pub max_routes_per_peer: usize,
    /// Sessions this node keeps at once.
    pub max_peers: usize,
    /// Longest path accepted on a route.
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_routes_per_peer: 100_000,
            max_peers: 64,
            max_path_len: trellis_routing::route::DEFAULT_MAX_PATH_LEN,
        }
    }
}

/// A peer inside the node's own org, dialled (unless passive) at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticPeer {
    /// Its QUIC (UDP) address.
    pub address: SocketAddr,
    /// Its node id; in the node's own org.
    pub node_id: NodeId,
    /// Cost added to the metric of routes learned over this link, 1..=65535.
    pub link_cost: u32,
    /// Local preference of routes learned from it.
    pub local_pref: u32,
    /// Routes it may announce before its session is closed.
    pub max_routes: usize,
    /// Only accept its connections, never dial it.
    pub passive: bool,
    /// Trust level, 0..=100 (default 100): the baseline its score starts from and
    /// recovers to (ADR 0014).
    pub trust: u32,
    /// Failure detection for this peer's dialed connections: ping interval and
    /// multiplier, when they differ from `[timers]` (QUIC applies the shorter of the two
    /// ends' timeouts).
    pub detection: Option<(Duration, u32)>,
}

/// The node configuration (`trellis.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// UDP address QUIC listens on.
    pub listen: SocketAddr,
    /// Directory of per-partner peering configs, already resolved against the config
    /// file's directory.
    pub peering_dir: Option<PathBuf>,
    /// Session timers.
    pub timers: Timers,
    /// Resource limits.
    pub limits: Limits,
    /// Static peers inside the own org.
    pub peers: Vec<StaticPeer>,
    /// The data plane's limits and allow rules.
    pub dataplane: crate::dataplane::Settings,
    /// How peer measurements become link costs.
    pub scoring: Scoring,
    /// Peer selection inside the org (`None`: only the configured peers).
    pub selection: Option<Selection>,
    /// The Cedar policy file (`[policy] file`), resolved against the config's directory;
    /// `None`: the built-in default policies (docs/adr/0016-cedar-decides.md).
    pub policy_file: Option<PathBuf>,
    /// Where the admin API is also served over QUIC for operators with a token
    /// (`[admin] remote_listen`; docs/adr/0017-operator-tokens.md).
    pub remote_admin: Option<SocketAddr>,
    /// OTLP export (`[telemetry]` and `OTEL_*`); `instance` is filled in with the node
    /// id by whoever knows it.
    pub telemetry: crate::telemetry::Settings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    listen: Spanned<String>,
    peering_dir: Option<Spanned<String>>,
    #[serde(default)]
    timers: RawTimers,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
    #[serde(default)]
    dataplane: dataplane::RawDataplane,
    #[serde(default)]
    scoring: scoring::RawScoring,
    selection: Option<selection::RawSelection>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    telemetry: telemetry::RawTelemetry,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    remote_listen: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    file: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    hold_time: Text,
    keepalive: Text,
    mrai: Text,
    graceful_restart: Text,
    connect_retry_min: Text,
    connect_retry_max: Text,
    send_hold: Text,
    trust_refresh: Text,
    detect_interval: Text,
    detect_multiplier: Int,
    max_routes_restart: Text,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_routes_per_peer: Int,
    max_peers: Int,
    max_path_len: Int,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: Spanned<String>,
    node_id: Spanned<String>,
    link_cost: Int,
    local_pref: Int,
    max_routes: Int,
    passive: Option<bool>,
    trust: Int,
    detect_interval: Text,
    detect_multiplier: Int,
}

impl NodeConfig {
    /// Defaults, no peers, no peering dir: for running without a file.
    pub fn minimal(listen: SocketAddr) -> Self {
        Self {
            listen,
            peering_dir: None,
            timers: Timers::default(),
            limits: Limits::default(),
            peers: Vec::new(),
            dataplane: crate::dataplane::Settings::default(),
            scoring: Scoring::default(),
            selection: None,
            policy_file: None,
            remote_admin: None,
            telemetry: crate::telemetry::Settings::off(""),
        }
    }

    /// Reads and parses `path`; `own_org` is the org the node is enrolled in.
    pub fn load(path: &Path, own_org: &OrgId) -> Result<Self, ConfigError> {
        Self::parse(&read_text(path)?, path, own_org)
    }

    /// Parses `text` as if read from `file` (for messages and to resolve `peering_dir`).
    pub fn parse(text: &str, file: &Path, own_org: &OrgId) -> Result<Self, ConfigError> {
        let src = Source { file, text };
        let raw: RawNode = src.deserialize()?;
        let listen = src.socket_addr(&raw.listen, "listen")?;
        let peering_dir = raw
            .peering_dir
            .as_ref()
            .map(|d| src.relative_path(d, "peering_dir"))
            .transpose()?;
        let timers = timers(&src, &raw.timers)?;
        let limits = limits(&src, &raw.limits)?;
        let mut peers = Vec::with_capacity(raw.peers.len());
        let (mut ids, mut addrs) = (HashSet::new(), HashSet::new());
        for p in &raw.peers {
            let node_id = src.node_id(&p.node_id)?;
            if !node_id.in_org(own_org) {
                return Err(src.at(
                    p.node_id.span(),
                    format!(
                        "peer {node_id} is not in this node's org {own_org}; \
                         partners go in a peering config"
                    ),
                ));
            }
            if !ids.insert(node_id.clone()) {
                return Err(src.at(p.node_id.span(), format!("peer {node_id} is listed twice")));
            }
            let address = src.socket_addr(&p.address, "address")?;
            if !addrs.insert(address) {
                return Err(src.at(
                    p.address.span(),
                    format!("address {address} is used by two peers"),
                ));
            }
            peers.push(StaticPeer {
                address,
                node_id,
                link_cost: src.link_cost(&p.link_cost)?,
                local_pref: src.int_or(
                    &p.local_pref,
                    "local_pref",
                    0..=i64::from(u32::MAX),
                    DEFAULT_LOCAL_PREF,
                )?,
                max_routes: src.int_or(
                    &p.max_routes,
                    "max_routes",
                    ANY_POSITIVE,
                    limits.max_routes_per_peer,
                )?,
                passive: p.passive.unwrap_or(false),
                trust: src.int_or(&p.trust, "trust", 0..=100, 100)?,
                detection: peer_detection(&src, p, &timers)?,
            });
        }
        let dataplane = dataplane::dataplane(&src, &raw.dataplane)?;
        let scoring = scoring::scoring(&src, &raw.scoring)?;
        let selection = raw
            .selection
            .as_ref()
            .map(|s| selection::selection(&src, s, own_org))
            .transpose()?;
        let policy_file = raw
            .policy
            .file
            .as_ref()
            .map(|f| src.relative_path(f, "file"))
            .transpose()?;
        let remote_admin = raw
            .admin
            .remote_listen
            .as_ref()
            .map(|a| src.socket_addr(a, "remote_listen"))
            .transpose()?;
        let telemetry = telemetry::telemetry(&src, &raw.telemetry)?;
        Ok(Self {
            telemetry,
            remote_admin,
            policy_file,
            selection,
            listen,
            peering_dir,
            timers,
            limits,
            peers,
            dataplane,
            scoring,
        })
    }

    /// Applies `TRELLIS_LISTEN`, `TRELLIS_PEERING_DIR`, `TRELLIS_HOLD_TIME`,
    /// `TRELLIS_MRAI`, `TRELLIS_GRACEFUL_RESTART`, `TRELLIS_TRUST_REFRESH` and
    /// `TRELLIS_MAX_ROUTES_PER_PEER` as
    /// returned by `get` (pass `|k| std::env::var(k).ok()`). Empty values are ignored;
    /// `TRELLIS_PEERING_DIR` is taken as given (relative to the working directory).
    ///
    /// Derived values follow their source (see [`Timers::set_hold_time`] and
    /// [`NodeConfig::set_max_routes_per_peer`]). On error nothing is changed.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let bad = |var: &str, reason: String| ConfigError::Env {
            var: var.to_string(),
            reason,
        };
        // Applied to a copy, so a refused override leaves `self` as it was.
        let mut next = self.clone();
        if let Some(v) = var("TRELLIS_LISTEN") {
            next.listen = v
                .trim()
                .parse()
                .map_err(|_| bad("TRELLIS_LISTEN", format!("{v:?} is not an IP:port address")))?;
        }
        if let Some(v) = var("TRELLIS_PEERING_DIR") {
            next.peering_dir = Some(PathBuf::from(v));
        }
        let duration = |name: &str| -> Result<Option<Duration>, ConfigError> {
            var(name)
                .map(|v| parse_duration(&v).map_err(|e| bad(name, e)))
                .transpose()
        };
        if let Some(hold) = duration("TRELLIS_HOLD_TIME")? {
            next.timers.set_hold_time(hold);
            next.timers
                .check()
                .map_err(|(_, why)| bad("TRELLIS_HOLD_TIME", why))?;
        }
        if let Some(d) = duration("TRELLIS_MRAI")? {
            next.timers.mrai = d;
        }
        if let Some(d) = duration("TRELLIS_GRACEFUL_RESTART")? {
            next.timers.graceful_restart = d;
        }
        if let Some(d) = duration("TRELLIS_TRUST_REFRESH")? {
            next.timers.trust_refresh = d;
            next.timers
                .check()
                .map_err(|(_, why)| bad("TRELLIS_TRUST_REFRESH", why))?;
        }
        if let Some(v) = var("TRELLIS_MAX_ROUTES_PER_PEER") {
            let name = "TRELLIS_MAX_ROUTES_PER_PEER";
            let max = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(name, format!("{v:?} is not a whole number above 0")))?;
            next.set_max_routes_per_peer(max);
        }
        next.telemetry
            .apply_env(|name| get(name))
            .map_err(ConfigError::Invalid)?;
        *self = next;
        Ok(())
    }

    /// Sets `limits.max_routes_per_peer`; every static peer whose `max_routes` equalled
    /// the old value (the default it was given) follows. Does not validate.
    pub fn set_max_routes_per_peer(&mut self, max: usize) {
        let old = std::mem::replace(&mut self.limits.max_routes_per_peer, max);
        for p in self.peers.iter_mut().filter(|p| p.max_routes == old) {
            p.max_routes = max;
        }
    }

    /// Checks a config changed in code (after command-line flags) against the rules a
    /// file must follow (timers, limits, static peers' link costs and route limits).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.timers
            .check()
            .map_err(|(_, why)| ConfigError::Invalid(why))?;
        let l = &self.limits;
        for (key, v) in [
            ("max_routes_per_peer", l.max_routes_per_peer),
            ("max_peers", l.max_peers),
            ("max_path_len", l.max_path_len),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        if l.max_path_len > crate::codec::update::MAX_WIRE_PATH_HOPS {
            return Err(ConfigError::Invalid(format!(
                "max_path_len must be at most {}",
                crate::codec::update::MAX_WIRE_PATH_HOPS
            )));
        }
        if let Some(dir) = &self.peering_dir {
            if !dir.is_dir() {
                return Err(ConfigError::Invalid(format!(
                    "peering_dir {}: not a directory",
                    dir.display()
                )));
            }
        }
        for p in &self.peers {
            if !(1..=65_535).contains(&p.link_cost) || p.max_routes == 0 {
                return Err(ConfigError::Invalid(format!(
                    "peer {}: link_cost must be in 1..=65535 and max_routes at least 1",
                    p.node_id
                )));
            }
        }
        Ok(())
    }
}

/// A `[[peer]]`'s own failure detection, checked as `[timers]` is; `None` when it sets
/// neither key.
fn peer_detection(
    src: &Source<'_>,
    p: &RawPeer,
    timers: &Timers,
) -> Result<Option<(Duration, u32)>, ConfigError> {
    if p.detect_interval.is_none() && p.detect_multiplier.is_none() {
        return Ok(None);
    }
    let mut t = timers.clone();
    if let Some(v) = &p.detect_interval {
        t.detect_interval = src.duration(v)?;
    }
    t.detect_multiplier = src.int_or(
        &p.detect_multiplier,
        "detect_multiplier",
        2..=255,
        timers.detect_multiplier,
    )?;
    if let Err((_, why)) = t.check() {
        return Err(match p.detect_interval.as_ref() {
            Some(v) => src.at(v.span(), why),
            None => src.whole(why),
        });
    }
    Ok(Some((t.detect_interval, t.detect_multiplier)))
}

fn timers(src: &Source<'_>, raw: &RawTimers) -> Result<Timers, ConfigError> {
    let d = Timers::default();
    let get = |v: &Text, dflt: Duration| v.as_ref().map_or(Ok(dflt), |v| src.duration(v));
    let hold_time = get(&raw.hold_time, d.hold_time)?;
    let t = Timers {
        hold_time,
        keepalive: get(&raw.keepalive, hold_time / 3)?,
        mrai: get(&raw.mrai, d.mrai)?,
        graceful_restart: get(&raw.graceful_restart, d.graceful_restart)?,
        connect_retry_min: get(&raw.connect_retry_min, d.connect_retry_min)?,
        connect_retry_max: get(&raw.connect_retry_max, d.connect_retry_max)?,
        send_hold: get(&raw.send_hold, d.send_hold)?,
        trust_refresh: get(&raw.trust_refresh, d.trust_refresh)?,
        detect_interval: get(&raw.detect_interval, d.detect_interval)?,
        detect_multiplier: src.int_or(
            &raw.detect_multiplier,
            "detect_multiplier",
            2..=255,
            d.detect_multiplier,
        )?,
        max_routes_restart: get(&raw.max_routes_restart, d.max_routes_restart)?,
    };
    t.check().map_err(|(key, why)| {
        let span = match key {
            "keepalive" => raw.keepalive.as_ref().or(raw.hold_time.as_ref()),
            "connect_retry_min" => raw
                .connect_retry_min
                .as_ref()
                .or(raw.connect_retry_max.as_ref()),
            "hold_time" => raw.hold_time.as_ref(),
            "trust_refresh" => raw.trust_refresh.as_ref(),
            "detect_interval" => raw.detect_interval.as_ref(),
            _ => raw.send_hold.as_ref(),
        };
        match span {
            Some(s) => src.at(s.span(), why),
            None => src.whole(why),
        }
    })?;
    Ok(t)
}

fn limits(src: &Source<'_>, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    Ok(Limits {
        max_routes_per_peer: src.int_or(
            &raw.max_routes_per_peer,
            "max_routes_per_peer",
            ANY_POSITIVE,
            d.max_routes_per_peer,
        )?,
        max_peers: src.int_or(&raw.max_peers, "max_peers", ANY_POSITIVE, d.max_peers)?,
        // Paths travel as a list of at most 255 hops (codec::update::MAX_WIRE_PATH_HOPS).
        max_path_len: src.int_or(&raw.max_path_len, "max_path_len", 1..=255, d.max_path_len)?,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
pub(crate) mod tests;
