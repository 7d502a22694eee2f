//! Certificate chains already verified, so a manifest relayed hop by hop costs each hop
//! one signature check instead of two.
//!
//! Profiling a line of daemons (docs/performance.md) showed P-384 arithmetic as the top
//! cost of a node that relays a change: each new manifest version was checked twice,
//! the origin's certificate against its CA and the manifest against the certificate.
//! The certificate is the same for a day, so its chain check is kept here, keyed by
//! the SHA-256 of its DER *and* of the CAs it was checked against: a CA rollover or a
//! partner's new bundle changes the second key, so nothing verified against an old CA
//! is reused. What can change without changing a key is checked on every use by the
//! caller: the leaf's validity period against the clock, and revocation. An entry is
//! used for [`TTL`] at most, so the rest of what the full check covers (the CA's own
//! validity period) is checked again at least that often. Bounded: at [`CAPACITY`]
//! entries the cache starts over.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::pki::NodeCert;

/// Most certificates remembered (one per origin in practice).
pub const CAPACITY: usize = 4096;

/// How long a verified chain is trusted without a full check, ms.
pub const TTL_MS: u64 = 60_000;
/// The same, as named in the docs.
pub const TTL: std::time::Duration = std::time::Duration::from_millis(TTL_MS);

/// SHA-256 of a certificate or of a CA set.
pub type Digest = [u8; 32];

/// The SHA-256 of `parts`, each length-prefixed (so two sets cannot collide by
/// concatenation).
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Verified chains: (certificate, CA set) → what the certificate says.
#[derive(Default)]
pub struct ChainCache {
    verified: Mutex<HashMap<(Digest, Digest), (NodeCert, u64)>>,
}

impl ChainCache {
    /// The certificate with digest `cert` if its chain was verified against the CA set
    /// with digest `cas` less than [`TTL`] before `now_ms`.
    pub fn get(&self, cert: &Digest, cas: &Digest, now_ms: u64) -> Option<NodeCert> {
        self.lock()
            .get(&(*cert, *cas))
            .filter(|(_, at)| now_ms >= *at && now_ms - *at < TTL_MS)
            .map(|(c, _)| c.clone())
    }

    /// Remembers that `cert`'s chain verified against `cas` at `now_ms`.
    pub fn put(&self, cert: Digest, cas: Digest, parsed: NodeCert, now_ms: u64) {
        let mut map = self.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert((cert, cas), (parsed, now_ms));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Digest, Digest), (NodeCert, u64)>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(n: u8) -> NodeCert {
        NodeCert {
            node: trellis_routing::NodeId::new("o/n").expect("id"),
            serial: vec![n],
            not_before: 0,
            not_after: 1,
            public_key: vec![n],
        }
    }

    #[test]
    fn keyed_by_certificate_and_ca_set_bounded_in_time_and_size() {
        let c = ChainCache::default();
        let (a, b) = (digest([&b"a"[..]]), digest([&b"b"[..]]));
        c.put(a, b, cert(1), 1_000);
        assert_eq!(c.get(&a, &b, 1_000), Some(cert(1)));
        assert_eq!(c.get(&a, &b, 1_000 + TTL_MS - 1), Some(cert(1)));
        assert_eq!(c.get(&a, &b, 1_000 + TTL_MS), None, "too old");
        assert_eq!(c.get(&a, &b, 999), None, "the clock went back");
        assert_eq!(c.get(&a, &a, 1_000), None, "another CA set");
        assert_eq!(c.get(&b, &b, 1_000), None, "another certificate");
        assert_ne!(
            digest([&b"ab"[..], &b"c"[..]]),
            digest([&b"a"[..], &b"bc"[..]])
        );
        for i in 0..CAPACITY as u64 {
            c.put(digest([&i.to_be_bytes()[..]]), b, cert(2), 0);
        }
        assert!(c.lock().len() <= CAPACITY);
    }
}
