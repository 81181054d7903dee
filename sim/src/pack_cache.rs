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
use std::sync::Arc;

/// Registers remembered: a delta reaches every node within the longest
/// path of the network, a small part of a second's writes.
const SLOT_COUNT: usize = 1 << 16;

/// Packed entries by register identity, in a table indexed by a hash of
/// the register's address: a register whose slot another took is packed
/// again, which costs time, never correctness (the entry is the same).
/// A hash map with an eviction queue cost a tenth of a 10 x 20 run.
pub struct PackCache {
    /// The `Arc` held keeps the address from being reused while it is
    /// remembered.
    slots: Vec<Option<(Arc<Register>, Entry)>>,
}

impl Default for PackCache {
    fn default() -> Self {
        PackCache { slots: (0..SLOT_COUNT).map(|_| None).collect() }
    }
}

impl PackCache {
    /// The entry holding `register`, packed once per register.
    pub fn entry(&mut self, register: &Arc<Register>) -> Entry {
        let at = Arc::as_ptr(register) as usize as u64;
        // Fibonacci hashing: allocation addresses share their low bits.
        let slot = (at.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOT_COUNT.trailing_zeros())) as usize;
        match &self.slots[slot] {
            Some((held, entry)) if Arc::ptr_eq(held, register) => entry.clone(),
            _ => {
                let entry = Entry::from_register(register.clone());
                self.slots[slot] = Some((register.clone(), entry.clone()));
                entry
            }
        }
    }
}
