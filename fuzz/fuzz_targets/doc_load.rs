//! Fuzzes loading a document from untrusted bytes (a register from a peer
//! carries one). A document that loads must materialize as JSON and save
//! to bytes that load back to the same document.
#![no_main]

use geocache_crdt::Doc;
use libfuzzer_sys::fuzz_target;

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
    let Ok(doc) = Doc::load(data) else { return };
    let json = doc.to_json();
    assert!(json.is_object(), "a document is not a JSON object: {json}");
    let saved = doc.save();
    let reloaded = Doc::load(&saved).expect("a saved document loads");
    assert_eq!(reloaded, doc, "the document changed in a save and load");
    assert_eq!(reloaded.to_json(), json, "the document's JSON changed in a save and load");
    }
);
