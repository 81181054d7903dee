//! Persistence (`--data-dir`): the store and this node's replication state
//! on disk, in fjall, so a restarted node continues its life.
//!
//! What lands on disk (docs/OPERATIONS.md, "Persistence"):
//!
//! - `entries`: every register the store holds, tombstones included, by
//!   packed key. The disk mirrors the memory tier: an entry evicted,
//!   expired or dropped in memory is removed on disk.
//! - `backlog`: every delta applied here, as the full register it left,
//!   in the order applied (FIFO, bounded like the in-memory backlog), so a
//!   restart restores the watermarks exactly and still answers peers'
//!   anti-entropy (`geocache_gossip::resume`).
//! - `life`: the data dir's identity (format, cluster, node name), this
//!   node's origin id, its last sequence number and HLC floor, the
//!   watermarks' last checkpoint, the boot it last ran in and whether it
//!   stopped cleanly.
//!
//! Every write reaches the operating system (fjall's journal, committed in
//! groups by `journal_writer.rs`) before it is acknowledged or leaves the
//! node, so a process that is killed loses nothing; `--fsync` decides when
//! the journal is flushed to the device, which is what a power loss
//! respects.

mod disk;
mod engine_files;
mod fsync;
mod identity;
mod journal_writer;
mod records;
mod tail_loss;

pub use disk::{Disk, DiskError, DiskOptions, Loaded, CACHE_BYTES, WRITE_BUFFER_BYTES};
pub use engine_files::{last_engine_file, EngineFileLayer};
pub use fsync::FsyncPolicy;
pub use identity::{DataDirError, DataDirIdentity, FORMAT_VERSION};
