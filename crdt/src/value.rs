use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Counter, Doc};

/// What a register holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Opaque bytes, replaced whole by each write (last writer wins).
    Bytes(Bytes),
    /// A JSON object whose fields merge across concurrent writes.
    Doc(Doc),
    /// An integer whose concurrent increments all count.
    Counter(Counter),
}

impl Value {
    /// The bytes a value costs in memory, for the store's byte budget. For a
    /// document this is an estimate from its change history.
    pub fn size_bytes(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len(),
            Value::Doc(d) => d.size_estimate_bytes(),
            Value::Counter(c) => c.size_bytes(),
        }
    }
}
