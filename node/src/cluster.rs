//! Replication for a node: drives the sans-IO membership and replicator of
//! `geocache-gossip` with the QUIC transport, the store and the wall clock.
//!
//! One task owns both state machines. It wakes on a datagram, frame or
//! request from a peer, on a local write handed in by an HTTP handler, or on
//! the earliest timer either state machine asked for; after each input it
//! drains what they want sent.

use bytes::Bytes;
use geocache_crdt::{codec, Delta, Key, NodeId, Register};
use geocache_gossip::membership::{Membership, MembershipEvent, INITIAL_CLUSTER_SIZE};
use geocache_gossip::peer::Peer;
use geocache_gossip::quic::{ClusterTls, Inbound, QuicConfig, QuicTransport};
use geocache_gossip::replicator::{Event, PeerInfo, Replicator, ReplicatorConfig, ReplicatorStats, Transmit};
use geocache_gossip::wire::Message;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::clock::{Clock, SystemClock};
use crate::metrics::{MessageLabels, Metrics};
use crate::store::{Store, WriteOutcome};
use crate::write::dropped_by_transfer;

/// Local writes waiting to be handed to the replicator; an HTTP handler
/// waits for room (backpressure) rather than a write being dropped.
const COMMAND_QUEUE_MAX: usize = 4_096;

/// Inbound messages and commands handled per pump at most, each kind:
/// enough to batch a burst, few enough that timers and sends keep their
/// turn.
const DRAIN_BATCH_COUNT_MAX: usize = 256;
/// Writes waiting for a durability level at once; past this, a write is
/// answered with the level it has reached.
const DURABILITY_WAITERS_MAX: usize = 65_536;
/// Registers in one full-transfer chunk.
const FULL_TRANSFER_CHUNK_COUNT: usize = 256;
/// How long an anti-entropy request may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How often RTTs are read from the transport into the replicator.
const RTT_REFRESH_MS: u64 = 1_000;

/// How far a write must have travelled before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Applied here (the default).
    Local,
    /// Applied by another node of this region too.
    Region,
    /// Applied by a node in every reachable region.
    All,
}

impl Durability {
    /// Parses `local`, `region` or `all`.
    pub fn parse(s: &str) -> Option<Durability> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Some(Durability::Local),
            "region" => Some(Durability::Region),
            "all" => Some(Durability::All),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Local => "local",
            Durability::Region => "region",
            Durability::All => "all",
        }
    }
}

/// What replication needs to start.
pub struct ClusterOptions {
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
    /// Where to count messages sent.
    pub metrics: Arc<Metrics>,
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
    /// Node id, hex.
    pub id: String,
    /// Region.
    pub region: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Gossip address.
    pub gossip: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// `up`, or `suspect` while some node suspects it failed (members down
    /// are not listed).
    pub state: &'static str,
    /// Measured round trip, ms.
    pub rtt_ms: Option<u64>,
    /// How many of this member's writes this node has not applied, as of
    /// the member's last anti-entropy request (which says how many it made).
    pub lag_writes: Option<u64>,
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
}

enum Command {
    Write {
        delta: Arc<Delta>,
        full: Arc<Delta>,
        bytes: usize,
        waiter: Option<(Durability, watch::Sender<Durability>)>,
    },
    Answer {
        from: NodeId,
        message: Message,
    },
}

/// A handle on the node's replication. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    commands: mpsc::Sender<Command>,
    view: Arc<RwLock<ClusterView>>,
    transport: QuicTransport,
    me: NodeId,
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
        let seed = SystemClock.now_ms() ^ me.0;
        let now = 0;
        let mut membership = Membership::new(options.me.clone(), INITIAL_CLUSTER_SIZE, seed, now);
        membership.join(&options.seeds, now);
        let seeds = options.seeds.clone();
        let mut replicator_config = ReplicatorConfig::default();
        replicator_config.backlog.bytes_limit = options.backlog_bytes_max;
        let replicator = Replicator::new(me, options.me.region.clone(), replicator_config, now);
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let view = Arc::new(RwLock::new(ClusterView::default()));
        let driver = Driver {
            store,
            transport: transport.clone(),
            membership,
            replicator,
            peers: BTreeMap::new(),
            waiters: BTreeMap::new(),
            transfers: BTreeMap::new(),
            view: view.clone(),
            commands: commands.clone(),
            started: std::time::Instant::now(),
            next_rtt_ms: 0,
            metrics: options.metrics,
            region: options.me.region.clone(),
            seeds,
        };
        tokio::spawn(driver.run(inbound, command_rx));
        Ok(Cluster { commands, view, transport, me })
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
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
    /// returned receiver's value rises as the write reaches further.
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

    /// Closes the gossip endpoint.
    pub async fn close(&self) {
        self.transport.close().await;
    }
}

struct PeerRecord {
    peer: Peer,
}

struct Transfer {
    keys: BTreeSet<Key>,
}

struct Driver {
    store: Arc<Store>,
    transport: QuicTransport,
    membership: Membership,
    replicator: Replicator,
    peers: BTreeMap<NodeId, PeerRecord>,
    waiters: BTreeMap<u64, (Durability, watch::Sender<Durability>)>,
    /// Full transfers being received, by sender.
    transfers: BTreeMap<NodeId, Transfer>,
    view: Arc<RwLock<ClusterView>>,
    commands: mpsc::Sender<Command>,
    /// The state machines' time: monotonic ms since the driver started. A
    /// wall clock stepped back (NTP) must not stall their timers; only the
    /// store's HLC and expiries read the wall clock.
    started: std::time::Instant,
    next_rtt_ms: u64,
    metrics: Arc<Metrics>,
    region: String,
    /// Where to announce again while this node knows no member: a lost
    /// first announce (a datagram) must not leave it alone for good.
    seeds: Vec<SocketAddr>,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, mut commands: mpsc::Receiver<Command>) {
        loop {
            let now = self.now_ms();
            let wake = self
                .membership
                .poll_timeout()
                .unwrap_or(u64::MAX)
                .min(self.replicator.poll_timeout())
                .min(self.next_rtt_ms);
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
            self.pump();
        }
        tracing::info!("replication stopped");
    }

    fn on_timer(&mut self) {
        let now = self.now_ms();
        self.membership.handle_timeout(now);
        self.replicator.handle_timeout(now);
        if now >= self.next_rtt_ms {
            self.next_rtt_ms = now + RTT_REFRESH_MS;
            for (node, record) in &self.peers {
                if let Some(rtt) = self.transport.rtt(record.peer.gossip) {
                    // Rounded up: a peer's round trip is never 0, which
                    // is the answering node's own, so on loopback a
                    // sub-millisecond peer must not tie with it.
                    let rtt_ms = u64::try_from(rtt.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX).max(1);
                    self.replicator.set_rtt(*node, rtt_ms);
                }
            }
            self.waiters.retain(|_, (_, tx)| !tx.is_closed());
            if self.peers.is_empty() && !self.seeds.is_empty() {
                self.membership.join(&self.seeds, now);
            }
            self.publish_view();
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = self.now_ms();
        match command {
            Command::Write { delta, full, bytes, waiter } => {
                let seq = delta.seq;
                let region_acks = waiter.as_ref().is_some_and(|(level, _)| *level >= Durability::Region);
                self.replicator.local_write(delta, full, bytes, region_acks, now);
                if let Some((level, tx)) = waiter {
                    if self.waiters.len() < DURABILITY_WAITERS_MAX {
                        self.waiters.insert(seq, (level, tx));
                        self.check_waiter(seq);
                    }
                }
            }
            Command::Answer { from, message } => self.on_message(from, message, None),
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = self.now_ms();
        match inbound {
            Inbound::Datagram { from, bytes } => {
                if let Err(e) = self.membership.handle_data(&bytes, now) {
                    tracing::debug!(%from, error = %e, "membership datagram refused");
                }
            }
            Inbound::Frame { from, bytes } | Inbound::Request { from, bytes, .. } if bytes.is_empty() => {
                tracing::debug!(%from, "empty message");
            }
            Inbound::Frame { from, bytes } => match codec::decode::<Message>(&bytes) {
                Ok(message) => self.on_message(sender_of(&message), message, None),
                Err(e) => tracing::debug!(%from, error = %e, "undecodable frame"),
            },
            Inbound::Request { from, bytes, respond } => match codec::decode::<Message>(&bytes) {
                Ok(message) => self.on_message(sender_of(&message), message, Some(respond)),
                Err(e) => tracing::debug!(%from, error = %e, "undecodable request"),
            },
        }
    }

    fn on_message(
        &mut self,
        from: NodeId,
        message: Message,
        respond: Option<tokio::sync::oneshot::Sender<Bytes>>,
    ) {
        let now = self.now_ms();
        match message {
            Message::FullTransferRequest { from } => self.send_full_transfer(from),
            Message::FullTransferChunk { from, registers, last, watermarks } => {
                self.on_transfer_chunk(from, registers, last, &watermarks)
            }
            message => {
                let store = self.store.clone();
                let mut apply = |d: &Delta| -> Option<Arc<Register>> {
                    match store.apply_remote(d) {
                        Ok(outcome) => Some(outcome.register),
                        Err(e) => {
                            tracing::debug!(origin = %d.origin, seq = d.seq, error = %e, "delta not applied");
                            None
                        }
                    }
                };
                let answer = self.replicator.handle_message(from, message, now, &mut apply);
                if let (Some(answer), Some(respond)) = (answer, respond) {
                    if let Ok(bytes) = codec::encode(&answer) {
                        self.count(self.is_wan(from), &answer, bytes.len());
                        let _ = respond.send(Bytes::from(bytes));
                    }
                }
            }
        }
    }

    fn send_full_transfer(&mut self, to: NodeId) {
        let Some(addr) = self.peers.get(&to).map(|r| r.peer.gossip) else { return };
        let me = self.replicator.me();
        let watermarks = self.replicator.watermarks();
        let mut chunk = Vec::with_capacity(FULL_TRANSFER_CHUNK_COUNT);
        let mut registers = self.store.registers().peekable();
        loop {
            let next = registers.next();
            let done = next.is_none();
            if let Some((key, entry)) = next {
                chunk.push((key, entry.register_arc()));
            }
            if chunk.len() == FULL_TRANSFER_CHUNK_COUNT || done {
                let last = done || registers.peek().is_none();
                let message = Message::FullTransferChunk {
                    from: me,
                    registers: std::mem::take(&mut chunk),
                    last,
                    watermarks: if last { watermarks.clone() } else { Vec::new() },
                };
                if let Ok(bytes) = codec::encode(&message) {
                    self.count(self.is_wan(to), &message, bytes.len());
                    if self.transport.send_frame(addr, Bytes::from(bytes)).is_err() {
                        tracing::warn!(peer = %to, "full transfer cut short: the peer's queue is full");
                        return;
                    }
                }
                if last {
                    return;
                }
            }
        }
    }

    fn on_transfer_chunk(
        &mut self,
        from: NodeId,
        registers: Vec<(Key, Arc<Register>)>,
        last: bool,
        wm: &[(NodeId, u64)],
    ) {
        let transfer = self.transfers.entry(from).or_insert_with(|| Transfer { keys: BTreeSet::new() });
        for (key, register) in registers {
            self.store.merge_register(&key, &register);
            transfer.keys.insert(key);
        }
        if !last {
            return;
        }
        let Some(transfer) = self.transfers.remove(&from) else { return };
        let sender_wm: BTreeMap<NodeId, u64> = wm.iter().copied().collect();
        let stale: Vec<(Key, geocache_crdt::Dot)> = self
            .store
            .registers()
            .map(|(k, e)| (k, e.dot()))
            .filter(|(k, dot)| dropped_by_transfer(*dot, transfer.keys.contains(k), &sender_wm))
            .collect();
        for (key, dot) in stale {
            self.store.drop_if_dot(&key, dot);
        }
        self.replicator.full_transfer_done(wm);
        tracing::info!(peer = %from, keys = transfer.keys.len(), "full transfer applied");
    }

    fn check_waiter(&mut self, seq: u64) {
        let Some((level, tx)) = self.waiters.get(&seq) else { return };
        let reached = if self.replicator.reached_all(seq) && self.replicator.reached_region(seq) {
            Durability::All
        } else if self.replicator.reached_region(seq) {
            Durability::Region
        } else if self.replicator.reached_all(seq) && *level == Durability::All {
            // Every reachable region has it, but this region has no other
            // live node: "all" holds, "region" would not.
            Durability::All
        } else {
            Durability::Local
        };
        if reached > *tx.borrow() {
            let _ = tx.send(reached);
        }
        if reached >= *level {
            self.waiters.remove(&seq);
            self.replicator.forget_acks(seq);
        }
    }

    fn pump(&mut self) {
        while let Some((to, data)) = self.membership.poll_transmit() {
            let _ = self.transport.send_datagram(to, data);
        }
        let mut membership_changed = false;
        while let Some(event) = self.membership.poll_event() {
            membership_changed = true;
            let now = self.now_ms();
            match event {
                MembershipEvent::Up(peer) => {
                    tracing::info!(node = %peer.node, region = %peer.region, gossip = %peer.gossip, "member up");
                    self.replicator.peer_up(PeerInfo {
                        node: peer.node,
                        region: peer.region.clone(),
                        addr: peer.gossip,
                    });
                    self.peers.insert(peer.node, PeerRecord { peer });
                }
                MembershipEvent::Down(peer) => {
                    tracing::info!(node = %peer.node, region = %peer.region, "member down");
                    // A restart shows as Down(old) then Up(new) with the
                    // same id: only forget the member if it is still the
                    // old life.
                    let current = self.peers.get(&peer.node).map(|r| r.peer.incarnation);
                    if current.is_none_or(|inc| inc <= peer.incarnation) {
                        self.peers.remove(&peer.node);
                        self.replicator.peer_down(peer.node, now);
                    }
                }
            }
        }
        while let Some(t) = self.replicator.poll_transmit() {
            self.send(t);
        }
        while let Some(event) = self.replicator.poll_event() {
            match event {
                Event::Acked { seq } => self.check_waiter(seq),
                Event::FullTransferNeeded { peer, .. } => {
                    if let Some(addr) = self.peers.get(&peer).map(|r| r.peer.gossip) {
                        let request = Message::FullTransferRequest { from: self.replicator.me() };
                        if let Ok(bytes) = codec::encode(&request) {
                            let _ = self.transport.send_frame(addr, Bytes::from(bytes));
                        }
                    }
                }
            }
        }
        if membership_changed {
            let seqs: Vec<u64> = self.waiters.keys().copied().collect();
            for seq in seqs {
                self.check_waiter(seq);
            }
            self.publish_view();
        }
    }

    fn count(&self, wan: bool, message: &Message, bytes: usize) {
        let kind = match message {
            Message::Deltas { .. } => "deltas",
            Message::Acks { .. } => "acks",
            Message::SyncRequest { .. } | Message::SyncResponse { .. } => "sync",
            Message::FullTransferRequest { .. } | Message::FullTransferChunk { .. } => "full_transfer",
        };
        let labels = MessageLabels { scope: if wan { "wan" } else { "lan" }, kind };
        self.metrics.replication_messages.get_or_create(&labels).inc();
        self.metrics.replication_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    fn is_wan(&self, node: NodeId) -> bool {
        self.peers.get(&node).is_some_and(|r| r.peer.region != self.region)
    }

    fn send(&mut self, t: Transmit) {
        let Ok(bytes) = codec::encode(&t.message) else { return };
        self.count(t.wan, &t.message, bytes.len());
        let bytes = Bytes::from(bytes);
        if !t.request {
            // Anti-entropy repairs what a refused frame carried; say so
            // rather than lose it in silence.
            if let Err(e) = self.transport.send_frame(t.addr, bytes) {
                tracing::debug!(peer = %t.to, error = %e, "frame not queued; anti-entropy will repair it");
            }
            return;
        }
        let transport = self.transport.clone();
        let commands = self.commands.clone();
        let from = t.to;
        tokio::spawn(async move {
            match transport.request(t.addr, bytes, SYNC_TIMEOUT).await {
                Ok(answer) => match codec::decode::<Message>(&answer) {
                    Ok(message) => {
                        let _ = commands.try_send(Command::Answer { from, message });
                    }
                    Err(e) => tracing::debug!(peer = %from, error = %e, "undecodable sync answer"),
                },
                Err(e) => tracing::debug!(peer = %from, error = %e, "sync request failed"),
            }
        });
    }

    fn publish_view(&self) {
        let rtts: BTreeMap<NodeId, Option<u64>> =
            self.replicator.peers().into_iter().map(|(info, rtt)| (info.node, rtt)).collect();
        let watermarks: BTreeMap<NodeId, u64> = self.replicator.watermarks().into_iter().collect();
        let suspects: BTreeSet<NodeId> = self.membership.suspects().into_iter().map(|p| p.node).collect();
        let members = self
            .peers
            .values()
            .map(|r| MemberView {
                id: r.peer.node.to_string(),
                region: r.peer.region.clone(),
                lat: r.peer.lat,
                lon: r.peer.lon,
                gossip: r.peer.gossip,
                http: r.peer.http,
                state: if suspects.contains(&r.peer.node) { "suspect" } else { "up" },
                rtt_ms: rtts.get(&r.peer.node).copied().flatten(),
                lag_writes: self.replicator.lag(r.peer.node),
            })
            .collect();
        let view = ClusterView {
            members,
            watermarks: watermarks.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
            stats: self.replicator.stats().clone(),
        };
        if let Ok(mut v) = self.view.write() {
            *v = view;
        }
    }
}

/// The node a message says it comes from.
fn sender_of(message: &Message) -> NodeId {
    match message {
        Message::Deltas { from, .. }
        | Message::Acks { from, .. }
        | Message::SyncRequest { from, .. }
        | Message::FullTransferRequest { from }
        | Message::FullTransferChunk { from, .. } => *from,
        Message::SyncResponse { .. } => NodeId(0),
    }
}
