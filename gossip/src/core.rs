//! The replication core: the whole protocol of one node, sans-IO.
//!
//! It owns membership (foca), the replicator, full transfers (sent and
//! received), the durability level each waiting write has reached, the
//! rule that maps membership's Up/Down to the replicator across a node's
//! lives, re-announcing while alone, pruning of gone origins and the drain
//! before shutdown. The node's QUIC driver (`node/src/cluster.rs`) and the
//! simulator drive this same type; neither makes a protocol decision.
//!
//! # Contract
//!
//! Feed it, in any order, each with the current monotonic time:
//! [`Core::handle_datagram`] (membership) and [`Core::handle_message`] (a
//! replication message), each with the [`Link`] the transport proved it
//! came on, [`Core::handle_answer`] (the answer to a request this node
//! sent),
//! [`Core::local_write`], [`Core::set_rtt`], [`Core::transmit_refused`],
//! [`Core::begin_drain`], and [`Core::handle_timeout`] at
//! [`Core::poll_timeout`]. After each input, drain
//! [`Core::poll_datagram`], then [`Core::poll_transmit`] with the bytes the
//! transport can take (subtracting what each transmit encodes to), then
//! [`Core::poll_event`]. The store is reached only through
//! [`ReplicaStore`], passed into the calls that need it. Time only moves
//! forward; randomness comes from the seed; iteration is in node-id order,
//! so a simulated run replays from its seed.

use bytes::Bytes;
use geocache_crdt::{Delta, Key, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::durability::{self, ClusterShape, Durability};
use crate::fill::{FillStart, FillStats, Fills, OmittedEffects, SidecarStore};
use crate::identities::{DatagramSender, Identities, Link, Refusals};
use crate::membership::{Membership, MembershipEvent, INITIAL_CLUSTER_SIZE};
use crate::peer::{NodeKind, Peer};
use crate::replica_store::ReplicaStore;
use crate::replicator::{Event, PeerInfo, Replicator, ReplicatorConfig, Transmit};
use crate::resume::ResumeState;
use crate::strong::{StrongConfig, StrongRoles};
use crate::transfer::{Chunk, ChunkOutcome, TransferConfig, TransferReceiver, TransferSender, TransferStats};
use crate::wire::Message;

/// The largest sequence number a full transfer may claim for an origin:
/// 2^40 writes is over 30 years of one origin at 1,000 writes a second.
pub const SEQ_PLAUSIBLE_MAX: u64 = 1 << 40;

/// How long deltas or chunks waiting for transport room wait before the
/// driver is asked to poll again.
const BLOCKED_RETRY_MS: u64 = 10;

/// Bounds and periods of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The replicator's.
    pub replicator: ReplicatorConfig,
    /// Full transfers'.
    pub transfer: TransferConfig,
    /// Gossip addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// How often housekeeping runs: re-announcing to the seeds while this
    /// node knows no member (a lost first announce must not leave it alone
    /// for good), pruning gone origins.
    pub housekeeping_ms: u64,
    /// How long an origin no member has been is remembered (its
    /// watermarks, its region for `all`). Longer than the backlog's age and
    /// the tombstone retention: see docs/ARCHITECTURE.md, "Deletes".
    pub origin_retention_ms: u64,
    /// Writes waiting for a durability level at once; past this a write is
    /// answered at once with the level it has.
    pub durability_waiter_count_max: usize,
    /// How often a draining node asks its targets how far they are.
    pub drain_probe_ms: u64,
    /// How long a sidecar's fill waits for its answer before it is a miss.
    pub fill_timeout_ms: u64,
    /// Strong keys (`strong/`): the acceptors and bounds; `None`, none.
    pub strong: Option<StrongConfig>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            replicator: ReplicatorConfig::default(),
            transfer: TransferConfig::default(),
            seeds: Vec::new(),
            housekeeping_ms: 1_000,
            origin_retention_ms: 60 * 60_000,
            durability_waiter_count_max: 65_536,
            drain_probe_ms: 250,
            fill_timeout_ms: 200,
            strong: None,
        }
    }
}

/// Something the driver acts on.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreEvent {
    /// A member is up (new, back, or a new life).
    MemberUp(Peer),
    /// A member is down and forgotten.
    MemberDown(Peer),
    /// A write waiting on durability reached `level`. `done`: no more
    /// events come for it (it reached what it asked, or the waiters are
    /// full and it is answered with what it has).
    Durability {
        /// The write's sequence number.
        seq: u64,
        /// The level reached.
        level: Durability,
        /// Whether this is the last event for the write.
        done: bool,
    },
    /// A strong key's change (`Core::propose_strong`) was decided.
    Strong {
        /// The proposal.
        id: crate::strong::ProposalId,
        /// How it ended.
        outcome: crate::strong::Outcome,
    },
    /// The watermarks to persist now (every housekeeping period): with
    /// the persisted backlog, what a restart resumes from (`resume.rs`).
    Checkpoint {
        /// Applied watermark per origin.
        watermarks: Vec<(NodeId, u64)>,
    },
    /// A fill of `key` ended (`fill.rs`): `found` when the store now holds
    /// what a full node of the region held; otherwise it is a miss.
    Filled {
        /// The key.
        key: Key,
        /// Whether a register was merged.
        found: bool,
    },
    /// A full transfer arrived whole.
    TransferApplied {
        /// Its sender.
        from: NodeId,
        /// Keys the drop rule removed.
        dropped: usize,
    },
}

struct Seen {
    region: String,
    live: bool,
    last_live_ms: u64,
}

struct Waiter {
    wanted: Durability,
    reported: Durability,
}

struct Drain {
    confirmed: BTreeSet<NodeId>,
    /// Per target, the watermark it showed when this node last sent it
    /// what it lacked, and when: sent again only if it has not moved.
    pushed: BTreeMap<NodeId, (u64, u64)>,
    next_probe_ms: u64,
}

/// How long a draining node waits for a target's watermark to move before
/// it sends again what the target lacks.
const DRAIN_PUSH_AGAIN_MS: u64 = 2_000;

/// One node's replication protocol.
pub struct Core {
    config: CoreConfig,
    pub(crate) me: NodeId,
    pub(crate) region: String,
    kind: NodeKind,
    fills: Fills,
    membership: Membership,
    replicator: Replicator,
    sender: TransferSender,
    receiver: TransferReceiver,
    transfer_stats: TransferStats,
    /// Live members, with the life (incarnation) membership last showed.
    pub(crate) members: BTreeMap<NodeId, Peer>,
    /// Every member seen, live or not, until pruned.
    seen: BTreeMap<NodeId, Seen>,
    /// Which name and address each origin is (see `identities.rs`).
    identities: Identities,
    waiters: BTreeMap<u64, Waiter>,
    pub(crate) outbox: VecDeque<Transmit>,
    pub(crate) events: VecDeque<CoreEvent>,
    /// This node's proposer and acceptor of strong keys (`core_strong.rs`).
    pub(crate) strong: Option<StrongRoles>,
    drain: Option<Drain>,
    next_housekeeping_ms: u64,
    /// When the transport last refused a transmit.
    refused_at_ms: Option<u64>,
    /// The store is still loading from its data dir: no full transfer is
    /// sent from it.
    store_loading: bool,
    pub(crate) now_ms: u64,
}

impl Core {
    /// The core of node `me`, announcing itself to the seeds.
    pub fn new(me: Peer, config: CoreConfig, seed: u64, now_ms: u64) -> Core {
        let mut membership = Membership::new(me.clone(), INITIAL_CLUSTER_SIZE, seed, now_ms);
        membership.join(&config.seeds, now_ms);
        let full = me.kind == NodeKind::Full;
        let replicator = Replicator::new(me.node, me.region.clone(), full, config.replicator.clone(), now_ms);
        Core {
            me: me.node,
            region: me.region,
            kind: me.kind,
            fills: Fills::default(),
            membership,
            replicator,
            sender: TransferSender::new(config.transfer.clone()),
            receiver: TransferReceiver::new(config.transfer.clone()),
            transfer_stats: TransferStats::default(),
            members: BTreeMap::new(),
            seen: BTreeMap::new(),
            identities: Identities::new(),
            waiters: BTreeMap::new(),
            outbox: VecDeque::new(),
            strong: config.strong.clone().map(|c| StrongRoles::new(me.node, me.incarnation, &me.name, c)),
            events: VecDeque::new(),
            drain: None,
            next_housekeeping_ms: now_ms + config.housekeeping_ms,
            refused_at_ms: None,
            store_loading: false,
            now_ms,
            config,
        }
    }

    /// The core of node `me` restarted with its data: its replication
    /// state taken back from `state` (`resume.rs`), announcing itself to
    /// the seeds under its new incarnation.
    ///
    /// Its store loads in the background meanwhile: call
    /// [`Core::store_loaded`] when it is done.
    pub fn resume(me: Peer, config: CoreConfig, state: &ResumeState, seed: u64, now_ms: u64) -> Core {
        let mut core = Core::new(me, config, seed, now_ms);
        core.replicator.resume(state, now_ms);
        core.store_loading = true;
        core
    }

    /// The store finished loading from the data dir: full transfers may be
    /// sent from it again.
    pub fn store_loaded(&mut self) {
        self.store_loading = false;
    }

    /// This node's origin id (this life's).
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The replicator, to read.
    pub fn replicator(&self) -> &Replicator {
        &self.replicator
    }

    /// Membership, to read.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Live members, by origin id.
    pub fn members(&self) -> &BTreeMap<NodeId, Peer> {
        &self.members
    }

    /// Whether `node` has spoken for itself (a datagram of its own came on
    /// its own link): only such members are offered to clients.
    pub fn is_confirmed(&self, node: NodeId) -> bool {
        self.identities.is_confirmed(node)
    }

    /// Input refused because it spoke for someone else.
    pub fn refusals(&self) -> &Refusals {
        self.identities.refusals()
    }

    /// Full-transfer counters.
    pub fn transfer_stats(&self) -> &TransferStats {
        &self.transfer_stats
    }

    /// Fill counters.
    pub fn fill_stats(&self) -> &FillStats {
        &self.fills.stats
    }

    /// A sidecar's client missed `key`: asks a full node of the region for
    /// it (the one with the lowest round trip). A
    /// [`CoreEvent::Filled`] follows when this returns
    /// [`FillStart::Asked`] or [`FillStart::Joined`]; otherwise it is a
    /// miss now.
    pub fn fill(&mut self, key: Key, now_ms: u64) -> FillStart {
        self.advance(now_ms);
        if self.kind == NodeKind::Full {
            return FillStart::NotSidecar;
        }
        if self.fills.is_pending(&key) {
            return FillStart::Joined;
        }
        if !self.fills.has_room() {
            self.fills.stats.refused_busy += 1;
            return FillStart::Busy;
        }
        let target = self
            .members
            .values()
            .filter(|p| p.kind == NodeKind::Full && p.region == self.region)
            .filter(|p| self.identities.is_confirmed(p.node))
            .min_by_key(|p| (self.replicator.rtt_of(p.node).unwrap_or(u64::MAX), p.node))
            .map(|p| (p.node, p.gossip));
        let Some((to, addr)) = target else {
            self.fills.stats.no_full_node += 1;
            return FillStart::NoFullNode;
        };
        let seen = self.replicator.highest_applied();
        self.fills.begin(key.clone(), to, self.now_ms + self.config.fill_timeout_ms);
        self.outbox.push_back(Transmit {
            to,
            addr,
            wan: false,
            message: Message::FillRequest { from: self.me, key, seen },
            request: false,
        });
        FillStart::Asked
    }

    /// Origins remembered (live or gone, not yet pruned).
    pub fn remembered_origins(&self) -> usize {
        self.seen.len()
    }

    fn advance(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// A membership datagram that came on `link`. Refused input (garbled,
    /// or sent in another node's name) changes nothing.
    pub fn handle_datagram(&mut self, link: &Link, bytes: &[u8], now_ms: u64) {
        self.advance(now_ms);
        let Some(src) = Membership::sender_of(bytes) else {
            tracing::debug!(peer = %link.name, "undecodable membership datagram");
            return;
        };
        match self.identities.accept_datagram(link, &src) {
            DatagramSender::Refused => {
                tracing::debug!(
                    link = %link.name, addr = %link.addr, claims = %src.name, origin = %src.node,
                    "membership datagram in another node's name refused"
                );
                return;
            }
            DatagramSender::Corrected => self.take_own_word(&src),
            DatagramSender::Accepted => {}
        }
        if let Err(e) = self.membership.handle_data(bytes, self.now_ms) {
            if matches!(e, crate::membership::MembershipError::Full { .. }) {
                self.identities.refuse_members_full();
            }
            tracing::debug!(error = %e, "membership datagram refused");
        }
        self.settle();
    }

    /// A replication message that came on `link`. Returns the answer to
    /// send back when it was a request. A message naming an origin that is
    /// not the link's own is refused and counted.
    pub fn handle_message(
        &mut self,
        link: &Link,
        message: Message,
        store: &mut dyn ReplicaStore,
        now_ms: u64,
    ) -> Option<Message> {
        // An answer sent as a message (the simulator's) is from the member
        // on that link.
        let from = message.sender().or_else(|| self.origin_on(link))?;
        if !self.identities.accept_message(link, from) {
            tracing::debug!(link = %link.name, addr = %link.addr, claims = %from, kind = message.kind(),
                "replication message in another node's name refused");
            return None;
        }
        self.handle_checked(from, message, store, now_ms)
    }

    /// The answer to a request this node sent to `asked` (on the
    /// connection it dialled to that member's address).
    pub fn handle_answer(
        &mut self,
        asked: NodeId,
        message: Message,
        store: &mut dyn ReplicaStore,
        now_ms: u64,
    ) -> Option<Message> {
        if message.sender().is_some_and(|s| s != asked) {
            self.identities.refuse_foreign_answer();
            return None;
        }
        self.handle_checked(asked, message, store, now_ms)
    }

    /// A transfer's watermarks, less the claims no honest sender makes:
    /// about this node's own writes (it knows how far it is) and beyond
    /// [`SEQ_PLAUSIBLE_MAX`] (a claim of `u64::MAX` would make every later
    /// write of that origin look like a duplicate).
    fn plausible_watermarks(&mut self, watermarks: Vec<(NodeId, u64)>) -> Vec<(NodeId, u64)> {
        let me = self.me;
        let mut kept = Vec::with_capacity(watermarks.len());
        for (origin, wm) in watermarks {
            if origin == me || wm > SEQ_PLAUSIBLE_MAX {
                if wm > SEQ_PLAUSIBLE_MAX || wm > self.replicator.head() {
                    self.identities.refuse_watermark_claim();
                }
                continue;
            }
            kept.push((origin, wm));
        }
        kept
    }

    /// A member first known from a third party has spoken for itself with
    /// other details: its own word replaces the hearsay.
    fn take_own_word(&mut self, src: &Peer) {
        let Some(member) = self.members.get_mut(&src.node) else { return };
        let incarnation = member.incarnation.max(src.incarnation);
        *member = Peer { incarnation, ..src.clone() };
        self.replicator.peer_up(
            PeerInfo {
                node: src.node,
                region: src.region.clone(),
                addr: src.gossip,
                full: src.kind == NodeKind::Full,
            },
            self.now_ms,
        );
    }

    /// The live member on `link`.
    fn origin_on(&self, link: &Link) -> Option<NodeId> {
        self.members.values().find(|p| p.name == link.name && p.gossip == link.addr).map(|p| p.node)
    }

    fn handle_checked(
        &mut self,
        from: NodeId,
        message: Message,
        store: &mut dyn ReplicaStore,
        now_ms: u64,
    ) -> Option<Message> {
        self.advance(now_ms);
        let now = self.now_ms;
        let message = match message {
            Message::FillRequest { from: asker, key, seen } => {
                self.answer_fill(asker, key, &seen, store);
                self.settle();
                return None;
            }
            Message::FillAnswer { key, register, full, lacking, .. } => {
                self.fill_answered(from, key, register, full.then_some(lacking), store);
                return None;
            }
            Message::Strong { message, .. } => {
                self.strong_message(from, message, store);
                return None;
            }
            message => message,
        };
        let mut omitted = OmittedEffects::default();
        let mut sidecar_store;
        let store: &mut dyn ReplicaStore = if self.kind == NodeKind::Sidecar {
            sidecar_store = SidecarStore { inner: store, fills: &self.fills, omitted: &mut omitted };
            &mut sidecar_store
        } else {
            store
        };
        let answer = match message {
            Message::FullTransferRequest { from: asker, resume } => {
                // A store still loading from its data dir would send a
                // transfer that lacks what is not loaded yet, and the drop
                // rule would delete it at the asker: it asks again later.
                // A sidecar sends none: the drop rule would delete at the
                // asker every key the sidecar applied and did not store.
                if self.members.contains_key(&asker) && !self.store_loading && self.kind == NodeKind::Full {
                    let watermarks = self.replicator.watermarks();
                    self.sender.request(asker, resume, watermarks, store, &mut self.transfer_stats, now);
                }
                None
            }
            Message::FullTransferChunk {
                from: sender,
                transfer,
                continues,
                index,
                registers,
                last,
                watermarks,
                end_watermarks,
            } => {
                let chunk = Chunk {
                    from: sender,
                    transfer,
                    continues,
                    index,
                    registers: &registers,
                    last,
                    watermarks: &watermarks,
                    end_watermarks: &end_watermarks,
                };
                let replicator = &self.replicator;
                let covered = |dot: geocache_crdt::Dot| replicator.has_applied(dot.origin, dot.seq);
                match self.receiver.on_chunk(self.me, chunk, store, &covered, &mut self.transfer_stats, now) {
                    ChunkOutcome::Whole { watermarks, dropped } => {
                        let watermarks = self.plausible_watermarks(watermarks);
                        self.replicator.full_transfer_done(&watermarks);
                        self.events.push_back(CoreEvent::TransferApplied { from: sender, dropped });
                    }
                    ChunkOutcome::Merged | ChunkOutcome::Stray => {}
                }
                None
            }
            Message::Repair { registers, .. } => {
                for (key, register) in &registers {
                    store.merge(key, register, false);
                }
                self.replicator.repairs_merged(registers.len());
                None
            }
            message => self.replicator.handle_message(from, message, now, &mut |d: &Delta| store.apply(d)),
        };
        for key in &omitted.spoiled {
            self.fills.spoil(key);
        }
        self.replicator.held_dropped(omitted.held_dropped);
        self.settle();
        answer
    }

    /// A sidecar's fill of `key`, answered at once: the register held,
    /// and the origins of `seen` not applied that far here.
    fn answer_fill(&mut self, asker: NodeId, key: Key, seen: &[(NodeId, u64)], store: &mut dyn ReplicaStore) {
        let Some(peer) = self.members.get(&asker) else { return };
        // A store still loading from its data dir may lack keys its
        // watermarks cover: it vouches for none until it is loaded.
        let full = self.kind == NodeKind::Full && !self.store_loading;
        // Only a full node's answer is taken: a sidecar's carries nothing.
        let (register, lacking) = if full {
            let lacking = seen
                .iter()
                .filter(|&&(origin, seq)| !self.replicator.has_applied_through(origin, seq))
                .map(|&(origin, _)| (origin, self.replicator.watermark(origin)))
                .collect();
            self.replicator.sidecar_filling(asker, &key);
            (store.register(&key), lacking)
        } else {
            (None, Vec::new())
        };
        self.fills.stats.answered += 1;
        self.outbox.push_back(Transmit {
            to: asker,
            addr: peer.gossip,
            wan: peer.region != self.region,
            message: Message::FillAnswer { from: self.me, key, register, full, lacking },
            request: false,
        });
    }

    /// A full node's answer to this node's fill (`lacking: None` from a
    /// sidecar, which vouches for nothing).
    fn fill_answered(
        &mut self,
        from: NodeId,
        key: Key,
        register: Option<std::sync::Arc<geocache_crdt::Register>>,
        lacking: Option<Vec<(NodeId, u64)>>,
        store: &mut dyn ReplicaStore,
    ) {
        let Some(spoiled) = self.fills.answered(&key, from) else { return };
        if spoiled {
            // A write of the key came here without its body while the fill
            // was out: the answer may be older than it.
            self.fills.stats.spoiled += 1;
            self.events.push_back(CoreEvent::Filled { key, found: false });
            return;
        }
        // What this node applied of the key and the full node did not: its
        // own backlog holds every delta it applied, stored or not.
        let mut catch_up = Vec::new();
        let complete = match &lacking {
            None => false,
            Some(lacking) => {
                lacking.iter().all(|&(origin, after)| match self.replicator.backlog_after(origin, after) {
                    Some(deltas) => {
                        let mut whole = true;
                        for d in deltas.into_iter().filter(|d| d.key == key) {
                            match &d.body {
                                geocache_crdt::DeltaBody::Register(r) => catch_up.push(r.clone()),
                                // A document change needs its base, and an
                                // omitted write has no body: the fill misses.
                                geocache_crdt::DeltaBody::DocChanges(_)
                                | geocache_crdt::DeltaBody::Omitted => whole = false,
                            }
                        }
                        whole
                    }
                    None => false,
                })
            }
        };
        let found = if complete {
            if !catch_up.is_empty() {
                self.fills.stats.completed_from_backlog += 1;
            }
            let mut merged = register.map(|r| (*r).clone());
            for r in &catch_up {
                match merged.as_mut() {
                    Some(m) => m.merge(r),
                    None => merged = Some((**r).clone()),
                }
            }
            match merged {
                Some(register) => {
                    self.fills.stats.found += 1;
                    store.merge(&key, &register, false);
                    self.replicator.now_holds(&key, from);
                    true
                }
                None => {
                    self.fills.stats.absent += 1;
                    false
                }
            }
        } else {
            self.fills.stats.behind += 1;
            false
        };
        self.events.push_back(CoreEvent::Filled { key, found });
    }

    /// A write accepted here, to replicate; `level` is how far it must go
    /// before it is acknowledged ([`CoreEvent::Durability`] says when).
    pub fn local_write(
        &mut self,
        delta: Arc<Delta>,
        full: Arc<Delta>,
        bytes: usize,
        level: Durability,
        now_ms: u64,
    ) {
        self.advance(now_ms);
        // `disk` is the node's own (its data dir); here it is `local`.
        let level = if level == Durability::Disk { Durability::Local } else { level };
        let seq = delta.seq;
        self.replicator.local_write(delta, full, bytes, level >= Durability::Region, self.now_ms);
        if level > Durability::Local {
            if self.waiters.len() >= self.config.durability_waiter_count_max {
                self.events.push_back(CoreEvent::Durability { seq, level: Durability::Local, done: true });
            } else {
                self.waiters.insert(seq, Waiter { wanted: level, reported: Durability::Local });
                self.check_waiter(seq);
            }
        }
        self.settle();
    }

    /// The measured round trip to a member.
    pub fn set_rtt(&mut self, node: NodeId, rtt_ms: u64) {
        self.replicator.set_rtt(node, rtt_ms);
    }

    /// The transport refused (or lost) a transmit from
    /// [`poll_transmit`](Self::poll_transmit): what it carried is repaired.
    /// The driver stops polling transmits until the next wake-up, which
    /// [`poll_timeout`](Self::poll_timeout) brings soon: the queue that
    /// refused it needs time to drain.
    pub fn transmit_refused(&mut self, transmit: &Transmit) {
        self.refused_at_ms = Some(self.now_ms);
        match &transmit.message {
            Message::FullTransferChunk { transfer, index, .. } => {
                self.sender.refused(transmit.to, *transfer, *index)
            }
            Message::Deltas { .. } | Message::Acks { .. } | Message::SyncHint { .. } => {
                self.replicator.frame_refused(transmit.to)
            }
            // A lost request is asked again by its own timer; a lost repair
            // waits for the key's next write.
            Message::Repair { .. }
            | Message::SyncRequest { .. }
            | Message::SyncResponse { .. }
            | Message::FullTransferRequest { .. }
            | Message::FillRequest { .. }
            | Message::FillAnswer { .. }
            // A lost strong message is an attempt that times out.
            | Message::Strong { .. }
            // Lost interest costs whole deltas (a key not held) or a
            // dropped key (one held): neither is stale.
            | Message::Interest { .. } => {}
        }
    }

    /// Runs what is due.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        if self.refused_at_ms.is_some_and(|at| self.now_ms >= at + BLOCKED_RETRY_MS) {
            self.refused_at_ms = None;
        }
        let now = self.now_ms;
        self.membership.handle_timeout(now);
        self.replicator.handle_timeout(now);
        if let Some(strong) = &mut self.strong {
            strong.handle_timeout(now);
        }
        self.sender.handle_timeout(&mut self.transfer_stats, now);
        if let Some((from, resume)) = self.receiver.handle_timeout(&mut self.transfer_stats, now) {
            self.ask_transfer(from, resume);
        }
        if now >= self.next_housekeeping_ms {
            self.next_housekeeping_ms = now + self.config.housekeeping_ms;
            if self.members.is_empty() && !self.config.seeds.is_empty() && self.drain.is_none() {
                self.membership.join(&self.config.seeds, now);
            }
            self.prune(now);
            self.events.push_back(CoreEvent::Checkpoint { watermarks: self.replicator.watermarks() });
        }
        for key in self.fills.expire(now) {
            self.events.push_back(CoreEvent::Filled { key, found: false });
        }
        self.probe_drain(now);
        self.settle();
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&mut self) -> u64 {
        let mut at = self.replicator.poll_timeout().min(self.next_housekeeping_ms);
        if let Some(t) = self.membership.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.receiver.poll_timeout() {
            at = at.min(t);
        }
        if let Some(d) = &self.drain {
            at = at.min(d.next_probe_ms);
        }
        if let Some(t) = self.strong.as_ref().and_then(StrongRoles::poll_timeout) {
            at = at.min(t);
        }
        if let Some(t) = self.fills.poll_timeout() {
            at = at.min(t);
        }
        if self.replicator.is_budget_blocked() || self.sender.has_pending() || self.refused_at_ms.is_some() {
            at = at.min(self.now_ms + BLOCKED_RETRY_MS);
        }
        at
    }

    /// The next membership datagram to send.
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.membership.poll_transmit()
    }

    /// The next message to send, no larger than `bytes_budget` when it
    /// carries deltas or registers.
    pub fn poll_transmit(&mut self, store: &mut dyn ReplicaStore, bytes_budget: usize) -> Option<Transmit> {
        self.flush_strong(store);
        while let Some(full_node) = self.replicator.take_unannounced() {
            // A full node of this region came up: it hears every key held
            // here, or it would leave their deltas' bodies out.
            let keys = store.keys();
            self.replicator.announce(full_node, keys);
        }
        if let Some(t) = self.outbox.pop_front() {
            return Some(t);
        }
        if let Some(t) = self.replicator.poll_transmit(bytes_budget) {
            return Some(t);
        }
        if self.replicator.is_budget_blocked() {
            return None;
        }
        loop {
            let replicator = &self.replicator;
            let watermarks = || replicator.watermarks();
            let (to, message) =
                self.sender.poll_chunk(self.me, store, bytes_budget, self.now_ms, &watermarks)?;
            match self.members.get(&to) {
                Some(peer) => {
                    let wan = peer.region != self.region;
                    return Some(Transmit { to, addr: peer.gossip, wan, message, request: false });
                }
                None => self.sender.peer_down(to),
            }
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// Starts the drain before shutdown: what is queued keeps leaving,
    /// relays keep acking, and each member this node sends to directly
    /// (its region, and its relay in each other region) is asked how far
    /// it is, and sent what it lacks, until [`is_drained`](Self::is_drained).
    pub fn begin_drain(&mut self, now_ms: u64) {
        self.advance(now_ms);
        if self.drain.is_none() {
            self.drain = Some(Drain {
                confirmed: BTreeSet::new(),
                pushed: BTreeMap::new(),
                next_probe_ms: self.now_ms,
            });
        }
        self.probe_drain(self.now_ms);
        self.settle();
    }

    /// Whether every own write is known to be at every member this node
    /// sends to directly, and nothing is left queued.
    pub fn is_drained(&self) -> bool {
        let Some(drain) = &self.drain else { return false };
        self.replicator.queued_count() == 0
            && self.replicator.unacked_relay_count() == 0
            && self.drain_targets().iter().all(|t| drain.confirmed.contains(t))
    }

    /// Leaves membership: peers pick another relay at once. The datagrams
    /// come out of [`poll_datagram`](Self::poll_datagram).
    pub fn leave(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.membership.leave(self.now_ms);
    }

    fn drain_targets(&self) -> Vec<NodeId> {
        let mut targets: Vec<NodeId> =
            self.members.values().filter(|p| p.region == self.region).map(|p| p.node).collect();
        let regions: BTreeSet<&str> =
            self.members.values().filter(|p| p.region != self.region).map(|p| p.region.as_str()).collect();
        targets.extend(regions.into_iter().filter_map(|r| self.replicator.relay_of(r)));
        targets
    }

    fn probe_drain(&mut self, now: u64) {
        let due = self.drain.as_ref().is_some_and(|d| now >= d.next_probe_ms);
        if !due {
            return;
        }
        let targets = self.drain_targets();
        let Some(drain) = self.drain.as_mut() else { return };
        drain.next_probe_ms = now + self.config.drain_probe_ms;
        let pending: Vec<NodeId> = targets.into_iter().filter(|t| !drain.confirmed.contains(t)).collect();
        for target in pending {
            self.replicator.push_sync_request(target);
        }
    }

    fn ask_transfer(&mut self, from: NodeId, resume: Option<crate::wire::TransferResume>) {
        let Some(peer) = self.members.get(&from) else { return };
        self.outbox.push_back(Transmit {
            to: from,
            addr: peer.gossip,
            wan: peer.region != self.region,
            message: Message::FullTransferRequest { from: self.me, resume },
            request: false,
        });
    }

    /// Handles what membership and the replicator reported.
    fn settle(&mut self) {
        let now = self.now_ms;
        let mut membership_changed = false;
        while let Some(event) = self.membership.poll_event() {
            membership_changed = true;
            match event {
                MembershipEvent::Up(peer) => self.member_up(peer, now),
                MembershipEvent::Down(peer) => self.member_down(peer, now),
            }
        }
        while let Some(event) = self.replicator.poll_event() {
            match event {
                Event::Acked { seq } => self.check_waiter(seq),
                Event::FullTransferNeeded { peer, .. } => {
                    // One transfer at a time: another needed meanwhile is
                    // found again by the next anti-entropy round. Never
                    // from a sidecar, which sends none: a full node's
                    // answer brings the same need again.
                    let full = self.members.get(&peer).is_some_and(|p| p.kind == NodeKind::Full);
                    if full && !self.receiver.is_receiving() {
                        self.receiver.expect(peer, now);
                        self.ask_transfer(peer, None);
                    }
                }
                Event::PeerWatermark { peer, watermark } => self.drain_progress(peer, watermark),
            }
        }
        if membership_changed {
            let seqs: Vec<u64> = self.waiters.keys().copied().collect();
            for seq in seqs {
                self.check_waiter(seq);
            }
        }
    }

    fn member_up(&mut self, peer: Peer, now: u64) {
        if peer.node == self.me {
            return;
        }
        if !self.identities.accept_member(&peer) {
            tracing::debug!(origin = %peer.node, name = %peer.name, gossip = %peer.gossip,
                "member refused: its origin is bound to another name or address");
            return;
        }
        if !self.identities.is_confirmed(peer.node) {
            // Known only from a third party: an announce to it brings its
            // own answer, which confirms it (or not) within a round trip,
            // rather than whenever SWIM's random probes get to it.
            self.membership.join(&[peer.gossip], now);
        }
        // The same origin back: a restart that kept its data (a later
        // incarnation), or a member declared down that returned. Writes it
        // made just before it went may have reached nobody (a crash takes
        // what was queued), and only it holds them: ask it now, rather
        // than when anti-entropy's round robin comes to it.
        let returned = match self.members.get(&peer.node) {
            Some(known) => known.incarnation < peer.incarnation,
            None => self.seen.contains_key(&peer.node),
        };
        self.replicator.peer_up(
            PeerInfo {
                node: peer.node,
                region: peer.region.clone(),
                addr: peer.gossip,
                full: peer.kind == NodeKind::Full,
            },
            now,
        );
        if returned {
            self.replicator.push_sync_request(peer.node);
        }
        self.seen.insert(peer.node, Seen { region: peer.region.clone(), live: true, last_live_ms: now });
        self.members.insert(peer.node, peer.clone());
        self.events.push_back(CoreEvent::MemberUp(peer));
    }

    fn member_down(&mut self, peer: Peer, now: u64) {
        // A rejoin shows as Down(old) then Up(new) with the same id: only
        // forget the member if it is still the old life.
        let current = self.members.get(&peer.node).map(|p| p.incarnation);
        if current.is_some_and(|inc| inc > peer.incarnation) {
            return;
        }
        if self.members.remove(&peer.node).is_none() {
            return;
        }
        self.replicator.peer_down(peer.node, now);
        for key in self.fills.peer_down(peer.node) {
            self.events.push_back(CoreEvent::Filled { key, found: false });
        }
        self.sender.peer_down(peer.node);
        self.receiver.peer_down(peer.node);
        if let Some(seen) = self.seen.get_mut(&peer.node) {
            seen.live = false;
            seen.last_live_ms = now;
        }
        if let Some(drain) = self.drain.as_mut() {
            drain.confirmed.remove(&peer.node);
        }
        self.events.push_back(CoreEvent::MemberDown(peer));
    }

    /// Forgets origins no member has been for longer than the retention.
    fn prune(&mut self, now: u64) {
        let retention = self.config.origin_retention_ms;
        let gone: Vec<NodeId> = self
            .seen
            .iter()
            .filter(|(_, s)| !s.live && now.saturating_sub(s.last_live_ms) >= retention)
            .map(|(n, _)| *n)
            .collect();
        for origin in &gone {
            self.seen.remove(origin);
            self.replicator.forget_origin(*origin);
            self.identities.forget(*origin);
        }
        if !gone.is_empty() {
            let seqs: Vec<u64> = self.waiters.keys().copied().collect();
            for seq in seqs {
                self.check_waiter(seq);
            }
        }
    }

    fn drain_progress(&mut self, peer: NodeId, watermark: u64) {
        let head = self.replicator.head();
        let now = self.now_ms;
        let Some(drain) = self.drain.as_mut() else { return };
        tracing::debug!(%peer, watermark, head, "draining: how far a member is");
        if watermark >= head {
            drain.confirmed.insert(peer);
            return;
        }
        // What was queued before the drain is most likely still on its
        // way: send it again only once the target's watermark stands still.
        let last = drain.pushed.get(&peer).copied();
        let moved = last.is_none_or(|(at_wm, _)| watermark > at_wm);
        let still_for_long = last.is_some_and(|(_, at_ms)| now.saturating_sub(at_ms) >= DRAIN_PUSH_AGAIN_MS);
        if !moved && !still_for_long {
            return;
        }
        drain.pushed.insert(peer, (watermark, now));
        if moved {
            return;
        }
        let wan = self.members.get(&peer).is_some_and(|p| p.region != self.region);
        self.replicator.push_own_since(peer, watermark, wan, now);
    }

    /// The level write `seq` has reached, reported when it rose.
    fn check_waiter(&mut self, seq: u64) {
        let Some(waiter) = self.waiters.get(&seq) else { return };
        let other_regions: BTreeSet<String> =
            self.seen.values().filter(|s| s.region != self.region).map(|s| s.region.clone()).collect();
        let shape = ClusterShape {
            own_region: &self.region,
            other_regions: &other_regions,
            region_has_peer: self.members.values().any(|p| p.region == self.region),
            alone_by_mistake: self.seen.is_empty()
                && self.config.seeds.iter().any(|s| *s != self.membership.me().gossip),
        };
        let empty = BTreeMap::new();
        let level = durability::reached(&shape, self.replicator.ackers(seq).unwrap_or(&empty));
        let (wanted, reported) = (waiter.wanted, waiter.reported);
        if level >= wanted {
            self.waiters.remove(&seq);
            self.replicator.forget_acks(seq);
            self.events.push_back(CoreEvent::Durability { seq, level, done: true });
        } else if level > reported {
            if let Some(w) = self.waiters.get_mut(&seq) {
                w.reported = level;
            }
            self.events.push_back(CoreEvent::Durability { seq, level, done: false });
        }
    }

    /// Stops waiting on write `seq` (its caller gave up).
    pub fn forget_waiter(&mut self, seq: u64) {
        if self.waiters.remove(&seq).is_some() {
            self.replicator.forget_acks(seq);
        }
    }
}
