//! The client workload: reads and writes by a Zipf law over the keys, with
//! the scenario's mix of deletes, CAS, document patches, TTLs, large
//! values and durability levels, and the read checks made as they happen.

use bytes::Bytes;
use geocache_crdt::Key;
use geocache_gossip::durability::Durability;
use geocache_gossip::fill::FillStart;
use geocache_gossip::peer::NodeKind;
use geocache_node::write::{Condition, Ttl, Write, WriteOp};
use rand::RngExt;
use std::sync::Arc;

use crate::oracle::WriteRecord;
use crate::world::PendingOp;
use crate::world::World;

impl World {
    /// Time to the next client operation of a region, µs.
    pub(crate) fn interarrival_us(&mut self) -> u64 {
        let rate = self.scenario.workload.ops_per_s_per_region;
        if rate <= 0.0 {
            return u64::MAX / 4;
        }
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        ((-u.ln() / rate) * 1e6).max(1.0) as u64
    }

    /// A key by the workload's Zipf law for a client of node `node`: its
    /// number and the key. With `per_app_keys` the key is moved into the
    /// node's part (keys `slot`, `slot + parts`, ...), keeping its rank.
    fn pick_key(&mut self, node: usize) -> (usize, Key) {
        let u: f64 = self.rng.random_range(0.0..1.0);
        let mut k = self.zipf_cdf.partition_point(|&c| c < u).min(self.zipf_cdf.len() - 1);
        if self.scenario.workload.per_app_keys {
            let parts = self.scenario.slots_per_region();
            let slot = self.nodes[node].slot;
            k = (k - k % parts + slot).min(self.zipf_cdf.len() - 1);
        }
        (k, self.keys.key(k).clone())
    }

    /// A client read of key `key_number` at `node`, answered now: counted
    /// by the node's kind, and stale when older than the newest write
    /// acked anywhere.
    pub(crate) fn finish_read(&mut self, node: usize, key_number: usize, key: &Key) {
        let now = self.node_now_ms(node);
        let got = self.nodes[node].store.get(key, now);
        let counts = match self.nodes[node].kind {
            NodeKind::Full => &mut self.tallies.full_reads,
            NodeKind::Sidecar => &mut self.tallies.sidecar_reads,
        };
        counts.0 += 1;
        counts.1 += u64::from(got.is_some());
        if let Some((stamp, visible)) = &self.oracle.newest[key_number] {
            let fresh = match &got {
                Some(r) => r.stamp() >= *stamp,
                None => !visible,
            };
            if !fresh {
                self.tallies.stale_reads += 1;
            }
        }
    }

    fn value(&mut self) -> Bytes {
        let w = &self.scenario.workload;
        let large = w.large_value_share > 0.0 && self.rng.random_range(0.0..1.0) < w.large_value_share;
        let n = if large { w.large_value_bytes } else { w.value_bytes };
        let fill: u8 = self.rng.random_range(0..=255);
        Bytes::from(vec![fill; n])
    }

    /// One client operation in `region`, at a live node of it.
    pub(crate) fn client_op(&mut self, region: usize) {
        let live: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].region == region && self.nodes[i].up).collect();
        if live.is_empty() {
            self.tallies.unavailable += 1;
            return;
        }
        let node = live[self.rng.random_range(0..live.len())];
        // Drawn only when the scenario has strong keys, so one without them
        // runs as it always did.
        let strong_share = self.scenario.workload.strong_incr_share;
        if strong_share > 0.0 && self.rng.random_range(0.0..1.0) < strong_share {
            self.strong_increment(node);
            return;
        }
        let (key_number, key) = self.pick_key(node);
        let w = self.scenario.workload.clone();
        if self.rng.random_range(0.0..1.0) < w.read_ratio {
            self.tallies.reads += 1;
            // A sidecar that does not hold the key asks a full node of its
            // region first, as the node's front ends do (`fill_if_missing`);
            // the read is answered when the fill ends.
            if self.nodes[node].kind == NodeKind::Sidecar && self.nodes[node].store.peek(&key).is_none() {
                let mono = self.mono_ms();
                match self.nodes[node].core.fill(key.clone(), mono) {
                    FillStart::Asked | FillStart::Joined => {
                        self.pending_ops.entry((node, key)).or_default().push(PendingOp::Read { key_number });
                        self.flush(node);
                        return;
                    }
                    FillStart::NotSidecar | FillStart::NoFullNode | FillStart::Busy => {}
                }
            }
            self.finish_read(node, key_number, &key);
            return;
        }
        let roll: f64 = self.rng.random_range(0.0..1.0);
        // A write that builds on the current value fills first at a
        // sidecar, as the node's write path does; it runs when the fill
        // ends.
        let builds_on_current =
            roll >= w.delete_share && roll < w.delete_share + w.cas_share + w.doc_patch_share;
        if builds_on_current
            && self.nodes[node].kind == NodeKind::Sidecar
            && self.nodes[node].store.peek(&key).is_none()
        {
            let mono = self.mono_ms();
            if let FillStart::Asked | FillStart::Joined = self.nodes[node].core.fill(key.clone(), mono) {
                self.pending_ops.entry((node, key)).or_default().push(PendingOp::Write {
                    key_number,
                    region,
                    roll,
                });
                self.flush(node);
                return;
            }
        }
        self.client_write(node, region, key_number, key, roll);
    }

    /// A client write at `node` of key `key_number`, of the kind `roll`
    /// picks among the workload's shares.
    pub(crate) fn client_write(
        &mut self,
        node: usize,
        region: usize,
        key_number: usize,
        key: Key,
        roll: f64,
    ) {
        let now = self.node_now_ms(node);
        let w = self.scenario.workload.clone();
        let ttl = match w.ttl_s {
            Some(s) => Ttl::AfterMs((s * 1_000.0) as u64),
            None => Ttl::Never,
        };
        let incr_from = w.delete_share + w.cas_share + w.doc_patch_share;
        let increment = roll >= incr_from && roll < incr_from + w.incr_share;
        // An increment goes to a counter key of its own; the key's number
        // then names the counter, and the regular key's oracle is untouched.
        let (key, counter) = if increment {
            let c = key_number % w.counter_keys;
            (counter_key(c), Some(c))
        } else {
            (key, None)
        };
        // Drawn only for an increment, so scenarios without any keep their
        // random sequence (and their reports) as they were.
        let by: i64 = if increment {
            let sign = if self.rng.random_range(0..10) == 0 { -1 } else { 1 };
            sign * self.rng.random_range(1..=10)
        } else {
            0
        };
        let (op, condition, ttl) = if increment {
            (WriteOp::Add(by), Condition::Always, Ttl::Keep { or_ms: None })
        } else if roll < w.delete_share {
            (WriteOp::Delete, Condition::Always, Ttl::Never)
        } else if roll < w.delete_share + w.cas_share {
            let current = self.nodes[node].store.get(&key, now);
            let condition = match current {
                Some(r) => Condition::IfMatch(r.vv()),
                None => Condition::IfAbsent,
            };
            (WriteOp::Put { value: self.value(), content_type: None }, condition, ttl)
        } else if roll < w.delete_share + w.cas_share + w.doc_patch_share {
            let field = format!("f{}", self.rng.random_range(0..8u32));
            let v: u32 = self.rng.random_range(0..1_000);
            (WriteOp::Patch(serde_json::json!({ field: v })), Condition::Always, Ttl::Keep { or_ms: None })
        } else {
            (WriteOp::Put { value: self.value(), content_type: None }, Condition::Always, ttl)
        };
        let durability = {
            let d: f64 = self.rng.random_range(0.0..1.0);
            if d < w.durability_all_share {
                Durability::All
            } else if d < w.durability_all_share + w.durability_region_share {
                Durability::Region
            } else {
                Durability::Local
            }
        };
        let write = Write { key: key.clone(), op, ttl, condition };
        let outcome = match self.nodes[node].store.apply_local(write, now) {
            Ok(o) => o,
            Err(_) => {
                self.tallies.cas_refused += 1;
                return;
            }
        };
        self.tallies.writes += 1;
        self.oracle.outstanding += self.nodes.iter().filter(|n| n.up).count() as i64 - 1;
        // Read your own write, at once, at the same node.
        match self.nodes[node].store.get(&key, now) {
            Some(r) if r.stamp() >= outcome.register.meta.stamp => {}
            None if !outcome.register.is_visible_at(now) => {}
            _ => self.tallies.ryw_violations += 1,
        }
        let visible = outcome.register.is_visible_at(now);
        let stamp = outcome.register.meta.stamp;
        match counter {
            Some(c) => self.oracle.increments.push(((outcome.delta.origin, outcome.delta.seq), c, by)),
            None => self.oracle.newest[key_number] = Some((stamp, visible)),
        }
        let delta = Arc::new(outcome.delta.clone());
        let full = Arc::new(outcome.whole_delta());
        self.oracle.writes.insert(
            (delta.origin, delta.seq),
            WriteRecord {
                key: key.clone(),
                register: outcome.register.clone(),
                at_us: self.now_us,
                origin_region: region,
                applied: 1,
                durability: match durability {
                    Durability::Local | Durability::Disk => 0,
                    Durability::Region => 1,
                    Durability::All => 2,
                },
                acked_at_level: durability <= Durability::Disk,
            },
        );
        let bytes = delta.key.size_bytes() + outcome.register.size_bytes();
        let mono = self.mono_ms();
        self.nodes[node].core.local_write(delta, full, bytes, durability, mono);
        self.flush(node);
    }
}

/// The key of counter `c`, apart from the workload's other keys.
pub fn counter_key(c: usize) -> Key {
    Key::new("sim", bytes::Bytes::from(format!("counter{c}")))
}
