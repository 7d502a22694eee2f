use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn inputs(rtt_ms: u64, loss: f64, trust: u32, failures: usize) -> CostInputs {
    CostInputs {
        base_cost: 10,
        trust,
        rtt: MS * u32::try_from(rtt_ms).unwrap_or(u32::MAX),
        loss,
        failures,
    }
}

#[test]
fn the_formula_doubles_for_each_documented_step() {
    let cfg = ScoreConfig::default();
    assert_eq!(link_cost(&inputs(0, 0.0, 100, 0), &cfg), 10);
    assert_eq!(
        link_cost(&inputs(0, 0.0, 50, 0), &cfg),
        15,
        "trust 50: ×1.5"
    );
    assert_eq!(link_cost(&inputs(0, 0.0, 0, 0), &cfg), 20, "trust 0: ×2");
    assert_eq!(
        link_cost(&inputs(4, 0.0, 100, 0), &cfg),
        10,
        "below the floor: ×1"
    );
    assert_eq!(link_cost(&inputs(15, 0.0, 100, 0), &cfg), 20, "15 ms: ×2");
    assert_eq!(
        link_cost(&inputs(0, 0.05, 100, 0), &cfg),
        20,
        "5 % loss: ×2"
    );
    assert_eq!(
        link_cost(&inputs(0, 0.0, 100, 2), &cfg),
        20,
        "two failures: ×2"
    );
    assert_eq!(
        link_cost(&inputs(0, 0.0, 100, 9), &cfg),
        30,
        "at most four count"
    );
    assert_eq!(
        link_cost(&inputs(u64::MAX / 2, 1.0, 0, 4), &cfg),
        cost::MAX_COST
    );
}

/// Samples every second for `secs` with `rtt`; returns the costs announced.
fn feed(score: &mut PeerScore, now: &mut Instant, secs: u32, rtt: Duration) -> Vec<u32> {
    let mut out = Vec::new();
    for _ in 0..secs {
        *now += S;
        score.rtt_sample(*now, rtt);
        out.extend(score.evaluate(*now));
    }
    out
}

#[test]
fn a_degraded_link_costs_more_after_confirm_and_wins_back_only_after_the_hold_down() {
    let mut now = Instant::now();
    let mut score = PeerScore::new(ScoreConfig::default(), 10, 100, now);
    assert!(
        feed(&mut score, &mut now, 20, MS / 5).is_empty(),
        "LAN RTT: no change"
    );
    assert_eq!(score.cost(), 10);
    // 25 ms: the average climbs; the first announced rise waits for `confirm`.
    let start = now;
    let rises = feed(&mut score, &mut now, 30, MS * 25);
    // The announced cost climbs in steps and stops within the band below the target.
    assert!(!rises.is_empty() && score.cost() >= 20, "{rises:?}");
    assert!(score.target(now) <= score.cost() * 5 / 4, "within the band");
    let first_rise = score.changes();
    assert!(first_rise >= 1);
    // Good again: the average drops at once, the cost only after 30 s of good.
    let recovered_at = now;
    let mut back = None;
    for _ in 0..60 {
        now += S;
        score.rtt_sample(now, MS / 5);
        if let Some(c) = score.evaluate(now) {
            back = Some((c, now));
            break;
        }
    }
    let (cost, at) = back.expect("the cost comes back down");
    assert!(cost < 15, "{cost}");
    assert!(at.duration_since(recovered_at) >= Duration::from_secs(30));
    assert!(start < recovered_at);
}

#[test]
fn a_burst_of_queueing_shorter_than_the_window_does_not_move_the_cost() {
    let mut now = Instant::now();
    let mut score = PeerScore::new(ScoreConfig::default(), 10, 100, now);
    feed(&mut score, &mut now, 20, MS);
    // Four seconds of 80 ms (a bulk transfer queueing on the link): the minimum over the
    // 5 s window stays at 1 ms.
    assert!(feed(&mut score, &mut now, 4, MS * 80).is_empty());
    assert!(feed(&mut score, &mut now, 20, MS).is_empty());
    assert_eq!(score.cost(), 10);
}

#[test]
fn loss_over_the_window_raises_the_cost_and_a_new_connection_starts_a_new_window() {
    let mut now = Instant::now();
    let mut score = PeerScore::new(ScoreConfig::default(), 10, 100, now);
    let (mut sent, mut lost) = (0u64, 0u64);
    for _ in 0..10 {
        now += S;
        sent += 100;
        lost += 5;
        score.packets(now, sent, lost);
        score.evaluate(now);
    }
    assert!((score.loss() - 0.05).abs() < 1e-9);
    assert_eq!(score.cost(), 20);
    // Counters restart with a new connection: no negative deltas, a fresh window.
    now += S;
    score.packets(now, 10, 0);
    now += S;
    score.packets(now, 200, 0);
    assert_eq!(score.loss(), 0.0);
}

#[test]
fn trust_drops_with_failures_and_bad_input_and_recovers_slowly() {
    let mut now = Instant::now();
    let mut score = PeerScore::new(ScoreConfig::default(), 10, 80, now);
    assert_eq!(score.trust(now), 80);
    score.failure(now);
    score.invalid_input(now);
    assert_eq!(score.trust(now), 50);
    assert_eq!(score.failures(now), 1);
    now += Duration::from_secs(600);
    assert_eq!(score.trust(now), 60, "one point a minute");
    now += Duration::from_secs(3600);
    assert_eq!(score.trust(now), 80, "never above the configured level");
    assert_eq!(score.failures(now), 0, "out of the window");
}

#[test]
fn a_restart_keeps_a_bad_peer_bad() {
    let mut now = Instant::now();
    let mut score = PeerScore::new(ScoreConfig::default(), 10, 100, now);
    for _ in 0..3 {
        now += S;
        score.failure(now);
    }
    feed(&mut score, &mut now, 10, MS * 5);
    let state = score.state(now);
    let later = now + Duration::from_secs(5);
    let restored = PeerScore::new(ScoreConfig::default(), 10, 100, later).restore(&state, later);
    assert_eq!(restored.failures(later), 3);
    assert_eq!(restored.trust(later), score.trust(now));
    assert_eq!(restored.cost(), score.cost());
    assert_eq!(
        restored.rtt().map(|r| r.as_micros()),
        score.rtt().map(|r| r.as_micros())
    );
    // Read back an hour later (the node was down): trust recovered meanwhile.
    let aged = ScoreState {
        taken_secs_ago: 3600,
        ..state
    };
    let restored = PeerScore::new(ScoreConfig::default(), 10, 100, later).restore(&aged, later);
    assert_eq!(restored.trust(later), 100);
    assert_eq!(restored.failures(later), 0, "out of the ten-minute window");
}

#[test]
fn steady_jitter_around_a_wan_rtt_leaves_the_cost_alone() {
    let mut jitter = Jitter(7);
    let mut now = Instant::now();
    let mut score = PeerScore::new(ScoreConfig::default(), 10, 100, now);
    for _ in 0..60 {
        now += S;
        score.rtt_sample(now, (MS * 40).mul_f64(jitter.factor(0.15)));
        score.evaluate(now);
    }
    let settled = score.changes();
    for _ in 0..3600 {
        now += S;
        score.rtt_sample(now, (MS * 40).mul_f64(jitter.factor(0.15)));
        score.evaluate(now);
    }
    assert_eq!(score.changes(), settled, "an hour of ±15 % jitter at 40 ms");
}

/// A small xorshift generator: i.i.d. jitter from a seed proptest picks.
struct Jitter(u64);

impl Jitter {
    fn factor(&mut self, spread: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        1.0 - spread + 2.0 * spread * unit
    }
}

proptest! {
    /// Random ±15 % jitter around a steady RTT does not make the cost oscillate: after
    /// the first minute it changes at most once more in ten minutes (a late step when
    /// the first announced cost sat just inside the band), and never back and forth.
    #[test]
    fn jitter_does_not_move_the_cost(seed in 1u64.., mean_ms in 1u64..200, base in 1u32..1000) {
        let mut jitter = Jitter(seed);
        let mut now = Instant::now();
        let mut score = PeerScore::new(ScoreConfig::default(), base, 100, now);
        let mean = MS * u32::try_from(mean_ms).unwrap_or(1);
        for _ in 0..60 {
            now += S;
            score.rtt_sample(now, mean.mul_f64(jitter.factor(0.15)));
            score.evaluate(now);
        }
        let settled = score.changes();
        prop_assert!(settled <= 3, "{settled} changes while settling");
        let mut costs = vec![score.cost()];
        for _ in 0..600 {
            now += S;
            score.rtt_sample(now, mean.mul_f64(jitter.factor(0.15)));
            if let Some(cost) = score.evaluate(now) {
                costs.push(cost);
            }
        }
        prop_assert!(costs.len() <= 2, "the cost moved under jitter: {:?}", costs);
    }

    /// Whatever the samples, the cost stays in 1..=MAX_COST and evaluate never panics.
    #[test]
    fn any_samples_give_a_bounded_cost(
        samples in proptest::collection::vec((0u64..10_000_000, 0u64..1000, 0u64..1000, any::<bool>()), 0..200),
        base in 0u32..70_000,
        trust in 0u32..200,
    ) {
        let mut now = Instant::now();
        let mut score = PeerScore::new(ScoreConfig::default(), base, trust, now);
        let (mut sent, mut lost) = (0u64, 0u64);
        for (rtt_us, s, l, fail) in samples {
            now += S;
            score.rtt_sample(now, Duration::from_micros(rtt_us));
            sent += s;
            lost += l.min(s);
            score.packets(now, sent, lost);
            if fail {
                score.failure(now);
            }
            score.evaluate(now);
            prop_assert!((1..=cost::MAX_COST).contains(&score.cost()));
            prop_assert!(score.trust(now) <= 100);
        }
    }
}
