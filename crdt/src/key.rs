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
    #[serde(deserialize_with = "namespace_shared")]
    pub namespace: Arc<str>,
    /// The key's name within the namespace: any bytes.
    pub name: Bytes,
}

thread_local! {
    /// The namespace last decoded on this thread.
    static LAST_NAMESPACE: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
}

/// Decodes a namespace, sharing the `Arc` of the one last decoded on this
/// thread when it is the same: a frame of deltas names a few namespaces
/// many times, and each of its keys cost an allocation for the text.
fn namespace_shared<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    struct Shared;
    impl serde::de::Visitor<'_> for Shared {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a namespace")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Arc<str>, E> {
            Ok(LAST_NAMESPACE.with(|last| {
                let mut last = last.borrow_mut();
                match &*last {
                    Some(ns) if **ns == *text => ns.clone(),
                    _ => {
                        let ns: Arc<str> = Arc::from(text);
                        *last = Some(ns.clone());
                        ns
                    }
                }
            }))
        }
    }
    deserializer.deserialize_str(Shared)
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
