//! The sans-IO router: inputs in, effects out, time as a parameter.
//!
//! ```text
//! handle(now, Input) ──► table / manifests / peers ──► poll_output() → Output
//!                                                  └─► poll_timeout() → next wake-up
//! ```
//!
//! Every call to [`Router::handle`] also runs the timers that are due at
//! `now` (MRAI flushes, graceful-restart windows), so a driver only has to
//! call `handle(now, Input::Tick)` when [`Router::poll_timeout`] says so.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::export::AdjOut;
use crate::manifest::{ManifestError, ManifestStore, OriginManifest, Signatures, SignedManifest};
use crate::name::{NodeId, OrgId, ServiceName};
use crate::policy::{AcceptAll, RoutePolicy};
use crate::route::{Attrs, ProtocolHint, Relationship, Route, DEFAULT_MAX_PATH_LEN};
use crate::table::{
    BestKey, Change, PathEntry, PeerFacts, Ranker, Table, Touch, LOCAL, STALE, VALID,
};
use crate::update::{BatchLimits, Message, UpdateBatch, UpdateError};
use crate::Stats;

/// About a century: what an interval too long to add to an `Instant` (such as
/// `Duration::MAX`, "never") is cut to.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d` without overflow: an instant too far to represent becomes
/// [`FAR_FUTURE`] from `now` (or `now` itself, if even that cannot be held).
/// Configured intervals come from operators and may be `Duration::MAX`.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE.min(d)))
        .unwrap_or(now)
}

/// Router-wide settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// This node.
    pub local: NodeId,
    /// Minimum interval between two update batches to one peer (MRAI-like).
    /// Zero sends the changes of every input as one batch right away.
    pub mrai: Duration,
    /// Paths longer than this are refused (treat-as-withdraw).
    pub max_path_len: usize,
    /// Limits on one received batch.
    pub batch_limits: BatchLimits,
    /// How long a gracefully restarting peer's paths are kept as stale.
    pub graceful_restart: Duration,
    /// Most entries this router puts in one batch it sends.
    pub send_batch: usize,
}

impl RouterConfig {
    /// Defaults for `local`: 50 ms MRAI, 64-hop paths, 120 s graceful restart.
    pub fn new(local: NodeId) -> Self {
        Self {
            local,
            mrai: Duration::from_millis(50),
            max_path_len: DEFAULT_MAX_PATH_LEN,
            batch_limits: BatchLimits::default(),
            graceful_restart: Duration::from_secs(120),
            send_batch: 1_000,
        }
    }
}

/// Settings of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's node id.
    pub id: NodeId,
    /// What the peer is to us: `Internal` for a node of our own org.
    pub role: Relationship,
    /// Close the session when the peer sends more paths than this.
    pub max_routes: Option<usize>,
    /// Local preference given to its routes unless policy says otherwise.
    pub local_pref: u32,
    /// Cost of the link to it, added to its routes' metric.
    pub link_cost: u32,
    /// Keep its paths as stale across a session loss (graceful restart).
    pub graceful_restart: bool,
}

impl PeerConfig {
    /// A peer with default settings: local preference 100, link cost 10.
    pub fn new(id: NodeId, role: Relationship) -> Self {
        Self {
            id,
            role,
            max_routes: None,
            local_pref: 100,
            link_cost: 10,
            graceful_restart: false,
        }
    }
}

/// Why a peer configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The peer is this node.
    #[error("cannot peer with self ({0})")]
    SelfPeer(NodeId),
    /// Already configured.
    #[error("peer {0} is already configured")]
    Duplicate(NodeId),
    /// `Internal` for another org, or an external role inside our org.
    #[error("peer {peer} cannot have role {role:?}: internal means same org")]
    RoleMismatch {
        /// The peer.
        peer: NodeId,
        /// The role given.
        role: Relationship,
    },
    /// Not configured.
    #[error("peer {0} is not configured")]
    Unknown(NodeId),
}

/// Something that happened to the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A session with the peer is established: the full table goes out.
    SessionUp {
        /// The peer.
        peer: NodeId,
    },
    /// The session is gone; its paths go, or turn stale if `graceful`.
    SessionDown {
        /// The peer.
        peer: NodeId,
        /// Keep paths for the graceful-restart window (if the peer allows it).
        graceful: bool,
    },
    /// A batch arrived from the peer.
    Update {
        /// The peer.
        peer: NodeId,
        /// The batch.
        batch: UpdateBatch,
    },
    /// The peer finished sending its initial table: stale paths go.
    EndOfTable {
        /// The peer.
        peer: NodeId,
    },
    /// A signed manifest arrived (`from` is the peer, `None` if local).
    Manifest {
        /// Who sent it.
        from: Option<NodeId>,
        /// The manifest.
        manifest: SignedManifest,
    },
    /// Peer scoring set a new link cost.
    LinkCost {
        /// The peer.
        peer: NodeId,
        /// The new cost.
        cost: u32,
    },
    /// Start originating a service.
    Originate {
        /// The service.
        service: ServiceName,
        /// Its protocol.
        protocol: ProtocolHint,
    },
    /// Stop originating a service.
    StopOriginating {
        /// The service.
        service: ServiceName,
    },
    /// Start originating many services at once: one manifest version, one attribute set
    /// per protocol, one pass over the export queues (a bulk load).
    OriginateMany {
        /// The services with their protocols.
        routes: Vec<(ServiceName, ProtocolHint)>,
    },
    /// Stop originating many services at once (one manifest version).
    StopOriginatingMany {
        /// The services.
        services: Vec<ServiceName>,
    },
    /// Re-sign this node's manifest under a new version (its signing certificate was
    /// renewed) and send it to every peer that holds an older one.
    RefreshManifest,
    /// What this node trusts changed (a newer trust snapshot: name scopes, delegations,
    /// CAs): re-verify manifests that had no chain and re-check every route's name.
    TrustChanged {
        /// Who may originate which name, from every snapshot held.
        rules: crate::ownership::NameRules,
    },
    /// Nothing new: only run due timers.
    Tick,
}

/// Why the router wants a session closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectReason {
    /// A batch broke a structural limit.
    #[error("malformed update: {0}")]
    Malformed(#[from] UpdateError),
    /// The peer sent more paths than allowed.
    #[error("peer sent more than {limit} routes")]
    MaxRoutes {
        /// The limit.
        limit: usize,
    },
}

/// A usable best route, as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Best {
    /// The peer to forward to; `None` if this node originates the service.
    pub next_hop: Option<NodeId>,
    /// Its attributes as received.
    pub attrs: Arc<Attrs>,
    /// Metric including the link cost to `next_hop`.
    pub metric: u64,
}

/// One path of a service, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathView {
    /// The peer it came from; `None` for this node's own.
    pub from: Option<NodeId>,
    /// Its attributes.
    pub attrs: Arc<Attrs>,
    /// Metric including the link cost.
    pub metric: u64,
    /// The origin's manifest lists it and the origin may use the name.
    pub valid: bool,
    /// The origin's manifest was verified up to a CA trusted for its org (not only
    /// self-consistent: docs/adr/0007, 0011).
    pub verified: bool,
    /// Kept across a graceful restart.
    pub stale: bool,
}

/// Something the driver should do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a message to a peer.
    Send {
        /// The peer.
        peer: NodeId,
        /// The message.
        message: Message,
    },
    /// Close the session with a peer. The router already treats it as down.
    Disconnect {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: DisconnectReason,
    },
    /// The best route of a service changed (persist it; update forwarding).
    BestChanged {
        /// The service.
        service: ServiceName,
        /// The new best route, `None` if the service is unreachable.
        best: Option<Best>,
    },
    /// A received manifest was refused.
    ManifestRejected {
        /// Who sent it.
        from: Option<NodeId>,
        /// Why.
        error: ManifestError,
    },
}

/// A configured peer and its session state.
pub(crate) struct Peer {
    pub(crate) cfg: PeerConfig,
    pub(crate) up: bool,
    pub(crate) routes: usize,
    pub(crate) stale_until: Option<Instant>,
    pub(crate) out: AdjOut,
}

/// A [`Ranker`] over the router's own fields, borrowing only those two so the
/// table can be borrowed mutably beside it.
macro_rules! ranker {
    ($r:expr) => {
        Ranker {
            local: &$r.cfg.local,
            peers: &$r.facts,
        }
    };
}
pub(crate) use ranker;

/// The routing core of one node.
pub struct Router {
    pub(crate) cfg: RouterConfig,
    pub(crate) local_org: OrgId,
    pub(crate) epoch: Instant,
    pub(crate) sigs: Box<dyn Signatures>,
    pub(crate) policy: Box<dyn RoutePolicy>,
    pub(crate) peers: Vec<Option<Peer>>,
    /// Decision facts per peer slot, parallel to `peers` (slot 0 is `LOCAL`).
    pub(crate) facts: Vec<Option<PeerFacts>>,
    pub(crate) index: HashMap<NodeId, u32>,
    pub(crate) table: Table,
    pub(crate) manifests: ManifestStore,
    pub(crate) originated: BTreeMap<ServiceName, ProtocolHint>,
    pub(crate) own_version: u64,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) stats: Stats,
}

impl Router {
    /// A router with no peers; `now` is the zero of its internal clock.
    pub fn new(cfg: RouterConfig, sigs: Box<dyn Signatures>, now: Instant) -> Self {
        let local_org = cfg.local.org();
        Self {
            cfg,
            local_org,
            epoch: now,
            sigs,
            policy: Box::new(AcceptAll),
            peers: vec![None],
            facts: vec![None],
            index: HashMap::new(),
            table: Table::default(),
            manifests: ManifestStore::default(),
            originated: BTreeMap::new(),
            own_version: 0,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Replaces the import/export policy.
    pub fn set_policy(&mut self, policy: Box<dyn RoutePolicy>) {
        self.policy = policy;
    }

    /// This node's id.
    pub fn local(&self) -> &NodeId {
        &self.cfg.local
    }

    /// Adds a peer (its session starts down).
    pub fn add_peer(&mut self, cfg: PeerConfig) -> Result<(), PeerError> {
        if cfg.id == self.cfg.local {
            return Err(PeerError::SelfPeer(cfg.id));
        }
        if self.index.contains_key(&cfg.id) {
            return Err(PeerError::Duplicate(cfg.id));
        }
        let same_org = cfg.id.in_org(&self.local_org);
        if same_org != (cfg.role == Relationship::Internal) {
            return Err(PeerError::RoleMismatch {
                peer: cfg.id,
                role: cfg.role,
            });
        }
        let facts = PeerFacts {
            id: cfg.id.clone(),
            role: (!same_org).then_some(cfg.role),
            link_cost: cfg.link_cost,
        };
        let peer = Peer {
            cfg,
            up: false,
            routes: 0,
            stale_until: None,
            out: AdjOut::default(),
        };
        let slot = match self.peers.iter().skip(1).position(Option::is_none) {
            Some(i) => i + 1,
            None => {
                self.peers.push(None);
                self.facts.push(None);
                self.peers.len() - 1
            }
        };
        self.index.insert(facts.id.clone(), slot as u32);
        self.peers[slot] = Some(peer);
        self.facts[slot] = Some(facts);
        Ok(())
    }

    /// Removes a peer and every path it sent.
    pub fn remove_peer(&mut self, now: Instant, id: &NodeId) -> Result<(), PeerError> {
        let slot = *self
            .index
            .get(id)
            .ok_or_else(|| PeerError::Unknown(id.clone()))?;
        self.drop_paths(slot, false, now);
        self.index.remove(id);
        self.peers[slot as usize] = None;
        self.facts[slot as usize] = None;
        self.run_timers(now);
        Ok(())
    }

    /// Feeds one input, then runs the timers due at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::SessionUp { peer } => self.on_session_up(now, &peer),
            Input::SessionDown { peer, graceful } => {
                if let Some(slot) = self.up_slot(&peer) {
                    self.drop_paths(slot, graceful, now);
                }
            }
            Input::Update { peer, batch } => self.on_update(now, &peer, batch),
            Input::EndOfTable { peer } => self.on_end_of_table(now, &peer),
            Input::Manifest { from, manifest } => self.on_manifest(now, from, manifest),
            Input::LinkCost { peer, cost } => self.on_link_cost(now, &peer, cost),
            Input::Originate { service, protocol } => {
                self.on_originate(now, vec![(service, protocol)]);
            }
            Input::StopOriginating { service } => self.on_stop_originating(now, vec![service]),
            Input::OriginateMany { routes } => self.on_originate(now, routes),
            Input::StopOriginatingMany { services } => self.on_stop_originating(now, services),
            Input::RefreshManifest => {
                if !self.originated.is_empty() {
                    self.publish_manifest();
                    let local = self.cfg.local.clone();
                    self.forward_manifest(&local, None);
                }
            }
            Input::TrustChanged { rules } => self.on_trust_changed(now, rules),
            Input::Tick => {}
        }
        self.run_timers(now);
    }

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the router next needs `handle(now, Input::Tick)`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .flat_map(|p| [p.out.due(), p.stale_until])
            .flatten()
            .min()
    }

    pub(crate) fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub(crate) fn ranker(&self) -> Ranker<'_> {
        ranker!(self)
    }

    pub(crate) fn slot(&self, id: &NodeId) -> Option<u32> {
        self.index.get(id).copied()
    }

    fn up_slot(&self, id: &NodeId) -> Option<u32> {
        self.slot(id)
            .filter(|s| self.peers[*s as usize].as_ref().is_some_and(|p| p.up))
    }

    pub(crate) fn peer_mut(&mut self, slot: u32) -> Option<&mut Peer> {
        self.peers.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn on_session_up(&mut self, now: Instant, id: &NodeId) {
        let Some(slot) = self.slot(id) else { return };
        let Some(peer) = self.peer_mut(slot) else {
            return;
        };
        peer.up = true;
        peer.out = AdjOut::default();
        self.stats.sessions_established += 1;
        self.send_full_table(now, slot);
    }

    fn on_end_of_table(&mut self, now: Instant, id: &NodeId) {
        let Some(slot) = self.up_slot(id) else { return };
        let had_stale = self
            .peer_mut(slot)
            .is_some_and(|p| p.stale_until.take().is_some());
        if had_stale {
            self.purge_stale(slot, now);
        }
    }

    /// Withdraws (or, if `graceful`, marks stale) every path of a peer and
    /// takes its session down.
    pub(crate) fn drop_paths(&mut self, slot: u32, graceful: bool, now: Instant) {
        let gr = self.cfg.graceful_restart;
        let Some(peer) = self.peer_mut(slot) else {
            return;
        };
        let was_up = std::mem::replace(&mut peer.up, false);
        peer.out = AdjOut::default();
        let keep = graceful && peer.cfg.graceful_restart && was_up;
        if peer.routes == 0 {
            // Nothing held from this peer: no need to scan the table.
            peer.stale_until = None;
            return;
        }
        if keep {
            peer.stale_until = Some(later(now, gr));
        } else {
            peer.stale_until = None;
            peer.routes = 0;
        }
        let ranker = ranker!(self);
        let changes = self.table.update_all(&ranker, |_, p| {
            if p.peer != slot {
                Touch::Keep
            } else if keep {
                p.flags |= STALE;
                Touch::Resort
            } else {
                Touch::Remove
            }
        });
        self.apply_changes(now, changes);
    }

    pub(crate) fn purge_stale(&mut self, slot: u32, now: Instant) {
        if self.peer_mut(slot).is_none_or(|p| p.routes == 0) {
            return;
        }
        let mut removed = 0;
        let ranker = ranker!(self);
        let changes = self.table.update_all(&ranker, |_, p| {
            if p.peer == slot && p.stale() {
                removed += 1;
                Touch::Remove
            } else {
                Touch::Keep
            }
        });
        if let Some(peer) = self.peer_mut(slot) {
            peer.routes = peer.routes.saturating_sub(removed);
        }
        self.stats.stale_paths_purged += removed as u64;
        self.apply_changes(now, changes);
    }

    fn on_link_cost(&mut self, now: Instant, id: &NodeId, cost: u32) {
        let Some(slot) = self.slot(id) else { return };
        match self.facts.get_mut(slot as usize).and_then(Option::as_mut) {
            Some(f) if f.link_cost != cost => f.link_cost = cost,
            _ => return,
        }
        let Some(p) = self.peer_mut(slot) else { return };
        p.cfg.link_cost = cost;
        if p.routes == 0 {
            return;
        }
        let ranker = ranker!(self);
        let mut metric_moved = Vec::new();
        let changes = self.table.update_all(&ranker, |service, p| {
            if p.peer != slot {
                return Touch::Keep;
            }
            metric_moved.push(service.clone());
            Touch::Resort
        });
        // A best path via this peer that stayed best still carries a new metric
        // downstream and to the table's owner (BestChanged with the new metric); a
        // service whose best is via another peer exports exactly what it did, and one
        // whose best moved is reported and queued by `apply_changes`.
        let moved: std::collections::HashSet<ServiceName> = changes
            .iter()
            .filter(|(_, c)| c.changed())
            .map(|(s, _)| s.clone())
            .collect();
        metric_moved.sort();
        let mut metric_only = Vec::new();
        for service in metric_moved {
            if moved.contains(&service) {
                continue;
            }
            let best = self
                .table
                .map
                .get(&service)
                .and_then(|paths| crate::table::best_of(paths))
                .filter(|b| b.peer == slot);
            if let Some(b) = best {
                self.mark_pending(now, &service, Some(slot), Some(slot));
                metric_only.push((service, self.best_view(&b)));
            }
        }
        self.apply_changes(now, changes);
        for (service, best) in metric_only {
            self.outputs.push_back(Output::BestChanged {
                service,
                best: Some(best),
            });
        }
    }

    fn on_manifest(&mut self, now: Instant, from: Option<NodeId>, signed: SignedManifest) {
        if signed.manifest.origin == self.cfg.local {
            // Only this node signs its manifests; a copy from the network is ignored.
            return;
        }
        match self.manifests.apply(signed.clone(), self.sigs.as_ref()) {
            Ok(old) => {
                self.stats.manifests_accepted += 1;
                let mut services: Vec<ServiceName> =
                    signed.manifest.services.iter().cloned().collect();
                if let Some(old) = old {
                    services.extend(
                        old.manifest
                            .services
                            .difference(&signed.manifest.services)
                            .cloned(),
                    );
                }
                self.revalidate(now, &signed.manifest.origin, &services);
                self.forward_manifest(&signed.manifest.origin, from.as_ref());
            }
            Err(ManifestError::NotNewer { .. }) => self.stats.manifests_not_newer += 1,
            Err(error) => {
                self.stats.manifests_rejected += 1;
                self.outputs
                    .push_back(Output::ManifestRejected { from, error });
            }
        }
    }

    /// Sends `origin`'s current manifest to every up peer (but `from`) that was sent an
    /// older version, so a newer manifest reaches everyone holding the origin's routes
    /// even when no route changes.
    fn forward_manifest(&mut self, origin: &NodeId, from: Option<&NodeId>) {
        let Some(current) = self.manifests.get(origin).cloned() else {
            return;
        };
        let version = current.manifest.version;
        for peer in self.peers.iter_mut().flatten() {
            if !peer.up || Some(&peer.cfg.id) == from {
                continue;
            }
            if peer.out.supersede_manifest(origin, version) {
                self.stats.manifests_sent += 1;
                self.outputs.push_back(Output::Send {
                    peer: peer.cfg.id.clone(),
                    message: Message::Manifest(current.clone()),
                });
            }
        }
    }

    fn on_trust_changed(&mut self, now: Instant, rules: crate::ownership::NameRules) {
        self.manifests.rules = rules;
        let dropped = self.manifests.reverify(self.sigs.as_ref());
        self.stats.manifests_rejected += dropped.len() as u64;
        let mut work: Vec<(NodeId, Vec<ServiceName>)> = self
            .manifests
            .all()
            .map(|(o, m)| (o.clone(), m.manifest.services.iter().cloned().collect()))
            .chain(dropped.iter().map(|m| {
                (
                    m.manifest.origin.clone(),
                    m.manifest.services.iter().cloned().collect(),
                )
            }))
            .collect();
        work.sort_by(|a, b| a.0.cmp(&b.0));
        for (origin, services) in work {
            if origin != self.cfg.local {
                self.revalidate(now, &origin, &services);
            }
        }
    }

    /// Re-checks the validity of `origin`'s paths for `services`.
    fn revalidate(&mut self, now: Instant, origin: &NodeId, services: &[ServiceName]) {
        let mut changes = Vec::new();
        for service in services {
            let ranker = ranker!(self);
            let manifests = &self.manifests;
            let change = self.table.update_one(&ranker, service, |p| {
                if &p.attrs.origin != origin {
                    return false;
                }
                let valid = manifests
                    .covers(origin, service, p.attrs.origin_seq)
                    .is_some();
                let was = p.valid();
                if valid {
                    p.flags |= VALID;
                } else {
                    p.flags &= !VALID;
                }
                valid != was
            });
            if let Some(c) = change.filter(Change::changed) {
                changes.push((service.clone(), c));
            }
        }
        // `services` comes from the manifest's hash set, in its random order; the
        // outputs must come in an order fixed by the inputs alone. Only the
        // changes are sorted: usually a manifest arrives before its routes and
        // changes nothing.
        changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.apply_changes(now, changes);
    }

    fn on_originate(&mut self, now: Instant, routes: Vec<(ServiceName, ProtocolHint)>) {
        let routes: Vec<(ServiceName, ProtocolHint)> = routes
            .into_iter()
            .filter(|(service, protocol)| self.originated.get(service) != Some(protocol))
            .collect();
        if routes.is_empty() {
            return;
        }
        for (service, protocol) in &routes {
            self.originated.insert(service.clone(), *protocol);
        }
        self.publish_manifest();
        // One attribute set per protocol, shared by every service of the load.
        let mut shared: Vec<(ProtocolHint, Arc<Attrs>)> = Vec::new();
        let since_ms = self.ms(now);
        let mut changes = Vec::with_capacity(routes.len());
        for (service, protocol) in routes {
            let attrs = match shared.iter().find(|(p, _)| *p == protocol) {
                Some((_, a)) => a.clone(),
                None => {
                    let a = Arc::new(Attrs::originated(
                        self.cfg.local.clone(),
                        self.own_version,
                        protocol,
                    ));
                    shared.push((protocol, a.clone()));
                    a
                }
            };
            let entry = PathEntry {
                attrs,
                since_ms,
                peer: LOCAL,
                local_pref: u32::MAX,
                flags: VALID,
            };
            let (change, _) = self.table.upsert(&ranker!(self), &service, None, entry);
            changes.push((service, change));
        }
        self.apply_changes(now, changes);
    }

    fn on_stop_originating(&mut self, now: Instant, services: Vec<ServiceName>) {
        let services: Vec<ServiceName> = services
            .into_iter()
            .filter(|s| self.originated.remove(s).is_some())
            .collect();
        if services.is_empty() {
            return;
        }
        self.publish_manifest();
        let changes: Vec<(ServiceName, Change)> = services
            .into_iter()
            .filter_map(|service| {
                let change = self.table.remove(&service, LOCAL)?;
                Some((service, change))
            })
            .collect();
        self.apply_changes(now, changes);
    }

    /// Signs and installs a new version of this node's manifest.
    fn publish_manifest(&mut self) {
        self.own_version += 1;
        let manifest = OriginManifest {
            origin: self.cfg.local.clone(),
            version: self.own_version,
            services: self.originated.keys().cloned().collect(),
        };
        let signature: Arc<[u8]> = self.sigs.sign(&manifest).into();
        self.manifests.install_own(SignedManifest {
            manifest: Arc::new(manifest),
            signature,
        });
    }

    /// Reports best-path changes and queues them for every peer's Adj-RIB-Out.
    pub(crate) fn apply_changes(&mut self, now: Instant, changes: Vec<(ServiceName, Change)>) {
        for (service, change) in changes {
            if !change.changed() {
                continue;
            }
            let best = change.new.as_ref().map(|b| self.best_view(b));
            self.outputs.push_back(Output::BestChanged {
                service: service.clone(),
                best,
            });
            let old = change.old.as_ref().map(|b| b.peer);
            let new = change.new.as_ref().map(|b| b.peer);
            self.mark_pending(now, &service, old, new);
        }
    }

    fn best_view(&self, b: &BestKey) -> Best {
        let facts = self.facts.get(b.peer as usize).and_then(Option::as_ref);
        let cost = facts.map_or(0, |f| f.link_cost);
        Best {
            next_hop: facts.map(|f| f.id.clone()),
            attrs: b.attrs.clone(),
            metric: u64::from(b.attrs.metric) + u64::from(cost),
        }
    }

    fn path_view(&self, ranker: &Ranker<'_>, p: &PathEntry) -> PathView {
        PathView {
            from: self
                .facts
                .get(p.peer as usize)
                .and_then(Option::as_ref)
                .map(|f| f.id.clone()),
            attrs: p.attrs.clone(),
            metric: ranker.metric(p),
            valid: p.valid(),
            verified: p.peer == LOCAL || self.manifests.chain_verified(&p.attrs.origin),
            stale: p.stale(),
        }
    }

    /// The best usable route of exactly `service`.
    pub fn best(&self, service: &ServiceName) -> Option<Best> {
        let paths = self.table.map.get(service)?;
        crate::table::best_of(paths).map(|b| self.best_view(&b))
    }

    /// Resolves a name to a route by longest-suffix match: the exact name,
    /// then `*.parent` aggregates from the most specific up.
    pub fn resolve(&self, name: &ServiceName) -> Option<(ServiceName, Best)> {
        if let Some((k, paths)) = self.table.map.get_key_value(name) {
            if let Some(b) = crate::table::best_of(paths) {
                return Some((k.clone(), self.best_view(&b)));
            }
        }
        name.lookup_keys().skip(1).find_map(|key| {
            let (k, paths) = self.table.map.get_key_value(key.as_str())?;
            crate::table::best_of(paths).map(|b| (k.clone(), self.best_view(&b)))
        })
    }

    /// Every path held for `service`, best first.
    pub fn paths(&self, service: &ServiceName) -> Vec<PathView> {
        let ranker = self.ranker();
        self.table
            .map
            .get(service)
            .map(|paths| paths.iter().map(|p| self.path_view(&ranker, p)).collect())
            .unwrap_or_default()
    }

    /// The Loc-RIB: every service with a usable best route, sorted by name.
    pub fn loc_rib(&self) -> Vec<Route> {
        let mut out: Vec<Route> = self
            .table
            .map
            .iter()
            .filter_map(|(s, paths)| {
                crate::table::best_of(paths).map(|b| Route {
                    service: s.clone(),
                    attrs: b.attrs,
                })
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }

    /// Number of services with at least one path (valid or not).
    pub fn services_known(&self) -> usize {
        self.table.map.len()
    }

    /// A peer's Adj-RIB-In: every path it sent that is held, sorted by service.
    pub fn adj_rib_in(&self, peer: &NodeId) -> Vec<(ServiceName, PathView)> {
        let Some(slot) = self.slot(peer) else {
            return Vec::new();
        };
        let ranker = self.ranker();
        let mut out: Vec<_> = self
            .table
            .map
            .iter()
            .filter_map(|(s, paths)| {
                let p = paths.iter().find(|p| p.peer == slot)?;
                Some((s.clone(), self.path_view(&ranker, p)))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A peer's Adj-RIB-Out: what the export rules give it for every service
    /// right now, sorted by service. It is computed, not stored
    /// (docs/adr/0002-one-table.md), so it already includes changes still
    /// waiting for the peer's MRAI timer.
    pub fn adj_rib_out(&self, peer: &NodeId) -> Vec<(ServiceName, Attrs)> {
        let Some(slot) = self.slot(peer) else {
            return Vec::new();
        };
        let Some(p) = self.peers[slot as usize].as_ref() else {
            return Vec::new();
        };
        let ranker = self.ranker();
        let mut out: Vec<_> = self
            .table
            .map
            .iter()
            .filter_map(|(s, paths)| {
                crate::table::best_of(paths)?;
                let best = paths.first()?;
                let a = crate::export::export_attrs(&self.cfg.local, &ranker, best, p, slot)?;
                self.policy
                    .export(&p.cfg.id, p.cfg.role, s, &a)
                    .then(|| (s.clone(), a))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether the session with `peer` is up.
    pub fn peer_up(&self, peer: &NodeId) -> bool {
        self.up_slot(peer).is_some()
    }

    /// Paths currently held from `peer`.
    pub fn peer_routes(&self, peer: &NodeId) -> usize {
        self.slot(peer)
            .and_then(|s| self.peers[s as usize].as_ref())
            .map_or(0, |p| p.routes)
    }

    /// The configured peers.
    pub fn peers(&self) -> impl Iterator<Item = &PeerConfig> {
        self.peers.iter().flatten().map(|p| &p.cfg)
    }

    /// The current manifest of `origin`.
    pub fn manifest(&self, origin: &NodeId) -> Option<&SignedManifest> {
        self.manifests.get(origin)
    }

    /// Whether `origin`'s current manifest was verified up to a trusted CA (this node's
    /// own always is).
    pub fn origin_verified(&self, origin: &NodeId) -> bool {
        origin == &self.cfg.local || self.manifests.chain_verified(origin)
    }

    /// Whether `origin` may originate `service` by the name rules held here.
    pub fn may_originate(
        &self,
        origin: &NodeId,
        service: &ServiceName,
    ) -> Result<(), crate::ownership::Refusal> {
        self.manifests.rules.check(origin, service)
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
