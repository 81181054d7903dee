//! Fuzzes the decoding of what a peer sends: one gossip [`Message`] in the
//! codec's envelope. A peer is authenticated but not trusted to be bug
//! free, so any bytes must decode or be refused without a panic, and what
//! decodes must survive a re-encode unchanged (replicas re-send what they
//! received).
#![no_main]

use geocache_crdt::codec;
use geocache_gossip::wire::Message;
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
    let Ok(message) = codec::decode::<Message>(data) else { return };
    let encoded = codec::encode(&message).expect("a decoded message encodes");
    assert_eq!(
        codec::encoded_len(&message).expect("a decoded message has a size"),
        encoded.len(),
        "encoded_len disagrees with encode"
    );
    let again = codec::decode::<Message>(&encoded).expect("a re-encoded message decodes");
    assert_eq!(again, message, "the message changed in a round trip");
    }
);
