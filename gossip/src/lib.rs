//! geocache-gossip: replication between geocache nodes.
//!
//! The protocol logic is sans-IO, like quinn-proto and foca: the state
//! machines take `now`, input bytes and seeds, and return what to send and
//! when to wake. Two drivers run them: `quic` (the quinn runtime) and the
//! simulator.
//!
//! # Layout
//!
//! - `core.rs`: the replication core, the one state machine both drivers
//!   run: membership, replicator, full transfers, durability, drain.
//! - `membership.rs` (foca), `replicator.rs` (fan-out, relays, acks,
//!   anti-entropy), `transfer.rs` (numbered, resumable full transfers),
//!   `durability.rs` (the level a write reached), `fill.rs` and
//!   `interest.rs` (sidecars), `replica_store.rs` (the
//!   store seam), `identities.rs` (each origin speaks only for itself),
//!   `backlog.rs`, `watermarks.rs`, `wire.rs`.
//! - `certs.rs`: the cluster CA and node certificates (`geocache certs`).
//! - `quic/`: the quinn transport: mutual TLS against the cluster CA,
//!   datagrams, ordered frames on one unidirectional stream per peer, and
//!   request/response on bidirectional streams.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certs;
pub mod quic;

pub mod backlog;
pub mod core;
mod core_strong;
pub mod durability;
pub mod fill;
pub mod identities;
pub mod interest;
pub mod membership;
pub mod peer;
pub mod replica_store;
pub mod replicator;
pub mod resume;
pub mod strong;
pub mod transfer;
pub mod watermarks;
pub mod wire;
