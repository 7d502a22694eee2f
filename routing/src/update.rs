//! Update batches and the messages a router sends to its peers.
//!
//! A batch mirrors the wire `UpdateBatch` of `schemas/peering.capnp`: a list
//! of attribute sets, announcements that point into it, and withdrawals.
//! Structural limits are checked before anything touches the table; a batch
//! that breaks one closes the session (docs/protocol.md, "Error handling").

use std::sync::Arc;

use crate::manifest::SignedManifest;
use crate::name::ServiceName;
use crate::route::Attrs;

/// Default most announcements plus withdrawals in one batch.
pub const DEFAULT_MAX_BATCH: usize = 10_000;
/// Default most attribute sets in one batch.
pub const DEFAULT_MAX_ATTR_SETS: usize = 1_000;

/// Announcements and withdrawals from one peer, applied in order:
/// withdrawals first, then announcements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateBatch {
    /// Attribute sets referred to by index.
    pub attrs: Vec<Arc<Attrs>>,
    /// `(service, index into attrs)`.
    pub announce: Vec<(ServiceName, u32)>,
    /// Services whose path from this peer is gone.
    pub withdraw: Vec<ServiceName>,
}

/// Limits a receiver puts on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most announcements plus withdrawals.
    pub max_entries: usize,
    /// Most attribute sets.
    pub max_attr_sets: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_BATCH,
            max_attr_sets: DEFAULT_MAX_ATTR_SETS,
        }
    }
}

/// Why a whole batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// More entries than the limit.
    #[error("batch has {len} entries, the limit is {max}")]
    BatchTooLarge {
        /// Entries in the batch.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More attribute sets than the limit.
    #[error("batch has {len} attribute sets, the limit is {max}")]
    TooManyAttrSets {
        /// Sets in the batch.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An announcement points past the attribute sets.
    #[error("announcement of {service} refers to attribute set {index} of {len}")]
    BadAttrIndex {
        /// The service announced.
        service: ServiceName,
        /// The index used.
        index: u32,
        /// Sets in the batch.
        len: usize,
    },
}

impl UpdateBatch {
    /// Whether the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }

    /// Number of announcements plus withdrawals.
    pub fn len(&self) -> usize {
        self.announce.len() + self.withdraw.len()
    }

    /// Checks the structural limits.
    pub fn check(&self, limits: &BatchLimits) -> Result<(), UpdateError> {
        if self.len() > limits.max_entries {
            return Err(UpdateError::BatchTooLarge {
                len: self.len(),
                max: limits.max_entries,
            });
        }
        if self.attrs.len() > limits.max_attr_sets {
            return Err(UpdateError::TooManyAttrSets {
                len: self.attrs.len(),
                max: limits.max_attr_sets,
            });
        }
        if let Some((service, index)) = self
            .announce
            .iter()
            .find(|(_, i)| *i as usize >= self.attrs.len())
        {
            return Err(UpdateError::BadAttrIndex {
                service: service.clone(),
                index: *index,
                len: self.attrs.len(),
            });
        }
        Ok(())
    }
}

/// What a router asks to be sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Announcements and withdrawals.
    Update(UpdateBatch),
    /// The initial full table has been sent.
    EndOfTable,
    /// An origin manifest the peer needs before the routes that follow.
    Manifest(SignedManifest),
}
