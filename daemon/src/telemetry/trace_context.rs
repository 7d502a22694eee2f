//! Trace context across hops: the W3C trace-context triple (trace id, parent span id,
//! flags) in 25 bytes, carried by an update batch (`UpdateBatch.traceContext`) and by a
//! data-plane stream header, so one advertisement or one connection can be followed from
//! node to node in a trace backend.
//!
//! A node sends a context only while it exports spans; a receiver that does not export
//! ignores it. Malformed bytes from a peer are ignored (the batch is still applied): a
//! trace context is a hint for observability, never input to routing.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported (set once at start).
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(super) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether this process exports spans: callers skip building per-message spans when not.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A span's place in a trace, as sent to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The sending span (the receiver's parent).
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Encoded length.
    pub const LEN: usize = 25;

    /// The wire form: trace id, span id, flags.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// Reads the wire form; `None` for a wrong length or an all-zero id (invalid in W3C
    /// trace context), which the receiver ignores.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&bytes[..16]);
        span_id.copy_from_slice(&bytes[16..24]);
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags: bytes[24],
        })
    }

    /// The context of `span`, if spans are exported and it has one.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        if !exporting() || span.is_none() {
            return None;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| Self {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }

    /// The context of the span the caller is in.
    pub fn current() -> Option<Self> {
        Self::of(&tracing::Span::current())
    }

    /// Makes `span` a child of this remote span (before `span` is first entered).
    pub fn adopt(&self, span: &tracing::Span) {
        let remote = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// The trace id as 32 hex digits.
    pub fn trace_hex(&self) -> String {
        TraceId::from_bytes(self.trace_id).to_string()
    }
}

/// Hex trace and span id of the active OpenTelemetry context, for JSON log lines.
pub(super) fn current_ids() -> Option<(String, String)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let tp = TraceParent {
            trace_id: [7; 16],
            span_id: [9; 8],
            flags: 1,
        };
        assert_eq!(TraceParent::decode(&tp.encode()), Some(tp));
        assert_eq!(TraceParent::decode(&[1; 24]), None);
        assert_eq!(TraceParent::decode(&[0; 25]), None);
        let mut zero_span = tp.encode();
        zero_span[16..24].fill(0);
        assert_eq!(TraceParent::decode(&zero_span), None);
        assert_eq!(tp.trace_hex(), "07".repeat(16));
    }

    #[test]
    fn nothing_is_sent_while_spans_are_not_exported() {
        assert_eq!(TraceParent::current(), None);
    }
}
