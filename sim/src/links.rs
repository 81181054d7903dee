//! What the network does to a message: partitions, isolation, loss (by
//! region pair and by message kind), delay and jitter, bandwidth, and the
//! sender's queue toward a slow node, whose bytes count against the
//! sender's budget as the transport's queues do in the node.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::scenario::NetworkSpec;

/// Bytes a node's transport queues may hold (as `QuicConfig`'s default).
pub const QUEUED_BYTES_MAX: u64 = 64 << 20;
/// Bytes queued toward one peer past which a frame is refused, as a full
/// per-peer queue refuses it in the node.
pub const PEER_QUEUED_BYTES_MAX: u64 = 16 << 20;

/// The network between the simulated nodes.
pub struct Links {
    /// One-way delay between regions, µs.
    pub delays_us: Vec<Vec<u64>>,
    /// Region pairs cut off from each other.
    pub partitions: BTreeSet<(usize, usize)>,
    /// Loss by region pair, overriding the network's.
    pub loss: BTreeMap<(usize, usize), f64>,
    /// Loss by message kind (`Message::kind`), on every link.
    pub kind_loss: BTreeMap<String, f64>,
    /// Nodes whose inbound link is slow: Mbit/s.
    pub slow: BTreeMap<usize, f64>,
    /// When each (sender, slow receiver) link is free again, µs.
    busy_until_us: BTreeMap<(usize, usize), u64>,
    /// Per sender, bytes waiting to leave, by departure.
    queued: Vec<BinaryHeap<Reverse<(u64, u64)>>>,
    queued_bytes: Vec<u64>,
}

/// Where a message is going and what it is.
pub struct Hop {
    /// Sender and receiver node indexes.
    pub from: usize,
    /// The receiver.
    pub to: usize,
    /// Their regions.
    pub from_region: usize,
    /// The receiver's region.
    pub to_region: usize,
    /// Whether either end is isolated.
    pub isolated: bool,
    /// Encoded bytes.
    pub bytes: u64,
    /// `Message::kind`, or `membership`.
    pub kind: &'static str,
}

/// What became of a message.
pub enum Fate {
    /// Delivered after this many µs.
    After(u64),
    /// Lost on the way.
    Lost,
    /// Refused at the sender: the queue toward the receiver is full.
    Refused,
}

impl Links {
    /// Links for `nodes` nodes.
    pub fn new(delays_us: Vec<Vec<u64>>, nodes: usize) -> Links {
        Links {
            delays_us,
            partitions: BTreeSet::new(),
            loss: BTreeMap::new(),
            kind_loss: BTreeMap::new(),
            slow: BTreeMap::new(),
            busy_until_us: BTreeMap::new(),
            queued: (0..nodes).map(|_| BinaryHeap::new()).collect(),
            queued_bytes: vec![0; nodes],
        }
    }

    /// What node `from`'s transport queues can still take at `now_us`.
    pub fn budget(&mut self, from: usize, now_us: u64) -> usize {
        let heap = &mut self.queued[from];
        while let Some(&Reverse((at, bytes))) = heap.peek() {
            if at > now_us {
                break;
            }
            heap.pop();
            self.queued_bytes[from] -= bytes;
        }
        usize::try_from(QUEUED_BYTES_MAX.saturating_sub(self.queued_bytes[from])).unwrap_or(0)
    }

    /// Sends a message at `now_us`.
    pub fn send(&mut self, hop: &Hop, net: &NetworkSpec, rng: &mut ChaCha8Rng, now_us: u64) -> Fate {
        let (rf, rt) = (hop.from_region, hop.to_region);
        let pair = (rf.min(rt), rf.max(rt));
        // A slow receiver: the bytes wait in the sender's queue.
        let mut departure = now_us;
        if let Some(&mbps) = self.slow.get(&hop.to) {
            let busy = self.busy_until_us.entry((hop.from, hop.to)).or_insert(now_us);
            let backlog_us = busy.saturating_sub(now_us);
            let backlog_bytes = (backlog_us as f64 * mbps / 8.0) as u64;
            if hop.kind != "membership" && backlog_bytes + hop.bytes > PEER_QUEUED_BYTES_MAX {
                return Fate::Refused;
            }
            departure = (*busy).max(now_us) + (hop.bytes as f64 * 8.0 / mbps.max(0.001)) as u64;
            *busy = departure;
            if hop.kind != "membership" {
                self.queued[hop.from].push(Reverse((departure, hop.bytes)));
                self.queued_bytes[hop.from] += hop.bytes;
            }
        }
        if self.partitions.contains(&pair) || hop.isolated {
            return Fate::Lost;
        }
        let loss = self.loss.get(&pair).copied().unwrap_or(if rf == rt { 0.0 } else { net.loss });
        let kind_loss = self.kind_loss.get(hop.kind).copied().unwrap_or(0.0);
        if loss > 0.0 && rng.random_range(0.0..1.0) < loss {
            return Fate::Lost;
        }
        if kind_loss > 0.0 && rng.random_range(0.0..1.0) < kind_loss {
            return Fate::Lost;
        }
        let mut delay = self.delays_us[rf][rt] + (departure - now_us);
        if net.jitter_ms > 0.0 {
            delay += (rng.random_range(0.0..1.0) * net.jitter_ms * 1_000.0) as u64;
        }
        if rf != rt && net.bandwidth_mbps > 0.0 {
            delay += (hop.bytes as f64 * 8.0 / net.bandwidth_mbps) as u64;
        }
        Fate::After(delay)
    }
}
