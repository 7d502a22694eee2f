//! Peer selection inside the org, the IO side (docs/adr/0015). The routing core's
//! [`Selector`] decides; this module feeds it and turns its actions into steps the
//! routing loop carries out.
//!
//! * **Candidates** are the nodes of the own org's signed directory (from the trust
//!   snapshot), the `[selection] bootstrap` entries, and the configured peers, which are
//!   pinned. Revoked nodes and this node itself are never candidates.
//! * **Active** peers are those the selector activated (dialed) or adopted (they dialed
//!   us while there was room: up to `max_active` plus one guest slot, trimmed at the
//!   next round, so a node below its minimum is never shut out by full nodes). Each is a peer of the routing loop with source
//!   `directory`; when its session ends it is removed and the candidate backs off
//!   (5 s doubling to 2 min), so the next round picks another one.
//! * **Warm** candidates are probed (at most every 30 s each): a QUIC handshake with
//!   mutual TLS, closed at once;
//!   its RTT gives the cost the candidate would have, by the same formula as a scored
//!   link (ADR 0014). A probe that fails backs the candidate off like a lost session.
//! * Every directory node may complete a TLS handshake with this node (so probes and
//!   dials get in); whether its session is taken is decided when it registers.
//!
//! The seam: the routing loop calls [`Selection::round`] when [`Selection::next_round`]
//! is due, and reports sessions ([`Selection::up`], [`Selection::down`],
//! [`Selection::inbound`]) and probe results ([`Selection::probed`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use trellis_routing::scoring::{link_cost, CostInputs, ScoreConfig};
use trellis_routing::selection::{Action, Candidate, Selector};
use trellis_routing::{NodeId, OrgId, Relationship};

use crate::admin::SelectionStatus;

use super::config::{Selection as Settings, DEFAULT_LINK_COST, DEFAULT_LOCAL_PREF};
use super::routing_loop::PeerSpec;
use super::trust::TrustStore;

/// The source of a peer the selection added (`peers list` shows it).
pub(super) const SOURCE: &str = "directory";

/// A peer activated but not up within this long counts as lost.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A probe result is used this long.
const PROBE_FRESH: Duration = Duration::from_secs(300);
/// A candidate is probed again only after this long (a handshake is cheap, not free).
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// First and longest backoff of a candidate whose session or probe failed.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(120));

/// What the routing loop does for one selection decision.
#[derive(Debug)]
pub(super) enum Step {
    /// Add this peer (dial it).
    Add(PeerSpec),
    /// Remove this selected peer (close its session), saying why.
    Remove(NodeId, &'static str),
    /// Probe this candidate at this address.
    Probe(NodeId, SocketAddr),
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    next: Duration,
}

/// The node's peer selection.
pub(super) struct Selection {
    settings: Settings,
    selector: Selector,
    local: NodeId,
    org: OrgId,
    trust: Arc<TrustStore>,
    /// Directory nodes admitted at the TLS handshake (shared with the accept side).
    admit: Arc<RwLock<HashSet<NodeId>>>,
    score_cfg: ScoreConfig,
    /// Candidates' addresses, from the last round.
    addresses: BTreeMap<NodeId, SocketAddr>,
    probes: HashMap<NodeId, (u32, Instant)>,
    probing: HashSet<NodeId>,
    backoff: HashMap<NodeId, Backoff>,
    /// Selected peers whose session is not up yet, since when.
    pending: HashMap<NodeId, Instant>,
    next_round: Instant,
}

impl Selection {
    /// Selection for `local` with `settings`; `admit` is the set of nodes the TLS side
    /// admits besides the configured peers.
    pub(super) fn new(
        local: NodeId,
        settings: Settings,
        trust: Arc<TrustStore>,
        admit: Arc<RwLock<HashSet<NodeId>>>,
        score_cfg: ScoreConfig,
        now: Instant,
    ) -> Self {
        let selector = Selector::new(settings.selector.clone().salted(&local));
        Self {
            org: local.org(),
            local,
            settings,
            selector,
            trust,
            admit,
            score_cfg,
            addresses: BTreeMap::new(),
            probes: HashMap::new(),
            probing: HashSet::new(),
            backoff: HashMap::new(),
            pending: HashMap::new(),
            next_round: now,
        }
    }

    /// When the next round is due.
    pub(super) fn next_round(&self) -> Instant {
        self.next_round
    }

    /// Makes the next round due now (the directory changed, a peer was lost).
    pub(super) fn hurry(&mut self, now: Instant) {
        self.next_round = self.next_round.min(now);
    }

    /// Whether `peer` was added by the selection.
    pub(super) fn selected(&self, peer: &NodeId) -> bool {
        self.selector.is_active(peer) || self.pending.contains_key(peer)
    }

    /// The directory and bootstrap candidates with their addresses (directory first).
    fn members(&self) -> BTreeMap<NodeId, SocketAddr> {
        let mut out = BTreeMap::new();
        for (node, addr) in &self.settings.bootstrap {
            out.insert(node.clone(), *addr);
        }
        for m in self.trust.directory(&self.org) {
            out.insert(m.node, m.address);
        }
        out.retain(|n, _| n != &self.local && !self.trust.is_revoked(n, &[]));
        out
    }

    /// One round: refreshes the candidates, asks the selector, returns the steps.
    /// `pinned` are the configured peers; `cost` gives a peer's current link cost.
    pub(super) fn round(
        &mut self,
        now: Instant,
        pinned: &[NodeId],
        cost: impl Fn(&NodeId) -> Option<u32>,
    ) -> Vec<Step> {
        self.next_round = now + self.settings.round;
        self.addresses = self.members();
        *self
            .admit
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            self.addresses.keys().cloned().collect();
        let mut steps = Vec::new();
        let stalled: Vec<NodeId> = self
            .pending
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= CONNECT_TIMEOUT)
            .map(|(n, _)| n.clone())
            .collect();
        for node in stalled {
            self.failed(now, &node);
            steps.push(Step::Remove(node, "selection: no session within 10 s"));
        }
        self.probes
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < PROBE_FRESH);
        self.backoff
            .retain(|_, b| b.until > now || b.next > BACKOFF.0);
        let pinned_set: HashSet<&NodeId> = pinned.iter().collect();
        let mut candidates: Vec<Candidate> = pinned
            .iter()
            .map(|n| Candidate {
                node: n.clone(),
                pinned: true,
                cost: cost(n),
                reachable: true,
            })
            .collect();
        for node in self.addresses.keys() {
            if pinned_set.contains(node) {
                continue;
            }
            // A selected peer is scored from the moment it is added (its configured cost
            // until measured), so a guest being set up is not trimmed as "unmeasured".
            let measured = if self.selector.is_active(node) {
                cost(node).or_else(|| self.probes.get(node).map(|(c, _)| *c))
            } else {
                self.probes.get(node).map(|(c, _)| *c)
            };
            candidates.push(Candidate {
                node: node.clone(),
                pinned: false,
                cost: measured,
                reachable: self.backoff.get(node).is_none_or(|b| b.until <= now),
            });
        }
        for action in self.selector.decide(now, &candidates) {
            match action {
                Action::Activate(node) if !pinned_set.contains(&node) => {
                    if let Some(addr) = self.addresses.get(&node) {
                        self.pending.insert(node.clone(), now);
                        steps.push(Step::Add(self.spec(&node, Some(*addr))));
                    }
                }
                Action::Deactivate(node) if !pinned_set.contains(&node) => {
                    self.pending.remove(&node);
                    steps.push(Step::Remove(node, "selection: trimmed or swapped out"));
                }
                Action::Probe(node) => {
                    let recent = self
                        .probes
                        .get(&node)
                        .is_some_and(|(_, at)| now.saturating_duration_since(*at) < PROBE_EVERY);
                    if recent {
                        continue;
                    }
                    if let Some(addr) = self.addresses.get(&node) {
                        if self.probing.insert(node.clone()) {
                            steps.push(Step::Probe(node, *addr));
                        }
                    }
                }
                Action::Activate(_) | Action::Deactivate(_) => {}
            }
        }
        steps
    }

    fn spec(&self, node: &NodeId, address: Option<SocketAddr>) -> PeerSpec {
        PeerSpec {
            node: node.clone(),
            address,
            role: Relationship::Internal,
            link_cost: DEFAULT_LINK_COST,
            trust: 100,
            local_pref: DEFAULT_LOCAL_PREF,
            max_routes: 0,
            source: SOURCE.into(),
            detection: None,
        }
    }

    /// A directory node opened a session to us: its spec (accept only) if it is taken.
    pub(super) fn inbound(&mut self, now: Instant, peer: &NodeId) -> Option<PeerSpec> {
        let listed = self.addresses.contains_key(peer) || self.members().contains_key(peer);
        if !listed || !self.selector.adopt(now, peer) {
            return None;
        }
        self.pending.insert(peer.clone(), now);
        // It reached us, so it is reachable: a backoff left from an earlier failed
        // probe or dial would make the next round drop it as unreachable.
        self.backoff.remove(peer);
        if self.selector.active_len() > self.settings.selector.max_active {
            // Taken in the guest slot: the round that trims another peer to make room
            // runs now, not up to a round later.
            self.hurry(now);
        }
        Some(self.spec(peer, None))
    }

    /// A selected peer's session is up.
    pub(super) fn up(&mut self, peer: &NodeId) {
        if self.pending.remove(peer).is_some() {
            // Up means reachable: neither the wait nor its doubling carries over.
            self.backoff.remove(peer);
        }
    }

    /// A peer's session ended. Returns whether it was a selected peer, which the caller
    /// then removes; the next round replaces it.
    pub(super) fn down(&mut self, now: Instant, peer: &NodeId) -> bool {
        if !self.selected(peer) {
            return false;
        }
        self.failed(now, peer);
        true
    }

    fn failed(&mut self, now: Instant, peer: &NodeId) {
        self.selector.lost(peer);
        self.pending.remove(peer);
        let b = self.backoff.entry(peer.clone()).or_insert(Backoff {
            until: now,
            next: BACKOFF.0,
        });
        b.until = now + b.next;
        b.next = (b.next * 2).min(BACKOFF.1);
        self.hurry(now);
    }

    /// A probe of `peer` ended: its RTT, or `None` if the handshake failed.
    pub(super) fn probed(&mut self, now: Instant, peer: &NodeId, rtt: Option<Duration>) {
        self.probing.remove(peer);
        match rtt {
            Some(rtt) => {
                let inputs = CostInputs {
                    base_cost: DEFAULT_LINK_COST,
                    trust: 100,
                    rtt,
                    loss: 0.0,
                    failures: 0,
                };
                self.probes
                    .insert(peer.clone(), (link_cost(&inputs, &self.score_cfg), now));
            }
            None => {
                self.probes.remove(peer);
                if !self.selected(peer) {
                    self.failed(now, peer);
                }
            }
        }
    }

    /// What `trellis status` shows.
    pub(super) fn summary(&self) -> SelectionStatus {
        SelectionStatus {
            role: super::config::role_name(self.settings.role).to_owned(),
            min_active: self.settings.selector.min_active,
            max_active: self.settings.selector.max_active,
            active: self.selector.active_len(),
            warm: self.probes.len(),
            candidates: self.addresses.len(),
        }
    }
}
