//! Replication messages counted by kind (`Message::kind`): where the bytes
//! of a write go, so that acks, anti-entropy, transfers and repairs can be
//! told apart from the deltas themselves.

use serde::Serialize;
use std::collections::BTreeMap;

/// Messages and bytes of one kind, inside and between regions.
#[derive(Clone, Copy, Debug, Default)]
pub struct KindTally {
    /// Messages between regions.
    pub wan_messages: u64,
    /// Their bytes.
    pub wan_bytes: u64,
    /// Messages inside regions.
    pub lan_messages: u64,
    /// Their bytes.
    pub lan_bytes: u64,
}

/// Every kind sent so far.
#[derive(Debug, Default)]
pub struct MessageKinds {
    by_kind: BTreeMap<&'static str, KindTally>,
}

impl MessageKinds {
    /// Counts one message of `kind`, of `bytes`, between regions or not.
    pub fn count(&mut self, kind: &'static str, wan: bool, bytes: u64) {
        let tally = self.by_kind.entry(kind).or_default();
        if wan {
            tally.wan_messages += 1;
            tally.wan_bytes += bytes;
        } else {
            tally.lan_messages += 1;
            tally.lan_bytes += bytes;
        }
    }

    /// Every kind together.
    pub fn total(&self) -> KindTally {
        self.by_kind.values().fold(KindTally::default(), |sum, t| KindTally {
            wan_messages: sum.wan_messages + t.wan_messages,
            wan_bytes: sum.wan_bytes + t.wan_bytes,
            lan_messages: sum.lan_messages + t.lan_messages,
            lan_bytes: sum.lan_bytes + t.lan_bytes,
        })
    }

    /// The figures per client write, one row per kind.
    pub fn per_write(&self, writes: f64) -> Vec<KindRow> {
        let per = |n: u64| (n as f64 / writes * 1000.0).round() / 1000.0;
        self.by_kind
            .iter()
            .map(|(kind, t)| KindRow {
                kind: (*kind).to_string(),
                wan_messages: per(t.wan_messages),
                wan_bytes: per(t.wan_bytes),
                lan_messages: per(t.lan_messages),
                lan_bytes: per(t.lan_bytes),
            })
            .collect()
    }
}

/// One kind's messages and bytes per client write.
#[derive(Clone, Debug, Serialize)]
pub struct KindRow {
    /// `Message::kind`.
    pub kind: String,
    /// Messages between regions per write.
    pub wan_messages: f64,
    /// Bytes between regions per write.
    pub wan_bytes: f64,
    /// Messages inside regions per write.
    pub lan_messages: f64,
    /// Bytes inside regions per write.
    pub lan_bytes: f64,
}
