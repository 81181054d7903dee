//! The one thread that writes the data dir: group commit.
//!
//! Every write of the store is queued here, in the order the store made it
//! (it queues under the key's stripe lock, so one key's writes stay in
//! order). The thread takes whatever is queued, commits it as one fjall
//! batch, and hands it to the OS with one `write`; it flushes to the
//! device when `--fsync` says so or a write waits for `disk`. Many writers
//! committing their own batches queued on fjall's journal lock instead (a
//! measured 17 % of the node's time in futex waits at 50 clients).
//!
//! Positions number the queued operations in queue order, so "the thread
//! has handled position p" means every operation queued before it too.

use fjall::{Database, Keyspace, PersistMode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::watch;

use super::fsync::FsyncPolicy;

/// Operations queued at most; a writer waits for room beyond (the
/// queue's bound is the backpressure of a disk slower than the writes).
const QUEUE_COUNT_MAX: usize = 16_384;
/// Operations in one commit at most.
const BATCH_COUNT_MAX: usize = 4_096;

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

enum Op {
    Write(Vec<Item>),
    /// A write waits for the device: flush at once.
    Sync,
    Stop,
}

/// The keyspaces the thread writes.
#[derive(Clone)]
pub(super) struct Spaces {
    pub db: Database,
    pub entries: Keyspace,
    pub backlog: Keyspace,
    pub life: Keyspace,
}

/// The queue and what the thread has done so far.
pub(super) struct JournalWriter {
    queue: Mutex<SyncSender<(u64, Op)>>,
    enqueued: AtomicU64,
    os_flushed: watch::Sender<u64>,
    synced: watch::Sender<u64>,
    sync_target: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<OnceLock<String>>,
}

impl JournalWriter {
    /// Starts the thread. `on_failure` is called once per failed commit or
    /// flush, with the error.
    pub fn start(
        spaces: Spaces,
        policy: FsyncPolicy,
        failure: Arc<OnceLock<String>>,
        on_failure: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Arc<JournalWriter>> {
        let (tx, rx) = sync_channel(QUEUE_COUNT_MAX);
        let writer = Arc::new(JournalWriter {
            queue: Mutex::new(tx),
            enqueued: AtomicU64::new(0),
            os_flushed: watch::Sender::new(0),
            synced: watch::Sender::new(0),
            sync_target: AtomicU64::new(0),
            thread: Mutex::new(None),
            failure,
        });
        let state = writer.clone();
        let handle = std::thread::Builder::new()
            .name("geocache-journal".into())
            .spawn(move || state.run(&spaces, policy, &rx, &on_failure))?;
        *lock(&writer.thread) = Some(handle);
        Ok(writer)
    }

    fn push(&self, op: Op) -> u64 {
        // One lock for numbering and queueing, so positions follow queue
        // order.
        let queue = lock(&self.queue);
        let position = self.enqueued.fetch_add(1, Ordering::AcqRel) + 1;
        // Fails only once the thread stopped (shutdown): nothing more is
        // written then, and waiters are released by `stop`.
        let _ = queue.send((position, op));
        position
    }

    /// Queues `items`; returns their position.
    pub fn submit(&self, items: Vec<Item>) -> u64 {
        self.push(Op::Write(items))
    }

    /// The last position queued.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::Acquire)
    }

    /// Resolves once everything up to `position` was handed to the OS.
    pub async fn wait_os(&self, position: u64) {
        if *self.os_flushed.borrow() >= position {
            return;
        }
        let mut rx = self.os_flushed.subscribe();
        let _ = rx.wait_for(|p| *p >= position || self.failure.get().is_some()).await;
    }

    /// Resolves once everything up to `position` is on the device.
    pub async fn wait_synced(&self, position: u64) {
        if *self.synced.borrow() >= position {
            return;
        }
        self.sync_target.fetch_max(position, Ordering::AcqRel);
        self.push(Op::Sync);
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|p| *p >= position || self.failure.get().is_some()).await;
    }

    /// Whether everything up to `position` is on the device.
    pub fn is_synced(&self, position: u64) -> bool {
        *self.synced.borrow() >= position
    }

    /// Handles what is queued, flushes it to the device, and stops the
    /// thread.
    pub fn stop(&self) {
        self.push(Op::Stop);
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }

    fn run(
        &self,
        spaces: &Spaces,
        policy: FsyncPolicy,
        rx: &Receiver<(u64, Op)>,
        on_failure: &dyn Fn(String),
    ) {
        let interval = match policy {
            FsyncPolicy::Every(d) => Some(d),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        let mut next_sync = interval.map(|d| Instant::now() + d);
        let mut handled = 0;
        loop {
            let first = match next_sync {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush(spaces, handled, true, on_failure);
                        next_sync = interval.map(|d| Instant::now() + d);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                },
            };
            let mut batch = spaces.db.batch();
            let mut stop = false;
            let mut sync = policy == FsyncPolicy::Always;
            let mut next = Some(first);
            let mut count = 0;
            while let Some((position, op)) = next.take() {
                handled = position;
                count += 1;
                match op {
                    Op::Write(items) => {
                        for item in items {
                            let space = match item.space {
                                Space::Entries => &spaces.entries,
                                Space::Backlog => &spaces.backlog,
                                Space::Life => &spaces.life,
                            };
                            match item.value {
                                Some(value) => batch.insert(space, &item.key[..], value),
                                None => batch.remove(space, &item.key[..]),
                            }
                        }
                    }
                    Op::Sync => sync = true,
                    Op::Stop => stop = true,
                }
                if count < BATCH_COUNT_MAX && !stop {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = batch.commit() {
                on_failure(e.to_string());
            }
            sync |= stop || self.sync_target.load(Ordering::Acquire) > *self.synced.borrow();
            if next_sync.is_some_and(|at| Instant::now() >= at) {
                sync = true;
                next_sync = interval.map(|d| Instant::now() + d);
            }
            self.flush(spaces, handled, sync, on_failure);
            if stop {
                return;
            }
        }
    }

    /// Hands everything committed to the OS, and to the device with `sync`;
    /// records `handled` as reached (also after a failure, which the disk
    /// reports: waiters must not hang on it).
    fn flush(&self, spaces: &Spaces, handled: u64, sync: bool, on_failure: &dyn Fn(String)) {
        let mode = if sync { PersistMode::SyncData } else { PersistMode::Buffer };
        if sync && *self.synced.borrow() >= handled {
            return;
        }
        if let Err(e) = spaces.db.persist(mode) {
            on_failure(e.to_string());
        }
        self.os_flushed.send_if_modified(|p| std::mem::replace(p, (*p).max(handled)) < handled);
        if sync {
            self.synced.send_if_modified(|p| std::mem::replace(p, (*p).max(handled)) < handled);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values, consistent after any panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
