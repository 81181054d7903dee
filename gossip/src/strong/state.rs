//! What a strong key holds, and the changes a client may ask of it.

use bytes::Bytes;
use geocache_crdt::{Hlc, NodeId};
use serde::{Deserialize, Serialize};

/// The register of a strong key, as the acceptors hold it.
///
/// `version` counts the changes chosen for the key (a compare-and-set names
/// the version it read); `value` is `None` when the key is absent (never
/// written, deleted, or expired). `recent` names the last proposals that
/// changed it, so a proposer that retries after losing sight of its accept
/// learns that its change is already in, rather than apply it twice or
/// report a refusal for a change that was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrongState {
    /// Changes chosen so far; 0 for a key never written.
    pub version: u64,
    /// The value, if the key holds one.
    pub value: Option<Bytes>,
    /// When the value expires, in unix milliseconds.
    pub expires_at_ms: Option<u64>,
    /// The clock reading the change that made this version was stamped
    /// at: above the previous version's, so the replicas that keep the
    /// versions as registers order them as the acceptors chose them,
    /// whatever the proposers' clocks said.
    pub hlc: Hlc,
    /// The last change of each of the last proposers to change it
    /// (proposer, proposal id), newest last, at most
    /// [`RECENT_CHANGES_COUNT_MAX`].
    pub recent: Vec<(NodeId, u64)>,
}

/// How many of a key's last proposers its state names, with their last
/// change. A proposal whose attempt was cut off after its accept, and
/// which changes by this many other proposers then overtook, cannot tell
/// whether it was made: it reports so (`Outcome::Unknown`).
pub const RECENT_CHANGES_COUNT_MAX: usize = 16;

impl StrongState {
    /// The value visible at `now_ms`: none once it expired.
    pub fn visible_at(&self, now_ms: u64) -> Option<&Bytes> {
        match self.expires_at_ms {
            Some(at) if at <= now_ms => None,
            _ => self.value.as_ref(),
        }
    }
}

/// A change a client asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Read the current value (written back unchanged, so the read is
    /// linearizable).
    Read,
    /// Set the value whatever it is.
    Put {
        /// The new value.
        value: Bytes,
        /// Its expiry, in unix milliseconds.
        expires_at_ms: Option<u64>,
    },
    /// Set the value if the key's version is still `expected`.
    CompareAndSet {
        /// The version the client read.
        expected: u64,
        /// The new value.
        value: Bytes,
        /// Its expiry, in unix milliseconds.
        expires_at_ms: Option<u64>,
    },
    /// Set the value if the key holds none.
    IfAbsent {
        /// The new value.
        value: Bytes,
        /// Its expiry, in unix milliseconds.
        expires_at_ms: Option<u64>,
    },
    /// Set the value if the key holds one (Redis `XX`).
    IfPresent {
        /// The new value.
        value: Bytes,
        /// Its expiry, in unix milliseconds.
        expires_at_ms: Option<u64>,
    },
    /// Remove the value.
    Delete,
    /// Remove the value if the key's version is still `expected`.
    DeleteIf {
        /// The version the client read.
        expected: u64,
    },
    /// Add `by` to the signed 64-bit integer the value holds in decimal (an
    /// absent value counts as 0 and gets `expires_at_ms`; a present one
    /// keeps its expiry). Refused when the value is not such an integer or
    /// the sum leaves the range.
    Add {
        /// The increment; negative to subtract.
        by: i64,
        /// The expiry of a value the increment creates, unix ms.
        expires_at_ms: Option<u64>,
    },
}

impl Change {
    /// The state after this change, made by proposal `by`, asked for at
    /// `at` (the proposer's clock: expiries are judged at its wall time,
    /// and the new version is stamped no earlier), or `Err` with the
    /// current state when its condition does not hold.
    ///
    /// # Errors
    ///
    /// The current state, for a condition that does not hold.
    pub fn apply(
        &self,
        current: &StrongState,
        by: (NodeId, u64),
        at: Hlc,
    ) -> Result<StrongState, StrongState> {
        let now_ms = at.ms();
        let hlc = at.max(current.hlc.successor());
        let next = |value: Option<Bytes>, expires_at_ms: Option<u64>| {
            // The last change of each proposer: one runs a single change
            // of a key at a time, so its entry is pushed out only once as
            // many other proposers changed the key after it.
            let mut recent = current.recent.clone();
            recent.retain(|(proposer, _)| *proposer != by.0);
            if recent.len() >= RECENT_CHANGES_COUNT_MAX {
                recent.remove(0);
            }
            recent.push(by);
            StrongState { version: current.version.saturating_add(1), value, expires_at_ms, hlc, recent }
        };
        match self {
            Change::Read => Ok(current.clone()),
            Change::Put { value, expires_at_ms } => Ok(next(Some(value.clone()), *expires_at_ms)),
            Change::CompareAndSet { expected, value, expires_at_ms } => {
                if *expected == current.version {
                    Ok(next(Some(value.clone()), *expires_at_ms))
                } else {
                    Err(current.clone())
                }
            }
            Change::IfAbsent { value, expires_at_ms } => {
                if current.visible_at(now_ms).is_none() {
                    Ok(next(Some(value.clone()), *expires_at_ms))
                } else {
                    Err(current.clone())
                }
            }
            Change::IfPresent { value, expires_at_ms } => {
                if current.visible_at(now_ms).is_some() {
                    Ok(next(Some(value.clone()), *expires_at_ms))
                } else {
                    Err(current.clone())
                }
            }
            Change::Delete => Ok(next(None, None)),
            Change::DeleteIf { expected } => {
                if *expected == current.version {
                    Ok(next(None, None))
                } else {
                    Err(current.clone())
                }
            }
            Change::Add { by, expires_at_ms } => {
                let (base, expiry) = match current.visible_at(now_ms) {
                    None => (Some(0), *expires_at_ms),
                    Some(v) => (
                        std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()),
                        current.expires_at_ms,
                    ),
                };
                match base.and_then(|b| b.checked_add(*by)) {
                    Some(sum) => Ok(next(Some(Bytes::from(sum.to_string())), expiry)),
                    None => Err(current.clone()),
                }
            }
        }
    }

    /// Whether the change only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, Change::Read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_hold_or_return_the_current_state() {
        let empty = StrongState::default();
        let by = (NodeId(1), 7);
        let v = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let at = |ms| Hlc::new(ms, 0);
        let one = Change::IfAbsent { value: v("a"), expires_at_ms: None }.apply(&empty, by, at(0)).unwrap();
        assert_eq!((one.version, one.value.clone(), one.recent.clone()), (1, Some(v("a")), vec![by]));
        let again = Change::IfAbsent { value: v("b"), expires_at_ms: None };
        assert_eq!(again.apply(&one, by, at(0)), Err(one.clone()));
        let cas = |expected| Change::CompareAndSet { expected, value: v("c"), expires_at_ms: None };
        assert_eq!(cas(0).apply(&one, by, at(0)), Err(one.clone()));
        assert_eq!(cas(1).apply(&one, by, at(0)).unwrap().version, 2);
        assert_eq!(Change::Read.apply(&one, by, at(0)), Ok(one.clone()));
        let gone = Change::Delete.apply(&one, by, at(0)).unwrap();
        assert_eq!((gone.version, gone.value), (2, None));
        let expiring = StrongState {
            version: 3,
            value: Some(v("x")),
            expires_at_ms: Some(10),
            hlc: at(1),
            recent: vec![],
        };
        let fill = Change::IfAbsent { value: v("y"), expires_at_ms: None };
        assert!(fill.apply(&expiring, by, at(10)).is_ok());
        assert!(fill.apply(&expiring, by, at(9)).is_err());
        let add = |by| Change::Add { by, expires_at_ms: Some(99) };
        let counted = add(5).apply(&StrongState::default(), by, at(0)).unwrap();
        assert_eq!((counted.value.clone(), counted.expires_at_ms), (Some(v("5")), Some(99)));
        assert_eq!(add(-7).apply(&counted, by, at(1)).unwrap().value, Some(v("-2")));
        assert!(add(i64::MAX).apply(&counted, by, at(1)).is_err(), "overflow refused");
        assert!(add(1).apply(&one, by, at(1)).is_err(), "not an integer");
        assert!(Change::DeleteIf { expected: 0 }.apply(&one, by, at(1)).is_err());
        assert_eq!(Change::DeleteIf { expected: 1 }.apply(&one, by, at(1)).unwrap().value, None);
        let xx = Change::IfPresent { value: v("q"), expires_at_ms: None };
        assert!(xx.apply(&StrongState::default(), by, at(1)).is_err());
        assert_eq!(xx.apply(&one, by, at(1)).unwrap().value, Some(v("q")));
        // Each version is stamped after the one before, whatever the clock.
        let late = Change::Delete.apply(&counted, by, Hlc::ZERO).unwrap();
        assert!(late.hlc > counted.hlc);
        // The names of the last changes are bounded.
        let mut s = empty;
        for i in 0..20 {
            s = Change::Put { value: v("z"), expires_at_ms: None }.apply(&s, (NodeId(2), i), at(0)).unwrap();
        }
        assert_eq!(s.recent, vec![(NodeId(2), 19)], "one entry per proposer");
        for i in 0..20 {
            s = Change::Put { value: v("z"), expires_at_ms: None }
                .apply(&s, (NodeId(10 + i), 1), at(0))
                .unwrap();
        }
        assert_eq!(s.recent.len(), RECENT_CHANGES_COUNT_MAX);
        assert_eq!(s.recent.last(), Some(&(NodeId(29), 1)));
    }
}
