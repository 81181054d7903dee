//! The wire codec: serde + postcard inside a versioned envelope.
//!
//! Every message is one version byte followed by its postcard encoding.
//! postcard has a documented, stable wire format, which a cluster upgraded
//! node by node needs; this module is the only place that names it, so the
//! choice stays swappable. Decoding untrusted bytes returns an error and
//! never panics.
//!
//! ```
//! use geocache_crdt::{codec, NodeId};
//! let bytes = codec::encode(&NodeId(7)).unwrap();
//! assert_eq!(codec::decode::<NodeId>(&bytes).unwrap(), NodeId(7));
//! assert!(codec::decode::<NodeId>(&[9, 9]).is_err());
//! assert_eq!(codec::encoded_len(&NodeId(7)).unwrap(), bytes.len());
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The envelope version this build writes and reads between nodes.
/// Version 4 added the node's kind (full or sidecar) to its membership
/// identity and the fill messages, 5 counters, 6 the strong keys'
/// consensus messages, 7 deltas whose body is left out for a sidecar
/// that does not hold the key and the interest messages that decide it.
pub const WIRE_VERSION: u8 = 7;

/// The envelope version of what a node keeps in its data dir (registers,
/// deltas, watermarks). Apart from [`WIRE_VERSION`]: a change to the
/// messages between nodes must not make a data dir unreadable, and these
/// types did not change in version 4.
pub const STORED_VERSION: u8 = 3;

/// A message could not be encoded or decoded. Nothing was changed.
#[derive(Debug, Error)]
pub enum CodecError {
    /// There were no bytes at all.
    #[error("empty message")]
    Empty,
    /// The envelope names a version this build does not read.
    #[error("unsupported wire version {0} (this build reads {WIRE_VERSION}, and {STORED_VERSION} from its data dir)")]
    UnsupportedVersion(u8),
    /// The body is not a valid encoding of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes follow the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes `message` in a fresh envelope.
///
/// # Errors
///
/// [`CodecError::Malformed`] when the type cannot be serialized (a
/// programming error, such as a map with non-serializable keys).
pub fn encode<T: Serialize + ?Sized>(message: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    encode_into(message, &mut out)?;
    Ok(out)
}

/// Appends `message` in an envelope to `out`, reusing its allocation.
///
/// # Errors
///
/// As [`encode`]; `out` may then hold a partial message after its old end.
pub fn encode_into<T: Serialize + ?Sized>(message: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    encode_versioned(WIRE_VERSION, message, out)
}

/// As [`encode_into`], in the data dir's envelope ([`STORED_VERSION`]).
///
/// # Errors
///
/// As [`encode`].
pub fn encode_stored_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    encode_versioned(STORED_VERSION, value, out)
}

fn encode_versioned<T: Serialize + ?Sized>(
    version: u8,
    message: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    out.push(version);
    let body = std::mem::take(out);
    *out = postcard::to_extend(message, body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(())
}

/// The size [`encode`] would produce, without building it: for accounting.
///
/// # Errors
///
/// As [`encode`].
pub fn encoded_len<T: Serialize + ?Sized>(message: &T) -> Result<usize, CodecError> {
    let body =
        postcard::experimental::serialized_size(message).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(1 + body)
}

/// Decodes one message from the front of `bytes` and returns it with the
/// bytes after it, for formats that pack several messages back to back.
///
/// # Errors
///
/// As [`decode`], except that trailing bytes are returned, not refused.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decodes the leading fields of a message (a struct's first fields, as
/// a tuple of their types), ignoring the rest: what a reader that needs
/// only a header pays, rather than the whole message.
///
/// # Errors
///
/// A [`CodecError`] when `bytes` does not start with such fields in a
/// supported envelope.
pub fn decode_leading<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_leading_versioned(WIRE_VERSION, bytes)
}

/// As [`decode_leading`], from the data dir's envelope.
///
/// # Errors
///
/// As [`decode_leading`].
pub fn decode_stored_leading<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_leading_versioned(STORED_VERSION, bytes)
}

fn decode_leading_versioned<T: DeserializeOwned>(expected: u8, bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != expected {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let (fields, _) = postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(fields)
}

/// Decodes one message that fills `bytes` exactly.
///
/// # Errors
///
/// A [`CodecError`] for anything that is not a message of type `T` in a
/// supported envelope.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_versioned(WIRE_VERSION, bytes)
}

/// As [`decode`], from the data dir's envelope ([`STORED_VERSION`]).
///
/// # Errors
///
/// As [`decode`].
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_versioned(STORED_VERSION, bytes)
}

fn decode_versioned<T: DeserializeOwned>(expected: u8, bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != expected {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(message)
}
