//! The event loop of the simulator.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use trellis_routing::scoring::{link_cost, CostInputs, ScoreConfig};
use trellis_routing::{
    Input, Message, NodeId, Output, PeerConfig, ProtocolHint, Router, RouterConfig, ServiceName,
};

use super::check::{classify, walk, Walk};
use super::SimSigs;
use crate::rng::Rng;
use crate::topology::{mirror, Topology};

/// Settings shared by every node and link.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// MRAI-like batching interval of every router.
    pub mrai: Duration,
    /// How long a neighbour takes to notice a dead link or node (hold timer).
    pub detect: Duration,
    /// Keep a lost neighbour's paths as stale (graceful restart) instead of
    /// withdrawing them at once.
    pub graceful_restart: bool,
    /// Seed of loss draws and of the per-link draws of `spread`.
    pub seed: u64,
    /// How far each link's delay and loss may stray from the common [`LinkParams`].
    pub spread: LinkSpread,
    /// Each router's cost to a neighbour is the scoring formula's
    /// ([`link_cost`]: base 10, full trust, RTT twice that link's delay, that
    /// link's loss) instead of the common delay in milliseconds.
    pub scored_costs: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            mrai: Duration::from_millis(50),
            detect: Duration::from_millis(300),
            graceful_restart: false,
            seed: 1,
            spread: LinkSpread::default(),
            scored_costs: false,
        }
    }
}

/// Per-link variation: each link draws its own delay and loss once, when the
/// simulator is built, from the seed (the default, zero, gives every link the
/// common [`LinkParams`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkSpread {
    /// A link's one-way delay is uniform in `[delay, delay + delay_spread]`.
    pub delay_spread: Duration,
    /// A link's loss is uniform in `[loss, max(loss, loss_max)]`.
    pub loss_max: f64,
}

impl LinkSpread {
    /// The parameters of one link: `common` moved by one draw each from `rng`.
    fn draw(&self, common: LinkParams, rng: &mut Rng) -> LinkParams {
        let (d, l) = (rng.unit(), rng.unit());
        let loss_span = (self.loss_max.min(1.0) - common.loss).max(0.0);
        LinkParams {
            delay: common.delay.saturating_add(self.delay_spread.mul_f64(d)),
            loss: common.loss + loss_span * l,
        }
    }
}

/// The scoring formula's cost of a link with `params`, everything else perfect.
pub fn scored_cost(params: LinkParams) -> u32 {
    let inputs = CostInputs {
        base_cost: 10,
        trust: 100,
        rtt: params.delay.saturating_mul(2),
        loss: params.loss,
        failures: 0,
    };
    link_cost(&inputs, &ScoreConfig::default())
}

/// Delay and loss of one link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// One-way delay.
    pub delay: Duration,
    /// Probability that one transmission of a message is lost (0..1).
    pub loss: f64,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            loss: 0.0,
        }
    }
}

struct Link {
    a: usize,
    b: usize,
    params: LinkParams,
    /// The cost both ends give the link.
    cost: u32,
    up: bool,
    epoch: u32,
    /// Last delivery time per direction, to keep each direction in order.
    last: [u64; 2],
    /// When both ends notice the last cut (their sessions go down then).
    down_at: u64,
}

enum Ev {
    Deliver {
        link: usize,
        epoch: u32,
        from: usize,
        to: usize,
        msg: Message,
    },
    Up {
        link: usize,
        epoch: u32,
        node: usize,
        peer: usize,
    },
    Down {
        node: usize,
        peer: usize,
    },
    Tick {
        node: usize,
    },
    Originate {
        node: usize,
        service: ServiceName,
    },
    Withdraw {
        node: usize,
        service: ServiceName,
    },
    FailNode {
        node: usize,
    },
    Cut {
        link: usize,
    },
    Heal {
        link: usize,
    },
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // Reversed: BinaryHeap is a max-heap and we want the earliest event.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Counters of one run (or of one phase, after [`Sim::reset_counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Messages sent, all kinds.
    pub messages: u64,
    /// Update batches sent.
    pub updates: u64,
    /// Manifests sent.
    pub manifests: u64,
    /// Announcements inside update batches.
    pub announcements: u64,
    /// Withdrawals inside update batches.
    pub withdrawals: u64,
    /// Best-route changes, summed over nodes.
    pub best_changes: u64,
    /// Virtual time (µs) of the last best-route change.
    pub last_change_us: u64,
}

/// A (node, service) pair seen looping or black-holed.
pub type Sighting = (usize, ServiceName);

/// Loops and black holes seen while watching.
#[derive(Debug, Default)]
struct Watch {
    /// Per service, the nodes whose forwarding may have changed since the
    /// last check (their best route changed, or their next hop died).
    changed: BTreeMap<ServiceName, BTreeSet<usize>>,
    exclude: HashSet<ServiceName>,
    looped: HashSet<(usize, ServiceName)>,
    holed: HashSet<(usize, ServiceName)>,
}

/// No next hop: no route, or the node originates the service.
const NO_HOP: u32 = u32::MAX;

/// Each node's next hop for one service, as its last `BestChanged` said,
/// and the reverse: which nodes forward to each node.
struct Forwarding {
    next: Vec<u32>,
    upstream: Vec<Vec<u32>>,
}

impl Forwarding {
    fn new(n: usize) -> Self {
        Self {
            next: vec![NO_HOP; n],
            upstream: vec![Vec::new(); n],
        }
    }

    fn set(&mut self, node: usize, hop: u32) {
        let old = std::mem::replace(&mut self.next[node], hop);
        if old == hop {
            return;
        }
        if let Some(up) = self.upstream.get_mut(old as usize) {
            if let Some(i) = up.iter().position(|u| *u as usize == node) {
                up.swap_remove(i);
            }
        }
        if let Some(up) = self.upstream.get_mut(hop as usize) {
            up.push(node as u32);
        }
    }

    /// `from` and every node whose next-hop chain reaches one of them.
    fn upstream_closure(&self, from: &BTreeSet<usize>) -> Vec<usize> {
        let mut seen = vec![false; self.next.len()];
        let mut out: Vec<usize> = Vec::new();
        for &x in from {
            if x < seen.len() && !std::mem::replace(&mut seen[x], true) {
                out.push(x);
            }
        }
        let mut i = 0;
        while i < out.len() {
            for &u in &self.upstream[out[i]] {
                if !std::mem::replace(&mut seen[u as usize], true) {
                    out.push(u as usize);
                }
            }
            i += 1;
        }
        out
    }
}

/// N routers, their links, and a virtual clock.
pub struct Sim {
    cfg: SimConfig,
    base: Instant,
    now: u64,
    routers: Vec<Router>,
    alive: Vec<bool>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    links: Vec<Link>,
    adj: HashMap<(usize, usize), usize>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    rng: Rng,
    next_tick: Vec<Option<u64>>,
    counters: Counters,
    watch: Option<Watch>,
    /// Forwarding per service, kept whether or not anyone watches, so a
    /// watch can find the nodes upstream of a change.
    forwarding: HashMap<ServiceName, Forwarding>,
}

/// Microseconds, saturating (a timer of `Duration::MAX` must not wrap around).
fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Sim {
    /// Builds the routers and links of `topo`; nothing runs until [`Sim::start`].
    pub fn new(topo: &Topology, link: LinkParams, cfg: SimConfig) -> Self {
        let base = Instant::now();
        let n = topo.nodes.len();
        let diameter = topo.diameter_estimate();
        let mut routers: Vec<Router> = topo
            .nodes
            .iter()
            .map(|id| {
                let mut rc = RouterConfig::new(id.clone());
                rc.mrai = cfg.mrai;
                // As an operator would: the limit must exceed the diameter
                // (a long line), but no more, since it also bounds how far
                // path exploration runs after a withdrawal.
                rc.max_path_len = rc.max_path_len.max(diameter + 1);
                Router::new(rc, Box::new(SimSigs), base)
            })
            .collect();
        let mut links = Vec::new();
        let mut adj = HashMap::new();
        let common_cost = (link.delay.as_millis() as u32).max(1);
        // A stream of its own, so the loss draws of `send` stay as they were.
        let mut draws = Rng::new(cfg.seed ^ 0x4C49_4E4B_5350_5244);
        for l in &topo.links {
            if l.a == l.b || adj.contains_key(&(l.a, l.b)) {
                continue;
            }
            let params = cfg.spread.draw(link, &mut draws);
            let cost = if cfg.scored_costs {
                scored_cost(params)
            } else {
                common_cost
            };
            let mut ca = PeerConfig::new(topo.nodes[l.b].clone(), l.role);
            let mut cb = PeerConfig::new(topo.nodes[l.a].clone(), mirror(l.role));
            for c in [&mut ca, &mut cb] {
                c.link_cost = cost;
                c.graceful_restart = cfg.graceful_restart;
            }
            if routers[l.a].add_peer(ca).is_err() || routers[l.b].add_peer(cb).is_err() {
                continue;
            }
            adj.insert((l.a, l.b), links.len());
            adj.insert((l.b, l.a), links.len());
            links.push(Link {
                a: l.a,
                b: l.b,
                params,
                cost,
                up: true,
                epoch: 0,
                last: [0, 0],
                down_at: 0,
            });
        }
        Self {
            rng: Rng::new(cfg.seed),
            cfg,
            base,
            now: 0,
            routers,
            alive: vec![true; n],
            ids: topo.nodes.clone(),
            index: topo
                .nodes
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect(),
            links,
            adj,
            queue: BinaryHeap::new(),
            seq: 0,
            next_tick: vec![None; n],
            counters: Counters::default(),
            watch: None,
            forwarding: HashMap::new(),
        }
    }

    /// Brings every link's session up at the current time.
    pub fn start(&mut self) {
        for i in 0..self.links.len() {
            self.schedule_up(i, self.now);
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn schedule_up(&mut self, link: usize, at: u64) {
        let l = &self.links[link];
        let (a, b, epoch) = (l.a, l.b, l.epoch);
        self.push(
            at,
            Ev::Up {
                link,
                epoch,
                node: a,
                peer: b,
            },
        );
        self.push(
            at,
            Ev::Up {
                link,
                epoch,
                node: b,
                peer: a,
            },
        );
    }

    /// The current virtual time.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    /// Node ids by index.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Index of a node id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// A node's router.
    pub fn router(&self, i: usize) -> &Router {
        &self.routers[i]
    }

    /// Whether a node is alive.
    pub fn alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// Whether the link between two nodes exists and is up.
    pub fn link_up(&self, a: usize, b: usize) -> bool {
        self.adj
            .get(&(a, b))
            .is_some_and(|l| self.links[*l].up && self.alive[a] && self.alive[b])
    }

    /// Number of links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The delay and loss of the link between two nodes, and the cost both ends
    /// give it (whether or not it is up); `None` if there is no such link.
    pub fn link(&self, a: usize, b: usize) -> Option<(LinkParams, u32)> {
        self.adj.get(&(a, b)).map(|l| {
            let l = &self.links[*l];
            (l.params, l.cost)
        })
    }

    /// Every link as `(a, b)` node indices, in the order they were built.
    pub fn link_ends(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.links.iter().map(|l| (l.a, l.b))
    }

    /// Counters since the start or the last reset.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Zeroes the counters (to measure one phase).
    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
    }

    /// Schedules node `i` to originate `service` after `delay`.
    pub fn originate(&mut self, i: usize, service: ServiceName, delay: Duration) {
        self.push(
            self.now.saturating_add(us(delay)),
            Ev::Originate { node: i, service },
        );
    }

    /// Schedules node `i` to stop originating `service` after `delay`.
    pub fn withdraw(&mut self, i: usize, service: ServiceName, delay: Duration) {
        self.push(
            self.now.saturating_add(us(delay)),
            Ev::Withdraw { node: i, service },
        );
    }

    /// Schedules the failure of node `i` after `delay`.
    pub fn fail_node(&mut self, i: usize, delay: Duration) {
        self.push(self.now.saturating_add(us(delay)), Ev::FailNode { node: i });
    }

    /// Schedules a cut of the link `a`–`b` after `delay`; false if no such link.
    pub fn cut_link(&mut self, a: usize, b: usize, delay: Duration) -> bool {
        let Some(&link) = self.adj.get(&(a, b)) else {
            return false;
        };
        self.push(self.now.saturating_add(us(delay)), Ev::Cut { link });
        true
    }

    /// Schedules the repair of the link `a`–`b` after `delay`.
    pub fn heal_link(&mut self, a: usize, b: usize, delay: Duration) -> bool {
        let Some(&link) = self.adj.get(&(a, b)) else {
            return false;
        };
        self.push(self.now.saturating_add(us(delay)), Ev::Heal { link });
        true
    }

    /// Starts recording loops and black holes, ignoring `exclude` (services
    /// that are meant to become unreachable, such as a failed node's).
    pub fn watch(&mut self, exclude: HashSet<ServiceName>) {
        self.watch = Some(Watch {
            exclude,
            ..Watch::default()
        });
    }

    /// Stops watching; returns the (node, service) pairs that looped and the
    /// ones that were black-holed, counting only services the node reaches
    /// again at the end (an unreachable service is not a transient fault).
    pub fn unwatch(&mut self) -> (Vec<Sighting>, Vec<Sighting>) {
        let Some(w) = self.watch.take() else {
            return (Vec::new(), Vec::new());
        };
        let reachable = |(n, s): &(usize, ServiceName)| {
            self.alive[*n] && matches!(walk(self, *n, s), Walk::Delivered { .. })
        };
        let mut looped: Vec<_> = w.looped.into_iter().filter(reachable).collect();
        let mut holed: Vec<_> = w.holed.into_iter().filter(reachable).collect();
        looped.sort();
        holed.sort();
        (looped, holed)
    }

    /// Runs events until none is left or virtual time passes `limit`.
    /// Returns whether the network went quiet.
    pub fn run(&mut self, limit: Duration) -> bool {
        let limit = self.now.saturating_add(us(limit));
        while let Some(top) = self.queue.peek() {
            if top.at > limit {
                self.check_watch();
                return false;
            }
            let Some(q) = self.queue.pop() else { break };
            if q.at > self.now {
                self.check_watch();
                self.now = q.at;
            }
            self.dispatch(q.ev);
        }
        self.check_watch();
        true
    }

    /// Runs every event of the next instant that has one (and the watch's
    /// check after it); false if no event is left.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.queue.peek().map(|q| q.at) else {
            return false;
        };
        self.run(Duration::from_micros(at.saturating_sub(self.now)));
        true
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                link,
                epoch,
                from,
                to,
                msg,
            } => {
                let l = &self.links[link];
                if !l.up || l.epoch != epoch || !self.alive[to] {
                    return;
                }
                let peer = self.ids[from].clone();
                let input = match msg {
                    Message::Update(batch) => Input::Update { peer, batch },
                    Message::EndOfTable => Input::EndOfTable { peer },
                    Message::Manifest(manifest) => Input::Manifest {
                        from: Some(peer),
                        manifest,
                    },
                };
                self.feed(to, input);
            }
            Ev::Up {
                link,
                epoch,
                node,
                peer,
            } => {
                let l = &self.links[link];
                if l.up && l.epoch == epoch && self.alive[node] && self.alive[peer] {
                    let peer = self.ids[peer].clone();
                    self.feed(node, Input::SessionUp { peer });
                }
            }
            Ev::Down { node, peer } => {
                if self.alive[node] {
                    let peer = self.ids[peer].clone();
                    let graceful = self.cfg.graceful_restart;
                    self.feed(node, Input::SessionDown { peer, graceful });
                }
            }
            Ev::Tick { node } => {
                if self.alive[node] && self.next_tick[node] == Some(self.now) {
                    self.next_tick[node] = None;
                    self.feed(node, Input::Tick);
                }
            }
            Ev::Originate { node, service } => {
                if self.alive[node] {
                    let protocol = ProtocolHint::Tcp;
                    self.feed(node, Input::Originate { service, protocol });
                }
            }
            Ev::Withdraw { node, service } => {
                if self.alive[node] {
                    self.feed(node, Input::StopOriginating { service });
                }
            }
            Ev::FailNode { node } => {
                if !std::mem::replace(&mut self.alive[node], false) {
                    return;
                }
                // Whoever forwards to it black-holes from now on, before any
                // route changes: a watch has to look at them.
                self.next_hop_died(|_, hop| hop == node);
                let detect = self.now.saturating_add(us(self.cfg.detect));
                for i in 0..self.links.len() {
                    let (a, b) = (self.links[i].a, self.links[i].b);
                    if a == node || b == node {
                        let other = if a == node { b } else { a };
                        self.links[i].epoch += 1;
                        self.push(
                            detect,
                            Ev::Down {
                                node: other,
                                peer: node,
                            },
                        );
                    }
                }
            }
            Ev::Cut { link } => {
                let l = &mut self.links[link];
                if !std::mem::replace(&mut l.up, false) {
                    return;
                }
                l.epoch += 1;
                let (a, b) = (l.a, l.b);
                self.next_hop_died(|from, hop| (from, hop) == (a, b) || (from, hop) == (b, a));
                let detect = self.now.saturating_add(us(self.cfg.detect));
                self.links[link].down_at = detect;
                self.push(detect, Ev::Down { node: a, peer: b });
                self.push(detect, Ev::Down { node: b, peer: a });
            }
            Ev::Heal { link } => {
                let l = &mut self.links[link];
                if std::mem::replace(&mut l.up, true) {
                    return;
                }
                l.epoch += 1;
                // One round trip for the handshake, and never before both ends noticed
                // the cut: a link healed before its sessions went down still loses them
                // (what was sent meanwhile is gone), then comes back with a full table.
                let at = self
                    .now
                    .saturating_add(us(l.params.delay).saturating_mul(2))
                    .max(l.down_at.saturating_add(1));
                self.schedule_up(link, at);
            }
        }
    }

    /// Feeds an input to a node and routes its outputs.
    fn feed(&mut self, node: usize, input: Input) {
        let now = self.base + Duration::from_micros(self.now);
        self.routers[node].handle(now, input);
        while let Some(out) = self.routers[node].poll_output() {
            self.on_output(node, out);
        }
        if let Some(t) = self.routers[node].poll_timeout() {
            let at = us(t.saturating_duration_since(self.base)).max(self.now);
            if self.next_tick[node] != Some(at) {
                self.next_tick[node] = Some(at);
                self.push(at, Ev::Tick { node });
            }
        }
    }

    fn on_output(&mut self, node: usize, out: Output) {
        match out {
            Output::Send { peer, message } => {
                let Some(&to) = self.index.get(&peer) else {
                    return;
                };
                self.send(node, to, message);
            }
            Output::Disconnect { peer, .. } => {
                // The peer sees the close after one link delay; no redial.
                if let Some(&to) = self.index.get(&peer) {
                    if let Some(&link) = self.adj.get(&(node, to)) {
                        let at = self.now.saturating_add(us(self.links[link].params.delay));
                        self.push(
                            at,
                            Ev::Down {
                                node: to,
                                peer: node,
                            },
                        );
                    }
                }
            }
            Output::BestChanged { service, best } => {
                self.counters.best_changes += 1;
                self.counters.last_change_us = self.now;
                let hop = best
                    .and_then(|b| b.next_hop)
                    .and_then(|id| self.index.get(&id))
                    .map_or(NO_HOP, |i| *i as u32);
                let n = self.routers.len();
                match self.forwarding.get_mut(&service) {
                    Some(f) => f.set(node, hop),
                    None => {
                        let mut f = Forwarding::new(n);
                        f.set(node, hop);
                        self.forwarding.insert(service.clone(), f);
                    }
                }
                if let Some(w) = self.watch.as_mut() {
                    w.changed.entry(service).or_default().insert(node);
                }
            }
            Output::ManifestRejected { .. } => {}
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        let Some(&link) = self.adj.get(&(from, to)) else {
            return;
        };
        let c = &mut self.counters;
        c.messages += 1;
        match &msg {
            Message::Update(b) => {
                c.updates += 1;
                c.announcements += b.announce.len() as u64;
                c.withdrawals += b.withdraw.len() as u64;
            }
            Message::Manifest(_) => c.manifests += 1,
            Message::EndOfTable => {}
        }
        let (params, up, epoch) = {
            let l = &self.links[link];
            (l.params, l.up, l.epoch)
        };
        if !up {
            return;
        }
        let delay = us(params.delay);
        let rto = delay.saturating_mul(3).max(20_000);
        let mut at = self.now.saturating_add(delay);
        let mut losses = 0;
        while params.loss > 0.0 && losses < 16 && self.rng.unit() < params.loss {
            at = at.saturating_add(rto);
            losses += 1;
        }
        let dir = usize::from(from != self.links[link].a);
        let at = at.max(self.links[link].last[dir]);
        self.links[link].last[dir] = at;
        self.push(
            at,
            Ev::Deliver {
                link,
                epoch,
                from,
                to,
                msg,
            },
        );
    }

    /// Marks, for a watch, every node whose next hop for some service is gone
    /// (`dead(node, next_hop)`), though its best route has not changed yet.
    fn next_hop_died(&mut self, dead: impl Fn(usize, usize) -> bool) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        for (service, f) in &self.forwarding {
            for (node, &hop) in f.next.iter().enumerate() {
                if hop != NO_HOP && dead(node, hop as usize) {
                    w.changed.entry(service.clone()).or_default().insert(node);
                }
            }
        }
    }

    /// Walks the forwarding path of every node whose forwarding for a service
    /// may have changed since the last check: the nodes whose best route
    /// changed (or whose next hop died) and every node whose next-hop chain
    /// passes one of them (found through the reverse next-hop index, so a
    /// node that still points at a neighbour that just lost its route is
    /// walked too). Records every node whose traffic loops (on the cycle or
    /// flowing into it) or is black-holed.
    fn check_watch(&mut self) {
        let Some(mut w) = self.watch.take() else {
            return;
        };
        let changed = std::mem::take(&mut w.changed);
        let mut fates = HashMap::new();
        let mut chain = Vec::new();
        for (service, nodes) in changed {
            if w.exclude.contains(&service) {
                continue;
            }
            let starts = match self.forwarding.get(&service) {
                Some(f) => f.upstream_closure(&nodes),
                None => nodes.into_iter().collect(),
            };
            let alive = starts.into_iter().filter(|n| self.alive[*n]);
            fates.clear();
            classify(self, &service, alive, &mut fates, &mut chain);
            Self::record(&mut w, &service, &fates);
        }
        self.watch = Some(w);
    }

    /// Records the looping and black-holed nodes among `fates`.
    fn record(w: &mut Watch, service: &ServiceName, fates: &HashMap<usize, Walk>) {
        for (node, fate) in fates {
            match fate {
                Walk::Loop => {
                    w.looped.insert((*node, service.clone()));
                }
                Walk::BlackHole => {
                    w.holed.insert((*node, service.clone()));
                }
                Walk::Delivered { .. } | Walk::NoRoute => {}
            }
        }
    }

    /// Checks every alive node's forwarding for `services` right now (for
    /// black holes that no route change reveals, such as a dead next hop).
    pub fn check_all(&mut self, services: &[ServiceName]) {
        let Some(mut w) = self.watch.take() else {
            return;
        };
        let mut fates = HashMap::new();
        let mut chain = Vec::new();
        for service in services {
            if w.exclude.contains(service) {
                continue;
            }
            fates.clear();
            let alive = (0..self.routers.len()).filter(|n| self.alive[*n]);
            classify(self, service, alive, &mut fates, &mut chain);
            Self::record(&mut w, service, &fates);
        }
        self.watch = Some(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{healthy, run, SimOptions};
    use crate::topology::Shape;

    fn links(s: &Sim) -> Vec<(LinkParams, u32)> {
        s.link_ends().filter_map(|(a, b)| s.link(a, b)).collect()
    }

    #[test]
    fn without_spread_every_link_is_the_common_one() {
        let t = Topology::generate(Shape::Random, 20, 1, 3).unwrap();
        let common = LinkParams {
            delay: Duration::from_millis(7),
            loss: 0.01,
        };
        let s = Sim::new(&t, common, SimConfig::default());
        assert_eq!(links(&s).len(), s.link_count());
        for (p, cost) in links(&s) {
            assert_eq!((p.delay, p.loss, cost), (common.delay, common.loss, 7));
        }
    }

    #[test]
    fn spread_links_draw_their_own_delay_loss_and_scored_cost() {
        let t = Topology::generate(Shape::Random, 40, 1, 3).unwrap();
        let cfg = SimConfig {
            spread: LinkSpread {
                delay_spread: Duration::from_millis(40),
                loss_max: 0.02,
            },
            scored_costs: true,
            ..SimConfig::default()
        };
        let common = LinkParams::default();
        let a = links(&Sim::new(&t, common, cfg.clone()));
        assert_eq!(a, links(&Sim::new(&t, common, cfg.clone())), "same seed");
        let other = SimConfig { seed: 2, ..cfg };
        assert_ne!(a, links(&Sim::new(&t, common, other)));
        for (p, cost) in &a {
            let ms = p.delay.as_secs_f64() * 1000.0;
            assert!((10.0..=50.0).contains(&ms) && (0.0..=0.02).contains(&p.loss));
            assert_eq!(*cost, scored_cost(*p));
        }
        let costs: BTreeSet<u32> = a.iter().map(|(_, c)| *c).collect();
        assert!(costs.len() > 10, "{costs:?}");
        // 10 ms one way: RTT 20 ms, 15 ms above the floor, 1.5 units: 10 × 2.5.
        assert_eq!(scored_cost(LinkParams::default()), 25);
    }

    #[test]
    fn scored_costs_find_faster_paths_and_stay_correct() {
        let opts = |scored_costs| SimOptions {
            nodes: 40,
            shape: Shape::Random,
            orgs: 1,
            seed: 5,
            link: LinkParams::default(),
            config: SimConfig {
                spread: LinkSpread {
                    delay_spread: Duration::from_millis(40),
                    loss_max: 0.02,
                },
                scored_costs,
                ..SimConfig::default()
            },
            fail_node: Some(3),
            limit: Duration::from_secs(600),
        };
        let plain = run(&opts(false)).unwrap();
        let scored = run(&opts(true)).unwrap();
        for r in [&plain, &scored] {
            assert!(healthy(r), "{}", crate::run::summary(r));
            assert!(r.paths.pairs > 0 && r.paths.stretch.min >= 1.0);
        }
        assert!(scored.paths.mean_delay_ms < plain.paths.mean_delay_ms);
        // Equal delays: fewest hops is fastest.
        let uniform = SimOptions {
            config: SimConfig::default(),
            ..opts(false)
        };
        let r = run(&uniform).unwrap();
        assert_eq!((r.paths.stretch.min, r.paths.stretch.max), (1.0, 1.0));
    }
}
