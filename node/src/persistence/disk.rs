//! The data dir: the journal every change is appended to (`journal.rs`,
//! written by `journal_writer.rs`), fjall's `entries` that checkpoints of
//! the store keep (`checkpoint.rs`), fjall's `life`, and what a restart
//! finds in them.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use geocache_crdt::{codec, Delta, DeltaBody, Hlc, NodeId, Register};
use geocache_gossip::resume::ResumeState;
use prometheus_client::metrics::counter::Counter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::dirty_keys::DirtyKeys;
use super::fsync::FsyncPolicy;
use super::identity::{DataDirError, DataDirIdentity, FORMAT_VERSION};
use super::journal::{self, Kind};
use super::journal_writer::{JournalWriter, Recovered, QUEUE_BYTES_MAX};
use super::records::{self, *};
use super::tail_loss;

/// fjall's block cache: the data dir is read at start-up only, so small.
pub const CACHE_BYTES: u64 = 8 << 20;
/// What writing the data dir holds in memory at most: fjall's memtables
/// (the active ones, 16 + 1 MiB, and the sealed ones waiting for their
/// flush, which fjall's journal limit bounds), the journal's queue and
/// its spare buffer (1 + 2 times the queue's bound), and the dirty keys.
pub const WRITE_BUFFER_BYTES: u64 =
    ((16 + 1) << 20) + FJALL_JOURNAL_BYTES_MAX + 3 * QUEUE_BYTES_MAX as u64 + DirtyKeys::BYTES_MAX as u64;
/// One memtable of `entries`.
const MEMTABLE_BYTES: u64 = 16 << 20;
/// fjall's journals kept at most before it flushes the memtables they
/// cover (only checkpoints write them).
const FJALL_JOURNAL_BYTES_MAX: u64 = 64 << 20;

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
    /// The in-memory backlog's bounds: the journal keeps at least as much.
    pub backlog_bytes_max: u64,
    /// The backlog's age bound.
    pub backlog_age: Duration,
    /// The dirty keys' memory bound; past it a checkpoint walks the whole
    /// store ([`DirtyKeys::BYTES_MAX`] unless a test wants the walk).
    pub dirty_keys_bytes_max: usize,
}

/// The store as a checkpoint reads it when its dirty keys overflowed.
pub trait HeldEntries: Send + Sync {
    /// Every entry held, with its packed key; each handed over once every
    /// change the store made to it is queued in the journal.
    fn for_each_held(&self, each: &mut dyn FnMut(&[u8], &Register));
    /// Whether an entry is held under `packed` (without counting as a use).
    fn holds(&self, packed: &[u8]) -> bool;
}

/// The node's data dir. Shared by the store (which writes through it),
/// replication (checkpoints) and the write path (waits for durability).
pub struct Disk {
    dir: PathBuf,
    pub(super) db: Database,
    pub(super) entries: Keyspace,
    pub(super) life: Keyspace,
    /// This node's strong acceptor's slots (`acceptor_slots.rs`).
    pub(super) acceptor: Keyspace,
    policy: FsyncPolicy,
    pub(super) journal: Arc<JournalWriter>,
    /// The journal position `entries` holds every change up to.
    pub(super) entries_upto: AtomicU64,
    pub(super) keep_bytes: u64,
    pub(super) keep_age: Duration,
    checkpoints: Mutex<Option<JoinHandle<()>>>,
    /// What the journal holds after the last checkpoint, until the load
    /// takes it.
    replay: Mutex<Vec<Replayed>>,
    pub(super) stopping: AtomicBool,
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

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What reading the journal at start-up found.
struct JournalScan {
    segments: Vec<journal::Segment>,
    /// Where the last segment was cut (a torn write, or damage at its end).
    cut: Option<String>,
    /// The highest sequence number and stamp of `origin`'s deltas.
    own: (u64, Hlc),
    watermarks: Option<Vec<u8>>,
    backlog: Vec<Arc<Delta>>,
    /// The registers after the last checkpoint of `entries`, in the order
    /// written, by packed key: what a load replays.
    replay: Vec<Replayed>,
}

/// A register the journal holds after the last checkpoint, by packed key.
type Replayed = (Box<[u8]>, Arc<Register>);

/// Which records the scan decodes whole.
struct ScanBounds {
    /// This life's origin, whose sequence the scan finds.
    origin: Option<NodeId>,
    /// The position the last checkpoint of `entries` covers.
    entries_upto: u64,
    /// The backlog a restart gives back: deltas younger than this...
    backlog_age: Duration,
    /// ...in the newest segments holding this many bytes.
    backlog_bytes: u64,
}

/// Reads every segment of the journal: the deltas young and recent enough
/// for the backlog, the registers after the last checkpoint, the last
/// watermarks, and `origin`'s sequence (older records are read no further
/// than their origin and sequence number). A record that does not check at
/// the end of the last written segment is cut off; anywhere else the data
/// dir is refused with the segment named.
fn scan_journal(dir: &Path, bounds: &ScanBounds) -> Result<JournalScan, DataDirError> {
    let journal_dir = journal::dir_of(dir);
    std::fs::create_dir_all(&journal_dir).map_err(|e| io(dir, e))?;
    let files = journal::list(&journal_dir).map_err(|e| io(dir, e))?;
    let oldest_kept = now_ms().saturating_sub(bounds.backlog_age.as_millis() as u64);
    let mut scan = JournalScan {
        segments: Vec::new(),
        cut: None,
        own: (0, Hlc::ZERO),
        watermarks: None,
        backlog: Vec::new(),
        replay: Vec::new(),
    };
    let sizes: Vec<u64> = files.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).collect();
    // Segments after the last one holding records are empty (opened by a
    // start that wrote nothing): the last one holding records is where a
    // torn write can be.
    let last_written = sizes.iter().rposition(|&len| len > 0);
    let mut newer = 0u64;
    let backlog_from = sizes
        .iter()
        .rposition(|&len| {
            newer += len;
            newer >= bounds.backlog_bytes
        })
        .unwrap_or(0);
    for (i, (first, path)) in files.into_iter().enumerate() {
        if scan.cut.is_some() {
            // Empty, and named after positions the cut took back.
            std::fs::remove_file(&path).map_err(|e| io(dir, format!("{}: {e}", path.display())))?;
            continue;
        }
        let damaged = |detail: String| DataDirError::Corrupt {
            dir: dir.to_path_buf(),
            file: path.display().to_string(),
            detail,
        };
        if let Some(previous) = scan.segments.last() {
            if previous.last() + 1 != first {
                return Err(damaged(format!(
                    "the journal jumps from position {} to {first}: a segment is missing",
                    previous.last()
                )));
            }
        }
        let read = journal::read(&path, first, |record| {
            let after_checkpoint = record.position > bounds.entries_upto;
            let for_backlog = i >= backlog_from && record.wall_ms >= oldest_kept;
            match record.kind {
                Kind::DeltaHeld | Kind::DeltaNotHeld if !after_checkpoint && !for_backlog => {
                    // The checkpoint's own record covers its stamp.
                    let (origin, seq): (NodeId, u64) =
                        codec::decode_stored_leading(record.payload).map_err(|e| format!("a delta: {e}"))?;
                    if Some(origin) == bounds.origin {
                        scan.own.0 = scan.own.0.max(seq);
                    }
                }
                Kind::DeltaHeld | Kind::DeltaNotHeld => {
                    let delta: Delta =
                        codec::decode_stored(record.payload).map_err(|e| format!("a delta: {e}"))?;
                    if Some(delta.origin) == bounds.origin {
                        scan.own.0 = scan.own.0.max(delta.seq);
                        if let DeltaBody::Register(r) = &delta.body {
                            scan.own.1 = scan.own.1.max(r.meta.stamp.hlc);
                        }
                    }
                    if let (true, Kind::DeltaHeld, DeltaBody::Register(r)) =
                        (after_checkpoint, record.kind, &delta.body)
                    {
                        scan.replay.push((crate::store_key::pack(&delta.key)[..].into(), r.clone()));
                    }
                    if for_backlog {
                        scan.backlog.push(Arc::new(delta));
                    }
                }
                Kind::Register if after_checkpoint => {
                    let short = || "a register record too short".to_string();
                    let (len, rest) = record.payload.split_at_checked(4).ok_or_else(short)?;
                    let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
                    let (packed, register) = rest.split_at_checked(len).ok_or_else(short)?;
                    let register: Register =
                        codec::decode_stored(register).map_err(|e| format!("a register: {e}"))?;
                    scan.replay.push((packed.into(), Arc::new(register)));
                }
                Kind::Register => {}
                Kind::Watermarks => {
                    decode_watermarks(record.payload).map_err(|e| e.0)?;
                    scan.watermarks = Some(record.payload.to_vec());
                }
            }
            Ok(())
        })
        .map_err(|e| match e {
            journal::ReadError::Io(detail) => io(dir, format!("{}: {detail}", path.display())),
            journal::ReadError::Record { at, detail } => {
                damaged(format!("the record at byte {at}: {detail}"))
            }
        })?;
        if let Some(trailing) = read.trailing {
            let at = read.segment.bytes;
            if Some(i) != last_written {
                return Err(damaged(format!(
                    "the record at byte {at} does not check ({trailing} bytes to the end)"
                )));
            }
            // The end of the last segment: a write torn by a crash.
            let cut = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(at).and_then(|()| f.sync_all()));
            cut.map_err(|e| io(dir, format!("cutting {}: {e}", path.display())))?;
            scan.cut = Some(format!("{} (cut at byte {at}; {trailing} bytes did not check)", path.display()));
        }
        scan.segments.push(read.segment);
    }
    Ok(scan)
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
        let fjall_journals = tail_loss::journal_extents(&dir.join("fjall"));
        let db = Database::builder(dir.join("fjall"))
            .manual_journal_persist(true)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(FJALL_JOURNAL_BYTES_MAX)
            .open()
            .map_err(|e| engine(dir, "the journal or a table under fjall/", e))?;
        let fjall_cut = tail_loss::journal_cuts(&fjall_journals, &dir.join("fjall"));
        if !fjall_cut.is_empty() {
            tracing::warn!(files = ?fjall_cut, "fjall's journal was cut where it could no longer be read (damage): what it held since the last checkpoint of entries is lost on this node, and its peers send it back");
        }
        let open = |name: &str, options: KeyspaceCreateOptions| {
            db.keyspace(name, || options)
                .map_err(|e| engine(dir, &format!("keyspace {name} under fjall/"), e))
        };
        let life = open("life", KeyspaceCreateOptions::default().max_memtable_size(1 << 20))?;
        let entries = open("entries", KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES))?;
        let acceptor = open("acceptor", KeyspaceCreateOptions::default().max_memtable_size(1 << 20))?;
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
        // The last sequence number: the highest of the one the last
        // checkpoint recorded and of this node's own deltas in the journal.
        let mut seq = 0;
        if let Some(bytes) = read(LIFE_SEQ)? {
            let [recorded, hlc] = decode_u64s::<2>(&bytes, "sequence").map_err(corrupt_life)?;
            seq = recorded;
            loaded.hlc_floor = Hlc::from_u64(hlc);
        }
        let entries_upto = match read(LIFE_ENTRIES_UPTO)? {
            Some(bytes) => decode_u64s::<1>(&bytes, "checkpoint position").map_err(corrupt_life)?[0],
            None => 0,
        };
        let clean = read(LIFE_CLEAN)?.is_some_and(|v| v[..] == [1]);
        let boot_now = tail_loss::boot_id();
        let same_boot =
            read(LIFE_BOOT)?.is_some_and(|b| Some(&b[..]) == boot_now.as_deref().map(str::as_bytes));
        let previous_origin = match read(LIFE_ORIGIN)? {
            Some(bytes) => Some(NodeId(decode_u64s::<1>(&bytes, "origin").map_err(corrupt_life)?[0])),
            None => None,
        };
        let scanned = std::time::Instant::now();
        let bounds = ScanBounds {
            origin: previous_origin,
            entries_upto,
            backlog_age: options.backlog_age,
            backlog_bytes: options.backlog_bytes_max,
        };
        let mut scan = scan_journal(dir, &bounds)?;
        tracing::info!(
            segments = scan.segments.len(),
            backlog = scan.backlog.len(),
            replay = scan.replay.len(),
            ms = scanned.elapsed().as_millis() as u64,
            "journal read"
        );
        if let Some(cut) = &scan.cut {
            tracing::warn!(file = %cut, "the data dir's journal was cut where it could no longer be read (a torn write, or damage): the writes after that point are lost on this node, and its peers send them back");
        }
        seq = seq.max(scan.own.0);
        loaded.hlc_floor = loaded.hlc_floor.max(scan.own.1);
        if let Some(origin) = previous_origin {
            // After a crash of the machine (not of the process), the journal
            // may have lost its last writes, and with them sequence numbers
            // that peers already hold: reusing them would have those writes
            // taken for duplicates. Then the node keeps its data but writes
            // under a new origin.
            let tail_may_be_lost = !clean && !same_boot && options.fsync != FsyncPolicy::Always;
            if scan.cut.is_some() || !fjall_cut.is_empty() {
                loaded.new_life_reason =
                    Some("the journal was cut where it could no longer be read, losing writes");
            } else if tail_may_be_lost {
                loaded.new_life_reason = Some("the machine restarted since this node last ran, and its journal may have lost its last writes");
            } else {
                loaded.origin = Some(origin);
            }
        }
        let watermarks = match &scan.watermarks {
            Some(bytes) => Some(bytes.clone()),
            None => read(LIFE_CHECKPOINT)?.map(|b| b.to_vec()),
        };
        let checkpoint = match &watermarks {
            Some(bytes) => decode_watermarks(bytes)
                .map_err(|e| corrupt(dir, "keyspace life under fjall/ (checkpoint)", e.0))?,
            None => Vec::new(),
        };
        let own_seq = if loaded.origin.is_some() { seq } else { 0 };
        loaded.resume = ResumeState { own_seq, watermarks: checkpoint, backlog: scan.backlog };
        if let Some(boot) = &boot_now {
            life.insert(LIFE_BOOT, boot.as_bytes()).map_err(|e| io(dir, e))?;
        }
        life.insert(LIFE_CLEAN, [0u8]).map_err(|e| io(dir, e))?;
        db.persist(PersistMode::SyncAll).map_err(|e| io(dir, e))?;
        let failure = Arc::new(OnceLock::new());
        let errors = Counter::default();
        let on_failure = {
            let (failure, errors, dir) = (failure.clone(), errors.clone(), dir.to_path_buf());
            move |why: String| {
                note_failure(&failure, &errors, &dir, why);
            }
        };
        let last = scan.segments.last().map_or(0, |s| s.last());
        let recovered = Recovered {
            segments: scan.segments,
            // Past what a checkpoint covered too: its records may not all
            // have reached the journal before a crash.
            next: last.max(entries_upto) + 1,
            seq_high: (own_seq, loaded.hlc_floor.as_u64()),
            watermarks,
            dirty_keys_bytes_max: options.dirty_keys_bytes_max,
        };
        let journal = JournalWriter::start(
            &journal::dir_of(dir),
            recovered,
            options.fsync,
            failure.clone(),
            on_failure,
        )
        .map_err(|e| io(dir, format!("starting the journal writer: {e}")))?;
        let disk = Arc::new(Disk {
            dir: dir.to_path_buf(),
            db,
            entries,
            life,
            acceptor,
            policy: options.fsync,
            journal,
            entries_upto: AtomicU64::new(entries_upto),
            keep_bytes: options.backlog_bytes_max.saturating_mul(2),
            keep_age: options.backlog_age.saturating_mul(2),
            checkpoints: Mutex::new(None),
            replay: Mutex::new(std::mem::take(&mut scan.replay)),
            stopping: AtomicBool::new(false),
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

    pub(super) fn failed(&self, e: impl std::fmt::Display) -> DiskError {
        DiskError(note_failure(&self.failure, &self.errors, &self.dir, e.to_string()))
    }

    fn delta_record(kind: Kind, full: &Delta, wall_ms: u64) -> Vec<u8> {
        journal::encode(kind, wall_ms, |out| {
            let _ = codec::encode_stored_into(full, out);
        })
    }

    /// A local write, as the delta whole (the register it left): returns
    /// its position (for [`Disk::wait_durable`]).
    pub fn write_local(&self, packed: &[u8], full: &Delta, wall_ms: u64) -> u64 {
        let record = Disk::delta_record(Kind::DeltaHeld, full, wall_ms);
        // A whole delta always carries its register.
        let held = match &full.body {
            DeltaBody::Register(held) => Some(held.clone()),
            _ => None,
        };
        let hlc = held.as_ref().map_or(0, |h| h.meta.stamp.hlc.as_u64());
        self.journal.append(&record, held.map(|h| (packed, h)), Some((full.seq, hlc)))
    }

    /// A replicated write applied here, as the delta whole: `kept` when
    /// the store holds its register (the backlog keeps it either way: its
    /// sequence number is applied).
    pub fn write_applied(&self, packed: &[u8], kept: bool, full: &Delta, wall_ms: u64) -> u64 {
        let kind = if kept { Kind::DeltaHeld } else { Kind::DeltaNotHeld };
        let record = Disk::delta_record(kind, full, wall_ms);
        let dirty = match (&full.body, kept) {
            (DeltaBody::Register(held), true) => Some((packed, held.clone())),
            _ => None,
        };
        self.journal.append(&record, dirty, None)
    }

    /// A register merged from a full transfer: the store holds `held`.
    pub fn write_register(&self, packed: &[u8], held: Arc<Register>) -> u64 {
        let record = journal::encode(Kind::Register, now_ms(), |out| {
            out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            out.extend_from_slice(packed);
            let _ = codec::encode_stored_into(&*held, out);
        });
        self.journal.append(&record, Some((packed, held)), None)
    }

    /// The store now holds `held` under `packed` (`None`: the entry left
    /// memory) without a record of its own (an eviction, a load's merge):
    /// the next checkpoint writes it.
    pub fn mark_changed(&self, packed: &[u8], held: Option<Arc<Register>>) {
        self.journal.mark_dirty(packed, held);
    }

    /// The watermarks' checkpoint (`geocache_gossip::resume`).
    pub fn checkpoint(&self, watermarks: &[(NodeId, u64)]) {
        let encoded = encode_watermarks(watermarks);
        let record = journal::encode(Kind::Watermarks, now_ms(), |out| out.extend_from_slice(&encoded));
        self.journal.append_watermarks(&record, encoded);
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

    /// Every register the last checkpoint of `entries` holds, in key order,
    /// handed to `each` with its packed key. A damaged record stops the
    /// load with the keyspace named.
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

    /// Every register the journal holds after the last checkpoint of
    /// `entries` (read when the data dir was opened), in the order
    /// written, handed to `each` with its packed key: with
    /// [`Disk::load_entries`] first, what the store held.
    pub fn replay_journal(&self, mut each: impl FnMut(&[u8], Arc<Register>)) -> u64 {
        let replay = std::mem::take(&mut *self.replay.lock().unwrap_or_else(|e| e.into_inner()));
        let count = replay.len() as u64;
        for (packed, register) in replay {
            each(&packed, register);
        }
        count
    }

    /// Bytes the data dir takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0) + self.journal.bytes()
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

    /// Starts the thread that checkpoints `entries` from `held` (when the
    /// journal grew by [`super::journal_writer::CHECKPOINT_JOURNAL_BYTES`],
    /// the dirty keys reach their bound, or every
    /// [`super::checkpoint::CHECKPOINT_INTERVAL`]); once the store is
    /// loaded, never before (a checkpoint removes what the store lacks).
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn start_checkpoints(
        self: &Arc<Self>,
        held: std::sync::Weak<dyn HeldEntries>,
    ) -> std::io::Result<()> {
        let disk = self.clone();
        let handle = std::thread::Builder::new()
            .name("geocache-checkpoint".into())
            .spawn(move || disk.run_checkpoints(&held))?;
        *self.checkpoints.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Checkpoints `entries` one last time (once the store is loaded),
    /// writes what is queued, flushes everything to the device and records
    /// a clean stop: the last step of a graceful shutdown.
    ///
    /// # Errors
    ///
    /// [`DiskError`].
    pub fn close(&self) -> Result<(), DiskError> {
        self.stopping.store(true, Ordering::Release);
        self.journal.stop_checkpoints();
        let handle = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
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
