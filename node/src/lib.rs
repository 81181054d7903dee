//! geocache-node: one geocache node.
//!
//! The [`store::Store`] (a bounded LRU with TTL over CRDT registers), the
//! HTTP API, the RESP2 port, the replication driver over the `gossip`
//! crate, the Rust [`client::Client`], metrics, configuration and what the
//! `geocache` binary runs.
//!
//! # Layout
//!
//! - `admission.rs`: accepting TCP clients within a connection limit
//!   (the HTTP and RESP ports).
//! - `clock.rs`: [`clock::Clock`], the time source the store reads.
//! - `client_tls.rs`: TLS on the client ports (`--tls-cert`, `--tls-key`).
//! - `auth.rs`: users, scopes and anonymous access: who may do what.
//! - `namespace.rs`: [`namespace::Namespace`] names and their syntax.
//! - `config.rs`: settings from defaults, a TOML file and flags.
//! - `entry.rs`: [`entry::Entry`], a register packed with its value in one
//!   allocation, as the store holds it.
//! - `store_key.rs`: the packed key the store's map is keyed by.
//! - `varint.rs`: the varints of packed keys and entries.
//! - `weight.rs`: what an entry costs against the byte budget (measured).
//! - `write.rs`: the pure part of local and replicated writes, shared by the
//!   store and the simulator.
//! - `store.rs`: the store: moka, the byte budget, expiry, and the writes.
//! - `metrics.rs`: the Prometheus metrics.
//! - `http/`: the axum router (`mod.rs`), requests (`request.rs`), errors
//!   (`error.rs`), `kv.rs`, `doc.rs` and `admin.rs` handlers.
//! - `resp/`: the Redis protocol port (server, connection, frame, commands).
//! - `cluster.rs`: drives replication (membership, replicator, QUIC).
//! - `status.rs`: what the status page shows: a node's report and the
//!   cluster assembled from every reachable node's (`status_book.rs`: what
//!   it remembers between views; `http/ui/`: the page).
//! - `replication_health.rs`: a replication task that panicked turns the
//!   node not ready and refuses writes.
//! - `replication_lag.rs`: how late each origin's writes arrive here.
//! - `memory_bounds.rs`: the worst-case memory of a node, term by term,
//!   from its configuration (`--print-config`).
//! - `locality.rs`: ranks live nodes for a client by distance or RTT.
//! - `demo.rs`: `geocache demo`, a local three-region cluster over the
//!   link emulator's distances.
//! - `demo_control.rs`: the demo's control port (`demo partition`, `heal`).
//! - `client.rs`: [`client::Client`], the Rust client with failover.
//! - `state.rs`: [`state::NodeState`], what every front end shares.
//! - `write_path.rs`: the one write path every front end calls (apply,
//!   replicate, wait for the durability asked) and the TTL policy.
//! - `server.rs`: builds a node from its config and serves until shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admission;
pub mod auth;
pub mod client;
pub mod client_tls;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod demo_control;
pub mod entry;
pub mod forgotten;
pub mod http;
pub mod locality;
pub mod memory_bounds;
pub mod metrics;
pub mod namespace;
pub mod persistence;
pub mod replication_health;
pub mod replication_lag;
pub mod resp;
pub mod server;
pub mod state;
pub mod status;
pub mod status_book;
pub mod store;
pub mod store_key;
pub mod strong;
pub mod strong_register;
pub mod tombstone_space;
mod varint;
pub mod weight;
pub mod write;
pub mod write_path;
