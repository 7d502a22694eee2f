//! The `[scoring]` section of `trellis.toml`: how peer measurements become link costs
//! (docs/adr/0014-link-cost-from-peer-scores.md). Every key has a default.
//!
//! ```toml
//! [scoring]
//! rtt_floor = "5ms"        # RTT below this adds nothing
//! rtt_unit = "10ms"        # each unit above the floor adds the configured cost once
//! loss_weight = 20         # 5 % loss doubles the cost
//! hysteresis_pct = 25      # changes inside ±25 % are ignored
//! confirm = "2s"           # a worse cost takes effect after this long
//! hold_down = "30s"        # a better cost only after this long
//! ```

use std::time::Duration;

use serde::Deserialize;
use trellis_routing::scoring::ScoreConfig;

use super::{ConfigError, Int, Source, Text};

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScoring {
    rtt_floor: Text,
    rtt_unit: Text,
    loss_weight: Int,
    hysteresis_pct: Int,
    confirm: Text,
    hold_down: Text,
}

/// The scoring settings (the parts of [`ScoreConfig`] an operator may change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scoring {
    /// RTT below this adds nothing to a link's cost.
    pub rtt_floor: Duration,
    /// Each unit of RTT above the floor adds the configured cost once more.
    pub rtt_unit: Duration,
    /// Cost multiplier per unit of loss ratio.
    pub loss_weight: u32,
    /// Changes of the computed cost inside this band (percent) are ignored.
    pub hysteresis_pct: u32,
    /// A worse cost takes effect once it has held this long.
    pub confirm: Duration,
    /// A better cost takes effect once it has held this long.
    pub hold_down: Duration,
}

impl Default for Scoring {
    fn default() -> Self {
        let d = ScoreConfig::default();
        Self {
            rtt_floor: d.rtt_floor,
            rtt_unit: d.rtt_unit,
            loss_weight: d.loss_weight.round() as u32,
            hysteresis_pct: d.hysteresis_pct,
            confirm: d.confirm,
            hold_down: d.hold_down,
        }
    }
}

impl Scoring {
    /// The routing core's settings.
    pub fn score_config(&self) -> ScoreConfig {
        ScoreConfig {
            rtt_floor: self.rtt_floor,
            rtt_unit: self.rtt_unit,
            loss_weight: f64::from(self.loss_weight),
            hysteresis_pct: self.hysteresis_pct,
            confirm: self.confirm,
            hold_down: self.hold_down,
            ..ScoreConfig::default()
        }
    }
}

pub(super) fn scoring(src: &Source<'_>, raw: &RawScoring) -> Result<Scoring, ConfigError> {
    let d = Scoring::default();
    let duration = |v: &Text, default: Duration| match v {
        Some(v) => src.duration(v),
        None => Ok(default),
    };
    let rtt_unit = duration(&raw.rtt_unit, d.rtt_unit)?;
    if rtt_unit < Duration::from_millis(1) {
        if let Some(v) = &raw.rtt_unit {
            return Err(src.at(v.span(), "rtt_unit must be at least 1ms"));
        }
    }
    Ok(Scoring {
        rtt_floor: duration(&raw.rtt_floor, d.rtt_floor)?,
        rtt_unit,
        loss_weight: src.int_or(&raw.loss_weight, "loss_weight", 0..=1000, d.loss_weight)?,
        hysteresis_pct: src.int_or(
            &raw.hysteresis_pct,
            "hysteresis_pct",
            0..=100,
            d.hysteresis_pct,
        )?,
        confirm: duration(&raw.confirm, d.confirm)?,
        hold_down: duration(&raw.hold_down, d.hold_down)?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::node::config::tests::parse_text as parse;

    #[test]
    fn the_section_changes_only_what_it_names() {
        let c =
            parse("listen = \"127.0.0.1:1\"\n[scoring]\nrtt_floor = \"1s\"\nhold_down = \"1m\"\n")
                .expect("valid");
        assert_eq!(c.scoring.rtt_floor, Duration::from_secs(1));
        assert_eq!(c.scoring.hold_down, Duration::from_secs(60));
        assert_eq!(c.scoring.confirm, Duration::from_secs(2));
        let cfg = c.scoring.score_config();
        assert_eq!(cfg.rtt_floor, Duration::from_secs(1));
        assert!(parse("listen = \"127.0.0.1:1\"\n[scoring]\nhysteresis_pct = 101\n").is_err());
        assert!(parse("listen = \"127.0.0.1:1\"\n[scoring]\nrtt_unit = \"0ms\"\n").is_err());
        assert!(parse("listen = \"127.0.0.1:1\"\n[scoring]\nbogus = 1\n").is_err());
    }
}
