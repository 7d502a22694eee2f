//! Import: from a peer's update batch into the table.
//!
//! Order of checks for each batch (docs/protocol.md, "Import"):
//! 1. structural limits of the batch → violation closes the session;
//! 2. per attribute set: limits (path length, communities, origin/path
//!    consistency), loop detection (our node id inside the org, our org id
//!    from outside), then policy → a refused set turns its announcements into
//!    withdrawals (treat-as-withdraw, RFC 7606 §2);
//! 3. withdrawals, then announcements; origin validity is looked up in the
//!    manifest store (no signature work here);
//! 4. the peer's max-routes limit → exceeding it closes the session.

use std::sync::Arc;
use std::time::Instant;

use crate::name::NodeId;
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
        let role = peer.cfg.role;
        let default_pref = peer.cfg.local_pref;
        let max_routes = peer.cfg.max_routes;
        let prepared: Vec<Option<Arc<Attrs>>> = batch
            .attrs
            .iter()
            .map(|a| self.prepare_attrs(role, a))
            .collect();

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
        for (service, index) in &batch.announce {
            let attrs = prepared.get(*index as usize).and_then(Option::as_ref);
            let decision = attrs.map(|a| self.policy.import(id, role, service, a));
            let (attrs, local_pref) = match (attrs, decision) {
                (Some(a), Some(ImportDecision::Accept { local_pref })) => {
                    (a, local_pref.unwrap_or(default_pref))
                }
                (attrs, _) => {
                    if attrs.is_some() {
                        self.stats.routes_rejected_policy += 1;
                    }
                    if let Some(c) = self.table.remove(service, slot) {
                        removed += 1;
                        changes.push((service.clone(), c));
                    }
                    continue;
                }
            };
            let shared = self
                .manifests
                .covers(&attrs.origin, service, attrs.origin_seq);
            if shared.is_none() {
                self.stats.routes_origin_unverified += 1;
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
        let over = max_routes.filter(|max| peer.routes > *max);
        self.apply_changes(now, changes);
        if let Some(limit) = over {
            self.stats.max_routes_exceeded += 1;
            self.disconnect(now, slot, DisconnectReason::MaxRoutes { limit });
        }
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
