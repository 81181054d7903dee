//! The data dir: fjall's keyspaces, what a restart finds in them, the
//! writes the store queues for them (committed by `journal_writer.rs`),
//! and the load at start-up.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use geocache_crdt::{Delta, Hlc, NodeId, Register};
use geocache_gossip::resume::ResumeState;
use prometheus_client::metrics::counter::Counter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::fsync::FsyncPolicy;
use super::identity::{DataDirError, DataDirIdentity, FORMAT_VERSION};
use super::journal_writer::{Item, JournalWriter, Space, Spaces};
use super::records::{self, *};
use super::tail_loss;

/// fjall's block cache: the data dir is read at start-up only, so small.
pub const CACHE_BYTES: u64 = 8 << 20;
/// fjall's memtables at most: the active ones (16 + 16 + 1 MiB) and the
/// sealed ones waiting for their flush, which the journal limit bounds
/// (past it fjall makes writes wait for flushes).
pub const WRITE_BUFFER_BYTES: u64 = ((16 + 16 + 1) << 20) + JOURNAL_BYTES_MAX;
/// One memtable of `entries` or `backlog`.
const MEMTABLE_BYTES: u64 = 16 << 20;
/// Journals kept at most before fjall flushes the memtables they cover.
const JOURNAL_BYTES_MAX: u64 = 64 << 20;

/// A write to the data dir failed: the disk no longer mirrors the store.
#[derive(Clone, Debug, thiserror::Error)]
#[error("writing to the data dir failed: {0}")]
pub struct DiskError(pub String);

/// What the data dir held of this node's life when it was opened.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The origin id to continue under; `None` for a new life.
    pub origin: Option<NodeId>,
    /// The HLC floor: no stamp this node issues again is below it.
    pub hlc_floor: Hlc,
    /// Why the node starts a new life despite its data, if it does.
    pub new_life_reason: Option<&'static str>,
    /// The replication state to resume from (`geocache_gossip::resume`):
    /// its `own_seq` is this life's (0 for a new one).
    pub resume: ResumeState,
}

/// How the data dir is set up.
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// `--fsync`.
    pub fsync: FsyncPolicy,
    /// The in-memory backlog's bounds: the disk keeps at least as much.
    pub backlog_bytes_max: u64,
    /// The backlog's age bound.
    pub backlog_age: Duration,
}

/// The node's data dir. Shared by the store (which writes through it),
/// replication (checkpoints) and the write path (waits for durability).
pub struct Disk {
    dir: PathBuf,
    db: Database,
    entries: Keyspace,
    life: Keyspace,
    policy: FsyncPolicy,
    next_backlog: AtomicU64,
    journal: Arc<JournalWriter>,
    failure: Arc<OnceLock<String>>,
    /// Failed writes and flushes.
    pub errors: Counter,
}

fn io(dir: &Path, e: impl std::fmt::Display) -> DataDirError {
    DataDirError::Io { dir: dir.to_path_buf(), detail: e.to_string() }
}

/// A storage-engine error at open or load: a damaged file if the engine
/// says so, naming the file when it can be found.
fn engine(dir: &Path, what: &str, e: fjall::Error) -> DataDirError {
    let damaged = matches!(
        e,
        fjall::Error::JournalRecovery(_)
            | fjall::Error::InvalidVersion(_)
            | fjall::Error::Decompress(_)
            | fjall::Error::InvalidTrailer
            | fjall::Error::InvalidTag(_)
            | fjall::Error::Unrecoverable
            | fjall::Error::Storage(_)
    );
    if damaged {
        let file = match &e {
            fjall::Error::InvalidVersion(_) => dir.join("fjall/version").display().to_string(),
            _ => super::last_engine_file().unwrap_or_else(|| what.to_string()),
        };
        DataDirError::Corrupt { dir: dir.to_path_buf(), file, detail: format!("{e:?}") }
    } else {
        io(dir, format!("{what}: {e}"))
    }
}

impl Disk {
    /// Opens (or creates) the data dir at `dir` for node `me`.
    ///
    /// # Errors
    ///
    /// [`DataDirError`]: another cluster's, another node's, a newer
    /// format, a damaged file (named), or IO.
    pub fn open(
        dir: &Path,
        me: &DataDirIdentity,
        options: &DiskOptions,
    ) -> Result<(Arc<Disk>, Loaded), DataDirError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let journals_before = tail_loss::journal_extents(&dir.join("fjall"));
        // Commits fill fjall's journal buffer; `wait_os` hands it to the OS
        // (one `write` for every commit since) before replies or deltas
        // leave, so a killed process loses nothing it acknowledged.
        let db = Database::builder(dir.join("fjall"))
            .manual_journal_persist(true)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .open()
            .map_err(|e| engine(dir, "the journal or a table under fjall/", e))?;
        let cut = tail_loss::journal_cuts(&journals_before, &dir.join("fjall"));
        if !cut.is_empty() {
            tracing::warn!(files = ?cut, "the data dir's journal was cut where it could no longer be read (a torn write, or damage): the writes after that point are lost on this node, and its peers send them back");
        }
        let open = |name: &str, options: KeyspaceCreateOptions| {
            db.keyspace(name, || options)
                .map_err(|e| engine(dir, &format!("keyspace {name} under fjall/"), e))
        };
        let life = open("life", KeyspaceCreateOptions::default().max_memtable_size(1 << 20))?;
        let entries = open("entries", KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES))?;
        // Positions only grow, so the oldest tables are the oldest deltas:
        // FIFO drops them past twice the in-memory bounds.
        let fifo = fjall::compaction::Fifo::new(
            options.backlog_bytes_max.saturating_mul(2).max(8 << 20),
            Some(options.backlog_age.as_secs().saturating_mul(2).max(60)),
        );
        let backlog = open(
            "backlog",
            KeyspaceCreateOptions::default()
                .compaction_strategy(Arc::new(fifo))
                .max_memtable_size(MEMTABLE_BYTES),
        )?;
        let read = |key: &[u8]| life.get(key).map_err(|e| engine(dir, "keyspace life under fjall/", e));
        let corrupt_life = |e: records::RecordError| corrupt(dir, "keyspace life under fjall/", e.0);
        let mut loaded = Loaded::default();
        match read(LIFE_IDENTITY)? {
            Some(bytes) => {
                let found: DataDirIdentity = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(dir, "keyspace life under fjall/ (identity)", e.to_string()))?;
                found.check(me, dir)?;
            }
            None => {
                let identity = DataDirIdentity { format: FORMAT_VERSION, ..me.clone() };
                let bytes = serde_json::to_vec(&identity).map_err(|e| io(dir, e))?;
                life.insert(LIFE_IDENTITY, bytes).map_err(|e| io(dir, e))?;
            }
        }
        // The last sequence number: the highest of its record and of this
        // node's own deltas in the backlog (below).
        let mut seq = 0;
        if let Some(bytes) = read(LIFE_SEQ)? {
            let [recorded, hlc] = decode_u64s::<2>(&bytes, "sequence").map_err(corrupt_life)?;
            seq = recorded;
            loaded.hlc_floor = Hlc::from_u64(hlc);
        }
        let clean = read(LIFE_CLEAN)?.is_some_and(|v| v[..] == [1]);
        let boot_now = tail_loss::boot_id();
        let same_boot =
            read(LIFE_BOOT)?.is_some_and(|b| Some(&b[..]) == boot_now.as_deref().map(str::as_bytes));
        let mut previous_origin = None;
        if let Some(bytes) = read(LIFE_ORIGIN)? {
            let [origin] = decode_u64s::<1>(&bytes, "origin").map_err(corrupt_life)?;
            previous_origin = Some(NodeId(origin));
            // After a crash of the machine (not of the process), the journal
            // may have lost its last writes, and with them sequence numbers
            // that peers already hold: reusing them would have those writes
            // taken for duplicates. Then the node keeps its data but writes
            // under a new origin.
            let tail_may_be_lost = !clean && !same_boot && options.fsync != FsyncPolicy::Always;
            if !cut.is_empty() {
                loaded.new_life_reason =
                    Some("the journal was cut where it could no longer be read, losing writes");
            } else if tail_may_be_lost {
                loaded.new_life_reason = Some("the machine restarted since this node last ran, and its journal may have lost its last writes");
            } else {
                loaded.origin = Some(NodeId(origin));
            }
        }
        let next_backlog = match backlog.last_key_value() {
            Some(guard) => {
                let key = guard.key().map_err(|e| engine(dir, "keyspace backlog under fjall/", e))?;
                backlog_position(&key).unwrap_or(0) + 1
            }
            None => 0,
        };
        let checkpoint = match read(LIFE_CHECKPOINT)? {
            Some(bytes) => decode_watermarks(&bytes)
                .map_err(|e| corrupt(dir, "keyspace life under fjall/ (checkpoint)", e.0))?,
            None => Vec::new(),
        };
        let backlog_age_ms = options.backlog_age.as_millis() as u64;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut deltas = Vec::new();
        let backlog_tables = tables_of("backlog", &backlog);
        for guard in backlog.iter() {
            let (_, value) = guard.into_inner().map_err(|e| engine(dir, &backlog_tables, e))?;
            let (delta, wall_ms) = decode_backlog(&value).map_err(|e| corrupt(dir, &backlog_tables, e.0))?;
            // The sequence and clock of this node's own writes, however old.
            if Some(delta.origin) == previous_origin {
                seq = seq.max(delta.seq);
                if let geocache_crdt::DeltaBody::Register(r) = &delta.body {
                    loaded.hlc_floor = loaded.hlc_floor.max(r.meta.stamp.hlc);
                }
            }
            if now_ms.saturating_sub(wall_ms) <= backlog_age_ms {
                deltas.push(Arc::new(delta));
            }
        }
        let own_seq = if loaded.origin.is_some() { seq } else { 0 };
        loaded.resume = ResumeState { own_seq, watermarks: checkpoint, backlog: deltas };
        if let Some(boot) = &boot_now {
            life.insert(LIFE_BOOT, boot.as_bytes()).map_err(|e| io(dir, e))?;
        }
        life.insert(LIFE_CLEAN, [0u8]).map_err(|e| io(dir, e))?;
        db.persist(PersistMode::SyncAll).map_err(|e| io(dir, e))?;
        let failure = Arc::new(OnceLock::new());
        let errors = Counter::default();
        let spaces =
            Spaces { db: db.clone(), entries: entries.clone(), backlog: backlog.clone(), life: life.clone() };
        let on_failure = {
            let (failure, errors, dir) = (failure.clone(), errors.clone(), dir.to_path_buf());
            move |why: String| {
                note_failure(&failure, &errors, &dir, why);
            }
        };
        let journal = JournalWriter::start(spaces, options.fsync, failure.clone(), on_failure)
            .map_err(|e| io(dir, format!("starting the journal writer: {e}")))?;
        let disk = Arc::new(Disk {
            dir: dir.to_path_buf(),
            db,
            entries,
            life,
            policy: options.fsync,
            next_backlog: AtomicU64::new(next_backlog),
            journal,
            failure,
            errors,
        });
        Ok((disk, loaded))
    }

    /// Records the new origin id this life writes under: its sequence
    /// starts again, its clock does not go below `hlc_floor`.
    ///
    /// # Errors
    ///
    /// [`DiskError`].
    pub fn set_origin(&self, origin: NodeId, hlc_floor: Hlc) -> Result<(), DiskError> {
        let mut batch = self.db.batch();
        batch.insert(&self.life, LIFE_ORIGIN, encode_u64s(&[origin.0]));
        batch.insert(&self.life, LIFE_SEQ, encode_u64s(&[0, hlc_floor.as_u64()]));
        batch.commit().map_err(|e| self.failed(e))?;
        self.db.persist(PersistMode::SyncAll).map_err(|e| self.failed(e))
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Why the disk no longer mirrors the store, once a write failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    fn failed(&self, e: impl std::fmt::Display) -> DiskError {
        DiskError(note_failure(&self.failure, &self.errors, &self.dir, e.to_string()))
    }

    fn backlog_item(&self, full: &Delta, wall_ms: u64) -> Item {
        let position = self.next_backlog.fetch_add(1, Ordering::Relaxed);
        Item {
            space: Space::Backlog,
            key: Box::new(backlog_key(position)),
            value: Some(encode_backlog(full, wall_ms)),
        }
    }

    fn entry_item(packed: &[u8], register: &Register) -> Item {
        Item { space: Space::Entries, key: packed.into(), value: Some(encode_register(register)) }
    }

    /// A local write: the register, the delta for the backlog and the
    /// origin's sequence number, committed together. Returns its position
    /// (for [`Disk::wait_durable`]).
    pub fn write_local(&self, packed: &[u8], register: &Register, full: &Delta, wall_ms: u64) -> u64 {
        self.journal.submit_local(
            vec![Disk::entry_item(packed, register), self.backlog_item(full, wall_ms)],
            full.seq,
            register.meta.stamp.hlc.as_u64(),
        )
    }

    /// A replicated write applied here: the register if it changed what
    /// is held, and the delta for the backlog always (its seq is applied).
    pub fn write_applied(
        &self,
        packed: &[u8],
        register: Option<&Register>,
        full: &Delta,
        wall_ms: u64,
    ) -> u64 {
        let mut items = Vec::with_capacity(2);
        if let Some(register) = register {
            items.push(Disk::entry_item(packed, register));
        }
        items.push(self.backlog_item(full, wall_ms));
        self.journal.submit(items)
    }

    /// A register merged from a full transfer or loaded and changed.
    pub fn write_register(&self, packed: &[u8], register: &Register) -> u64 {
        self.journal.submit(vec![Disk::entry_item(packed, register)])
    }

    /// An entry left memory (evicted, expired, dropped): it leaves disk.
    pub fn remove(&self, packed: &[u8]) {
        self.journal.submit(vec![Item { space: Space::Entries, key: packed.into(), value: None }]);
    }

    /// The watermarks' checkpoint (`geocache_gossip::resume`).
    pub fn checkpoint(&self, watermarks: &[(NodeId, u64)]) {
        let item = Item {
            space: Space::Life,
            key: LIFE_CHECKPOINT.into(),
            value: Some(encode_watermarks(watermarks)),
        };
        self.journal.submit(vec![item]);
    }

    /// The position of the last write queued.
    pub fn queued(&self) -> u64 {
        self.journal.enqueued()
    }

    /// Resolves once every write queued so far reached the OS: awaited
    /// before a reply or a delta leaves, so a killed process loses nothing
    /// acknowledged.
    pub async fn wait_os(&self) {
        self.journal.wait_os(self.journal.enqueued()).await;
    }

    /// Every register held, in key order, handed to `each` with its packed
    /// key. A damaged record stops the load with the keyspace named.
    ///
    /// # Errors
    ///
    /// [`DataDirError::Corrupt`].
    pub fn load_entries(&self, mut each: impl FnMut(&[u8], Register)) -> Result<u64, DataDirError> {
        let mut count = 0;
        let tables = tables_of("entries", &self.entries);
        for guard in self.entries.iter() {
            let (key, value) = guard.into_inner().map_err(|e| engine(&self.dir, &tables, e))?;
            let register = decode_register(&value).map_err(|e| corrupt(&self.dir, &tables, e.0))?;
            each(&key, register);
            count += 1;
        }
        Ok(count)
    }

    /// Bytes the data dir takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// Resolves once the write at `position` is on the device (flushed now
    /// rather than at the next interval).
    ///
    /// # Errors
    ///
    /// [`DiskError`] when the data dir failed meanwhile.
    pub async fn wait_durable(&self, position: u64) -> Result<(), DiskError> {
        self.journal.wait_synced(position).await;
        match self.failure() {
            Some(why) => Err(DiskError(why.to_string())),
            None if self.journal.is_synced(position) => Ok(()),
            None => Err(DiskError("the data dir was closed".into())),
        }
    }

    /// Whether every write must wait for the device before its ack.
    pub fn sync_every_write(&self) -> bool {
        self.policy == FsyncPolicy::Always
    }

    /// Writes what is queued, flushes everything to the device and records
    /// a clean stop: the last step of a graceful shutdown.
    ///
    /// # Errors
    ///
    /// [`DiskError`].
    pub fn close(&self) -> Result<(), DiskError> {
        self.journal.stop();
        self.db.persist(PersistMode::SyncAll).map_err(|e| self.failed(e))?;
        if self.failure().is_none() {
            self.life.insert(LIFE_CLEAN, [1u8]).map_err(|e| self.failed(e))?;
            self.db.persist(PersistMode::SyncAll).map_err(|e| self.failed(e))?;
        }
        Ok(())
    }
}

/// Records a failure of the data dir (the first one is kept and logged),
/// counts it, and returns it.
fn note_failure(failure: &OnceLock<String>, errors: &Counter, dir: &Path, why: String) -> String {
    errors.inc();
    if failure.set(why.clone()).is_ok() {
        tracing::error!(dir = %dir.display(), error = %why, "writing to the data dir failed");
    }
    why
}

/// A keyspace's tables, for an error that names them.
fn tables_of(name: &str, keyspace: &Keyspace) -> String {
    format!("a table of keyspace {name} in {}", keyspace.path().join("tables").display())
}

fn corrupt(dir: &Path, file: &str, detail: String) -> DataDirError {
    DataDirError::Corrupt { dir: dir.to_path_buf(), file: file.to_string(), detail }
}
