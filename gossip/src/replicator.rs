//! The replicator: gets every write to every node, near real time.
//!
//! Sans-IO, like quinn-proto's `Connection`. Feed it with
//! [`Replicator::local_write`] (a write accepted here),
//! [`Replicator::handle_message`] (a message from a peer),
//! [`Replicator::peer_up`] / [`Replicator::peer_down`] (membership),
//! [`Replicator::set_rtt`] and [`Replicator::handle_timeout`]; then drain
//! [`Replicator::poll_transmit`] (messages to send) and
//! [`Replicator::poll_event`], and call `handle_timeout` at
//! [`Replicator::poll_timeout`]. Time is unix ms passed in, and only moves
//! forward. Nothing here does IO, reads a clock or draws randomness, and
//! every iteration is in node-id order, so the simulator replays it exactly.
//!
//! Fan-out is region-aware: a write goes to every live peer of the origin's
//! region and to one relay per remote region (the live peer there with the
//! lowest measured RTT), which applies it and forwards it inside its region.
//! So a write crosses each WAN link once per region, not once per node. A
//! relay that goes down, or does not ack in time, is replaced and the
//! unacked writes resent through the new one. Anti-entropy every
//! `sync_interval_ms` exchanges per-origin watermarks with one peer and
//! fills gaps from the backlog; when the backlog no longer reaches back, it
//! reports the origins that need a full transfer.

use geocache_crdt::{Delta, DeltaBody, Key, NodeId, Register};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backlog::{Backlog, BacklogLimits};
use crate::interest::{InterestNews, InterestStats, SidecarInterest};
use crate::replica_store::ApplyOutcome;
use crate::watermarks::{Admission, Watermarks};
use crate::wire::Message;

/// Bounds and periods of the replicator.
#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    /// What the backlog keeps for anti-entropy.
    pub backlog: BacklogLimits,
    /// Deltas queued for one peer beyond this are dropped for it (it
    /// catches up by anti-entropy): a slow peer cannot grow our memory.
    pub peer_queue_count_max: usize,
    /// Most deltas in one `Deltas` frame.
    pub frame_delta_count_max: usize,
    /// Most bytes of deltas (by [`delta_size_bytes`]) in one `Deltas`
    /// frame, so a batch of large values stays far below the transport's
    /// 16 MiB frame limit; a single larger delta still goes alone.
    pub frame_delta_bytes_max: usize,
    /// Most deltas in one anti-entropy answer.
    pub sync_delta_count_max: usize,
    /// Most bytes of deltas (by [`delta_size_bytes`]) in one anti-entropy
    /// answer; a truncated answer is asked again at once.
    pub sync_delta_bytes_max: usize,
    /// How often to run anti-entropy with one peer.
    pub sync_interval_ms: u64,
    /// One round in this many asks a peer of another region; the others
    /// ask a peer of this node's own region (LAN). Peers of one region
    /// receive the same writes, so most gaps are filled inside it; the
    /// WAN rounds fill what the whole region missed (a partition).
    pub sync_wan_every_rounds: u32,
    /// An anti-entropy answer leaves out deltas the answering node
    /// received less than this ago: they are most likely still on their
    /// way to the requester by the push path, and sending them again
    /// doubled the WAN bytes of a busy cluster. Unless the answering
    /// node told the requester it dropped deltas for it (`SyncHint`).
    pub sync_grace_ms: u64,
    /// How long a relay has to ack before the write goes through another.
    pub relay_ack_timeout_ms: u64,
    /// Own writes whose acks are tracked (for durability); the oldest are
    /// forgotten past this.
    pub tracked_write_count_max: usize,
    /// How long writes sent to a sidecar without their body may wait to
    /// leave together (they leave at once with anything else for it). A
    /// sidecar takes them only to advance its watermarks, so they need
    /// not leave one frame per write: in the simulator's 10 x 20 region
    /// of 18 sidecars a frame each was most of the messages.
    pub omitted_flush_ms: u64,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            backlog: BacklogLimits::default(),
            peer_queue_count_max: 65_536,
            frame_delta_count_max: 512,
            frame_delta_bytes_max: 4 << 20,
            sync_delta_count_max: 4_096,
            sync_delta_bytes_max: 4 << 20,
            sync_interval_ms: 1_000,
            sync_wan_every_rounds: 4,
            sync_grace_ms: 1_000,
            relay_ack_timeout_ms: 2_000,
            tracked_write_count_max: 65_536,
            omitted_flush_ms: 10,
        }
    }
}

/// A peer as the replicator needs to know it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    /// Its id.
    pub node: NodeId,
    /// Its region.
    pub region: String,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Whether it is a full node: relays are full nodes where a region
    /// has one up, since a sidecar cannot rebuild a document change for a
    /// key it does not hold.
    pub full: bool,
}

#[derive(Debug)]
struct PeerState {
    info: PeerInfo,
    /// Whether it is in this node's region, and the index of its region
    /// among those seen ([`Replicator::regions`]): region names are
    /// compared once, when it comes up, not per delta (at 200 peers the
    /// comparisons were a twentieth of a simulated run).
    local: bool,
    region_index: usize,
    rtt_ms: Option<u64>,
    /// Deltas to send as they are (the receiver does not relay them).
    plain: VecDeque<Arc<Delta>>,
    /// Whether a delta queued in `plain` wants an ack.
    plain_ack: bool,
    /// Deltas to send for the receiver to relay in its region.
    relay: VecDeque<Arc<Delta>>,
    acks: Vec<(NodeId, u64)>,
    /// Registers this node holds that beat writes of the peer it had not
    /// seen ([`Message::Repair`]), and their bytes (at most a frame's).
    repairs: Vec<(Key, Arc<Register>)>,
    repair_bytes: usize,
    /// Deltas for it were dropped (its queue was full, or the transport
    /// refused a frame): tell it to sync with this node now.
    dropped: bool,
    /// This node told it so: its next sync request is answered without
    /// the grace, since what it lacks is the newest.
    hinted: bool,
    /// The push path's delivery time to it, as its last ack of an own
    /// write measured it (write to ack), and when: a slow path stretches
    /// the grace of the sync answers it gets ([`Replicator::sync_grace_for`]).
    push_lag: Option<PushLag>,
    /// When the body-less writes waiting in `plain` leave, if nothing else
    /// sends them first (`omitted_flush_ms`).
    omitted_flush_at_ms: Option<u64>,
}

impl PeerState {
    /// Whether it is a sidecar of this node's region.
    fn is_local_sidecar(&self) -> bool {
        !self.info.full && self.local
    }

    /// Whether it is a full node of this node's region.
    fn is_local_full_node(&self) -> bool {
        self.info.full && self.local
    }
}

#[derive(Clone, Copy, Debug)]
struct PushLag {
    lag_ms: u64,
    at_ms: u64,
}

/// The most a slow push path stretches a sync answer's grace: a write
/// its frames lost waits at most this long for anti-entropy.
pub const SYNC_GRACE_STRETCHED_MAX_MS: u64 = 10_000;

/// How a region's peers rank as its relay, best first: full nodes (a
/// sidecar cannot rebuild a document change for a key it does not hold),
/// then the lowest RTT (unmeasured last), then the lowest id.
type RelayRank = (bool, u64, NodeId);

fn relay_rank(p: &PeerState) -> RelayRank {
    (!p.info.full, p.rtt_ms.unwrap_or(u64::MAX), p.info.node)
}

/// How much newer than a write a register it had not seen must be stamped
/// for this node to send it back ([`Message::Repair`]): closer than this,
/// the two writes were most likely concurrent, and each writer gets the
/// other's by replication.
pub const REPAIR_STAMP_GAP_MS: u64 = 300;

/// Something to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The peer.
    pub to: NodeId,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Whether it crosses regions (for accounting).
    pub wan: bool,
    /// What to send.
    pub message: Message,
    /// How: on the peer's ordered stream, or as a request that expects a
    /// [`Message::SyncResponse`].
    pub request: bool,
}

/// Something the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `peer` has deltas of `origins` that its backlog no longer holds:
    /// fetch a full transfer from it.
    FullTransferNeeded {
        /// Whom to ask.
        peer: NodeId,
        /// The origins concerned.
        origins: Vec<NodeId>,
    },
    /// A peer acked one of this node's writes.
    Acked {
        /// The write's sequence number.
        seq: u64,
    },
    /// A peer answered an anti-entropy request: its watermark of this
    /// node's own writes.
    PeerWatermark {
        /// The peer.
        peer: NodeId,
        /// Its applied watermark of this node's writes.
        watermark: u64,
    },
}

/// Counters, for metrics and the benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicatorStats {
    /// Deltas refused because their origin would be one more than
    /// [`crate::watermarks::ORIGIN_COUNT_MAX`], or their sequence number is
    /// past [`crate::core::SEQ_PLAUSIBLE_MAX`] (a watermark pushed there
    /// would take every later write of the origin for a duplicate).
    pub origins_refused: u64,
    /// Deltas applied from peers.
    pub applied: u64,
    /// Deltas received that were already applied.
    pub duplicates: u64,
    /// Deltas that could not be applied (missing document base).
    pub unappliable: u64,
    /// Deltas dropped because a peer's queue was full.
    pub dropped: u64,
    /// Frames the transport refused (repaired by anti-entropy).
    pub refused_frames: u64,
    /// Sync hints sent to peers that lost deltas from this node.
    pub sync_hints: u64,
    /// Watermarks that jumped over a gap (repaired by a full transfer).
    pub watermark_jumps: u64,
    /// Anti-entropy answers cut at their bound (asked again at once).
    pub sync_truncated: u64,
    /// Writes resent through another relay.
    pub relay_resends: u64,
    /// Registers sent back to a writer whose write lost here to one it had
    /// not seen ([`Message::Repair`]).
    pub repairs_sent: u64,
    /// Registers merged from [`Message::Repair`]s: writes of this node
    /// that had lost elsewhere.
    pub repairs_merged: u64,
    /// Repairs not sent: the peer's were at a frame's bytes already.
    pub repairs_dropped: u64,
    /// Deltas applied without being stored: a sidecar that does not hold
    /// the key.
    pub not_stored: u64,
    /// Own writes sent to a region when its first peer came up, made
    /// while no peer of it was.
    pub unreached_resends: u64,
}

#[derive(Debug)]
struct RelaySend {
    relay: NodeId,
    region: String,
    delta: Arc<Delta>,
    deadline_ms: u64,
}

/// The replication state of one node.
pub struct Replicator {
    me: NodeId,
    region: String,
    config: ReplicatorConfig,
    peers: BTreeMap<NodeId, PeerState>,
    applied: Watermarks,
    backlog: Backlog,
    /// Own writes sent to a relay and not acked yet, by seq.
    relay_sends: BTreeMap<u64, Vec<RelaySend>>,
    /// `(deadline, seq)` of relay sends in the order they were made, so
    /// nondecreasing: the front is the next deadline once stale entries
    /// (acked or replaced) are skipped.
    relay_deadlines: VecDeque<(u64, u64)>,
    /// Peers with something queued, in id order: `poll_transmit` visits
    /// only these.
    ready: BTreeSet<NodeId>,
    /// Own writes: who acked them, with the region each was in then.
    acked_by: BTreeMap<u64, BTreeMap<NodeId, String>>,
    next_sync_ms: u64,
    /// The last peer asked, in this region and in others (round robin).
    sync_cursor_lan: Option<NodeId>,
    sync_cursor_wan: Option<NodeId>,
    /// Anti-entropy rounds so far: every `sync_wan_every_rounds`th goes
    /// to another region.
    sync_rounds: u64,
    /// Each peer's own last write, as its last sync request said.
    heads: BTreeMap<NodeId, u64>,
    /// Regions with no peer up, each with the last own write every peer
    /// of it could have had when its last peer went; a region not listed
    /// and never seen is unreached since `life_start_seq`.
    unreached_since: BTreeMap<String, u64>,
    /// The own head this life started at (what a resumed node persisted).
    life_start_seq: u64,
    /// Origins whose watermark jumped over a gap, not yet repaired.
    jumped: BTreeSet<NodeId>,
    requests: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: ReplicatorStats,
    budget_blocked: bool,
    /// Whether this node is a full node (it stores every key; a sidecar
    /// stores only what it holds, `fill.rs`).
    full: bool,
    /// As a full node: the keys each sidecar of this region holds.
    interest: SidecarInterest,
    /// As a sidecar: what the full nodes of this region have yet to hear.
    news: InterestNews,
    /// As a sidecar: full nodes of this region that came up and have yet
    /// to hear every key held here (the core lists them: it has the store).
    unannounced: BTreeSet<NodeId>,
    interest_stats: InterestStats,
    /// The last delta omitted for a sidecar, with its omitted form: one
    /// allocation for all the region's sidecars.
    last_omitted: Option<(Arc<Delta>, Arc<Delta>)>,
    /// The earliest `omitted_flush_at_ms` of any peer.
    next_omitted_flush_ms: Option<u64>,
    /// The peers of this node's region, in id order: whom a relayed delta
    /// goes to (a scan of every peer read 200 peers' states per delta).
    local_peers: BTreeSet<NodeId>,
    /// Regions of peers, in the order first seen: what a peer's
    /// `region_index` names (a slot no peer uses is taken again).
    regions: Vec<String>,
}

impl Replicator {
    /// The replicator of node `me` in `region`, a full node or a sidecar,
    /// with no peers yet.
    pub fn new(me: NodeId, region: String, full: bool, config: ReplicatorConfig, now_ms: u64) -> Replicator {
        let backlog = Backlog::new(config.backlog);
        let next_sync_ms = now_ms + config.sync_interval_ms;
        Replicator {
            me,
            region,
            config,
            peers: BTreeMap::new(),
            applied: Watermarks::default(),
            backlog,
            relay_sends: BTreeMap::new(),
            relay_deadlines: VecDeque::new(),
            ready: BTreeSet::new(),
            acked_by: BTreeMap::new(),
            next_sync_ms,
            sync_cursor_lan: None,
            sync_cursor_wan: None,
            sync_rounds: 0,
            heads: BTreeMap::new(),
            unreached_since: BTreeMap::new(),
            life_start_seq: 0,
            jumped: BTreeSet::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            stats: ReplicatorStats::default(),
            budget_blocked: false,
            full,
            interest: SidecarInterest::default(),
            news: InterestNews::default(),
            unannounced: BTreeSet::new(),
            interest_stats: InterestStats::default(),
            last_omitted: None,
            next_omitted_flush_ms: None,
            regions: Vec::new(),
            local_peers: BTreeSet::new(),
        }
    }

    /// The index of `region` in [`regions`](Self::regions), added when new
    /// in a slot no peer uses, if there is one: never more slots than
    /// peers and one.
    fn region_index(&mut self, region: &str) -> usize {
        if let Some(i) = self.regions.iter().position(|r| r == region) {
            return i;
        }
        if self.regions.len() > self.peers.len() {
            let used: BTreeSet<usize> = self.peers.values().map(|p| p.region_index).collect();
            if let Some(free) = (0..self.regions.len()).find(|i| !used.contains(i)) {
                self.regions[free] = region.to_string();
                return free;
            }
        }
        self.regions.push(region.to_string());
        self.regions.len() - 1
    }

    /// Takes back what a restarted node persisted (`resume.rs`): the
    /// watermarks of its checkpoint, raised by every delta of its
    /// backlog, which is held again to answer anti-entropy; its own
    /// origin's watermark is its last sequence number.
    pub fn resume(&mut self, state: &crate::resume::ResumeState, now_ms: u64) {
        for &(origin, seq) in &state.watermarks {
            if seq <= crate::core::SEQ_PLAUSIBLE_MAX && (self.applied.has_room_for(origin)) {
                self.applied.raise_to(origin, seq);
            }
        }
        for delta in &state.backlog {
            if delta.seq > crate::core::SEQ_PLAUSIBLE_MAX || !self.applied.has_room_for(delta.origin) {
                continue;
            }
            self.applied.insert(delta.origin, delta.seq);
            if self.applied.take_jumped(delta.origin) {
                self.jumped.insert(delta.origin);
            }
            // Received before the restart: older than anti-entropy's grace,
            // so the first sync answer carries them (they may be writes
            // of this node nobody else got).
            let received_ms = now_ms.saturating_sub(self.config.sync_grace_ms);
            self.backlog.push(delta.clone(), delta_size_bytes(delta), received_ms);
        }
        self.applied.raise_to(self.me, state.own_seq);
        self.life_start_seq = state.own_seq;
    }

    /// The deltas the backlog holds, in push order per origin: what a
    /// node's data dir holds of it (the simulator's model of the disk).
    pub fn backlog_deltas(&self) -> Vec<Arc<Delta>> {
        self.backlog.all()
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicatorStats {
        &self.stats
    }

    /// Sidecar interest counters (`interest.rs`).
    pub fn interest_stats(&self) -> &InterestStats {
        &self.interest_stats
    }

    /// As a sidecar: `count` held keys were dropped for writes of them
    /// that came without their body.
    pub fn held_dropped(&mut self, count: u64) {
        self.interest_stats.omitted_held_dropped += count;
    }

    /// As a full node: how many keys it knows `sidecar` holds.
    pub fn interest_tracked(&self, sidecar: NodeId) -> usize {
        self.interest.tracked_count(sidecar)
    }

    /// Whether `node` is a sidecar of this node's region, this node a
    /// full node: whom deltas may go to without their body.
    fn is_own_sidecar(&self, node: NodeId) -> bool {
        self.full && self.peers.get(&node).is_some_and(PeerState::is_local_sidecar)
    }

    /// Whether `node` is a full node of this node's region, this node a
    /// sidecar: whom this node tells what it holds.
    fn is_own_full_node(&self, node: NodeId) -> bool {
        !self.full && self.peers.get(&node).is_some_and(PeerState::is_local_full_node)
    }

    /// As a full node: `sidecar` asked it for a fill of `key` (it holds
    /// the key from the answer on).
    pub fn sidecar_filling(&mut self, sidecar: NodeId, key: &Key) {
        if self.is_own_sidecar(sidecar) {
            self.interest.held(sidecar, key, &mut self.interest_stats);
        }
    }

    /// As a sidecar: it holds `key` now (a fill answered by `asked`): the
    /// region's other full nodes are told.
    pub fn now_holds(&mut self, key: &Key, asked: NodeId) {
        let others: Vec<NodeId> =
            self.peers.keys().copied().filter(|&n| n != asked && self.is_own_full_node(n)).collect();
        for node in others {
            self.news.held(node, key.clone(), &mut self.interest_stats);
        }
    }

    /// As a sidecar: a full node that came up and has yet to hear every
    /// key held here, taken out.
    pub fn take_unannounced(&mut self) -> Option<NodeId> {
        self.unannounced.pop_first()
    }

    /// As a sidecar: tells full node `node` that it holds `keys`.
    pub fn announce(&mut self, node: NodeId, keys: Vec<Key>) {
        if !self.is_own_full_node(node) {
            return;
        }
        for key in keys {
            self.news.held(node, key, &mut self.interest_stats);
        }
    }

    /// The form of `delta` that goes to peer `node`: with its body left
    /// out when `node` is a sidecar of this full node's region that does
    /// not hold the key.
    fn for_peer(&mut self, node: NodeId, delta: Arc<Delta>) -> Arc<Delta> {
        let own_sidecar = self.is_own_sidecar(node);
        form_for(own_sidecar, node, delta, &self.interest, &mut self.interest_stats, &mut self.last_omitted)
    }

    /// Applied watermark per origin.
    pub fn watermarks(&self) -> Vec<(NodeId, u64)> {
        self.applied.summary()
    }

    /// The live peers, with their measured RTT.
    pub fn peers(&self) -> Vec<(PeerInfo, Option<u64>)> {
        self.peers.values().map(|p| (p.info.clone(), p.rtt_ms)).collect()
    }

    /// A peer is up (or changed address or region).
    pub fn peer_up(&mut self, info: PeerInfo, now_ms: u64) {
        if info.node == self.me {
            return;
        }
        let local = info.region == self.region;
        let region_index = self.region_index(&info.region);
        if local {
            self.local_peers.insert(info.node);
        } else {
            self.local_peers.remove(&info.node);
        }
        match self.peers.get_mut(&info.node) {
            Some(p) => {
                p.info = info;
                p.local = local;
                p.region_index = region_index;
            }
            None => {
                let region = info.region.clone();
                let node = info.node;
                let reached = self.peers.values().any(|p| p.info.region == region);
                self.peers.insert(
                    info.node,
                    PeerState {
                        info,
                        local,
                        region_index,
                        rtt_ms: None,
                        plain: VecDeque::new(),
                        plain_ack: false,
                        relay: VecDeque::new(),
                        acks: Vec::new(),
                        repairs: Vec::new(),
                        repair_bytes: 0,
                        dropped: false,
                        hinted: false,
                        push_lag: None,
                        omitted_flush_at_ms: None,
                    },
                );
                if region == self.region {
                    // A new life starts from nothing on either side.
                    self.interest.forget(node);
                    if self.is_own_full_node(node) {
                        self.unannounced.insert(node);
                    }
                }
                if !reached {
                    self.region_reached(&region, now_ms);
                }
            }
        }
    }

    /// The first peer of `region` is up: the own writes made while no
    /// peer of it was went to nobody there, and no other node has them to
    /// answer anti-entropy (whose round robin comes to this node from any
    /// one peer only every few minutes at 200 nodes). They go now, through
    /// a relay as every write does, so each crosses to the region once.
    fn region_reached(&mut self, region: &str, now_ms: u64) {
        let since = self.unreached_since.remove(region).unwrap_or(self.life_start_seq);
        if since >= self.head() {
            return;
        }
        for delta in self.backlog.held_after(self.me, since, u64::MAX) {
            self.stats.unreached_resends += 1;
            self.resend_via_relay(delta.seq, region, delta, now_ms);
        }
    }

    /// A peer is down: what was queued for it is dropped (anti-entropy
    /// covers it when it returns) and writes it was relaying go through
    /// another relay of its region.
    pub fn peer_down(&mut self, node: NodeId, now_ms: u64) {
        let Some(gone) = self.peers.remove(&node) else { return };
        self.local_peers.remove(&node);
        self.interest.forget(node);
        self.news.forget(node);
        self.unannounced.remove(&node);
        let region = gone.info.region;
        if !self.peers.values().any(|p| p.info.region == region) {
            // Own writes still queued for it, or sent through it and not
            // acked, may never have reached the region.
            let queued = gone.plain.iter().chain(&gone.relay).filter(|d| d.origin == self.me).map(|d| d.seq);
            let unacked = self
                .relay_sends
                .iter()
                .filter(|(_, sends)| sends.iter().any(|s| s.region == region))
                .map(|(seq, _)| *seq);
            let first_unsure = queued.chain(unacked).min().unwrap_or(u64::MAX);
            let since = self.head().min(first_unsure.saturating_sub(1));
            let since = self.unreached_since.get(&region).map_or(since, |&s| s.min(since));
            self.unreached_since.insert(region, since);
        }
        let lost: Vec<(u64, String, Arc<Delta>)> = self
            .relay_sends
            .iter_mut()
            .flat_map(|(seq, sends)| {
                let (gone, kept): (Vec<_>, Vec<_>) = sends.drain(..).partition(|s| s.relay == node);
                *sends = kept;
                gone.into_iter().map(move |s| (*seq, s.region, s.delta))
            })
            .collect();
        self.relay_sends.retain(|_, sends| !sends.is_empty());
        for (seq, region, delta) in lost {
            self.stats.relay_resends += 1;
            self.resend_via_relay(seq, &region, delta, now_ms);
        }
    }

    /// The measured round-trip time to a peer.
    pub fn set_rtt(&mut self, node: NodeId, rtt_ms: u64) {
        if let Some(p) = self.peers.get_mut(&node) {
            p.rtt_ms = Some(rtt_ms);
        }
    }

    /// How many of `node`'s writes this node has not applied, as of the
    /// last anti-entropy request from `node` (which carries its own head).
    pub fn lag(&self, node: NodeId) -> Option<u64> {
        self.heads.get(&node).map(|head| head.saturating_sub(self.applied.watermark(node)))
    }

    /// Who has acked this node's write `seq`, with their regions; `None`
    /// when its acks are not tracked.
    pub fn ackers(&self, seq: u64) -> Option<&BTreeMap<NodeId, String>> {
        self.acked_by.get(&seq)
    }

    /// Stops tracking acks of write `seq` (its waiter is done).
    pub fn forget_acks(&mut self, seq: u64) {
        self.acked_by.remove(&seq);
    }

    /// A write accepted here: fan it out. `full` is the same write with the
    /// whole register as its body, kept in the backlog so that anti-entropy
    /// answers always apply, even where the document base is missing.
    /// `region_acks` asks this region's peers to ack it and tracks who did
    /// (for `region` and `all` durability); relays always ack (for resends).
    pub fn local_write(
        &mut self,
        delta: Arc<Delta>,
        full: Arc<Delta>,
        encoded_bytes: usize,
        region_acks: bool,
        now_ms: u64,
    ) {
        debug_assert_eq!(delta.origin, self.me);
        self.applied.insert(delta.origin, delta.seq);
        self.backlog.push(full, encoded_bytes, now_ms);
        let seq = delta.seq;
        // Acks are tracked only for writes that wait on them.
        if region_acks {
            if self.acked_by.len() >= self.config.tracked_write_count_max {
                self.acked_by.pop_first();
            }
            self.acked_by.insert(seq, BTreeMap::new());
        }
        // One pass over the peers: this region's, and the best relay of
        // each other region (a scan per region cost 10 scans of 200 peers
        // per write in the 10 x 20 simulation).
        let mut own = Vec::new();
        // The best relay of each region, by region index, and the regions
        // in the order their first peer comes.
        let mut best: Vec<Option<RelayRank>> = vec![None; self.regions.len()];
        let mut order = Vec::new();
        for p in self.peers.values() {
            if p.local {
                own.push(p.info.node);
                continue;
            }
            let rank = relay_rank(p);
            let slot = &mut best[p.region_index];
            match slot {
                Some(b) => *b = (*b).min(rank),
                None => {
                    *slot = Some(rank);
                    order.push(p.region_index);
                }
            }
        }
        let relays: Vec<(String, NodeId)> =
            order.into_iter().filter_map(|i| best[i].map(|rank| (self.regions[i].clone(), rank.2))).collect();
        for node in own {
            self.enqueue(node, delta.clone(), false, region_acks, now_ms);
        }
        for (region, relay) in relays {
            self.send_via_relay(seq, region, relay, delta.clone(), now_ms);
        }
    }

    /// The best relay of `region`: lowest RTT, then lowest id; peers with no
    /// measurement yet come after measured ones.
    fn relay_for(&self, region: &str, except: &BTreeSet<NodeId>) -> Option<NodeId> {
        self.peers
            .values()
            .filter(|p| p.info.region == region && !except.contains(&p.info.node))
            .min_by_key(|p| relay_rank(p))
            .map(|p| p.info.node)
    }

    fn resend_via_relay(&mut self, seq: u64, region: &str, delta: Arc<Delta>, now_ms: u64) {
        let Some(relay) = self.relay_for(region, &BTreeSet::new()) else { return };
        self.send_via_relay(seq, region.to_string(), relay, delta, now_ms);
    }

    fn send_via_relay(&mut self, seq: u64, region: String, relay: NodeId, delta: Arc<Delta>, now_ms: u64) {
        self.enqueue(relay, delta.clone(), true, true, now_ms);
        let deadline_ms = now_ms + self.config.relay_ack_timeout_ms;
        self.relay_sends.entry(seq).or_default().push(RelaySend { relay, region, delta, deadline_ms });
        self.relay_deadlines.push_back((deadline_ms, seq));
    }

    fn enqueue(&mut self, node: NodeId, delta: Arc<Delta>, relay: bool, ack: bool, now_ms: u64) {
        let limit = self.config.peer_queue_count_max;
        // One lookup of the peer per delta queued: a relay queues each
        // write for every peer of its region.
        let Some(peer) = self.peers.get_mut(&node) else { return };
        let own_sidecar = self.full && peer.is_local_sidecar();
        let delta = form_for(
            own_sidecar,
            node,
            delta,
            &self.interest,
            &mut self.interest_stats,
            &mut self.last_omitted,
        );
        if peer.plain.len() + peer.relay.len() >= limit {
            self.stats.dropped += 1;
            peer.dropped = true;
            self.ready.insert(node);
            return;
        }
        if relay {
            peer.relay.push_back(delta);
            self.ready.insert(node);
        } else {
            let omitted = matches!(delta.body, DeltaBody::Omitted);
            peer.plain.push_back(delta);
            peer.plain_ack |= ack;
            if !omitted {
                self.ready.insert(node);
            } else if peer.omitted_flush_at_ms.is_none() && !self.ready.contains(&node) {
                let at = now_ms.saturating_add(self.config.omitted_flush_ms);
                peer.omitted_flush_at_ms = Some(at);
                self.next_omitted_flush_ms = Some(self.next_omitted_flush_ms.map_or(at, |t| t.min(at)));
            }
        }
    }

    /// Peers whose body-less writes have waited `omitted_flush_ms`: they
    /// leave now.
    fn flush_omitted(&mut self, now_ms: u64) {
        if self.next_omitted_flush_ms.is_none_or(|at| at > now_ms) {
            return;
        }
        let mut next = None;
        for (node, peer) in &mut self.peers {
            match peer.omitted_flush_at_ms {
                Some(at) if at <= now_ms => {
                    peer.omitted_flush_at_ms = None;
                    self.ready.insert(*node);
                }
                Some(at) => next = Some(next.map_or(at, |t: u64| t.min(at))),
                None => {}
            }
        }
        self.next_omitted_flush_ms = next;
    }

    /// A message from peer `from`. `apply` merges a delta into the store and
    /// returns the register after it, or `None` when it cannot be applied
    /// (its document base is missing here). Returns the answer to send back
    /// for a request.
    pub fn handle_message(
        &mut self,
        from: NodeId,
        message: Message,
        now_ms: u64,
        apply: &mut dyn FnMut(&Delta) -> ApplyOutcome,
    ) -> Option<Message> {
        match message {
            Message::Deltas { relay, ack, deltas, .. } => {
                let mut acks = Vec::with_capacity(deltas.len());
                let mut fresh = Vec::new();
                let mut repairs = Vec::new();
                let from_own_sidecar = self.is_own_sidecar(from);
                let from_own_full_node = self.is_own_full_node(from);
                for delta in deltas {
                    if from_own_sidecar && delta.origin == from {
                        // Its own write: it holds the key.
                        self.interest.held(from, &delta.key, &mut self.interest_stats);
                    }
                    let outcome = self.apply_one(&delta, now_ms, apply);
                    if from_own_full_node {
                        self.tell_if_not_held(from, &delta, &outcome);
                    }
                    match outcome {
                        Applied::New(held) => {
                            // Straight from its writer, and lost here to a
                            // register the writer had not seen: the writer
                            // would keep its own write for good, since its
                            // watermarks say it has the winner's.
                            if let (true, DeltaBody::Register(written), Some(held)) =
                                (delta.origin == from, &delta.body, held)
                            {
                                // A winner stamped within a second of the
                                // write is most likely a concurrent write
                                // still on its way to the writer, which
                                // replication brings anyway.
                                let gap_ms =
                                    held.meta.stamp.hlc.ms().saturating_sub(written.meta.stamp.hlc.ms());
                                let lost = held.meta.stamp != written.meta.stamp
                                    && gap_ms > REPAIR_STAMP_GAP_MS
                                    && !written.meta.vv.dominates(&held.meta.vv);
                                if lost {
                                    repairs.push((delta.key.clone(), held));
                                }
                            }
                            acks.push((delta.origin, delta.seq));
                            fresh.push(delta);
                        }
                        Applied::Duplicate => acks.push((delta.origin, delta.seq)),
                        Applied::Failed => {}
                    }
                }
                if relay {
                    let targets: Vec<NodeId> =
                        self.local_peers.iter().copied().filter(|&n| n != from).collect();
                    // Delta by delta, so that its omitted form is made
                    // once for all the region's sidecars.
                    for delta in &fresh {
                        for &node in &targets {
                            if delta.origin != node {
                                self.enqueue(node, delta.clone(), false, false, now_ms);
                            }
                        }
                    }
                }
                if ack {
                    if let Some(peer) = self.peers.get_mut(&from) {
                        peer.acks.extend(acks);
                        self.ready.insert(from);
                    }
                }
                if let (false, Some(peer)) = (repairs.is_empty(), self.peers.get_mut(&from)) {
                    for (key, register) in repairs {
                        let bytes = key.size_bytes() + register.size_bytes();
                        if peer.repair_bytes + bytes > self.config.frame_delta_bytes_max {
                            // The key's next write brings it up again.
                            self.stats.repairs_dropped += 1;
                            continue;
                        }
                        peer.repair_bytes += bytes;
                        peer.repairs.push((key, register));
                        self.stats.repairs_sent += 1;
                    }
                    self.ready.insert(from);
                }
                None
            }
            Message::Acks { applied, .. } => {
                // Own writes are made in seq order: the highest acked is
                // the latest written, the path's delivery time now.
                let written_at = applied
                    .iter()
                    .filter(|(origin, _)| *origin == self.me)
                    .map(|&(_, seq)| seq)
                    .max()
                    .and_then(|seq| self.backlog.received_at(self.me, seq));
                if let (Some(written_at), Some(peer)) = (written_at, self.peers.get_mut(&from)) {
                    peer.push_lag =
                        Some(PushLag { lag_ms: now_ms.saturating_sub(written_at), at_ms: now_ms });
                }
                for (origin, seq) in applied {
                    if origin != self.me {
                        continue;
                    }
                    if let Some(sends) = self.relay_sends.get_mut(&seq) {
                        sends.retain(|s| s.relay != from);
                        if sends.is_empty() {
                            self.relay_sends.remove(&seq);
                        }
                    }
                    // A sidecar's ack does not say it holds the write (it
                    // acks what it applied without storing it too): it
                    // counts for relaying, not for durability.
                    let region = self.peers.get(&from).filter(|p| p.info.full).map(|p| p.info.region.clone());
                    if let (Some(ackers), Some(region)) = (self.acked_by.get_mut(&seq), region) {
                        if ackers.insert(from, region).is_none() {
                            self.events.push_back(Event::Acked { seq });
                        }
                    }
                }
                None
            }
            Message::SyncRequest { watermarks, .. } => {
                if let Some(&(_, head)) = watermarks.iter().find(|(n, _)| *n == from) {
                    self.heads.insert(from, head);
                }
                Some(self.answer_sync(from, &watermarks, now_ms))
            }
            Message::SyncHint { .. } => {
                // It dropped deltas for us: ask it now rather than wait
                // for the round robin to come to it.
                self.push_sync_request(from);
                None
            }
            // Full transfers are the core's (`transfer.rs`).
            Message::FullTransferRequest { .. }
            | Message::FullTransferChunk { .. }
            | Message::Repair { .. }
            | Message::FillRequest { .. }
            | Message::FillAnswer { .. }
            | Message::Strong { .. } => None,
            Message::Interest { held, not_held, .. } => {
                if self.is_own_sidecar(from) {
                    for key in &held {
                        self.interest.held(from, key, &mut self.interest_stats);
                    }
                    for key in &not_held {
                        self.interest.not_held(from, key);
                    }
                }
                None
            }
            Message::SyncResponse { deltas, beyond_backlog, truncated, requester_watermark } => {
                let from_own_full_node = self.is_own_full_node(from);
                for delta in deltas {
                    let outcome = self.apply_one(&delta, now_ms, apply);
                    if from_own_full_node {
                        self.tell_if_not_held(from, &delta, &outcome);
                    }
                }
                self.events.push_back(Event::PeerWatermark { peer: from, watermark: requester_watermark });
                if !beyond_backlog.is_empty() {
                    self.events.push_back(Event::FullTransferNeeded { peer: from, origins: beyond_backlog });
                }
                if truncated {
                    self.stats.sync_truncated += 1;
                    self.push_sync_request(from);
                }
                None
            }
        }
    }

    /// As a sidecar: a whole delta from full node `from` was not stored
    /// here, so `from` need not send the key's next ones whole.
    fn tell_if_not_held(&mut self, from: NodeId, delta: &Delta, outcome: &Applied) {
        if matches!(outcome, Applied::New(None)) && !matches!(delta.body, DeltaBody::Omitted) {
            self.news.not_held(from, delta.key.clone(), &mut self.interest_stats);
        }
    }

    /// Counts registers merged from a [`Message::Repair`].
    pub fn repairs_merged(&mut self, count: usize) {
        self.stats.repairs_merged += count as u64;
    }

    fn apply_one(
        &mut self,
        delta: &Arc<Delta>,
        now_ms: u64,
        apply: &mut dyn FnMut(&Delta) -> ApplyOutcome,
    ) -> Applied {
        let omitted = matches!(delta.body, DeltaBody::Omitted);
        if omitted && self.full {
            // A full node stores every key: the write stays missing here
            // until its whole delta comes (anti-entropy asks another peer).
            self.interest_stats.omitted_refused += 1;
            return Applied::Failed;
        }
        match self.applied.admit(delta.origin, delta.seq) {
            Admission::Duplicate => {
                self.stats.duplicates += 1;
                return Applied::Duplicate;
            }
            Admission::NoRoom => {
                self.stats.origins_refused += 1;
                return Applied::Failed;
            }
            Admission::New if delta.seq > crate::core::SEQ_PLAUSIBLE_MAX => {
                self.stats.origins_refused += 1;
                return Applied::Failed;
            }
            Admission::New => {}
        }
        let register = match apply(delta) {
            ApplyOutcome::Stored(register) => Some(register),
            ApplyOutcome::NotStored => {
                self.stats.not_stored += 1;
                if omitted {
                    self.interest_stats.omitted_applied += 1;
                }
                None
            }
            ApplyOutcome::Unappliable => {
                self.stats.unappliable += 1;
                return Applied::Failed;
            }
        };
        if self.applied.record(delta.origin, delta.seq) {
            self.stats.watermark_jumps += 1;
            self.jumped.insert(delta.origin);
        }
        self.stats.applied += 1;
        // A whole register is kept as it arrived, even when it merged into
        // something else here: forwarding it later is as good (a receiver
        // merges it into what it holds), and the one delta every node
        // received is then shared, not copied per node. Document changes
        // need their base, so the register they made is kept instead (a
        // sidecar that did not store the key keeps the changes: a peer
        // holding the base applies them, and one without it asks a full
        // node, whose backlog has the register).
        let full = match (&delta.body, &register) {
            (geocache_crdt::DeltaBody::DocChanges(_), Some(register)) => Arc::new(Delta {
                origin: delta.origin,
                seq: delta.seq,
                key: delta.key.clone(),
                body: geocache_crdt::DeltaBody::Register(register.clone()),
            }),
            _ => delta.clone(),
        };
        let bytes = delta_size_bytes(&full);
        self.backlog.push(full, bytes, now_ms);
        Applied::New(register)
    }

    fn answer_sync(&mut self, from: NodeId, theirs: &[(NodeId, u64)], now_ms: u64) -> Message {
        let hinted = self.peers.get_mut(&from).is_some_and(|p| std::mem::take(&mut p.hinted));
        let received_by_ms =
            if hinted { now_ms } else { now_ms.saturating_sub(self.sync_grace_for(from, now_ms)) };
        let theirs: BTreeMap<NodeId, u64> = theirs.iter().copied().collect();
        let mut origins: BTreeSet<NodeId> = self.applied.summary().into_iter().map(|(n, _)| n).collect();
        origins.extend(self.backlog.origins());
        let mut deltas = Vec::new();
        let mut bytes = 0;
        let mut beyond_backlog = Vec::new();
        let mut truncated = false;
        for origin in origins {
            let their_wm = theirs.get(&origin).copied().unwrap_or(0);
            let mine = match self.backlog.since(origin, their_wm, received_by_ms) {
                Some(list) => list,
                None if self.applied.watermark(origin) > their_wm => {
                    beyond_backlog.push(origin);
                    continue;
                }
                None => self.backlog.held_after(origin, their_wm, received_by_ms),
            };
            for d in mine {
                let size = delta_size_bytes(&d);
                let full = deltas.len() >= self.config.sync_delta_count_max
                    || (!deltas.is_empty() && bytes + size > self.config.sync_delta_bytes_max);
                if full {
                    truncated = true;
                    break;
                }
                bytes += size;
                deltas.push(d);
            }
        }
        if self.is_own_sidecar(from) {
            deltas = deltas.into_iter().map(|d| self.for_peer(from, d)).collect();
        }
        let requester_watermark = self.applied.watermark(from);
        Message::SyncResponse { deltas, beyond_backlog, truncated, requester_watermark }
    }

    /// How recent a delta may be and still be left out of an answer to
    /// `peer`: `sync_grace_ms`, or twice the push path's delivery time to
    /// it when that is longer (at most [`SYNC_GRACE_STRETCHED_MAX_MS`]),
    /// measured by an ack no older than the stretched grace. A push path
    /// slower than the grace (a receiver short of CPU, a thin link, a
    /// burst) would otherwise have every delta still on it sent again in
    /// each answer; a debug build 40 ms from its peer took 3.4x the delta
    /// bytes in answers and 28 s to take a burst of 10,000 writes.
    fn sync_grace_for(&self, peer: NodeId, now_ms: u64) -> u64 {
        let base = self.config.sync_grace_ms;
        let Some(PushLag { lag_ms, at_ms }) = self.peers.get(&peer).and_then(|p| p.push_lag) else {
            return base;
        };
        let stretched = lag_ms.saturating_mul(2).min(SYNC_GRACE_STRETCHED_MAX_MS);
        if stretched > base && now_ms.saturating_sub(at_ms) <= stretched {
            stretched
        } else {
            base
        }
    }

    /// A full transfer from a peer covered `origins` up to the peer's
    /// watermarks: raise ours so anti-entropy stops asking.
    pub fn full_transfer_done(&mut self, watermarks: &[(NodeId, u64)]) {
        for &(origin, wm) in watermarks {
            self.applied.raise_to(origin, wm);
        }
    }

    /// Runs what is due: backlog eviction, relay ack time-outs,
    /// anti-entropy.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.backlog.evict(now_ms);
        self.flush_omitted(now_ms);
        let mut due_seqs = BTreeSet::new();
        while let Some(&(deadline, seq)) = self.relay_deadlines.front() {
            if deadline > now_ms {
                break;
            }
            self.relay_deadlines.pop_front();
            due_seqs.insert(seq);
        }
        let overdue: Vec<(u64, NodeId)> = due_seqs
            .iter()
            .filter_map(|seq| self.relay_sends.get(seq).map(|sends| (*seq, sends)))
            .flat_map(|(seq, sends)| {
                sends.iter().filter(|s| s.deadline_ms <= now_ms).map(move |s| (seq, s.relay))
            })
            .collect();
        for (seq, relay) in overdue {
            let Some(sends) = self.relay_sends.get_mut(&seq) else { continue };
            let Some(pos) = sends.iter().position(|s| s.relay == relay && s.deadline_ms <= now_ms) else {
                continue;
            };
            let send = sends.remove(pos);
            let except: BTreeSet<NodeId> = [relay].into();
            if let Some(next) = self.relay_for(&send.region, &except) {
                self.stats.relay_resends += 1;
                self.enqueue(next, send.delta.clone(), true, true, now_ms);
                let deadline_ms = now_ms + self.config.relay_ack_timeout_ms;
                self.relay_sends.entry(seq).or_default().push(RelaySend {
                    relay: next,
                    region: send.region,
                    delta: send.delta,
                    deadline_ms,
                });
                self.relay_deadlines.push_back((deadline_ms, seq));
            }
            // With no other relay, the write waits for anti-entropy.
            // One lookup: a `retain` per overdue send made a burst quadratic.
            if self.relay_sends.get(&seq).is_some_and(Vec::is_empty) {
                self.relay_sends.remove(&seq);
            }
        }
        if now_ms >= self.next_sync_ms {
            self.next_sync_ms = now_ms + self.config.sync_interval_ms;
            if let Some(peer) = self.next_sync_peer() {
                self.push_sync_request(peer);
            }
        }
        // A jump skipped writes no backlog will answer for: a full
        // transfer from a peer that has them.
        if !self.jumped.is_empty() {
            if let Some(peer) = self.next_sync_peer() {
                let origins: Vec<NodeId> = std::mem::take(&mut self.jumped).into_iter().collect();
                self.events.push_back(Event::FullTransferNeeded { peer, origins });
            }
        }
    }

    /// Asks `peer` for what this node lacks, unless a request to it is
    /// already waiting to leave.
    pub fn push_sync_request(&mut self, peer: NodeId) {
        let Some(info) = self.peers.get(&peer).map(|p| p.info.clone()) else { return };
        let queued =
            self.requests.iter().any(|t| t.to == peer && matches!(t.message, Message::SyncRequest { .. }));
        if queued {
            return;
        }
        self.requests.push_back(Transmit {
            to: peer,
            addr: info.addr,
            wan: info.region != self.region,
            message: Message::SyncRequest { from: self.me, watermarks: self.applied.summary() },
            request: true,
        });
    }

    /// The transport refused a frame for `peer` (or lost it): tell it to
    /// sync with this node, which repairs what the frame carried.
    pub fn frame_refused(&mut self, peer: NodeId) {
        self.stats.refused_frames += 1;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.dropped = true;
            self.ready.insert(peer);
        }
    }

    /// Sends `peer` this node's own writes after `after_seq` from the
    /// backlog (a draining node filling what a peer lacks).
    /// `relay` asks a peer of another region to pass them on in its own.
    pub fn push_own_since(&mut self, peer: NodeId, after_seq: u64, relay: bool, now_ms: u64) {
        let own = self.backlog.held_after(self.me, after_seq, u64::MAX);
        for delta in own {
            self.enqueue(peer, delta, relay, relay, now_ms);
        }
    }

    /// The peer this node sends `region`'s writes through now.
    pub fn relay_of(&self, region: &str) -> Option<NodeId> {
        self.relay_for(region, &BTreeSet::new())
    }

    /// This node's own last write.
    pub fn head(&self) -> u64 {
        self.applied.watermark(self.me)
    }

    /// Deltas and acks still queued for peers.
    pub fn queued_count(&self) -> usize {
        self.peers.values().map(|p| p.plain.len() + p.relay.len() + p.acks.len()).sum::<usize>()
            + self.requests.len()
    }

    /// Own writes sent through a relay that has not acked them yet.
    pub fn unacked_relay_count(&self) -> usize {
        self.relay_sends.len()
    }

    /// Whether `(origin, seq)` is applied here.
    pub fn has_applied(&self, origin: NodeId, seq: u64) -> bool {
        self.applied.contains(origin, seq)
    }

    /// The measured round trip to `node`, ms.
    pub fn rtt_of(&self, node: NodeId) -> Option<u64> {
        self.peers.get(&node).and_then(|p| p.rtt_ms)
    }

    /// The contiguous watermark of `origin` here.
    pub fn watermark(&self, origin: NodeId) -> u64 {
        self.applied.watermark(origin)
    }

    /// Every delta of `origin` after `after_seq` this node applied, from
    /// the backlog; `None` when the backlog lacks one (evicted, or raised
    /// past by a full transfer).
    pub fn backlog_after(&self, origin: NodeId, after_seq: u64) -> Option<Vec<Arc<Delta>>> {
        let held = self.backlog.reaching_after(origin, after_seq)?;
        (held.len() as u64 == self.applied.count_after(origin, after_seq)).then_some(held)
    }

    /// Whether every write of `origin` up to `seq` is applied here.
    pub fn has_applied_through(&self, origin: NodeId, seq: u64) -> bool {
        seq == 0 || self.applied.watermark(origin) >= seq
    }

    /// The highest write applied here of each origin, gaps or not: what a
    /// full node must have applied to answer this node's fill.
    pub fn highest_applied(&self) -> Vec<(NodeId, u64)> {
        self.applied.highest()
    }

    /// Forgets what is kept per origin for `origin`: no member has been it
    /// for longer than the retention.
    pub fn forget_origin(&mut self, origin: NodeId) {
        self.applied.forget(origin);
        self.heads.remove(&origin);
    }

    /// The next peer to ask: round robin in id order over the peers of
    /// this node's region, and every `sync_wan_every_rounds`th round over
    /// the full nodes of other regions (any of their peers while no full
    /// node is up; either set, when the other is empty).
    fn next_sync_peer(&mut self) -> Option<NodeId> {
        self.sync_rounds += 1;
        let every = u64::from(self.config.sync_wan_every_rounds.max(1));
        let wan_round = self.sync_rounds.is_multiple_of(every);
        self.next_sync_peer_in(wan_round).or_else(|| self.next_sync_peer_in(!wan_round))
    }

    fn next_sync_peer_in(&mut self, wan: bool) -> Option<NodeId> {
        // Across regions, full nodes only while one is up: a sidecar there
        // answers with what it holds and the rest without bodies, which
        // no full node can apply, and its region's full nodes have all of
        // it. With 18 sidecars to 2 full nodes a region, nine rounds in ten
        // were spent on sidecars, and a write every full node of a region
        // missed (its origin gone, its relay's frame lost) outlived the
        // backlogs that could answer for it (sim sidecars seed 27).
        let full_only = wan && self.peers.values().any(|p| !p.local && p.info.full);
        let in_set = |p: &PeerState| p.local != wan && (p.info.full || !full_only);
        let cursor = if wan { self.sync_cursor_wan } else { self.sync_cursor_lan };
        let after = cursor.map_or(NodeId(0), |c| NodeId(c.0.saturating_add(1)));
        let next = self
            .peers
            .range(after..)
            .find(|(_, p)| in_set(p))
            .or_else(|| self.peers.iter().find(|(_, p)| in_set(p)))
            .map(|(n, _)| *n)?;
        if wan {
            self.sync_cursor_wan = Some(next);
        } else {
            self.sync_cursor_lan = Some(next);
        }
        Some(next)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&mut self) -> u64 {
        while let Some(&(deadline, seq)) = self.relay_deadlines.front() {
            let pending =
                self.relay_sends.get(&seq).is_some_and(|v| v.iter().any(|s| s.deadline_ms == deadline));
            if pending {
                return self.next_sync_ms.min(deadline).min(self.next_omitted_flush_ms.unwrap_or(u64::MAX));
            }
            self.relay_deadlines.pop_front();
        }
        self.next_sync_ms.min(self.next_omitted_flush_ms.unwrap_or(u64::MAX))
    }

    /// The next message to send. Everything queued for a peer leaves in one
    /// frame (up to `frame_delta_count_max`): no timer delays an idle link, and
    /// writes that arrive while the driver is busy coalesce.
    ///
    /// A frame of deltas is no larger than `bytes_budget`, what the
    /// transport can take now: with less room than the next delta needs,
    /// deltas wait (their queue is bounded; past it they are dropped and
    /// the peer told to sync).
    pub fn poll_transmit(&mut self, bytes_budget: usize) -> Option<Transmit> {
        self.budget_blocked = false;
        if let Some(t) = self.requests.pop_front() {
            return Some(t);
        }
        while let Some((node, held, not_held)) = self.news.take_message() {
            let Some(peer) = self.peers.get(&node) else { continue };
            return Some(Transmit {
                to: node,
                addr: peer.info.addr,
                wan: false,
                message: Message::Interest { from: self.me, held, not_held },
                request: false,
            });
        }
        let max = self.config.frame_delta_count_max;
        let bytes_max = self.config.frame_delta_bytes_max.min(bytes_budget);
        while let Some(&node) = self.ready.first() {
            let Some(peer) = self.peers.get_mut(&node) else {
                self.ready.pop_first();
                continue;
            };
            let wan = !peer.local;
            let (to, addr) = (peer.info.node, peer.info.addr);
            let fits =
                |q: &VecDeque<Arc<Delta>>| q.front().is_some_and(|d| delta_size_bytes(d) <= bytes_budget);
            let message = if !peer.acks.is_empty() {
                Message::Acks { from: self.me, applied: std::mem::take(&mut peer.acks) }
            } else if !peer.repairs.is_empty() && peer.repair_bytes <= bytes_budget {
                peer.repair_bytes = 0;
                Message::Repair { from: self.me, registers: std::mem::take(&mut peer.repairs) }
            } else if peer.dropped {
                peer.dropped = false;
                peer.hinted = true;
                self.stats.sync_hints += 1;
                Message::SyncHint { from: self.me }
            } else if !peer.relay.is_empty() && fits(&peer.relay) {
                let n = batch_len(&peer.relay, max, bytes_max);
                Message::Deltas {
                    from: self.me,
                    relay: true,
                    ack: true,
                    deltas: peer.relay.drain(..n).collect(),
                }
            } else if !peer.plain.is_empty() && fits(&peer.plain) {
                let n = batch_len(&peer.plain, max, bytes_max);
                let deltas = peer.plain.drain(..n).collect();
                let ack = peer.plain_ack;
                if peer.plain.is_empty() {
                    peer.plain_ack = false;
                    // Gone with this frame (a stale time left in
                    // `next_omitted_flush_ms` only wakes once for nothing).
                    peer.omitted_flush_at_ms = None;
                }
                Message::Deltas { from: self.me, relay: false, ack, deltas }
            } else if peer.relay.is_empty() && peer.plain.is_empty() && peer.repairs.is_empty() {
                self.ready.pop_first();
                continue;
            } else {
                // No room for this peer's next delta: later.
                self.budget_blocked = true;
                return None;
            };
            let idle = peer.acks.is_empty() && peer.repairs.is_empty() && !peer.dropped;
            if idle && peer.relay.is_empty() && peer.plain.is_empty() {
                self.ready.remove(&to);
            }
            return Some(Transmit { to, addr, wan, message, request: false });
        }
        None
    }

    /// Whether the last [`poll_transmit`](Self::poll_transmit) left
    /// deltas waiting for room: the driver polls again when the transport
    /// has drained some.
    pub fn is_budget_blocked(&self) -> bool {
        self.budget_blocked
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// A delta's size near enough to bound a frame by: its key and its
/// register (value, vector, metadata) or its document changes.
pub fn delta_size_bytes(delta: &Delta) -> usize {
    let body = match &delta.body {
        geocache_crdt::DeltaBody::Register(r) => r.size_bytes(),
        geocache_crdt::DeltaBody::DocChanges(c) => c.changes.len() + 32 * c.base_heads.len() + 256,
        // What it costs held: the delta itself and its `Arc` (its key is
        // counted below).
        geocache_crdt::DeltaBody::Omitted => OMITTED_DELTA_BYTES,
    };
    delta.key.size_bytes() + body
}

/// Bytes a delta without its body costs held in a backlog, apart from its
/// key's bytes: the `Delta` and the `Arc` around it, the backlog's entry
/// and the key name's own header. A sidecar holds many of them (each a
/// few bytes on the wire), so they are counted as what they cost.
pub const OMITTED_DELTA_BYTES: usize = std::mem::size_of::<Delta>() + 16 + 32 + 32;

/// The form of `delta` that goes to peer `node` ([`Replicator::for_peer`]),
/// `own_sidecar` when it is a sidecar of this full node's region.
fn form_for(
    own_sidecar: bool,
    node: NodeId,
    delta: Arc<Delta>,
    interest: &SidecarInterest,
    stats: &mut InterestStats,
    last_omitted: &mut Option<(Arc<Delta>, Arc<Delta>)>,
) -> Arc<Delta> {
    if !own_sidecar || matches!(delta.body, DeltaBody::Omitted) || interest.wants(node, &delta.key) {
        return delta;
    }
    stats.omitted_sent += 1;
    match last_omitted {
        Some((whole, omitted)) if Arc::ptr_eq(whole, &delta) => omitted.clone(),
        _ => {
            let omitted = Arc::new(delta.omitted());
            *last_omitted = Some((delta, omitted.clone()));
            omitted
        }
    }
}

/// How many deltas from the front of `queue` go in one frame: at most
/// `count_max`, and no more than `bytes_max` of them, but always one.
fn batch_len(queue: &VecDeque<Arc<Delta>>, count_max: usize, bytes_max: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for delta in queue.iter().take(count_max) {
        bytes += delta_size_bytes(delta);
        if n > 0 && bytes > bytes_max {
            break;
        }
        n += 1;
    }
    n
}

enum Applied {
    /// Applied: the register held after it, `None` when not stored here (a
    /// sidecar without the key).
    New(Option<Arc<Register>>),
    Duplicate,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use geocache_crdt::{Dot, Key, Stamp, Value, VersionVector};

    fn delta(seq: u64, value_bytes: usize) -> Arc<Delta> {
        let register = Register::replace(
            Value::Bytes(Bytes::from(vec![b'v'; value_bytes])),
            Stamp::default(),
            VersionVector::new(),
            Dot { origin: NodeId(1), seq },
            None,
        );
        let key = Key::new("t", Bytes::from(format!("k{seq}")));
        Arc::new(Delta::for_write(NodeId(1), seq, key, None, &Arc::new(register)))
    }

    #[test]
    fn a_frame_takes_deltas_by_count_and_by_bytes_but_always_one() {
        let small: VecDeque<_> = (1..=1_000).map(|i| delta(i, 100)).collect();
        assert_eq!(batch_len(&small, 512, 4 << 20), 512, "small deltas: the count bounds the frame");
        let large: VecDeque<_> = (1..=17).map(|i| delta(i, 1 << 20)).collect();
        let n = batch_len(&large, 512, 4 << 20);
        assert_eq!(n, 3, "1 MiB values: the bytes bound the frame");
        assert!(large.iter().take(n).map(|d| delta_size_bytes(d)).sum::<usize>() <= 4 << 20);
        let huge: VecDeque<_> = [delta(1, 8 << 20), delta(2, 10)].into_iter().collect();
        assert_eq!(batch_len(&huge, 512, 4 << 20), 1, "a delta over the bound still goes, alone");
    }

    fn peer(node: u64, region: &str, full: bool) -> PeerInfo {
        PeerInfo { node: NodeId(node), region: region.into(), addr: ([127, 0, 0, 1], 9000).into(), full }
    }

    /// The peers asked in the anti-entropy rounds of seconds `seconds`.
    fn sync_targets(r: &mut Replicator, seconds: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        let mut asked = Vec::new();
        for i in seconds {
            r.handle_timeout(i * 1_000);
            while let Some(t) = r.poll_transmit(usize::MAX) {
                if matches!(t.message, Message::SyncRequest { .. }) {
                    asked.push(t.to.0);
                }
            }
        }
        asked
    }

    #[test]
    fn anti_entropy_across_regions_asks_full_nodes_while_one_is_up() {
        let config = ReplicatorConfig { sync_wan_every_rounds: 1, ..ReplicatorConfig::default() };
        let mut r = Replicator::new(NodeId(1), "a".into(), true, config, 0);
        r.peer_up(peer(2, "a", false), 0);
        for (node, full) in [(10, false), (11, true), (12, false), (13, false), (14, true)] {
            r.peer_up(peer(node, "b", full), 0);
        }
        let asked = sync_targets(&mut r, 1..=6);
        assert_eq!(asked, vec![11, 14, 11, 14, 11, 14], "the other region's sidecars are never asked");
        r.peer_down(NodeId(11), 0);
        r.peer_down(NodeId(14), 0);
        let asked = sync_targets(&mut r, 7..=9);
        assert_eq!(asked, vec![10, 12, 13], "with no full node up there, its sidecars are");
    }

    #[test]
    fn a_full_node_of_its_region_coming_up_is_told_every_key_a_sidecar_holds() {
        let mut sidecar = Replicator::new(NodeId(5), "r".into(), false, ReplicatorConfig::default(), 0);
        sidecar.peer_up(peer(1, "r", true), 0);
        sidecar.peer_up(peer(2, "r", false), 0);
        sidecar.peer_up(peer(3, "elsewhere", true), 0);
        assert_eq!(sidecar.take_unannounced(), Some(NodeId(1)), "its region's full node only");
        assert_eq!(sidecar.take_unannounced(), None);
        let keys: Vec<Key> = (0..3).map(|i| Key::new("t", Bytes::from(format!("k{i}")))).collect();
        sidecar.announce(NodeId(1), keys.clone());
        sidecar.announce(NodeId(3), keys.clone());
        let t = sidecar.poll_transmit(usize::MAX).expect("an interest message");
        assert_eq!(t.to, NodeId(1));
        assert_eq!(t.message, Message::Interest { from: NodeId(5), held: keys, not_held: Vec::new() });
        assert!(sidecar.poll_transmit(usize::MAX).is_none(), "nothing for another region's full node");

        // The full node's side: it tracks what it is told, and forgets it
        // when the sidecar goes (a new life starts from nothing).
        let mut full = Replicator::new(NodeId(1), "r".into(), true, ReplicatorConfig::default(), 0);
        full.peer_up(peer(5, "r", false), 0);
        full.handle_message(NodeId(5), t.message, 0, &mut |_| ApplyOutcome::NotStored);
        assert_eq!(full.interest_tracked(NodeId(5)), 3);
        full.peer_down(NodeId(5), 0);
        full.peer_up(peer(5, "r", false), 0);
        assert_eq!(full.interest_tracked(NodeId(5)), 0);
    }

    #[test]
    fn a_full_node_refuses_a_delta_without_its_body() {
        let mut full = Replicator::new(NodeId(1), "r".into(), true, ReplicatorConfig::default(), 0);
        full.peer_up(peer(5, "r", false), 0);
        let omitted = Arc::new(delta(1, 10).omitted());
        let message = Message::Deltas { from: NodeId(5), relay: false, ack: false, deltas: vec![omitted] };
        full.handle_message(NodeId(5), message, 0, &mut |_| panic!("never applied"));
        assert!(!full.has_applied(NodeId(1), 1), "it stays missing until the whole delta comes");
        assert_eq!(full.interest_stats().omitted_refused, 1);
    }
}
