//! Persistence (`--data-dir`): the store and this node's replication state
//! on disk, in fjall, so a restarted node continues its life.
//!
//! What lands on disk (docs/OPERATIONS.md, "Persistence"):
//!
//! - `journal/`: every change to the store, appended in the order it was
//!   applied: every delta applied here as the full register it left, the
//!   registers merged from full transfers, and the watermarks' checkpoints
//!   (`journal.rs`, group-committed by `journal_writer.rs`). Its recent
//!   part is the backlog a restart gives back to peers.
//! - fjall's `entries`: every register the store holds, tombstones
//!   included, by packed key, as of the last checkpoint (`checkpoint.rs`):
//!   a restart loads it, then replays the journal after it.
//! - fjall's `acceptor`: the strong acceptor's promises, each flushed
//!   before its answer leaves (`acceptor_slots.rs`).
//! - fjall's `life`: the data dir's identity (format, cluster, node name),
//!   this node's origin id, the sequence number and HLC floor in use, the
//!   position the last checkpoint covers, the watermarks it saw, the boot
//!   it last ran in and whether it stopped cleanly.
//!
//! Every write reaches the operating system (the journal) before it is
//! acknowledged or leaves the node, so a process that is killed loses
//! nothing; `--fsync` decides when the journal is flushed to the device,
//! which is what a power loss respects. fjall sees one insert per key
//! changed between two checkpoints, not one per write.

mod acceptor_slots;
mod checkpoint;
mod dirty_keys;
mod disk;
mod engine_files;
mod fsync;
mod identity;
mod journal;
mod journal_writer;
mod records;
mod tail_loss;

pub use checkpoint::CHECKPOINT_INTERVAL;
pub use dirty_keys::DirtyKeys;
pub use disk::{Disk, DiskError, DiskOptions, HeldEntries, Loaded, CACHE_BYTES, WRITE_BUFFER_BYTES};
pub use engine_files::{last_engine_file, EngineFileLayer};
pub use fsync::FsyncPolicy;
pub use identity::{DataDirError, DataDirIdentity, FORMAT_VERSION};
