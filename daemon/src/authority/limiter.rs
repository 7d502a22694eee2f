//! Per-source limit on failed join attempts: after `max_failures` failures within
//! `window` seconds, a source is refused without its token being looked at until the
//! window has passed. Bounded memory: at most `MAX_SOURCES` sources are tracked; the
//! oldest windows are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;

const MAX_SOURCES: usize = 10_000;

/// Failed-attempt counters per source address.
pub struct FailureLimiter {
    max_failures: u32,
    window: u64,
    sources: HashMap<IpAddr, (u64, u32)>,
}

impl FailureLimiter {
    /// A limiter allowing `max_failures` per `window` seconds per source.
    pub fn new(max_failures: u32, window: u64) -> Self {
        Self {
            max_failures,
            window,
            sources: HashMap::new(),
        }
    }

    /// Whether `source` may try now.
    pub fn allowed(&mut self, source: IpAddr, now: u64) -> bool {
        match self.sources.get(&source) {
            Some(&(start, failures)) if now < start + self.window => failures < self.max_failures,
            Some(_) => {
                self.sources.remove(&source);
                true
            }
            None => true,
        }
    }

    /// Seconds until `source` may try again (0 if it may now).
    pub fn retry_after(&self, source: IpAddr, now: u64) -> u64 {
        self.sources
            .get(&source)
            .map_or(0, |&(start, _)| (start + self.window).saturating_sub(now))
    }

    /// Records a failed attempt by `source`.
    pub fn failed(&mut self, source: IpAddr, now: u64) {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            let window = self.window;
            self.sources.retain(|_, (start, _)| now < *start + window);
            if self.sources.len() >= MAX_SOURCES {
                if let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, (s, _))| *s)
                    .map(|(k, _)| *k)
                {
                    self.sources.remove(&oldest);
                }
            }
        }
        let entry = self.sources.entry(source).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_blocked_after_too_many_failures_until_the_window_ends() {
        let mut limiter = FailureLimiter::new(3, 60);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.allowed(a, 100));
            limiter.failed(a, 100);
        }
        assert!(!limiter.allowed(a, 120));
        assert_eq!(limiter.retry_after(a, 120), 40);
        assert!(limiter.allowed(b, 120), "other sources are unaffected");
        assert!(limiter.allowed(a, 160), "the window ended");
    }

    #[test]
    fn memory_stays_bounded() {
        let mut limiter = FailureLimiter::new(3, 60);
        for i in 0..(MAX_SOURCES as u32 + 100) {
            limiter.failed(IpAddr::from(i.to_be_bytes()), 1);
        }
        assert!(limiter.sources.len() <= MAX_SOURCES);
    }
}
