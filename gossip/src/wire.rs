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
        /// Whether the answer was cut at the size bound (ask again).
        truncated: bool,
    },
    /// Asks for a full state transfer (the backlog no longer reaches).
    FullTransferRequest {
        /// The sender.
        from: NodeId,
    },
    /// One chunk of a full state transfer, on the ordered stream.
    FullTransferChunk {
        /// The sender.
        from: NodeId,
        /// Registers held by the sender, tombstones included.
        registers: Vec<(Key, Arc<Register>)>,
        /// Whether this is the last chunk.
        last: bool,
        /// The sender's watermarks when the transfer started (in the last
        /// chunk; empty before).
        watermarks: Vec<(NodeId, u64)>,
    },
}
