//! Restart hold-off for a peer that exceeded its max-routes limit (as BGP's idle hold
//! after a maximum-prefix cease, RFC 4486 and common practice): its session is closed and
//! for the hold-off it is refused at the handshake and not dialed, so it cannot send its
//! whole table again every few hundred milliseconds. The hold-off starts at
//! `timers.max_routes_restart` (60 s) and doubles with each repeat, up to 16 times that;
//! a peer that keeps to its limit for an hour starts from the first value again.
//!
//! Pure state: the clock is a parameter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trellis_routing::NodeId;

/// The longest hold-off, as a multiple of the first.
const MAX_FACTOR: u32 = 16;
/// A peer that stayed within its limit this long after its last hold-off is forgiven.
const FORGIVE_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Entry {
    until: Instant,
    hold: Duration,
    released: bool,
}

/// The peers held off, and how long each one's next hold-off would be.
#[derive(Debug)]
pub(super) struct HoldOff {
    first: Duration,
    entries: HashMap<NodeId, Entry>,
}

impl HoldOff {
    /// Hold-offs that start at `first` (zero: none).
    pub(super) fn new(first: Duration) -> Self {
        Self {
            first,
            entries: HashMap::new(),
        }
    }

    /// `peer` exceeded its limit at `now`: returns how long it is held off (`None` when
    /// hold-offs are disabled).
    pub(super) fn exceeded(&mut self, peer: &NodeId, now: Instant) -> Option<Duration> {
        if self.first.is_zero() {
            return None;
        }
        let hold = match self.entries.get(peer) {
            Some(e) if now.saturating_duration_since(e.until) < FORGIVE_AFTER => {
                (e.hold * 2).min(self.first * MAX_FACTOR)
            }
            _ => self.first,
        };
        let entry = Entry {
            until: now + hold,
            hold,
            released: false,
        };
        self.entries.insert(peer.clone(), entry);
        Some(hold)
    }

    /// Whether `peer` is held off at `now`.
    pub(super) fn holds(&self, peer: &NodeId, now: Instant) -> bool {
        self.entries.get(peer).is_some_and(|e| now < e.until)
    }

    /// When the next hold-off ends.
    pub(super) fn next_end(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.released)
            .map(|e| e.until)
            .min()
    }

    /// The peers whose hold-off has ended by `now`, each returned once.
    pub(super) fn released(&mut self, now: Instant) -> Vec<NodeId> {
        let mut out = Vec::new();
        for (peer, e) in &mut self.entries {
            if !e.released && e.until <= now {
                e.released = true;
                out.push(peer.clone());
            }
        }
        out.sort();
        out
    }

    /// Forgets `peer` (removed from the configuration).
    pub(super) fn forget(&mut self, peer: &NodeId) {
        self.entries.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> NodeId {
        NodeId::new("acme/b").expect("id")
    }

    #[test]
    fn a_repeat_offender_is_held_off_twice_as_long_each_time_up_to_sixteen_times() {
        let t0 = Instant::now();
        let mut h = HoldOff::new(Duration::from_secs(60));
        assert_eq!(h.exceeded(&peer(), t0), Some(Duration::from_secs(60)));
        assert!(h.holds(&peer(), t0 + Duration::from_secs(59)));
        assert_eq!(h.next_end(), Some(t0 + Duration::from_secs(60)));
        assert!(h.released(t0 + Duration::from_secs(59)).is_empty());
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(h.released(t1), vec![peer()]);
        assert!(h.released(t1).is_empty(), "released once");
        assert!(!h.holds(&peer(), t1));
        assert_eq!(h.next_end(), None);
        let mut now = t1;
        let mut holds = Vec::new();
        for _ in 0..6 {
            let hold = h.exceeded(&peer(), now).expect("held");
            holds.push(hold.as_secs());
            now += hold;
        }
        assert_eq!(holds, vec![120, 240, 480, 960, 960, 960]);
    }

    #[test]
    fn a_peer_that_kept_its_limit_for_an_hour_starts_again_from_the_first_hold_off() {
        let t0 = Instant::now();
        let mut h = HoldOff::new(Duration::from_secs(60));
        h.exceeded(&peer(), t0);
        let later = t0 + Duration::from_secs(60) + FORGIVE_AFTER;
        assert_eq!(h.exceeded(&peer(), later), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_zero_hold_off_disables_it() {
        let mut h = HoldOff::new(Duration::ZERO);
        assert_eq!(h.exceeded(&peer(), Instant::now()), None);
        assert!(!h.holds(&peer(), Instant::now()));
    }
}
