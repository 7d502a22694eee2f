//! trellisd: the Trellis daemon.
//!
//! The contract: this crate does the IO that `trellis-routing` and `trellis-policy` leave
//! out. Today it holds the authority role (CA, join tokens, approvals, certificates,
//! signed trust snapshots, admin API) and the node's enrollment client (join, renew,
//! snapshot fetch). Bad input from the network or an operator is an error value with a
//! one-line message, never a panic.

pub mod admin;
pub mod authority;
pub mod cli;
pub mod codec;
pub mod dataplane;
pub mod enroll;
pub mod node;
pub mod pki;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod util;
