//! geocache-gossip: replication between geocache nodes.
//!
//! This crate will hold the sans-IO protocol state machines (membership with
//! foca, the replicator with its per-origin watermarks, backlog and
//! region-aware relays) and `quic`, the quinn driver that moves their bytes.
//! Nothing is implemented here yet: the replication issue builds it.
//!
//! # Layout
//!
//! Empty for now.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
