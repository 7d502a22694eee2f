//! The node's peer scores: one [`PeerScore`] per configured peer, fed by the sessions'
//! samples (QUIC's RTT estimate and packet counters every second, keepalive round
//! trips), session failures and bad input; the costs they announce go to the router as
//! link costs (docs/adr/0014). Scores are written to `node.db` when they change and at
//! most once a minute otherwise, so a restart does not forget a bad peer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trellis_routing::scoring::{PeerScore, ScoreConfig, ScoreState};
use trellis_routing::NodeId;

use crate::admin::PeerInfo;

/// A score is written at least this often while it moves.
const PERSIST_EVERY: Duration = Duration::from_secs(60);

struct Entry {
    score: PeerScore,
    persisted: Option<Instant>,
    dirty: bool,
}

/// Every configured peer's score.
pub(super) struct Scores {
    cfg: ScoreConfig,
    peers: HashMap<NodeId, Entry>,
    restored: HashMap<NodeId, ScoreState>,
}

impl Scores {
    /// Scores with `cfg`; `restored` are the states read from `node.db`.
    pub(super) fn new(cfg: ScoreConfig, restored: Vec<(NodeId, ScoreState)>) -> Self {
        Self {
            cfg,
            peers: HashMap::new(),
            restored: restored.into_iter().collect(),
        }
    }

    /// Starts scoring `peer` (configured `base_cost` and `trust`), from its stored state
    /// if there is one; an already scored peer is reconfigured. Returns its cost.
    pub(super) fn ensure(
        &mut self,
        peer: &NodeId,
        base_cost: u32,
        trust: u32,
        now: Instant,
    ) -> u32 {
        if let Some(e) = self.peers.get_mut(peer) {
            e.score.reconfigure(base_cost, trust);
            return e.score.cost();
        }
        let mut score = PeerScore::new(self.cfg.clone(), base_cost, trust, now);
        if let Some(state) = self.restored.remove(peer) {
            score = score.restore(&state, now);
        }
        let cost = score.cost();
        self.peers.insert(
            peer.clone(),
            Entry {
                score,
                persisted: None,
                dirty: false,
            },
        );
        cost
    }

    /// Stops scoring `peer`; its state is kept for a peer added again under the same id
    /// (a reload that changes its settings re-adds it), as its row in `node.db` is.
    pub(super) fn remove(&mut self, now: Instant, peer: &NodeId) {
        if let Some(e) = self.peers.remove(peer) {
            self.restored.insert(peer.clone(), e.score.state(now));
        }
    }

    /// The link cost `peer` has now, if it is scored.
    pub(super) fn cost(&self, peer: &NodeId) -> Option<u32> {
        self.peers.get(peer).map(|e| e.score.cost())
    }

    fn with(&mut self, peer: &NodeId, f: impl FnOnce(&mut PeerScore)) {
        if let Some(e) = self.peers.get_mut(peer) {
            f(&mut e.score);
        }
    }

    /// An application round trip (keepalive).
    pub(super) fn rtt(&mut self, now: Instant, peer: &NodeId, rtt: Duration) {
        self.with(peer, |s| s.rtt_sample(now, rtt));
    }

    /// A sample of the connection: QUIC's RTT estimate and its packet counters.
    pub(super) fn sample(
        &mut self,
        now: Instant,
        peer: &NodeId,
        rtt: Duration,
        sent: u64,
        lost: u64,
    ) {
        self.with(peer, |s| {
            s.rtt_sample(now, rtt);
            s.packets(now, sent, lost);
        });
    }

    /// The session with `peer` failed.
    pub(super) fn failure(&mut self, now: Instant, peer: &NodeId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.score.failure(now);
            e.dirty = true;
        }
    }

    /// `peer` sent invalid input.
    pub(super) fn invalid(&mut self, now: Instant, peer: &NodeId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.score.invalid_input(now);
            e.dirty = true;
        }
    }

    /// Applies hysteresis to every score; returns the costs that changed.
    pub(super) fn evaluate(&mut self, now: Instant) -> Vec<(NodeId, u32)> {
        let mut changed = Vec::new();
        for (peer, e) in &mut self.peers {
            if let Some(cost) = e.score.evaluate(now) {
                e.dirty = true;
                changed.push((peer.clone(), cost));
            }
        }
        changed.sort();
        changed
    }

    /// States due to be written: changed ones, and others once a minute.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(NodeId, ScoreState)> {
        let mut out = Vec::new();
        for (peer, e) in &mut self.peers {
            let stale = e
                .persisted
                .is_none_or(|t| now.saturating_duration_since(t) >= PERSIST_EVERY);
            if e.dirty || stale {
                e.dirty = false;
                e.persisted = Some(now);
                out.push((peer.clone(), e.score.state(now)));
            }
        }
        out
    }

    /// Copies the measurements into a peer's record.
    pub(super) fn show(&self, now: Instant, peer: &NodeId, info: &mut PeerInfo) {
        let Some(e) = self.peers.get(peer) else {
            return;
        };
        let s = &e.score;
        if let Some(rtt) = s.rtt() {
            info.rtt_us = Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
        }
        info.loss_ppm = (s.loss() * 1e6).round() as u32;
        info.failures = u32::try_from(s.failures(now)).unwrap_or(u32::MAX);
        info.trust = s.trust(now);
        info.base_cost = s.base_cost();
        info.link_cost = s.cost();
        info.cost_changes = s.changes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_state_is_used_once_and_changes_are_written_at_once() {
        let now = Instant::now();
        let peer = NodeId::new("acme/b").expect("id");
        let bad = ScoreState {
            failures_secs_ago: vec![5, 10],
            trust_penalty: 20.0,
            cost: 40,
            ..ScoreState::default()
        };
        let mut scores = Scores::new(ScoreConfig::default(), vec![(peer.clone(), bad)]);
        assert_eq!(scores.ensure(&peer, 10, 100, now), 40, "the stored cost");
        let mut info = PeerInfo::default();
        scores.show(now, &peer, &mut info);
        assert_eq!((info.failures, info.trust), (2, 80));
        assert_eq!(scores.due(now).len(), 1, "never written yet");
        assert!(scores.due(now).is_empty());
        scores.failure(now, &peer);
        assert_eq!(scores.due(now).len(), 1, "a failure is written at once");
        scores.remove(now, &peer);
        let mut again = PeerInfo::default();
        scores.ensure(&peer, 10, 100, now);
        scores.show(now, &peer, &mut again);
        assert_eq!(
            again.failures, 3,
            "a removed and re-added peer keeps its record"
        );
    }
}
