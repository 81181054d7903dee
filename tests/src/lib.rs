//! geocache-tests: tools for tests and benchmarks that run real `geocache`
//! processes.
//!
//! This kernel has no netem, so network delay, jitter, loss and partitions
//! between regions are made in user space by [`link_emulator`]. The
//! multi-process tests themselves live in `node/tests/` (they need the
//! `geocache` binary, which Cargo exposes to its own package's tests).
//!
//! # Layout
//!
//! - `link_emulator.rs`: [`link_emulator::LinkEmulator`], a UDP relay that
//!   puts each node behind per-region-pair delay, jitter and loss.
//! - `serve_process.rs`: [`serve_process::spawn_serve`], a `geocache serve`
//!   child on port 0 and the addresses it printed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod link_emulator;
pub mod serve_process;
