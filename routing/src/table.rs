//! The route table: every path received for every service.
//!
//! One map holds, per service, the path from each peer that sent one (plus
//! this node's own origination), valid or not, sorted best first. The Loc-RIB
//! is the first entry of each list when it is valid; a peer's Adj-RIB-In is
//! the entries tagged with that peer (docs/adr/0002-one-table.md). Keeping
//! every path is what lets a withdrawal of the best path promote the next one
//! at once, with nothing asked of any peer.

use std::collections::HashMap;
use std::sync::Arc;

use crate::decision::{self, Candidate, Ingress};
use crate::name::{NodeId, ServiceName};
use crate::route::{Attrs, Relationship};

/// Peer slot used for routes this node originates.
pub(crate) const LOCAL: u32 = 0;
/// The origin's current manifest lists the route.
pub(crate) const VALID: u8 = 1;
/// Kept across the peer's graceful restart and not yet refreshed.
pub(crate) const STALE: u8 = 2;

/// One path of one service.
#[derive(Debug, Clone)]
pub(crate) struct PathEntry {
    pub attrs: Arc<Attrs>,
    pub since_ms: u64,
    pub peer: u32,
    pub local_pref: u32,
    pub flags: u8,
}

impl PathEntry {
    pub(crate) fn valid(&self) -> bool {
        self.flags & VALID != 0
    }
    pub(crate) fn stale(&self) -> bool {
        self.flags & STALE != 0
    }
}

/// What the decision process needs to know about a peer slot.
#[derive(Debug, Clone)]
pub(crate) struct PeerFacts {
    pub id: NodeId,
    /// `None` for an internal peer: the route's own `learned_from` counts.
    pub role: Option<Relationship>,
    pub link_cost: u32,
}

/// The identity of a best path, to tell whether it changed.
#[derive(Debug, Clone)]
pub(crate) struct BestKey {
    pub peer: u32,
    pub attrs: Arc<Attrs>,
    pub local_pref: u32,
}

impl PartialEq for BestKey {
    fn eq(&self, other: &Self) -> bool {
        self.peer == other.peer
            && self.local_pref == other.local_pref
            && Arc::ptr_eq(&self.attrs, &other.attrs)
    }
}

/// The best path of a list, if it is usable.
pub(crate) fn best_of(paths: &[PathEntry]) -> Option<BestKey> {
    paths.first().filter(|p| p.valid()).map(|p| BestKey {
        peer: p.peer,
        attrs: p.attrs.clone(),
        local_pref: p.local_pref,
    })
}

/// Ranks paths with the decision process, given the peer slots.
pub(crate) struct Ranker<'a> {
    pub local: &'a NodeId,
    pub peers: &'a [Option<PeerFacts>],
}

impl Ranker<'_> {
    fn facts(&self, peer: u32) -> Option<&PeerFacts> {
        self.peers.get(peer as usize).and_then(|p| p.as_ref())
    }

    /// Metric including the link cost to the peer the path came from.
    pub(crate) fn metric(&self, p: &PathEntry) -> u64 {
        let cost = self.facts(p.peer).map_or(0, |f| f.link_cost);
        u64::from(p.attrs.metric) + u64::from(cost)
    }

    /// Over which relationship the path entered our org.
    pub(crate) fn ingress_relationship(&self, p: &PathEntry) -> Relationship {
        match self.facts(p.peer) {
            None => Relationship::Internal,
            Some(f) => f.role.unwrap_or(p.attrs.learned_from),
        }
    }

    pub(crate) fn candidate<'p>(&'p self, p: &'p PathEntry) -> Candidate<'p> {
        let facts = self.facts(p.peer);
        let ingress = match facts {
            None => Ingress::Originated,
            Some(f) => Ingress::Via(f.role.unwrap_or(p.attrs.learned_from)),
        };
        Candidate {
            valid: p.valid(),
            stale: p.stale(),
            local_pref: p.local_pref,
            ingress,
            attrs: &p.attrs,
            metric: self.metric(p),
            since_ms: p.since_ms,
            peer_id: facts.map_or(self.local.as_str(), |f| f.id.as_str()),
        }
    }

    /// Sorts a path list best first.
    pub(crate) fn sort(&self, paths: &mut [PathEntry]) {
        if paths.len() > 1 {
            paths.sort_by(|a, b| decision::compare(&self.candidate(a), &self.candidate(b)).0);
        }
    }
}

/// Every path of every service.
#[derive(Default)]
pub(crate) struct Table {
    pub map: HashMap<ServiceName, Box<[PathEntry]>>,
}

/// The result of changing one service's paths.
pub(crate) struct Change {
    pub old: Option<BestKey>,
    pub new: Option<BestKey>,
}

impl Change {
    pub(crate) fn changed(&self) -> bool {
        self.old != self.new
    }
}

impl Table {
    /// Inserts or replaces `entry.peer`'s path for `service`. A path equal to
    /// the one held keeps its age (re-announcing is idempotent).
    pub(crate) fn upsert(
        &mut self,
        ranker: &Ranker<'_>,
        service: &ServiceName,
        shared_key: Option<&ServiceName>,
        mut entry: PathEntry,
    ) -> (Change, bool) {
        let Some(paths) = self.map.get_mut(service) else {
            let key = shared_key.unwrap_or(service).clone();
            let new = best_of(std::slice::from_ref(&entry));
            self.map.insert(key, Box::new([entry]));
            return (Change { old: None, new }, true);
        };
        let old = best_of(paths);
        let added = match paths.iter_mut().find(|p| p.peer == entry.peer) {
            Some(held) => {
                if held.local_pref == entry.local_pref
                    && (Arc::ptr_eq(&held.attrs, &entry.attrs) || held.attrs == entry.attrs)
                {
                    entry.since_ms = held.since_ms;
                    entry.attrs = held.attrs.clone();
                }
                *held = entry;
                false
            }
            None => {
                // Exact capacity: a pushed Vec would grow to 4 and waste the rest.
                let mut v = Vec::with_capacity(paths.len() + 1);
                v.extend(std::mem::take(paths).into_vec());
                v.push(entry);
                *paths = v.into_boxed_slice();
                true
            }
        };
        ranker.sort(paths);
        let new = best_of(paths);
        (Change { old, new }, added)
    }

    /// Removes `peer`'s path for `service`; `None` if it had none.
    pub(crate) fn remove(&mut self, service: &ServiceName, peer: u32) -> Option<Change> {
        let paths = self.map.get_mut(service)?;
        let pos = paths.iter().position(|p| p.peer == peer)?;
        let old = best_of(paths);
        if paths.len() == 1 {
            self.map.remove(service);
            return Some(Change { old, new: None });
        }
        let mut v = std::mem::take(paths).into_vec();
        v.remove(pos);
        *paths = v.into_boxed_slice();
        // Removing one entry from a sorted list leaves it sorted.
        let new = best_of(paths);
        Some(Change { old, new })
    }

    /// Applies `f` to each path of one service and re-sorts it if touched.
    pub(crate) fn update_one(
        &mut self,
        ranker: &Ranker<'_>,
        service: &ServiceName,
        mut f: impl FnMut(&mut PathEntry) -> bool,
    ) -> Option<Change> {
        let paths = self.map.get_mut(service)?;
        let old = best_of(paths);
        let mut touched = false;
        for p in paths.iter_mut() {
            touched |= f(p);
        }
        if !touched {
            return None;
        }
        ranker.sort(paths);
        Some(Change {
            old,
            new: best_of(paths),
        })
    }

    /// Applies `f` to every path of every service, re-sorting the lists that
    /// `f` reports as touched and dropping the entries it marks for removal
    /// (by returning `false`). Returns the services whose best path changed,
    /// sorted by name: the map's iteration order depends on its random hash
    /// seed, and the order of the router's outputs must not (lib.rs contract).
    pub(crate) fn update_all(
        &mut self,
        ranker: &Ranker<'_>,
        mut f: impl FnMut(&ServiceName, &mut PathEntry) -> Touch,
    ) -> Vec<(ServiceName, Change)> {
        let mut changes = Vec::new();
        self.map.retain(|service, paths| {
            let old = best_of(paths);
            let mut touched = false;
            let mut drop_any = false;
            for p in paths.iter_mut() {
                match f(service, p) {
                    Touch::Keep => {}
                    Touch::Resort => touched = true,
                    Touch::Remove => {
                        touched = true;
                        drop_any = true;
                        p.peer = u32::MAX;
                    }
                }
            }
            if !touched {
                return true;
            }
            if drop_any {
                let v: Vec<PathEntry> = std::mem::take(paths)
                    .into_vec()
                    .into_iter()
                    .filter(|p| p.peer != u32::MAX)
                    .collect();
                *paths = v.into_boxed_slice();
            }
            ranker.sort(paths);
            let change = Change {
                old,
                new: best_of(paths),
            };
            if change.changed() {
                changes.push((service.clone(), change));
            }
            !paths.is_empty()
        });
        // Names are unique keys, so an unstable sort is deterministic.
        changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        changes
    }
}

/// What [`Table::update_all`] should do with a path after `f` looked at it.
pub(crate) enum Touch {
    /// Nothing changed.
    Keep,
    /// Something the decision looks at changed.
    Resort,
    /// Remove the path.
    Remove,
}
