//! The key as the store's map holds it: namespace and name in one small
//! allocation.
//!
//! A [`Key`] is an `Arc<str>` namespace and a `Bytes` name: 48 bytes, and
//! its name's buffer (plus a shared header once the `Bytes` is cloned) in
//! allocations of their own. The store keys its map by one boxed byte
//! string instead — the namespace's length, the namespace, the name —
//! which is all a lookup compares and hashes. Reads build the same bytes
//! on the stack, so a lookup allocates nothing.

use bytes::Bytes;
use geocache_crdt::Key;
use smallvec::SmallVec;
use std::sync::Arc;

use crate::varint;

/// Keys up to this long are looked up without a heap allocation.
const INLINE_KEY_BYTES: usize = 128;

/// The packed form of a key, as looked up.
pub type KeyBytes = SmallVec<[u8; INLINE_KEY_BYTES]>;

/// The length of `key` packed, without packing it.
pub fn packed_len(key: &Key) -> usize {
    namespace_prefix(&key.namespace).len() + key.name.len()
}

/// What every packed key of `namespace` starts with: its varint length and
/// the namespace. Length-prefixed, so no other namespace's keys start so.
pub fn namespace_prefix(namespace: &str) -> KeyBytes {
    let ns = namespace.as_bytes();
    let mut out = KeyBytes::new();
    varint::put(&mut out, ns.len() as u64);
    out.extend_from_slice(ns);
    out
}

/// `key` packed: a varint namespace length, the namespace, the name.
pub fn pack(key: &Key) -> KeyBytes {
    pack_parts(&key.namespace, &key.name)
}

/// The key `name` of `namespace` packed, as [`pack`], for a lookup that
/// has no [`Key`] to build (a `Key` shares its namespace's `Arc`, whose
/// count every connection's reads would then contend on).
pub fn pack_parts(namespace: &str, name: &[u8]) -> KeyBytes {
    let mut out = namespace_prefix(namespace);
    out.extend_from_slice(name);
    out
}

/// The key packed in `bytes`; `namespace` is reused when it is the one
/// named, so a walk of the store shares one namespace `Arc`.
pub fn unpack(bytes: &[u8], namespace: &mut Option<Arc<str>>) -> Key {
    // Packed by `pack`, so the prefix is whole.
    let (len, at) = varint::take(bytes).unwrap_or((0, 0));
    let len = usize::try_from(len).unwrap_or(usize::MAX).min(bytes.len() - at);
    let (ns, name) = bytes[at..].split_at(len);
    let ns = match namespace {
        Some(held) if held.as_bytes() == ns => held.clone(),
        _ => {
            // Packed from a `str`, so it is UTF-8.
            let fresh: Arc<str> = Arc::from(String::from_utf8_lossy(ns).as_ref());
            *namespace = Some(fresh.clone());
            fresh
        }
    };
    Key { namespace: ns, name: Bytes::copy_from_slice(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_namespaces_do_not_run_into_names() {
        let mut ns = None;
        for (n, k) in [("a", "bc"), ("ab", "c"), ("", ""), ("default", "key:1")] {
            let key = Key::new(n, Bytes::copy_from_slice(k.as_bytes()));
            assert_eq!(unpack(&pack(&key), &mut ns), key);
        }
        let long = "n".repeat(300);
        let key = Key::new(long.as_str(), Bytes::from_static(b"x"));
        assert_eq!(unpack(&pack(&key), &mut ns), key);
        assert_ne!(
            pack(&Key::new("a", Bytes::from_static(b"bc"))),
            pack(&Key::new("ab", Bytes::from_static(b"c")))
        );
    }
}
