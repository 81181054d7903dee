//! Checkpoints of `entries`: fjall is brought up to what the store holds,
//! so that a restart replays only the journal after the checkpoint and the
//! journal's older segments can go.
//!
//! A checkpoint takes the dirty keys and the journal position they cover
//! (everything up to it on the OS), writes what the store holds for each
//! key (or removes it), then records the position, the sequence number in
//! use and the watermarks, and flushes fjall to the device. The store may
//! hold newer states than the position says: a replay merges the journal's
//! records into them, and registers only grow by merges, so a replay of a
//! change fjall already holds changes nothing.

use fjall::PersistMode;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::disk::{Disk, DiskError, HeldEntries};
use super::records::*;

/// A checkpoint at least this often while anything changed.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);
/// Keys written to fjall in one batch.
const BATCH_KEYS: u64 = 4_096;

impl Disk {
    /// Brings `entries` up to `held` (see the module's doc).
    ///
    /// # Errors
    ///
    /// [`DiskError`]: the data dir failed (and says so from then on).
    pub fn checkpoint_entries(&self, held: &dyn HeldEntries) -> Result<(), DiskError> {
        if let Some(why) = self.failure() {
            return Err(DiskError(why.to_string()));
        }
        let taken = self.journal.take_for_checkpoint();
        if taken.dirty.is_empty() && taken.upto == self.entries_upto.load(Ordering::Acquire) {
            return Ok(());
        }
        let started = Instant::now();
        let written = if taken.dirty.overflowed() {
            self.walk_store(held)?
        } else {
            self.ingest(taken.dirty.sorted())?
        };
        // Every sequence number a state written above may carry is in the
        // journal, on the device, before the checkpoint says it is used.
        let (seq, hlc) = self.journal.seq_high_synced();
        let mut last = self.db.batch();
        last.insert(&self.life, LIFE_SEQ, encode_u64s(&[seq, hlc]));
        last.insert(&self.life, LIFE_ENTRIES_UPTO, encode_u64s(&[taken.upto]));
        if let Some(watermarks) = taken.watermarks {
            last.insert(&self.life, LIFE_CHECKPOINT, watermarks);
        }
        last.commit().map_err(|e| self.failed(e))?;
        self.db.persist(PersistMode::SyncAll).map_err(|e| self.failed(e))?;
        self.entries_upto.store(taken.upto, Ordering::Release);
        self.journal.retire(taken.upto, self.keep_bytes, self.keep_age);
        tracing::debug!(
            keys = written,
            upto = taken.upto,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint of entries"
        );
        Ok(())
    }

    /// Writes what the store holds for each dirty key (or removes it), in
    /// key order straight into new tables (fjall's ingestion): no memtable,
    /// no fjall journal, a fraction of a batch's cost per key.
    fn ingest(&self, sorted: Vec<(&[u8], Option<&geocache_crdt::Register>)>) -> Result<u64, DiskError> {
        if sorted.is_empty() {
            return Ok(0);
        }
        let mut ingestion = self.entries.start_ingestion().map_err(|e| self.failed(e))?;
        for (packed, held) in &sorted {
            let wrote = match held {
                Some(register) => ingestion.write(*packed, encode_register(register)),
                None => ingestion.write_tombstone(*packed),
            };
            wrote.map_err(|e| self.failed(e))?;
        }
        ingestion.finish().map_err(|e| self.failed(e))?;
        Ok(sorted.len() as u64)
    }

    /// The dirty keys lost track: writes every entry held, and removes
    /// every key on disk that is no longer held, in batches.
    fn walk_store(&self, held: &dyn HeldEntries) -> Result<u64, DiskError> {
        let mut batch = self.db.batch();
        let mut written = 0u64;
        let mut failed = None;
        let mut commit_every = |batch: &mut fjall::OwnedWriteBatch, written: u64| {
            if written.is_multiple_of(BATCH_KEYS) {
                if let Err(e) = std::mem::replace(batch, self.db.batch()).commit() {
                    failed.get_or_insert(e);
                }
            }
        };
        held.for_each_held(&mut |packed, register| {
            batch.insert(&self.entries, packed, encode_register(register));
            written += 1;
            commit_every(&mut batch, written);
        });
        for guard in self.entries.iter() {
            let key = guard.key().map_err(|e| self.failed(e))?;
            if !held.holds(&key) {
                batch.remove(&self.entries, key);
                written += 1;
                commit_every(&mut batch, written);
            }
        }
        if let Some(e) = failed {
            return Err(self.failed(e));
        }
        batch.commit().map_err(|e| self.failed(e))?;
        Ok(written)
    }

    /// The checkpoint thread's loop: until the disk closes (one last
    /// checkpoint then) or the store is gone.
    pub(super) fn run_checkpoints(&self, held: &Weak<dyn HeldEntries>) {
        loop {
            self.journal.wait_checkpoint_due(CHECKPOINT_INTERVAL);
            let Some(store) = held.upgrade() else { return };
            // A failure is logged and counted where it happened; the
            // journal still holds every change.
            let _ = self.checkpoint_entries(&*store);
            if self.stopping.load(Ordering::Acquire) || self.failure().is_some() {
                return;
            }
        }
    }
}
