//! Full state transfer: what a node sends a peer whose gap its backlog no
//! longer reaches, as numbered chunks bounded in bytes, resumable after a
//! cut, with the drop rule applied only once every chunk has arrived.
//!
//! The sender snapshots its key set when the transfer starts and sends the
//! keys in order, reading each register when its chunk is made (a register
//! newer than the snapshot is still a correct join). It keeps where each
//! chunk started, so a receiver that missed chunk `k` asks to resume there.
//! The receiver merges every chunk it gets (merging is always safe), keeps
//! a 64-bit hash of each key received and the set of chunk numbers; only
//! when chunks `0..=last` are all in does it drop the keys the sender had
//! applied and no longer holds, and raise its watermarks to the sender's.

use geocache_crdt::{Dot, Key, NodeId, Register};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::replica_store::ReplicaStore;
use crate::wire::{Message, TransferResume};

/// Bounds and periods of full transfers.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    /// Most bytes of registers (key and register, by
    /// [`register_size_bytes`]) in one chunk; a larger register goes alone.
    pub chunk_bytes_max: usize,
    /// Transfers this node sends at once; a request past it is refused and
    /// the requester asks again at its next anti-entropy round.
    pub outbound_count_max: usize,
    /// A transfer received that makes no progress this long is asked to
    /// resume from its first missing chunk.
    pub stall_ms: u64,
    /// A transfer (sent or received) idle this long is given up, and its
    /// memory freed; the receiver's next anti-entropy round starts anew.
    pub abandon_ms: u64,
    /// A deliberate bug for the simulator's checkers to catch: apply the
    /// drop rule when the last chunk arrives, whole or not.
    #[doc(hidden)]
    pub debug_drop_partial: bool,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            chunk_bytes_max: 1 << 20,
            outbound_count_max: 2,
            stall_ms: 5_000,
            abandon_ms: 60_000,
            debug_drop_partial: false,
        }
    }
}

/// A register's size near enough to bound a chunk by.
pub fn register_size_bytes(key: &Key, register: &Register) -> usize {
    key.size_bytes() + register.size_bytes() + 16
}

/// The drop rule of a full transfer that arrived whole: a key held here
/// that the sender did not send, although the sender had applied the write
/// this node holds (by its watermarks), was deleted, evicted or expired at
/// the sender and must go here too; holding it on would resurrect it. A
/// miss is allowed, a resurrection not.
pub fn dropped_by_transfer(
    dot: Dot,
    sent_by_sender: bool,
    sender_watermarks: &BTreeMap<NodeId, u64>,
) -> bool {
    !sent_by_sender && sender_watermarks.get(&dot.origin).is_some_and(|&w| dot.seq <= w)
}

/// Counters of full transfers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Transfers started as a sender.
    pub sent_started: u64,
    /// Transfers received whole (the drop rule ran).
    pub received_whole: u64,
    /// Resumes asked by this node as a receiver.
    pub resumes_asked: u64,
    /// Resumes served by this node as a sender.
    pub resumes_served: u64,
    /// Transfers given up (idle past `abandon_ms`), either side.
    pub abandoned: u64,
    /// Requests refused because `outbound_count_max` transfers were under way.
    pub refused_busy: u64,
    /// Chunks received that belonged to no transfer under way.
    pub stray_chunks: u64,
}

struct Outbound {
    id: u64,
    keys: Vec<Key>,
    /// Index into `keys` where chunk `i` starts; the next chunk starts at
    /// `next_key`.
    chunk_starts: Vec<usize>,
    next_key: usize,
    watermarks: Vec<(NodeId, u64)>,
    /// Whether the last chunk has been made (the transfer is kept a while
    /// for resumes).
    finished: bool,
    active_ms: u64,
}

impl Outbound {
    fn next_index(&self) -> u32 {
        u32::try_from(self.chunk_starts.len()).unwrap_or(u32::MAX)
    }
}

/// The transfers this node sends.
#[derive(Default)]
pub struct TransferSender {
    config: TransferConfig,
    next_id: u64,
    by_peer: BTreeMap<NodeId, Outbound>,
}

impl TransferSender {
    /// No transfer under way.
    pub fn new(config: TransferConfig) -> TransferSender {
        TransferSender { config, next_id: 1, by_peer: BTreeMap::new() }
    }

    /// `to` asks for a transfer, or to resume one. Returns false when it
    /// is refused (too many under way).
    pub fn request(
        &mut self,
        to: NodeId,
        resume: Option<TransferResume>,
        watermarks: Vec<(NodeId, u64)>,
        store: &mut dyn ReplicaStore,
        stats: &mut TransferStats,
        now_ms: u64,
    ) -> bool {
        if let (Some(r), Some(out)) = (resume, self.by_peer.get_mut(&to)) {
            if r.transfer == out.id {
                out.active_ms = now_ms;
                if let Some(&start) = out.chunk_starts.get(r.next_chunk as usize) {
                    // Go on from chunk `k` under a new number, so chunks of
                    // the first series still in flight cannot be taken for
                    // the new ones (whose bounds may differ).
                    out.chunk_starts.truncate(r.next_chunk as usize);
                    out.next_key = start;
                    out.finished = false;
                    out.id = self.next_id;
                    self.next_id += 1;
                    stats.resumes_served += 1;
                }
                return true;
            }
        }
        let busy = self.by_peer.len() >= self.config.outbound_count_max && !self.by_peer.contains_key(&to);
        if busy {
            stats.refused_busy += 1;
            return false;
        }
        let mut keys = store.keys();
        keys.sort_unstable();
        let id = self.next_id;
        self.next_id += 1;
        stats.sent_started += 1;
        self.by_peer.insert(
            to,
            Outbound {
                id,
                keys,
                chunk_starts: Vec::new(),
                next_key: 0,
                watermarks,
                finished: false,
                active_ms: now_ms,
            },
        );
        true
    }

    /// The transport refused chunk `index` of the transfer to `to`: make
    /// it again.
    pub fn refused(&mut self, to: NodeId, transfer: u64, index: u32) {
        if let Some(out) = self.by_peer.get_mut(&to) {
            if out.id == transfer {
                if let Some(&start) = out.chunk_starts.get(index as usize) {
                    out.chunk_starts.truncate(index as usize);
                    out.next_key = start;
                    out.finished = false;
                }
            }
        }
    }

    /// Whether a chunk is waiting to be made.
    pub fn has_pending(&self) -> bool {
        self.by_peer.values().any(|o| !o.finished)
    }

    /// The next chunk, for the first peer (in id order) with one pending,
    /// no larger than `bytes_budget` (a single register larger than the
    /// chunk bound still goes alone, when the budget takes it).
    pub fn poll_chunk(
        &mut self,
        me: NodeId,
        store: &mut dyn ReplicaStore,
        bytes_budget: usize,
        now_ms: u64,
    ) -> Option<(NodeId, Message)> {
        let limit = self.config.chunk_bytes_max.min(bytes_budget);
        let (&to, out) = self.by_peer.iter_mut().find(|(_, o)| !o.finished)?;
        let mut registers: Vec<(Key, Arc<Register>)> = Vec::new();
        let mut bytes = 0;
        let mut cursor = out.next_key;
        while let Some(key) = out.keys.get(cursor) {
            // Gone since the snapshot: the sender no longer holds it, which
            // the receiver's drop rule treats as it should.
            let Some(register) = store.register(key) else {
                cursor += 1;
                continue;
            };
            let size = register_size_bytes(key, &register);
            if bytes + size > limit && (!registers.is_empty() || size > bytes_budget) {
                break;
            }
            bytes += size;
            registers.push((key.clone(), register));
            cursor += 1;
        }
        let last = cursor >= out.keys.len();
        if registers.is_empty() && !last {
            // The budget does not take the next register yet.
            return None;
        }
        let index = out.next_index();
        out.chunk_starts.push(out.next_key);
        out.next_key = cursor;
        out.finished = last;
        out.active_ms = now_ms;
        let watermarks = if index == 0 { out.watermarks.clone() } else { Vec::new() };
        let message =
            Message::FullTransferChunk { from: me, transfer: out.id, index, registers, last, watermarks };
        Some((to, message))
    }

    /// The peer is gone: nothing more goes to it.
    pub fn peer_down(&mut self, node: NodeId) {
        self.by_peer.remove(&node);
    }

    /// Gives up transfers idle past `abandon_ms`.
    pub fn handle_timeout(&mut self, stats: &mut TransferStats, now_ms: u64) {
        let abandon = self.config.abandon_ms;
        let before = self.by_peer.len();
        self.by_peer.retain(|_, o| now_ms.saturating_sub(o.active_ms) < abandon);
        stats.abandoned += (before - self.by_peer.len()) as u64;
    }
}

struct Inbound {
    from: NodeId,
    id: u64,
    /// Hashes of the keys received.
    keys: HashSet<u64>,
    chunks: BTreeSet<u32>,
    last: Option<u32>,
    watermarks: Option<Vec<(NodeId, u64)>>,
    progress_ms: u64,
    resume_asked_ms: u64,
    /// The chunk a resume was asked from: chunks from there on come again
    /// under a later transfer number.
    resume_from: Option<u32>,
}

impl Inbound {
    fn first_missing(&self) -> u32 {
        (0..).find(|i| !self.chunks.contains(i)).unwrap_or(0)
    }

    fn ask_resume(&mut self, stats: &mut TransferStats, now_ms: u64) -> TransferResume {
        let next_chunk = self.first_missing();
        self.resume_asked_ms = now_ms;
        self.resume_from = Some(next_chunk);
        stats.resumes_asked += 1;
        TransferResume { transfer: self.id, next_chunk }
    }

    fn is_whole(&self) -> bool {
        self.watermarks.is_some()
            && self.last.is_some_and(|last| self.chunks.len() as u64 == u64::from(last) + 1)
    }
}

/// What a chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Merged; the transfer is not whole yet.
    Merged,
    /// The transfer arrived whole: the drop rule ran; raise the watermarks
    /// to these.
    Whole {
        /// The sender's watermarks when it started.
        watermarks: Vec<(NodeId, u64)>,
        /// Keys dropped by the rule.
        dropped: usize,
    },
    /// The last chunk is in but some are missing: ask to resume.
    Resume(TransferResume),
    /// Not part of the transfer under way; its registers were still merged.
    Stray,
}

/// The one transfer this node receives at a time.
#[derive(Default)]
pub struct TransferReceiver {
    config: TransferConfig,
    current: Option<Inbound>,
}

/// A chunk as it arrived.
pub struct Chunk<'a> {
    /// The sender.
    pub from: NodeId,
    /// Its transfer number.
    pub transfer: u64,
    /// Its index.
    pub index: u32,
    /// Its registers.
    pub registers: &'a [(Key, Arc<Register>)],
    /// Whether it is the last.
    pub last: bool,
    /// The sender's watermarks (chunk 0 only).
    pub watermarks: &'a [(NodeId, u64)],
}

fn key_hash(key: &Key) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl TransferReceiver {
    /// No transfer under way.
    pub fn new(config: TransferConfig) -> TransferReceiver {
        TransferReceiver { config, current: None }
    }

    /// Whether a transfer is under way (from anyone).
    pub fn is_receiving(&self) -> bool {
        self.current.is_some()
    }

    /// The sender of the transfer under way.
    pub fn sender(&self) -> Option<NodeId> {
        self.current.as_ref().map(|c| c.from)
    }

    /// A transfer was asked of `from`: chunks of its next transfer are
    /// expected (replacing any under way).
    pub fn expect(&mut self, from: NodeId, now_ms: u64) {
        if self.current.as_ref().is_some_and(|c| c.from == from) {
            return;
        }
        self.current = Some(Inbound {
            from,
            id: 0,
            keys: HashSet::new(),
            chunks: BTreeSet::new(),
            last: None,
            watermarks: None,
            progress_ms: now_ms,
            resume_asked_ms: now_ms,
            resume_from: None,
        });
    }

    /// Takes a chunk. `covered(dot)` says whether this node applied that
    /// write (its watermarks), for [`ReplicaStore::merge`].
    pub fn on_chunk(
        &mut self,
        chunk: Chunk<'_>,
        store: &mut dyn ReplicaStore,
        covered: &dyn Fn(Dot) -> bool,
        stats: &mut TransferStats,
        now_ms: u64,
    ) -> ChunkOutcome {
        for (key, register) in chunk.registers {
            store.merge(key, register, covered(register.meta.dot));
        }
        let Some(current) = self.current.as_mut().filter(|c| c.from == chunk.from) else {
            stats.stray_chunks += 1;
            return ChunkOutcome::Stray;
        };
        if current.id != chunk.transfer {
            if current.id != 0 && chunk.transfer < current.id {
                stats.stray_chunks += 1;
                return ChunkOutcome::Stray;
            }
            match current.resume_from {
                // The series asked for: keep the chunks before it.
                Some(from) if current.id != 0 && chunk.index >= from => {
                    current.chunks.retain(|&i| i < from);
                    current.last = None;
                }
                _ if current.id == 0 || chunk.index == 0 => {
                    // A new transfer (ours was refused, lost or abandoned
                    // at the sender): start over with it.
                    current.keys.clear();
                    current.chunks.clear();
                    current.last = None;
                    current.watermarks = None;
                }
                _ => {
                    stats.stray_chunks += 1;
                    return ChunkOutcome::Stray;
                }
            }
            current.id = chunk.transfer;
            current.resume_from = None;
        }
        current.keys.extend(chunk.registers.iter().map(|(k, _)| key_hash(k)));
        current.chunks.insert(chunk.index);
        if chunk.index == 0 {
            current.watermarks = Some(chunk.watermarks.to_vec());
        }
        if chunk.last {
            current.last = Some(chunk.index);
        }
        current.progress_ms = now_ms;
        let broken = self.config.debug_drop_partial && chunk.last && current.watermarks.is_some();
        if current.is_whole() || broken {
            let Some(done) = self.current.take() else { return ChunkOutcome::Merged };
            let watermarks = done.watermarks.unwrap_or_default();
            let wm: BTreeMap<NodeId, u64> = watermarks.iter().copied().collect();
            let stale: Vec<(Key, Dot)> = store
                .dots()
                .into_iter()
                .filter(|(k, dot)| dropped_by_transfer(*dot, done.keys.contains(&key_hash(k)), &wm))
                .collect();
            for (key, dot) in &stale {
                store.drop_if_dot(key, *dot);
            }
            stats.received_whole += 1;
            return ChunkOutcome::Whole { watermarks, dropped: stale.len() };
        }
        if chunk.last {
            return ChunkOutcome::Resume(current.ask_resume(stats, now_ms));
        }
        ChunkOutcome::Merged
    }

    /// The sender is gone: the transfer will not complete.
    pub fn peer_down(&mut self, node: NodeId) {
        if self.sender() == Some(node) {
            self.current = None;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.current.as_ref().map(|c| {
            (c.progress_ms.max(c.resume_asked_ms) + self.config.stall_ms)
                .min(c.progress_ms + self.config.abandon_ms)
        })
    }

    /// A stalled transfer asks to resume: `(sender, where)`, or `None` for
    /// a transfer not started yet (the request itself is asked again).
    /// One idle past `abandon_ms` is given up.
    pub fn handle_timeout(
        &mut self,
        stats: &mut TransferStats,
        now_ms: u64,
    ) -> Option<(NodeId, Option<TransferResume>)> {
        let current = self.current.as_mut()?;
        if now_ms.saturating_sub(current.progress_ms) >= self.config.abandon_ms {
            self.current = None;
            stats.abandoned += 1;
            return None;
        }
        let quiet = now_ms.saturating_sub(current.progress_ms.max(current.resume_asked_ms));
        if quiet < self.config.stall_ms {
            return None;
        }
        if current.id == 0 {
            current.resume_asked_ms = now_ms;
            return Some((current.from, None));
        }
        let resume = current.ask_resume(stats, now_ms);
        Some((current.from, Some(resume)))
    }
}
