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
//! - [`link_emulator`]: the `geocache-link-emulator` crate's relay
//!   (`geocache demo` uses it too), under the name the tests know it by.
//! - `serve_process.rs`: [`serve_process::spawn_serve`], a `geocache serve`
//!   child on port 0 and the addresses it printed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use geocache_link_emulator::relay as link_emulator;
pub mod serve_process;
