//! Multi-process networks on one machine: orchestration, the link emulator, observation,
//! fault scenarios and the demo (docs/testbed.md).

pub mod bench;
pub mod bench_bird;
pub mod bench_idle;
pub mod bench_latency;
pub mod bench_table;
pub mod cluster;
pub mod commands;
pub mod demo;
pub mod emulator;
pub mod observe;
pub mod reach;
pub mod scenario;
pub mod state;
pub mod traffic;
