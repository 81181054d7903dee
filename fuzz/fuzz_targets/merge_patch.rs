//! Fuzzes JSON merge patches (RFC 7396) on documents. A patch that
//! [`Doc::check_patch`] accepts must apply to a fresh document, and the
//! document must then read back as the patch without its nulls: that is
//! what RFC 7396 gives on an empty object.
#![no_main]

use geocache_crdt::{Doc, Hlc, NodeId, Stamp};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

fuzz_target!(
    init: {
        // Peer documents are loaded under catch_unwind (crdt/src/doc.rs):
        // a panic inside automerge is a refused document there, as in a
        // node. libFuzzer's hook would abort on it first; the default hook
        // lets it unwind, and a panic that escapes still aborts
        // (libfuzzer-sys catches it around this target).
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(patch) = serde_json::from_str::<Json>(text) else { return };
    if Doc::check_patch(&patch).is_err() {
        return;
    }
    let mut doc = Doc::new();
    let stamp = Stamp::new(Hlc::new(1_000, 0), NodeId(1));
    doc.apply_merge_patch(&patch, stamp).expect("a patch that check_patch accepts applies");
    let json = doc.to_json();
    assert_eq!(json, without_nulls(&patch), "the patched document is not the patch");
    let reloaded = Doc::load(&doc.save()).expect("a saved document loads");
    assert_eq!(reloaded.to_json(), json, "the document changed in a save and load");
    }
);

/// The patch as RFC 7396 applies it to `{}`: object members that are null
/// are dropped at every depth, also in objects inside arrays (a fresh
/// object there is patched onto nothing), while nulls that are array
/// elements stay (arrays are values, not patches).
fn without_nulls(value: &Json) -> Json {
    match value {
        Json::Object(fields) => Json::Object(
            fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(without_nulls).collect()),
        scalar => scalar.clone(),
    }
}
