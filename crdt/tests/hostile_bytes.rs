//! Hostile bytes against everything the crdt crate decodes from a peer or a
//! client: registers and deltas in the codec's envelope, saved documents,
//! and JSON merge patches.
//!
//! These are the fuzz targets `crdt_codec`, `doc_load` and `merge_patch`
//! (`fuzz/fuzz_targets/`) as property tests on stable, so that plain
//! `cargo test` keeps their properties: no input panics, and whatever
//! decodes round-trips. The inputs are arbitrary bytes and, because random
//! bytes rarely get past an envelope or a magic number, valid encodings
//! with a few bytes flipped, inserted or deleted.
//!
//! `GEOCACHE_WRITE_FUZZ_SEEDS=1 cargo test -p geocache-crdt --test
//! hostile_bytes` rewrites these targets' seed corpus in `fuzz/corpus/`.

use bytes::Bytes;
use geocache_crdt::codec::{self, WIRE_VERSION};
use geocache_crdt::{Delta, Doc, Dot, Hlc, Key, NodeId, Register, Stamp, Value, VersionVector};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;

/// Enough to find shallow bugs, few enough to stay well under ten seconds
/// per test in a debug build (automerge is slow unoptimized).
const CASES: u32 = 256;
const HOSTILE_BYTES_MAX: usize = 4096;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, ..ProptestConfig::default() }
}

// ---- the properties, as the fuzz targets check them ----

/// A register that decoded (or was built from decoded parts) must
/// round-trip, and merging it with itself must change nothing.
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

/// The `crdt_codec` target: the input whole as a register and as a delta,
/// and as a register followed by a delta applied to it.
fn check_codec_input(data: &[u8]) {
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

/// The `doc_load` target.
fn check_doc_bytes(data: &[u8]) {
    let Ok(doc) = Doc::load(data) else { return };
    let json = doc.to_json();
    assert!(json.is_object(), "a document is not a JSON object: {json}");
    let reloaded = Doc::load(&doc.save()).expect("a saved document loads");
    assert_eq!(reloaded, doc, "the document changed in a save and load");
    assert_eq!(reloaded.to_json(), json, "the document's JSON changed in a save and load");
}

/// The `merge_patch` target: text that is a patch `check_patch` accepts
/// applies to a fresh document and reads back as RFC 7396 says.
fn check_patch_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(patch) = serde_json::from_str::<Json>(text) else { return };
    check_patch(&patch);
}

fn check_patch(patch: &Json) {
    if Doc::check_patch(patch).is_err() {
        return;
    }
    let mut doc = Doc::new();
    doc.apply_merge_patch(patch, stamp(1_000, 1)).expect("a patch that check_patch accepts applies");
    let json = doc.to_json();
    assert_eq!(json, without_nulls(patch), "the patched document is not the patch");
    let reloaded = Doc::load(&doc.save()).expect("a saved document loads");
    assert_eq!(reloaded.to_json(), json, "the document changed in a save and load");
}

/// The patch as RFC 7396 applies it to `{}`: null members dropped at every
/// depth (objects inside arrays too, being patched onto nothing), null
/// array elements kept (arrays are values, not patches).
fn without_nulls(value: &Json) -> Json {
    match value {
        Json::Object(fields) => Json::Object(
            fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(without_nulls).collect()),
        scalar => scalar.clone(),
    }
}

// ---- valid inputs to mutate ----

fn stamp(ms: u64, node: u64) -> Stamp {
    Stamp::new(Hlc::new(ms, 0), NodeId(node))
}

fn key() -> Key {
    Key::new("ns", Bytes::from_static(b"k"))
}

fn vv(writers: &[u64]) -> VersionVector {
    let mut vv = VersionVector::new();
    for &node in writers {
        vv.increment(NodeId(node));
    }
    vv
}

fn doc_with(patches: &[Json]) -> Doc {
    let mut doc = Doc::new();
    for (i, patch) in patches.iter().enumerate() {
        doc.apply_merge_patch(patch, stamp(1_000 + i as u64, 1)).expect("a valid patch");
    }
    doc
}

fn bytes_register(value: &[u8], node: u64, expires_at_ms: Option<u64>) -> Register {
    let dot = Dot { origin: NodeId(node), seq: 1 };
    let mut register = Register::replace(
        Value::Bytes(Bytes::copy_from_slice(value)),
        stamp(1_000, node),
        vv(&[node]),
        dot,
        expires_at_ms,
    );
    register.meta.content_type = Some("text/plain".into());
    register
}

fn doc_register(doc: Doc) -> Register {
    Register::replace(Value::Doc(doc), stamp(1_000, 1), vv(&[1, 2]), Dot { origin: NodeId(1), seq: 1 }, None)
}

/// A document register and the same register after one more patch, as a
/// local write produces them: their delta carries only document changes.
fn doc_edit() -> (Register, Arc<Register>) {
    let before = doc_register(doc_with(&[json!({"name": "ada", "tags": ["x", 1, null]})]));
    let mut after = before.clone();
    if let Value::Doc(doc) = &mut after.value {
        doc.apply_merge_patch(&json!({"name": null, "n": 2.5}), stamp(2_000, 1)).expect("a valid patch");
    }
    after.meta.stamp = stamp(2_000, 1);
    after.meta.vv = vv(&[1, 1, 2]);
    (before, Arc::new(after))
}

fn valid_registers() -> Vec<Register> {
    let tombstone =
        Register::tombstone(stamp(3_000, 2), vv(&[2]), Dot { origin: NodeId(2), seq: 4 }, Some(9_000));
    vec![
        bytes_register(b"", 1, None),
        bytes_register(b"hello", 3, Some(60_000)),
        doc_register(doc_with(&[json!({"a": {"b": [1, "two", true]}})])),
        tombstone,
    ]
}

/// Deltas of both kinds, each with the register it applies to.
fn valid_deltas() -> Vec<(Delta, Option<Register>)> {
    let (before, after) = doc_edit();
    let doc_changes = Delta::for_write(NodeId(1), 2, key(), Some(&before), &after);
    assert!(
        matches!(doc_changes.body, geocache_crdt::DeltaBody::DocChanges(_)),
        "a small edit of a document travels as its changes"
    );
    let replace = Arc::new(bytes_register(b"v", 2, None));
    let whole = Delta::for_write(NodeId(2), 1, key(), None, &replace);
    vec![(doc_changes, Some(before)), (whole, None)]
}

fn valid_docs() -> Vec<Doc> {
    vec![
        Doc::new(),
        doc_with(&[json!({"a": 1})]),
        doc_with(&[json!({"a": [1, {"b": "c"}]}), json!({"a": null, "d": 1.5})]),
    ]
}

const VALID_PATCHES: [&str; 3] =
    [r#"{"a":1,"b":{"c":null,"d":[1,{"e":null}]}}"#, r#"{"name":"ada","tags":["x",null],"n":-1.5e3}"#, "{}"];

// ---- mutation ----

/// One edit of a valid encoding.
#[derive(Clone, Debug)]
enum Edit {
    Flip { at: Index, bit: u8 },
    Insert { at: Index, byte: u8 },
    Delete { at: Index },
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        any::<Index>().prop_map(|at| Edit::Delete { at }),
    ];
    prop::collection::vec(edit, 1..6)
}

fn mutated(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match edit {
            Edit::Flip { at, bit } if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Edit::Insert { at, byte } => {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, *byte);
            }
            Edit::Delete { at } if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            _ => {}
        }
    }
    bytes
}

/// Arbitrary bytes, half of them behind the envelope's version byte so
/// that they reach the decoder proper.
fn enveloped_bytes() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), prop::collection::vec(any::<u8>(), 0..HOSTILE_BYTES_MAX)).prop_map(
        |(envelope, mut bytes)| {
            if envelope {
                bytes.insert(0, WIRE_VERSION);
            }
            bytes
        },
    )
}

/// Arbitrary JSON objects: every JSON type, nested, with keys that
/// include the empty string and characters that need escaping.
fn json_patch() -> impl Strategy<Value = Json> {
    let name = "[a-c\"\\\\ é\u{0}]{0,3}";
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        (proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL)
            .prop_map(Json::from),
        name.prop_map(Json::String),
    ];
    let value = leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(name, inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(name, value, 0..5)
        .prop_map(|m| Json::Object(m.into_iter().collect::<Map<_, _>>()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn codec_survives_arbitrary_bytes(data in enveloped_bytes()) {
        check_codec_input(&data);
    }

    #[test]
    fn codec_survives_mutated_registers(which in any::<Index>(), edits in edits()) {
        let registers = valid_registers();
        let register = which.get(&registers);
        let encoded = codec::encode(register).expect("a register encodes");
        // The unmutated encoding must pass too, or mutating it proves little.
        prop_assert_eq!(&codec::decode::<Register>(&encoded).expect("a valid register decodes"), register);
        check_codec_input(&mutated(encoded, &edits));
    }

    #[test]
    fn codec_survives_mutated_deltas(which in any::<Index>(), edits in edits()) {
        let deltas = valid_deltas();
        let (delta, base) = which.get(&deltas);
        let encoded = codec::encode(delta).expect("a delta encodes");
        prop_assert!(delta.apply_to(base.as_ref()).is_ok(), "a valid delta applies to its base");
        let data = mutated(encoded, &edits);
        check_codec_input(&data);
        // A mutated delta against the register it was made for: what a
        // replica holding that key receives.
        if let (Ok(delta), Some(base)) = (codec::decode::<Delta>(&data), base) {
            if let Ok(applied) = delta.apply_to(Some(base)) {
                check_register(&applied);
            }
        }
    }

    #[test]
    fn doc_load_survives_arbitrary_bytes(magic in any::<bool>(), mut data in prop::collection::vec(any::<u8>(), 0..HOSTILE_BYTES_MAX)) {
        // Without automerge's magic number nearly every input is refused at
        // once, so half of them get it.
        if magic {
            let saved = Doc::new().save();
            data.splice(0..0, saved[..4].iter().copied());
        }
        check_doc_bytes(&data);
    }

    #[test]
    fn doc_load_survives_mutated_documents(which in any::<Index>(), edits in edits()) {
        let docs = valid_docs();
        let doc = which.get(&docs);
        let saved = doc.save();
        prop_assert_eq!(&Doc::load(&saved).expect("a saved document loads"), doc);
        check_doc_bytes(&mutated(saved, &edits));
    }

    #[test]
    fn merge_patches_apply_as_rfc_7396_says(patch in json_patch()) {
        check_patch(&patch);
        // The same patch as text, as a client sends it.
        check_patch_text(patch.to_string().as_bytes());
    }

    #[test]
    fn merge_patch_text_survives_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..HOSTILE_BYTES_MAX)) {
        check_patch_text(&data);
    }

    #[test]
    fn merge_patch_text_survives_mutations(which in any::<Index>(), edits in edits()) {
        check_patch_text(&mutated(which.get(&VALID_PATCHES).as_bytes().to_vec(), &edits));
    }
}

#[test]
fn a_deep_patch_is_refused_not_applied() {
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!({ "x": deep });
    }
    assert!(Doc::check_patch(&deep).is_err());
    check_patch(&deep);
}

// ---- the seed corpus ----

/// The fuzz targets' seeds this crate can make: (target, file, bytes).
fn fuzz_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, register) in valid_registers().iter().take(2).enumerate() {
        seeds.push(("crdt_codec", format!("seed-register-{i}"), codec::encode(register).expect("encodes")));
    }
    let deltas = valid_deltas();
    for (i, (delta, _)) in deltas.iter().enumerate() {
        seeds.push(("crdt_codec", format!("seed-delta-{i}"), codec::encode(delta).expect("encodes")));
    }
    // A register followed by a delta on top of it: the pairing path.
    let (doc_changes, base) = &deltas[0];
    let mut pair = codec::encode(base.as_ref().expect("a doc delta has a base")).expect("encodes");
    codec::encode_into(doc_changes, &mut pair).expect("encodes");
    seeds.push(("crdt_codec", "seed-register-then-delta".into(), pair));
    for (i, doc) in valid_docs().iter().enumerate() {
        seeds.push(("doc_load", format!("seed-doc-{i}"), doc.save()));
    }
    for (i, patch) in VALID_PATCHES.iter().enumerate() {
        seeds.push(("merge_patch", format!("seed-patch-{i}.json"), patch.as_bytes().to_vec()));
    }
    seeds
}

fn is_valid_seed(target: &str, data: &[u8]) -> bool {
    match target {
        "crdt_codec" => {
            codec::decode::<Register>(data).is_ok()
                || codec::decode::<Delta>(data).is_ok()
                || codec::decode_prefix::<Register>(data)
                    .is_ok_and(|(_, rest)| codec::decode::<Delta>(rest).is_ok())
        }
        "doc_load" => Doc::load(data).is_ok(),
        "merge_patch" => serde_json::from_slice::<Json>(data).is_ok_and(|p| Doc::check_patch(&p).is_ok()),
        other => panic!("no seeds for {other}"),
    }
}

/// The committed seeds must stay inputs the targets accept, or the fuzzer
/// starts from nothing once the wire format moves on.
#[test]
fn fuzz_seeds_are_valid_inputs() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = std::env::var_os("GEOCACHE_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, data) in fuzz_seeds() {
        assert!(is_valid_seed(target, &data), "the {target} seed {name} is not a valid input");
        let path = corpus.join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().expect("a seed has a directory")).expect("mkdir");
            std::fs::write(&path, &data).expect("write a seed");
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; write the seeds with GEOCACHE_WRITE_FUZZ_SEEDS=1", path.display())
        });
        assert!(
            is_valid_seed(target, &committed),
            "{} is no longer a valid input; rewrite the seeds with GEOCACHE_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}

/// Inputs the fuzzer crashed on, kept as regression tests: each must be
/// refused, not panic.
#[test]
fn fuzzer_crashes_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/regressions") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("doc_load-") {
            let loaded = std::panic::catch_unwind(|| Doc::load(&bytes).map(|d| d.to_json()));
            assert!(loaded.is_ok(), "{name}: panicked");
            seen += 1;
        }
    }
    assert!(seen >= 1, "the crash inputs are in {}", dir.display());
}
