//! What a node keeps of its replication state across a restart, and how
//! the replicator takes it back: the same code for the node (which reads
//! it from its data dir) and the simulator (which models the data dir).
//!
//! A node that restarts with its data keeps its origin id, so peers must
//! not see any of its sequence numbers twice, and it must know what it has
//! applied, or it would need a full transfer. So three things persist:
//!
//! - the origin's last sequence number (written with every local write);
//! - a checkpoint of the per-origin watermarks ([`crate::core::CoreEvent::Checkpoint`],
//!   every housekeeping period): every delta at or below a watermark was
//!   applied and written to disk before the checkpoint was;
//! - the backlog: every delta applied since, as the full register it left
//!   (written with the register itself), so the watermarks above the
//!   checkpoint are restored exactly and peers that lack a write this node
//!   held are answered from it, not with a full transfer.

use geocache_crdt::{Delta, NodeId};
use std::sync::Arc;

/// The replication state a restarted node resumes from.
#[derive(Clone, Debug, Default)]
pub struct ResumeState {
    /// The last sequence number this origin used.
    pub own_seq: u64,
    /// The last checkpoint of the applied watermarks.
    pub watermarks: Vec<(NodeId, u64)>,
    /// The persisted backlog, oldest first.
    pub backlog: Vec<Arc<Delta>>,
}
