//! The node's read model: what `trellis status`, `peers list` and `routes list` show.
//!
//! The routing loop writes it after each input it handles; the admin API reads it under a
//! short read lock, so status answers never wait behind the loop's backlog.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use trellis_routing::ServiceName;

use super::view_route::{BestRoute, Listed};
use crate::admin::{NodeStatus, PeerInfo, RouteInfo};

/// Routes copied per read lock by [`View::routes_listing`] (well under a millisecond).
pub const ROUTES_PER_LOCK: usize = 1024;

/// Everything the admin API reads without asking the loop.
#[derive(Debug)]
pub struct ViewState {
    /// This node.
    pub node_id: String,
    /// Listen address.
    pub listen: String,
    /// Start time.
    pub started: Instant,
    /// Best route per service.
    pub routes: BTreeMap<ServiceName, BestRoute>,
    /// Peers.
    pub peers: BTreeMap<String, PeerInfo>,
    /// Services originated here: service → (endpoint, protocol).
    pub originated: BTreeMap<String, (String, String)>,
    /// Counters.
    pub counters: BTreeMap<String, u64>,
    /// Own org's trust snapshot version.
    pub snapshot_version: u64,
    /// Node certificate expiry.
    pub cert_not_after: u64,
    /// The own org's authority has revoked this node (its trust snapshot says so).
    pub revoked: bool,
    /// Peer selection, when configured.
    pub selection: Option<crate::admin::SelectionStatus>,
}

impl ViewState {
    /// The record `routes list` shows for `route`, with its local endpoint.
    fn route_info(&self, service: &ServiceName, route: &BestRoute) -> RouteInfo {
        let endpoint = self
            .originated
            .get(service.as_str())
            .map(|(e, _)| e.as_str());
        route.info(service, endpoint)
    }
}

/// The shared read model.
#[derive(Debug)]
pub struct View {
    state: RwLock<ViewState>,
    external: std::sync::Mutex<Vec<(String, std::sync::Arc<std::sync::atomic::AtomicU64>)>>,
}

impl View {
    /// A view for `node_id` listening on `listen`.
    pub fn new(node_id: String, listen: String, cert_not_after: u64) -> Self {
        Self {
            state: RwLock::new(ViewState {
                node_id,
                listen,
                started: Instant::now(),
                routes: BTreeMap::new(),
                peers: BTreeMap::new(),
                originated: BTreeMap::new(),
                counters: BTreeMap::new(),
                snapshot_version: 0,
                cert_not_after,
                revoked: false,
                selection: None,
            }),
            external: std::sync::Mutex::default(),
        }
    }

    /// Shows a counter kept elsewhere (e.g. by the manifest verifier) under `name`.
    pub fn add_counter(&self, name: &str, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        self.external
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_owned(), counter));
    }

    /// Reads the state.
    pub fn read(&self) -> RwLockReadGuard<'_, ViewState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every best route, taken [`ROUTES_PER_LOCK`] at a time so the routing loop, which
    /// writes the view, never waits long behind a reader of a large table (`trellis
    /// routes list` polled during a full-table load). Under the lock only shared values
    /// are cloned; the caller encodes them after (see [`Listed`]). Not one atomic
    /// picture: routes that change while it is taken may show the older or the newer
    /// state, as in any table walk that yields (BIRD's `show route` does the same).
    pub fn routes_listing(&self) -> Vec<Listed> {
        let mut out = Vec::with_capacity(self.read().routes.len());
        let mut after: Option<ServiceName> = None;
        loop {
            let state = self.read();
            let range = match &after {
                None => state.routes.range::<str, _>(..),
                Some(key) => state.routes.range::<str, _>((
                    std::ops::Bound::Excluded(key.as_str()),
                    std::ops::Bound::Unbounded,
                )),
            };
            let before = out.len();
            out.extend(range.take(ROUTES_PER_LOCK).map(|(service, route)| Listed {
                service: service.clone(),
                route: route.clone(),
                endpoint: if route.next_hop.is_none() {
                    state
                        .originated
                        .get(service.as_str())
                        .map(|(e, _)| e.clone())
                } else {
                    None
                },
            }));
            if out.len() - before < ROUTES_PER_LOCK {
                return out;
            }
            after = out.last().map(|l| l.service.clone());
        }
    }

    /// The record of one service's best route, if it has one.
    pub fn route_info(&self, service: &str) -> Option<RouteInfo> {
        let state = self.read();
        let (name, route) = state.routes.get_key_value(service)?;
        Some(state.route_info(name, route))
    }

    /// Writes the state.
    pub fn write(&self) -> RwLockWriteGuard<'_, ViewState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `n` to a counter.
    pub fn count(&self, name: &str, n: u64) {
        *self.write().counters.entry(name.to_owned()).or_default() += n;
    }

    /// Copies the routing core's counters (prefixed `router_`).
    pub fn set_router_stats(&self, stats: &trellis_routing::Stats) {
        let pairs = [
            ("router_updates_received", stats.updates_received),
            ("router_batches_malformed", stats.batches_malformed),
            (
                "router_routes_rejected_malformed",
                stats.routes_rejected_malformed,
            ),
            ("router_routes_rejected_loop", stats.routes_rejected_loop),
            (
                "router_routes_rejected_policy",
                stats.routes_rejected_policy,
            ),
            (
                "router_routes_origin_unverified",
                stats.routes_origin_unverified,
            ),
            (
                "router_routes_rejected_name_owner",
                stats.routes_rejected_name_owner,
            ),
            ("router_max_routes_exceeded", stats.max_routes_exceeded),
            ("router_manifests_accepted", stats.manifests_accepted),
            ("router_manifests_rejected", stats.manifests_rejected),
            ("router_stale_paths_purged", stats.stale_paths_purged),
            ("router_batches_sent", stats.batches_sent),
            (
                "router_announcements_received",
                stats.announcements_received,
            ),
            ("router_withdrawals_received", stats.withdrawals_received),
            ("router_announcements_sent", stats.announcements_sent),
            ("router_withdrawals_sent", stats.withdrawals_sent),
        ];
        let mut state = self.write();
        for (name, value) in pairs {
            state.counters.insert(name.to_owned(), value);
        }
    }

    /// Whether the session with `peer` is up.
    pub fn peer_up(&self, peer: &str) -> bool {
        self.read().peers.get(peer).is_some_and(|p| p.state == "up")
    }

    /// The status record.
    pub fn status(&self) -> NodeStatus {
        let mut counters = self.read().counters.clone();
        for (name, counter) in self
            .external
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            counters.insert(
                name.clone(),
                counter.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        let s = self.read();
        NodeStatus {
            role: "node".into(),
            node_id: s.node_id.clone(),
            listen: s.listen.clone(),
            uptime_secs: s.started.elapsed().as_secs(),
            peers_configured: s.peers.len(),
            peers_up: s.peers.values().filter(|p| p.state == "up").count(),
            routes: s.routes.len(),
            originated: s.originated.len(),
            snapshot_version: s.snapshot_version,
            cert_not_after: s.cert_not_after,
            revoked: s.revoked,
            counters,
            selection: s.selection.clone(),
        }
    }
}
