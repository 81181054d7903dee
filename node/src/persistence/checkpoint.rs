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
const BATCH_KEYS: usize = 4_096;

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
        let mut batch = self.db.batch();
        let mut in_batch = 0;
        let mut written = 0u64;
        let mut result = Ok(());
        let mut write = |packed: &[u8], batch: &mut fjall::OwnedWriteBatch| {
            match held.held(packed) {
                Some(register) => batch.insert(&self.entries, packed, encode_register(&register)),
                None => batch.remove(&self.entries, packed),
            }
            in_batch += 1;
            written += 1;
            if in_batch == BATCH_KEYS {
                let full = std::mem::replace(batch, self.db.batch());
                if let Err(e) = full.commit() {
                    result = Err(self.failed(e));
                }
                in_batch = 0;
            }
        };
        if taken.dirty.overflowed() {
            // The dirty set lost track: every key held, and every key on
            // disk that is no longer held.
            held.for_each_key(&mut |packed| write(packed, &mut batch));
            for guard in self.entries.iter() {
                match guard.key() {
                    Ok(key) if held.held(&key).is_none() => write(&key, &mut batch),
                    Ok(_) => {}
                    Err(e) => return Err(self.failed(e)),
                }
            }
        } else {
            for packed in taken.dirty.keys() {
                write(packed, &mut batch);
            }
        }
        result?;
        batch.commit().map_err(|e| self.failed(e))?;
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
