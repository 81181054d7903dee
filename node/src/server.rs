//! A node from its config: the store, the router, and serving until a
//! shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::cluster::{Cluster, ClusterOptions};
use crate::config::Config;
use crate::http::listener::GuardedListener;
use crate::http::router;
use crate::metrics::Metrics;
use crate::persistence::{DataDirError, DataDirIdentity, Disk, DiskOptions, FORMAT_VERSION};
use crate::replication_health::ReplicationHealth;
use crate::state::{NodeParts, NodeState};
use crate::store::{Store, StoreConfig};
use geocache_crdt::{Key, NodeId};
use geocache_gossip::backlog::BacklogLimits;
use geocache_gossip::certs::CertIdentity;
use geocache_gossip::peer::Peer;
use geocache_gossip::quic::ClusterTls;
use geocache_gossip::strong::Slot;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Builds the shared state of a node from its config, on the system clock,
/// with its store in memory only (`--data-dir` is opened by [`open`]).
pub fn state(config: Config) -> NodeState {
    let incarnation = SystemClock.now_ms();
    let origin = origin_id(config.node_id, incarnation);
    let store = Store::new(store_config(&config, origin), Arc::new(SystemClock));
    parts(config, store, incarnation)
}

fn store_config(config: &Config, origin: NodeId) -> StoreConfig {
    StoreConfig {
        node: origin,
        max_memory_bytes: config.max_memory.as_u64(),
        eviction: config.eviction,
        tombstone_ttl_ms: config.tombstone_ttl.as_millis() as u64,
        max_clock_skew_ms: config.max_clock_skew.as_millis() as u64,
    }
}

fn parts(config: Config, store: Store, incarnation: u64) -> NodeState {
    let mut metrics = Metrics::new(store.stats());
    if let Some(disk) = store.disk() {
        metrics.register_disk(disk);
    }
    metrics.set_memory_budget(config.max_memory.as_u64());
    let http = config.http;
    NodeState::new(NodeParts {
        store: Arc::new(store),
        config: Arc::new(config),
        metrics: Arc::new(metrics),
        started: Instant::now(),
        cluster: None,
        replication_health: ReplicationHealth::new(),
        incarnation,
        http,
        forward: reqwest::Client::new(),
        loading: Arc::new(AtomicBool::new(false)),
        resume: None,
        status_book: Arc::new(crate::status_book::StatusBook::new()),
    })
}

/// Builds the shared state of a node from its config: with `--data-dir`,
/// the data dir is opened and checked, and the store continues the life
/// it holds (origin id, sequence, HLC floor); its entries are loaded by
/// [`load_entries`], while the node serves.
///
/// # Errors
///
/// [`DataDirError`] naming the data dir and what is wrong with it.
pub fn open(config: Config) -> Result<NodeState, DataDirError> {
    let Some(dir) = config.data_dir.clone() else { return Ok(state(config)) };
    let incarnation = SystemClock.now_ms();
    let me = data_dir_identity(&config).map_err(|detail| DataDirError::Io { dir: dir.clone(), detail })?;
    let options = DiskOptions {
        fsync: config.fsync.unwrap_or_default(),
        backlog_bytes_max: config
            .replication
            .as_ref()
            .map_or(BacklogLimits::default().bytes_max as u64, |r| r.backlog_bytes_max.as_u64()),
        backlog_age: Duration::from_millis(crate::cluster::backlog_age_ms_max(
            config.tombstone_ttl.as_millis() as u64,
        )),
        dirty_keys_bytes_max: crate::persistence::DirtyKeys::BYTES_MAX,
    };
    let (disk, loaded) = Disk::open(&dir, &me, &options)?;
    let origin = match loaded.origin {
        Some(origin) => origin,
        None => {
            let origin = origin_id(config.node_id, incarnation);
            disk.set_origin(origin, loaded.hlc_floor)
                .map_err(|e| DataDirError::Io { dir: dir.clone(), detail: e.0 })?;
            origin
        }
    };
    if let Some(why) = loaded.new_life_reason {
        tracing::warn!(dir = %dir.display(), %origin, "{why}: keeping the data, writing under a new origin id");
    }
    let store = Store::with_disk(store_config(&config, origin), Arc::new(SystemClock), disk, &loaded);
    let mut state = parts(config, store, incarnation);
    state.loading.store(true, Ordering::Release);
    state.resume = Some(loaded.resume);
    Ok(state)
}

/// Loads the data dir's entries into the store (a blocking walk of the
/// whole keyspace; run it off the async threads), then marks the node
/// ready.
///
/// # Errors
///
/// [`DataDirError::Corrupt`] naming what is damaged.
pub fn load_entries(state: &NodeState) -> Result<u64, DataDirError> {
    let Some(disk) = state.store.disk() else { return Ok(0) };
    let started = Instant::now();
    let store = &state.store;
    let count = disk.load_entries(|packed, register| store.restore(packed, register))?;
    let checkpointed_ms = started.elapsed().as_millis() as u64;
    let replayed = disk.replay_journal(|packed, register| store.replay(packed, register));
    store.run_pending_tasks();
    let held: std::sync::Weak<dyn crate::persistence::HeldEntries> = Arc::downgrade(&state.store) as _;
    disk.start_checkpoints(held).map_err(|e| DataDirError::Io {
        dir: disk.dir().to_path_buf(),
        detail: format!("starting checkpoints: {e}"),
    })?;
    state.loading.store(false, Ordering::Release);
    tracing::info!(
        entries = count,
        checkpointed_ms,
        replayed,
        held = store.entry_count(),
        ms = started.elapsed().as_millis() as u64,
        "data dir loaded"
    );
    Ok(count)
}

/// Whose the data dir must be: this cluster (its CA) and this node (the
/// name in its certificate, or its node id when it does not replicate).
fn data_dir_identity(config: &Config) -> Result<DataDirIdentity, String> {
    let Some(r) = &config.replication else {
        return Ok(DataDirIdentity {
            format: FORMAT_VERSION,
            cluster: "standalone".into(),
            node: format!("{}", NodeId(config.node_id)),
        });
    };
    let ca = std::fs::read_to_string(&r.ca).map_err(|e| format!("--ca {}: {e}", r.ca.display()))?;
    let body: String =
        ca.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| l.trim().chars()).collect();
    let cluster = hex::encode(&Sha256::digest(body.as_bytes())[..16]);
    let cert = std::fs::read_to_string(&r.cert).map_err(|e| format!("--cert {}: {e}", r.cert.display()))?;
    let node = CertIdentity::of_pem(&cert).map_err(|e| format!("--cert {}: {e}", r.cert.display()))?.name;
    Ok(DataDirIdentity { format: FORMAT_VERSION, cluster, node })
}

/// The id this life of the node writes and gossips under: the configured
/// node id mixed with the incarnation (start time). A node restarted
/// without its data starts its write sequence again at 1, so it must not
/// reuse the origin id of its previous life, or peers would drop its new
/// writes as duplicates of old ones. (splitmix64 finalizer.)
pub fn origin_id(node_id: u64, incarnation: u64) -> NodeId {
    let mut z = node_id ^ incarnation.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    NodeId(z ^ (z >> 31))
}

/// Starts replication when the config asks for it. `http` is the bound
/// HTTP address, which the cluster learns to route clients.
///
/// # Errors
///
/// [`ClusterStartError`] naming what failed (certificates, the endpoint).
pub async fn start_cluster(state: &mut NodeState, http: SocketAddr) -> Result<(), ClusterStartError> {
    let Some(replication) = state.config.replication.clone() else { return Ok(()) };
    let resume = state.resume.take();
    let tls = ClusterTls::from_files(&replication.ca, &replication.cert, &replication.key)
        .map_err(|e| ClusterStartError::Tls(e.to_string()))?;
    let c = &state.config;
    if let Some(region) = tls.identity().region.as_ref().filter(|r| **r != c.region) {
        return Err(ClusterStartError::Tls(format!(
            "the certificate in --cert is for region {region:?}, but --region is {:?}",
            c.region
        )));
    }
    let me = Peer {
        node: state.store.node(),
        name: tls.identity().name.clone(),
        region: c.region.clone(),
        lat: c.lat,
        lon: c.lon,
        gossip: replication.advertise,
        http,
        incarnation: state.incarnation,
        kind: replication.kind,
    };
    let (strong, acceptor_slots) = strong_roles(state, &me.name)?;
    let cluster = Cluster::start(
        state.store.clone(),
        ClusterOptions {
            resume,
            me,
            bind: replication.gossip,
            seeds: replication.seeds,
            tls,
            backlog_bytes_max: usize::try_from(replication.backlog_bytes_max.as_u64()).unwrap_or(usize::MAX),
            tombstone_retention_ms: state.config.tombstone_ttl.as_millis() as u64,
            metrics: state.metrics.clone(),
            health: state.replication_health.clone(),
            fill_timeout: replication.fill_timeout,
            strong,
            acceptor_slots,
        },
    )
    .await
    .map_err(|e| ClusterStartError::Transport(e.to_string()))?;
    state.cluster = Some(cluster);
    Ok(())
}

/// The strong settings replication starts with, and the acceptor's slots.
type StrongRoles = (Option<geocache_gossip::strong::StrongConfig>, Vec<(Key, Slot)>);

/// The node's part in strong keys (`--strong-acceptors`), and its
/// acceptor's slots from the data dir. An acceptor answers only with a
/// data dir, where its promises outlive a crash; without one it is mute
/// (and says so), and a majority of the others must carry its region.
fn strong_roles(state: &NodeState, name: &str) -> Result<StrongRoles, ClusterStartError> {
    let acceptors = &state.config.strong_acceptors;
    if acceptors.is_empty() {
        return Ok((None, Vec::new()));
    }
    let is_acceptor = acceptors.iter().any(|a| a == name);
    let disk = state.store.disk();
    if is_acceptor && disk.is_none() {
        tracing::warn!(name, "named in --strong-acceptors without --data-dir: this acceptor stays mute, since its promises would not outlive a crash");
    }
    let fail = |e: String| ClusterStartError::AcceptorSlots(e);
    let marked = match disk.filter(|_| is_acceptor) {
        Some(d) => d.acceptor_marked().map_err(|e| fail(e.to_string()))?,
        None => false,
    };
    let enabled = disk.is_some() && (marked || state.config.strong_acceptor_bootstrap);
    if let (true, false, Some(d)) = (is_acceptor && enabled, marked, disk) {
        d.mark_acceptor().map_err(|e| fail(e.to_string()))?;
    }
    if is_acceptor && disk.is_some() && !enabled {
        tracing::warn!(name, "this acceptor's data dir holds no promises (new, or lost): it stays mute; start it once with --strong-acceptor-bootstrap only as docs/OPERATIONS.md, \"Changing the strong acceptors\", says");
    }
    let slots = match disk.filter(|_| is_acceptor) {
        Some(disk) => disk.acceptor_slots().map_err(|e| ClusterStartError::AcceptorSlots(e.to_string()))?,
        None => Vec::new(),
    };
    if is_acceptor {
        tracing::info!(name, slots = slots.len(), "strong acceptor");
    }
    let config = geocache_gossip::strong::StrongConfig {
        acceptors: acceptors.clone(),
        acceptor: geocache_gossip::strong::AcceptorConfig {
            key_count_max: crate::strong::ACCEPTOR_KEY_COUNT_MAX,
            debug_forget_promises: false,
        },
        acceptor_enabled: enabled,
        ..Default::default()
    };
    Ok((Some(config), slots))
}

/// Replication could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStartError {
    /// The certificate files are missing or invalid.
    #[error("--ca/--cert/--key: {0}")]
    Tls(String),
    /// The gossip endpoint could not be bound.
    #[error("--gossip: {0}")]
    Transport(String),
    /// The acceptor's slots could not be read from the data dir.
    #[error("--data-dir: {0}")]
    AcceptorSlots(String),
}

/// Serves HTTP (over TLS with `tls`) on `listener` until `shutdown`
/// resolves, then finishes the requests in flight.
///
/// # Errors
///
/// The listener's IO error.
pub async fn serve(
    mut state: NodeState,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.http = listener.local_addr()?;
    let c = &state.config;
    let guarded = GuardedListener::new(
        listener,
        tls,
        c.http_connections_max,
        // A handler may wait up to the durability time-out with nothing
        // moving on its connection.
        c.header_timeout.max(c.durability_timeout + std::time::Duration::from_secs(1)),
        state.metrics.http_connections_rejected.clone(),
        state.metrics.http_connections_timed_out.clone(),
    );
    axum::serve(guarded, router(state)).with_graceful_shutdown(shutdown).await
}
