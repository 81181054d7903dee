//! Prometheus metrics: names start with `geocache_` and carry their unit.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::store::{Store, StoreStats};

/// Labels of the operation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `get`, `put`, `delete`, `patch`, `doc_get`, `head`, `counter_get`,
    /// `counter_add`, `api_get`, `api_post` or `admin`.
    pub kind: &'static str,
    /// The HTTP status answered.
    pub status: u16,
}

/// Labels of the request latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// As in [`OpLabels::kind`].
    pub kind: &'static str,
}

/// Labels of the peer refusal counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `impersonation`, `origin_conflict`, `foreign_message`,
    /// `watermark_claim`, `identities_full` (`gossip/src/identities.rs`) or
    /// `undecodable` (a message that does not decode: hostile documents).
    pub reason: &'static str,
}

/// Labels of the replication message counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// `wan` (to another region) or `lan` (same region).
    pub scope: &'static str,
    /// `deltas`, `acks`, `sync` or `full_transfer`.
    pub kind: &'static str,
}

/// Labels of the fill counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `found`, `absent`, `behind`, `timed_out`, `no_full_node`, `busy`
    /// (a sidecar's fills) or `answered` (a full node's).
    pub outcome: &'static str,
}

/// Labels of a per-namespace counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// The namespace.
    pub namespace: String,
}

/// Labels of the replication lag gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FromRegionLabels {
    /// The region whose writes arrive.
    pub from_region: String,
}

/// Labels of the RESP command counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The command, lower case (`get`, `set`, ...).
    pub command: &'static str,
}

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Operations by kind and status.
    pub ops: Family<OpLabels, Counter>,
    /// Request latency by kind, in seconds.
    pub request_seconds: HistogramFamily,
    /// Replication messages sent, by scope and kind.
    pub replication_messages: Family<MessageLabels, Counter>,
    /// Replication bytes sent, by scope and kind.
    pub replication_bytes: Family<MessageLabels, Counter>,
    /// RESP commands run, by command.
    pub resp_commands: Family<CommandLabels, Counter>,
    /// HTTP connections refused at `--http-connections-max`.
    pub http_connections_rejected: Counter,
    /// HTTP connections closed for stalling past `--header-timeout`.
    pub http_connections_timed_out: Counter,
    /// Credentials refused (a wrong secret, HTTP or RESP).
    pub auth_failures: Counter,
    /// Peer input refused for speaking in another node's name, by reason.
    pub peer_refusals: Family<ReasonLabels, Counter>,
    /// The replication task stopped by a panic.
    pub replication_failures: Counter,
    /// Fills by outcome (`gossip/src/fill.rs`).
    pub fills: Family<OutcomeLabels, Counter>,
    /// Deltas sent or taken with their body left out (sidecar interest),
    /// by event.
    pub omitted: Family<OutcomeLabels, Counter>,
    /// Remote writes a sidecar applied without storing them.
    pub remote_not_stored: Counter,
    /// Strong changes this node proposed, by outcome (`chosen`,
    /// `refused`, `unavailable`, `unknown`, `full`, `busy`).
    pub strong_outcomes: Family<OutcomeLabels, Counter>,
    entries: Gauge,
    bytes: Gauge,
    disk_bytes: Gauge,
    memory_budget: Gauge,
    replication_lag: Family<FromRegionLabels, Gauge>,
    /// The regions `replication_lag` has a series for; held while the
    /// series are replaced, so a concurrent scrape sees the old set or the
    /// new one, never a part.
    lag_regions: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

fn latency_histogram() -> Histogram {
    // 20 µs to ~2.6 s, doubling.
    Histogram::new(exponential_buckets(0.000_02, 2.0, 18))
}

impl Metrics {
    /// Registers every metric, including the store's counters.
    pub fn new(stats: &StoreStats) -> Metrics {
        let mut registry = Registry::default();
        let ops = Family::<OpLabels, Counter>::default();
        registry.register("geocache_ops", "Operations by kind and HTTP status", ops.clone());
        let request_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "geocache_http_request_duration",
            "HTTP request latency by operation kind",
            Unit::Seconds,
            request_seconds.clone(),
        );
        registry.register("geocache_cache_hits", "Reads that found a value", stats.hits.clone());
        registry.register("geocache_cache_misses", "Reads that found no value", stats.misses.clone());
        registry.register(
            "geocache_cache_evictions",
            "Entries evicted to stay within the memory budget",
            stats.evictions.clone(),
        );
        registry.register(
            "geocache_tombstones_evicted_early",
            "Tombstones evicted before their retention because deletes outran the tombstones' share of the budget",
            stats.tombstones_evicted_early.clone(),
        );
        registry.register(
            "geocache_cache_expirations",
            "Entries removed on expiry",
            stats.expirations.clone(),
        );
        registry.register(
            "geocache_clock_skew_errors",
            "Replicated stamps further ahead than the maximum clock skew",
            stats.clock_skew_errors.clone(),
        );
        registry.register(
            "geocache_conflicts",
            "Replicated writes concurrent with the value held",
            stats.conflicts.clone(),
        );
        registry.register(
            "geocache_cas_lost",
            "Compare-and-set writes that succeeded here and then lost to a concurrent write elsewhere, by namespace",
            stats.cas_lost.clone(),
        );
        let replication_messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "geocache_replication_messages",
            "Replication messages sent, by scope (wan, lan) and kind",
            replication_messages.clone(),
        );
        let replication_bytes = Family::<MessageLabels, Counter>::default();
        registry.register_with_unit(
            "geocache_replication_sent",
            "Replication bytes sent, by scope (wan, lan) and kind",
            Unit::Bytes,
            replication_bytes.clone(),
        );
        let resp_commands = Family::<CommandLabels, Counter>::default();
        registry.register("geocache_resp_commands", "RESP commands run, by command", resp_commands.clone());
        let http_connections_rejected = Counter::default();
        registry.register(
            "geocache_http_connections_rejected",
            "HTTP connections refused because --http-connections-max were open",
            http_connections_rejected.clone(),
        );
        let http_connections_timed_out = Counter::default();
        registry.register(
            "geocache_http_connections_timed_out",
            "HTTP connections closed after stalling past --header-timeout",
            http_connections_timed_out.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "geocache_auth_failures",
            "Credentials refused: a secret or user that matches no user (HTTP and RESP)",
            auth_failures.clone(),
        );
        let peer_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "geocache_peer_refusals",
            "Peer input refused because it spoke in another node's name, by reason",
            peer_refusals.clone(),
        );
        let replication_failures = Counter::default();
        registry.register(
            "geocache_replication_failures",
            "Replication task panics: the node then answers not ready and refuses writes",
            replication_failures.clone(),
        );
        let fills = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "geocache_fills",
            "A sidecar's misses filled from a full node of its region, by outcome; a full node's answers",
            fills.clone(),
        );
        let strong_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "geocache_strong_changes",
            "Strong changes (writes and linearizable reads) this node proposed, by outcome",
            strong_outcomes.clone(),
        );
        let omitted = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "geocache_omitted_deltas",
            "Deltas with their body left out for a sidecar that does not hold the key, by event: sent (by a full node), applied (by a sidecar), held_dropped (a sidecar dropped a key it held), refused (by a full node), overflow (a sidecar's keys outgrew what a full node tracks)",
            omitted.clone(),
        );
        let remote_not_stored = Counter::default();
        registry.register(
            "geocache_remote_writes_not_stored",
            "Remote writes a sidecar applied without storing them (it does not hold the key)",
            remote_not_stored.clone(),
        );
        let entries = Gauge::default();
        registry.register("geocache_entries", "Entries held, tombstones included", entries.clone());
        let bytes = Gauge::default();
        registry.register_with_unit(
            "geocache_memory",
            "Bytes held by the store's budget measure",
            Unit::Bytes,
            bytes.clone(),
        );
        let memory_budget = Gauge::default();
        registry.register_with_unit(
            "geocache_memory_budget",
            "The store's budget (--max-memory)",
            Unit::Bytes,
            memory_budget.clone(),
        );
        let replication_lag = Family::<FromRegionLabels, Gauge>::default();
        registry.register(
            "geocache_replication_lag_milliseconds",
            "How late other regions' writes arrive here: the median over their nodes of each one's median lag over the last 10 s, by writing region",
            replication_lag.clone(),
        );
        Metrics {
            registry,
            ops,
            request_seconds,
            replication_messages,
            replication_bytes,
            resp_commands,
            http_connections_rejected,
            http_connections_timed_out,
            auth_failures,
            peer_refusals,
            replication_failures,
            fills,
            omitted,
            remote_not_stored,
            strong_outcomes,
            entries,
            bytes,
            disk_bytes: Gauge::default(),
            memory_budget,
            replication_lag,
            lag_regions: std::sync::Mutex::default(),
        }
    }

    /// Registers the data dir's metrics: failed writes and its size.
    pub fn register_disk(&mut self, disk: &crate::persistence::Disk) {
        self.registry.register(
            "geocache_disk_errors",
            "Writes or flushes to the data dir that failed: the node then answers not ready",
            disk.errors.clone(),
        );
        self.registry.register_with_unit(
            "geocache_disk",
            "Bytes the data dir takes on disk",
            Unit::Bytes,
            self.disk_bytes.clone(),
        );
    }

    /// The counter of one RESP command, to keep and increment without a
    /// lookup in the family.
    pub fn resp_command(&self, command: &'static str) -> Counter {
        self.resp_commands.get_or_create(&CommandLabels { command }).clone()
    }

    /// Sets the budget gauge (`--max-memory`).
    pub fn set_memory_budget(&self, bytes: u64) {
        self.memory_budget.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition, with the store's gauges read now
    /// and the replication lag from `members` (none when it does not replicate).
    pub fn render(&self, store: &Store, members: &[crate::cluster::MemberView]) -> String {
        let mut by_region: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
        for m in members {
            if let Some(lag) = m.lag_ms {
                by_region.entry(m.region.clone()).or_default().push(lag.p50_ms);
            }
        }
        let mut shown = self.lag_regions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in shown.iter().filter(|r| !by_region.contains_key(*r)) {
            self.replication_lag.remove(&FromRegionLabels { from_region: gone.clone() });
        }
        *shown = by_region.keys().cloned().collect();
        for (region, mut lags) in by_region {
            let median = crate::replication_lag::median(&mut lags).unwrap_or(0);
            self.replication_lag
                .get_or_create(&FromRegionLabels { from_region: region })
                .set(i64::try_from(median).unwrap_or(i64::MAX));
        }
        self.entries.set(i64::try_from(store.entry_count()).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(store.weighted_size_bytes()).unwrap_or(i64::MAX));
        if let Some(disk) = store.disk() {
            self.disk_bytes.set(i64::try_from(disk.disk_bytes()).unwrap_or(i64::MAX));
        }
        let mut out = String::with_capacity(8 * 1024);
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
