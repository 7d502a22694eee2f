//! Import: from a peer's update batch into the table.
//!
//! Order of checks for each batch (docs/protocol.md, "Import"):
//! 1. structural limits of the batch → violation closes the session;
//! 2. per attribute set: limits (path length, communities, origin/path
//!    consistency), loop detection (our node id inside the org, our org id
//!    from outside), then policy → a refused set turns its announcements into
//!    withdrawals (treat-as-withdraw, RFC 7606 §2);
//! 3. withdrawals, then announcements (after step 4); origin validity is looked up in the
//!    manifest store (no signature work here);
//! 4. the peer's max-routes limit, counted before anything is applied → a
//!    batch that would exceed it is refused whole (nothing changes, nothing is
//!    sent on) and the session is closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::name::{NodeId, ServiceName};
use crate::policy::ImportDecision;
use crate::route::{Attrs, Relationship};
use crate::router::{ranker, DisconnectReason, Output, Router};
use crate::table::{PathEntry, Ranker, VALID};
use crate::update::UpdateBatch;

impl Router {
    pub(crate) fn on_update(&mut self, now: Instant, id: &NodeId, batch: UpdateBatch) {
        let Some(slot) = self.slot(id) else {
            self.stats.updates_ignored += 1;
            return;
        };
        let Some(peer) = self.peers[slot as usize].as_ref() else {
            return;
        };
        if !peer.up {
            self.stats.updates_ignored += 1;
            return;
        }
        self.stats.updates_received += 1;
        if let Err(e) = batch.check(&self.cfg.batch_limits) {
            self.stats.batches_malformed += 1;
            self.disconnect(now, slot, DisconnectReason::Malformed(e));
            return;
        }
        self.stats.announcements_received += batch.announce.len() as u64;
        self.stats.withdrawals_received += batch.withdraw.len() as u64;
        let role = peer.cfg.role;
        let default_pref = peer.cfg.local_pref;
        let max_routes = peer.cfg.max_routes;
        let held = peer.routes;
        let prepared: Vec<Option<Arc<Attrs>>> = batch
            .attrs
            .iter()
            .map(|a| self.prepare_attrs(role, a))
            .collect();
        // What each announcement becomes: `None` is treated as a withdrawal.
        let accepted: Vec<Option<(&Arc<Attrs>, u32)>> = batch
            .announce
            .iter()
            .map(|(service, index)| {
                let attrs = prepared.get(*index as usize).and_then(Option::as_ref)?;
                match self.policy.import(id, role, service, attrs) {
                    ImportDecision::Accept { local_pref } => {
                        Some((attrs, local_pref.unwrap_or(default_pref)))
                    }
                    ImportDecision::Reject => {
                        self.stats.routes_rejected_policy += 1;
                        None
                    }
                }
            })
            .collect();

        // Max routes is checked before anything is applied, so a batch that
        // would break the limit changes nothing and sends nothing on (each
        // announcement adds at most one path, so most batches skip the count).
        if let Some(limit) = max_routes {
            if held.saturating_add(batch.announce.len()) > limit
                && self.routes_after(slot, held, &batch, &accepted) > limit
            {
                self.stats.max_routes_exceeded += 1;
                self.disconnect(now, slot, DisconnectReason::MaxRoutes { limit });
                return;
            }
        }

        let mut changes = Vec::new();
        let mut removed = 0usize;
        for service in &batch.withdraw {
            if let Some(c) = self.table.remove(service, slot) {
                removed += 1;
                changes.push((service.clone(), c));
            }
        }
        let since_ms = self.ms(now);
        let mut added = 0usize;
        for ((service, _), decision) in batch.announce.iter().zip(&accepted) {
            let Some((attrs, local_pref)) = *decision else {
                if let Some(c) = self.table.remove(service, slot) {
                    removed += 1;
                    changes.push((service.clone(), c));
                }
                continue;
            };
            let listed = self
                .manifests
                .lists(&attrs.origin, service, attrs.origin_seq);
            let shared =
                listed.filter(|_| self.manifests.rules.check(&attrs.origin, service).is_ok());
            if listed.is_none() {
                self.stats.routes_origin_unverified += 1;
            } else if shared.is_none() {
                self.stats.routes_rejected_name_owner += 1;
            }
            let entry = PathEntry {
                attrs: attrs.clone(),
                since_ms,
                peer: slot,
                local_pref,
                flags: if shared.is_some() { VALID } else { 0 },
            };
            let (change, is_new) = self.table.upsert(&ranker!(self), service, shared, entry);
            added += usize::from(is_new);
            changes.push((service.clone(), change));
        }
        let Some(peer) = self.peer_mut(slot) else {
            return;
        };
        peer.routes = peer.routes.saturating_sub(removed) + added;
        self.apply_changes(now, changes);
    }

    /// How many paths `slot` would hold after `batch` (with its announcements
    /// decided as in `accepted`), computed without touching the table:
    /// withdrawals go first, then announcements in order, the last one of a
    /// service deciding whether its path stays.
    fn routes_after(
        &self,
        slot: u32,
        held: usize,
        batch: &UpdateBatch,
        accepted: &[Option<(&Arc<Attrs>, u32)>],
    ) -> usize {
        let mut present: HashMap<&ServiceName, bool> = HashMap::new();
        for service in &batch.withdraw {
            present.insert(service, false);
        }
        for ((service, _), decision) in batch.announce.iter().zip(accepted) {
            present.insert(service, decision.is_some());
        }
        let mut after = held;
        for (service, keep) in present {
            let holds = self
                .table
                .map
                .get(service)
                .is_some_and(|paths| paths.iter().any(|p| p.peer == slot));
            match (holds, keep) {
                (false, true) => after += 1,
                (true, false) => after = after.saturating_sub(1),
                _ => {}
            }
        }
        after
    }

    /// Validates, loop-checks and rewrites one received attribute set.
    /// `None` means every announcement using it is treated as a withdrawal.
    fn prepare_attrs(&mut self, role: Relationship, a: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        if a.validate(self.cfg.max_path_len).is_err() {
            self.stats.routes_rejected_malformed += 1;
            return None;
        }
        // Loop prevention (docs/protocol.md, "Loops"): our own node id inside
        // the org, our org id on any path (a route that left us and came back).
        if a.contains_node(&self.cfg.local) || a.contains_org(&self.local_org) {
            self.stats.routes_rejected_loop += 1;
            return None;
        }
        if a.origin == self.cfg.local {
            // Only this node originates its own services.
            self.stats.routes_rejected_loop += 1;
            return None;
        }
        if role == Relationship::Internal {
            return Some(a.clone());
        }
        // From another org: its view of the relationship does not count.
        if a.origin.in_org(&self.local_org) || a.path.is_empty() {
            // An external peer cannot originate for our org, and every
            // external route has at least the sender's org hop.
            self.stats.routes_rejected_malformed += 1;
            return None;
        }
        if a.path
            .iter()
            .any(|h| matches!(h, crate::route::PathHop::Node(_)))
        {
            // Internal hops never cross an org boundary.
            self.stats.routes_rejected_malformed += 1;
            return None;
        }
        if a.learned_from == role {
            return Some(a.clone());
        }
        let mut rewritten = Attrs::clone(a);
        rewritten.learned_from = role;
        Some(Arc::new(rewritten))
    }

    /// Closes a session: the router drops the peer's paths at once.
    pub(crate) fn disconnect(&mut self, now: Instant, slot: u32, reason: DisconnectReason) {
        let Some(peer) = self.peers[slot as usize].as_ref() else {
            return;
        };
        let id = peer.cfg.id.clone();
        self.drop_paths(slot, false, now);
        self.outputs
            .push_back(Output::Disconnect { peer: id, reason });
    }
}
