//! Properties of peer selection (`crate::selection`): convergence with fixed
//! costs, no oscillation under jitter, and the safety rules for any input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::selection::tests::{c, id, split, HOLD};
use crate::selection::{Action, Candidate, NodeRole, SelectionConfig, Selector};
use crate::NodeId;

fn role() -> impl Strategy<Value = NodeRole> {
    prop_oneof![
        Just(NodeRole::Default),
        Just(NodeRole::Relay),
        Just(NodeRole::Thin)
    ]
}

/// Whether the cheapest idle node may replace the dearest active one.
fn swap_possible(s: &Selector, cost: &BTreeMap<NodeId, u32>, margin: u32) -> bool {
    // Long links are chosen whatever their cost: only the others compete.
    let worst = s
        .active()
        .filter(|n| !s.is_long_link(n))
        .filter_map(|n| cost.get(n))
        .max();
    let best = cost
        .iter()
        .filter(|(n, _)| !s.is_active(n))
        .map(|(_, k)| k)
        .min();
    match (worst, best) {
        (Some(&w), Some(&b)) => {
            b < w && u64::from(b) * 100 <= u64::from(w) * u64::from(100 - margin)
        }
        _ => false,
    }
}

/// Costs more than 1.1/0.9 apart: ±10 % jitter never reorders them, so the
/// first fill is already the best set and no round ever swaps.
#[test]
fn separated_costs_never_swap_under_jitter() {
    let mut s = Selector::new(SelectionConfig {
        long_links: 0,
        ..SelectionConfig::default()
    });
    let mut t = Instant::now();
    for round in 0..60 {
        let cands: Vec<_> = (0..10)
            .map(|i| {
                let f = if (i + round) % 2 == 0 { 0.9 } else { 1.1 };
                c(i, Some((100.0 * 1.25f64.powi(i as i32) * f) as u32))
            })
            .collect();
        assert!(split(&s.decide(t, &cands))[0].is_empty(), "round {round}");
        t += HOLD;
    }
    assert_eq!(
        s.active().cloned().collect::<Vec<_>>(),
        vec![id(0), id(1), id(2)]
    );
}

/// Costs inside the jitter window (84 vs 100) can swap late, once: the swap
/// is a real gain and no jitter undoes it.
#[test]
fn a_late_swap_under_jitter_is_a_real_gain_and_sticks() {
    let mut s = Selector::new(SelectionConfig::for_role(NodeRole::Thin));
    let t = Instant::now();
    let round = |x, b| [c(1, Some(x)), c(2, Some(b))];
    assert_eq!(split(&s.decide(t, &round(90, 92)))[1], vec![id(1)]);
    assert_eq!(split(&s.decide(t + HOLD, &round(100, 84)))[1], vec![]);
    let out = s.decide(t + HOLD * 2, &round(110, 75));
    assert_eq!(split(&out)[..2], [vec![id(1)], vec![id(2)]]);
    let out = s.decide(t + HOLD * 3, &round(90, 92));
    assert_eq!(split(&out)[..2], [vec![], vec![]]);
}

/// A candidate for the arbitrary-input property: few node ids (so duplicates
/// happen), ties and extreme costs.
fn any_candidate() -> impl Strategy<Value = Candidate> {
    let cost = proptest::option::of(prop_oneof![0u32..20, any::<u32>()]);
    (
        0usize..12,
        prop::bool::weighted(0.2),
        cost,
        prop::bool::weighted(0.8),
    )
        .prop_map(|(i, pinned, cost, reachable)| Candidate {
            pinned,
            reachable,
            ..c(i, cost)
        })
}

proptest! {
    // No regression files: this checkout's tree is shared.
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    /// (a) Fixed distinct costs: the active set stays within
    /// [min(min_active, n), max_active] and, within n rounds, stops changing
    /// with no idle candidate cheap enough to swap in.
    #[test]
    fn converges_to_the_best(
        role in role(),
        costs in proptest::collection::btree_set(0u32..10_000, 5..40)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle(),
    ) {
        let cfg = SelectionConfig::for_role(role);
        let n = costs.len();
        let cands: Vec<_> = costs.iter().enumerate().map(|(i, &k)| c(i, Some(k))).collect();
        let cost: BTreeMap<_, _> = (0..n).map(|i| (id(i), costs[i])).collect();
        let mut s = Selector::new(cfg.clone());
        let mut now = Instant::now();
        for round in 0..n + 10 {
            let [down, up, _] = split(&s.decide(now, &cands));
            let len = s.active_len();
            prop_assert!(len >= cfg.min_active.min(n) && len <= cfg.max_active, "size {}", len);
            if round >= n {
                prop_assert!(down.is_empty() && up.is_empty(), "round {}", round);
                prop_assert!(!swap_possible(&s, &cost, cfg.swap_margin_pct));
            }
            now += cfg.min_hold;
        }
    }

    /// (b) Fixed true costs, each measured with ±10 % jitter every round,
    /// margin 30 %: every swap is a real gain (true cost at most
    /// 0.7 × 1.1 / 0.9 of the peer it replaces, plus rounding), so the active
    /// set never comes back to a set it left: no oscillation. Zero swaps after
    /// the first n rounds is *not* asserted: a pair whose true costs are within
    /// the jitter window (e.g. 84 vs 100) may be misordered by the first fill
    /// and fixed by one late swap when the jitter reveals it (see
    /// `a_late_swap_under_jitter_is_a_real_gain_and_sticks`).
    #[test]
    fn no_oscillation_under_jitter(
        role in role(),
        costs in prop_oneof![
            proptest::collection::vec(100u32..10_000, 5..40),
            proptest::collection::vec(100u32..130, 5..40),
        ],
        jitter in proptest::collection::vec(900u64..=1100, (40 + 50) * 40),
    ) {
        let cfg = SelectionConfig::for_role(role);
        let n = costs.len();
        let mut s = Selector::new(cfg.clone());
        let mut now = Instant::now();
        let mut left: BTreeSet<Vec<NodeId>> = BTreeSet::new();
        for round in 0..n + 50 {
            let cands: Vec<_> = costs.iter().enumerate().map(|(i, &k)| {
                c(i, Some(u32::try_from(u64::from(k) * jitter[round * 40 + i] / 1000).unwrap()))
            }).collect();
            let before: Vec<NodeId> = s.active().cloned().collect();
            let [down, up, _] = split(&s.decide(now, &cands));
            if round > 0 && !down.is_empty() {
                prop_assert_eq!((down.len(), up.len()), (1, 1), "one swap per round");
                let (out, inn) = (costs[down[0].as_str()[6..].parse::<usize>().unwrap()],
                                  costs[up[0].as_str()[6..].parse::<usize>().unwrap()]);
                prop_assert!(u64::from(inn) * 90 <= u64::from(out) * 77 + 100, "{} for {}", inn, out);
                left.insert(before);
                let after: Vec<NodeId> = s.active().cloned().collect();
                prop_assert!(!left.contains(&after), "round {}: back to {:?}", round, after);
            }
            now += cfg.min_hold;
        }
    }

    /// (c) Any input: no panic; never activates an unreachable candidate,
    /// never deactivates a pinned one, never exceeds max(max_active, pinned);
    /// the actions are grouped, consistent with the active set, and the same
    /// whatever the order of the candidates.
    #[test]
    fn safe_for_any_input(
        (min_active, max_active, max_warm, swap_margin_pct, hold_ms) in
            (0usize..6, 0usize..8, 0usize..5, 0u32..120, 0u64..120_000),
        rounds in proptest::collection::vec(
            (0u64..200_000, proptest::collection::vec(any_candidate(), 0..16),
             proptest::collection::vec(0usize..12, 0..2)),
            1..12),
    ) {
        let min_hold = Duration::from_millis(hold_ms);
        let cfg = SelectionConfig { min_active, max_active, max_warm, swap_margin_pct, min_hold, long_links: min_active % 2, salt: 0 };
        let mut s = Selector::new(cfg);
        let mut now = Instant::now();
        for (advance, cands, lost) in rounds {
            now += Duration::from_millis(advance);
            for l in lost {
                s.lost(&id(l));
            }
            let mut twin = s.clone();
            let mut rev = cands.clone();
            rev.reverse();
            let before: BTreeSet<NodeId> = s.active().cloned().collect();
            let out = s.decide(now, &cands);
            prop_assert_eq!(&out, &twin.decide(now, &rev));
            let kinds: Vec<u8> = out.iter().map(|a| match a {
                Action::Deactivate(_) => 0, Action::Activate(_) => 1, Action::Probe(_) => 2,
            }).collect();
            prop_assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{:?}", out);
            let pinned_in = |n: &NodeId| cands.iter().any(|c| &c.node == n && c.pinned);
            let reachable = |n: &NodeId| {
                cands.iter().any(|c| &c.node == n) && cands.iter().all(|c| &c.node != n || c.reachable)
            };
            let [down, up, probe] = split(&out);
            for n in &down {
                prop_assert!(before.contains(n) && !pinned_in(n), "down {:?}", n);
            }
            for n in up.iter().chain(&probe) {
                prop_assert!(reachable(n), "{:?}", n);
            }
            for n in &up {
                prop_assert!(!before.contains(n) && !down.contains(n), "up {:?}", n);
            }
            prop_assert!(probe.len() <= max_warm && probe.iter().all(|n| !s.is_active(n)));
            let mut want = before.clone();
            down.iter().for_each(|n| { want.remove(n); });
            want.extend(up);
            prop_assert_eq!(&want, &s.active().cloned().collect::<BTreeSet<_>>());
            let pinned: BTreeSet<_> = cands.iter().filter(|c| c.pinned).map(|c| &c.node).collect();
            prop_assert!(s.active_len() <= max_active.max(pinned.len()), "{} active", s.active_len());
            let usable: BTreeSet<_> = cands.iter().map(|c| &c.node).filter(|n| reachable(n)).collect();
            prop_assert!(s.active_len() >= min_active.min(max_active).min(usable.len()));
        }
    }
}
