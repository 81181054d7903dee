//! Replies into the connection's [`Replies`] buffer, encoded by
//! `redis-protocol` from borrowed frames: no allocation for a reply beyond
//! the buffer itself (and one `Vec` of frames for an array). Large values
//! are not copied at all: the buffer queues the store's own bytes.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Values from this size on are queued as the store's bytes rather than
/// copied into the buffer: a copy of a small value costs less than a
/// queue entry, a copy of a large one costs memory per reader.
pub const SHARE_FROM_BYTES: usize = 4 * 1024;

/// The replies of a connection not yet written: small frames encoded into
/// one growing buffer, large values queued as shared [`Bytes`] between
/// them. Derefs to the buffer, so every `reply::*` function writes into
/// it.
#[derive(Debug, Default)]
pub struct Replies {
    head: BytesMut,
    chunks: VecDeque<Bytes>,
    chunk_bytes: usize,
}

impl Replies {
    /// An empty buffer with room for `capacity` bytes of small replies.
    pub fn with_capacity(capacity: usize) -> Replies {
        Replies { head: BytesMut::with_capacity(capacity), chunks: VecDeque::new(), chunk_bytes: 0 }
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.chunk_bytes + self.head.len()
    }

    fn seal(&mut self) {
        if !self.head.is_empty() {
            let sealed = self.head.split().freeze();
            self.chunk_bytes += sealed.len();
            self.chunks.push_back(sealed);
        }
    }

    /// A bulk string of `value`, queued without a copy when it is large.
    pub fn shared_bulk(&mut self, value: Bytes) {
        if value.len() < SHARE_FROM_BYTES {
            bulk(&mut self.head, &value);
            return;
        }
        bulk_header(&mut self.head, value.len());
        self.seal();
        self.chunk_bytes += value.len();
        self.chunks.push_back(value);
        self.head.extend_from_slice(b"\r\n");
    }

    /// Writes everything queued to `stream`, waiting on the client when it
    /// reads slowly (back-pressure), and empties the buffer.
    ///
    /// # Errors
    ///
    /// The socket's; what was not written is dropped.
    pub async fn write_to(&mut self, stream: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        self.seal();
        while let Some(chunk) = self.chunks.pop_front() {
            self.chunk_bytes -= chunk.len();
            if let Err(e) = stream.write_all(&chunk).await {
                self.chunks.clear();
                self.chunk_bytes = 0;
                return Err(e);
            }
        }
        Ok(())
    }
}

impl std::ops::Deref for Replies {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        &self.head
    }
}

impl std::ops::DerefMut for Replies {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.head
    }
}
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;

/// Appends `frame` to `out`.
pub fn frame(out: &mut BytesMut, frame: &BorrowedFrame<'_>) {
    let before = out.len();
    // Encoding a well-formed frame into a buffer it extends itself cannot
    // fail; if it ever did, drop the partial bytes rather than send them.
    if let Err(e) = extend_encode_borrowed(out, frame, false) {
        out.truncate(before);
        tracing::error!(error = %e, "encoding a RESP reply failed");
    }
}

/// `+OK`.
pub fn ok(out: &mut BytesMut) {
    out.extend_from_slice(b"+OK\r\n");
}

/// A simple string (`+...`).
pub fn simple(out: &mut BytesMut, s: &[u8]) {
    frame(out, &BorrowedFrame::SimpleString(s));
}

/// An integer (`:...`).
pub fn int(out: &mut BytesMut, n: i64) {
    out.extend_from_slice(b":");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A bulk string (`$...`). Written here, not through the frame encoder:
/// it is every GET's reply, and the encoder's generic path was 2 % of a
/// node's time under `redis-benchmark -t get -P 16`.
pub fn bulk(out: &mut BytesMut, b: &[u8]) {
    out.reserve(b.len() + 16);
    bulk_header(out, b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The `$<len>` line that opens a bulk string of `len` bytes.
fn bulk_header(out: &mut BytesMut, len: usize) {
    out.extend_from_slice(b"$");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The null bulk string (`$-1`).
pub fn null(out: &mut BytesMut) {
    out.extend_from_slice(b"$-1\r\n");
}

/// An array.
pub fn array(out: &mut BytesMut, items: &[BorrowedFrame<'_>]) {
    frame(out, &BorrowedFrame::Array(items));
}

/// An error (`-...`). A reply must stay on one line, so CR and LF become
/// spaces, as Redis does.
pub fn error(out: &mut BytesMut, message: &str) {
    if message.contains(['\r', '\n']) {
        let clean = message.replace(['\r', '\n'], " ");
        frame(out, &BorrowedFrame::Error(&clean));
    } else {
        frame(out, &BorrowedFrame::Error(message));
    }
}
