//! geocache-bench: benchmarks that start real `geocache` release processes
//! on loopback, put their gossip traffic behind the user-space link emulator
//! of `geocache-tests`, and print markdown tables.
//!
//! What does not live here: the scripts that install tools, build, and
//! append tables to `docs/BENCHMARKS.md` (`bench/*.sh`), and anything that
//! runs under `cargo test` (this crate has no tests; the benchmarks take
//! minutes and measure timing).
//!
//! # Layout
//!
//! - `process.rs`: [`process::NodeProcess`], one `geocache serve` child,
//!   killed when dropped.
//! - `cluster.rs`: [`cluster::Cluster`], nodes in regions with certificates,
//!   each behind the emulator, and what the benchmarks read from them.
//! - `stats.rs`: percentiles and formatting.
//! - `bin/replication-lag.rs`, `bin/wan-efficiency.rs`: the benchmarks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod process;
pub mod stats;

use std::time::Duration;

/// Runs `bench` until it finishes, SIGINT or SIGTERM, or `limit` passes,
/// whichever comes first, so every child process is dropped (and killed) on
/// every path out.
///
/// # Errors
///
/// The benchmark's error, or a signal or time-out.
pub async fn run_bounded<F>(limit: Duration, bench: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = bench => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
        _ = tokio::time::sleep(limit) => anyhow::bail!("did not finish within {limit:?}"),
    }
}
