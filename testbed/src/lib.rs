//! # trellis-testbed
//!
//! Tools to run many Trellis nodes on one machine. Today: the in-process
//! simulator ([`sim`]), which drives N pure routing cores under a virtual
//! clock with per-link delay, loss, cuts and node failures, and checks every
//! node's forwarding for loops and black holes. The multi-process testbed
//! (real daemons, link emulator, scenarios) builds on the same topologies.
#![forbid(unsafe_code)]

pub mod net;
pub mod rng;
pub mod run;
pub mod sim;
pub mod topology;
pub mod topology_file;
