//! Writing the journal: group commit, led by whoever waits.
//!
//! Every change of the store is queued here as an encoded record, in the
//! order the store made it (it queues under the key's stripe lock, so one
//! key's changes stay in order). Whoever then waits for its write to reach
//! the OS (a reply or a delta about to leave) takes the lead if no one has
//! it: it hands everything queued to the OS with one `write` on the
//! journal's current segment; the others wait for it. One writer thread
//! measured worse on this 2-core box (a thread hop on every reply, p50
//! +0.4 ms at `redis-benchmark -c 50`).
//!
//! A background thread flushes to the device: every `--fsync` interval,
//! and at once when a write waits for `disk` (or for every write with
//! `always`); it also writes what no one waits for (evictions, watermark
//! checkpoints) at the latest each interval.
//!
//! The queue also keeps what the next checkpoint of `entries` needs (the
//! dirty keys, the highest own sequence number, the last watermarks), so
//! that a checkpoint can take them atomically with the position they hold
//! up to.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

use geocache_crdt::Register;

use super::dirty_keys::DirtyKeys;
use super::fsync::FsyncPolicy;
use super::journal::{segment_path, Segment, SEGMENT_BYTES};

/// Bytes queued at most; past this the writer that queues leads a write
/// itself before it queues (backpressure from a slow disk).
pub(super) const QUEUE_BYTES_MAX: usize = 4 << 20;
/// How often the background thread writes and flushes stragglers when
/// `--fsync` sets no interval.
const IDLE_FLUSH: Duration = Duration::from_millis(100);
/// Journal bytes after which a checkpoint of `entries` is due.
pub(super) const CHECKPOINT_JOURNAL_BYTES: u64 = 32 << 20;

/// A key whose entry a record changes, and the register the store holds
/// for it after the change.
pub(super) type Dirty<'a> = (&'a [u8], Arc<Register>);

/// Where the journal stood when it was opened.
pub(super) struct Recovered {
    /// The segments on disk, oldest first.
    pub segments: Vec<Segment>,
    /// The position the next record takes.
    pub next: u64,
    /// This life's highest own sequence number and HLC so far.
    pub seq_high: (u64, u64),
    /// The last watermarks recorded, encoded for `life`.
    pub watermarks: Option<Vec<u8>>,
    pub dirty_keys_bytes_max: usize,
}

/// What a checkpoint of `entries` starts from.
pub(super) struct Taken {
    pub dirty: DirtyKeys,
    /// Every record up to this position is on the OS, and the store held
    /// its change before the checkpoint reads the store.
    pub upto: u64,
    pub watermarks: Option<Vec<u8>>,
}

struct Queue {
    buf: Vec<u8>,
    next: u64,
    dirty: DirtyKeys,
    seq_high: (u64, u64),
    watermarks: Option<Vec<u8>>,
    since_checkpoint: u64,
}

struct Lead {
    file: Arc<File>,
    first: u64,
    bytes: u64,
    spare: Vec<u8>,
}

/// The files the background thread flushes: the current segment and the
/// ones closed since its last flush.
struct Unsynced {
    current: Arc<File>,
    closed: Vec<Arc<File>>,
    created: bool,
}

type FailureHook = Box<dyn Fn(String) + Send + Sync>;

pub(super) struct JournalWriter {
    dir: PathBuf,
    policy: FsyncPolicy,
    queue: Mutex<Queue>,
    enqueued: AtomicU64,
    lead: Mutex<Lead>,
    unsynced: Mutex<Unsynced>,
    segments: Mutex<VecDeque<Segment>>,
    os_flushed: watch::Sender<u64>,
    synced: watch::Sender<u64>,
    sync_target: AtomicU64,
    /// Wakes the background thread: a write waits for the device, or a
    /// stop.
    wake: Wakeup,
    /// Wakes the checkpoint thread.
    checkpoint_due: Wakeup,
    stopping: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<OnceLock<String>>,
    on_failure: FailureHook,
}

fn create_segment(dir: &Path, first: u64) -> std::io::Result<Arc<File>> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(segment_path(dir, first))?;
    Ok(Arc::new(file))
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl JournalWriter {
    /// Starts writing the journal in `dir` after what `recovered` found,
    /// in a new segment.
    pub fn start(
        dir: &Path,
        recovered: Recovered,
        policy: FsyncPolicy,
        failure: Arc<OnceLock<String>>,
        on_failure: impl Fn(String) + Send + Sync + 'static,
    ) -> std::io::Result<Arc<JournalWriter>> {
        let first = recovered.next;
        let file = create_segment(dir, first)?;
        let mut segments: VecDeque<Segment> = recovered.segments.into();
        segments.push_back(Segment {
            path: segment_path(dir, first),
            first,
            count: 0,
            bytes: 0,
            last_wall_ms: 0,
        });
        let writer = Arc::new(JournalWriter {
            dir: dir.to_path_buf(),
            policy,
            queue: Mutex::new(Queue {
                buf: Vec::new(),
                next: first,
                dirty: DirtyKeys::with_bound(recovered.dirty_keys_bytes_max),
                seq_high: recovered.seq_high,
                watermarks: recovered.watermarks,
                since_checkpoint: 0,
            }),
            enqueued: AtomicU64::new(first - 1),
            lead: Mutex::new(Lead { file: file.clone(), first, bytes: 0, spare: Vec::new() }),
            unsynced: Mutex::new(Unsynced { current: file, closed: Vec::new(), created: true }),
            segments: Mutex::new(segments),
            os_flushed: watch::Sender::new(first - 1),
            synced: watch::Sender::new(first - 1),
            sync_target: AtomicU64::new(0),
            wake: Wakeup::default(),
            checkpoint_due: Wakeup::default(),
            stopping: AtomicBool::new(false),
            thread: Mutex::new(None),
            failure,
            on_failure: Box::new(on_failure),
        });
        let state = writer.clone();
        let handle =
            std::thread::Builder::new().name("geocache-fsync".into()).spawn(move || state.background())?;
        *lock(&writer.thread) = Some(handle);
        Ok(writer)
    }

    /// Queues `record`, after which the store holds `dirty`'s register (if
    /// any) under its key, and,
    /// for a local write, uses `local` (sequence number, HLC). Returns its
    /// position.
    pub fn append(&self, record: &[u8], dirty: Option<Dirty<'_>>, local: Option<(u64, u64)>) -> u64 {
        let mut queue = self.queue_with_room();
        self.push(&mut queue, record, dirty, local)
    }

    /// Queues a watermarks record, and keeps `encoded` for the next
    /// checkpoint of `entries`.
    pub fn append_watermarks(&self, record: &[u8], encoded: Vec<u8>) -> u64 {
        let mut queue = self.queue_with_room();
        queue.watermarks = Some(encoded);
        self.push(&mut queue, record, None, None)
    }

    /// Notes that the store now holds `held` under `packed` (`None`: the
    /// entry left memory) without a record of its own: the next checkpoint
    /// writes it.
    pub fn mark_dirty(&self, packed: &[u8], held: Option<Arc<Register>>) {
        if lock(&self.queue).dirty.insert(packed, held) {
            self.want_checkpoint();
        }
    }

    fn queue_with_room(&self) -> std::sync::MutexGuard<'_, Queue> {
        let queue = lock(&self.queue);
        if queue.buf.len() < QUEUE_BYTES_MAX {
            return queue;
        }
        drop(queue);
        self.write_queued(&mut lock(&self.lead));
        lock(&self.queue)
    }

    fn push(
        &self,
        queue: &mut Queue,
        record: &[u8],
        dirty: Option<Dirty<'_>>,
        local: Option<(u64, u64)>,
    ) -> u64 {
        queue.buf.extend_from_slice(record);
        let position = queue.next;
        queue.next += 1;
        let mut due = false;
        if let Some((packed, held)) = dirty {
            due |= queue.dirty.insert(packed, Some(held));
        }
        if let Some((seq, hlc)) = local {
            queue.seq_high = (queue.seq_high.0.max(seq), queue.seq_high.1.max(hlc));
        }
        let before = queue.since_checkpoint;
        queue.since_checkpoint += record.len() as u64;
        due |= before < CHECKPOINT_JOURNAL_BYTES && queue.since_checkpoint >= CHECKPOINT_JOURNAL_BYTES;
        self.enqueued.store(position, Ordering::Release);
        if due {
            self.want_checkpoint();
        }
        position
    }

    /// The position of the last record queued.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::Acquire)
    }

    /// Resolves once every record up to `position` reached the OS. Yields
    /// once first, so that the other writers of this round of the runtime
    /// queue theirs, then leads a write if no one does.
    pub async fn wait_os(&self, position: u64) {
        if *self.os_flushed.borrow() >= position {
            return;
        }
        tokio::task::yield_now().await;
        if *self.os_flushed.borrow() >= position {
            return;
        }
        self.lead_if_free();
        if *self.os_flushed.borrow() >= position {
            return;
        }
        let mut rx = self.os_flushed.subscribe();
        let _ = rx.wait_for(|p| *p >= position || self.failure.get().is_some()).await;
    }

    /// Writes what is queued, as long as records come in, unless another
    /// thread leads (then its write covers what this one waits for, or the
    /// next one does).
    fn lead_if_free(&self) {
        loop {
            match self.lead.try_lock() {
                Ok(mut lead) => self.write_queued(&mut lead),
                Err(std::sync::TryLockError::Poisoned(e)) => self.write_queued(&mut e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
            if lock(&self.queue).buf.is_empty() {
                return;
            }
        }
    }

    /// Resolves once the record at `position` is on the device (asking
    /// the background thread to flush now).
    pub async fn wait_synced(&self, position: u64) {
        if *self.synced.borrow() >= position {
            return;
        }
        self.sync_target.fetch_max(position, Ordering::AcqRel);
        self.wake_background();
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|p| *p >= position || self.failure.get().is_some()).await;
    }

    pub fn is_synced(&self, position: u64) -> bool {
        *self.synced.borrow() >= position
    }

    fn wake_background(&self) {
        self.wake.notify();
    }

    fn want_checkpoint(&self) {
        self.checkpoint_due.notify();
    }

    /// Waits until a checkpoint of `entries` is due (journal bytes, the
    /// dirty set's bound, or a stop) or `timeout` passed; returns whether
    /// it was asked for.
    pub fn wait_checkpoint_due(&self, timeout: Duration) -> bool {
        self.checkpoint_due.wait(timeout)
    }

    /// Wakes the checkpoint thread for its last checkpoint.
    pub fn stop_checkpoints(&self) {
        self.want_checkpoint();
    }

    /// Writes everything queued, then takes what a checkpoint of `entries`
    /// starts from: the dirty keys, and the position they cover.
    pub fn take_for_checkpoint(&self) -> Taken {
        let mut lead = lock(&self.lead);
        self.write_queued(&mut lead);
        let mut queue = lock(&self.queue);
        // Whatever came in meanwhile is written under the queue's lock, so
        // that the position taken is on the OS.
        if !queue.buf.is_empty() {
            let records = std::mem::take(&mut queue.buf);
            let last = queue.next - 1;
            self.write_out(&mut lead, &records, last);
        }
        queue.since_checkpoint = 0;
        let fresh = DirtyKeys::with_bound(queue.dirty.bound());
        Taken {
            dirty: std::mem::replace(&mut queue.dirty, fresh),
            upto: queue.next - 1,
            watermarks: queue.watermarks.clone(),
        }
    }

    /// This life's highest own sequence number and HLC, once every record
    /// queued is on the device: what a checkpoint records as used.
    pub fn seq_high_synced(&self) -> (u64, u64) {
        let seq_high = {
            let mut lead = lock(&self.lead);
            self.write_queued(&mut lead);
            lock(&self.queue).seq_high
        };
        self.sync();
        seq_high
    }

    /// Deletes the segments a checkpoint at `upto` no longer needs, keeping
    /// the newest `keep_bytes` and what is younger than `keep_age`: the
    /// backlog a restart gives back to peers.
    pub fn retire(&self, upto: u64, keep_bytes: u64, keep_age: Duration) {
        let now = wall_ms();
        let mut segments = lock(&self.segments);
        let mut newer_bytes: u64 = segments.iter().skip(1).map(|s| s.bytes).sum();
        while segments.len() > 1 {
            let oldest = &segments[0];
            let old = now.saturating_sub(oldest.last_wall_ms) > keep_age.as_millis() as u64;
            if oldest.last() > upto || (!old && newer_bytes < keep_bytes) {
                break;
            }
            if let Err(e) = std::fs::remove_file(&oldest.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %oldest.path.display(), error = %e, "removing a journal segment failed");
                    break;
                }
            }
            segments.pop_front();
            newer_bytes = newer_bytes.saturating_sub(segments.front().map_or(0, |s| s.bytes));
        }
    }

    /// Bytes the journal's segments hold.
    pub fn bytes(&self) -> u64 {
        lock(&self.segments).iter().map(|s| s.bytes).sum()
    }

    /// Stops the background thread, writes what is queued and flushes it
    /// to the device.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_background();
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
        self.write_queued(&mut lock(&self.lead));
        self.sync();
    }

    /// Writes everything queued to the OS, one `write` per round.
    fn write_queued(&self, lead: &mut Lead) {
        loop {
            let mut records = std::mem::take(&mut lead.spare);
            let last = {
                let mut queue = lock(&self.queue);
                if queue.buf.is_empty() {
                    lead.spare = records;
                    return;
                }
                std::mem::swap(&mut records, &mut queue.buf);
                queue.next - 1
            };
            self.write_out(lead, &records, last);
            records.clear();
            // A large value must not keep its buffer forever.
            if records.capacity() <= QUEUE_BYTES_MAX * 2 {
                lead.spare = records;
            }
        }
    }

    /// Appends `records` (the ones up to `last`) to the current segment,
    /// and closes it once it is full.
    fn write_out(&self, lead: &mut Lead, records: &[u8], last: u64) {
        if let Err(e) = (&*lead.file).write_all(records) {
            (self.on_failure)(format!("writing {}: {e}", segment_path(&self.dir, lead.first).display()));
            return;
        }
        lead.bytes += records.len() as u64;
        {
            let mut segments = lock(&self.segments);
            if let Some(current) = segments.back_mut() {
                current.count = last + 1 - current.first;
                current.bytes = lead.bytes;
                current.last_wall_ms = wall_ms();
            }
        }
        self.os_flushed.send_if_modified(|p| std::mem::replace(p, (*p).max(last)) < last);
        if lead.bytes >= SEGMENT_BYTES {
            let first = last + 1;
            match create_segment(&self.dir, first) {
                Ok(file) => {
                    {
                        let mut unsynced = lock(&self.unsynced);
                        let closed = std::mem::replace(&mut unsynced.current, file.clone());
                        unsynced.closed.push(closed);
                        unsynced.created = true;
                    }
                    lock(&self.segments).push_back(Segment {
                        path: segment_path(&self.dir, first),
                        first,
                        count: 0,
                        bytes: 0,
                        last_wall_ms: 0,
                    });
                    *lead = Lead { file, first, bytes: 0, spare: std::mem::take(&mut lead.spare) };
                }
                Err(e) => {
                    (self.on_failure)(format!("creating a journal segment in {}: {e}", self.dir.display()))
                }
            }
        }
    }

    /// Flushes what reached the OS to the device: the segments closed
    /// since the last flush, the current one, and the directory when it
    /// gained a segment.
    fn sync(&self) {
        let handled = *self.os_flushed.borrow();
        if *self.synced.borrow() >= handled {
            return;
        }
        let (files, created) = {
            let mut unsynced = lock(&self.unsynced);
            let mut files = std::mem::take(&mut unsynced.closed);
            files.push(unsynced.current.clone());
            (files, std::mem::replace(&mut unsynced.created, false))
        };
        for file in files {
            if let Err(e) = file.sync_data() {
                (self.on_failure)(format!(
                    "flushing the journal in {} to the device: {e}",
                    self.dir.display()
                ));
                return;
            }
        }
        if created {
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                (self.on_failure)(format!("flushing the directory {}: {e}", self.dir.display()));
                return;
            }
        }
        self.synced.send_if_modified(|p| std::mem::replace(p, (*p).max(handled)) < handled);
    }

    fn background(&self) {
        let interval = match self.policy {
            FsyncPolicy::Every(d) => d,
            FsyncPolicy::Always | FsyncPolicy::Never => IDLE_FLUSH,
        };
        while !self.stopping.load(Ordering::Acquire) {
            let woken = self.wake.wait(interval);
            self.write_queued(&mut lock(&self.lead));
            let asked = self.sync_target.load(Ordering::Acquire) > *self.synced.borrow();
            let due = !woken && matches!(self.policy, FsyncPolicy::Every(_));
            if asked || due || self.policy == FsyncPolicy::Always {
                self.sync();
            }
        }
    }
}

/// A flag a thread sleeps on until another sets it, or a timeout.
#[derive(Default)]
struct Wakeup {
    asked: Mutex<bool>,
    changed: Condvar,
}

impl Wakeup {
    fn notify(&self) {
        *lock(&self.asked) = true;
        self.changed.notify_one();
    }

    /// Sleeps until notified or `timeout`; returns whether it was notified
    /// (and takes the notice).
    fn wait(&self, timeout: Duration) -> bool {
        let asked = lock(&self.asked);
        let (mut asked, _) =
            self.changed.wait_timeout_while(asked, timeout, |a| !*a).unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *asked, false)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
