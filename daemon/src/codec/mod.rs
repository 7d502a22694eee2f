//! Conversion between routing-core values (`trellis-routing`) and the Cap'n Proto wire
//! schema (`schemas/peering.capnp`), and the node-key implementation of
//! [`trellis_routing::Signatures`].
//!
//! The contract:
//!
//! - **Writing never fails on a value the routing core built** ([`write_batch`]); writing a
//!   manifest fails only if its signature blob was not made by [`NodeSignatures`].
//! - **Reading trusts nothing.** Every list length is checked against the limits of
//!   `trellis-schemas` before its elements are read, every name and id is validated by its
//!   routing type, unknown enumerants and union variants are refused, and every failure is
//!   a [`CodecError`] (never a panic) whose kind selects the session's close reason:
//!   [`CodecError::Malformed`] → `malformedMessage`, [`CodecError::Oversized`] →
//!   `oversizedMessage` (docs/protocol.md, "Messages").
//! - Limits on route contents that the routing core enforces itself (path length of 64,
//!   communities of 64 bytes) are only bounded loosely here ([`update::MAX_WIRE_PATH_HOPS`],
//!   [`update::MAX_WIRE_COMMUNITY_BYTES`]), so an over-long path is a treat-as-withdraw in
//!   the core, not a closed session.
//! - Signed manifests travel as `SignedEnvelope`s of kind `originManifest` whose payload is
//!   the canonical encoding of `OriginManifest` ([`manifest_payload`]). Signatures are
//!   verified by [`NodeSignatures`] (chain to the org's trusted CA, node id, validity,
//!   revocation, ECDSA P-384), once per manifest, by the routing core — never here.

pub mod chain_cache;
pub mod manifest;
pub mod signatures;
pub mod update;

#[cfg(test)]
mod tests;

pub use manifest::{manifest_payload, read_manifest, read_manifest_payload, write_manifest};
pub use signatures::NodeSignatures;
pub use update::{read_batch, write_batch};

/// Why a message could not be read, or a local value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The message does not decode or does not validate (bad pointer, unknown enumerant,
    /// invalid name, attribute index out of range, ...). Close reason `malformedMessage`.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message or one of its lists exceeds a protocol limit. Close reason
    /// `oversizedMessage`.
    #[error("oversized message: {0}")]
    Oversized(String),
    /// This node's own key, certificate or value cannot be used to encode or sign (never
    /// caused by a peer).
    #[error("local encoding or signing failed: {0}")]
    Local(String),
}

impl CodecError {
    /// Whether the session should close with `oversizedMessage` (otherwise
    /// `malformedMessage`).
    pub fn is_oversized(&self) -> bool {
        matches!(self, Self::Oversized(_))
    }
}

/// Maps a capnp error met while reading `what`: exceeding the traversal limit or the
/// message size is [`CodecError::Oversized`], anything else [`CodecError::Malformed`].
pub(crate) fn capnp_error(what: &str, e: &capnp::Error) -> CodecError {
    match e.kind {
        capnp::ErrorKind::ReadLimitExceeded
        | capnp::ErrorKind::MessageTooLarge(_)
        | capnp::ErrorKind::MessageSizeOverflow => CodecError::Oversized(format!("{what}: {e}")),
        _ => CodecError::Malformed(format!("{what}: {e}")),
    }
}

/// Refuses a list of `len` elements of `what` longer than `max`.
pub(crate) fn check_len(what: &str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max {
        return Err(CodecError::Oversized(format!(
            "{len} {what}, the limit is {max}"
        )));
    }
    Ok(())
}

/// The UTF-8 text of a capnp text field, or why it is not.
pub(crate) fn text<'a>(
    what: &str,
    field: capnp::Result<capnp::text::Reader<'a>>,
) -> Result<&'a str, CodecError> {
    field
        .map_err(|e| capnp_error(what, &e))?
        .to_str()
        .map_err(|e| CodecError::Malformed(format!("{what} is not UTF-8: {e}")))
}

/// A list length for a capnp builder. Lengths come from in-memory collections, so they
/// fit; a longer one saturates, and the writers zip with it, so nothing is indexed past it.
pub(crate) fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
