//! A userspace link emulator: netem-like impairments on loopback UDP flows.
//!
//! The kernel of the project machine has no netem, so every peering link of
//! the multi-process testbed passes through UDP relays instead.
//!
//! # Contract
//!
//! - A node dials its peers from its listening UDP socket, so one QUIC
//!   connection is one UDP flow. The dialer is configured to reach the
//!   listener at a relay address `R`; the relay ([`relay`]) forwards the
//!   dialer's datagrams to the listener's real address from its own upstream
//!   socket `U`, and the listener's replies arriving on `U` back to the last
//!   address it heard the dialer from.
//! - One relay per (dialer, listener) direction. A link A–B has two relays
//!   (A dials B, B dials A) that share one [`Link`]: the same
//!   [`Impairment`], cut state and counters apply to both directions of both
//!   relays.
//! - Each direction of a relay is one task that receives datagrams, decides
//!   their fate and keeps the survivors in a min-heap ordered by release time;
//!   no task is spawned per packet. Jitter may reorder datagrams, as in netem.
//! - Random decisions (loss, Gilbert–Elliott bursts, jitter) come from the
//!   link's seeded [`Rng`], so a given arrival sequence always meets the same
//!   fate.
//! - A cut link drops everything, including what was already queued when it
//!   was cut. Queues are bounded; overflow is dropped and counted.
//! - Nothing panics on socket errors: they are counted in [`LinkStats::errors`].
//! - Only loopback addresses are accepted.
//!
//! Runtime changes from another process go through [`control`].
#![warn(missing_docs)]

pub mod control;
mod hub;
mod relay;

#[cfg(test)]
mod tests;

pub use hub::Hub;
pub use relay::{relay, Relay};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::rng::Rng;

/// The longest delay a datagram can be given.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The impairments of a link, applied to each direction independently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Impairment {
    /// One-way delay added to each datagram, in milliseconds.
    pub delay_ms: f64,
    /// Uniform jitter of ± this many milliseconds around `delay_ms`
    /// (datagrams may be reordered, as with netem).
    pub jitter_ms: f64,
    /// Independent loss probability, `0..=1`.
    pub loss: f64,
    /// Gilbert–Elliott bursty loss, applied in addition to `loss`.
    pub burst: Option<Burst>,
    /// Bandwidth cap per direction in kbit/s (1 kbit = 1000 bits). Datagrams
    /// wait for their serialization time; beyond 256 KiB of backlog per
    /// direction they are dropped and counted in `dropped_queue`.
    pub rate_kbps: Option<u64>,
}

/// Gilbert–Elliott two-state loss: the link moves between a good and a bad
/// state before each datagram, and loses it with `loss_in_bad` in the bad one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Burst {
    /// Probability of moving from the good to the bad state, per datagram.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state, per datagram.
    pub p_bad_to_good: f64,
    /// Loss probability while in the bad state.
    pub loss_in_bad: f64,
}

impl Impairment {
    /// Checks that every field is in range: delays finite and non-negative,
    /// probabilities in `0..=1`, a rate above zero.
    pub fn validate(&self) -> Result<(), String> {
        let ms = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a non-negative number of milliseconds, not {v}"
                ))
            }
        };
        let p = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be a probability in 0..=1, not {v}"))
            }
        };
        ms("delay_ms", self.delay_ms)?;
        ms("jitter_ms", self.jitter_ms)?;
        p("loss", self.loss)?;
        if let Some(b) = self.burst {
            p("burst.p_good_to_bad", b.p_good_to_bad)?;
            p("burst.p_bad_to_good", b.p_bad_to_good)?;
            p("burst.loss_in_bad", b.loss_in_bad)?;
        }
        if self.rate_kbps == Some(0) {
            return Err("rate_kbps must be above zero (cut the link to stop it)".into());
        }
        Ok(())
    }
}

/// The counters of a link, summed over both directions of both relays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LinkStats {
    /// Datagrams sent on to their destination.
    pub forwarded: u64,
    /// Datagrams dropped by `loss` or a burst.
    pub dropped_loss: u64,
    /// Datagrams dropped because the link was cut.
    pub dropped_cut: u64,
    /// Datagrams dropped because a direction's queue was full.
    pub dropped_queue: u64,
    /// Socket errors (receive or send), and flaps requested outside a runtime.
    pub errors: u64,
}

/// What the random state of a link decided for one datagram.
pub(crate) struct Verdict {
    /// Delay plus jitter.
    pub delay: Duration,
    /// The rate cap at the time of the decision.
    pub rate_kbps: Option<u64>,
}

struct Random {
    impairment: Impairment,
    rng: Rng,
    /// Gilbert–Elliott state: true while bad.
    bad: bool,
}

#[derive(Default)]
struct Flap {
    /// Bumped each time flapping starts or stops; a flap task only toggles
    /// while its epoch is current, under this lock.
    epoch: u64,
    task: Option<JoinHandle<()>>,
}

impl Flap {
    /// Stops any running flap; true if one was running.
    fn stop(&mut self) -> bool {
        self.epoch += 1;
        match self.task.take() {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

/// One emulated link, shared by the relays of both its directions.
pub struct Link {
    name: String,
    random: Mutex<Random>,
    cut: AtomicBool,
    flap: Mutex<Flap>,
    forwarded: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_cut: AtomicU64,
    dropped_queue: AtomicU64,
    errors: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Link {
    /// A link named `name` (by convention `"a<->b"`), up, unimpaired, whose
    /// random decisions are drawn from `seed`.
    pub fn new(name: String, seed: u64) -> Arc<Self> {
        Arc::new(Self {
            name,
            random: Mutex::new(Random {
                impairment: Impairment::default(),
                rng: Rng::new(seed),
                bad: false,
            }),
            cut: AtomicBool::new(false),
            flap: Mutex::new(Flap::default()),
            forwarded: AtomicU64::new(0),
            dropped_loss: AtomicU64::new(0),
            dropped_cut: AtomicU64::new(0),
            dropped_queue: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the impairments for datagrams arriving from now on (queued
    /// datagrams keep their release times). Stops flapping; if the link was
    /// flapping it is left up, otherwise its cut state is unchanged.
    pub fn set(&self, i: Impairment) {
        self.stop_flap();
        let mut random = lock(&self.random);
        random.impairment = i;
        random.bad = false;
    }

    /// The current impairments.
    pub fn impairment(&self) -> Impairment {
        lock(&self.random).impairment.clone()
    }

    /// Cuts the link: every datagram is dropped until [`Link::heal`]. Stops
    /// flapping.
    pub fn cut(&self) {
        let mut flap = lock(&self.flap);
        flap.stop();
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Brings the link back up and stops flapping.
    pub fn heal(&self) {
        let mut flap = lock(&self.flap);
        flap.stop();
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the link drops everything right now.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            forwarded: get(&self.forwarded),
            dropped_loss: get(&self.dropped_loss),
            dropped_cut: get(&self.dropped_cut),
            dropped_queue: get(&self.dropped_queue),
            errors: get(&self.errors),
        }
    }

    /// Stops a running flap and leaves the link up; no-op otherwise.
    fn stop_flap(&self) {
        let mut flap = lock(&self.flap);
        if flap.stop() {
            self.cut.store(false, Ordering::SeqCst);
        }
    }

    /// Decides the fate of one arriving datagram: `None` if it is dropped
    /// (and counted), its delay otherwise.
    pub(crate) fn judge(&self) -> Option<Verdict> {
        if self.is_cut() {
            bump(&self.dropped_cut);
            return None;
        }
        let mut guard = lock(&self.random);
        let r = &mut *guard;
        let mut lost = r.rng.unit() < r.impairment.loss;
        if let Some(b) = r.impairment.burst {
            let flip = r.rng.unit();
            r.bad = if r.bad {
                flip >= b.p_bad_to_good
            } else {
                flip < b.p_good_to_bad
            };
            let draw = r.rng.unit();
            lost |= r.bad && draw < b.loss_in_bad;
        }
        if lost {
            bump(&self.dropped_loss);
            return None;
        }
        let mut ms = r.impairment.delay_ms;
        if r.impairment.jitter_ms > 0.0 {
            ms += (r.rng.unit() * 2.0 - 1.0) * r.impairment.jitter_ms;
        }
        // Negative or NaN delays collapse to zero (`max` drops NaN) and huge
        // ones to an hour, rather than panic.
        let delay = Duration::try_from_secs_f64(ms.max(0.0) / 1000.0)
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY);
        Some(Verdict {
            delay,
            rate_kbps: r.impairment.rate_kbps,
        })
    }

    pub(crate) fn count_forwarded(&self) {
        bump(&self.forwarded);
    }

    pub(crate) fn count_cut(&self) {
        bump(&self.dropped_cut);
    }

    pub(crate) fn count_queue(&self) {
        bump(&self.dropped_queue);
    }

    pub(crate) fn count_error(&self) {
        bump(&self.errors);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        lock(&self.flap).stop();
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("impairment", &self.impairment())
            .field("cut", &self.is_cut())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Starts the flapping of `link` (cut for period/2, up for period/2,
/// repeating, starting with the cut half) until healed, cut or set again;
/// `flap(link, None)` stops it and leaves the link up.
///
/// Flapping runs as a task on the current tokio runtime. Called outside a
/// runtime with a period, it stops any running flap, leaves the link up,
/// counts an error and returns `Err`: the flap was not applied.
pub fn flap(link: &Arc<Link>, period: Option<Duration>) -> Result<(), String> {
    let mut state = lock(&link.flap);
    let was_flapping = state.stop();
    let runtime = tokio::runtime::Handle::try_current();
    let (Some(period), Ok(runtime)) = (period, runtime.as_ref()) else {
        if was_flapping {
            link.cut.store(false, Ordering::SeqCst);
        }
        if period.is_some() {
            link.count_error();
            return Err(format!(
                "cannot flap {}: no tokio runtime to run the flap on",
                link.name
            ));
        }
        return Ok(());
    };
    let half = (period / 2).max(Duration::from_millis(1));
    let epoch = state.epoch;
    let weak = Arc::downgrade(link);
    link.cut.store(true, Ordering::SeqCst);
    state.task = Some(runtime.spawn(async move {
        let mut next = tokio::time::Instant::now() + half;
        loop {
            tokio::time::sleep_until(next).await;
            next += half;
            let Some(link) = weak.upgrade() else { return };
            let state = lock(&link.flap);
            if state.epoch != epoch {
                return;
            }
            link.cut.fetch_xor(true, Ordering::SeqCst);
        }
    }));
    Ok(())
}
