//! The report of one run: text, JSON. Same scenario and seed give the same
//! bytes (no wall-clock figure is in it).

use serde::Serialize;

use crate::checks::Check;
use crate::world::World;

/// Visibility lag between two regions.
#[derive(Clone, Debug, Serialize)]
pub struct LagRow {
    /// Where writes were made.
    pub from: String,
    /// Where they became visible.
    pub to: String,
    /// The modelled one-way delay, ms.
    pub one_way_ms: f64,
    /// Median lag, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// p50 over the one-way delay.
    pub p50_over_delay: f64,
    /// Samples.
    pub samples: u64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Virtual seconds simulated from the workload's start.
    pub virtual_s: f64,
    /// Virtual seconds the cluster took to form (every node seeing every
    /// other through membership) before the workload started.
    pub formation_s: f64,
    /// Client reads.
    pub reads: u64,
    /// Client writes.
    pub writes: u64,
    /// CAS writes refused.
    pub cas_refused: u64,
    /// Operations with no live node in their region.
    pub unavailable: u64,
    /// Share of reads older than the newest write acked anywhere.
    pub stale_read_rate: f64,
    /// Share of reads that found a value.
    pub hit_ratio: f64,
    /// Replicated writes concurrent with the value held (summed over nodes).
    pub conflicts: u64,
    /// Evictions summed over nodes.
    pub evictions: u64,
    /// Tombstones evicted before their retention, summed over nodes.
    pub tombstones_evicted_early: u64,
    /// Strong increments: acknowledged, unknown, unavailable, given up
    /// (`strong_clients.rs`).
    pub strong: [u64; 4],
    /// Bytes between regions per client write.
    pub wan_bytes_per_write: f64,
    /// Bytes inside regions per client write.
    pub lan_bytes_per_write: f64,
    /// Replication messages of any kind per client write (membership's
    /// datagrams are not counted here).
    pub messages_per_write: f64,
    /// Membership (foca) bytes between regions, per node per virtual second.
    pub membership_wan_bytes_per_node_s: f64,
    /// Membership bytes inside regions, per node per virtual second.
    pub membership_lan_bytes_per_node_s: f64,
    /// Members reported up, summed over nodes (start, restarts, heals).
    pub member_ups: u64,
    /// Members reported down, summed over nodes (crashes, partitions).
    pub member_downs: u64,
    /// Full transfers that arrived whole, summed over nodes.
    pub transfers_applied: u64,
    /// Frames refused at a sender (its queue toward a slow node full).
    pub refused_frames: u64,
    /// Replication messages and bytes per client write, by kind.
    pub messages_by_kind: Vec<crate::message_kinds::KindRow>,
    /// Each crash: how long the other nodes took to see it down, and its
    /// next life up.
    pub crashes: Vec<crate::crash_watch::CrashRow>,
    /// Full nodes against sidecars, when the scenario has sidecars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecars: Option<SidecarRow>,
    /// Lag per region pair.
    pub lag: Vec<LagRow>,
    /// Checker verdicts.
    pub checks: Vec<Check>,
}

/// What sidecars cost and keep, against full nodes.
#[derive(Clone, Debug, Serialize)]
pub struct SidecarRow {
    /// Share of client reads at full nodes that found a value.
    pub full_hit_ratio: f64,
    /// Share of client reads at sidecars that found a value (filled or
    /// held).
    pub sidecar_hit_ratio: f64,
    /// Registers held at the end, mean over live full nodes.
    pub full_keys_held: f64,
    /// Registers held at the end, mean over live sidecars.
    pub sidecar_keys_held: f64,
    /// `sidecar_keys_held / full_keys_held`.
    pub key_share: f64,
    /// Remote writes sidecars applied without storing, per sidecar.
    pub not_stored_per_sidecar: f64,
    /// Fills asked, summed over sidecars.
    pub fills_asked: u64,
    /// Fills that brought a register.
    pub fills_found: u64,
    /// Fills answered: nothing held.
    pub fills_absent: u64,
    /// Fills answered by a node behind the asker (a miss).
    pub fills_behind: u64,
    /// Fills without an answer in time (a miss).
    pub fills_timed_out: u64,
    /// Misses with no full node up in the region.
    pub fills_no_full_node: u64,
}

impl SidecarRow {
    fn new(world: &World) -> Option<SidecarRow> {
        use geocache_gossip::peer::NodeKind;
        let t = &world.tallies;
        let live = || world.nodes.iter().filter(|n| n.up);
        let sidecars: Vec<_> = live().filter(|n| n.kind == NodeKind::Sidecar).collect();
        let fulls: Vec<_> = live().filter(|n| n.kind == NodeKind::Full).collect();
        if world.nodes.iter().all(|n| n.kind == NodeKind::Full) {
            return None;
        }
        let mean = |nodes: &[&crate::sim_node::SimNode]| {
            nodes.iter().map(|n| n.store.held_count() as f64).sum::<f64>() / nodes.len().max(1) as f64
        };
        let (full_keys_held, sidecar_keys_held) = (mean(&fulls), mean(&sidecars));
        let all_sidecars = || world.nodes.iter().filter(|n| n.kind == NodeKind::Sidecar);
        let fills = |f: fn(&geocache_gossip::fill::FillStats) -> u64| {
            all_sidecars().map(|n| f(n.core.fill_stats())).sum::<u64>()
        };
        let not_stored: u64 = all_sidecars().map(|n| n.core.replicator().stats().not_stored).sum();
        Some(SidecarRow {
            full_hit_ratio: round3(t.full_reads.1 as f64 / t.full_reads.0.max(1) as f64),
            sidecar_hit_ratio: round3(t.sidecar_reads.1 as f64 / t.sidecar_reads.0.max(1) as f64),
            full_keys_held: round3(full_keys_held),
            sidecar_keys_held: round3(sidecar_keys_held),
            key_share: round3(sidecar_keys_held / full_keys_held.max(1.0)),
            not_stored_per_sidecar: round3(not_stored as f64 / all_sidecars().count().max(1) as f64),
            fills_asked: fills(|f| f.asked),
            fills_found: fills(|f| f.found),
            fills_absent: fills(|f| f.absent),
            fills_behind: fills(|f| f.behind),
            fills_timed_out: fills(|f| f.timed_out),
            fills_no_full_node: fills(|f| f.no_full_node),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(world: &World, checks: Vec<Check>) -> Report {
        let t = &world.tallies;
        let c = world.store_counts();
        let sent = t.kinds.total();
        let writes = t.writes.max(1) as f64;
        let nodes: usize = world.scenario.regions.iter().map(|r| r.nodes).sum();
        let node_s = (nodes as f64 * world.virtual_s()).max(1e-9);
        let names: Vec<String> = world.scenario.regions.iter().map(|r| r.name.clone()).collect();
        let lag = world
            .lag_histograms()
            .into_iter()
            .map(|((a, b), h)| {
                let one_way_ms = world.one_way_ms(a, b);
                let p50_ms = h.value_at_quantile(0.5) as f64 / 1_000.0;
                LagRow {
                    from: names[a].clone(),
                    to: names[b].clone(),
                    one_way_ms: round3(one_way_ms),
                    p50_ms: round3(p50_ms),
                    p99_ms: round3(h.value_at_quantile(0.99) as f64 / 1_000.0),
                    max_ms: round3(h.max() as f64 / 1_000.0),
                    p50_over_delay: round3(if one_way_ms > 0.0 { p50_ms / one_way_ms } else { 0.0 }),
                    samples: h.len(),
                }
            })
            .collect();
        Report {
            scenario: world.scenario.name.clone(),
            seed: world.seed,
            virtual_s: world.virtual_s(),
            formation_s: round3(world.formation_s()),
            reads: t.reads,
            writes: t.writes,
            cas_refused: t.cas_refused,
            unavailable: t.unavailable,
            stale_read_rate: round3(t.stale_reads as f64 / t.reads.max(1) as f64),
            hit_ratio: round3(c.hits as f64 / (c.hits + c.misses).max(1) as f64),
            conflicts: c.conflicts,
            evictions: c.evictions,
            tombstones_evicted_early: c.tombstones_evicted_early,
            strong: [
                world.strong.acked.values().sum(),
                world.strong.unknown.values().sum(),
                world.strong.unavailable,
                world.strong.given_up,
            ],
            wan_bytes_per_write: round3(sent.wan_bytes as f64 / writes),
            lan_bytes_per_write: round3(sent.lan_bytes as f64 / writes),
            messages_per_write: round3((sent.wan_messages + sent.lan_messages) as f64 / writes),
            membership_wan_bytes_per_node_s: round3(t.membership_wan_bytes as f64 / node_s),
            membership_lan_bytes_per_node_s: round3(t.membership_lan_bytes as f64 / node_s),
            member_ups: t.member_ups,
            member_downs: t.member_downs,
            transfers_applied: t.transfers_applied,
            refused_frames: t.refused_frames,
            messages_by_kind: t.kinds.per_write(writes),
            sidecars: SidecarRow::new(world),
            crashes: world.crashes.iter().map(|w| w.row()).collect(),
            lag,
            checks,
        }
    }

    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The text table.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "scenario {} seed {}: {:.0} virtual s (after {:.3} s of cluster formation), {} reads, {} writes ({} CAS refused, {} unavailable)\n",
            self.scenario,
            self.seed,
            self.virtual_s,
            self.formation_s,
            self.reads,
            self.writes,
            self.cas_refused,
            self.unavailable
        );
        out.push_str(&format!(
            "hit ratio {:.3}  stale reads {:.3}  conflicts {}  evictions {} (tombstones early {})\nper write: WAN {:.0} B, LAN {:.0} B, {:.2} messages\n\
membership per node: WAN {:.0} B/s, LAN {:.0} B/s; {} members up, {} down (summed over nodes); {} full transfers applied, {} frames refused\n\n",
            self.hit_ratio,
            self.stale_read_rate,
            self.conflicts,
            self.evictions,
            self.tombstones_evicted_early,
            self.wan_bytes_per_write,
            self.lan_bytes_per_write,
            self.messages_per_write,
            self.membership_wan_bytes_per_node_s,
            self.membership_lan_bytes_per_node_s,
            self.member_ups,
            self.member_downs,
            self.transfers_applied,
            self.refused_frames
        ));
        if self.strong.iter().any(|&n| n > 0) {
            let [acked, unknown, unavailable, given_up] = self.strong;
            out.push_str(&format!(
                "strong increments: {acked} acked, {unknown} unknown, {unavailable} unavailable, {given_up} given up\n\n"
            ));
        }
        out.push_str(&format!(
            "{:<14} {:>12} {:>12} {:>12} {:>12}   (per write)\n",
            "kind", "WAN msgs", "WAN B", "LAN msgs", "LAN B"
        ));
        for k in &self.messages_by_kind {
            out.push_str(&format!(
                "{:<14} {:>12.3} {:>12.1} {:>12.3} {:>12.1}\n",
                k.kind, k.wan_messages, k.wan_bytes, k.lan_messages, k.lan_bytes
            ));
        }
        out.push('\n');
        for c in &self.crashes {
            out.push_str(&format!(
                "crash of node {}: seen down by {} nodes, the last after {:.3} s; restarted, seen up by {}, the last after {:.3} s\n",
                c.node, c.seen_down_by, c.down_after_s, c.seen_up_by, c.up_after_s
            ));
        }
        if !self.crashes.is_empty() {
            out.push('\n');
        }
        if let Some(s) = &self.sidecars {
            out.push_str(&format!(
                "full nodes: hit ratio {:.3}, {:.0} keys held; sidecars: hit ratio {:.3}, {:.0} keys held ({:.3} of a full node's), {:.0} remote writes not stored each\n\
fills: {} asked, {} found, {} absent, {} behind, {} timed out, {} with no full node up\n\n",
                s.full_hit_ratio,
                s.full_keys_held,
                s.sidecar_hit_ratio,
                s.sidecar_keys_held,
                s.key_share,
                s.not_stored_per_sidecar,
                s.fills_asked,
                s.fills_found,
                s.fills_absent,
                s.fills_behind,
                s.fills_timed_out,
                s.fills_no_full_node
            ));
        }
        out.push_str(&format!(
            "{:<14} {:<14} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
            "from", "to", "delay ms", "p50 ms", "p99 ms", "max ms", "p50/d"
        ));
        for r in &self.lag {
            out.push_str(&format!(
                "{:<14} {:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7.2}\n",
                r.from, r.to, r.one_way_ms, r.p50_ms, r.p99_ms, r.max_ms, r.p50_over_delay
            ));
        }
        out.push('\n');
        for c in &self.checks {
            out.push_str(&format!(
                "{:<24} {}{}\n",
                c.name,
                if c.passed { "ok" } else { "FAILED " },
                c.detail
            ));
        }
        out
    }
}
