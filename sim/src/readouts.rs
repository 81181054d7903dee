//! What a finished (or running) simulation reports: lag histograms, the
//! final state the checkers judge, its times and the stores' counters.

use hdrhistogram::Histogram;

use crate::oracle::FinalState;
use crate::world::World;

impl World {
    /// Visibility lag (µs) per (from region, to region) with samples, in
    /// pair order.
    pub fn lag_histograms(&self) -> Vec<((usize, usize), &Histogram<u64>)> {
        let regions = self.scenario.regions.len();
        self.oracle
            .lag_us
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|h| ((i / regions, i % regions), h)))
            .collect()
    }

    /// The checkers, run at the end: see `checks.rs`.
    pub fn final_state(&self) -> FinalState<'_> {
        FinalState { world: self }
    }

    /// Virtual seconds simulated.
    pub fn virtual_s(&self) -> f64 {
        (self.end_us - self.start_us) as f64 / 1e6
    }

    /// How long the cluster took to form before the workload started,
    /// virtual s.
    pub fn formation_s(&self) -> f64 {
        self.start_us as f64 / 1e6
    }

    /// The one-way delay between two regions, ms.
    pub fn one_way_ms(&self, a: usize, b: usize) -> f64 {
        self.links.delays_us[a][b] as f64 / 1_000.0
    }

    /// Store counters summed over nodes.
    pub fn store_counts(&self) -> crate::sim_store::StoreCounts {
        let mut c = crate::sim_store::StoreCounts::default();
        for n in &self.nodes {
            c.hits += n.store.counts.hits;
            c.misses += n.store.counts.misses;
            c.evictions += n.store.counts.evictions;
            c.tombstones_evicted_early += n.store.counts.tombstones_evicted_early;
            c.expirations += n.store.counts.expirations;
            c.conflicts += n.store.counts.conflicts;
        }
        c
    }
}
