//! geocache-sim: a deterministic simulator of a whole geocache deployment.
//!
//! This crate will drive the real store and replication state machines with
//! a virtual clock, a simulated network between regions and seeded faults,
//! and report visibility lag, stale reads and checker results. Nothing is
//! implemented here yet: the simulator issue builds it, and the
//! `geocache-sim` binary arrives with it.
//!
//! # Layout
//!
//! Empty for now.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
