//! The totals a simulation run counts as it goes: what its report is made
//! from.

/// Totals a run produces; the report is made from them.
#[derive(Default)]
pub struct Tallies {
    /// Client reads.
    pub reads: u64,
    /// Client reads at full nodes, and those that found a value.
    pub full_reads: (u64, u64),
    /// Client reads at sidecars, and those that found a value (after a
    /// fill when the key was not held).
    pub sidecar_reads: (u64, u64),
    /// Client writes accepted.
    pub writes: u64,
    /// CAS writes refused (the value changed in between).
    pub cas_refused: u64,
    /// Client operations with no live node in their region.
    pub unavailable: u64,
    /// Reads older than the newest write acked anywhere at that instant.
    pub stale_reads: u64,
    /// Replication messages and their bytes, by kind, inside and between
    /// regions.
    pub kinds: crate::message_kinds::MessageKinds,
    /// Membership datagrams sent (not in the message counts above).
    pub membership_messages: u64,
    /// Membership bytes between regions.
    pub membership_wan_bytes: u64,
    /// Membership bytes inside regions.
    pub membership_lan_bytes: u64,
    /// Members reported up, summed over nodes.
    pub member_ups: u64,
    /// Members reported down (and forgotten), summed over nodes.
    pub member_downs: u64,
    /// Read-your-writes violations.
    pub ryw_violations: u64,
    /// Frames refused at a sender (a full queue toward a slow node).
    pub refused_frames: u64,
    /// Full transfers that arrived whole.
    pub transfers_applied: u64,
    /// Keys a transfer's drop rule removed while the sender still held
    /// the very write removed (see `FinalState::live_keys_dropped`).
    pub live_keys_dropped: Vec<String>,
}
