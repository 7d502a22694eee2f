//! Enrollment: the protocol between a node and its org authority (join, renew, snapshot
//! fetch), `schemas/enrollment.capnp`, framed as a little-endian u32 length + one Cap'n
//! Proto message on a QUIC bidirectional stream (ALPN [`ALPN`]).

pub mod client;
pub mod joinstring;
mod wire;

pub use wire::{decode_request, decode_response, encode_request, encode_response};

use std::fmt;

/// ALPN of the enrollment protocol.
pub const ALPN: &[u8] = b"trellis-enroll/1";

/// Longest token text accepted.
pub const MAX_TOKEN_LEN: usize = 128;
/// Largest CSR accepted, bytes.
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// Most facts, capabilities or roles in a request.
pub const MAX_LIST: usize = 32;
/// Longest fact value, capability or role, bytes.
pub const MAX_ITEM_LEN: usize = 256;

/// A request from a node.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// Join the org.
    Join(JoinRequest),
    /// Renew the certificate presented as TLS client certificate.
    Renew {
        /// CSR for the same key, DER.
        csr: Vec<u8>,
    },
    /// Fetch the newest trust snapshot if newer than `have_version`.
    Snapshot {
        /// The version the node holds (0: none).
        have_version: u64,
    },
    /// Keep the stream open and receive every snapshot newer than `have_version` as soon
    /// as it is published.
    Subscribe {
        /// The version the node holds (0: none).
        have_version: u64,
        /// How the node wants to be listed in the org's node directory, if at all.
        listing: Option<Listing>,
    },
}

/// A node's entry in its org's node directory, as it reports it when it subscribes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// Where it accepts peering sessions, `IP:PORT`.
    pub address: String,
    /// Its selection role (`default`, `relay`, `thin`).
    pub role: String,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Join(join) => f
                .debug_struct("Join")
                .field("name", &join.name)
                .field("roles", &join.roles)
                .finish_non_exhaustive(),
            Self::Renew { .. } => f.write_str("Renew"),
            Self::Snapshot { have_version } => write!(f, "Snapshot(have v{have_version})"),
            Self::Subscribe {
                have_version,
                listing,
            } => write!(f, "Subscribe(have v{have_version}, listing {listing:?})"),
        }
    }
}

/// A join request (the token is secret: never logged).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct JoinRequest {
    /// `ID.SECRET`.
    pub token: String,
    /// Node name (DNS label).
    pub name: String,
    /// CSR, DER.
    pub csr: Vec<u8>,
    /// (key, value) facts: hostname, os, arch, version.
    pub facts: Vec<(String, String)>,
    /// Capabilities the node supports.
    pub capabilities: Vec<String>,
    /// Roles asked for (empty: the token's roles).
    pub roles: Vec<String>,
}

/// Error codes of `EnrollError` (see `schemas/enrollment.capnp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed request, bad name, bad CSR.
    BadRequest,
    /// Unknown token or wrong secret.
    InvalidToken,
    /// The token expired.
    TokenExpired,
    /// The token has no uses left.
    TokenSpent,
    /// The token was revoked.
    TokenRevoked,
    /// Too many failed attempts from this source.
    RateLimited,
    /// Roles outside the token's scope.
    Scope,
    /// The node id is taken or revoked.
    NameTaken,
    /// An operator rejected the join.
    Rejected,
    /// The node is revoked.
    Revoked,
    /// No valid client certificate.
    Unauthenticated,
    /// Nobody decided in time.
    TimedOut,
    /// The authority failed.
    Internal,
}

/// A certificate issued to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The node id.
    pub node_id: String,
    /// Node certificate, DER.
    pub certificate: Vec<u8>,
    /// CA certificate, DER.
    pub ca_certificate: Vec<u8>,
    /// Newest trust snapshot envelope, empty if none.
    pub snapshot: Vec<u8>,
}

/// An answer from the authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Waiting for an operator; the final answer follows.
    Pending {
        /// Join request id (what `trellis joins approve` takes).
        request_id: String,
        /// The node id asked for.
        node_id: String,
    },
    /// A certificate.
    Issued(IssuedCert),
    /// A refusal.
    Error {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// A trust snapshot envelope, or empty when nothing newer exists.
    Snapshot(Vec<u8>),
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

/// Why a frame or message could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or ended early.
    #[error("stream: {0}")]
    Io(String),
    /// The frame is larger than the limit.
    #[error("frame of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
    /// The message does not decode or breaks a limit.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Writes one frame.
pub async fn write_frame(send: &mut quinn::SendStream, message: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(message.len()).map_err(|_| WireError::TooLarge(message.len()))?;
    send.write_all(&len.to_le_bytes())
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    send.write_all(message)
        .await
        .map_err(|e| WireError::Io(e.to_string()))
}

/// Reads one frame (at most [`trellis_schemas::MAX_ENROLL_FRAME_BYTES`]).
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > trellis_schemas::MAX_ENROLL_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf)
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    Ok(buf)
}
