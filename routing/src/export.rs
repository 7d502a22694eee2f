//! Export: the Adj-RIB-Out of each peer, its batching and its rules.
//!
//! The Adj-RIB-Out is not a stored copy of the table: what a peer is sent is
//! a pure function of the best path and the export rules below, so each peer
//! keeps only the services changed since its last batch and the manifest
//! versions it has been sent (docs/adr/0002-one-table.md). Batches leave at
//! most once per MRAI interval (RFC 4271 §9.2.1.1); changes in between are
//! merged, so a route that flaps inside one interval costs one entry.
//!
//! Export rules (docs/protocol.md, "Export"):
//! * never back to the peer the best path came from (split horizon);
//! * to a node of our org: everything, our node id prepended;
//! * to another org: only what is valley-free for that session's role
//!   (RFC 9234), with every internal hop collapsed into one hop of our org;
//! * never to a peer already on the path (it would drop it as a loop);
//! * the origin's manifest goes before the first route that needs it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::name::{NodeId, ServiceName};
use crate::route::{Attrs, PathHop, Relationship};
use crate::router::{later, Output, Peer, Router};
use crate::table::{best_of, PathEntry, Ranker};
use crate::update::{Message, UpdateBatch};

/// Per-peer export state.
#[derive(Default)]
pub(crate) struct AdjOut {
    pending: HashSet<ServiceName>,
    due: Option<Instant>,
    last_sent: Option<Instant>,
    manifests_sent: HashMap<NodeId, u64>,
}

impl AdjOut {
    /// Records that `version` of `origin`'s manifest goes to this peer, if the peer
    /// already had an older one (so it holds routes of that origin). Returns whether
    /// it should be sent.
    pub(crate) fn supersede_manifest(&mut self, origin: &NodeId, version: u64) -> bool {
        match self.manifests_sent.get_mut(origin) {
            Some(have) if *have < version => {
                *have = version;
                true
            }
            _ => false,
        }
    }

    /// When the pending changes are due to go out.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due.filter(|_| !self.pending.is_empty())
    }
}

/// Builds update batches of bounded size, sharing attribute sets.
struct BatchBuilder {
    max: usize,
    batch: UpdateBatch,
    index: HashMap<*const Attrs, u32>,
    done: Vec<UpdateBatch>,
}

impl BatchBuilder {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            batch: UpdateBatch::default(),
            index: HashMap::new(),
            done: Vec::new(),
        }
    }

    fn announce(&mut self, service: ServiceName, attrs: &Arc<Attrs>) {
        let next = self.batch.attrs.len() as u32;
        let i = *self.index.entry(Arc::as_ptr(attrs)).or_insert(next);
        if i == next {
            self.batch.attrs.push(attrs.clone());
        }
        self.batch.announce.push((service, i));
        self.roll();
    }

    fn withdraw(&mut self, service: ServiceName) {
        self.batch.withdraw.push(service);
        self.roll();
    }

    fn roll(&mut self) {
        if self.batch.len() >= self.max {
            self.done.push(std::mem::take(&mut self.batch));
            self.index.clear();
        }
    }

    fn finish(mut self) -> Vec<UpdateBatch> {
        if !self.batch.is_empty() {
            self.done.push(self.batch);
        }
        self.done
    }
}

impl Router {
    /// Queues `service` for every up peer whose view of it may have changed.
    /// `old`/`new` are the peer slots of the previous and current best path.
    pub(crate) fn mark_pending(
        &mut self,
        now: Instant,
        service: &ServiceName,
        old: Option<u32>,
        new: Option<u32>,
    ) {
        let mrai = self.cfg.mrai;
        for (slot, peer) in self.peers.iter_mut().enumerate() {
            let Some(peer) = peer.as_mut().filter(|p| p.up) else {
                continue;
            };
            let slot = slot as u32;
            // Split horizon: a peer never sees paths it sent us.
            if old.is_none_or(|o| o == slot) && new.is_none_or(|n| n == slot) {
                continue;
            }
            peer.out.pending.insert(service.clone());
            if new.is_none() {
                // Bad news is not paced by the MRAI (RFC 4271 9.2.1.1 applies it to
                // advertisements): a withdrawal goes out now, which cuts the time peers
                // spend exploring paths towards a destination that is gone.
                peer.out.due = Some(now);
            } else if peer.out.due.is_none() {
                let earliest = peer.out.last_sent.map_or(now, |t| later(t, mrai));
                peer.out.due = Some(earliest.max(now));
            }
        }
    }

    /// Ends graceful-restart windows and sends the batches that are due.
    pub(crate) fn run_timers(&mut self, now: Instant) {
        for slot in 1..self.peers.len() as u32 {
            let expired = self
                .peer_mut(slot)
                .filter(|p| p.stale_until.is_some_and(|t| t <= now))
                .map(|p| p.stale_until.take());
            if expired.is_some() {
                self.stats.graceful_restart_expired += 1;
                self.purge_stale(slot, now);
            }
        }
        for slot in 1..self.peers.len() as u32 {
            let due = self
                .peers
                .get(slot as usize)
                .and_then(Option::as_ref)
                .and_then(|p| p.out.due())
                .is_some_and(|t| t <= now);
            if due {
                self.flush(slot, now);
            }
        }
    }

    /// Sends a peer the changes queued for it.
    fn flush(&mut self, slot: u32, now: Instant) {
        let Some(peer) = self.peer_mut(slot) else {
            return;
        };
        let mut services: Vec<ServiceName> = peer.out.pending.drain().collect();
        peer.out.due = None;
        peer.out.last_sent = Some(now);
        services.sort_unstable();
        self.emit(slot, &services, false);
    }

    /// Sends a peer whose session just came up the whole exportable table,
    /// then the end-of-table marker.
    pub(crate) fn send_full_table(&mut self, now: Instant, slot: u32) {
        let mut services: Vec<ServiceName> = self.table.map.keys().cloned().collect();
        services.sort_unstable();
        self.emit(slot, &services, true);
        if let Some(peer) = self.peer_mut(slot) {
            peer.out.last_sent = Some(now);
            let id = peer.cfg.id.clone();
            self.outputs.push_back(Output::Send {
                peer: id,
                message: Message::EndOfTable,
            });
        }
    }

    /// Queues the batches (and manifests) that bring `slot` up to date for
    /// `services`. In a full-table dump nothing is withdrawn.
    fn emit(&mut self, slot: u32, services: &[ServiceName], full_table: bool) {
        let Some(mut sent) = self
            .peer_mut(slot)
            .map(|p| std::mem::take(&mut p.out.manifests_sent))
        else {
            return;
        };
        let Some(peer) = self.peers.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let ranker = Ranker {
            local: &self.cfg.local,
            peers: &self.facts,
        };
        let mut cache: HashMap<(*const Attrs, u32), Option<Arc<Attrs>>> = HashMap::new();
        let mut builder = BatchBuilder::new(self.cfg.send_batch);
        let mut manifests = Vec::new();
        for service in services {
            let best = self.table.map.get(service).and_then(|paths| {
                best_of(paths)?;
                paths.first()
            });
            let exported = best.and_then(|best| {
                let key = (Arc::as_ptr(&best.attrs), best.peer);
                let attrs = cache
                    .entry(key)
                    .or_insert_with(|| {
                        export_attrs(&self.cfg.local, &ranker, best, peer, slot).map(Arc::new)
                    })
                    .clone()?;
                self.policy
                    .export(&peer.cfg.id, peer.cfg.role, service, &attrs)
                    .then_some(attrs)
            });
            match exported {
                Some(attrs) => {
                    if let Some(m) = self.manifests.get(&attrs.origin) {
                        let have = sent.get(&attrs.origin).copied().unwrap_or(0);
                        if have < m.manifest.version {
                            sent.insert(attrs.origin.clone(), m.manifest.version);
                            manifests.push(m.clone());
                        }
                    }
                    builder.announce(service.clone(), &attrs);
                }
                None if !full_table => builder.withdraw(service.clone()),
                None => {}
            }
        }
        let id = peer.cfg.id.clone();
        let batches = builder.finish();
        self.stats.batches_sent += batches.len() as u64;
        self.stats.manifests_sent += manifests.len() as u64;
        for m in manifests {
            self.outputs.push_back(Output::Send {
                peer: id.clone(),
                message: Message::Manifest(m),
            });
        }
        for b in batches {
            self.stats.announcements_sent += b.announce.len() as u64;
            self.stats.withdrawals_sent += b.withdraw.len() as u64;
            self.outputs.push_back(Output::Send {
                peer: id.clone(),
                message: Message::Update(b),
            });
        }
        if let Some(peer) = self.peer_mut(slot) {
            peer.out.manifests_sent = sent;
        }
    }
}

/// The attributes `to` is sent for `best`, or `None` if the rules forbid it.
pub(crate) fn export_attrs(
    local: &NodeId,
    ranker: &Ranker<'_>,
    best: &PathEntry,
    to: &Peer,
    to_slot: u32,
) -> Option<Attrs> {
    if best.peer == to_slot || !best.valid() {
        return None;
    }
    let a = &best.attrs;
    let ingress = ranker.ingress_relationship(best);
    let metric = u32::try_from(ranker.metric(best)).unwrap_or(u32::MAX);
    let mut out = Attrs::clone(a);
    out.metric = metric;
    if to.cfg.role == Relationship::Internal {
        if a.contains_node(&to.cfg.id) {
            return None;
        }
        out.path.insert(0, PathHop::Node(local.clone()));
        out.learned_from = ingress;
        return Some(out);
    }
    if !ingress.exportable_to(to.cfg.role) {
        return None;
    }
    let to_org = to.cfg.id.org();
    if a.contains_org(&to_org) || a.origin.in_org(&to_org) {
        return None;
    }
    // Collapse our internal hops into one hop of our org (RFC 4271's AS_PATH
    // hides routers the same way).
    out.path = std::iter::once(PathHop::Org(local.org()))
        .chain(
            a.path
                .iter()
                .filter(|h| matches!(h, PathHop::Org(_)))
                .cloned(),
        )
        .collect();
    out.learned_from = Relationship::Internal;
    Some(out)
}
