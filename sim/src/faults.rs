//! Faults as they start and end: partitions, loss, isolation, clock skew,
//! slow nodes, message loss by kind, and crashes with restarts (with or
//! without the data).

use geocache_crdt::NodeId;
use geocache_gossip::core::Core;
use geocache_gossip::resume::ResumeState;
use rand::RngExt;

use crate::crash_watch::CrashWatch;
use crate::scenario::FaultKind;
use crate::sim_node::{core_config, identity};
use crate::sim_store::SimStore;
use crate::world::World;

impl World {
    fn region_index(&self, name: &str) -> usize {
        self.scenario.regions.iter().position(|r| r.name == name).unwrap_or(0)
    }

    /// Fault `f` starts (`start`) or ends.
    pub(crate) fn fault(&mut self, f: usize, start: bool) {
        let kind = self.scenario.faults[f].kind.clone();
        match kind {
            FaultKind::Partition { a, b } => {
                let pair = (self.region_index(&a), self.region_index(&b));
                let pair = (pair.0.min(pair.1), pair.0.max(pair.1));
                if start {
                    self.links.partitions.insert(pair);
                } else {
                    self.links.partitions.remove(&pair);
                }
            }
            FaultKind::LossBurst { a, b, loss } => {
                let pair = (self.region_index(&a), self.region_index(&b));
                let pair = (pair.0.min(pair.1), pair.0.max(pair.1));
                if start {
                    self.links.loss.insert(pair, loss);
                } else {
                    self.links.loss.remove(&pair);
                }
            }
            FaultKind::MessageLoss { message, loss } => {
                if start {
                    self.links.kind_loss.insert(message, loss);
                } else {
                    self.links.kind_loss.remove(&message);
                }
            }
            FaultKind::SlowNode { node, bandwidth_mbps } => {
                if start {
                    self.links.slow.insert(node, bandwidth_mbps);
                } else {
                    self.links.slow.remove(&node);
                }
            }
            FaultKind::Isolate { node } => self.nodes[node].isolated = start,
            FaultKind::ClockSkew { node, skew_ms } => {
                self.nodes[node].skew_ms = if start { skew_ms } else { 0 }
            }
            FaultKind::Crash { node, wipe } => {
                if start {
                    if self.nodes[node].up {
                        self.strong_node_crashed(node);
                        self.nodes[node].up = false;
                        self.oracle.live_count -= 1;
                        let watch = CrashWatch { node, crashed_us: self.now_us, ..CrashWatch::default() };
                        self.crashes.push(watch);
                    }
                } else if !self.nodes[node].up {
                    self.restart(node, wipe);
                    let now = self.now_us;
                    if let Some(w) = self.crashes.iter_mut().rev().find(|w| w.node == node) {
                        w.restarted_us = Some(now);
                    }
                }
            }
        }
    }

    /// Node `i` starts again: with `wipe`, a new life (a new origin id, an
    /// empty store, a new core); without, its store and replication state
    /// restored as the node restores them from its data dir (`Core::resume`).
    fn restart(&mut self, i: usize, wipe: bool) {
        let region = self.nodes[i].region;
        let now = self.mono_ms();
        let seed = self.rng.random();
        if wipe {
            let origin = NodeId(self.next_origin);
            self.next_origin += 1;
            let budget = self.scenario.regions[region].memory_mib << 20;
            let old = std::mem::replace(&mut self.nodes[i].origin, origin);
            self.by_origin.remove(&old);
            self.by_origin.insert(origin, i);
            self.nodes[i].store = SimStore::new(origin, budget, &self.scenario.debug, self.keys.clone());
            let me = identity(&self.scenario, (region, self.nodes[i].slot), i, origin, now);
            // Its acceptor's promises are gone with the disk: it answers no
            // more (it would need a change of the acceptor set).
            self.nodes[i].acceptor_slots.clear();
            self.nodes[i].acceptor_enabled = false;
            let config = core_config(&self.scenario, region, &self.seeds, false);
            self.nodes[i].core = Core::new(me, config, seed, now);
        } else {
            // What the node's data dir holds: the store (every write reached
            // the disk before it left the node, so a killed process loses
            // none), its last sequence number, the watermarks' last
            // checkpoint and the backlog; everything else of the core
            // (queues, relay state, waiters, members) dies with the process.
            // The start time is the incarnation, so the new identity wins
            // over the previous life.
            let old = &self.nodes[i].core;
            let state = ResumeState {
                own_seq: old.replicator().head(),
                watermarks: self.nodes[i].checkpoint.clone(),
                backlog: old.replicator().backlog_deltas(),
            };
            let me = identity(&self.scenario, (region, self.nodes[i].slot), i, self.nodes[i].origin, now);
            let config = core_config(&self.scenario, region, &self.seeds, self.nodes[i].acceptor_enabled);
            self.nodes[i].core = Core::resume(me, config, &state, seed, now);
            let node = &mut self.nodes[i];
            for (key, slot) in &node.acceptor_slots {
                node.core.restore_strong_slot(key.clone(), slot.clone());
            }
            // The simulated store is held whole: it has nothing to load.
            self.nodes[i].core.store_loaded();
        }
        self.nodes[i].up = true;
        self.oracle.live_count += 1;
        self.nodes[i].timer_at_us = u64::MAX;
        self.flush(i);
    }
}
