//! What a strong key holds, and the changes a client may ask of it.

use bytes::Bytes;
use geocache_crdt::NodeId;
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
    /// The proposals (proposer, proposal id) of the last changes, newest
    /// last, at most [`RECENT_CHANGES_COUNT_MAX`].
    pub recent: Vec<(NodeId, u64)>,
}

/// How many of a key's last changes name their proposal. A proposal whose
/// attempt was cut off after its accept and that more changes than this
/// then overtook cannot tell whether it was made: it reports so
/// (`Outcome::Unknown`).
pub const RECENT_CHANGES_COUNT_MAX: usize = 8;

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
    /// Remove the value.
    Delete,
}

impl Change {
    /// The state after this change, made by proposal `by`, at `now_ms`,
    /// or `Err` with the current state when its condition does not hold.
    ///
    /// # Errors
    ///
    /// The current state, for a condition that does not hold.
    pub fn apply(
        &self,
        current: &StrongState,
        by: (NodeId, u64),
        now_ms: u64,
    ) -> Result<StrongState, StrongState> {
        let next = |value: Option<Bytes>, expires_at_ms: Option<u64>| {
            let mut recent = current.recent.clone();
            if recent.len() >= RECENT_CHANGES_COUNT_MAX {
                recent.remove(0);
            }
            recent.push(by);
            StrongState { version: current.version.saturating_add(1), value, expires_at_ms, recent }
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
            Change::Delete => Ok(next(None, None)),
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
        let one = Change::IfAbsent { value: v("a"), expires_at_ms: None }.apply(&empty, by, 0).unwrap();
        assert_eq!((one.version, one.value.clone(), one.recent.clone()), (1, Some(v("a")), vec![by]));
        let again = Change::IfAbsent { value: v("b"), expires_at_ms: None };
        assert_eq!(again.apply(&one, by, 0), Err(one.clone()));
        let cas = |expected| Change::CompareAndSet { expected, value: v("c"), expires_at_ms: None };
        assert_eq!(cas(0).apply(&one, by, 0), Err(one.clone()));
        assert_eq!(cas(1).apply(&one, by, 0).unwrap().version, 2);
        assert_eq!(Change::Read.apply(&one, by, 0), Ok(one.clone()));
        let gone = Change::Delete.apply(&one, by, 0).unwrap();
        assert_eq!((gone.version, gone.value), (2, None));
        let expiring =
            StrongState { version: 3, value: Some(v("x")), expires_at_ms: Some(10), recent: vec![] };
        let fill = Change::IfAbsent { value: v("y"), expires_at_ms: None };
        assert!(fill.apply(&expiring, by, 10).is_ok());
        assert!(fill.apply(&expiring, by, 9).is_err());
        // The names of the last changes are bounded.
        let mut s = empty;
        for i in 0..20 {
            s = Change::Put { value: v("z"), expires_at_ms: None }.apply(&s, (NodeId(2), i), 0).unwrap();
        }
        assert_eq!(s.recent.len(), RECENT_CHANGES_COUNT_MAX);
        assert_eq!(s.recent.last(), Some(&(NodeId(2), 19)));
    }
}
