//! One packed entry per replicated register, shared by every simulated
//! node that keeps it.
//!
//! Each real node packs the registers it keeps into its own allocation
//! (`geocache_node::entry`). Two hundred simulated nodes doing the same
//! held two hundred copies of every value in one process and spent a tenth
//! of the run packing them (issue 15). A delta reaches every node as the
//! same `Arc<Register>`, so the simulator packs it once and hands each
//! node a clone of that entry. Weights are unchanged: each node's budget
//! still counts the entry as its own, as the real node's does.

use geocache_crdt::Register;
use geocache_node::entry::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Registers remembered: a delta reaches every node within the longest
/// path of the network, a small part of a second's writes.
const REMEMBERED_COUNT_MAX: usize = 1 << 16;

/// Packed entries by register identity, oldest forgotten first.
#[derive(Default)]
pub struct PackCache {
    /// By the register's address; the `Arc` held keeps the address from
    /// being reused while it is remembered.
    by_register: HashMap<usize, (Arc<Register>, Entry), foldhash::fast::FixedState>,
    order: VecDeque<usize>,
}

impl PackCache {
    /// The entry holding `register`, packed once per register.
    pub fn entry(&mut self, register: &Arc<Register>) -> Entry {
        let at = Arc::as_ptr(register) as usize;
        if let Some((_, entry)) = self.by_register.get(&at) {
            return entry.clone();
        }
        let entry = Entry::from_register(register.clone());
        if self.order.len() >= REMEMBERED_COUNT_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.by_register.remove(&oldest);
            }
        }
        self.by_register.insert(at, (register.clone(), entry.clone()));
        self.order.push_back(at);
        entry
    }
}
