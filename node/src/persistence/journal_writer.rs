//! Writing the data dir: group commit, led by whoever waits.
//!
//! Every write of the store is queued here, in the order the store made it
//! (it queues under the key's stripe lock, so one key's writes stay in
//! order). Whoever then waits for its write to reach the OS (a reply or a
//! delta about to leave) takes the lead if no one has it: it commits
//! everything queued as one fjall batch and hands it to the OS with one
//! `write`; the others wait for it. Two earlier designs measured worse on
//! this 2-core box: each writer committing its own batch queued on fjall's
//! journal lock (17 % of the node's time in futex waits at 50 clients),
//! and one writer thread added a thread hop to every reply (p50 +0.4 ms,
//! `redis-benchmark -c 50`).
//!
//! A background thread flushes to the device: every `--fsync` interval,
//! and at once when a write waits for `disk` (or for every write with
//! `always`); it also commits what no one waits for (evictions,
//! checkpoints) at the latest each interval.
//!
//! Positions number the queued operations in queue order, so "handled
//! position p" means every operation queued before it too.

use fjall::{Database, Keyspace, PersistMode};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

use super::fsync::FsyncPolicy;
use super::records::{encode_u64s, LIFE_SEQ};

/// Operations queued at most; past this the writer that queues leads a
/// commit itself before it queues (backpressure from a slow disk).
const QUEUE_COUNT_MAX: usize = 16_384;
/// Operations in one commit at most.
const BATCH_COUNT_MAX: usize = 4_096;
/// How often the background thread commits and flushes stragglers when
/// `--fsync` sets no interval.
const IDLE_FLUSH: Duration = Duration::from_millis(100);

/// Which keyspace an item goes to.
#[derive(Clone, Copy, Debug)]
pub(super) enum Space {
    Entries,
    Backlog,
    Life,
}

/// One key written (`Some` value) or removed (`None`).
pub(super) struct Item {
    pub space: Space,
    pub key: Box<[u8]>,
    pub value: Option<Vec<u8>>,
}

struct Op {
    position: u64,
    items: Vec<Item>,
    /// The origin's sequence number and stamp, for a local write.
    seq: Option<(u64, u64)>,
}

/// The keyspaces written.
#[derive(Clone)]
pub(super) struct Spaces {
    pub db: Database,
    pub entries: Keyspace,
    pub backlog: Keyspace,
    pub life: Keyspace,
}

/// What only the leader touches.
struct Lead {
    /// The highest sequence number and stamp written, as the record says.
    seq_high: Option<(u64, u64)>,
}

type FailureHook = Box<dyn Fn(String) + Send + Sync>;

/// The queue, the lead, and what has been handed to the OS and the device.
pub(super) struct JournalWriter {
    spaces: Spaces,
    policy: FsyncPolicy,
    queue: Mutex<VecDeque<Op>>,
    enqueued: AtomicU64,
    lead: Mutex<Lead>,
    os_flushed: watch::Sender<u64>,
    synced: watch::Sender<u64>,
    sync_target: AtomicU64,
    wake: (Mutex<bool>, Condvar),
    stopping: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<OnceLock<String>>,
    on_failure: FailureHook,
}

impl JournalWriter {
    /// Starts the background thread. `on_failure` is called for each
    /// failed commit or flush, with the error.
    pub fn start(
        spaces: Spaces,
        policy: FsyncPolicy,
        failure: Arc<OnceLock<String>>,
        on_failure: impl Fn(String) + Send + Sync + 'static,
    ) -> std::io::Result<Arc<JournalWriter>> {
        let writer = Arc::new(JournalWriter {
            spaces,
            policy,
            queue: Mutex::new(VecDeque::new()),
            enqueued: AtomicU64::new(0),
            lead: Mutex::new(Lead { seq_high: None }),
            os_flushed: watch::Sender::new(0),
            synced: watch::Sender::new(0),
            sync_target: AtomicU64::new(0),
            wake: (Mutex::new(false), Condvar::new()),
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

    fn push(&self, items: Vec<Item>, seq: Option<(u64, u64)>) -> u64 {
        if lock(&self.queue).len() >= QUEUE_COUNT_MAX {
            self.commit_queued(&mut lock(&self.lead));
        }
        // One lock for numbering and queueing, so positions follow queue
        // order.
        let mut queue = lock(&self.queue);
        let position = self.enqueued.fetch_add(1, Ordering::AcqRel) + 1;
        queue.push_back(Op { position, items, seq });
        position
    }

    /// Queues `items`; returns their position.
    pub fn submit(&self, items: Vec<Item>) -> u64 {
        self.push(items, None)
    }

    /// Queues a local write's `items` with its sequence number and stamp:
    /// the highest of these is written once per commit, so the record only
    /// rises and costs one item per batch, not per write.
    pub fn submit_local(&self, items: Vec<Item>, seq: u64, hlc: u64) -> u64 {
        self.push(items, Some((seq, hlc)))
    }

    /// The last position queued.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::Acquire)
    }

    /// Resolves once everything up to `position` was handed to the OS,
    /// leading the commit if no one else does.
    pub async fn wait_os(&self, position: u64) {
        if *self.os_flushed.borrow() >= position {
            return;
        }
        // Let the other connections ready on this thread queue their
        // writes first: one commit and one `write` then cover them all.
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

    /// Commits what is queued unless someone already leads; then looks
    /// again, since an operation queued while the lead was being given up
    /// would otherwise wait for the background thread.
    fn lead_if_free(&self) {
        loop {
            match self.lead.try_lock() {
                Ok(mut lead) => self.commit_queued(&mut lead),
                Err(std::sync::TryLockError::Poisoned(e)) => self.commit_queued(&mut e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
            if lock(&self.queue).is_empty() {
                return;
            }
        }
    }

    /// Resolves once everything up to `position` is on the device.
    pub async fn wait_synced(&self, position: u64) {
        if *self.synced.borrow() >= position {
            return;
        }
        self.sync_target.fetch_max(position, Ordering::AcqRel);
        self.wake_background();
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|p| *p >= position || self.failure.get().is_some()).await;
    }

    /// Whether everything up to `position` is on the device.
    pub fn is_synced(&self, position: u64) -> bool {
        *self.synced.borrow() >= position
    }

    fn wake_background(&self) {
        *lock(&self.wake.0) = true;
        self.wake.1.notify_one();
    }

    /// Commits what is queued, flushes it to the device and stops the
    /// background thread.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_background();
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
        self.commit_queued(&mut lock(&self.lead));
        self.sync();
    }

    /// Commits everything queued, batch by batch, and hands it to the OS.
    fn commit_queued(&self, lead: &mut Lead) {
        loop {
            let ops: Vec<Op> = {
                let mut queue = lock(&self.queue);
                let n = queue.len().min(BATCH_COUNT_MAX);
                queue.drain(..n).collect()
            };
            let Some(last) = ops.last().map(|op| op.position) else { return };
            let mut batch = self.spaces.db.batch();
            let mut seq_moved = false;
            for op in ops {
                if let Some((seq, hlc)) = op.seq {
                    let (high, high_hlc) = lead.seq_high.unwrap_or_default();
                    lead.seq_high = Some((high.max(seq), high_hlc.max(hlc)));
                    seq_moved = true;
                }
                for item in op.items {
                    let space = match item.space {
                        Space::Entries => &self.spaces.entries,
                        Space::Backlog => &self.spaces.backlog,
                        Space::Life => &self.spaces.life,
                    };
                    match item.value {
                        Some(value) => batch.insert(space, &item.key[..], value),
                        None => batch.remove(space, &item.key[..]),
                    }
                }
            }
            if let (true, Some((seq, hlc))) = (seq_moved, lead.seq_high) {
                batch.insert(&self.spaces.life, LIFE_SEQ, encode_u64s(&[seq, hlc]));
            }
            if let Err(e) = batch.commit() {
                (self.on_failure)(e.to_string());
            }
            if let Err(e) = self.spaces.db.persist(PersistMode::Buffer) {
                (self.on_failure)(e.to_string());
            }
            // Published after a failure too (the disk reports it): waiters
            // must not hang on it.
            self.os_flushed.send_if_modified(|p| std::mem::replace(p, (*p).max(last)) < last);
        }
    }

    /// Flushes what was handed to the OS to the device. Without the lead:
    /// an fsync takes milliseconds, and writers keep committing meanwhile.
    fn sync(&self) {
        let handled = *self.os_flushed.borrow();
        if *self.synced.borrow() >= handled {
            return;
        }
        if let Err(e) = self.spaces.db.persist(PersistMode::SyncData) {
            (self.on_failure)(e.to_string());
        }
        self.synced.send_if_modified(|p| std::mem::replace(p, (*p).max(handled)) < handled);
    }

    /// The background thread: stragglers and the device.
    fn background(&self) {
        let interval = match self.policy {
            FsyncPolicy::Every(d) => d,
            FsyncPolicy::Always | FsyncPolicy::Never => IDLE_FLUSH,
        };
        while !self.stopping.load(Ordering::Acquire) {
            let woken = {
                let wanted = lock(&self.wake.0);
                let (mut wanted, _) = self
                    .wake
                    .1
                    .wait_timeout_while(wanted, interval, |w| !*w)
                    .unwrap_or_else(|e| e.into_inner());
                std::mem::replace(&mut *wanted, false)
            };
            // Blocking here, not `lead_if_free`: a straggler must not wait
            // for the next interval because a writer leads right now.
            self.commit_queued(&mut lock(&self.lead));
            let asked = self.sync_target.load(Ordering::Acquire) > *self.synced.borrow();
            let due = !woken && matches!(self.policy, FsyncPolicy::Every(_));
            if asked || due || self.policy == FsyncPolicy::Always {
                self.sync();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values, consistent after any panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
