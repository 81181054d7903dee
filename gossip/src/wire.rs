//! What nodes say to each other. Every message is one [`Message`] in the
//! project codec's versioned envelope.

use geocache_crdt::{Delta, Key, NodeId, Register};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Deltas, sent on the peer's ordered stream.
    Deltas {
        /// The sender.
        from: NodeId,
        /// Whether the receiver relays them to its own region (it is the
        /// origin's relay for that region).
        relay: bool,
        /// Whether the sender wants an `Acks` back: always from a relay
        /// (the origin resends through another if none comes), and from
        /// the origin's region when a write waits for `region` durability.
        ack: bool,
        /// The deltas, oldest first.
        deltas: Vec<Arc<Delta>>,
    },
    /// Which deltas the sender has applied (for durability and relay
    /// resends).
    Acks {
        /// The sender.
        from: NodeId,
        /// `(origin, seq)` of each delta applied.
        applied: Vec<(NodeId, u64)>,
    },
    /// The sender dropped deltas meant for the receiver (a full queue, a
    /// refused frame): the receiver asks it for what it lacks at once.
    SyncHint {
        /// The sender.
        from: NodeId,
    },
    /// Anti-entropy: the sender's watermark per origin.
    SyncRequest {
        /// The sender.
        from: NodeId,
        /// `(origin, watermark)`, every origin the sender knows.
        watermarks: Vec<(NodeId, u64)>,
    },
    /// The answer to a [`Message::SyncRequest`].
    SyncResponse {
        /// Deltas the requester lacks, from the backlog.
        deltas: Vec<Arc<Delta>>,
        /// Origins whose missing deltas the backlog no longer reaches: the
        /// requester needs a full transfer for them.
        beyond_backlog: Vec<NodeId>,
        /// Whether the answer was cut at its byte bound: the requester asks
        /// again at once rather than at the next round.
        truncated: bool,
        /// The answering node's applied watermark of the requester's own
        /// writes: what a draining node waits on.
        requester_watermark: u64,
    },
    /// Asks for a full state transfer (the backlog no longer reaches), or
    /// for the rest of one cut short.
    FullTransferRequest {
        /// The sender.
        from: NodeId,
        /// Where to resume a transfer already under way; `None` starts one.
        resume: Option<TransferResume>,
    },
    /// One numbered chunk of a full state transfer, on the ordered stream.
    FullTransferChunk {
        /// The sender.
        from: NodeId,
        /// Which transfer (the sender numbers them).
        transfer: u64,
        /// After a resume: the transfer number this series goes on from
        /// (at the chunk asked); `None` for a transfer from its start.
        continues: Option<u64>,
        /// The chunk's number in the transfer, from 0.
        index: u32,
        /// Registers held by the sender, tombstones included, in key
        /// order and bounded in bytes.
        registers: Vec<(Key, Arc<Register>)>,
        /// Whether this is the last chunk.
        last: bool,
        /// The sender's watermarks when the transfer started (in chunk 0;
        /// empty after).
        watermarks: Vec<(NodeId, u64)>,
        /// The sender's watermarks when it last looked for keys made since
        /// its snapshot (in the last chunk; empty before).
        end_watermarks: Vec<(NodeId, u64)>,
    },
    /// Registers the sender holds that win over a write the receiver sent
    /// it without having seen them (the write lost the last-writer-wins
    /// merge there, so the receiver alone would keep it): the receiver
    /// merges them. Sent on the first hop only, bounded in bytes.
    Repair {
        /// The sender.
        from: NodeId,
        /// The registers, each as the sender holds it.
        registers: Vec<(Key, Arc<Register>)>,
    },
    /// A sidecar missed `key`: asks a full node of its region for it, on
    /// the ordered stream.
    FillRequest {
        /// The sender.
        from: NodeId,
        /// The key.
        key: Key,
        /// The highest write of each origin the sender has applied, stored
        /// or not: the answer is only taken from a node that has applied
        /// all of them, so a sidecar never takes a value older than one it
        /// has seen.
        seen: Vec<(NodeId, u64)>,
    },
    /// The answer to a [`Message::FillRequest`], on the ordered stream.
    FillAnswer {
        /// The sender.
        from: NodeId,
        /// The key asked for.
        key: Key,
        /// The register held, tombstones included; `None` when none is.
        register: Option<Arc<Register>>,
        /// Whether the sender is a full node: a sidecar vouches for no key,
        /// and its answer is a miss.
        full: bool,
        /// Origins of the request's `seen` the sender has not applied
        /// through, with its watermark of each: the asker merges what its
        /// own backlog holds of the key after it, or misses.
        lacking: Vec<(NodeId, u64)>,
    },
    /// A sidecar tells a full node of its region which keys it began or
    /// ceased to hold (`interest.rs`): the full node sends it whole deltas
    /// of held keys only, and the rest with their body left out.
    Interest {
        /// The sender.
        from: NodeId,
        /// Keys it holds now.
        held: Vec<Key>,
        /// Keys it does not hold (it was sent a whole delta of each).
        not_held: Vec<Key>,
    },
    /// A strong key's consensus (`strong/`): a proposer's prepare or
    /// accept, or an acceptor's answer, on the ordered stream.
    Strong {
        /// The sender.
        from: NodeId,
        /// The CASPaxos message.
        message: crate::strong::StrongMessage,
    },
}

/// Where a receiver wants a full transfer to go on from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResume {
    /// The transfer, as the sender numbered it.
    pub transfer: u64,
    /// The first chunk the receiver does not have.
    pub next_chunk: u32,
}

impl Message {
    /// The node the message says it comes from (`None` for an answer,
    /// whose sender is the node asked).
    pub fn sender(&self) -> Option<NodeId> {
        match self {
            Message::Deltas { from, .. }
            | Message::Acks { from, .. }
            | Message::SyncRequest { from, .. }
            | Message::SyncHint { from }
            | Message::FullTransferRequest { from, .. }
            | Message::FullTransferChunk { from, .. }
            | Message::Repair { from, .. }
            | Message::FillRequest { from, .. }
            | Message::FillAnswer { from, .. }
            | Message::Interest { from, .. }
            | Message::Strong { from, .. } => Some(*from),
            Message::SyncResponse { .. } => None,
        }
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Deltas { .. } => "deltas",
            Message::Acks { .. } => "acks",
            Message::SyncRequest { .. } | Message::SyncResponse { .. } | Message::SyncHint { .. } => "sync",
            Message::FullTransferRequest { .. } | Message::FullTransferChunk { .. } => "full_transfer",
            Message::Repair { .. } => "repair",
            Message::FillRequest { .. } | Message::FillAnswer { .. } => "fill",
            Message::Interest { .. } => "interest",
            Message::Strong { .. } => "strong",
        }
    }
}
