//! What a document from a peer may be: bytes that do not inflate, and a
//! tree no deeper than [`PATCH_DEPTH_MAX`](crate::doc::PATCH_DEPTH_MAX).
//!
//! automerge compresses columns (and whole changes) with DEFLATE, which
//! inflates up to ~1000x: a 16 MiB frame could make a node allocate
//! 16 GiB while loading it. Nodes send documents without compression
//! (`Automerge::save_nocompress`, and changes as their raw chunks), so a
//! peer's document is refused when any chunk is compressed: a compressed
//! change or a bundle, or a document chunk with a column marked deflated.
//! Columns are also run-length encoded: a run of a few bytes can declare
//! a billion operations, which loading would build. So the rows each op
//! column declares are summed from its runs, without building anything,
//! and a document declaring more than [`OPS_PER_BYTE_MAX`] per byte (plus
//! a little) or [`DOC_OPS_MAX`] in all is refused. Honest documents cost
//! at least about a byte per operation (its value), so the bound only
//! refuses what no node writes. Reading the chunk headers follows
//! automerge's binary format (magic, checksum, type, LEB128 length; a
//! document starts with its actors, heads and the two column tables, then
//! the change columns' data, then the op columns').
//!
//! Depth is checked after loading, without recursion, so `to_json` (which
//! recurses) never meets a tree deeper than the patches this node takes.

use automerge::{Automerge, ObjType, ReadDoc, Value, ROOT};

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
/// A column specification's "deflated" bit.
const COLUMN_DEFLATE: u64 = 0x08;
/// A column specification's type bits, and the types (automerge's
/// `ColumnType`).
const COLUMN_TYPE: u64 = 0x07;
const TYPE_GROUP: u64 = 0;
const TYPE_ACTOR: u64 = 1;
const TYPE_INTEGER: u64 = 2;
const TYPE_DELTA: u64 = 3;
const TYPE_BOOLEAN: u64 = 4;
const TYPE_STRING: u64 = 5;
const TYPE_VALUE_METADATA: u64 = 6;

/// Operations a document may declare per byte of it, beyond
/// [`DOC_OPS_SLACK`].
pub const OPS_PER_BYTE_MAX: u64 = 4;
/// Operations any document may declare regardless of its size.
pub const DOC_OPS_SLACK: u64 = 256;
/// Operations one document from a peer may hold at most.
pub const DOC_OPS_MAX: u64 = 1 << 20;
const CHANGE_HASH_BYTES: usize = 32;

/// Why peer bytes were refused before loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A chunk is compressed, or of a kind nodes do not send.
    Compressed,
    /// The bytes do not follow the chunk format.
    Malformed,
    /// Runs declare more operations than the bytes could honestly hold.
    TooManyOps,
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
            CHUNK_DOCUMENT => check_document_columns(body, len as u64)?,
            CHUNK_CHANGE => {}
            _ => return Err(Refusal::Compressed),
        }
        bytes = &rest[len..];
    }
    Ok(())
}

/// A document chunk's body: actors, heads, then the change and op column
/// tables, none of whose columns may be deflated, then their data; the op
/// columns may declare at most the operations `len` bytes allow.
fn check_document_columns(mut body: &[u8], len: u64) -> Result<(), Refusal> {
    let actors = uleb(&mut body)?;
    for _ in 0..actors {
        let len = usize::try_from(uleb(&mut body)?).map_err(|_| Refusal::Malformed)?;
        body = body.get(len..).ok_or(Refusal::Malformed)?;
    }
    let heads = usize::try_from(uleb(&mut body)?).map_err(|_| Refusal::Malformed)?;
    let skip = heads.checked_mul(CHANGE_HASH_BYTES).ok_or(Refusal::Malformed)?;
    body = body.get(skip..).ok_or(Refusal::Malformed)?;
    let mut tables: [Vec<(u64, usize)>; 2] = [Vec::new(), Vec::new()];
    for table in &mut tables {
        let columns = uleb(&mut body)?;
        for _ in 0..columns {
            let spec = uleb(&mut body)?;
            let len = usize::try_from(uleb(&mut body)?).map_err(|_| Refusal::Malformed)?;
            if spec & COLUMN_DEFLATE != 0 {
                return Err(Refusal::Compressed);
            }
            table.push((spec, len));
        }
    }
    let [changes, ops] = tables;
    let change_bytes =
        changes.iter().try_fold(0usize, |a, (_, l)| a.checked_add(*l)).ok_or(Refusal::Malformed)?;
    body = body.get(change_bytes..).ok_or(Refusal::Malformed)?;
    let limit = len.saturating_mul(OPS_PER_BYTE_MAX).saturating_add(DOC_OPS_SLACK).min(DOC_OPS_MAX);
    for (spec, col_len) in ops {
        let data = body.get(..col_len).ok_or(Refusal::Malformed)?;
        body = &body[col_len..];
        if declared_rows(spec & COLUMN_TYPE, data, limit)? > limit {
            return Err(Refusal::TooManyOps);
        }
    }
    Ok(())
}

/// The rows a column's runs declare (stopping once past `limit`), without
/// building them. Raw value columns declare none of their own.
fn declared_rows(column_type: u64, mut data: &[u8], limit: u64) -> Result<u64, Refusal> {
    let mut rows: u64 = 0;
    match column_type {
        TYPE_BOOLEAN => {
            while !data.is_empty() && rows <= limit {
                rows = rows.saturating_add(uleb(&mut data)?);
            }
        }
        TYPE_GROUP | TYPE_ACTOR | TYPE_INTEGER | TYPE_DELTA | TYPE_STRING | TYPE_VALUE_METADATA => {
            let skip_value = |data: &mut &[u8]| -> Result<(), Refusal> {
                if column_type == TYPE_STRING {
                    let len = usize::try_from(uleb(data)?).map_err(|_| Refusal::Malformed)?;
                    *data = data.get(len..).ok_or(Refusal::Malformed)?;
                } else {
                    uleb(data)?;
                }
                Ok(())
            };
            while !data.is_empty() && rows <= limit {
                let count = sleb(&mut data)?;
                if count > 0 {
                    rows = rows.saturating_add(count.unsigned_abs());
                    skip_value(&mut data)?;
                } else if count < 0 {
                    let literal = count.unsigned_abs();
                    rows = rows.saturating_add(literal);
                    let mut left = literal.min(limit.saturating_add(1));
                    while left > 0 {
                        skip_value(&mut data)?;
                        left -= 1;
                    }
                } else {
                    rows = rows.saturating_add(uleb(&mut data)?);
                }
            }
        }
        _ => {}
    }
    Ok(rows)
}

/// A signed LEB128 off the front of `input`.
fn sleb(input: &mut &[u8]) -> Result<i64, Refusal> {
    let mut value: i64 = 0;
    let mut shift = 0u32;
    for (i, &byte) in input.iter().enumerate().take(10) {
        value |= i64::from(byte & 0x7f).checked_shl(shift).ok_or(Refusal::Malformed)?;
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                value |= -1i64 << shift;
            }
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(Refusal::Malformed)
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
/// depth 1, as for a JSON patch). Conflicting values count too: a merge can
/// make a losing value the visible one. Walks with an explicit stack and
/// stops at the first object past `max`.
pub fn depth_at_most(doc: &Automerge, max: usize) -> bool {
    let mut stack = vec![(ROOT, 1usize)];
    while let Some((obj, depth)) = stack.pop() {
        if depth > max {
            return false;
        }
        let mut push = |values: Vec<(Value<'_>, automerge::ObjId)>| {
            for (value, id) in values {
                if let Value::Object(_) = value {
                    stack.push((id, depth + 1));
                }
            }
        };
        match doc.object_type(&obj) {
            Ok(ObjType::Map | ObjType::Table) => {
                for key in doc.keys(&obj) {
                    push(doc.get_all(&obj, key.as_str()).unwrap_or_default());
                }
            }
            Ok(ObjType::List) => {
                for i in 0..doc.length(&obj) {
                    push(doc.get_all(&obj, i).unwrap_or_default());
                }
            }
            _ => {}
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
