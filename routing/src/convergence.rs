//! Convergence episodes, as a node sees them: a burst of best-path changes that ends
//! once no best path has changed for a quiet interval. The episode's length (first change
//! to last change) is what `trellis.convergence.duration` reports: how long this node's
//! table kept moving after something happened in the mesh.
//!
//! Pure: the caller passes the time and asks for the deadline to wake up at.

use std::time::{Duration, Instant};

/// Tracks one episode at a time.
#[derive(Clone, Debug)]
pub struct Convergence {
    quiet: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Convergence {
    /// Episodes end after `quiet` without a change.
    pub fn new(quiet: Duration) -> Self {
        Self {
            quiet,
            first: None,
            last: None,
        }
    }

    /// A best path changed at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now.max(self.last.unwrap_or(now)));
    }

    /// When the open episode ends if nothing else changes.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|l| l + self.quiet)
    }

    /// The length of the episode that has ended by `now`, once.
    pub fn poll(&mut self, now: Instant) -> Option<Duration> {
        let (first, last) = (self.first?, self.last?);
        if now < last + self.quiet {
            return None;
        }
        self.first = None;
        self.last = None;
        Some(last.saturating_duration_since(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_episode_ends_after_a_quiet_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Convergence::new(ms(1000));
        assert_eq!(c.poll(t0), None);
        assert_eq!(c.deadline(), None);
        c.changed(t0);
        c.changed(t0 + ms(300));
        assert_eq!(c.deadline(), Some(t0 + ms(1300)));
        assert_eq!(c.poll(t0 + ms(1299)), None);
        assert_eq!(c.poll(t0 + ms(1300)), Some(ms(300)));
        assert_eq!(c.poll(t0 + ms(5000)), None, "reported once");
        c.changed(t0 + ms(6000));
        assert_eq!(c.poll(t0 + ms(7000)), Some(ms(0)));
    }

    proptest! {
        #[test]
        fn the_length_is_first_to_last_change(gaps in proptest::collection::vec(0u64..900, 1..20)) {
            let t0 = Instant::now();
            let mut c = Convergence::new(Duration::from_millis(1000));
            let mut t = t0;
            for g in &gaps {
                t += Duration::from_millis(*g);
                c.changed(t);
                prop_assert_eq!(c.poll(t), None);
            }
            let first = t0 + Duration::from_millis(gaps[0]);
            let end = t + Duration::from_millis(1000);
            prop_assert_eq!(c.poll(end), Some(t - first));
        }
    }
}
