//! Membership and failure detection: foca (SWIM with suspicion), driven
//! sans-IO.
//!
//! Contract, as quinn's `Connection`: feed it with [`Membership::join`],
//! [`Membership::handle_data`] and [`Membership::handle_timeout`]; then
//! drain [`Membership::poll_transmit`] (datagrams to send),
//! [`Membership::poll_event`] (members up and down) and
//! [`Membership::poll_timeout`] (when to call `handle_timeout` next). Time
//! is passed in as unix milliseconds and only moves forward; randomness
//! comes from the seed given to [`Membership::new`].

use bytes::{Buf, BufMut, Bytes};
use foca::{
    AccumulatingRuntime, Codec, Config, Foca, Header, Member, NoCustomBroadcast, OwnedNotification, Timer,
};
use geocache_crdt::codec::{self, CodecError};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;
use thiserror::Error;

use crate::peer::Peer;

/// The cluster size foca's settings start from, in every node and in the
/// simulator; they grow with the members seen (`Membership::fit_config`).
pub const INITIAL_CLUSTER_SIZE: u32 = 8;

/// Largest membership datagram: fits a QUIC datagram on any path.
pub const MEMBERSHIP_PACKET_BYTES_MAX: usize = 1_100;

/// Pending events kept for the driver; past this, the oldest are dropped
/// (the member list itself stays right: it is foca's).
const EVENT_COUNT_MAX: usize = 4_096;

/// Members (alive, suspect or down; this node aside) a node tracks at
/// most: a peer cannot make it track more by naming made-up members in its
/// gossip. Four times the 1,000 nodes the project plans for.
pub const MEMBER_COUNT_MAX: usize = 4_096;

/// The most members one datagram can name (an encoded member takes more
/// than 16 bytes): below the bound by more than this, no datagram can cross
/// it, and none is looked at twice.
const MEMBERS_PER_DATAGRAM_MAX: usize = MEMBERSHIP_PACKET_BYTES_MAX / 16;

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member is up (new, or back).
    Up(Peer),
    /// A member is down (failed, or left).
    Down(Peer),
}

/// Input membership could not use. Doesn't affect membership's state.
#[derive(Debug, Error)]
pub enum MembershipError {
    /// foca refused the datagram.
    #[error("membership: {0}")]
    Refused(String),
    /// The datagram names members that would take the list past its bound.
    #[error("membership: the member list is full ({tracked} of {bound}); a datagram naming {new} new members was refused")]
    Full {
        /// Members tracked.
        tracked: usize,
        /// The bound ([`MEMBER_COUNT_MAX`]).
        bound: usize,
        /// Members the datagram named that are not tracked.
        new: usize,
    },
}

/// Encodes foca's messages with the project codec.
struct WireCodec;

impl Codec<Peer> for WireCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<Peer>, mut buf: impl BufMut) -> Result<(), CodecError> {
        buf.put_slice(&codec::encode(header)?);
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<Peer>, CodecError> {
        let (header, rest) = codec::decode_prefix(buf.chunk())?;
        let used = buf.chunk().len() - rest.len();
        buf.advance(used);
        Ok(header)
    }

    fn encode_member(&mut self, member: &Member<Peer>, mut buf: impl BufMut) -> Result<(), CodecError> {
        let bytes = codec::encode(member)?;
        // foca asks for a clean buffer when the item does not fit.
        if buf.remaining_mut() < bytes.len() {
            return Err(CodecError::Malformed("no room for the member".into()));
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<Peer>, CodecError> {
        let (member, rest) = codec::decode_prefix(buf.chunk())?;
        let used = buf.chunk().len() - rest.len();
        buf.advance(used);
        Ok(member)
    }
}

/// This node's view of the cluster.
pub struct Membership {
    foca: Foca<Peer, WireCodec, SmallRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<Peer>,
    /// Foca's timers by due time; the sequence number keeps the order of
    /// timers due at the same millisecond deterministic.
    timers: BTreeMap<(u64, u64), Timer<Peer>>,
    timer_seq: u64,
    now_ms: u64,
    events: VecDeque<MembershipEvent>,
    /// The cluster size foca's config is sized for (transmissions per
    /// update, suspicion time); grows with the members seen.
    sized_for: u32,
    /// Members tracked at most ([`MEMBER_COUNT_MAX`]).
    member_count_max: usize,
}

/// How fast failures are detected: foca's LAN settings (probe every
/// second), sized for `cluster_size` members.
pub fn default_config(cluster_size: u32) -> Config {
    let mut config = Config::new_lan(NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN));
    config.max_packet_size = NonZeroUsize::new(MEMBERSHIP_PACKET_BYTES_MAX).unwrap_or(NonZeroUsize::MIN);
    // After a partition heals, members declared down find each other again
    // through these announces: every 5 s rather than foca's 30 s and 65 s,
    // so a healed region rejoins in seconds.
    config.periodic_announce =
        Some(foca::PeriodicParams { frequency: Duration::from_secs(5), num_members: NonZeroUsize::MIN });
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    config
}

impl Membership {
    /// Membership for `me`, alone until it joins, with foca's settings
    /// for a cluster of `initial_size` (see [`default_config`]); they are
    /// resized as more members are seen, so every node, real or simulated,
    /// sizes them the same way without being told the cluster's size.
    pub fn new(me: Peer, initial_size: u32, seed: u64, now_ms: u64) -> Membership {
        let sized_for = initial_size.max(1);
        let foca = Foca::new(me, default_config(sized_for), SmallRng::seed_from_u64(seed), WireCodec);
        Membership {
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            now_ms,
            events: VecDeque::new(),
            sized_for,
            member_count_max: MEMBER_COUNT_MAX,
        }
    }

    /// The same, tracking at most `bound` members rather than
    /// [`MEMBER_COUNT_MAX`] (tests reach the bound with a few nodes).
    pub fn with_member_bound(mut self, bound: usize) -> Membership {
        self.member_count_max = bound;
        self
    }

    /// This node's current identity.
    pub fn me(&self) -> &Peer {
        self.foca.identity()
    }

    /// Announces this node to the seeds.
    pub fn join(&mut self, seeds: &[SocketAddr], now_ms: u64) {
        self.advance(now_ms);
        for &seed in seeds {
            if seed != self.me().gossip {
                // Only fails on encoding errors of our own identity.
                let _ = self.foca.announce(Peer::seed(seed), &mut self.runtime);
            }
        }
        self.collect();
    }

    /// Feeds a datagram received from the network.
    ///
    /// # Errors
    ///
    /// [`MembershipError`] for data foca refuses; nothing changed.
    pub fn handle_data(&mut self, data: &[u8], now_ms: u64) -> Result<(), MembershipError> {
        self.advance(now_ms);
        let tracked = self.foca.iter_membership_state().count();
        if tracked + MEMBERS_PER_DATAGRAM_MAX >= self.member_count_max {
            let new = self.untracked_in(data)?;
            if tracked + new > self.member_count_max {
                return Err(MembershipError::Full { tracked, bound: self.member_count_max, new });
            }
        }
        let result = self
            .foca
            .handle_data(data, &mut self.runtime)
            .map_err(|e| MembershipError::Refused(e.to_string()));
        self.collect();
        result
    }

    /// How many members a datagram names (its sender and its updates)
    /// that are not tracked here, read as foca lays it out: the header,
    /// then a big-endian u16 count and the members.
    fn untracked_in(&self, data: &[u8]) -> Result<usize, MembershipError> {
        let refused = |e: CodecError| MembershipError::Refused(e.to_string());
        let (header, mut rest): (Header<Peer>, &[u8]) = codec::decode_prefix(data).map_err(refused)?;
        let mut named = vec![header.src.gossip];
        if rest.len() >= 2 && header.message != foca::Message::Broadcast {
            let count = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
            for _ in 0..count {
                let (member, after): (Member<Peer>, &[u8]) = codec::decode_prefix(rest).map_err(refused)?;
                named.push(member.id().gossip);
                rest = after;
            }
        }
        let tracked: std::collections::HashSet<SocketAddr> =
            self.foca.iter_membership_state().map(|m| m.id().gossip).collect();
        named.sort_unstable();
        named.dedup();
        Ok(named.iter().filter(|addr| !tracked.contains(addr)).count())
    }

    /// The sender a datagram names in its header, without feeding it to
    /// membership: the core checks it against the connection first.
    pub fn sender_of(data: &[u8]) -> Option<Peer> {
        let (header, _): (Header<Peer>, _) = codec::decode_prefix(data).ok()?;
        Some(header.src)
    }

    /// Fires every timer due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let timer = entry.remove();
            let _ = self.foca.handle_timer(timer, &mut self.runtime);
            self.collect();
        }
    }

    /// Leaves the cluster gracefully: the datagrams telling peers this
    /// node is going come out of [`poll_transmit`](Self::poll_transmit).
    /// Only fails on encoding errors of our own identity.
    pub fn leave(&mut self, now_ms: u64) {
        self.advance(now_ms);
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.collect();
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.runtime.to_send().map(|(to, data)| (to.gossip, data))
    }

    /// The next membership change.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, in unix ms.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// The cluster size foca's settings are sized for now.
    pub fn sized_for(&self) -> u32 {
        self.sized_for
    }

    /// The members this node believes are alive (itself excluded).
    pub fn members(&self) -> Vec<Peer> {
        let mut members: Vec<Peer> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        members.sort_by_key(|p| p.node);
        members
    }

    /// The members some node suspects of having failed (itself excluded):
    /// still members until the suspicion is refuted or they are declared
    /// down, but not where a client should be sent.
    pub fn suspects(&self) -> Vec<Peer> {
        let mut suspects: Vec<Peer> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| m.id().clone())
            .collect();
        suspects.sort_by_key(|p| p.node);
        suspects
    }

    fn advance(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Moves foca's timers into the queue and its notifications into events.
    fn collect(&mut self) {
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let at = self.now_ms.saturating_add(after.as_millis() as u64);
            self.timer_seq += 1;
            self.timers.insert((at, self.timer_seq), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            let event = match notification {
                OwnedNotification::MemberUp(p) => MembershipEvent::Up(p),
                OwnedNotification::MemberDown(p) => MembershipEvent::Down(p),
                OwnedNotification::Rename(old, new) => {
                    self.push_event(MembershipEvent::Down(old));
                    MembershipEvent::Up(new)
                }
                _ => continue,
            };
            self.push_event(event);
        }
        self.fit_config();
    }

    /// Resizes foca's settings to the next power of two once the cluster
    /// (members and this node) outgrows them: more transmissions per update
    /// and a longer suspicion, as foca's formulas ask for a larger cluster.
    fn fit_config(&mut self) {
        let size = u32::try_from(self.foca.num_members() + 1).unwrap_or(u32::MAX);
        if size > self.sized_for {
            let target = size.checked_next_power_of_two().unwrap_or(u32::MAX);
            // Only the sizes change, which foca always accepts.
            if self.foca.set_config(default_config(target)).is_ok() {
                self.sized_for = target;
            }
        }
    }

    fn push_event(&mut self, event: MembershipEvent) {
        if self.events.len() == EVENT_COUNT_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
