//! The Redis-protocol (RESP2) port: `--resp ADDR`.
//!
//! Redis clients and tools (`redis-cli`, `redis-benchmark`, client
//! libraries) read and write the same store as the HTTP API, in the one
//! namespace `--resp-namespace` names, or the first namespace of the user
//! a connection authenticated as (`AUTH`). A key is the whole RESP key, colons
//! and all; a value is stored as bytes without a content type, so
//! `SET user:42 x` is `GET /v1/kv/default/user:42` over HTTP and back.
//! Writes replicate like HTTP writes (durability `local`).
//!
//! # Layout
//!
//! Laid out like tokio's mini-redis, read top to bottom:
//!
//! - `server.rs`: accepts connections (bounded), stops on shutdown.
//! - `connection.rs`: one client: a bounded read buffer, pipelining, the
//!   write buffer and when to flush it.
//! - `frame.rs`: requests off the wire (sans-IO): a header scan that
//!   enforces the limits, then `redis-protocol`'s decoder; inline commands.
//! - `reply.rs`: replies, encoded by `redis-protocol`.
//! - `error.rs`: protocol and command errors, in Redis's words.
//! - `commands/`: the command table and arity (`mod.rs`), `strings.rs`
//!   (GET, SET, MGET, MSET, INCR and friends), `keys.rs` (DEL, EXISTS, the
//!   TTL commands, DBSIZE) and `server.rs` (PING, INFO, CLIENT, ...).

pub mod commands;
pub mod connection;
pub mod error;
pub mod frame;
pub mod reply;
pub mod server;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::state::NodeState;
use commands::Cmd;
use frame::FrameLimits;

pub use server::serve;

/// Room for a request's key and headers beyond the value limit, so a `SET`
/// of the largest value fits with its key.
pub const REQUEST_OVERHEAD_BYTES: u64 = 64 * 1024;

/// What every connection shares: the node, the namespace, the limits and
/// the counters `INFO` and the metrics show.
pub struct Shared {
    /// The node's store, config, metrics and replication.
    pub state: NodeState,
    /// What one request may weigh.
    pub limits: FrameLimits,
    /// The bound address, for `INFO`.
    pub addr: SocketAddr,
    /// Commands run, by command (the Prometheus counters, held here so a
    /// command costs one atomic add, not a lookup in the family).
    counters: Vec<Counter>,
    /// One permit per connection that may still open.
    pub permits: Arc<Semaphore>,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused because `--resp-connections-max` were open.
    pub connections_rejected: AtomicU64,
    /// Connection ids, for `CLIENT ID` and `HELLO`.
    pub next_client_id: AtomicU64,
    /// TLS on this port (`--tls-cert`), when on.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Shared {
    /// The shared state of a RESP port bound at `addr`.
    pub fn new(state: NodeState, addr: SocketAddr) -> Shared {
        let config = &state.config;
        let value = config.value_bytes_max.as_u64();
        let key = config.key_bytes_max.as_u64();
        let bulk = value.max(key);
        let request = value.saturating_add(key).saturating_add(REQUEST_OVERHEAD_BYTES);
        let limits = FrameLimits {
            bulk_bytes_max: usize::try_from(bulk).unwrap_or(usize::MAX),
            request_bytes_max: usize::try_from(request).unwrap_or(usize::MAX),
        };
        let counters = Cmd::ALL.iter().map(|c| state.metrics.resp_command(c.name())).collect();
        Shared {
            limits,
            addr,
            counters,
            permits: Arc::new(Semaphore::new(config.resp_connections_max)),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            tls: None,
            state,
        }
    }

    /// Counts one run of `cmd`.
    pub fn count(&self, cmd: Cmd) {
        if let Some(c) = self.counters.get(cmd as usize) {
            c.inc();
        }
    }

    /// Clients connected now.
    pub fn connected(&self) -> usize {
        self.connections_max().saturating_sub(self.permits.available_permits())
    }

    /// Most clients served at once (`--resp-connections-max`); one more is
    /// answered `-ERR max number of clients reached` and closed, as Redis
    /// does.
    pub fn connections_max(&self) -> usize {
        self.state.config.resp_connections_max
    }

    /// Commands run since start.
    pub fn commands_total(&self) -> u64 {
        self.counters.iter().map(Counter::get).sum()
    }
}
