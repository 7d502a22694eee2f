//! The data plane on the wire: the stream header that opens every forwarded connection,
//! and the reset codes that end one early (docs/protocol.md, "Data plane").
//!
//! A forwarded TCP connection is one QUIC bidirectional stream per hop, on the peer
//! connection that already carries the routing session. The opener writes the header,
//! then the client's bytes follow on the same stream; the other way carries the
//! endpoint's bytes and nothing else. The header is fixed binary, not Cap'n Proto: it is
//! read once per stream per hop and is 16 bytes plus two names.
//!
//! ```text
//!  0      4        5       6        7          8             16
//!  | "TRS" 1 | hops | flags | svc len | node len | stream id u64 BE | service | requester | [trace] |
//! ```
//!
//! Flag bit 0 ([`FLAG_TRACE`]) says a 25-byte trace context (trace id, span id, trace
//! flags) follows the names. A node sets it only toward a peer whose session listed the
//! `traceContext` capability, so a node that predates it never sees the flag.
//!
//! A receiver refuses (resets with [`Reset::BadHeader`]) a wrong magic or version, an
//! unknown flag, zero hops, a name that does not parse, or a header that does not arrive
//! whole within the header timeout. A trace context with zero ids is ignored, not refused.

use tokio::io::{AsyncRead, AsyncReadExt};
use trellis_routing::{NodeId, ServiceName};

/// Magic and version: `TRS` and 1.
pub const MAGIC: [u8; 4] = *b"TRS\x01";
/// Length of the fixed part.
pub const FIXED_LEN: usize = 16;
/// Flag: a trace context follows the names.
pub const FLAG_TRACE: u8 = 0x01;

use crate::telemetry::TraceParent;

/// What opens a forwarded stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The service asked for.
    pub service: ServiceName,
    /// The node whose client opened the connection (the ingress).
    pub requester: NodeId,
    /// QUIC hops travelled, counting the one this header crosses (the ingress sends 1).
    pub hops: u8,
    /// Random id chosen by the ingress, the same at every hop (logs, traces).
    pub stream_id: u64,
    /// The sending hop's span, when it exports traces and this hop said it reads them.
    pub trace: Option<TraceParent>,
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The stream ended or failed before the header was whole.
    #[error("stream ended inside the header: {0}")]
    Truncated(String),
    /// Not a Trellis stream header of a version this node speaks.
    #[error("unknown magic or version {0:02x?}")]
    Magic([u8; 4]),
    /// A field is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl StreamHeader {
    /// The header as sent.
    pub fn encode(&self) -> Vec<u8> {
        let service = self.service.as_str().as_bytes();
        let requester = self.requester.as_str().as_bytes();
        let mut out = Vec::with_capacity(FIXED_LEN + service.len() + requester.len());
        out.extend_from_slice(&MAGIC);
        out.push(self.hops);
        out.push(if self.trace.is_some() { FLAG_TRACE } else { 0 });
        // Names are at most 253 bytes (service) and 127 (node id): both fit a byte.
        out.push(u8::try_from(service.len()).unwrap_or(u8::MAX));
        out.push(u8::try_from(requester.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.stream_id.to_be_bytes());
        out.extend_from_slice(service);
        out.extend_from_slice(requester);
        if let Some(trace) = &self.trace {
            out.extend_from_slice(&trace.encode());
        }
        out
    }

    /// Reads one header from `stream`, nothing after it.
    pub async fn read_from<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Self, HeaderError> {
        let mut fixed = [0u8; FIXED_LEN];
        stream
            .read_exact(&mut fixed)
            .await
            .map_err(|e| HeaderError::Truncated(e.to_string()))?;
        let (service_len, requester_len) = Self::check_fixed(&fixed)?;
        let trace_len = if fixed[5] & FLAG_TRACE != 0 {
            TraceParent::LEN
        } else {
            0
        };
        let mut names = vec![0u8; service_len + requester_len + trace_len];
        stream
            .read_exact(&mut names)
            .await
            .map_err(|e| HeaderError::Truncated(e.to_string()))?;
        let mut bytes = fixed.to_vec();
        bytes.extend_from_slice(&names);
        Self::decode(&bytes)
    }

    /// Checks the fixed part; returns the two name lengths.
    fn check_fixed(fixed: &[u8; FIXED_LEN]) -> Result<(usize, usize), HeaderError> {
        let magic = [fixed[0], fixed[1], fixed[2], fixed[3]];
        if magic != MAGIC {
            return Err(HeaderError::Magic(magic));
        }
        if fixed[4] == 0 {
            return Err(HeaderError::Invalid("hop count 0".into()));
        }
        if fixed[5] & !FLAG_TRACE != 0 {
            return Err(HeaderError::Invalid(format!(
                "unknown flags {:#04x}",
                fixed[5]
            )));
        }
        if fixed[6] == 0 || fixed[7] == 0 {
            return Err(HeaderError::Invalid("an empty name".into()));
        }
        Ok((usize::from(fixed[6]), usize::from(fixed[7])))
    }

    /// Parses a whole header held in `bytes` (exactly one header).
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let fixed: &[u8; FIXED_LEN] = bytes
            .get(..FIXED_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| HeaderError::Truncated(format!("{} bytes", bytes.len())))?;
        let (service_len, requester_len) = Self::check_fixed(fixed)?;
        let traced = fixed[5] & FLAG_TRACE != 0;
        let trace_len = if traced { TraceParent::LEN } else { 0 };
        let rest = &bytes[FIXED_LEN..];
        if rest.len() != service_len + requester_len + trace_len {
            return Err(HeaderError::Invalid(format!(
                "names are {} bytes, the header says {}",
                rest.len().saturating_sub(trace_len),
                service_len + requester_len
            )));
        }
        let trace = if traced {
            TraceParent::decode(&rest[service_len + requester_len..])
        } else {
            None
        };
        let rest = &rest[..service_len + requester_len];
        let text = |b: &[u8], what: &str| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| HeaderError::Invalid(format!("{what} is not UTF-8")))
        };
        let service = ServiceName::new(&text(&rest[..service_len], "service")?)
            .map_err(|e| HeaderError::Invalid(format!("service: {e}")))?;
        if service.is_wildcard() {
            return Err(HeaderError::Invalid(format!(
                "service {service} is an aggregate, not a service"
            )));
        }
        let requester = NodeId::new(&text(&rest[service_len..], "requester")?)
            .map_err(|e| HeaderError::Invalid(format!("requester: {e}")))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&fixed[8..16]);
        Ok(Self {
            service,
            requester,
            hops: fixed[4],
            stream_id: u64::from_be_bytes(id),
            trace,
        })
    }
}

/// Why a stream was reset: the QUIC application error code of `RESET_STREAM` and
/// `STOP_SENDING`. A hop that receives a reset passes the same code on, so the ingress
/// learns why the far end refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reset {
    /// The connection was cancelled without a more specific reason.
    Cancelled = 0,
    /// A hop has no route to the service.
    NoRoute = 1,
    /// The stream travelled more hops than a hop allows.
    HopLimit = 2,
    /// The ingress or the origin does not allow the requester to reach the service.
    Unauthorized = 3,
    /// The origin could not connect to the service's endpoint.
    EndpointRefused = 4,
    /// The sending peer has too many streams open through this node.
    PeerLimit = 5,
    /// The service has too many streams through this node.
    ServiceLimit = 6,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout = 7,
    /// The stream header was malformed or did not arrive in time.
    BadHeader = 8,
    /// A hop has a route but no session to its next hop, or could not open a stream there.
    NextHopUnreachable = 9,
    /// A node on the path is shutting down.
    ShuttingDown = 10,
    /// The client or the endpoint reset its TCP connection, or a socket failed.
    Aborted = 11,
    /// A peer connection on the path was lost while the stream was open.
    PathLost = 12,
    /// A hop does not carry this traffic for the peer that sent it: it does not announce
    /// its route for the service to that peer (valley-free).
    NoTransit = 13,
}

impl Reset {
    /// Every code, for counters and docs.
    pub const ALL: [Reset; 14] = [
        Reset::Cancelled,
        Reset::NoRoute,
        Reset::HopLimit,
        Reset::Unauthorized,
        Reset::EndpointRefused,
        Reset::PeerLimit,
        Reset::ServiceLimit,
        Reset::IdleTimeout,
        Reset::BadHeader,
        Reset::NextHopUnreachable,
        Reset::ShuttingDown,
        Reset::Aborted,
        Reset::PathLost,
        Reset::NoTransit,
    ];

    /// The code from the wire; unknown codes read as [`Reset::Cancelled`].
    pub fn from_code(code: u64) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| *r as u64 == code)
            .unwrap_or(Reset::Cancelled)
    }

    /// The QUIC error code.
    pub fn code(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// Whether a hop refused the stream before it carried anything (as opposed to a
    /// stream that was cut).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Reset::NoRoute
                | Reset::NoTransit
                | Reset::HopLimit
                | Reset::Unauthorized
                | Reset::EndpointRefused
                | Reset::PeerLimit
                | Reset::ServiceLimit
                | Reset::BadHeader
                | Reset::NextHopUnreachable
        )
    }

    /// Name for counters and logs (`no_route`).
    pub fn name(self) -> &'static str {
        match self {
            Reset::Cancelled => "cancelled",
            Reset::NoRoute => "no_route",
            Reset::HopLimit => "hop_limit",
            Reset::Unauthorized => "unauthorized",
            Reset::EndpointRefused => "endpoint_refused",
            Reset::PeerLimit => "peer_limit",
            Reset::ServiceLimit => "service_limit",
            Reset::IdleTimeout => "idle_timeout",
            Reset::BadHeader => "bad_header",
            Reset::NextHopUnreachable => "next_hop_unreachable",
            Reset::ShuttingDown => "shutting_down",
            Reset::Aborted => "aborted",
            Reset::PathLost => "path_lost",
            Reset::NoTransit => "no_transit",
        }
    }
}

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().replace('_', " "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> StreamHeader {
        StreamHeader {
            service: ServiceName::new("web.acme").expect("service"),
            requester: NodeId::new("globex/gw").expect("node"),
            hops: 1,
            stream_id: 0x0102_0304_0506_0708,
            trace: None,
        }
    }

    #[tokio::test]
    async fn a_trace_context_travels_after_the_names() {
        let traced = StreamHeader {
            trace: Some(TraceParent {
                trace_id: [3; 16],
                span_id: [4; 8],
                flags: 1,
            }),
            ..header()
        };
        let mut bytes = traced.encode();
        assert_eq!(bytes[5], FLAG_TRACE);
        bytes.extend_from_slice(b"payload");
        let mut reader = bytes.as_slice();
        let read = StreamHeader::read_from(&mut reader).await.expect("header");
        assert_eq!(read, traced);
        assert_eq!(reader, b"payload");
        // A zero trace context is ignored, the stream still goes through.
        let mut zeros = traced.encode();
        let n = zeros.len();
        zeros[n - TraceParent::LEN..].fill(0);
        assert_eq!(StreamHeader::decode(&zeros).map(|h| h.trace), Ok(None));
    }

    #[tokio::test]
    async fn a_header_reads_back_and_leaves_the_payload() {
        let mut bytes = header().encode();
        bytes.extend_from_slice(b"GET /");
        let mut reader = bytes.as_slice();
        let read = StreamHeader::read_from(&mut reader).await.expect("header");
        assert_eq!(read, header());
        assert_eq!(reader, b"GET /");
    }

    #[tokio::test]
    async fn a_short_stream_is_truncated_not_a_panic() {
        let bytes = header().encode();
        let mut reader = &bytes[..bytes.len() - 1];
        assert!(matches!(
            StreamHeader::read_from(&mut reader).await,
            Err(HeaderError::Truncated(_))
        ));
    }

    #[test]
    fn bad_fields_are_refused_with_a_reason() {
        let good = header().encode();
        let mut magic = good.clone();
        magic[3] = 2;
        assert!(matches!(
            StreamHeader::decode(&magic),
            Err(HeaderError::Magic(_))
        ));
        let mut hops = good.clone();
        hops[4] = 0;
        assert!(StreamHeader::decode(&hops).is_err());
        let mut flags = good.clone();
        flags[5] = 2;
        assert!(StreamHeader::decode(&flags).is_err());
        let mut no_trace = good.clone();
        no_trace[5] = FLAG_TRACE;
        assert!(
            StreamHeader::decode(&no_trace).is_err(),
            "flag without the bytes"
        );
        let mut upper = good.clone();
        upper[FIXED_LEN] = b'W';
        assert!(StreamHeader::decode(&upper).is_err());
        let wildcard = StreamHeader {
            service: ServiceName::new("*.acme").expect("aggregate"),
            ..header()
        };
        assert!(StreamHeader::decode(&wildcard.encode()).is_err());
    }

    #[test]
    fn every_reset_code_round_trips() {
        for r in Reset::ALL {
            assert_eq!(Reset::from_code(r as u64), r);
        }
        assert_eq!(Reset::from_code(999), Reset::Cancelled);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = StreamHeader::decode(&bytes);
        }
    }
}
