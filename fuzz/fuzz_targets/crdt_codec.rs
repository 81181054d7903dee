//! Fuzzes the CRDT codec: [`Register`]s and [`Delta`]s from untrusted
//! bytes, and applying a hostile delta to nothing and to a hostile
//! register. The input is tried whole as each type, and also as a register
//! followed by a delta, so that the fuzzer can pair the two.
#![no_main]

use geocache_crdt::{codec, Delta, Register};
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
    if let Ok(register) = codec::decode::<Register>(data) {
        check_register(&register);
    }
    if let Ok(delta) = codec::decode::<Delta>(data) {
        check_delta_round_trip(&delta);
        if let Ok(applied) = delta.apply_to(None) {
            check_register(&applied);
        }
    }
    if let Ok((current, rest)) = codec::decode_prefix::<Register>(data) {
        if let Ok(delta) = codec::decode::<Delta>(rest) {
            if let Ok(applied) = delta.apply_to(Some(&current)) {
                check_register(&applied);
            }
        }
    }
    }
);

/// What every register, however it was made, must satisfy: it round-trips
/// through the codec, and merging it with itself changes nothing (the join
/// is idempotent, or replicas that exchange state would drift).
fn check_register(register: &Register) {
    let encoded = codec::encode(register).expect("a register encodes");
    let again = codec::decode::<Register>(&encoded).expect("a re-encoded register decodes");
    assert_eq!(&again, register, "the register changed in a round trip");
    assert_eq!(&register.merged(register), register, "merging a register with itself changed it");
}

fn check_delta_round_trip(delta: &Delta) {
    let encoded = codec::encode(delta).expect("a delta encodes");
    let again = codec::decode::<Delta>(&encoded).expect("a re-encoded delta decodes");
    assert_eq!(&again, delta, "the delta changed in a round trip");
}
