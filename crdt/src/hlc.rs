use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// How far ahead of the local clock a remote stamp may be before
/// [`HlcClock::observe`] reports it: 60 seconds, as in the design.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 60_000;

const LOGICAL_BITS: u32 = 16;
const MS_MAX: u64 = (1 << 48) - 1;

/// A hybrid logical clock reading: 48 bits of unix milliseconds and a 16-bit
/// logical counter, packed in one `u64` so that comparing two readings is
/// comparing two integers.
///
/// A reading from the wire past [`HLC_MS_CEILING`] does not decode: no
/// clock issues one before the year 6429, and a forged one near `u64::MAX`
/// would leave no room after it for the next write to its key. Every
/// replica refuses the same bytes, so they still agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Hlc(u64);

/// The largest milliseconds a reading from a peer may carry: 2^47 ms after
/// 1970, about the year 6429.
pub const HLC_MS_CEILING: u64 = (1 << 47) - 1;

impl From<Hlc> for u64 {
    fn from(h: Hlc) -> u64 {
        h.0
    }
}

impl TryFrom<u64> for Hlc {
    type Error = String;

    fn try_from(packed: u64) -> Result<Hlc, String> {
        let h = Hlc(packed);
        if h.ms() > HLC_MS_CEILING {
            return Err(format!("clock reading {h} is past the year 6429"));
        }
        Ok(h)
    }
}

impl Hlc {
    /// The smallest reading.
    pub const ZERO: Hlc = Hlc(0);

    /// A reading from its parts; milliseconds beyond 48 bits saturate.
    pub fn new(ms: u64, logical: u16) -> Hlc {
        Hlc((ms.min(MS_MAX) << LOGICAL_BITS) | u64::from(logical))
    }

    /// A reading from its packed form.
    pub fn from_u64(packed: u64) -> Hlc {
        Hlc(packed)
    }

    /// The packed form.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The physical part, unix milliseconds.
    pub fn ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The next reading after this one. A full logical counter carries into
    /// the milliseconds, which keeps readings unique at any write rate.
    pub fn successor(self) -> Hlc {
        Hlc(self.0.saturating_add(1))
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms(), self.logical())
    }
}

/// A remote stamp was further ahead of the local clock than allowed.
///
/// Doesn't affect the clock's state: the caller still merges the data that
/// carried the stamp (replicas must converge whatever arrives), counts and
/// logs the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("remote clock {remote} is {ahead_ms} ms ahead of the local clock (max skew {max_clock_skew_ms} ms)")]
pub struct ClockSkewError {
    /// The stamp that was seen.
    pub remote: Hlc,
    /// How far ahead of `now` it was.
    pub ahead_ms: u64,
    /// The configured limit.
    pub max_clock_skew_ms: u64,
}

/// The clock of one node: issues strictly increasing [`Hlc`] readings.
///
/// It never reads the wall clock; every call takes `now_ms`, so the
/// simulator can drive it with virtual time.
#[derive(Clone, Debug)]
pub struct HlcClock {
    last: Hlc,
    max_clock_skew_ms: u64,
}

impl HlcClock {
    /// A clock that has issued nothing yet.
    pub fn new(max_clock_skew_ms: u64) -> HlcClock {
        HlcClock { last: Hlc::ZERO, max_clock_skew_ms }
    }

    /// The last reading issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new reading, strictly greater than every reading issued or
    /// observed before, and at least `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let wall = Hlc::new(now_ms, 0);
        let next = if wall > self.last { wall } else { self.last.successor() };
        self.last = next;
        next
    }

    /// A new reading strictly greater than `floor` as well: a write that
    /// replaces a value it has seen must order after it, whatever clock
    /// wrote that value.
    ///
    /// A floor more than the maximum skew ahead of `now_ms` (a peer's clock
    /// far ahead, or a forged stamp) still orders this write after it, but
    /// does not move this clock: the jump stays with that key instead of
    /// spreading to every later write of this node, and from there to every
    /// node that overwrites them.
    pub fn tick_after(&mut self, floor: Hlc, now_ms: u64) -> Hlc {
        if floor.ms() > now_ms.saturating_add(self.max_clock_skew_ms) {
            let mine = self.tick(now_ms);
            return mine.max(floor.successor());
        }
        if floor > self.last {
            self.last = floor;
        }
        self.tick(now_ms)
    }

    /// Takes back the last reading this node issued in a previous run of
    /// the same life (from its data dir): later readings order after it
    /// even if the wall clock went back meanwhile. Its own readings are
    /// trusted, so no skew check.
    pub fn resume(&mut self, floor: Hlc) {
        self.last = self.last.max(floor);
    }

    /// Takes a remote reading into account so that later local readings
    /// order after it.
    ///
    /// # Errors
    ///
    /// [`ClockSkewError`] when `remote` is more than the maximum skew ahead
    /// of `now_ms`; the clock is then left unchanged.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), ClockSkewError> {
        let limit_ms = now_ms.saturating_add(self.max_clock_skew_ms);
        if remote.ms() > limit_ms {
            return Err(ClockSkewError {
                remote,
                ahead_ms: remote.ms() - now_ms,
                max_clock_skew_ms: self.max_clock_skew_ms,
            });
        }
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_increase_even_when_time_stands_still_or_goes_back() {
        let mut clock = HlcClock::new(DEFAULT_MAX_CLOCK_SKEW_MS);
        let a = clock.tick(1_000);
        let b = clock.tick(1_000);
        let c = clock.tick(900);
        assert!(a < b && b < c);
        assert_eq!(a, Hlc::new(1_000, 0));
        assert_eq!(c, Hlc::new(1_000, 2));
        assert_eq!(clock.tick(2_000), Hlc::new(2_000, 0));
    }

    #[test]
    fn logical_overflow_carries_into_milliseconds() {
        let mut clock = HlcClock::new(DEFAULT_MAX_CLOCK_SKEW_MS);
        clock.observe(Hlc::new(5, u16::MAX), 5).unwrap();
        assert_eq!(clock.tick(5), Hlc::new(6, 0));
    }

    #[test]
    fn observe_moves_the_clock_forward_within_the_skew() {
        let mut clock = HlcClock::new(1_000);
        clock.observe(Hlc::new(1_500, 7), 1_000).unwrap();
        assert_eq!(clock.tick(1_000), Hlc::new(1_500, 8));
    }

    #[test]
    fn observe_reports_a_stamp_too_far_ahead_and_keeps_the_clock() {
        let mut clock = HlcClock::new(1_000);
        let before = clock.tick(10_000);
        let err = clock.observe(Hlc::new(11_001, 0), 10_000).unwrap_err();
        assert_eq!(err.ahead_ms, 1_001);
        assert_eq!(clock.last(), before);
    }

    #[test]
    fn readings_past_the_ceiling_do_not_decode() {
        let ok = Hlc::new(HLC_MS_CEILING, 7);
        assert_eq!(crate::codec::decode::<Hlc>(&crate::codec::encode(&ok).unwrap()).unwrap(), ok);
        let forged = crate::codec::encode(&Hlc::from_u64(u64::MAX)).unwrap();
        assert!(crate::codec::decode::<Hlc>(&forged).is_err());
    }

    #[test]
    fn tick_after_orders_past_the_floor() {
        let mut clock = HlcClock::new(1_000);
        let floor = Hlc::new(900, 3);
        assert!(clock.tick_after(floor, 10) > floor);
        assert!(clock.tick(10) > floor, "a floor within the skew moves the clock");
    }

    #[test]
    fn a_floor_beyond_the_skew_orders_the_write_but_leaves_the_clock() {
        let mut clock = HlcClock::new(1_000);
        let floor = Hlc::new(99_999, 3);
        assert!(clock.tick_after(floor, 10) > floor);
        assert_eq!(clock.tick(10).ms(), 10, "the next write elsewhere is stamped at now");
        // A forged stamp at the end of the range: the write still gets a
        // stamp no smaller (merge breaks the tie deterministically).
        let end = Hlc::from_u64(u64::MAX);
        assert_eq!(clock.tick_after(end, 10), end);
        assert_eq!(clock.tick(10).ms(), 10);
    }
}
