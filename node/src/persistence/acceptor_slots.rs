//! fjall's `acceptor`: this node's strong acceptor's slots
//! (`geocache_gossip::strong`), one per strong key it answered for, by
//! packed key. A slot is a promise: forgetting one could let two proposers
//! both win, so each is flushed to the device before the answer that
//! changed it leaves the node, whatever `--fsync` says of other writes.

use fjall::PersistMode;
use geocache_crdt::{codec, Key};
use geocache_gossip::strong::Slot;

use super::disk::{Disk, DiskError};
use super::identity::DataDirError;
use crate::store_key;

/// The key in `life` that says this data dir's acceptor took part: its
/// promises are in `acceptor`, so it may answer again after a restart.
const LIFE_ACCEPTOR: &[u8] = b"acceptor";
/// The format byte of a slot record.
const SLOT_V1: u8 = 1;

impl Disk {
    /// Keeps `slot` of `key` on the device.
    ///
    /// # Errors
    ///
    /// [`DiskError`] when it could not be written or flushed: the
    /// acceptor must then not answer.
    pub fn keep_acceptor_slot(&self, key: &Key, slot: &Slot) -> Result<(), DiskError> {
        let mut record = vec![SLOT_V1];
        codec::encode_into(slot, &mut record).map_err(|e| DiskError(format!("encoding a slot: {e}")))?;
        self.acceptor.insert(&store_key::pack(key)[..], record).map_err(|e| DiskError(e.to_string()))?;
        self.db.persist(PersistMode::SyncData).map_err(|e| DiskError(e.to_string()))
    }

    /// Whether this data dir's acceptor has answered before (its promises
    /// are here).
    ///
    /// # Errors
    ///
    /// [`DataDirError`] when the keyspace cannot be read.
    pub fn acceptor_marked(&self) -> Result<bool, DataDirError> {
        self.life.get(LIFE_ACCEPTOR).map(|v| v.is_some()).map_err(|e| self.corrupt_acceptor(e.to_string()))
    }

    /// Records that this data dir's acceptor takes part, before it first
    /// answers.
    ///
    /// # Errors
    ///
    /// [`DiskError`] when it could not be written and flushed.
    pub fn mark_acceptor(&self) -> Result<(), DiskError> {
        self.life.insert(LIFE_ACCEPTOR, [1u8]).map_err(|e| DiskError(e.to_string()))?;
        self.db.persist(PersistMode::SyncData).map_err(|e| DiskError(e.to_string()))
    }

    /// Every slot kept, to give back to the acceptor at start-up.
    ///
    /// # Errors
    ///
    /// [`DataDirError`] naming the keyspace when one cannot be read: an
    /// acceptor must not start without the promises it made.
    pub fn acceptor_slots(&self) -> Result<Vec<(Key, Slot)>, DataDirError> {
        let mut slots = Vec::new();
        let mut namespace = None;
        for item in self.acceptor.iter() {
            let (packed, record) = item.into_inner().map_err(|e| self.corrupt_acceptor(e.to_string()))?;
            let slot = match record.split_first() {
                Some((&SLOT_V1, rest)) => {
                    codec::decode::<Slot>(rest).map_err(|e| self.corrupt_acceptor(e.to_string()))?
                }
                _ => return Err(self.corrupt_acceptor("a slot record of unknown format".into())),
            };
            slots.push((store_key::unpack(&packed, &mut namespace), slot));
        }
        Ok(slots)
    }

    fn corrupt_acceptor(&self, detail: String) -> DataDirError {
        DataDirError::Corrupt {
            dir: self.dir().to_path_buf(),
            file: "keyspace acceptor under fjall/".into(),
            detail,
        }
    }
}
