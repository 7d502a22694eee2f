//! Connection ids a restarted node does not drop unanswered.
//!
//! quinn checks the connection id of a short-header packet with its generator before it
//! would answer an unknown one with a stateless reset. Its default generator keys that
//! check with a random value per process, so a restarted node silently dropped a peer's
//! packets for the connection to its old process, and the peer kept the dead connection
//! until its hold timer ran out. These ids are 8 random bytes with no check (quinn's
//! default `validate`): every unknown id is answered with a reset, which quinn keeps
//! smaller than the packet that drew it and rate-limits.

use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator};
use ring::rand::{SecureRandom, SystemRandom};

const CID_LEN: usize = 8;

/// Random 8-byte connection ids.
pub struct RandomCids {
    rng: SystemRandom,
}

impl RandomCids {
    /// A generator.
    pub fn new() -> Self {
        Self {
            rng: SystemRandom::new(),
        }
    }
}

impl ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut id = [0u8; CID_LEN];
        // SystemRandom fails only without an OS random source, where the TLS handshake
        // fails as well; ids need uniqueness per connection, which quinn checks.
        let _ = self.rng.fill(&mut id);
        ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}
