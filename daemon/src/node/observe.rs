//! What the routing loop tells telemetry (docs/operations.md, "Telemetry"): a span per
//! received update batch (a child of the sender's span when the batch carried a trace
//! context) and per local advertisement, the trace context put on the batches those
//! cause, the batch processing time, and convergence episodes.
//!
//! The loop holds one [`Observer`]; when spans are not exported it builds none and puts
//! no context on the wire.

use std::time::{Duration, Instant};

use trellis_routing::convergence::Convergence;
use trellis_routing::{NodeId, UpdateBatch};

use crate::session::Outgoing;
use crate::telemetry::metrics::Recorders;
use crate::telemetry::TraceParent;

/// A cause older than this no longer labels outgoing batches (it would blame an old
/// change for a new one).
const CAUSE_TTL: Duration = Duration::from_secs(30);
/// A convergence episode ends after this long without a best-path change.
const QUIET: Duration = Duration::from_secs(1);

/// The routing loop's telemetry.
pub struct Observer {
    recorders: Recorders,
    cause: Option<(TraceParent, Instant)>,
    convergence: Convergence,
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            recorders: Recorders::new(),
            cause: None,
            convergence: Convergence::new(QUIET),
        }
    }
}

impl Observer {
    /// The span of a received batch (`update.batch`), a child of the sender's span.
    pub fn batch_span(
        &mut self,
        peer: &NodeId,
        batch: &UpdateBatch,
        trace: Option<TraceParent>,
    ) -> tracing::Span {
        if !crate::telemetry::exporting() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "update.batch",
            peer = peer.as_str(),
            // i64: OpenTelemetry has no unsigned attributes (a u64 would become text).
            announcements = i64::try_from(batch.announce.len()).unwrap_or(i64::MAX),
            withdrawals = i64::try_from(batch.withdraw.len()).unwrap_or(i64::MAX),
            remote_trace = trace.is_some(),
        );
        if let Some(parent) = trace {
            parent.adopt(&span);
        }
        self.caused_by(&span);
        span
    }

    /// The span of a local advertisement or withdrawal (`route.advertise`,
    /// `route.withdraw`): the root of the trace that follows the change through the mesh.
    pub fn origination_span(&mut self, what: &'static str, service: &str) -> tracing::Span {
        if !crate::telemetry::exporting() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!("route.change", change = what, service = service);
        self.caused_by(&span);
        span
    }

    fn caused_by(&mut self, span: &tracing::Span) {
        if let Some(tp) = TraceParent::of(span) {
            self.cause = Some((tp, Instant::now()));
        }
    }

    /// What to hand a session for an update batch: with the newest cause's context
    /// while it is fresh.
    pub fn outgoing(&self, batch: UpdateBatch) -> Outgoing {
        match self.cause {
            Some((tp, at)) if at.elapsed() < CAUSE_TTL => Outgoing::Traced(batch, tp),
            _ => Outgoing::Message(trellis_routing::Message::Update(batch)),
        }
    }

    /// A received batch took `d` to apply.
    pub fn batch_done(&self, d: Duration) {
        self.recorders.batch(d);
    }

    /// A best path changed.
    pub fn best_changed(&mut self, now: Instant) {
        self.convergence.changed(now);
    }

    /// When the open convergence episode ends (the loop wakes up then).
    pub fn deadline(&self) -> Option<Instant> {
        self.convergence.deadline()
    }

    /// Records an episode that has ended.
    pub fn tick(&mut self, now: Instant) {
        if let Some(d) = self.convergence.poll(now) {
            self.recorders.convergence(d);
        }
    }
}
