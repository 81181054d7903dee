//! What the simulation's event queue holds: the kinds of event, ordered
//! by virtual time and then by the order they were scheduled in, so runs
//! replay from their seed.

use bytes::Bytes;
use geocache_gossip::wire::Message;
use std::cmp::Ordering;

pub(crate) enum EventKind {
    ClientOp {
        region: usize,
    },
    /// Boxed: a message is large, and events move on every heap operation.
    Deliver(Box<Delivery>),
    /// A membership datagram arrives. Boxed like `Deliver`.
    Datagram(Box<Datagram>),
    Timer {
        node: usize,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Sweep,
}

pub(crate) struct Datagram {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) bytes: Bytes,
}

/// A client operation at a sidecar waiting for its key's fill.
pub(crate) enum PendingOp {
    /// A read, answered when the fill ends.
    Read {
        /// The key's number.
        key_number: usize,
    },
    /// A write that builds on the current value (CAS, patch).
    Write {
        /// The key's number.
        key_number: usize,
        /// The client's region.
        region: usize,
        /// Which kind of write (the workload's draw).
        roll: f64,
    },
}

pub(crate) struct Delivery {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) message: Message,
    pub(crate) request: bool,
}

/// What the sender of a full transfer sent since its chunk 0.
#[derive(Default)]
pub(crate) struct TransferSent {
    pub(crate) keys: std::collections::BTreeSet<geocache_crdt::Key>,
    /// The sender store's removal mark when chunk 0 went.
    pub(crate) sender_removal_mark: u64,
}

pub(crate) struct Scheduled {
    pub(crate) at_us: u64,
    pub(crate) seq: u64,
    pub(crate) kind: EventKind,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}
