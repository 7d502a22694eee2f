//! Peer scoring: what a node has measured about one peer — round-trip time, loss,
//! reliability and trust — and the link cost it turns into (docs/adr/0014).
//!
//! The contract:
//! - Pure: the IO side feeds samples with the instant they were taken; nothing here reads
//!   a clock or does IO. The same samples at the same instants give the same costs.
//! - [`PeerScore::evaluate`] returns a new cost only when it should be announced: the
//!   computed cost must leave a band of ±`hysteresis_pct` around the announced one and stay
//!   out of it — for `confirm` when it got worse (traffic moves off a degraded link in
//!   seconds), for `hold_down` when it got better (a recovered link wins traffic back
//!   only after it stays good). Jitter inside the band never changes the cost.
//! - RTT is the moving average of a windowed minimum of the samples, so queueing that
//!   a burst of traffic causes does not make a link look far away.
//! - Trust starts at the configured level, drops with each session failure and each
//!   piece of invalid input, and recovers slowly; it never exceeds the configured level.
//! - [`ScoreState`] is what survives a restart, so a bad peer is not forgiven by one.

mod cost;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use cost::{link_cost, CostInputs};

/// How measurements become a cost.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreConfig {
    /// RTT samples go through a minimum over this window before they are averaged: a
    /// burst of queueing (a bulk transfer on the link, a busy host) inflates every sample
    /// for a while, the minimum only when it lasts.
    pub rtt_window: Duration,
    /// Weight of a new RTT sample below the moving average (TCP's SRTT uses 1/8).
    pub rtt_gain: f64,
    /// Weight of a new RTT sample above the average: a slower link is believed sooner
    /// than a faster one ("fast attack, slow decay").
    pub rtt_gain_up: f64,
    /// RTT below this adds nothing: loopback, a LAN, or a busy host's scheduling noise.
    pub rtt_floor: Duration,
    /// Each `rtt_unit` of RTT above the floor adds the base cost once more.
    pub rtt_unit: Duration,
    /// Loss is measured over this window.
    pub loss_window: Duration,
    /// Fewer packets than this in the window: the loss estimate is kept as it was.
    pub loss_min_packets: u64,
    /// Cost multiplier per unit of loss ratio: 20 makes 5 % loss double the cost.
    pub loss_weight: f64,
    /// Session failures are counted over this window.
    pub reliability_window: Duration,
    /// Cost added per failure in the window, in percent (at most four count).
    pub failure_weight_pct: u32,
    /// Trust points lost per session failure.
    pub failure_trust_penalty: f64,
    /// Trust points lost per invalid input from the peer.
    pub invalid_trust_penalty: f64,
    /// Trust points regained per minute without trouble.
    pub trust_recovery_per_min: f64,
    /// The band around the announced cost that measurements may move in unnoticed.
    pub hysteresis_pct: u32,
    /// A worse cost is announced once it has held this long.
    pub confirm: Duration,
    /// A better cost is announced once it has held this long.
    pub hold_down: Duration,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            rtt_window: Duration::from_secs(5),
            rtt_gain: 0.125,
            rtt_gain_up: 0.3,
            rtt_floor: Duration::from_millis(5),
            rtt_unit: Duration::from_millis(10),
            loss_window: Duration::from_secs(30),
            loss_min_packets: 20,
            loss_weight: 20.0,
            reliability_window: Duration::from_secs(600),
            failure_weight_pct: 50,
            failure_trust_penalty: 10.0,
            invalid_trust_penalty: 20.0,
            trust_recovery_per_min: 1.0,
            hysteresis_pct: 25,
            confirm: Duration::from_secs(2),
            hold_down: Duration::from_secs(30),
        }
    }
}

/// What survives a restart (times as seconds before the moment it was taken).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreState {
    /// Smoothed RTT, microseconds (0: none yet).
    pub rtt_us: u64,
    /// Loss ratio, parts per million.
    pub loss_ppm: u32,
    /// Trust points below the configured level.
    pub trust_penalty: f64,
    /// Session failures in the window, as seconds ago.
    pub failures_secs_ago: Vec<u64>,
    /// The announced cost.
    pub cost: u32,
    /// How long ago the state was taken (set when it is read back after a restart):
    /// failures age and trust recovers over that time too.
    pub taken_secs_ago: u64,
}

/// A change the cost is waiting to announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    worse: bool,
    since: Instant,
}

/// Everything measured about one peer.
#[derive(Clone, Debug)]
pub struct PeerScore {
    cfg: ScoreConfig,
    base_cost: u32,
    base_trust: u32,
    rtt: Option<Duration>,
    recent_rtt: VecDeque<(Instant, Duration)>,
    loss_samples: VecDeque<(Instant, u64, u64)>,
    loss: f64,
    failures: VecDeque<Instant>,
    trust_penalty: f64,
    trust_at: Instant,
    cost: u32,
    pending: Option<Pending>,
    changes: u64,
}

impl PeerScore {
    /// A peer with configured `base_cost` and `base_trust` (0..=100), nothing measured.
    pub fn new(cfg: ScoreConfig, base_cost: u32, base_trust: u32, now: Instant) -> Self {
        let mut score = Self {
            cfg,
            base_cost: base_cost.max(1),
            base_trust: base_trust.min(100),
            rtt: None,
            recent_rtt: VecDeque::new(),
            loss_samples: VecDeque::new(),
            loss: 0.0,
            failures: VecDeque::new(),
            trust_penalty: 0.0,
            trust_at: now,
            cost: 0,
            pending: None,
            changes: 0,
        };
        score.cost = score.target(now);
        score
    }

    /// A peer as it was before a restart (`state` taken at a moment `now` stands for).
    pub fn restore(mut self, state: &ScoreState, now: Instant) -> Self {
        self.rtt = (state.rtt_us > 0).then(|| Duration::from_micros(state.rtt_us));
        self.loss = f64::from(state.loss_ppm) / 1e6;
        let taken = now
            .checked_sub(Duration::from_secs(state.taken_secs_ago))
            .unwrap_or(now);
        self.trust_penalty = state.trust_penalty.clamp(0.0, 100.0);
        self.trust_at = taken;
        let mut ago: Vec<u64> = state.failures_secs_ago.clone();
        ago.sort_unstable_by(|a, b| b.cmp(a));
        self.failures = ago
            .into_iter()
            .filter_map(|s| taken.checked_sub(Duration::from_secs(s)))
            .collect();
        self.prune(now);
        // The cost it had is where it starts; measurements move it as usual.
        self.cost = if state.cost > 0 {
            state.cost
        } else {
            self.target(now)
        };
        self
    }

    /// What survives a restart.
    pub fn state(&self, now: Instant) -> ScoreState {
        ScoreState {
            rtt_us: self
                .rtt
                .map_or(0, |r| u64::try_from(r.as_micros()).unwrap_or(u64::MAX)),
            loss_ppm: (self.loss * 1e6).round().clamp(0.0, 1e6) as u32,
            trust_penalty: self.penalty_at(now),
            failures_secs_ago: self
                .failures
                .iter()
                .map(|t| now.saturating_duration_since(*t).as_secs())
                .collect(),
            cost: self.cost,
            taken_secs_ago: 0,
        }
    }

    /// Changes the configured cost and trust (a reload); the announced cost follows at
    /// the next [`PeerScore::evaluate`] through the usual rules.
    pub fn reconfigure(&mut self, base_cost: u32, base_trust: u32) {
        self.base_cost = base_cost.max(1);
        self.base_trust = base_trust.min(100);
    }

    /// A round-trip sample (QUIC's estimate or an application probe) taken at `now`.
    pub fn rtt_sample(&mut self, now: Instant, rtt: Duration) {
        self.recent_rtt.push_back((now, rtt));
        while self.recent_rtt.len() > 1
            && self
                .recent_rtt
                .front()
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) > self.cfg.rtt_window)
        {
            self.recent_rtt.pop_front();
        }
        let rtt = self.recent_rtt.iter().map(|&(_, r)| r).min().unwrap_or(rtt);
        self.rtt = Some(match self.rtt {
            None => rtt,
            Some(old) => {
                let g = if rtt > old {
                    self.cfg.rtt_gain_up
                } else {
                    self.cfg.rtt_gain
                }
                .clamp(0.0, 1.0);
                old.mul_f64(1.0 - g) + rtt.mul_f64(g)
            }
        });
    }

    /// The connection's packet counters since it opened: `sent` and `lost` so far. A new
    /// connection (counters lower than before) starts a new window.
    pub fn packets(&mut self, now: Instant, sent: u64, lost: u64) {
        if self
            .loss_samples
            .back()
            .is_some_and(|&(_, s, l)| sent < s || lost < l)
        {
            self.loss_samples.clear();
        }
        self.loss_samples.push_back((now, sent, lost));
        while self
            .loss_samples
            .front()
            .is_some_and(|&(t, _, _)| now.saturating_duration_since(t) > self.cfg.loss_window)
        {
            self.loss_samples.pop_front();
        }
        if let (Some(&(_, s0, l0)), Some(&(_, s1, l1))) =
            (self.loss_samples.front(), self.loss_samples.back())
        {
            let sent = s1.saturating_sub(s0);
            if sent >= self.cfg.loss_min_packets {
                self.loss = (l1.saturating_sub(l0) as f64 / sent as f64).clamp(0.0, 1.0);
            }
        }
    }

    /// The session failed (lost, timed out, closed for bad input; not an operator's
    /// close or a shutdown).
    pub fn failure(&mut self, now: Instant) {
        self.failures.push_back(now);
        self.penalize(now, self.cfg.failure_trust_penalty);
    }

    /// The peer sent something invalid.
    pub fn invalid_input(&mut self, now: Instant) {
        self.penalize(now, self.cfg.invalid_trust_penalty);
    }

    fn penalize(&mut self, now: Instant, points: f64) {
        self.trust_penalty = (self.penalty_at(now) + points).min(100.0);
        self.trust_at = now;
    }

    fn penalty_at(&self, now: Instant) -> f64 {
        let minutes = now.saturating_duration_since(self.trust_at).as_secs_f64() / 60.0;
        (self.trust_penalty - minutes * self.cfg.trust_recovery_per_min).max(0.0)
    }

    fn prune(&mut self, now: Instant) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.cfg.reliability_window)
        {
            self.failures.pop_front();
        }
    }

    /// Smoothed RTT, if measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Loss ratio over the window (0..=1).
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Session failures in the reliability window.
    pub fn failures(&self, now: Instant) -> usize {
        self.failures
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.cfg.reliability_window)
            .count()
    }

    /// Trust now (0..=configured).
    pub fn trust(&self, now: Instant) -> u32 {
        (f64::from(self.base_trust) - self.penalty_at(now))
            .round()
            .clamp(0.0, 100.0) as u32
    }

    /// The announced cost.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The configured cost.
    pub fn base_cost(&self) -> u32 {
        self.base_cost
    }

    /// How many times the announced cost changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The cost the measurements give now, before hysteresis.
    pub fn target(&self, now: Instant) -> u32 {
        link_cost(
            &CostInputs {
                base_cost: self.base_cost,
                trust: self.trust(now),
                rtt: self.rtt.unwrap_or_default(),
                loss: self.loss,
                failures: self.failures(now),
            },
            &self.cfg,
        )
    }

    /// Applies hysteresis and the hold-downs; returns the new cost when it changes.
    pub fn evaluate(&mut self, now: Instant) -> Option<u32> {
        self.prune(now);
        let target = self.target(now);
        let band = u64::from(self.cost) * u64::from(self.cfg.hysteresis_pct) / 100;
        let (low, high) = (
            u64::from(self.cost).saturating_sub(band),
            u64::from(self.cost) + band,
        );
        let worse = match u64::from(target) {
            t if t > high => true,
            t if t < low => false,
            _ => {
                self.pending = None;
                return None;
            }
        };
        let since = match self.pending {
            Some(p) if p.worse == worse => p.since,
            _ => {
                self.pending = Some(Pending { worse, since: now });
                now
            }
        };
        let wait = if worse {
            self.cfg.confirm
        } else {
            self.cfg.hold_down
        };
        if now.saturating_duration_since(since) < wait {
            return None;
        }
        self.pending = None;
        self.cost = target;
        self.changes += 1;
        Some(target)
    }

    /// When [`PeerScore::evaluate`] could next change the cost without a new sample.
    pub fn next_check(&self) -> Option<Instant> {
        self.pending.map(|p| {
            p.since
                + if p.worse {
                    self.cfg.confirm
                } else {
                    self.cfg.hold_down
                }
        })
    }
}

#[cfg(test)]
mod tests;
