use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A cache key: the namespace (one per application) and the key's name.
///
/// The namespace's syntax is checked where input enters a node; here it is
/// just a name.
#[derive(Clone, Debug, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The key's name within the namespace: any bytes.
    pub name: Bytes,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        // Keys of one namespace usually share its `Arc`: skip comparing the
        // text then. Same result as comparing the fields.
        (Arc::ptr_eq(&self.namespace, &other.namespace) || self.namespace == other.namespace)
            && self.name == other.name
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As derived: equal keys (by the `PartialEq` above) hash equally.
        self.namespace.hash(state);
        self.name.hash(state);
    }
}

impl Key {
    /// A key from its parts.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Bytes>) -> Key {
        Key { namespace: namespace.into(), name: name.into() }
    }

    /// Bytes the key costs in memory, for the store's byte budget.
    pub fn size_bytes(&self) -> usize {
        self.namespace.len() + self.name.len()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, String::from_utf8_lossy(&self.name))
    }
}
