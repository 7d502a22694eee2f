//! # Peer selection inside one org
//!
//! A node does not keep sessions to every node of its org. It keeps a few
//! **active** peers (sessions up), a few **warm** candidates (probed cheaply so
//! their link cost is known) and any number of **cold** candidates (bootstrap
//! addresses and directory entries that were never measured). The [`Selector`]
//! decides which candidates are active and which get probed; the IO side (the
//! daemon) calls [`Selector::decide`] periodically with every candidate it
//! knows, carries out the returned [`Action`]s, and reports lost sessions with
//! [`Selector::lost`].
//!
//! Contract: this module only decides. It never dials, probes, measures or
//! reads a clock; time is the `now` parameter. It holds no randomness, so the
//! same state and the same input give the same actions in the same order. The
//! selector assumes an [`Action::Activate`] succeeds; when a session fails or
//! goes down the IO side calls [`Selector::lost`] and marks the candidate
//! unreachable. Unreachable candidates are neither activated nor probed:
//! retrying them (with backoff) is the IO side's job.
//!
//! The rules of one round:
//! 1. **Pinned.** Every pinned, reachable candidate (a configured peer or a
//!    partner peering) is active; it is activated if it is not yet. Pinned
//!    peers count toward the active total but are never deactivated or
//!    swapped, even when the pinned peers alone exceed `max_active`.
//! 2. **Gone.** An active peer that is no longer among the candidates, or is
//!    unreachable and not pinned, leaves the active set.
//! 3. **Fill.** While fewer than `min_active` peers are active, the best
//!    non-active reachable candidate is activated: lowest measured cost first,
//!    unmeasured candidates after all measured ones, ties by node id. With too
//!    few candidates, every reachable one is activated.
//! 4. **Trim.** While more than `max_active` peers are active, the worst
//!    non-pinned active peer is deactivated: highest cost first, unmeasured
//!    counted as worst, ties by node id (the greater first). A guest adopted
//!    since the last round ([`Selector::adopt`]) goes last.
//! 5. **Swap**, at most one per round to limit churn. The worst swappable
//!    active peer (not pinned, active for at least `min_hold`, cost measured)
//!    is replaced by the best measured, reachable, non-active candidate when
//!    that candidate costs at most `(100 - swap_margin_pct)`% of it, and
//!    strictly less. A peer activated or deactivated earlier in the same
//!    round takes no part in the swap. The margin absorbs measurement jitter
//!    smaller than it: with ±10 % jitter and a 30 % margin every swap is a
//!    real gain (true cost at most 0.7 × 1.1 / 0.9 ≈ 86 % of the peer it
//!    replaces), so the active set never returns to a set it left. Jitter can
//!    still delay a swap between peers less than ~20 % apart.
//! 6. **Probe.** The `max_warm` best non-active reachable candidates (measured
//!    ones by cost, then unmeasured ones), one slot kept for the best unmeasured
//!    candidate so a node keeps exploring, get a probe every round. With a
//!    [`SelectionConfig::salt`], ties and unmeasured candidates are ordered by a
//!    per-node hash, not by node id, so the nodes of an org spread their choices,
//!    so cold candidates become warm and warm ones stay measured.
//! 7. **Bounded.** The active set never exceeds
//!    `max(max_active, number of pinned candidates)`, however many candidates
//!    there are.
//!
//! Output order within a round: every [`Action::Deactivate`] first, then every
//! [`Action::Activate`], then every [`Action::Probe`]. Within a group, actions
//! follow the order of the rules above; within a rule, node id order for rules
//! 1 and 2, best first for fill and probes, worst first for trim.
//!
//! A node listed more than once is merged conservatively: reachable only if
//! every entry says so, pinned if any entry says so, the highest measured
//! cost. A `min_active` above `max_active` fills only up to `max_active`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::NodeId;

/// The kind of node, which seeds the default size of its active set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NodeRole {
    /// An ordinary node: 3 to 5 active peers.
    #[default]
    Default,
    /// A relay that carries traffic for others: 8 to 20 active peers.
    Relay,
    /// A thin node (a laptop, a sidecar): 1 to 3 active peers.
    Thin,
}

impl NodeRole {
    /// The default `(min_active, max_active)` of this role.
    pub fn active_range(self) -> (usize, usize) {
        match self {
            NodeRole::Default => (3, 5),
            NodeRole::Relay => (8, 20),
            NodeRole::Thin => (1, 3),
        }
    }
}

/// The tunables of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionConfig {
    /// Fewest active peers wanted (pinned ones included).
    pub min_active: usize,
    /// Most active peers kept (pinned peers are kept even beyond it).
    pub max_active: usize,
    /// Non-active candidates probed per round.
    pub max_warm: usize,
    /// A candidate must cost at most `(100 - swap_margin_pct)`% of the worst
    /// swappable active peer to replace it (values above 100 act as 100).
    pub swap_margin_pct: u32,
    /// An active peer is kept at least this long before it may be swapped out.
    pub min_hold: Duration,
    /// Active peers chosen not by cost but by the salted hash (one is the default when
    /// `min_active` is at least 2): nearest-peer choices alone cut an org into
    /// neighbourhoods that never meet; one "long link" per node keeps the mesh
    /// connected, as small-world overlays do. Long links are never swapped for cost.
    pub long_links: usize,
    /// Spreads ties (unmeasured candidates, equal costs) differently per node, so
    /// every node of an org does not pick and probe the same lowest ids; see
    /// [`SelectionConfig::salted`]. 0 keeps node-id order.
    pub salt: u64,
}

impl SelectionConfig {
    /// The defaults for `role`: its active range, 4 warm probes per round, a
    /// 30 % swap margin and a 60 s hold.
    pub fn for_role(role: NodeRole) -> Self {
        let (min_active, max_active) = role.active_range();
        Self {
            min_active,
            max_active,
            max_warm: 4,
            swap_margin_pct: 30,
            min_hold: Duration::from_secs(60),
            long_links: usize::from(min_active >= 2),
            salt: 0,
        }
    }

    /// The same settings with ties spread by `local`'s id.
    pub fn salted(mut self, local: &NodeId) -> Self {
        self.salt = mix(0x5452_454c_4c49_5321, local).max(1);
        self
    }
}

/// A 64-bit hash of `node` under `salt` (FNV-1a, then a SplitMix64 finalizer).
fn mix(salt: u64, node: &NodeId) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for b in node.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self::for_role(NodeRole::Default)
    }
}

/// One node the IO side knows about this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// A configured peer or partner peering: always active while reachable,
    /// never dropped, never swapped.
    pub pinned: bool,
    /// Measured link cost, lower is better; `None` when never measured (cold).
    pub cost: Option<u32>,
    /// `false` when the last dial or probe failed; such a node is never activated.
    pub reachable: bool,
}

/// What the IO side should do, returned by [`Selector::decide`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Open a session to the node; it is counted as active from now on.
    Activate(NodeId),
    /// Close the session to the node; it is no longer active.
    Deactivate(NodeId),
    /// Measure the link cost to the node cheaply, without a session.
    Probe(NodeId),
}

/// The peer-selection state of one node: its config and its active peers.
#[derive(Debug, Clone)]
pub struct Selector {
    cfg: SelectionConfig,
    /// Active peers and the instant each became active.
    active: BTreeMap<NodeId, Instant>,
    /// The active peers that are long links.
    long: BTreeSet<NodeId>,
    /// The peer adopted into the guest slot since the last round, if any: trimmed only
    /// when no other peer can be.
    guest: Option<NodeId>,
}

/// A candidate after merging duplicate entries.
#[derive(Debug, Clone, Copy)]
struct Merged {
    pinned: bool,
    reachable: bool,
    cost: Option<u32>,
}

/// Ranking key, lower is better: measured before unmeasured, then by cost, then
/// by the salted hash of the node (0 without a salt), then by node id. The worst
/// peer is the one with the greatest key.
fn rank(salt: u64, node: &NodeId, cost: Option<u32>) -> (bool, u32, u64, &NodeId) {
    let spread = if salt == 0 { 0 } else { mix(salt, node) };
    (cost.is_none(), cost.unwrap_or(u32::MAX), spread, node)
}

fn merge(candidates: &[Candidate]) -> BTreeMap<&NodeId, Merged> {
    let mut out = BTreeMap::new();
    for c in candidates {
        let (pinned, reachable, cost) = (c.pinned, c.reachable, c.cost);
        let e = out.entry(&c.node).or_insert(Merged {
            pinned,
            reachable,
            cost,
        });
        e.pinned |= pinned;
        e.reachable &= reachable;
        e.cost = e.cost.max(cost);
    }
    out
}

impl Selector {
    /// A selector with no active peers.
    pub fn new(cfg: SelectionConfig) -> Self {
        Self {
            cfg,
            active: BTreeMap::new(),
            long: BTreeSet::new(),
            guest: None,
        }
    }

    /// The active peers, sorted by node id.
    pub fn active(&self) -> impl Iterator<Item = &NodeId> {
        self.active.keys()
    }

    /// How many peers are active.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Whether `node` is active.
    pub fn is_active(&self, node: &NodeId) -> bool {
        self.active.contains_key(node)
    }

    /// Takes `node` into the active set because it opened a session to this node, if
    /// there is room: up to `max_active`, plus one guest slot. Returns whether it is
    /// active. An adopted peer is an ordinary active one from then on: trimmed or swapped
    /// by cost. The guest slot is what keeps a node below its minimum from being shut out
    /// when every other node is full (as HyParView's priority join): the full node takes
    /// it, and the next round trims one *other* peer, chosen by cost and then by the
    /// salted hash, so the deficit moves to a node that can spare a session or ends.
    /// The guest itself is trimmed only when nothing else can be: trimming it would
    /// hand the deficit straight back to the node that had it (its cost is unmeasured,
    /// so it would always rank worst), and that node would bounce from full node to
    /// full node.
    pub fn adopt(&mut self, now: Instant, node: &NodeId) -> bool {
        if self.active.contains_key(node) {
            return true;
        }
        if self.active.len() > self.cfg.max_active {
            return false;
        }
        if self.active.len() == self.cfg.max_active {
            self.guest = Some(node.clone());
        }
        self.active.insert(node.clone(), now);
        true
    }

    /// The IO side reports an active peer's session was lost (it leaves the active set).
    pub fn lost(&mut self, node: &NodeId) {
        self.active.remove(node);
        self.long.remove(node);
        if self.guest.as_ref() == Some(node) {
            self.guest = None;
        }
    }

    /// Whether `node` is active as a long link.
    pub fn is_long_link(&self, node: &NodeId) -> bool {
        self.long.contains(node)
    }

    /// Non-active reachable candidates not in `skip`, best first.
    fn ranked_idle<'a>(
        &self,
        views: &BTreeMap<&'a NodeId, Merged>,
        skip: &BTreeSet<NodeId>,
    ) -> Vec<(&'a NodeId, Option<u32>)> {
        let mut idle: Vec<_> = views
            .iter()
            .filter(|(n, v)| v.reachable && !self.active.contains_key(**n) && !skip.contains(**n))
            .map(|(n, v)| (*n, v.cost))
            .collect();
        let salt = self.cfg.salt;
        idle.sort_by(|a, b| rank(salt, a.0, a.1).cmp(&rank(salt, b.0, b.1)));
        idle
    }

    /// One round: given every candidate known now, returns what to do.
    /// Deterministic: same state + same input -> same output in the same order.
    pub fn decide(&mut self, now: Instant, candidates: &[Candidate]) -> Vec<Action> {
        let views = merge(candidates);
        let mut down: Vec<NodeId> = Vec::new();
        let mut up: Vec<NodeId> = Vec::new();

        // Rule 2: gone or unreachable (and not pinned).
        let gone: Vec<NodeId> = self
            .active
            .keys()
            .filter(|n| views.get(n).is_none_or(|v| !v.reachable && !v.pinned))
            .cloned()
            .collect();
        for n in gone {
            self.active.remove(&n);
            self.long.remove(&n);
            down.push(n);
        }

        // Rule 1: pinned and reachable means active.
        for (n, v) in &views {
            if v.pinned && v.reachable && !self.active.contains_key(*n) {
                self.active.insert((*n).clone(), now);
                up.push((*n).clone());
            }
        }

        // Long links: chosen by the salted hash among reachable candidates, whatever
        // their cost, and kept while reachable.
        let long_salt = self.cfg.salt ^ 0x4c4f_4e47_4c49_4e4b;
        while self.long.len() < self.cfg.long_links.min(self.cfg.max_active) {
            let pick = views
                .iter()
                .filter(|(n, v)| v.reachable && !v.pinned && !self.long.contains(**n))
                .min_by_key(|(n, _)| (mix(long_salt, n), **n))
                .map(|(n, _)| (*n).clone());
            let Some(pick) = pick else { break };
            if !self.active.contains_key(&pick) {
                if self.active.len() >= self.cfg.max_active {
                    break;
                }
                self.active.insert(pick.clone(), now);
                up.push(pick.clone());
            }
            self.long.insert(pick);
        }

        // Rule 3: fill up to min_active (never beyond max_active).
        let target = self.cfg.min_active.min(self.cfg.max_active);
        let missing = target.saturating_sub(self.active.len());
        for (n, _) in self
            .ranked_idle(&views, &BTreeSet::new())
            .into_iter()
            .take(missing)
        {
            self.active.insert(n.clone(), now);
            up.push(n.clone());
        }

        // Rule 4: trim down to max_active, worst non-pinned first; a long link goes
        // only when nothing else is left to trim (pinned peers took the room).
        let salt = self.cfg.salt;
        let pinned = |n: &NodeId| views.get(n).is_some_and(|v| v.pinned);
        let cost = |n: &NodeId| views.get(n).and_then(|v| v.cost);
        let guest = self.guest.take();
        let is_guest = |n: &NodeId| guest.as_ref() == Some(n);
        while self.active.len() > self.cfg.max_active {
            let worst = self
                .active
                .keys()
                .filter(|n| !pinned(n) && !self.long.contains(*n))
                .max_by(|a, b| {
                    (!is_guest(a), rank(salt, a, cost(a)))
                        .cmp(&(!is_guest(b), rank(salt, b, cost(b))))
                })
                .or_else(|| self.long.iter().find(|n| !pinned(n)))
                .cloned();
            let Some(worst) = worst else { break };
            self.active.remove(&worst);
            self.long.remove(&worst);
            down.push(worst);
        }

        // Rule 5: at most one swap, past min_hold and past the margin.
        let changed: BTreeSet<NodeId> = down.iter().chain(up.iter()).cloned().collect();
        let worst = self
            .active
            .iter()
            .filter(|(n, since)| {
                !pinned(n)
                    && !self.long.contains(*n)
                    && !changed.contains(*n)
                    && now.saturating_duration_since(**since) >= self.cfg.min_hold
            })
            .filter_map(|(n, _)| cost(n).map(|c| (n, c)))
            .max_by(|a, b| rank(salt, a.0, Some(a.1)).cmp(&rank(salt, b.0, Some(b.1))))
            .map(|(n, c)| (n.clone(), c));
        if let Some((worst, worst_cost)) = worst {
            let keep_pct = u64::from(100u32.saturating_sub(self.cfg.swap_margin_pct));
            let best = self
                .ranked_idle(&views, &changed)
                .into_iter()
                .find_map(|(n, c)| c.map(|c| (n.clone(), c)));
            if let Some((best, best_cost)) = best {
                if best_cost < worst_cost
                    && u64::from(best_cost) * 100 <= u64::from(worst_cost) * keep_pct
                {
                    self.active.remove(&worst);
                    down.push(worst);
                    self.active.insert(best.clone(), now);
                    up.push(best);
                }
            }
        }

        // Rule 6: probe the best idle candidates, keeping one probe for the best
        // unmeasured one so that every node keeps exploring beyond what it knows.
        let idle = self.ranked_idle(&views, &BTreeSet::new());
        let mut probes: Vec<(&NodeId, Option<u32>)> = Vec::with_capacity(self.cfg.max_warm);
        let explore = idle.iter().find(|(_, c)| c.is_none()).copied();
        let measured_slots = if explore.is_some() && self.cfg.max_warm >= 2 {
            self.cfg.max_warm - 1
        } else {
            self.cfg.max_warm
        };
        probes.extend(idle.iter().take(measured_slots).copied());
        if let Some(e) = explore {
            if probes.len() < self.cfg.max_warm && !probes.iter().any(|(n, _)| *n == e.0) {
                probes.push(e);
            }
        }
        probes.extend(
            idle.iter()
                .filter(|(n, _)| !probes.iter().any(|(p, _)| p == n))
                .take(self.cfg.max_warm.saturating_sub(probes.len()))
                .copied()
                .collect::<Vec<_>>(),
        );
        let probes = probes.into_iter();

        let mut out = Vec::with_capacity(down.len() + up.len() + self.cfg.max_warm);
        out.extend(down.into_iter().map(Action::Deactivate));
        out.extend(up.into_iter().map(Action::Activate));
        out.extend(probes.map(|(n, _)| Action::Probe(n.clone())));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Unit tests, and the helpers the property tests share.
    use super::*;

    pub(crate) const HOLD: Duration = Duration::from_secs(60);

    pub(crate) fn id(i: usize) -> NodeId {
        NodeId::new(&format!("acme/n{i:02}")).unwrap()
    }
    fn ids(is: &[usize]) -> Vec<NodeId> {
        is.iter().map(|&i| id(i)).collect()
    }
    pub(crate) fn c(i: usize, cost: Option<u32>) -> Candidate {
        let (pinned, reachable) = (false, true);
        Candidate {
            node: id(i),
            pinned,
            cost,
            reachable,
        }
    }
    fn pin(i: usize, cost: Option<u32>) -> Candidate {
        Candidate {
            pinned: true,
            ..c(i, cost)
        }
    }
    /// Cost rules only (no long link).
    fn cfg(min_active: usize, max_active: usize) -> SelectionConfig {
        SelectionConfig {
            min_active,
            max_active,
            long_links: 0,
            ..SelectionConfig::default()
        }
    }
    fn act(s: &Selector) -> Vec<NodeId> {
        s.active().cloned().collect()
    }
    /// `[deactivated, activated, probed]`, each in output order.
    pub(crate) fn split(out: &[Action]) -> [Vec<NodeId>; 3] {
        let mut g: [Vec<NodeId>; 3] = Default::default();
        for a in out {
            let (i, n) = match a {
                Action::Deactivate(n) => (0, n),
                Action::Activate(n) => (1, n),
                Action::Probe(n) => (2, n),
            };
            g[i].push(n.clone());
        }
        g
    }

    #[test]
    fn role_ranges_and_defaults() {
        assert_eq!(NodeRole::Default.active_range(), (3, 5));
        assert_eq!(NodeRole::Relay.active_range(), (8, 20));
        assert_eq!(NodeRole::Thin.active_range(), (1, 3));
        let r = SelectionConfig::for_role(NodeRole::Relay);
        assert_eq!((r.min_active, r.max_active, r.max_warm), (8, 20, 4));
        assert_eq!((r.swap_margin_pct, r.min_hold), (30, HOLD));
        assert_eq!(
            SelectionConfig::default(),
            SelectionConfig::for_role(NodeRole::Default)
        );
    }

    #[test]
    fn fills_to_min_best_first_unmeasured_last() {
        let mut s = Selector::new(cfg(3, 5));
        let cands = [
            c(1, None),
            c(2, Some(50)),
            c(3, Some(10)),
            c(4, None),
            c(5, Some(30)),
        ];
        let [_, up, probe] = split(&s.decide(Instant::now(), &cands));
        assert_eq!((up, probe), (ids(&[3, 5, 2]), ids(&[1, 4])));
        // Two measured: the third is the smallest unmeasured id; cost ties by id.
        let mut s = Selector::new(cfg(3, 5));
        let cands = [c(9, None), c(1, None), c(5, Some(7)), c(4, Some(7))];
        let [_, up, probe] = split(&s.decide(Instant::now(), &cands));
        assert_eq!((up, probe), (ids(&[4, 5, 1]), ids(&[9])));
    }

    #[test]
    fn fills_with_what_there_is_and_drops_vanished() {
        let mut s = Selector::new(cfg(3, 5));
        let t = Instant::now();
        assert_eq!(s.decide(t, &[]), vec![]);
        assert_eq!(
            split(&s.decide(t, &[c(1, None), c(2, Some(5))]))[1],
            ids(&[2, 1])
        );
        assert_eq!(
            s.decide(t, &[c(2, Some(5))]),
            vec![Action::Deactivate(id(1))]
        );
        s.lost(&id(2));
        assert_eq!(s.active_len(), 0);
        assert_eq!(s.decide(t, &[c(2, Some(5))]), vec![Action::Activate(id(2))]);
    }

    #[test]
    fn unreachable_never_activated_nor_probed_and_dropped_when_active() {
        let mut s = Selector::new(cfg(3, 5));
        let t = Instant::now();
        let mut cands: Vec<_> = (1..=4).map(|i| c(i, Some(i as u32))).collect();
        cands[0].reachable = false;
        assert_eq!(split(&s.decide(t, &cands))[1], ids(&[2, 3, 4]));
        cands[1].reachable = false;
        assert_eq!(s.decide(t, &cands), vec![Action::Deactivate(id(2))]);
        assert_eq!(act(&s), ids(&[3, 4]));
        // A duplicate entry saying unreachable wins.
        cands.push(Candidate {
            reachable: false,
            ..c(3, Some(3))
        });
        assert_eq!(s.decide(t, &cands), vec![Action::Deactivate(id(3))]);
    }

    #[test]
    fn pinned_always_active_never_dropped_nor_swapped() {
        let mut s = Selector::new(cfg(1, 2));
        let mut t = Instant::now();
        let mut cands: Vec<_> = (1..=4).map(|i| pin(i, Some(1000))).collect();
        cands.push(c(5, Some(1)));
        assert_eq!(split(&s.decide(t, &cands))[1], ids(&[1, 2, 3, 4]));
        for _ in 0..3 {
            t += HOLD * 2;
            assert_eq!(s.decide(t, &cands), vec![Action::Probe(id(5))]);
        }
        // An active pinned peer stays while unreachable; an unreachable pinned
        // candidate is not activated.
        cands[0].reachable = false;
        cands.push(Candidate {
            reachable: false,
            ..pin(6, None)
        });
        assert_eq!(s.decide(t, &cands), vec![Action::Probe(id(5))]);
        assert_eq!(act(&s), ids(&[1, 2, 3, 4]));
    }

    #[test]
    fn trims_worst_first_unmeasured_worst_ties_greater_id_first() {
        let mut s = Selector::new(cfg(1, 2));
        let t = Instant::now();
        let costs = [Some(5), None, Some(9), Some(9), Some(1)];
        let pinned: Vec<_> = costs
            .iter()
            .enumerate()
            .map(|(i, &k)| pin(i + 1, k))
            .collect();
        s.decide(t, &pinned);
        let free: Vec<_> = costs
            .iter()
            .enumerate()
            .map(|(i, &k)| c(i + 1, k))
            .collect();
        let [down, up, probe] = split(&s.decide(t, &free));
        assert_eq!(
            (down, up, probe),
            (ids(&[2, 4, 3]), vec![], ids(&[3, 4, 2]))
        );
        assert_eq!(act(&s), ids(&[1, 5]));
    }

    #[test]
    fn one_swap_per_round_after_hold_past_margin() {
        let mut s = Selector::new(cfg(2, 2));
        let t0 = Instant::now();
        s.decide(t0, &[c(1, Some(100)), c(2, Some(90))]);
        let cands = [
            c(1, Some(100)),
            c(2, Some(90)),
            c(3, Some(60)),
            c(4, Some(50)),
        ];
        let probes = vec![Action::Probe(id(4)), Action::Probe(id(3))];
        assert_eq!(s.decide(t0 + HOLD / 2, &cands), probes, "before min_hold");
        let t1 = t0 + HOLD;
        let out = s.decide(t1, &cands);
        assert_eq!(
            out[..2],
            [Action::Deactivate(id(1)), Action::Activate(id(4))]
        );
        assert_eq!(split(&out), [ids(&[1]), ids(&[4]), ids(&[3, 1])]);
        // Next round: 60 <= 70 % of 90 swaps too; then nothing is left to gain.
        assert_eq!(
            split(&s.decide(t1 + HOLD, &cands))[..2],
            [ids(&[2]), ids(&[3])]
        );
        assert_eq!(
            split(&s.decide(t1 + HOLD * 2, &cands))[..2],
            [vec![], vec![]]
        );
        // The margin: 71 does not replace 100, 70 does; unmeasured never swaps in.
        let mut s = Selector::new(cfg(1, 1));
        s.decide(t0, &[c(1, Some(100))]);
        assert_eq!(
            split(&s.decide(t1, &[c(1, Some(100)), c(2, Some(71))]))[1],
            vec![]
        );
        let out = s.decide(t1, &[c(1, Some(100)), c(2, Some(70)), c(3, None)]);
        assert_eq!(split(&out)[1], ids(&[2]));
        let out = s.decide(t1 + HOLD * 2, &[c(2, Some(70)), c(3, None)]);
        assert_eq!(split(&out)[1], vec![]);
    }

    #[test]
    fn probes_limited_to_max_warm_best_first() {
        let mut s = Selector::new(SelectionConfig::for_role(NodeRole::Thin));
        let mut cands: Vec<_> = (1..=10).map(|i| c(i, None)).collect();
        cands[7].cost = Some(3);
        cands[8].cost = Some(2);
        cands[2].reachable = false;
        let out = s.decide(Instant::now(), &cands);
        assert_eq!(split(&out), [vec![], ids(&[9]), ids(&[8, 1, 2, 4])]);
    }

    #[test]
    fn a_probe_slot_is_kept_for_an_unmeasured_candidate() {
        let mut s = Selector::new(SelectionConfig::for_role(NodeRole::Thin));
        let mut cands: Vec<_> = (1..=10).map(|i| c(i, Some(10 + i as u32))).collect();
        cands.extend((11..=15).map(|i| c(i, None)));
        let out = s.decide(Instant::now(), &cands);
        // Thin: one active (the cheapest), then three measured probes and one cold.
        assert_eq!(split(&out), [vec![], ids(&[1]), ids(&[2, 3, 4, 11])]);
    }

    #[test]
    fn salted_nodes_spread_their_choices_among_equal_candidates() {
        let cands: Vec<_> = (1..=100).map(|i| c(i, None)).collect();
        let chosen = |local: &str| {
            let cfg = SelectionConfig::default().salted(&NodeId::new(local).expect("id"));
            let mut s = Selector::new(cfg);
            let out = s.decide(Instant::now(), &cands);
            split(&out)[1].clone()
        };
        let (a, b) = (chosen("acme/a"), chosen("acme/b"));
        assert_eq!((a.len(), b.len()), (3, 3));
        assert_ne!(a, b, "two nodes pick different unmeasured peers");
        assert_eq!(a, chosen("acme/a"), "deterministic for a node");
    }

    #[test]
    fn a_long_link_is_kept_whatever_its_cost() {
        let cfg = SelectionConfig {
            min_active: 2,
            max_active: 2,
            ..SelectionConfig::default()
        }
        .salted(&id(0));
        assert_eq!(cfg.long_links, 1);
        let mut s = Selector::new(cfg);
        let t0 = Instant::now();
        let cands: Vec<_> = (1..=20).map(|i| c(i, Some(10 * i as u32))).collect();
        s.decide(t0, &cands);
        let long: Vec<NodeId> = s.active().filter(|n| s.is_long_link(n)).cloned().collect();
        assert_eq!(long.len(), 1);
        // Rounds later, however expensive, the long link stays; the other slot is the
        // cheapest candidate.
        for round in 1..10u32 {
            s.decide(t0 + HOLD * round, &cands);
        }
        assert!(s.is_active(&long[0]));
        assert!(s.is_active(&id(1)) || long[0] == id(1));
    }

    #[test]
    fn an_inbound_peer_is_adopted_only_while_there_is_room() {
        let cfg = SelectionConfig {
            min_active: 1,
            max_active: 2,
            long_links: 0,
            ..SelectionConfig::default()
        };
        let mut s = Selector::new(cfg);
        let t0 = Instant::now();
        assert!(s.adopt(t0, &id(1)));
        assert!(s.adopt(t0, &id(1)), "adopting twice is harmless");
        assert!(s.adopt(t0, &id(2)));
        assert!(s.adopt(t0, &id(3)), "one guest beyond max_active");
        assert!(!s.adopt(t0, &id(4)), "full at max_active + 1");
        assert_eq!(s.active_len(), 3);
        // The next round trims back to max_active, one peer.
        let cands = [c(1, Some(10)), c(2, Some(10)), c(3, Some(10)), c(4, None)];
        let actions = s.decide(t0, &cands);
        let trimmed = actions
            .iter()
            .filter(|a| matches!(a, Action::Deactivate(_)))
            .count();
        assert_eq!(trimmed, 1, "{actions:?}");
        assert_eq!(s.active_len(), 2);
        let actions = s.decide(t0, &cands);
        assert!(
            actions.iter().all(|a| matches!(a, Action::Probe(_))),
            "stable: {actions:?}"
        );
        assert!(s.adopt(t0, &id(4)), "a guest again");
    }

    #[test]
    fn the_guest_stays_and_an_established_peer_makes_room() {
        let mut s = Selector::new(cfg(1, 2));
        let t0 = Instant::now();
        assert!(s.adopt(t0, &id(1)));
        assert!(s.adopt(t0, &id(2)));
        assert!(s.adopt(t0, &id(3)), "the guest");
        // The guest is unmeasured, so by cost alone it would be trimmed at once.
        let cands = [c(1, Some(10)), c(2, Some(20)), c(3, None)];
        let [down, up, _] = split(&s.decide(t0, &cands));
        assert_eq!(down, ids(&[2]), "the worst established peer goes");
        assert!(up.is_empty());
        assert!(s.is_active(&id(3)));
        // From then on it is an ordinary peer: a later guest displaces the worst,
        // which may be it.
        assert!(s.adopt(t0, &id(4)));
        let cands = [c(1, Some(10)), c(3, Some(30)), c(4, None)];
        let [down, _, _] = split(&s.decide(t0, &cands));
        assert_eq!(down, ids(&[3]));
        // A guest alone above max (every other peer pinned) is trimmed all the same.
        let mut s = Selector::new(cfg(1, 1));
        let pinned = [pin(1, Some(10)), c(2, None)];
        s.decide(t0, &pinned);
        assert!(s.adopt(t0, &id(2)));
        let [down, _, _] = split(&s.decide(t0, &pinned));
        assert_eq!(down, ids(&[2]));
    }
}
