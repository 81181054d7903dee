//! How each record is laid out on disk. Every value starts with its own
//! format byte, so a later format can be read next to this one.

use geocache_crdt::{codec, NodeId, Register};

/// The format byte of every record this build writes.
const RECORD_V1: u8 = 1;

/// Keys of the `life` keyspace.
pub const LIFE_IDENTITY: &[u8] = b"identity";
pub const LIFE_ORIGIN: &[u8] = b"origin";
pub const LIFE_SEQ: &[u8] = b"seq";
pub const LIFE_CHECKPOINT: &[u8] = b"checkpoint";
pub const LIFE_BOOT: &[u8] = b"boot";
pub const LIFE_CLEAN: &[u8] = b"clean";
/// The journal position the last checkpoint of `entries` covers.
pub const LIFE_ENTRIES_UPTO: &[u8] = b"entries_upto";

/// A record could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

pub fn encode_register(register: &Register) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    // A register encodes infallibly (postcard into a Vec); an error would
    // be a bug in its Serialize, and is written as an empty record that
    // fails to decode at load rather than taken down the node here.
    let _ = codec::encode_stored_into(register, &mut out);
    out
}

pub fn decode_register(bytes: &[u8]) -> Result<Register, RecordError> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => {
            codec::decode_stored(rest).map_err(|e| RecordError(format!("register: {e}")))
        }
        Some((v, _)) => Err(RecordError(format!("register record of unknown format {v}"))),
        None => Err(RecordError("empty register record".into())),
    }
}

pub fn encode_u64s(values: &[u64]) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub fn decode_u64s<const N: usize>(bytes: &[u8], what: &str) -> Result<[u64; N], RecordError> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) if rest.len() == 8 * N => {
            let mut out = [0; N];
            for (i, chunk) in rest.chunks_exact(8).enumerate() {
                out[i] = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            }
            Ok(out)
        }
        _ => Err(RecordError(format!("{what}: not {N} numbers of format {RECORD_V1}"))),
    }
}

pub fn encode_watermarks(watermarks: &[(NodeId, u64)]) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    let _ = codec::encode_stored_into(watermarks, &mut out);
    out
}

pub fn decode_watermarks(bytes: &[u8]) -> Result<Vec<(NodeId, u64)>, RecordError> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => {
            codec::decode_stored(rest).map_err(|e| RecordError(format!("checkpoint: {e}")))
        }
        _ => Err(RecordError("checkpoint record of unknown format".into())),
    }
}
