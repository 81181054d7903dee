//! Namespace names: the first part of every key.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use thiserror::Error;

/// The longest namespace name.
pub const NAMESPACE_BYTES_MAX: usize = 64;

/// A namespace name: `[a-z0-9_-]{1,64}`. Namespaces partition applications
/// sharing a cluster (the earlier API's `/api/<name>/<key>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(Arc<str>);

/// A namespace name was not valid.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid namespace {0:?}: expected 1 to 64 characters of a-z, 0-9, '_' or '-'")]
pub struct NamespaceError(pub String);

impl Namespace {
    /// Checks and wraps a name.
    ///
    /// # Errors
    ///
    /// [`NamespaceError`] unless the name matches `[a-z0-9_-]{1,64}`.
    pub fn new(name: &str) -> Result<Namespace, NamespaceError> {
        let valid = !name.is_empty()
            && name.len() <= NAMESPACE_BYTES_MAX
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Namespace(Arc::from(name)))
        } else {
            Err(NamespaceError(name.chars().take(80).collect()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, shared.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// The same name in an allocation of its own. A RESP connection keeps
    /// one, so the clone each of its commands makes counts on it rather
    /// than on a count every connection's thread writes to.
    pub fn own_copy(&self) -> Namespace {
        Namespace(Arc::from(&*self.0))
    }
}

impl TryFrom<String> for Namespace {
    type Error = NamespaceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Namespace::new(&s)
    }
}

impl From<Namespace> for String {
    fn from(ns: Namespace) -> Self {
        ns.0.to_string()
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Settings keyed by namespace are looked up by a key's namespace name,
/// without building a `Namespace` on every write (the order is `str`'s).
impl std::borrow::Borrow<str> for Namespace {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_only() {
        for ok in ["a", "default", "app_1-x", &"z".repeat(64)] {
            assert!(Namespace::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a b", "a/b", "é", &"z".repeat(65)] {
            assert!(Namespace::new(bad).is_err(), "{bad}");
        }
    }
}
