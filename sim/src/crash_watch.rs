//! How long the cluster takes to notice a crash and a restart: per crash
//! fault, when every other live node's membership reported the node down,
//! and after its restart, up again. What a real deployment's failure
//! detection is checked against (`node/tests/scale.rs`).

use serde::Serialize;
use std::collections::BTreeSet;

/// One crash as the other nodes saw it.
#[derive(Clone, Debug, Default)]
pub struct CrashWatch {
    /// The node, by index.
    pub node: usize,
    /// When it crashed, µs.
    pub crashed_us: u64,
    /// When it restarted, µs.
    pub restarted_us: Option<u64>,
    /// Nodes that reported it down, and when the last one did.
    pub downs: BTreeSet<usize>,
    /// When the last of them did, µs.
    pub last_down_us: u64,
    /// Nodes that reported its new life up after the restart.
    pub ups: BTreeSet<usize>,
    /// When the last of them did, µs.
    pub last_up_us: u64,
}

/// A crash's figures in the report.
#[derive(Clone, Debug, Serialize)]
pub struct CrashRow {
    /// The node.
    pub node: usize,
    /// Live nodes that reported it down while it was.
    pub seen_down_by: usize,
    /// Seconds from the crash to the last of those reports.
    pub down_after_s: f64,
    /// Live nodes that reported its next life up.
    pub seen_up_by: usize,
    /// Seconds from the restart to the last of those reports.
    pub up_after_s: f64,
}

impl CrashWatch {
    /// Its row.
    pub fn row(&self) -> CrashRow {
        let s = |from: u64, to: u64| (to.saturating_sub(from) as f64 / 1e3).round() / 1e3;
        CrashRow {
            node: self.node,
            seen_down_by: self.downs.len(),
            down_after_s: s(self.crashed_us, self.last_down_us),
            seen_up_by: self.ups.len(),
            up_after_s: self.restarted_us.map_or(0.0, |r| s(r, self.last_up_us)),
        }
    }
}
