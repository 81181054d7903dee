//! The data dir: fjall's keyspaces, the writes the store makes through
//! them, the flusher that `--fsync` drives, and the load at start-up.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use geocache_crdt::{Delta, Hlc, NodeId, Register};
use geocache_gossip::resume::ResumeState;
use prometheus_client::metrics::counter::Counter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

use super::fsync::FsyncPolicy;
use super::identity::{DataDirError, DataDirIdentity, FORMAT_VERSION};
use super::records::{self, *};

/// A write to the data dir failed: the disk no longer mirrors the store.
#[derive(Clone, Debug, thiserror::Error)]
#[error("writing to the data dir failed: {0}")]
pub struct DiskError(pub String);

/// What the data dir held of this node's life when it was opened.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The origin id to continue under; `None` for a new life.
    pub origin: Option<NodeId>,
    /// Its last sequence number and HLC floor.
    pub seq: u64,
    /// The HLC floor: no stamp this node issues again is below it.
    pub hlc_floor: Hlc,
    /// Whether the previous run stopped cleanly (flushed everything).
    pub clean: bool,
    /// Why the node starts a new life despite its data, if it does.
    pub new_life_reason: Option<&'static str>,
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
    backlog: Keyspace,
    life: Keyspace,
    policy: FsyncPolicy,
    backlog_age_ms: u64,
    next_backlog: AtomicU64,
    /// The highest sequence number written, so the record only rises.
    seq_written: Mutex<u64>,
    /// Writes committed (to the OS), each one a position.
    written: AtomicU64,
    /// The last position flushed to the device.
    synced: watch::Sender<u64>,
    sync_wanted: Mutex<bool>,
    sync_wake: Condvar,
    closing: AtomicBool,
    failure: OnceLock<String>,
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
        let journals_before = journal_extents(&dir.join("fjall"));
        let db = Database::builder(dir.join("fjall"))
            .open()
            .map_err(|e| engine(dir, "the journal or a table under fjall/", e))?;
        // fjall cuts a journal at its first unreadable batch. Past the end
        // of what was written a journal is zeros (fjall preallocates it);
        // written bytes past the cut are a torn write or damage, and the
        // writes in them are gone here.
        let cut: Vec<String> = journal_sizes(&dir.join("fjall"))
            .iter()
            .filter_map(|(path, after)| {
                let written = journals_before.iter().find(|(p, _)| p == path).map(|(_, w)| *w)?;
                (*after < written).then(|| {
                    format!("{} (cut at byte {after}; written up to byte {written})", path.display())
                })
            })
            .collect();
        if !cut.is_empty() {
            tracing::warn!(files = ?cut, "the data dir's journal was cut where it could no longer be read (a torn write, or damage): the writes after that point are lost on this node, and its peers send them back");
        }
        let open = |name: &str, options: KeyspaceCreateOptions| {
            db.keyspace(name, || options)
                .map_err(|e| engine(dir, &format!("keyspace {name} under fjall/"), e))
        };
        let life = open("life", KeyspaceCreateOptions::default())?;
        let entries = open("entries", KeyspaceCreateOptions::default())?;
        // Positions only grow, so the oldest tables are the oldest deltas:
        // FIFO drops them past twice the in-memory bounds.
        let fifo = fjall::compaction::Fifo::new(
            options.backlog_bytes_max.saturating_mul(2).max(8 << 20),
            Some(options.backlog_age.as_secs().saturating_mul(2).max(60)),
        );
        let backlog = open("backlog", KeyspaceCreateOptions::default().compaction_strategy(Arc::new(fifo)))?;
        let read = |key: &[u8]| life.get(key).map_err(|e| engine(dir, "keyspace life under fjall/", e));
        let corrupt = |e: records::RecordError| DataDirError::Corrupt {
            dir: dir.to_path_buf(),
            file: "keyspace life under fjall/".into(),
            detail: e.0,
        };
        let mut loaded = Loaded::default();
        match read(LIFE_IDENTITY)? {
            Some(bytes) => {
                let found: DataDirIdentity =
                    serde_json::from_slice(&bytes).map_err(|e| DataDirError::Corrupt {
                        dir: dir.to_path_buf(),
                        file: "keyspace life under fjall/ (identity)".into(),
                        detail: e.to_string(),
                    })?;
                found.check(me, dir)?;
            }
            None => {
                let identity = DataDirIdentity { format: FORMAT_VERSION, ..me.clone() };
                let bytes = serde_json::to_vec(&identity).map_err(|e| io(dir, e))?;
                life.insert(LIFE_IDENTITY, bytes).map_err(|e| io(dir, e))?;
            }
        }
        if let Some(bytes) = read(LIFE_SEQ)? {
            let [seq, hlc] = decode_u64s::<2>(&bytes, "sequence").map_err(corrupt)?;
            loaded.seq = seq;
            loaded.hlc_floor = Hlc::from_u64(hlc);
        }
        loaded.clean = read(LIFE_CLEAN)?.is_some_and(|v| v[..] == [1]);
        let boot_now = boot_id();
        let same_boot =
            read(LIFE_BOOT)?.is_some_and(|b| Some(&b[..]) == boot_now.as_deref().map(str::as_bytes));
        if let Some(bytes) = read(LIFE_ORIGIN)? {
            let [origin] = decode_u64s::<1>(&bytes, "origin").map_err(corrupt)?;
            // After a crash of the machine (not of the process), the journal
            // may have lost its last writes, and with them sequence numbers
            // that peers already hold: reusing them would have those writes
            // taken for duplicates. Then the node keeps its data but writes
            // under a new origin.
            let tail_may_be_lost = !loaded.clean && !same_boot && options.fsync != FsyncPolicy::Always;
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
        if let Some(boot) = &boot_now {
            life.insert(LIFE_BOOT, boot.as_bytes()).map_err(|e| io(dir, e))?;
        }
        life.insert(LIFE_CLEAN, [0u8]).map_err(|e| io(dir, e))?;
        db.persist(PersistMode::SyncAll).map_err(|e| io(dir, e))?;
        let disk = Arc::new(Disk {
            dir: dir.to_path_buf(),
            db,
            entries,
            backlog,
            life,
            policy: options.fsync,
            backlog_age_ms: options.backlog_age.as_millis() as u64,
            next_backlog: AtomicU64::new(next_backlog),
            seq_written: Mutex::new(loaded.seq),
            written: AtomicU64::new(0),
            synced: watch::Sender::new(0),
            sync_wanted: Mutex::new(false),
            sync_wake: Condvar::new(),
            closing: AtomicBool::new(false),
            failure: OnceLock::new(),
            errors: Counter::default(),
        });
        Ok((disk, loaded))
    }

    /// Records the origin id this life writes under.
    ///
    /// # Errors
    ///
    /// [`DiskError`].
    pub fn set_origin(&self, origin: NodeId, seq: u64) -> Result<(), DiskError> {
        let mut batch = self.db.batch();
        batch.insert(&self.life, LIFE_ORIGIN, encode_u64s(&[origin.0]));
        if seq == 0 {
            batch.insert(&self.life, LIFE_SEQ, encode_u64s(&[0, 0]));
            *lock(&self.seq_written) = 0;
        }
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
        self.errors.inc();
        let why = e.to_string();
        if self.failure.set(why.clone()).is_ok() {
            tracing::error!(dir = %self.dir.display(), error = %why, "writing to the data dir failed");
        }
        DiskError(why)
    }

    fn commit(&self, batch: fjall::OwnedWriteBatch) -> u64 {
        match batch.commit() {
            Ok(()) => self.written.fetch_add(1, Ordering::AcqRel) + 1,
            Err(e) => {
                self.failed(e);
                0
            }
        }
    }

    fn backlog_record(&self, batch: &mut fjall::OwnedWriteBatch, full: &Delta, wall_ms: u64) {
        let position = self.next_backlog.fetch_add(1, Ordering::Relaxed);
        batch.insert(&self.backlog, backlog_key(position), encode_backlog(full, wall_ms));
    }

    /// A local write: the register, the delta for the backlog and the
    /// origin's sequence number, in one atomic batch. Returns its position
    /// (for [`Disk::wait_durable`]).
    pub fn write_local(&self, packed: &[u8], register: &Register, full: &Delta, wall_ms: u64) -> u64 {
        let mut batch = self.db.batch();
        batch.insert(&self.entries, packed, encode_register(register));
        self.backlog_record(&mut batch, full, wall_ms);
        let mut seq_written = lock(&self.seq_written);
        if full.seq > *seq_written {
            *seq_written = full.seq;
            batch.insert(&self.life, LIFE_SEQ, encode_u64s(&[full.seq, register.meta.stamp.hlc.as_u64()]));
        }
        // Under the lock: the sequence record is written in rising order.
        self.commit(batch)
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
        let mut batch = self.db.batch();
        if let Some(register) = register {
            batch.insert(&self.entries, packed, encode_register(register));
        }
        self.backlog_record(&mut batch, full, wall_ms);
        self.commit(batch)
    }

    /// A register merged from a full transfer or loaded and changed.
    pub fn write_register(&self, packed: &[u8], register: &Register) -> u64 {
        let mut batch = self.db.batch();
        batch.insert(&self.entries, packed, encode_register(register));
        self.commit(batch)
    }

    /// An entry left memory (evicted, expired, dropped): it leaves disk.
    pub fn remove(&self, packed: &[u8]) {
        if let Err(e) = self.entries.remove(packed) {
            self.failed(e);
        }
    }

    /// The watermarks' checkpoint (`geocache_gossip::resume`).
    pub fn checkpoint(&self, watermarks: &[(NodeId, u64)]) {
        if let Err(e) = self.life.insert(LIFE_CHECKPOINT, encode_watermarks(watermarks)) {
            self.failed(e);
        }
    }

    /// Every register held, in key order, handed to `each` with its packed
    /// key. A damaged record stops the load with the keyspace named.
    ///
    /// # Errors
    ///
    /// [`DataDirError::Corrupt`].
    pub fn load_entries(&self, mut each: impl FnMut(&[u8], Register)) -> Result<u64, DataDirError> {
        let mut count = 0;
        for guard in self.entries.iter() {
            let (key, value) =
                guard.into_inner().map_err(|e| engine(&self.dir, "keyspace entries under fjall/", e))?;
            let register = decode_register(&value).map_err(|e| DataDirError::Corrupt {
                dir: self.dir.clone(),
                file: "keyspace entries under fjall/".into(),
                detail: e.0,
            })?;
            each(&key, register);
            count += 1;
        }
        Ok(count)
    }

    /// The replication state to resume from: `own_seq` as loaded, the
    /// checkpoint, and the backlog deltas younger than the backlog's age.
    ///
    /// # Errors
    ///
    /// [`DataDirError::Corrupt`].
    pub fn resume_state(&self, own_seq: u64, now_wall_ms: u64) -> Result<ResumeState, DataDirError> {
        let corrupt = |file: &str, detail: String| DataDirError::Corrupt {
            dir: self.dir.clone(),
            file: file.to_string(),
            detail,
        };
        let watermarks = match self
            .life
            .get(LIFE_CHECKPOINT)
            .map_err(|e| engine(&self.dir, "keyspace life under fjall/", e))?
        {
            Some(bytes) => decode_watermarks(&bytes)
                .map_err(|e| corrupt("keyspace life under fjall/ (checkpoint)", e.0))?,
            None => Vec::new(),
        };
        let mut backlog = Vec::new();
        for guard in self.backlog.iter() {
            let (_, value) =
                guard.into_inner().map_err(|e| engine(&self.dir, "keyspace backlog under fjall/", e))?;
            let (delta, wall_ms) =
                decode_backlog(&value).map_err(|e| corrupt("keyspace backlog under fjall/", e.0))?;
            if now_wall_ms.saturating_sub(wall_ms) <= self.backlog_age_ms {
                backlog.push(Arc::new(delta));
            }
        }
        Ok(ResumeState { own_seq, watermarks, backlog })
    }

    /// Bytes the data dir takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// Resolves once the write at `position` is on the device (asks for a
    /// flush now rather than at the next interval).
    pub async fn wait_durable(&self, position: u64) -> Result<(), DiskError> {
        if *self.synced.borrow() >= position {
            return Ok(());
        }
        self.request_sync();
        let mut rx = self.synced.subscribe();
        let reached = rx.wait_for(|s| *s >= position).await.map(|_| ());
        match (reached, self.failure()) {
            (_, Some(why)) => Err(DiskError(why.to_string())),
            (Ok(()), None) => Ok(()),
            (Err(_), None) => Err(DiskError("the data dir was closed".into())),
        }
    }

    fn request_sync(&self) {
        *lock(&self.sync_wanted) = true;
        self.sync_wake.notify_one();
    }

    fn sync(&self) {
        let target = self.written.load(Ordering::Acquire);
        if target <= *self.synced.borrow() {
            return;
        }
        match self.db.persist(PersistMode::SyncData) {
            Ok(()) => {
                self.synced.send_replace(target);
            }
            Err(e) => {
                self.failed(e);
                // Wake the waiters: they read the failure.
                self.synced.send_modify(|_| {});
            }
        }
    }

    /// Starts the flusher thread: every interval (`--fsync`), and at once
    /// when a write waits for `disk`.
    pub fn start_flusher(self: &Arc<Self>) -> std::io::Result<()> {
        let disk = self.clone();
        std::thread::Builder::new().name("geocache-fsync".into()).spawn(move || {
            let interval = match disk.policy {
                FsyncPolicy::Every(d) => d,
                FsyncPolicy::Always | FsyncPolicy::Never => Duration::from_secs(3_600),
            };
            while !disk.closing.load(Ordering::Acquire) {
                {
                    let wanted = lock(&disk.sync_wanted);
                    let (mut wanted, _) = disk
                        .sync_wake
                        .wait_timeout_while(wanted, interval, |w| !*w)
                        .unwrap_or_else(|e| e.into_inner());
                    *wanted = false;
                }
                if disk.policy != FsyncPolicy::Never
                    || *disk.synced.borrow() < disk.written.load(Ordering::Acquire)
                {
                    disk.sync();
                }
            }
        })?;
        Ok(())
    }

    /// Whether every write must wait for the device before its ack.
    pub fn sync_every_write(&self) -> bool {
        self.policy == FsyncPolicy::Always
    }

    /// Flushes everything to the device and records a clean stop: the
    /// last step of a graceful shutdown.
    ///
    /// # Errors
    ///
    /// [`DiskError`].
    pub fn close(&self) -> Result<(), DiskError> {
        self.closing.store(true, Ordering::Release);
        self.request_sync();
        self.db.persist(PersistMode::SyncAll).map_err(|e| self.failed(e))?;
        self.synced.send_replace(self.written.load(Ordering::Acquire));
        if self.failure().is_none() {
            self.life.insert(LIFE_CLEAN, [1u8]).map_err(|e| self.failed(e))?;
            self.db.persist(PersistMode::SyncAll).map_err(|e| self.failed(e))?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values, consistent after any panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How far each journal under `dir` was written: the end of its last
/// non-zero byte (the rest is fjall's preallocation).
fn journal_extents(dir: &Path) -> Vec<(PathBuf, u64)> {
    journal_sizes(dir)
        .into_iter()
        .filter_map(|(path, _)| Some((path.clone(), written_extent(&path).ok()?)))
        .collect()
}

fn written_extent(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 1 << 20;
    let mut file = std::fs::File::open(path)?;
    let mut end = file.metadata()?.len();
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let len = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..len])?;
        if let Some(last) = buf[..len].iter().rposition(|&b| b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The size of every journal file under `dir`.
fn journal_sizes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect()
}

/// This boot of the machine, so a restart can tell a killed process (the
/// OS still holds what it wrote) from a machine that went down.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}
