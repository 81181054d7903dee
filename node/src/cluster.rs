//! Replication for a node: the IO pump around the sans-IO replication
//! core of `geocache-gossip` (`geocache_gossip::core`), with the QUIC
//! transport, the store and the monotonic clock.
//!
//! One task owns the core. It wakes on a datagram, frame or request from a
//! peer, on a local write handed in by a front end, or when the core's
//! timer is due; after each input it sends what the core wants sent, within
//! the bytes the transport's queues can take. Every protocol decision (full
//! transfers, durability, membership lives, re-announcing, the drain) is the
//! core's; this file only moves bytes and time.

use bytes::Bytes;
use geocache_crdt::{codec, Delta, Dot, Key, NodeId, Register};
use geocache_gossip::certs::CertIdentity;
use geocache_gossip::core::{Core, CoreConfig, CoreEvent};
use geocache_gossip::fill::{FillStart, FillStats};
use geocache_gossip::identities::{Link, Refusals};
use geocache_gossip::interest::InterestStats;
use geocache_gossip::peer::Peer;
use geocache_gossip::quic::{ClusterTls, Inbound, QuicConfig, QuicTransport};
use geocache_gossip::replica_store::{ApplyOutcome, ReplicaStore};
use geocache_gossip::replicator::{ReplicatorStats, Transmit};
use geocache_gossip::strong::{Change, Outcome, ProposalId, Slot, StrongConfig};
use geocache_gossip::transfer::TransferStats;
use geocache_gossip::wire::Message;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::{Clock, SystemClock};
use crate::metrics::{MessageLabels, Metrics};
use crate::replication_health::ReplicationHealth;
use crate::replication_lag::{LagSummary, ReplicationLag};
use crate::store::{Store, WriteOutcome};

pub use geocache_gossip::durability::Durability;

/// Local writes waiting to be handed to the core; a front end waits for
/// room (backpressure) rather than a write being dropped.
const COMMAND_QUEUE_MAX: usize = 4_096;
/// Answers to this node's anti-entropy requests waiting for the pump; one
/// that finds it full is dropped and counted (the next round asks again).
const ANSWER_QUEUE_MAX: usize = 256;
/// Inbound messages and commands handled per pump at most, each kind:
/// enough to batch a burst, few enough that timers and sends keep their
/// turn.
const DRAIN_BATCH_COUNT_MAX: usize = 256;
/// The longest a front end waits for a strong proposal: past the
/// proposer's own bound (twice its 5 s deadline), which ends every one.
const STRONG_WAIT_MAX: Duration = Duration::from_secs(12);
/// How long an anti-entropy request may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How often RTTs are read from the transport into the core, and the view
/// published.
const RTT_REFRESH_MS: u64 = 1_000;
/// Time for the datagrams saying this node leaves to go out before the
/// endpoint closes.
const LEAVE_GRACE: Duration = Duration::from_millis(200);
/// Most peers whose last message is remembered between two views
/// (members only are kept at each view; this bounds what arrives between).
const HEARD_PEERS_MAX: usize = 4_096;

/// What replication needs to start.
pub struct ClusterOptions {
    /// The replication state a node restarted with its data dir resumes
    /// from (`geocache_gossip::resume`); `None` for a new life.
    pub resume: Option<geocache_gossip::resume::ResumeState>,
    /// This node as the cluster sees it (`gossip` is the advertised address).
    pub me: Peer,
    /// The address the gossip endpoint binds.
    pub bind: SocketAddr,
    /// Gossip addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// Certificates for mutual TLS.
    pub tls: ClusterTls,
    /// Bytes of recent writes kept for anti-entropy.
    pub backlog_bytes_max: usize,
    /// How long the store keeps tombstones (and expired values): the
    /// backlog keeps deltas half as long, so a delete is still held when
    /// any older write it beat can arrive by anti-entropy.
    pub tombstone_retention_ms: u64,
    /// Where to count messages sent.
    pub metrics: Arc<Metrics>,
    /// Marked failed if the replication task panics.
    pub health: ReplicationHealth,
    /// How long a sidecar's miss waits for its fill.
    pub fill_timeout: Duration,
    /// Strong keys' acceptors and bounds (`--strong-acceptors`); `None`:
    /// this node proposes no strong change and is no acceptor.
    pub strong: Option<StrongConfig>,
    /// This node's acceptor slots, from its data dir.
    pub acceptor_slots: Vec<(Key, Slot)>,
}

/// Replication could not start.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The QUIC endpoint could not be set up.
    #[error("gossip transport: {0}")]
    Transport(String),
}

/// A member as `/v1/cluster` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    /// Its origin id (this life's), hex.
    pub origin: String,
    /// The name in its certificate.
    pub name: String,
    /// Region.
    pub region: String,
    /// `full` or `sidecar`.
    pub kind: &'static str,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Gossip address.
    pub gossip: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// `up`; `suspect` while some node suspects it failed; `unconfirmed`
    /// while only other members have vouched for it, not a datagram of its
    /// own (never offered to clients). Members down are not listed.
    pub state: &'static str,
    /// Measured round trip, ms.
    pub rtt_ms: Option<u64>,
    /// How many of this member's writes this node has not applied, as of
    /// the member's last anti-entropy request (which says how many it made).
    pub lag_writes: Option<u64>,
    /// How late its writes arrived here over the last 10 s: from its HLC
    /// reading to the apply (`replication_lag.rs`); `None` when none came.
    pub lag_ms: Option<LagSummary>,
    /// How long ago anything came from it directly, ms; `None` if nothing
    /// did this life. Membership keeps a member up while others vouch for
    /// it (indirect probes), so this is what tells a cut link apart.
    pub heard_ms_ago: Option<u64>,
}

/// The cluster as this node sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterView {
    /// Live members other than this node, by id.
    pub members: Vec<MemberView>,
    /// Applied watermark per origin (hex id -> seq).
    pub watermarks: BTreeMap<String, u64>,
    /// Replication counters.
    #[serde(skip)]
    pub stats: ReplicatorStats,
    /// Full-transfer counters.
    #[serde(skip)]
    pub transfers: TransferStats,
    /// Fill counters (a sidecar's misses; a full node's answers).
    #[serde(skip)]
    pub fills: FillStats,
    /// Sidecar interest counters (`gossip/src/interest.rs`).
    #[serde(skip)]
    pub interest: InterestStats,
    /// Anti-entropy answers dropped because the pump's answer queue was
    /// full (the next round asks again).
    #[serde(skip)]
    pub answers_dropped: u64,
    /// Peer input refused for speaking in another node's name.
    #[serde(skip)]
    pub refusals: Refusals,
}

/// The backlog's age for a tombstone retention: half of it, so tombstones
/// outlive every delta anti-entropy can still bring (docs/ARCHITECTURE.md,
/// "Deletes cannot come back").
pub fn backlog_age_ms_max(tombstone_retention_ms: u64) -> u64 {
    tombstone_retention_ms / 2
}

/// How the drain before shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Whether every own write was confirmed at the members this node
    /// sends to directly before the deadline.
    pub drained: bool,
    /// Deltas and acks still queued at the end.
    pub queued: usize,
    /// Own writes a relay had not acked at the end.
    pub unacked_relay: usize,
}

enum Command {
    Write {
        delta: Arc<Delta>,
        full: Arc<Delta>,
        bytes: usize,
        waiter: Option<(Durability, watch::Sender<Durability>)>,
    },
    Drain {
        deadline: Duration,
        done: oneshot::Sender<DrainReport>,
    },
    StoreLoaded,
    Fill {
        key: Key,
        done: oneshot::Sender<bool>,
    },
    AcceptorKeys {
        done: oneshot::Sender<Vec<Key>>,
    },
    Strong {
        key: Key,
        change: Change,
        at: geocache_crdt::Hlc,
        seen_version: u64,
        done: oneshot::Sender<Outcome>,
    },
}

/// A handle on the node's replication. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    commands: mpsc::Sender<Command>,
    view: Arc<RwLock<ClusterView>>,
    transport: QuicTransport,
    me: NodeId,
    name: String,
    fill_timeout: Duration,
}

impl Cluster {
    /// Binds the gossip endpoint, joins through the seeds and starts the
    /// driver task.
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when the endpoint cannot be bound.
    pub async fn start(store: Arc<Store>, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let config = QuicConfig::new(options.bind, options.tls);
        let (transport, inbound) =
            QuicTransport::bind(config).await.map_err(|e| ClusterError::Transport(e.to_string()))?;
        let me = options.me.node;
        let name = options.me.name.clone();
        let seed = SystemClock.now_ms() ^ me.0;
        let mut core_config = CoreConfig {
            seeds: options.seeds.clone(),
            fill_timeout_ms: u64::try_from(options.fill_timeout.as_millis()).unwrap_or(u64::MAX),
            ..CoreConfig::default()
        };
        core_config.replicator.backlog.bytes_max = options.backlog_bytes_max;
        core_config.replicator.backlog.age_ms_max = backlog_age_ms_max(options.tombstone_retention_ms);
        core_config.strong = options.strong.clone();
        let mut core = match &options.resume {
            Some(state) => Core::resume(options.me.clone(), core_config, state, seed, 0),
            None => Core::new(options.me.clone(), core_config, seed, 0),
        };
        for (key, slot) in options.acceptor_slots {
            core.restore_strong_slot(key, slot);
        }
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let (answers, answer_rx) = mpsc::channel(ANSWER_QUEUE_MAX);
        let view = Arc::new(RwLock::new(ClusterView::default()));
        let driver = Driver {
            store,
            transport: transport.clone(),
            core,
            waiters: BTreeMap::new(),
            view: view.clone(),
            answers,
            answers_dropped: 0,
            started: Instant::now(),
            next_rtt_ms: 0,
            metrics: options.metrics,
            drain: None,
            refusals_counted: Refusals::default(),
            fill_waiters: BTreeMap::new(),
            fills_counted: (FillStats::default(), 0),
            omitted_counted: InterestStats::default(),
            lag: ReplicationLag::new(),
            heard: HashMap::new(),
            strong_waiters: HashMap::new(),
        };
        let failures = driver.metrics.replication_failures.clone();
        let task = tokio::spawn(driver.run(inbound, command_rx, answer_rx));
        options.health.supervise(task, failures);
        Ok(Cluster { commands, view, transport, me, name, fill_timeout: options.fill_timeout })
    }

    /// This node's origin id (this life's).
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This node's name: the one in its certificate.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster as this node sees it now.
    pub fn view(&self) -> ClusterView {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// The live members this node sees, without the rest of the view: what
    /// routing a client needs on every `/v1/closest`.
    pub fn members(&self) -> Vec<MemberView> {
        self.view.read().map(|v| v.members.clone()).unwrap_or_default()
    }

    /// Hands a local write to replication. For `Region` or `All`, the
    /// returned receiver's value rises as the write reaches further; it is
    /// closed once no more progress will be reported.
    pub async fn replicate(
        &self,
        outcome: &WriteOutcome,
        level: Durability,
    ) -> Option<watch::Receiver<Durability>> {
        let delta = Arc::new(outcome.delta.clone());
        let full = Arc::new(outcome.whole_delta());
        let bytes = delta.key.size_bytes() + outcome.register.size_bytes();
        let (waiter, rx) = if level == Durability::Local {
            (None, None)
        } else {
            let (tx, rx) = watch::channel(Durability::Local);
            (Some((level, tx)), Some(rx))
        };
        // Fails only when the driver has stopped (shutdown): the write is
        // still applied here.
        let _ = self.commands.send(Command::Write { delta, full, bytes, waiter }).await;
        rx
    }

    /// Drains before shutdown: queued writes leave, relays ack, and the
    /// members this node sends to directly confirm they hold every own
    /// write, up to `deadline`; then this node leaves membership and the
    /// endpoint closes. Call after the front ends stopped taking writes.
    pub async fn shutdown(&self, deadline: Duration) -> DrainReport {
        let (done, report) = oneshot::channel();
        let unknown = DrainReport { drained: false, queued: 0, unacked_relay: 0 };
        let report = match self.commands.send(Command::Drain { deadline, done }).await {
            Ok(()) => report.await.unwrap_or(unknown),
            Err(_) => unknown,
        };
        self.transport.close().await;
        report
    }

    /// A sidecar's miss of `key`: waits (at most the fill time-out) for a
    /// full node of the region to bring it into the store. True when the
    /// store now holds what that node held; false is a miss (a full node
    /// holds nothing, none is up, or it did not answer in time).
    pub async fn fill(&self, key: Key) -> bool {
        let (done, filled) = oneshot::channel();
        if self.commands.send(Command::Fill { key, done }).await.is_err() {
            return false;
        }
        // The core times the fill out; this bound only covers a driver
        // that stopped meanwhile.
        let bound = self.fill_timeout + Duration::from_secs(1);
        matches!(tokio::time::timeout(bound, filled).await, Ok(Ok(true)))
    }

    /// Runs `change` of strong key `key` through the acceptors
    /// (`geocache_gossip::strong`), asked for at `at` by this node's HLC,
    /// and waits for how it ended. `seen_version`: the version the store
    /// holds (0: none). The proposer's own deadline ends every
    /// proposal; a driver that stopped meanwhile counts as `Unknown` (the
    /// change may have been made).
    pub async fn propose_strong(
        &self,
        key: Key,
        change: Change,
        at: geocache_crdt::Hlc,
        seen_version: u64,
    ) -> Outcome {
        let (done, outcome) = oneshot::channel();
        if self.commands.send(Command::Strong { key, change, at, seen_version, done }).await.is_err() {
            return Outcome::Unavailable;
        }
        match tokio::time::timeout(STRONG_WAIT_MAX, outcome).await {
            Ok(Ok(outcome)) => outcome,
            _ => Outcome::Unknown,
        }
    }

    /// The keys this node's strong acceptor holds slots for.
    pub async fn acceptor_keys(&self) -> Vec<Key> {
        let (done, keys) = oneshot::channel();
        if self.commands.send(Command::AcceptorKeys { done }).await.is_err() {
            return Vec::new();
        }
        keys.await.unwrap_or_default()
    }

    /// The store finished loading from the data dir.
    pub async fn store_loaded(&self) {
        let _ = self.commands.send(Command::StoreLoaded).await;
    }

    /// Closes the gossip endpoint at once, without draining.
    pub async fn close(&self) {
        self.transport.close().await;
    }
}

/// The node's store as the core reaches it, and the lag of what it applies.
struct StoreAccess<'a>(&'a Store, &'a mut ReplicationLag);

impl ReplicaStore for StoreAccess<'_> {
    fn apply(&mut self, delta: &Delta) -> ApplyOutcome {
        match self.0.apply_remote(delta) {
            Ok(outcome) => {
                self.1.record(delta, self.0.now_ms());
                ApplyOutcome::Stored(outcome.register)
            }
            Err(e) => {
                tracing::debug!(origin = %delta.origin, seq = delta.seq, error = %e, "delta not applied");
                ApplyOutcome::Unappliable
            }
        }
    }

    fn holds(&mut self, key: &Key) -> bool {
        self.0.holds(key)
    }

    fn merge(&mut self, key: &Key, register: &Register, forgotten_if_absent: bool) {
        self.0.merge_register(key, register, forgotten_if_absent);
    }

    fn drop_if_dot(&mut self, key: &Key, dot: Dot) {
        self.0.drop_if_dot(key, dot);
    }

    fn keys(&mut self) -> Vec<Key> {
        self.0.registers().map(|(k, _)| k).collect()
    }

    fn register(&mut self, key: &Key) -> Option<Arc<Register>> {
        self.0.register(key).map(|e| e.register_arc())
    }

    fn dots(&mut self) -> Vec<(Key, Dot)> {
        self.0.registers().map(|(k, e)| (k, e.dot())).collect()
    }

    fn keep_acceptor_slot(&mut self, key: &Key, slot: &Slot) -> bool {
        // Without a data dir, a promise would not outlive a crash: mute.
        match self.0.disk() {
            Some(disk) => match disk.keep_acceptor_slot(key, slot) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "acceptor slot not kept; the acceptor stays mute");
                    false
                }
            },
            None => false,
        }
    }
}

struct DrainState {
    until_ms: u64,
    done: oneshot::Sender<DrainReport>,
}

struct Driver {
    store: Arc<Store>,
    transport: QuicTransport,
    core: Core,
    waiters: BTreeMap<u64, watch::Sender<Durability>>,
    view: Arc<RwLock<ClusterView>>,
    answers: mpsc::Sender<(NodeId, Message)>,
    answers_dropped: u64,
    /// The core's time: monotonic ms since the driver started. A wall
    /// clock stepped back (NTP) must not stall its timers; only the store's
    /// HLC and expiries read the wall clock.
    started: Instant,
    next_rtt_ms: u64,
    metrics: Arc<Metrics>,
    drain: Option<DrainState>,
    /// The refusals last counted into the metrics.
    refusals_counted: Refusals,
    /// Front-end requests waiting on each key's fill.
    fill_waiters: BTreeMap<Key, Vec<oneshot::Sender<bool>>>,
    /// The fill and not-stored counts last counted into the metrics.
    fills_counted: (FillStats, u64),
    /// The interest counters last added to the metrics.
    omitted_counted: InterestStats,
    /// How late each origin's writes arrive.
    lag: ReplicationLag,
    /// When each peer (by the name its certificate proves) last sent
    /// anything (driver ms); pruned to the members at every view.
    heard: HashMap<String, u64>,
    /// Front-end requests waiting on each strong proposal: as many as the
    /// proposer runs and queues at most (past it, it answers `Busy`).
    strong_waiters: HashMap<ProposalId, oneshot::Sender<Outcome>>,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Command>,
        mut answers: mpsc::Receiver<(NodeId, Message)>,
    ) {
        loop {
            let now = self.now_ms();
            let wake = self.core.poll_timeout().min(self.next_rtt_ms);
            let sleep = tokio::time::sleep(Duration::from_millis(wake.saturating_sub(now).min(60_000)));
            tokio::select! {
                received = inbound.recv() => match received {
                    Some(i) => self.on_inbound(i),
                    None => break,
                },
                command = commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                answer = answers.recv() => if let Some((from, message)) = answer {
                    self.on_answer(from, message);
                },
                () = sleep => self.on_timer(),
            }
            // What is already queued is handled before the next pump: under
            // load the writes of a burst leave in one frame per peer and its
            // acks in one message, instead of a frame, an ack and a wake-up
            // per write (natural batching; idle, nothing waits).
            for _ in 0..DRAIN_BATCH_COUNT_MAX {
                let mut handled = false;
                if let Ok(i) = inbound.try_recv() {
                    self.on_inbound(i);
                    handled = true;
                }
                if let Ok(c) = commands.try_recv() {
                    self.on_command(c);
                    handled = true;
                }
                if !handled {
                    break;
                }
            }
            // A delta or ack leaves only once its write reached the OS: a
            // node killed now comes back with every sequence number a peer
            // may hold.
            if let Some(disk) = self.store.disk().cloned() {
                disk.wait_os().await;
            }
            self.pump();
            if self.drain_finished() {
                break;
            }
        }
        tracing::info!("replication stopped");
    }

    fn on_timer(&mut self) {
        let now = self.now_ms();
        self.core.handle_timeout(now);
        if now >= self.next_rtt_ms {
            self.next_rtt_ms = now + RTT_REFRESH_MS;
            let members: Vec<(NodeId, SocketAddr)> =
                self.core.members().values().map(|p| (p.node, p.gossip)).collect();
            for (node, addr) in members {
                if let Some(rtt) = self.transport.rtt(addr) {
                    // Rounded up: a peer's round trip is never 0, which
                    // is the answering node's own, so on loopback a
                    // sub-millisecond peer must not tie with it.
                    let rtt_ms = u64::try_from(rtt.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX).max(1);
                    self.core.set_rtt(node, rtt_ms);
                }
            }
            let gone: Vec<u64> =
                self.waiters.iter().filter(|(_, tx)| tx.is_closed()).map(|(s, _)| *s).collect();
            for seq in gone {
                self.waiters.remove(&seq);
                self.core.forget_waiter(seq);
            }
            self.publish_view();
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = self.now_ms();
        match command {
            Command::Write { delta, full, bytes, waiter } => {
                let seq = delta.seq;
                let level = waiter.as_ref().map_or(Durability::Local, |(level, _)| *level);
                if let Some((_, tx)) = waiter {
                    self.waiters.insert(seq, tx);
                }
                self.core.local_write(delta, full, bytes, level, now);
            }
            Command::StoreLoaded => self.core.store_loaded(),
            Command::Fill { key, done } => match self.core.fill(key.clone(), now) {
                FillStart::Asked | FillStart::Joined => self.fill_waiters.entry(key).or_default().push(done),
                FillStart::NotSidecar | FillStart::NoFullNode | FillStart::Busy => {
                    let _ = done.send(false);
                }
            },
            Command::AcceptorKeys { done } => {
                let _ = done.send(self.core.strong_slot_keys());
            }
            Command::Strong { key, change, at, seen_version, done } => {
                self.core.saw_strong_version(&key, seen_version);
                let store = self.store.clone();
                let mut access = StoreAccess(&store, &mut self.lag);
                match self.core.propose_strong(key, change, at, &mut access, now) {
                    Some(id) => {
                        self.strong_waiters.insert(id, done);
                    }
                    None => {
                        let _ = done.send(Outcome::Unavailable);
                    }
                }
            }
            Command::Drain { deadline, done } => {
                let until_ms = now.saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
                tracing::info!(deadline_ms = deadline.as_millis() as u64, "draining replication");
                self.core.begin_drain(now);
                self.drain = Some(DrainState { until_ms, done });
            }
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = self.now_ms();
        let (Inbound::Datagram { peer, .. } | Inbound::Frame { peer, .. } | Inbound::Request { peer, .. }) =
            &inbound;
        if let Some(at) = self.heard.get_mut(&peer.name) {
            *at = now;
        } else if self.heard.len() < HEARD_PEERS_MAX {
            self.heard.insert(peer.name.clone(), now);
        }
        match inbound {
            Inbound::Datagram { from, peer, bytes } => {
                self.core.handle_datagram(&link(&peer, from), &bytes, now)
            }
            Inbound::Frame { from, bytes, .. } | Inbound::Request { from, bytes, .. } if bytes.is_empty() => {
                tracing::debug!(%from, "empty message");
            }
            Inbound::Frame { from, peer, bytes } => match codec::decode::<Message>(&bytes) {
                Ok(message) if message.sender().is_some() => {
                    self.on_message(&link(&peer, from), message, None)
                }
                Ok(_) => tracing::debug!(%from, "an answer on the frame stream"),
                Err(e) => self.undecodable(from, &e),
            },
            Inbound::Request { from, peer, bytes, respond } => match codec::decode::<Message>(&bytes) {
                Ok(message) if message.sender().is_some() => {
                    self.on_message(&link(&peer, from), message, Some(respond));
                }
                Ok(_) => tracing::debug!(%from, "an answer sent as a request"),
                Err(e) => self.undecodable(from, &e),
            },
        }
    }

    /// A peer's message that does not decode (a bug, another version, or
    /// hostile bytes: a compressed or too deep document): dropped, counted.
    fn undecodable(&self, from: SocketAddr, e: &geocache_crdt::codec::CodecError) {
        tracing::debug!(%from, error = %e, "undecodable message");
        self.metrics
            .peer_refusals
            .get_or_create(&crate::metrics::ReasonLabels { reason: "undecodable" })
            .inc();
    }

    fn on_message(&mut self, link: &Link, message: Message, respond: Option<oneshot::Sender<Bytes>>) {
        let now = self.now_ms();
        let store = self.store.clone();
        let from = message.sender();
        let answer = self.core.handle_message(link, message, &mut StoreAccess(&store, &mut self.lag), now);
        if let (Some(answer), Some(respond), Some(from)) = (answer, respond, from) {
            if let Ok(bytes) = codec::encode(&answer) {
                self.count(self.is_wan(from), &answer, bytes.len());
                let _ = respond.send(Bytes::from(bytes));
            }
        }
    }

    fn on_answer(&mut self, asked: NodeId, message: Message) {
        let now = self.now_ms();
        let store = self.store.clone();
        self.core.handle_answer(asked, message, &mut StoreAccess(&store, &mut self.lag), now);
    }

    /// Sends what the core wants sent, then acts on its events.
    fn pump(&mut self) {
        while let Some((to, data)) = self.core.poll_datagram() {
            let _ = self.transport.send_datagram(to, data);
        }
        let store = self.store.clone();
        let mut budget = self.transport.queued_bytes_free();
        while let Some(t) = self.core.poll_transmit(&mut StoreAccess(&store, &mut self.lag), budget) {
            match self.send(&t) {
                Some(len) => budget = budget.saturating_sub(len),
                // A queue refused it: the rest waits for the core's next
                // wake-up rather than be refused in turn.
                None => break,
            }
        }
        let mut members_changed = false;
        while let Some(event) = self.core.poll_event() {
            match event {
                CoreEvent::MemberUp(peer) => {
                    members_changed = true;
                    tracing::info!(name = %peer.name, life = %peer.node, region = %peer.region, gossip = %peer.gossip, "member up");
                }
                CoreEvent::MemberDown(peer) => {
                    members_changed = true;
                    tracing::info!(name = %peer.name, life = %peer.node, region = %peer.region, "member down");
                }
                CoreEvent::Durability { seq, level, done } => {
                    let tx = if done { self.waiters.remove(&seq) } else { self.waiters.get(&seq).cloned() };
                    if let Some(tx) = tx {
                        let _ = tx.send(level);
                    }
                }
                CoreEvent::Filled { key, found } => {
                    for done in self.fill_waiters.remove(&key).unwrap_or_default() {
                        let _ = done.send(found);
                    }
                }
                CoreEvent::TransferApplied { from, dropped } => {
                    tracing::info!(peer = %from, dropped, "full transfer applied");
                }
                CoreEvent::Checkpoint { watermarks } => {
                    if let Some(disk) = self.store.disk() {
                        disk.checkpoint(&watermarks);
                    }
                }
                CoreEvent::Strong { id, outcome } => {
                    let name = match &outcome {
                        Outcome::Chosen(_) => "chosen",
                        Outcome::Refused(_) => "refused",
                        Outcome::Unavailable => "unavailable",
                        Outcome::Unknown => "unknown",
                        Outcome::Full => "full",
                        Outcome::Busy => "busy",
                    };
                    self.metrics
                        .strong_outcomes
                        .get_or_create(&crate::metrics::OutcomeLabels { outcome: name })
                        .inc();
                    if let Some(done) = self.strong_waiters.remove(&id) {
                        let _ = done.send(outcome);
                    }
                }
            }
        }
        if members_changed {
            self.publish_view();
        }
    }

    /// Whether the drain is over (done or out of time): then the core has
    /// left membership and the report is sent.
    fn drain_finished(&mut self) -> bool {
        let now = self.now_ms();
        let Some(drain) = &self.drain else { return false };
        let drained = self.core.is_drained();
        if !drained && now < drain.until_ms {
            return false;
        }
        let report = DrainReport {
            drained,
            queued: self.core.replicator().queued_count(),
            unacked_relay: self.core.replicator().unacked_relay_count(),
        };
        if drained {
            tracing::info!("replication drained");
        } else {
            tracing::warn!(
                queued = report.queued,
                unacked_relay = report.unacked_relay,
                "drain deadline passed"
            );
        }
        self.core.leave(now);
        while let Some((to, data)) = self.core.poll_datagram() {
            let _ = self.transport.send_datagram(to, data);
        }
        if let Some(drain) = self.drain.take() {
            tokio::spawn(async move {
                tokio::time::sleep(LEAVE_GRACE).await;
                let _ = drain.done.send(report);
            });
        }
        true
    }

    fn count(&self, wan: bool, message: &Message, bytes: usize) {
        let labels = MessageLabels { scope: if wan { "wan" } else { "lan" }, kind: message.kind() };
        self.metrics.replication_messages.get_or_create(&labels).inc();
        self.metrics.replication_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    fn is_wan(&self, node: NodeId) -> bool {
        let own = &self.core.membership().me().region;
        self.core.members().get(&node).is_some_and(|p| &p.region != own)
    }

    /// Sends a transmit; the bytes it took of the queues' budget, or `None`
    /// when the transport refused it.
    fn send(&mut self, t: &Transmit) -> Option<usize> {
        let Ok(bytes) = codec::encode(&t.message) else { return Some(0) };
        let len = bytes.len();
        self.count(t.wan, &t.message, len);
        let bytes = Bytes::from(bytes);
        if !t.request {
            if let Err(e) = self.transport.send_frame(t.addr, bytes) {
                tracing::debug!(peer = %t.to, error = %e, "frame not queued; the core repairs what it carried");
                self.core.transmit_refused(t);
                return None;
            }
            return Some(len);
        }
        let transport = self.transport.clone();
        let answers = self.answers.clone();
        let from = t.to;
        let addr = t.addr;
        match answers.try_reserve_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    match transport.request(addr, bytes, SYNC_TIMEOUT).await {
                        Ok(answer) => match codec::decode::<Message>(&answer) {
                            Ok(message) => {
                                slot.send((from, message));
                            }
                            Err(e) => tracing::debug!(peer = %from, error = %e, "undecodable sync answer"),
                        },
                        Err(e) => tracing::debug!(peer = %from, error = %e, "sync request failed"),
                    }
                });
            }
            Err(_) => {
                // Too many answers waiting: this round is skipped, the
                // next asks again.
                self.answers_dropped += 1;
            }
        }
        Some(0)
    }

    /// Counts new refusals into the metrics, with one warning for the lot:
    /// a hostile peer cannot flood the log.
    fn count_refusals(&mut self) {
        let now = self.core.refusals().clone();
        let before = std::mem::replace(&mut self.refusals_counted, now.clone());
        for ((reason, count), (_, counted)) in now.by_reason().into_iter().zip(before.by_reason()) {
            let new = count - counted;
            if new > 0 {
                self.metrics
                    .peer_refusals
                    .get_or_create(&crate::metrics::ReasonLabels { reason })
                    .inc_by(new);
                tracing::warn!(reason, count = new, "peer input refused (docs/SECURITY.md)");
            }
        }
    }

    /// Counts new fills, not-stored remote writes and omitted deltas into
    /// the metrics.
    fn count_fills(&mut self) {
        let now = (self.core.fill_stats().clone(), self.core.replicator().stats().not_stored);
        let (before, not_stored_before) = std::mem::replace(&mut self.fills_counted, now.clone());
        let (now, not_stored) = now;
        add_outcomes(
            &self.metrics.fills,
            [
                ("found", now.found - before.found),
                ("absent", now.absent - before.absent),
                ("behind", now.behind - before.behind),
                ("timed_out", now.timed_out - before.timed_out),
                ("no_full_node", now.no_full_node - before.no_full_node),
                ("busy", now.refused_busy - before.refused_busy),
                ("answered", now.answered - before.answered),
                ("spoiled", now.spoiled - before.spoiled),
            ],
        );
        self.metrics.remote_not_stored.inc_by(not_stored - not_stored_before);
        let now = self.core.replicator().interest_stats().clone();
        let before = std::mem::replace(&mut self.omitted_counted, now.clone());
        add_outcomes(
            &self.metrics.omitted,
            [
                ("sent", now.omitted_sent - before.omitted_sent),
                ("applied", now.omitted_applied - before.omitted_applied),
                ("held_dropped", now.omitted_held_dropped - before.omitted_held_dropped),
                ("refused", now.omitted_refused - before.omitted_refused),
                ("overflow", now.overflows - before.overflows),
            ],
        );
    }

    fn publish_view(&mut self) {
        self.count_refusals();
        self.count_fills();
        let replicator = self.core.replicator();
        let rtts: BTreeMap<NodeId, Option<u64>> =
            replicator.peers().into_iter().map(|(info, rtt)| (info.node, rtt)).collect();
        let watermarks: BTreeMap<NodeId, u64> = replicator.watermarks().into_iter().collect();
        let suspects: BTreeSet<NodeId> =
            self.core.membership().suspects().into_iter().map(|p| p.node).collect();
        let now_unix_ms = self.store.now_ms();
        let now = self.now_ms();
        let names: BTreeSet<&str> = self.core.members().values().map(|p| p.name.as_str()).collect();
        self.heard.retain(|name, _| names.contains(name.as_str()));
        let members = self
            .core
            .members()
            .values()
            .map(|p| MemberView {
                origin: p.node.to_string(),
                name: p.name.clone(),
                region: p.region.clone(),
                kind: p.kind.as_str(),
                lat: p.lat,
                lon: p.lon,
                gossip: p.gossip,
                http: p.http,
                state: if !self.core.is_confirmed(p.node) {
                    "unconfirmed"
                } else if suspects.contains(&p.node) {
                    "suspect"
                } else {
                    "up"
                },
                rtt_ms: rtts.get(&p.node).copied().flatten(),
                lag_writes: replicator.lag(p.node),
                lag_ms: self.lag.summary(p.node, now_unix_ms),
                heard_ms_ago: self.heard.get(&p.name).map(|at| now.saturating_sub(*at)),
            })
            .collect();
        let view = ClusterView {
            members,
            watermarks: watermarks.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            stats: replicator.stats().clone(),
            transfers: self.core.transfer_stats().clone(),
            fills: self.core.fill_stats().clone(),
            interest: self.core.replicator().interest_stats().clone(),
            answers_dropped: self.answers_dropped,
            refusals: self.core.refusals().clone(),
        };
        if let Ok(mut v) = self.view.write() {
            *v = view;
        }
    }
}

/// What the transport proved of a datagram's or frame's sender.
fn link(peer: &CertIdentity, from: SocketAddr) -> Link {
    Link { name: peer.name.clone(), region: peer.region.clone(), addr: from }
}

/// Adds each outcome's new count to `family` (none for an outcome with none,
/// so `/metrics` lists only outcomes that happened).
fn add_outcomes<const N: usize>(
    family: &prometheus_client::metrics::family::Family<
        crate::metrics::OutcomeLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    outcomes: [(&'static str, u64); N],
) {
    for (outcome, new) in outcomes {
        if new > 0 {
            family.get_or_create(&crate::metrics::OutcomeLabels { outcome }).inc_by(new);
        }
    }
}
