//! The simulator: N routing cores in one process under a virtual clock.
//!
//! Each node is a `trellis_routing::Router`; each link delivers messages in
//! order after its delay. The transport of the real daemon (a QUIC stream)
//! is reliable, so a lost packet shows up as a retransmission delay, not as
//! a lost message: every loss adds one retransmission timeout
//! (`max(3 × delay, 20 ms)`) to the message. A cut link or a failed node drops
//! what is in flight; each surviving neighbour notices after the failure
//! detection delay (its hold timer) and gets `SessionDown`.
//!
//! Links share one delay and loss ([`LinkParams`]) unless a [`LinkSpread`]
//! gives each link its own, drawn from the seed. A router's cost to a
//! neighbour is the common delay in milliseconds, or with
//! [`SimConfig::scored_costs`] what peer scoring would make of that link's own
//! RTT and loss ([`scored_cost`]).
//!
//! Everything is deterministic for a given seed: events at equal times run in
//! the order they were scheduled.
//!
//! [`select`] is a separate, round-based model of peer selection inside one
//! org (no routing), to study it at 1,000 nodes.

mod check;
mod engine;
pub mod select;

pub use check::{walk, Walk};
pub use engine::{scored_cost, Counters, LinkParams, LinkSpread, Sim, SimConfig};

use trellis_routing::{OriginManifest, Signatures, VerifyError};

/// The simulator's signature scheme: a 64-bit FNV-1a digest of the manifest.
///
/// It is a stand-in that keeps 1,000-node runs cheap (the daemon signs with
/// P-384). It still exercises the real path: every manifest is checked once
/// through `Signatures::verify`, and a tampered manifest fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimSigs;

/// FNV-1a over the manifest's origin, version and sorted service names.
pub fn digest(m: &OriginManifest) -> [u8; 8] {
    let mut names: Vec<&str> = m.services.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(m.origin.as_str().as_bytes());
    eat(&m.version.to_be_bytes());
    for n in names {
        eat(n.as_bytes());
    }
    h.to_be_bytes()
}

impl Signatures for SimSigs {
    fn sign(&self, m: &OriginManifest) -> Vec<u8> {
        digest(m).to_vec()
    }
    fn verify(&self, m: &OriginManifest, signature: &[u8]) -> Result<(), VerifyError> {
        if signature == digest(m) {
            Ok(())
        } else {
            Err(VerifyError {
                signer: m.origin.clone(),
                reason: "digest mismatch".into(),
            })
        }
    }
}
