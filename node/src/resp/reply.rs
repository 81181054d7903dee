//! Replies into the connection's write buffer, encoded by `redis-protocol`
//! from borrowed frames: no allocation for a reply beyond the buffer
//! itself (and one `Vec` of frames for an array).

use bytes::BytesMut;
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
    frame(out, &BorrowedFrame::Integer(n));
}

/// A bulk string (`$...`).
pub fn bulk(out: &mut BytesMut, b: &[u8]) {
    frame(out, &BorrowedFrame::BulkString(b));
}

/// The null bulk string (`$-1`).
pub fn null(out: &mut BytesMut) {
    frame(out, &BorrowedFrame::Null);
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
