//! What a document from a peer may be: bytes that do not inflate, and a
//! tree no deeper than [`PATCH_DEPTH_MAX`](crate::doc::PATCH_DEPTH_MAX).
//!
//! automerge compresses columns (and whole changes) with DEFLATE, which
//! inflates up to ~1000x: a 16 MiB frame could make a node allocate
//! 16 GiB while loading it. Nodes send documents without compression
//! (`Automerge::save_nocompress`, and changes as their raw chunks), so a
//! peer's document is refused when any chunk is compressed: a compressed
//! change or a bundle, or a document chunk with a column marked deflated.
//! What is loaded is then at most the bytes received. Reading the chunk
//! headers follows automerge's binary format (magic, checksum, type,
//! LEB128 length; a document starts with its actors, heads and the two
//! column tables).
//!
//! Depth is checked after loading, without recursion, so `to_json` (which
//! recurses) never meets a tree deeper than the patches this node takes.

use automerge::{Automerge, ObjType, ReadDoc, Value, ROOT};

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
/// A column specification's "deflated" bit.
const COLUMN_DEFLATE: u64 = 0x08;
const CHANGE_HASH_BYTES: usize = 32;

/// Why peer bytes were refused before loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A chunk is compressed, or of a kind nodes do not send.
    Compressed,
    /// The bytes do not follow the chunk format.
    Malformed,
}

/// Checks that `bytes` (a saved document, or changes) hold only
/// uncompressed chunks.
pub fn check_uncompressed(mut bytes: &[u8]) -> Result<(), Refusal> {
    while !bytes.is_empty() {
        let magic = bytes.get(..4).ok_or(Refusal::Malformed)?;
        if magic != MAGIC {
            return Err(Refusal::Malformed);
        }
        // Magic and checksum, then the chunk type.
        let chunk_type = *bytes.get(8).ok_or(Refusal::Malformed)?;
        let mut rest = &bytes[9..];
        let len = uleb(&mut rest)?;
        let len = usize::try_from(len).map_err(|_| Refusal::Malformed)?;
        let body = rest.get(..len).ok_or(Refusal::Malformed)?;
        match chunk_type {
            CHUNK_DOCUMENT => check_document_columns(body)?,
            CHUNK_CHANGE => {}
            _ => return Err(Refusal::Compressed),
        }
        bytes = &rest[len..];
    }
    Ok(())
}

/// A document chunk's body: actors, heads, then the change and op column
/// tables, none of whose columns may be deflated.
fn check_document_columns(mut body: &[u8]) -> Result<(), Refusal> {
    let actors = uleb(&mut body)?;
    for _ in 0..actors {
        let len = usize::try_from(uleb(&mut body)?).map_err(|_| Refusal::Malformed)?;
        body = body.get(len..).ok_or(Refusal::Malformed)?;
    }
    let heads = usize::try_from(uleb(&mut body)?).map_err(|_| Refusal::Malformed)?;
    let skip = heads.checked_mul(CHANGE_HASH_BYTES).ok_or(Refusal::Malformed)?;
    body = body.get(skip..).ok_or(Refusal::Malformed)?;
    for _table in 0..2 {
        let columns = uleb(&mut body)?;
        for _ in 0..columns {
            let spec = uleb(&mut body)?;
            let _len = uleb(&mut body)?;
            if spec & COLUMN_DEFLATE != 0 {
                return Err(Refusal::Compressed);
            }
        }
    }
    Ok(())
}

/// An unsigned LEB128 off the front of `input`.
fn uleb(input: &mut &[u8]) -> Result<u64, Refusal> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        value |= bits.checked_shl(7 * i as u32).ok_or(Refusal::Malformed)?;
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(Refusal::Malformed)
}

/// Whether the document's tree is at most `max` objects deep (the root is
/// depth 1, as for a JSON patch). Walks with an explicit stack and stops at
/// the first object past `max`.
pub fn depth_at_most(doc: &Automerge, max: usize) -> bool {
    let mut stack = vec![(ROOT, 1usize)];
    while let Some((obj, depth)) = stack.pop() {
        if depth > max {
            return false;
        }
        if doc.object_type(&obj).is_ok_and(|t| t == ObjType::Text) {
            continue;
        }
        for item in doc.values(&obj) {
            if let (Value::Object(_), id) = item {
                stack.push((id, depth + 1));
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_reads_and_refuses_overlong_input() {
        let mut input: &[u8] = &[0xe5, 0x8e, 0x26, 0xff];
        assert_eq!(uleb(&mut input), Ok(624_485));
        assert_eq!(input, &[0xff]);
        let mut endless: &[u8] = &[0x80; 11];
        assert_eq!(uleb(&mut endless), Err(Refusal::Malformed));
    }

    #[test]
    fn garbage_and_foreign_chunk_kinds_are_refused() {
        assert_eq!(check_uncompressed(b"not automerge"), Err(Refusal::Malformed));
        let mut compressed_change = MAGIC.to_vec();
        compressed_change.extend([0, 0, 0, 0, 2, 1, 0]);
        assert_eq!(check_uncompressed(&compressed_change), Err(Refusal::Compressed));
        assert_eq!(check_uncompressed(&[]), Ok(()));
    }
}
