//! The `geocache` binary: the command line of a geocache node.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use geocache_gossip::certs::Ca;
use geocache_node::config::{Config, ConfigLayer};
use geocache_node::server;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Every request allocates small buffers, keys and registers on one
/// thread and often frees them on another; mimalloc's per-thread heaps do
/// that with less locking than glibc's malloc (profile in
/// docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// A local cluster: 3 regions x 2 nodes on 127.0.0.2-7, as far apart
    /// as their cities, until Ctrl-C; or cut and heal its regions.
    Demo(DemoArgs),
    /// Make the cluster CA and node certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Credentials for `[[users]]`.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Args)]
struct DemoArgs {
    #[command(subcommand)]
    action: Option<DemoAction>,
    /// Run the regions with no delay between them (the link emulator
    /// still stands between them, for `demo partition`).
    #[arg(long)]
    no_distances: bool,
}

#[derive(Subcommand)]
enum DemoAction {
    /// Cut two regions of the running demo apart.
    Partition {
        /// One region (montreal, sao-paulo, frankfurt).
        a: String,
        /// The other region.
        b: String,
        /// Heal by itself after this long (`10s`, `2m`); without it, until
        /// `geocache demo heal`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Join regions of the running demo again: the pair named, or all.
    Heal {
        /// One region.
        a: Option<String>,
        /// The other region.
        b: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random secret, and its SHA-256 for `secret_sha256`.
    New,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a cluster CA in DIR (ca.crt, ca.key).
    Init {
        /// Where to write the CA.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a node certificate signed by the CA in --ca (node.crt, node.key, ca.crt).
    Issue {
        /// The CA directory from `certs init`.
        #[arg(long)]
        ca: PathBuf,
        /// The node's name (a-z, 0-9, '-').
        #[arg(long)]
        node: String,
        /// The node's region, written into the certificate: peers refuse
        /// the node's announces under any other region.
        #[arg(long)]
        region: Option<String>,
        /// Where to write the node's files.
        #[arg(long)]
        out: PathBuf,
        /// A host name or IP address clients reach the node's HTTP port by,
        /// for `--tls-cert` (repeat for several).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
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

/// mimalloc's settings for a process whose budget is its resident memory:
/// commit arena memory as pages are touched rather than all at once, and
/// give freed pages back to the OS after 100 ms rather than the default
/// second. Measured: 2,048 PUTs of 64 KiB into a 32 MiB budget leave an
/// RSS of 67 MiB with the defaults and 39 MiB with these
/// (docs/OPERATIONS.md). An operator's own `MIMALLOC_*` settings win.
const ALLOCATOR_ENV: [(&str, &str); 2] =
    [("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_PURGE_DELAY", "100")];

/// mimalloc reads its settings from the environment at its first
/// allocation, which comes before `main`; so the process sets them and
/// replaces itself with the same program once (same pid, arguments,
/// streams). If that fails it carries on with the allocator's defaults.
fn apply_allocator_settings() {
    use std::os::unix::process::CommandExt;
    if ALLOCATOR_ENV.iter().any(|(name, _)| std::env::var_os(name).is_some()) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command.args(args).envs(ALLOCATOR_ENV).exec();
    eprintln!("warning: could not apply the allocator settings ({error}); running with mimalloc's defaults");
}

fn main() -> Result<()> {
    apply_allocator_settings();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Demo(args) => match args.action {
            None => demo(!args.no_distances),
            Some(action) => demo_control(action),
        },
        Command::Token(TokenCommand::New) => {
            let secret = geocache_node::auth::new_secret().context("reading the system's random source")?;
            println!("{secret}");
            eprintln!("secret_sha256 = \"{}\"", geocache_node::auth::secret_sha256(&secret));
            Ok(())
        }
        Command::Certs(CertsCommand::Init { out }) => {
            let ca = Ca::generate("geocache cluster CA").context("generating the CA")?;
            ca.save(&out).with_context(|| format!("--out {}", out.display()))?;
            println!("wrote {}/ca.crt and {}/ca.key", out.display(), out.display());
            Ok(())
        }
        Command::Certs(CertsCommand::Issue { ca, node, region, out, hosts }) => {
            let authority = Ca::load(&ca).with_context(|| format!("--ca {}", ca.display()))?;
            let cert = authority
                .issue_for(&node, region.as_deref(), &hosts)
                .with_context(|| format!("--node {node} --host {hosts:?}"))?;
            cert.save(&out).with_context(|| format!("--out {}", out.display()))?;
            println!("wrote {0}/node.crt, {0}/node.key and {0}/ca.crt", out.display());
            Ok(())
        }
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
        print!("{}", geocache_node::memory_bounds::report(&config));
        return Ok(());
    }
    init_logs();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.http)
            .await
            .with_context(|| format!("--http: cannot listen on {}", config.http))?;
        let http = listener.local_addr().context("reading the bound HTTP address")?;
        let resp_listener = match config.resp {
            Some(addr) => Some(
                TcpListener::bind(addr).await.with_context(|| format!("--resp: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => Some(geocache_node::client_tls::acceptor(&t.tls_cert, &t.tls_key)?),
            None => None,
        };
        let mut state = server::open(config)?;
        server::start_cluster(&mut state, http).await?;
        if state.store.disk().is_some() {
            // The node serves (probes answer, data requests get 503
            // `loading`) while its entries load; a damaged data dir ends
            // the process with the file named.
            let loading = state.clone();
            tokio::spawn(async move {
                let loaded = tokio::task::spawn_blocking({
                    let state = loading.clone();
                    move || server::load_entries(&state)
                })
                .await;
                match loaded {
                    Ok(Ok(_)) => {
                        if let Some(cluster) = &loading.cluster {
                            cluster.store_loaded().await;
                        }
                    }
                    Ok(Err(e)) => {
                        eprintln!("error: {e}");
                        std::process::exit(1);
                    }
                    Err(e) => {
                        eprintln!("error: loading the data dir panicked: {e}");
                        std::process::exit(1);
                    }
                }
            });
        }
        let c = &state.config;
        tracing::info!(node = %geocache_crdt::NodeId(c.node_id), region = %c.region, %http, "serving");
        let beyond_loopback = !http.ip().is_loopback() || c.resp.is_some_and(|r| !r.ip().is_loopback());
        if beyond_loopback && !c.access.is_on() {
            tracing::warn!(
                "listening beyond loopback with no [[users]]: any client that reaches this node may read \
                 and write every namespace (docs/SECURITY.md)"
            );
        }
        // One signal stops both ports and drains replication; a second
        // exits at once.
        let cluster = state.cluster.clone();
        let disk = state.store.disk().cloned();
        let drain_timeout = state.config.drain_timeout;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
            shutdown_signal().await;
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        });
        let mut resp_words = String::new();
        let resp_task = match resp_listener {
            Some(l) => {
                let addr = l.local_addr().context("reading the bound RESP address")?;
                resp_words = format!(" resp={addr}");
                Some(tokio::spawn(geocache_node::resp::serve(state.clone(), l, tls.clone(), stopped.clone())))
            }
            None => None,
        };
        // One line on stdout that scripts and tests can read.
        println!(
            "geocache serving http={http}{resp_words} node={} region={}",
            geocache_crdt::NodeId(c.node_id),
            c.region
        );
        let mut http_stopped = stopped;
        let http_signal = async move { geocache_node::resp::connection::stopped(&mut http_stopped).await };
        server::serve(state, listener, tls, http_signal).await.context("serving HTTP")?;
        if let Some(task) = resp_task {
            task.await.context("the RESP port panicked")?.context("serving RESP")?;
        }
        // No write comes in any more: what was acked leaves before exit.
        if let Some(cluster) = cluster {
            let report = cluster.shutdown(drain_timeout).await;
            tracing::info!(
                drained = report.drained,
                queued = report.queued,
                unacked_relay = report.unacked_relay,
                "replication closed"
            );
        }
        if let Some(disk) = disk {
            match disk.close() {
                Ok(()) => tracing::info!(dir = %disk.dir().display(), "data dir flushed"),
                Err(e) => {
                    tracing::error!(dir = %disk.dir().display(), error = %e, "flushing the data dir failed")
                }
            }
        }
        tracing::info!("stopped");
        Ok(())
    })
}

fn init_logs() {
    init_logs_with("info,lsm_tree=warn,fjall=warn");
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise.
fn init_logs_with(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let engine = geocache_node::persistence::EngineFileLayer;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter))
        .with(engine.with_filter(geocache_node::persistence::EngineFileLayer::filter()))
        .init();
}

fn demo(distances: bool) -> Result<()> {
    // The banner is what a user reads: the nodes' info lines (members
    // coming up) would bury it. RUST_LOG still wins.
    init_logs_with("warn");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let options = geocache_node::demo::DemoOptions { distances, ..Default::default() };
        let demo = geocache_node::demo::start(stopped.clone(), options)
            .await
            .context("starting the demo cluster")?;
        geocache_node::demo_control::serve(&demo, stopped).await.with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{} for `demo partition` (is another demo running?)",
                options.control_port
            )
        })?;
        let formed = demo.formed().await;
        print!("{}", geocache_node::demo::banner(&demo, formed));
        shutdown_signal().await;
        let _ = stop.send(true);
        Ok(())
    })
}

fn demo_control(action: DemoAction) -> Result<()> {
    use geocache_node::demo_control::{send, PairRequest};
    let (path, request) = match action {
        DemoAction::Partition { a, b, duration } => (
            "partition",
            PairRequest { a: Some(a), b: Some(b), for_ms: duration.map(|d| d.as_millis() as u64) },
        ),
        DemoAction::Heal { a, b } => {
            if a.is_some() != b.is_some() {
                anyhow::bail!("demo heal: name two regions, or none to heal every pair");
            }
            ("heal", PairRequest { a, b, for_ms: None })
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let pairs = runtime
        .block_on(send(geocache_node::demo::CONTROL_PORT, path, &request))
        .with_context(|| format!("demo {path}"))?;
    for p in pairs {
        let state = if p.partitioned { "partitioned" } else { "connected" };
        println!("{:<10} - {:<10} {:>4} ms one way  {state}", p.a, p.b, p.delay_ms);
    }
    Ok(())
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
