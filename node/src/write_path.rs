//! The one write path every front end calls: HTTP (`/v1/kv`, `/v1/doc`),
//! the earlier `/api`, and RESP. A write is applied to the store here,
//! handed to replication, and answered once it reached the durability its
//! caller asked for; the TTL a write may have is decided here too. So the
//! next change to the write path (persistence, strong writes) is made in
//! this file, once, and every front end has it.

use std::time::Duration;
use thiserror::Error;

use crate::cluster::Durability;
use crate::config::Consistency;
use crate::namespace::Namespace;
use crate::state::NodeState;
use crate::store::{Condition, Ttl, Write, WriteError, WriteOp, WriteOutcome};

/// A write through [`NodeState::write`] did not succeed as asked.
#[derive(Debug, Error)]
pub enum WritePathError {
    /// The store refused the write (its condition does not hold, or the
    /// patch is invalid): nothing changed, nothing replicates.
    #[error(transparent)]
    Refused(#[from] WriteError),
    /// The write is applied here and replicating, but did not reach the
    /// durability asked for within `--durability-timeout`.
    #[error("durability {} not reached in time; reached {}: {why}", .wanted.as_str(), .reached.as_str())]
    DurabilityTimeout {
        /// The level asked for.
        wanted: Durability,
        /// The level reached.
        reached: Durability,
        /// Why, in a few words.
        why: &'static str,
    },
    /// Replication stopped (its task panicked): a write acknowledged now
    /// would never leave this node, so none is taken until a restart.
    #[error("{0}; this node takes no writes until it is restarted")]
    ReplicationStopped(String),
    /// `disk` was asked of a node without a data dir. Nothing was written.
    #[error("durability disk needs a node with --data-dir; this node keeps its data in memory only")]
    NoDataDir,
    /// The data dir failed a write or a flush: the disk no longer mirrors
    /// the store, so no write is acknowledged as durable.
    #[error("the data dir failed ({0}); this node takes no writes until it is restarted")]
    DiskFailed(String),
    /// A strong write or read found no majority of the acceptors (or they
    /// are full, or this node is busy): nothing was written.
    #[error("strong consistency unavailable: {0}")]
    StrongUnavailable(String),
    /// A strong write's accepts left but no majority confirmed them in
    /// time: it may or may not have been made. Read (strongly) to know.
    #[error("strong write outcome unknown: no majority confirmed it in time, and it may have been made; read the key with Geocache-Consistency: strong to know")]
    StrongUnknown,
    /// A strong write of a kind strong keys do not take. Nothing written.
    #[error("not taken under strong consistency: {0}")]
    StrongUnsupported(&'static str),
    /// Strong consistency was asked of a node without acceptors.
    #[error("strong consistency needs --strong-acceptors (and --gossip) on this node")]
    StrongNotConfigured,
}

/// A TTL longer than its namespace allows. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("ttl {} exceeds the maximum {} for namespace {namespace}", humantime::format_duration(*.asked), humantime::format_duration(*.max))]
pub struct TtlTooLong {
    /// The namespace.
    pub namespace: String,
    /// The TTL asked for.
    pub asked: Duration,
    /// The namespace's maximum.
    pub max: Duration,
}

/// The TTL rules of one namespace: its default and its maximum.
#[derive(Clone, Debug)]
pub struct TtlPolicy<'a> {
    /// Borrowed: a policy is looked up on every write, and a clone would
    /// be a write to the namespace's shared count from every connection.
    namespace: &'a Namespace,
    default: Option<Duration>,
    max: Duration,
}

impl TtlPolicy<'_> {
    /// The namespace's default TTL, ms.
    pub fn default_ms(&self) -> Option<u64> {
        self.default.map(|d| d.as_millis() as u64)
    }

    /// `ms` if the namespace allows it.
    ///
    /// # Errors
    ///
    /// [`TtlTooLong`] past the namespace's maximum.
    pub fn check_ms(&self, ms: u64) -> Result<u64, TtlTooLong> {
        let asked = Duration::from_millis(ms);
        if asked > self.max {
            return Err(TtlTooLong { namespace: self.namespace.to_string(), asked, max: self.max });
        }
        Ok(ms)
    }

    /// The TTL of a write that replaces the value: the one asked for (already
    /// checked), else the namespace's default, else none.
    pub fn put(&self, asked_ms: Option<u64>) -> Ttl {
        match asked_ms.or(self.default_ms()) {
            Some(ms) => Ttl::AfterMs(ms),
            None => Ttl::Never,
        }
    }

    /// The TTL of a write that builds on the value (a patch, an
    /// increment): the one asked for (already checked), else the value's
    /// own expiry, and for a new value the namespace's default.
    pub fn keep(&self, asked_ms: Option<u64>) -> Ttl {
        match asked_ms {
            Some(ms) => Ttl::AfterMs(ms),
            None => Ttl::Keep { or_ms: self.default_ms() },
        }
    }
}

impl NodeState {
    /// The TTL rules of `ns`.
    pub fn ttl_policy<'a>(&self, ns: &'a Namespace) -> TtlPolicy<'a> {
        let (default, max) = self.config.ttl_policy(ns);
        TtlPolicy { namespace: ns, default, max }
    }

    /// The consistency of writes to `ns` unless a request asks otherwise.
    pub fn consistency(&self, ns: &str) -> Consistency {
        self.config.namespaces.get(ns).map(|c| c.consistency).unwrap_or_default()
    }

    /// [`write_as`](Self::write_as) with the namespace's consistency.
    ///
    /// # Errors
    ///
    /// [`WritePathError`].
    pub async fn write(&self, write: Write, level: Durability) -> Result<WriteOutcome, WritePathError> {
        let consistency = self.consistency(&write.key.namespace);
        self.write_as(write, level, consistency).await
    }

    /// Applies `write` here, hands it to replication, and waits (at most
    /// `--durability-timeout`) until it reached `level`. Under
    /// `Consistency::Strong` the write is first chosen by a majority of
    /// the acceptors (`strong.rs`).
    ///
    /// # Errors
    ///
    /// [`WritePathError`]: refused (nothing changed) or applied but not
    /// yet as durable as asked.
    pub async fn write_as(
        &self,
        write: Write,
        level: Durability,
        consistency: Consistency,
    ) -> Result<WriteOutcome, WritePathError> {
        self.check_writable(level)?;
        if consistency == Consistency::Strong {
            return self.write_strong(write, level).await;
        }
        // A write that builds on the current value (a condition, a patch,
        // a kept expiry) needs it here first; a plain put or delete
        // replaces it and waits for nothing.
        let builds_on_current = !matches!(write.condition, Condition::Always)
            || matches!(write.op, WriteOp::Patch(_))
            || matches!(write.ttl, Ttl::Keep { .. });
        if builds_on_current {
            self.fill_if_missing(&write.key).await;
        }
        let outcome = self.store.apply_local(write)?;
        self.finish_write(outcome, level).await
    }

    /// Whether a write may be taken at all, at `level`.
    fn check_writable(&self, level: Durability) -> Result<(), WritePathError> {
        if let Some(why) = self.replication_health.failure() {
            return Err(WritePathError::ReplicationStopped(why.to_string()));
        }
        let disk = self.store.disk();
        if level == Durability::Disk && disk.is_none() {
            return Err(WritePathError::NoDataDir);
        }
        if let Some(why) = disk.and_then(|d| d.failure()) {
            return Err(WritePathError::DiskFailed(why.to_string()));
        }
        Ok(())
    }

    /// Hands a write applied here to replication and waits (at most
    /// `--durability-timeout`) until it reached `level`.
    pub(crate) async fn finish_write(
        &self,
        outcome: WriteOutcome,
        level: Durability,
    ) -> Result<WriteOutcome, WritePathError> {
        let disk = self.store.disk();
        // On a node with a data dir every level from `disk` up includes
        // this node's disk; `--fsync always` makes every write wait for it.
        let disk_wait = disk.filter(|d| level >= Durability::Disk || d.sync_every_write());
        let replicated = if level == Durability::Disk { Durability::Local } else { level };
        // Most writes are answered once handed to replication: only one
        // that waits has a deadline, and reads the clock for it.
        let waits = disk_wait.is_some() || replicated > Durability::Local;
        let deadline = waits.then(|| tokio::time::Instant::now() + self.config.durability_timeout);
        let progress = match &self.cluster {
            Some(cluster) => cluster.replicate(&outcome, replicated).await,
            None if replicated == Durability::Local => None,
            None => {
                return Err(WritePathError::DurabilityTimeout {
                    wanted: level,
                    reached: Durability::Local,
                    why: "this node does not replicate (no --gossip)",
                })
            }
        };
        // No disk to wait for, and replication at `local` gives no progress.
        let Some(deadline) = deadline else { return Ok(outcome) };
        if let Some(disk) = disk_wait {
            match tokio::time::timeout_at(deadline, disk.wait_durable(outcome.disk_position)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(WritePathError::DiskFailed(e.0)),
                Err(_) => {
                    return Err(WritePathError::DurabilityTimeout {
                        wanted: level.max(Durability::Disk),
                        reached: Durability::Local,
                        why: "the write is applied here; the disk did not flush it in time",
                    })
                }
            }
        }
        let Some(mut progress) = progress else { return Ok(outcome) };
        let wait = progress.wait_for(|reached| *reached >= replicated);
        if matches!(tokio::time::timeout_at(deadline, wait).await, Ok(Ok(_))) {
            return Ok(outcome);
        }
        let reached =
            (*progress.borrow()).max(if disk_wait.is_some() { Durability::Disk } else { Durability::Local });
        Err(WritePathError::DurabilityTimeout {
            wanted: level,
            reached,
            why: "the write is applied here and replicating",
        })
    }
}
