//! Node configuration: defaults, then a TOML file, then flags.
//!
//! [`ConfigLayer`] is one layer with every setting optional; it is both the
//! flag set of `geocache serve` and the shape of `--config node.toml`, so a
//! setting has one name everywhere. [`Config::resolve`] stacks the layers
//! (flags win over the file, the file over the defaults) and checks the
//! result, naming the flag of any bad value.

use bytesize::ByteSize;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

use crate::auth::{Access, Scope, UserConfig};
use crate::namespace::Namespace;
use geocache_gossip::quic::FRAME_BYTES_MAX_DEFAULT;

/// Largest key and value together a replicating node takes: one entry
/// travels in one replication frame, whose encoding adds the entry's
/// version vector and metadata (64 KiB left for them).
pub const REPLICATED_ENTRY_BYTES_MAX: u64 = FRAME_BYTES_MAX_DEFAULT as u64 - (64 << 10);

/// Which policy decides what the store evicts when it is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EvictionKind {
    /// Least recently used goes first. The default: a fresh write is always
    /// kept, so a client reads its own writes.
    #[default]
    Lru,
    /// moka's TinyLFU: better hit ratios on skewed reads, but its admission
    /// filter may drop a fresh write.
    Tinylfu,
}

/// What a namespace's writes promise across regions (docs/API.md,
/// "Three guarantees").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Acked here, replicated after; concurrent writes merge (last writer
    /// wins, counters add up).
    #[default]
    Eventual,
    /// Every write is linearizable across the cluster: chosen by a
    /// majority of the strong acceptors before it is acked.
    Strong,
}

impl Consistency {
    /// Whether this is the default, for skipping it in printed config.
    pub fn is_eventual(&self) -> bool {
        *self == Consistency::Eventual
    }
}

/// Per-namespace settings: TTL policy, what clients without credentials
/// may do there once auth is on, and its consistency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// What a client without credentials may do here when users are
    /// configured (the earlier `/api` client sends no header).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anonymous: Vec<Scope>,
    /// TTL of a write that gives none.
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<Duration>,
    /// The longest TTL a write may ask for (overrides the node's `max_ttl`).
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<Duration>,
    /// `strong`: every write is linearizable across the cluster
    /// (needs `strong_acceptors`); `eventual` (the default) otherwise.
    #[serde(default, skip_serializing_if = "Consistency::is_eventual")]
    pub consistency: Consistency,
}

/// One layer of settings, every one optional: the flags of `geocache serve`
/// and the keys of its TOML file.
#[derive(Clone, Debug, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// This node's id (unique in the cluster); derived from region and HTTP
    /// address when not given.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// The region this node runs in.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Latitude of this node, in degrees.
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude of this node, in degrees.
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Address of the HTTP API [default: 127.0.0.1:7070].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// Memory budget of the store, e.g. 256MiB [default: 256MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<ByteSize>,
    /// Eviction policy [default: lru].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction: Option<EvictionKind>,
    /// Longest key accepted [default: 1KiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_bytes_max: Option<ByteSize>,
    /// Largest value accepted [default: 1MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_bytes_max: Option<ByteSize>,
    /// Longest TTL a write may ask for, e.g. 30days [default: 30days].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<Duration>,
    /// How long a delete is remembered, so a late write cannot resurrect
    /// the key [default: 10m].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub tombstone_ttl: Option<Duration>,
    /// How far ahead a peer's clock may be before it is reported [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub max_clock_skew: Option<Duration>,
    /// Address of the gossip (QUIC) endpoint; replication is off unless set.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip: Option<SocketAddr>,
    /// The gossip address peers reach this node at, when it differs from
    /// `--gossip` (behind a relay or NAT) [default: the --gossip address].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<SocketAddr>,
    /// Gossip addresses of nodes to join through, comma separated.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<SocketAddr>>,
    /// The cluster CA certificate (PEM), from `geocache certs init`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    /// This node's certificate (PEM), from `geocache certs issue`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    /// This node's private key (PEM).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
    /// Run as a sidecar: store only the keys this node's own clients read
    /// or write, and fill a miss from a full node of the region
    /// (docs/ARCHITECTURE.md, "Full nodes and sidecars") [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<bool>,
    /// How long a sidecar's miss waits for a full node of its region
    /// before it answers as a miss [default: 200ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub fill_timeout: Option<Duration>,
    /// Bytes of recent writes kept to answer anti-entropy; a peer further
    /// behind gets a full state transfer [default: 64MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog_bytes_max: Option<ByteSize>,
    /// How long a write waits for `Geocache-Durability: region|all` before
    /// answering 504 [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub durability_timeout: Option<Duration>,
    /// Address of the Redis-protocol (RESP2) port; off unless set.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp: Option<SocketAddr>,
    /// The namespace RESP commands read and write [default: default].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_namespace: Option<String>,
    /// Largest reply one RESP command may make (MGET of many or large
    /// values); never below --value-bytes-max [default: 64MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_bytes_max: Option<ByteSize>,
    /// Most HTTP connections open at once; one more is answered 503
    /// [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_connections_max: Option<usize>,
    /// Most RESP connections open at once; one more is answered
    /// `-ERR max number of clients reached` [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_connections_max: Option<usize>,
    /// How long a client may take to send a request's headers (HTTP), or
    /// stall in the middle of a request (RESP), before its connection is
    /// closed; also how long an idle HTTP keep-alive connection is kept
    /// [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Duration>,
    /// How long an idle RESP connection is kept; 0 keeps it forever, as
    /// Redis's `timeout 0` [default: 0s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub resp_idle_timeout: Option<Duration>,
    /// On SIGTERM or Ctrl-C, how long queued writes have to reach the
    /// peers before the node exits anyway [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Duration>,
    /// Keep the store and this node's replication state here (fjall), so
    /// a restart continues with its data; off by default.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<std::path::PathBuf>,
    /// With --data-dir: when the journal is flushed to the device:
    /// `always` (before each ack), an interval, or `never` [default: 100ms].
    #[arg(long, value_parser = |s: &str| s.parse::<crate::persistence::FsyncPolicy>())]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync: Option<crate::persistence::FsyncPolicy>,
    /// The strong acceptors: node names (as in their certificates), one per
    /// region, comma separated, the same list in the same order on every
    /// node. Needed for `consistency = "strong"` and `Geocache-Consistency:
    /// strong`; an acceptor needs --data-dir, where its promises live
    /// (docs/OPERATIONS.md, "Strong acceptors").
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strong_acceptors: Option<Vec<String>>,
    /// This node's acceptor starts with no promises, knowingly: at the
    /// first start of a cluster, or when it joins the acceptor set by the
    /// documented procedure. Without it, an acceptor whose data dir holds
    /// no promises yet (new, or lost) stays mute: answering could break
    /// promises it made before (docs/OPERATIONS.md, "Strong acceptors")
    /// [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strong_acceptor_bootstrap: Option<bool>,
    /// A certificate chain (PEM) for TLS on the HTTP port; with --tls-key.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Per-namespace settings (file only: `[namespaces.NAME]`).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Users and their credentials (file only: `[[users]]`); auth is on
    /// as soon as there is one.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
}

/// The settings a node runs with, after defaults, file and flags.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// This node's id.
    pub node_id: u64,
    /// The region this node runs in.
    pub region: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Address of the HTTP API.
    pub http: SocketAddr,
    /// Memory budget of the store.
    pub max_memory: ByteSize,
    /// Eviction policy.
    pub eviction: EvictionKind,
    /// Longest key accepted.
    pub key_bytes_max: ByteSize,
    /// Largest value accepted.
    pub value_bytes_max: ByteSize,
    /// Longest TTL a write may ask for, unless its namespace says otherwise.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long a delete is remembered.
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    /// How far ahead a peer's clock may be before it is reported.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Address of the RESP2 port, when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp: Option<SocketAddr>,
    /// The namespace RESP commands read and write.
    pub resp_namespace: Namespace,
    /// Replication, when this node gossips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationConfig>,
    /// How long a write waits for its durability level.
    #[serde(with = "humantime_serde")]
    pub durability_timeout: Duration,
    /// Per-namespace settings.
    pub namespaces: BTreeMap<Namespace, NamespaceConfig>,
    /// The users, each secret shown only as its digest (`--print-config`
    /// never prints a secret).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    /// Who may do what, from `users` and each namespace's `anonymous`.
    #[serde(skip)]
    pub access: Access,
    /// Largest reply of one RESP command (at least `value_bytes_max`).
    pub reply_bytes_max: ByteSize,
    /// Most HTTP connections at once.
    pub http_connections_max: usize,
    /// Most RESP connections at once.
    pub resp_connections_max: usize,
    /// Time allowed for a request's headers, or a stall inside a request.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Idle RESP connections are closed after this; zero: never.
    #[serde(with = "humantime_serde")]
    pub resp_idle_timeout: Duration,
    /// How long the drain on shutdown may take.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// TLS on the HTTP port: certificate chain and key, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsConfig>,
    /// `--data-dir`: persistence, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<std::path::PathBuf>,
    /// `--fsync`, with a data dir only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<crate::persistence::FsyncPolicy>,
    /// `--strong-acceptors`; empty: no strong keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub strong_acceptors: Vec<String>,
    /// `--strong-acceptor-bootstrap`.
    pub strong_acceptor_bootstrap: bool,
}

/// The certificate and key of the client ports' TLS.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientTlsConfig {
    /// `--tls-cert`.
    pub tls_cert: std::path::PathBuf,
    /// `--tls-key`.
    pub tls_key: std::path::PathBuf,
}

/// Where and how a node replicates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicationConfig {
    /// The gossip (QUIC) endpoint's address.
    pub gossip: SocketAddr,
    /// The address peers reach it at.
    pub advertise: SocketAddr,
    /// Nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// The cluster CA certificate.
    pub ca: std::path::PathBuf,
    /// This node's certificate.
    pub cert: std::path::PathBuf,
    /// This node's key.
    pub key: std::path::PathBuf,
    /// Bytes of recent writes kept for anti-entropy.
    pub backlog_bytes_max: ByteSize,
    /// Full node or sidecar.
    pub kind: geocache_gossip::peer::NodeKind,
    /// How long a sidecar's miss waits for a fill.
    #[serde(with = "humantime_serde")]
    pub fill_timeout: Duration,
}

/// A setting has a bad value, or the file could not be read.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range; names the flag (and file key).
    #[error("--{flag}: {message}")]
    Invalid {
        /// The flag, as typed on the command line.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(ConfigLayer::default(), ConfigLayer::default()).expect("the defaults are valid")
    }
}

impl ConfigLayer {
    /// Reads a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] or [`ConfigError::Parse`], with the path.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: shown, message: e.to_string() })
    }

    /// This layer with `over`'s settings on top.
    fn overlaid_by(self, over: ConfigLayer) -> ConfigLayer {
        let mut namespaces = self.namespaces;
        namespaces.extend(over.namespaces);
        let mut users = self.users;
        users.extend(over.users);
        ConfigLayer {
            node_id: over.node_id.or(self.node_id),
            strong_acceptors: over.strong_acceptors.or(self.strong_acceptors),
            strong_acceptor_bootstrap: over.strong_acceptor_bootstrap.or(self.strong_acceptor_bootstrap),
            region: over.region.or(self.region),
            lat: over.lat.or(self.lat),
            lon: over.lon.or(self.lon),
            http: over.http.or(self.http),
            max_memory: over.max_memory.or(self.max_memory),
            eviction: over.eviction.or(self.eviction),
            key_bytes_max: over.key_bytes_max.or(self.key_bytes_max),
            value_bytes_max: over.value_bytes_max.or(self.value_bytes_max),
            max_ttl: over.max_ttl.or(self.max_ttl),
            tombstone_ttl: over.tombstone_ttl.or(self.tombstone_ttl),
            max_clock_skew: over.max_clock_skew.or(self.max_clock_skew),
            gossip: over.gossip.or(self.gossip),
            advertise: over.advertise.or(self.advertise),
            seeds: over.seeds.or(self.seeds),
            ca: over.ca.or(self.ca),
            cert: over.cert.or(self.cert),
            key: over.key.or(self.key),
            durability_timeout: over.durability_timeout.or(self.durability_timeout),
            backlog_bytes_max: over.backlog_bytes_max.or(self.backlog_bytes_max),
            sidecar: over.sidecar.or(self.sidecar),
            fill_timeout: over.fill_timeout.or(self.fill_timeout),
            resp: over.resp.or(self.resp),
            resp_namespace: over.resp_namespace.or(self.resp_namespace),
            reply_bytes_max: over.reply_bytes_max.or(self.reply_bytes_max),
            http_connections_max: over.http_connections_max.or(self.http_connections_max),
            resp_connections_max: over.resp_connections_max.or(self.resp_connections_max),
            header_timeout: over.header_timeout.or(self.header_timeout),
            resp_idle_timeout: over.resp_idle_timeout.or(self.resp_idle_timeout),
            drain_timeout: over.drain_timeout.or(self.drain_timeout),
            data_dir: over.data_dir.or(self.data_dir),
            fsync: over.fsync.or(self.fsync),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            namespaces,
            users,
        }
    }
}

fn invalid(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, message: message.into() }
}

impl Config {
    /// Stacks defaults, `file` and `flags`, and checks the result.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad setting.
    pub fn resolve(file: ConfigLayer, flags: ConfigLayer) -> Result<Config, ConfigError> {
        let layer = file.overlaid_by(flags);
        let region = layer.region.unwrap_or_else(|| "local".to_string());
        if region.is_empty() || region.len() > 64 || region.chars().any(|c| c.is_control() || c == '/') {
            return Err(invalid("region", "must be 1 to 64 printable characters without '/'"));
        }
        let lat = layer.lat.unwrap_or(0.0);
        if !(-90.0..=90.0).contains(&lat) {
            return Err(invalid("lat", format!("must be between -90 and 90 (got {lat})")));
        }
        let lon = layer.lon.unwrap_or(0.0);
        if !(-180.0..=180.0).contains(&lon) {
            return Err(invalid("lon", format!("must be between -180 and 180 (got {lon})")));
        }
        let http = layer.http.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070)));
        let max_memory = layer.max_memory.unwrap_or(ByteSize::mib(256));
        if max_memory < ByteSize::mib(1) || max_memory.as_u64() > u64::from(u32::MAX) * 1024 {
            return Err(invalid("max-memory", format!("must be between 1 MiB and 4 TiB (got {max_memory})")));
        }
        let key_bytes_max = layer.key_bytes_max.unwrap_or(ByteSize::kib(1));
        if key_bytes_max.as_u64() == 0 || key_bytes_max > ByteSize::kib(64) {
            return Err(invalid(
                "key-bytes-max",
                format!("must be between 1 B and 64 KiB (got {key_bytes_max})"),
            ));
        }
        let value_bytes_max = layer.value_bytes_max.unwrap_or(ByteSize::mib(1));
        if value_bytes_max.as_u64() == 0 || value_bytes_max > ByteSize::mib(512) {
            return Err(invalid(
                "value-bytes-max",
                format!("must be between 1 B and 512 MiB (got {value_bytes_max})"),
            ));
        }
        let reply_bytes_max = layer.reply_bytes_max.unwrap_or(ByteSize::mib(64)).max(value_bytes_max);
        // Each open connection may hold one request of the largest value:
        // 1024 keeps that term near a GiB at the default value limit
        // (docs/OPERATIONS.md), and is far more than a sidecar's app opens.
        let connections = |flag: &'static str, value: Option<usize>| match value.unwrap_or(1_024) {
            n @ 1..=1_000_000 => Ok(n),
            n => Err(invalid(flag, format!("must be between 1 and 1000000 (got {n})"))),
        };
        let http_connections_max = connections("http-connections-max", layer.http_connections_max)?;
        let resp_connections_max = connections("resp-connections-max", layer.resp_connections_max)?;
        let header_timeout = layer.header_timeout.unwrap_or(Duration::from_secs(30));
        if header_timeout < Duration::from_millis(100) {
            return Err(invalid("header-timeout", "must be at least 100ms"));
        }
        let max_ttl = layer.max_ttl.unwrap_or(Duration::from_secs(30 * 24 * 3600));
        if max_ttl < Duration::from_millis(1) {
            return Err(invalid("max-ttl", "must be at least 1ms"));
        }
        let tombstone_ttl = layer.tombstone_ttl.unwrap_or(Duration::from_secs(600));
        if tombstone_ttl < Duration::from_secs(1) {
            return Err(invalid(
                "tombstone-ttl",
                "must be at least 1s, or late writes resurrect deleted keys",
            ));
        }
        let max_clock_skew = layer.max_clock_skew.unwrap_or(Duration::from_secs(60));
        let mut namespaces = BTreeMap::new();
        for (name, policy) in layer.namespaces {
            let ns =
                Namespace::new(&name).map_err(|e| invalid("config", format!("[namespaces.{name}]: {e}")))?;
            if let (Some(d), Some(m)) = (policy.default_ttl, policy.max_ttl) {
                if d > m {
                    return Err(invalid(
                        "config",
                        format!("[namespaces.{name}]: default_ttl exceeds max_ttl"),
                    ));
                }
            }
            namespaces.insert(ns, policy);
        }
        let mut resolved_users = Vec::with_capacity(layer.users.len());
        let mut users = Vec::with_capacity(layer.users.len());
        for user in &layer.users {
            let resolved = user.resolve().map_err(|e| invalid("config", format!("[[users]]: {e}")))?;
            users.push(UserConfig {
                secret: None,
                secret_sha256: Some(resolved.digest_hex()),
                ..user.clone()
            });
            resolved_users.push(resolved);
        }
        let anonymous = namespaces
            .iter()
            .filter(|(_, p)| !p.anonymous.is_empty())
            .map(|(ns, p)| (ns.clone(), p.anonymous.clone()))
            .collect();
        let access = Access::new(resolved_users, anonymous)
            .map_err(|e| invalid("config", format!("[[users]]: {e}")))?;
        let resp_namespace = Namespace::new(layer.resp_namespace.as_deref().unwrap_or("default"))
            .map_err(|e| invalid("resp-namespace", e.to_string()))?;
        if layer.fsync.is_some() && layer.data_dir.is_none() {
            return Err(invalid("fsync", "needs --data-dir (there is nothing to flush without one)"));
        }
        let fsync = layer.data_dir.as_ref().map(|_| layer.fsync.unwrap_or_default());
        let drain_timeout = layer.drain_timeout.unwrap_or(Duration::from_secs(10));
        if drain_timeout > Duration::from_secs(600) {
            return Err(invalid("drain-timeout", format!("must be at most 10m (got {drain_timeout:?})")));
        }
        let tls = match (layer.tls_cert, layer.tls_key) {
            (Some(tls_cert), Some(tls_key)) => Some(ClientTlsConfig { tls_cert, tls_key }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls-key", "--tls-cert needs --tls-key")),
            (None, Some(_)) => return Err(invalid("tls-cert", "--tls-key needs --tls-cert")),
        };
        let node_id = layer.node_id.unwrap_or_else(|| derived_node_id(&region, http));
        let fill_timeout = layer.fill_timeout.unwrap_or(Duration::from_millis(200));
        if fill_timeout.is_zero() || fill_timeout > Duration::from_secs(10) {
            return Err(invalid(
                "fill-timeout",
                format!("must be above 0 and at most 10s (got {fill_timeout:?})"),
            ));
        }
        let kind = match layer.sidecar {
            Some(true) => geocache_gossip::peer::NodeKind::Sidecar,
            _ => geocache_gossip::peer::NodeKind::Full,
        };
        let replication = match (layer.gossip, layer.ca, layer.cert, layer.key) {
            (None, _, _, _) => {
                if kind == geocache_gossip::peer::NodeKind::Sidecar {
                    return Err(invalid(
                        "sidecar",
                        "needs --gossip: a sidecar fills from the full nodes of its region",
                    ));
                }
                if layer.seeds.as_ref().is_some_and(|s| !s.is_empty()) {
                    return Err(invalid(
                        "seeds",
                        "needs --gossip: a node joins a cluster through its gossip port",
                    ));
                }
                None
            }
            (Some(gossip), Some(ca), Some(cert), Some(key)) => {
                if gossip.ip().is_unspecified() {
                    return Err(invalid(
                        "gossip",
                        "bind a specific address (peers are known by it), not 0.0.0.0",
                    ));
                }
                if value_bytes_max.as_u64() + key_bytes_max.as_u64() > REPLICATED_ENTRY_BYTES_MAX {
                    return Err(invalid(
                        "value-bytes-max",
                        format!(
                            "at most {} with --key-bytes-max {key_bytes_max} when replicating (got \
                             {value_bytes_max}): one entry must fit in one replication frame of {}",
                            ByteSize::b(REPLICATED_ENTRY_BYTES_MAX - key_bytes_max.as_u64()),
                            ByteSize::b(FRAME_BYTES_MAX_DEFAULT as u64),
                        ),
                    ));
                }
                let advertise = layer.advertise.unwrap_or(gossip);
                let backlog_bytes_max = layer.backlog_bytes_max.unwrap_or(ByteSize::mib(64));
                Some(ReplicationConfig {
                    gossip,
                    advertise,
                    seeds: layer.seeds.unwrap_or_default(),
                    ca,
                    cert,
                    key,
                    backlog_bytes_max,
                    kind,
                    fill_timeout,
                })
            }
            (Some(_), None, _, _) => return Err(invalid("ca", "--gossip needs --ca, --cert and --key")),
            (Some(_), _, None, _) => return Err(invalid("cert", "--gossip needs --ca, --cert and --key")),
            (Some(_), _, _, None) => return Err(invalid("key", "--gossip needs --ca, --cert and --key")),
        };
        let strong_acceptors = layer.strong_acceptors.unwrap_or_default();
        check_strong(&strong_acceptors, &namespaces, replication.is_some())?;
        Ok(Config {
            strong_acceptors,
            strong_acceptor_bootstrap: layer.strong_acceptor_bootstrap.unwrap_or(false),
            node_id,
            region,
            lat,
            lon,
            http,
            max_memory,
            eviction: layer.eviction.unwrap_or_default(),
            key_bytes_max,
            value_bytes_max,
            max_ttl,
            tombstone_ttl,
            max_clock_skew,
            resp: layer.resp,
            resp_namespace,
            replication,
            durability_timeout: layer.durability_timeout.unwrap_or(Duration::from_secs(5)),
            namespaces,
            users,
            access,
            reply_bytes_max,
            http_connections_max,
            resp_connections_max,
            header_timeout,
            resp_idle_timeout: layer.resp_idle_timeout.unwrap_or(Duration::ZERO),
            drain_timeout,
            tls,
            data_dir: layer.data_dir,
            fsync,
        })
    }

    /// The TTL policy of a namespace: its default TTL and its maximum.
    pub fn ttl_policy(&self, ns: &Namespace) -> (Option<Duration>, Duration) {
        match self.namespaces.get(ns) {
            Some(p) => (p.default_ttl, p.max_ttl.unwrap_or(self.max_ttl)),
            None => (None, self.max_ttl),
        }
    }

    /// The resolved settings as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// Strong keys need acceptors, and acceptors need a cluster.
fn check_strong(
    acceptors: &[String],
    namespaces: &BTreeMap<Namespace, NamespaceConfig>,
    replicating: bool,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some(name) = acceptors.iter().find(|n| n.is_empty() || !seen.insert(n.as_str())) {
        return Err(invalid(
            "strong-acceptors",
            format!("names must be distinct and not empty (got {name:?} twice or empty)"),
        ));
    }
    if acceptors.len() > 15 {
        return Err(invalid(
            "strong-acceptors",
            format!("at most 15, one per region (got {})", acceptors.len()),
        ));
    }
    if !acceptors.is_empty() && !replicating {
        return Err(invalid("strong-acceptors", "needs --gossip: the acceptors are members of a cluster"));
    }
    if let Some((ns, _)) = namespaces.iter().find(|(_, c)| c.consistency == Consistency::Strong) {
        if acceptors.is_empty() {
            return Err(invalid(
                "strong-acceptors",
                format!("namespace {ns} has consistency = \"strong\", which needs --strong-acceptors"),
            ));
        }
    }
    Ok(())
}

/// A stable id from what tells nodes apart when none is configured: the
/// same node gets the same id after a restart. FNV-1a, 64 bits.
fn derived_node_id(region: &str, http: SocketAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in region.bytes().chain([0]).chain(http.to_string().bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let file: ConfigLayer = toml::from_str(
            r#"
            region = "frankfurt"
            lat = 50.1
            max_memory = "64MiB"
            [namespaces.sessions]
            default_ttl = "30m"
            max_ttl = "1h"
            "#,
        )
        .unwrap();
        let flags = ConfigLayer { region: Some("montreal".into()), ..ConfigLayer::default() };
        let c = Config::resolve(file, flags).unwrap();
        assert_eq!(c.region, "montreal");
        assert_eq!(c.lat, 50.1);
        assert_eq!(c.max_memory, ByteSize::mib(64));
        assert_eq!(c.http.to_string(), "127.0.0.1:7070");
        let ns = Namespace::new("sessions").unwrap();
        assert_eq!(c.ttl_policy(&ns), (Some(Duration::from_secs(1800)), Duration::from_secs(3600)));
        assert!(c.to_toml().contains("region = \"montreal\""));
    }

    #[test]
    fn the_example_configs_in_deploy_resolve() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let full = Config::resolve(
            ConfigLayer::from_file(&dir.join("full-node.toml")).unwrap(),
            ConfigLayer::default(),
        )
        .unwrap();
        assert!(full.data_dir.is_some());
        let sidecar = Config::resolve(
            ConfigLayer::from_file(&dir.join("sidecar.toml")).unwrap(),
            ConfigLayer::default(),
        )
        .unwrap();
        assert_eq!(sidecar.http.to_string(), "127.0.0.1:7070");
        assert_eq!(sidecar.max_memory, ByteSize::mib(256));
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err =
            Config::resolve(ConfigLayer::default(), ConfigLayer { lat: Some(91.0), ..Default::default() })
                .unwrap_err();
        assert!(err.to_string().starts_with("--lat:"), "{err}");
        let err = Config::resolve(
            ConfigLayer::default(),
            ConfigLayer { resp_namespace: Some("Bad NS".into()), ..Default::default() },
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("--resp-namespace:"), "{err}");
        let unknown = toml::from_str::<ConfigLayer>("colour = 1").unwrap_err();
        assert!(unknown.to_string().contains("colour"));
    }
}
