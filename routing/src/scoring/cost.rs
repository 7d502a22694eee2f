//! The link-cost formula (docs/adr/0014):
//!
//! ```text
//! cost = base_cost                       configured link cost (1..=65535)
//!      × (200 − trust) / 100             trust 100 → ×1, 50 → ×1.5, 0 → ×2   (ADR 0009)
//!      × (1 + (rtt − rtt_floor) / rtt_unit)   up to 5 ms → ×1, 15 ms → ×2, 55 ms → ×6
//!      × (1 + loss_weight × loss)        5 % → ×2, 20 % → ×5
//!      × (1 + failure_weight × failures) each session failure in the window +50 %, four at most
//! ```
//!
//! rounded, at least 1 and at most [`MAX_COST`], so one link can never overflow a
//! path's metric.

use std::time::Duration;

use super::ScoreConfig;

/// The largest cost a link can take.
pub const MAX_COST: u32 = 1_000_000;

/// What the cost is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct CostInputs {
    /// The configured cost.
    pub base_cost: u32,
    /// Trust now, 0..=100.
    pub trust: u32,
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Loss ratio, 0..=1.
    pub loss: f64,
    /// Session failures in the window.
    pub failures: usize,
}

/// The cost of a link.
pub fn link_cost(i: &CostInputs, cfg: &ScoreConfig) -> u32 {
    let trust = f64::from(200 - i.trust.min(100)) / 100.0;
    let unit = cfg.rtt_unit.as_secs_f64().max(1e-6);
    let rtt = 1.0 + i.rtt.saturating_sub(cfg.rtt_floor).as_secs_f64() / unit;
    let loss = 1.0 + cfg.loss_weight * i.loss.clamp(0.0, 1.0);
    let failures = 1.0 + f64::from(cfg.failure_weight_pct) / 100.0 * i.failures.min(4) as f64;
    let cost = f64::from(i.base_cost.max(1)) * trust * rtt * loss * failures;
    if cost.is_finite() {
        cost.round().clamp(1.0, f64::from(MAX_COST)) as u32
    } else {
        MAX_COST
    }
}
