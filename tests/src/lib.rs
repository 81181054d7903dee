//! geocache-tests: integration tests that run real `geocache` processes.
//!
//! Helpers to start nodes on loopback addresses and the user-space link
//! emulator will live here, with the tests in `tests/`. Nothing is
//! implemented here yet.
//!
//! # Layout
//!
//! Empty for now.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
