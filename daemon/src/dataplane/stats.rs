//! The data plane's counters (shown by `trellis status`) and the gauges its limits read:
//! streams per peer and per service, each slot released when its guard drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::wire::Reset;

/// Node-wide counters, each shown under its name in `status`.
pub(super) struct Stats {
    /// Streams this node carried: ingress connections set up, transit and origin streams.
    pub opened: Arc<AtomicU64>,
    /// Streams refused here (every reason).
    pub refused: Arc<AtomicU64>,
    /// Refusals by reason.
    pub refused_by: Vec<(Reset, Arc<AtomicU64>)>,
    /// Established streams that ended with a reset (here or passed on from the path).
    pub reset: Arc<AtomicU64>,
    /// Bytes relayed, both ways, at this node.
    pub bytes: Arc<AtomicU64>,
    /// Streams open now.
    pub active: Arc<AtomicU64>,
}

impl Stats {
    pub(super) fn new() -> Self {
        let refusals = [
            Reset::NoRoute,
            Reset::NoTransit,
            Reset::HopLimit,
            Reset::Unauthorized,
            Reset::EndpointRefused,
            Reset::PeerLimit,
            Reset::ServiceLimit,
            Reset::BadHeader,
            Reset::NextHopUnreachable,
            Reset::ShuttingDown,
        ];
        Self {
            opened: Arc::default(),
            refused: Arc::default(),
            refused_by: refusals.into_iter().map(|r| (r, Arc::default())).collect(),
            reset: Arc::default(),
            bytes: Arc::default(),
            active: Arc::default(),
        }
    }

    /// Counts a refusal decided at this node.
    pub(super) fn refused(&self, reset: Reset) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some((_, c)) = self.refused_by.iter().find(|(r, _)| *r == reset) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every counter with its `status` name.
    pub(super) fn named(&self) -> Vec<(String, Arc<AtomicU64>)> {
        let mut out = vec![
            ("dataplane_streams_opened".to_owned(), self.opened.clone()),
            ("dataplane_streams_refused".to_owned(), self.refused.clone()),
            ("dataplane_streams_reset".to_owned(), self.reset.clone()),
            ("dataplane_streams_active".to_owned(), self.active.clone()),
            ("dataplane_bytes_forwarded".to_owned(), self.bytes.clone()),
        ];
        for (reset, counter) in &self.refused_by {
            out.push((
                format!("dataplane_refused_{}", reset.name()),
                counter.clone(),
            ));
        }
        out
    }
}

/// Holds one slot of a limit; gives it back when dropped.
pub(super) struct Slot(Box<dyn FnOnce() + Send + Sync>);

impl Drop for Slot {
    fn drop(&mut self) {
        let release = std::mem::replace(&mut self.0, Box::new(|| {}));
        release();
    }
}

/// Takes a slot of `count` if it is below `limit`.
pub(super) fn take_slot(count: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
    let taken = count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok();
    let count = count.clone();
    taken.then(|| {
        Slot(Box::new(move || {
            count.fetch_sub(1, Ordering::AcqRel);
        }))
    })
}

/// Streams per service through this node.
#[derive(Default)]
pub(super) struct ServiceGauges {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl ServiceGauges {
    /// Takes a slot for `service` if it has fewer than `limit` streams here.
    pub(super) fn take(&self, service: &str, limit: usize) -> Option<Slot> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(service.to_owned()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(counts);
        let (counts, service) = (self.counts.clone(), service.to_owned());
        Some(Slot(Box::new(move || {
            let mut counts = counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = counts.get_mut(&service) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&service);
                }
            }
        })))
    }
}

/// One `trellis connect` listener's counters.
#[derive(Default)]
pub(super) struct ListenerStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub active: Arc<AtomicUsize>,
    /// Connections refused or reset before they carried data.
    pub refused: AtomicU64,
    /// Bytes from clients toward the service.
    pub sent: Arc<AtomicU64>,
    /// Bytes from the service toward clients.
    pub received: Arc<AtomicU64>,
    /// The last refusal or bind failure, for `connect list`.
    pub last_error: Mutex<Option<String>>,
}

impl ListenerStats {
    pub(super) fn note_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back_when_dropped() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = take_slot(&count, 2).expect("first");
        let _b = take_slot(&count, 2).expect("second");
        assert!(take_slot(&count, 2).is_none());
        drop(a);
        assert!(take_slot(&count, 2).is_some());
        let services = ServiceGauges::default();
        let s = services.take("web.acme", 1).expect("first");
        assert!(services.take("web.acme", 1).is_none());
        assert!(services.take("db.acme", 1).is_some());
        drop(s);
        assert!(services.take("web.acme", 1).is_some());
    }
}
