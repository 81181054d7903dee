//! The `geocache` binary: the command line of a geocache node.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use geocache_node::config::{Config, ConfigLayer};
use geocache_node::server;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// geocache: a geo-distributed LRU cache with time expiration.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the store and its HTTP API.
    Serve(Box<ServeArgs>),
    /// A local multi-region cluster: arrives with replication.
    Demo,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file with the same settings as the flags (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the resolved settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: ConfigLayer,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Demo => anyhow::bail!(
            "geocache demo: the multi-region demo arrives with replication and is not built yet; \
             `geocache serve` runs a single node"
        ),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let file = match &args.config {
        Some(path) => ConfigLayer::from_file(path)?,
        None => ConfigLayer::default(),
    };
    let config = Config::resolve(file, args.settings)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.http)
            .await
            .with_context(|| format!("--http: cannot listen on {}", config.http))?;
        let http = listener.local_addr().context("reading the bound HTTP address")?;
        let state = server::state(config);
        let c = &state.config;
        tracing::info!(node = %geocache_crdt::NodeId(c.node_id), region = %c.region, %http, "serving");
        // One line on stdout that scripts and tests can read.
        println!(
            "geocache serving http={http} node={} region={}",
            geocache_crdt::NodeId(c.node_id),
            c.region
        );
        server::serve(state, listener, shutdown_signal()).await.context("serving HTTP")?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
