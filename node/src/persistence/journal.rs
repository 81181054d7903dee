//! The journal's files: every change to the store, appended in the order
//! it was applied, as checksummed records in segment files under
//! `journal/`, each named by the position of its first record.
//!
//! A record is `[u32 length][u64 xxh3 of the body][body]`, the body
//! `[kind][u64 wall ms][payload]`. Positions are implicit (a segment's
//! first, then one per record), so a record can be encoded before the
//! writer knows its position. The journal is append-only: a record that
//! does not check at the end of the last segment is a torn write and is
//! cut there; anywhere else it is damage, and the data dir is refused.

use std::path::{Path, PathBuf};

/// A segment is closed once it holds this many bytes (a record is never
/// split, so one large value can make it longer).
pub(super) const SEGMENT_BYTES: u64 = 8 << 20;
const HEADER_BYTES: usize = 4 + 8;
const BODY_HEADER_BYTES: usize = 1 + 8;
/// Larger than any record the node can write (`--value-bytes-max` is at
/// most 512 MiB): a length above it is damage, not a record.
const RECORD_BYTES_MAX: usize = 1 << 30;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A delta applied here whose register the store holds: replayed on
    /// load, and kept for the backlog.
    DeltaHeld = 1,
    /// A delta applied here (its sequence number counts) whose register
    /// the store did not keep: backlog only, never replayed.
    DeltaNotHeld = 2,
    /// A register merged from a full transfer: `[u32 key length][packed
    /// key][register]`, replayed on load.
    Register = 3,
    /// The replication watermarks at that point.
    Watermarks = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::DeltaHeld),
            2 => Some(Kind::DeltaNotHeld),
            3 => Some(Kind::Register),
            4 => Some(Kind::Watermarks),
            _ => None,
        }
    }
}

/// Encodes one record; `payload` appends its payload.
pub(super) fn encode(kind: Kind, wall_ms: u64, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    out.push(kind as u8);
    out.extend_from_slice(&wall_ms.to_le_bytes());
    payload(&mut out);
    let body_len = (out.len() - HEADER_BYTES) as u32;
    let hash = xxhash_rust::xxh3::xxh3_64(&out[HEADER_BYTES..]);
    out[..4].copy_from_slice(&body_len.to_le_bytes());
    out[4..HEADER_BYTES].copy_from_slice(&hash.to_le_bytes());
    out
}

/// One record as read back.
pub(super) struct Record<'a> {
    pub position: u64,
    pub kind: Kind,
    pub wall_ms: u64,
    pub payload: &'a [u8],
}

/// A segment file.
#[derive(Clone, Debug)]
pub(super) struct Segment {
    pub path: PathBuf,
    /// The position of its first record.
    pub first: u64,
    /// Records it holds.
    pub count: u64,
    pub bytes: u64,
    /// When its last record was written (0: none).
    pub last_wall_ms: u64,
}

impl Segment {
    /// The position of its last record (`first - 1` when empty).
    pub fn last(&self) -> u64 {
        self.first + self.count - 1
    }
}

/// The journal's directory in a data dir.
pub(super) fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

/// The path of the segment whose first record is at `first`.
pub(super) fn segment_path(journal_dir: &Path, first: u64) -> PathBuf {
    journal_dir.join(format!("{first:020}.log"))
}

/// The segment files under `journal_dir`, by first position.
pub(super) fn list(journal_dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(journal_dir)? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// How reading a segment ended.
pub(super) struct SegmentRead {
    pub segment: Segment,
    /// Bytes after the last record that checks (a torn write, or damage).
    pub trailing: Option<u64>,
}

/// Reads the segment at `path`, handing each record to `each`; an error
/// from `each` stops the read and is returned.
pub(super) fn read(
    path: &Path,
    first: u64,
    mut each: impl FnMut(Record<'_>) -> Result<(), String>,
) -> Result<SegmentRead, ReadError> {
    let mut bytes = Vec::new();
    let _: usize = std::io::Read::read_to_end(
        &mut std::fs::File::open(path).map_err(|e| ReadError::Io(e.to_string()))?,
        &mut bytes,
    )
    .map_err(|e| ReadError::Io(e.to_string()))?;
    let mut at = 0usize;
    let mut segment = Segment { path: path.to_path_buf(), first, count: 0, bytes: 0, last_wall_ms: 0 };
    while at < bytes.len() {
        let Some(body) = check(&bytes[at..]) else { break };
        let kind = Kind::from_u8(body[0]);
        let wall_ms = u64::from_le_bytes(body[1..BODY_HEADER_BYTES].try_into().unwrap_or_default());
        let Some(kind) = kind else { break };
        let record =
            Record { position: first + segment.count, kind, wall_ms, payload: &body[BODY_HEADER_BYTES..] };
        each(record).map_err(|detail| ReadError::Record { at: at as u64, detail })?;
        at += HEADER_BYTES + body.len();
        segment.count += 1;
        segment.last_wall_ms = wall_ms;
    }
    segment.bytes = at as u64;
    let trailing = (at < bytes.len()).then_some((bytes.len() - at) as u64);
    Ok(SegmentRead { segment, trailing })
}

/// The body of the record at the start of `bytes`, if it checks.
fn check(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let hash = u64::from_le_bytes(bytes.get(4..HEADER_BYTES)?.try_into().ok()?);
    if !(BODY_HEADER_BYTES..=RECORD_BYTES_MAX).contains(&len) {
        return None;
    }
    let body = bytes.get(HEADER_BYTES..HEADER_BYTES + len)?;
    (xxhash_rust::xxh3::xxh3_64(body) == hash).then_some(body)
}

/// Reading a segment failed.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(String),
    /// A record checked but its payload could not be decoded.
    Record {
        at: u64,
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_in_order_and_a_torn_tail_is_found() {
        let dir = std::env::temp_dir().join(format!("geocache-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = segment_path(&dir, 7);
        let mut bytes = Vec::new();
        for i in 0..3u8 {
            bytes.extend(encode(Kind::DeltaHeld, 100 + u64::from(i), |out| out.extend([i; 5])));
        }
        let whole = bytes.len();
        bytes.extend(&encode(Kind::Watermarks, 9, |out| out.extend([1; 40]))[..20]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(list(&dir).unwrap(), vec![(7, path.clone())]);
        let mut seen = Vec::new();
        let read = read(&path, 7, |r| {
            seen.push((r.position, r.kind, r.wall_ms, r.payload.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2], (9, Kind::DeltaHeld, 102, vec![2; 5]));
        assert_eq!(read.segment.last(), 9);
        assert_eq!(read.segment.bytes, whole as u64);
        assert_eq!(read.trailing, Some(20), "the torn record is not taken");
        // A flipped byte in the middle stops the read there.
        bytes[HEADER_BYTES + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let read = super::read(&path, 7, |_| Ok(())).unwrap();
        assert_eq!((read.segment.count, read.trailing), (0, Some(bytes.len() as u64)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
