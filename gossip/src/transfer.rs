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

/// The drop rule of a full transfer that arrived whole, for a key held
/// here that the sender did not send:
///
/// - the sender had applied the write held here (by its watermarks): it
///   was deleted, evicted or expired there and goes here too, or it would
///   be resurrected;
/// - the write is another node's and the sender applied it during the
///   transfer: it goes too. The sender had it and no longer holds it; and
///   had it held a newer write to the key and evicted it, the watermarks
///   this node takes from the transfer would say it has that write, and it
///   would keep the older value for good. A miss is allowed, a stale value
///   is not;
/// - the write is this node's own: the same at the start only (this node
///   may hold its only copy).
///
/// "Had applied" is judged by the watermarks at the start for any write,
/// and by those at the end (when the sender last looked for keys made
/// since its snapshot, and sent them too) for another node's write: a
/// write the sender never saw stays, wherever it comes from.
pub fn dropped_by_transfer(
    dot: Dot,
    sent_by_sender: bool,
    at_start: &BTreeMap<NodeId, u64>,
    at_end: &BTreeMap<NodeId, u64>,
    me: NodeId,
) -> bool {
    let covered = |wm: &BTreeMap<NodeId, u64>| wm.get(&dot.origin).is_some_and(|&w| dot.seq <= w);
    !sent_by_sender && (covered(at_start) || (dot.origin != me && covered(at_end)))
}

/// How many times a sender looks again for keys made since its snapshot
/// before it sends the last chunk.
const RESCANS_MAX: u32 = 4;

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
    /// The watermarks when the sender last looked for new keys.
    end_watermarks: Vec<(NodeId, u64)>,
    /// Where each sorted run of `keys` starts: the snapshot, then the keys
    /// each rescan found.
    runs: Vec<usize>,
    rescans: u32,
    /// The transfer number this series goes on from (after a resume).
    continues: Option<u64>,
    /// Whether the last chunk has been made (the transfer is kept a while
    /// for resumes).
    finished: bool,
    active_ms: u64,
}

impl Outbound {
    /// Whether `key` is in the snapshot or a rescan already.
    fn holds(&self, key: &Key) -> bool {
        let ends = self.runs.iter().skip(1).copied().chain([self.keys.len()]);
        self.runs.iter().zip(ends).any(|(&a, b)| self.keys[a..b].binary_search(key).is_ok())
    }

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
                    out.continues = Some(out.id);
                    out.id = self.next_id;
                    self.next_id += 1;
                    stats.resumes_served += 1;
                }
                return true;
            }
        }
        // Asked again while one is under way (its chunks may only be slow
        // to arrive): go on with it; the receiver takes it up from any
        // chunk and asks for what it lacks.
        if let (None, Some(out)) = (resume, self.by_peer.get_mut(&to)) {
            if !out.finished {
                out.active_ms = now_ms;
                return true;
            }
        }
        // Finished transfers are kept only to serve resumes: they do not
        // count against the bound, and go first when room is needed.
        let sending = self.by_peer.iter().filter(|(n, o)| !o.finished && **n != to).count();
        let busy = sending >= self.config.outbound_count_max;
        if busy {
            stats.refused_busy += 1;
            return false;
        }
        if self.by_peer.len() >= self.config.outbound_count_max * 2 {
            self.by_peer.retain(|_, o| !o.finished);
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
                end_watermarks: watermarks.clone(),
                watermarks,
                runs: vec![0],
                rescans: 0,
                continues: None,
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
    ///
    /// `watermarks` reads the sender's watermarks now: taken with a rescan
    /// for keys made since the snapshot, when the snapshot is all sent.
    pub fn poll_chunk(
        &mut self,
        me: NodeId,
        store: &mut dyn ReplicaStore,
        bytes_budget: usize,
        now_ms: u64,
        watermarks: &dyn Fn() -> Vec<(NodeId, u64)>,
    ) -> Option<(NodeId, Message)> {
        let limit = self.config.chunk_bytes_max.min(bytes_budget);
        let (&to, out) = self.by_peer.iter_mut().find(|(_, o)| !o.finished)?;
        let mut registers: Vec<(Key, Arc<Register>)> = Vec::new();
        let mut bytes = 0;
        let mut cursor = out.next_key;
        loop {
            let mut full = false;
            while let Some(key) = out.keys.get(cursor) {
                // Gone since the snapshot: the sender no longer holds it,
                // which the receiver's drop rule treats as it should.
                let Some(register) = store.register(key) else {
                    cursor += 1;
                    continue;
                };
                let size = register_size_bytes(key, &register);
                if bytes + size > limit && (!registers.is_empty() || size > bytes_budget) {
                    full = true;
                    break;
                }
                bytes += size;
                registers.push((key.clone(), register));
                cursor += 1;
            }
            if full || out.rescans >= RESCANS_MAX {
                break;
            }
            // The snapshot is all sent: keys made since go too, and the
            // watermarks read with this look are the transfer's end.
            out.rescans += 1;
            out.end_watermarks = watermarks();
            let mut fresh: Vec<Key> = store.keys().into_iter().filter(|k| !out.holds(k)).collect();
            if fresh.is_empty() {
                break;
            }
            fresh.sort_unstable();
            out.runs.push(out.keys.len());
            out.keys.extend(fresh);
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
        let end_watermarks = if last { out.end_watermarks.clone() } else { Vec::new() };
        let message = Message::FullTransferChunk {
            from: me,
            transfer: out.id,
            continues: out.continues,
            index,
            registers,
            last,
            watermarks,
            end_watermarks,
        };
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
    end_watermarks: Vec<(NodeId, u64)>,
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
    /// The transfer number its series goes on from, after a resume.
    pub continues: Option<u64>,
    /// Its index.
    pub index: u32,
    /// Its registers.
    pub registers: &'a [(Key, Arc<Register>)],
    /// Whether it is the last.
    pub last: bool,
    /// The sender's watermarks at the start (chunk 0 only).
    pub watermarks: &'a [(NodeId, u64)],
    /// The sender's watermarks at the end (last chunk only).
    pub end_watermarks: &'a [(NodeId, u64)],
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
            end_watermarks: Vec::new(),
            progress_ms: now_ms,
            resume_asked_ms: now_ms,
            resume_from: None,
        });
    }

    /// Takes a chunk. `covered(dot)` says whether this node applied that
    /// write (its watermarks), for [`ReplicaStore::merge`].
    pub fn on_chunk(
        &mut self,
        me: NodeId,
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
            match (chunk.continues, current.resume_from) {
                // The series asked for: keep the chunks before it.
                (Some(base), Some(from)) if base == current.id && chunk.index >= from => {
                    current.chunks.retain(|&i| i < from);
                    current.last = None;
                }
                // A transfer already under way that this node had lost
                // track of: take it up; the chunks before are asked for.
                (Some(_), _) if current.id == 0 => {}
                (Some(_), _) => {
                    stats.stray_chunks += 1;
                    return ChunkOutcome::Stray;
                }
                // A new transfer (ours was refused, lost or abandoned at
                // the sender), whichever of its chunks comes first: start
                // over with it.
                (None, _) => {
                    current.keys.clear();
                    current.chunks.clear();
                    current.last = None;
                    current.watermarks = None;
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
            current.end_watermarks = chunk.end_watermarks.to_vec();
        }
        current.progress_ms = now_ms;
        let broken = self.config.debug_drop_partial && chunk.last && current.watermarks.is_some();
        if current.is_whole() || broken {
            let Some(done) = self.current.take() else { return ChunkOutcome::Merged };
            let watermarks = done.watermarks.unwrap_or_default();
            let wm: BTreeMap<NodeId, u64> = watermarks.iter().copied().collect();
            let end: BTreeMap<NodeId, u64> = done.end_watermarks.iter().copied().collect();
            let stale: Vec<(Key, Dot)> = store
                .dots()
                .into_iter()
                .filter(|(k, dot)| dropped_by_transfer(*dot, done.keys.contains(&key_hash(k)), &wm, &end, me))
                .collect();
            for (key, dot) in &stale {
                store.drop_if_dot(key, *dot);
            }
            stats.received_whole += 1;
            return ChunkOutcome::Whole { watermarks, dropped: stale.len() };
        }
        // A last chunk ahead of a missing one may only have overtaken it
        // (the simulator reorders; a reconnect can too): the stall timer
        // asks for what is still missing, not this chunk.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_transfer_drops_what_the_sender_applied_or_another_node_wrote() {
        let me = NodeId(1);
        let theirs = Dot { origin: NodeId(7), seq: 3 };
        let mine = Dot { origin: me, seq: 3 };
        let wm = |w: u64| BTreeMap::from([(NodeId(7), w), (me, w)]);
        // The sender applied that write before it started and did not send
        // the key: deleted, evicted or expired there, so it goes here too.
        assert!(dropped_by_transfer(theirs, false, &wm(3), &wm(3), me));
        assert!(dropped_by_transfer(mine, false, &wm(9), &wm(9), me));
        // The sender sent the key: its register was merged, nothing to drop.
        assert!(!dropped_by_transfer(theirs, true, &wm(9), &wm(9), me));
        // Another node's write the sender applied during the transfer and
        // did not send: it no longer holds it (it may have evicted a newer
        // one), so holding it on could keep a stale value for good.
        assert!(dropped_by_transfer(theirs, false, &wm(2), &wm(3), me));
        // A write the sender never saw stays, and so does this node's own
        // write seen only during the transfer (it may be the only copy).
        assert!(!dropped_by_transfer(theirs, false, &wm(2), &wm(2), me));
        assert!(!dropped_by_transfer(mine, false, &wm(2), &wm(3), me));
        assert!(!dropped_by_transfer(mine, false, &BTreeMap::new(), &BTreeMap::new(), me));
    }
}
