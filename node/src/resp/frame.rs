//! Requests off the wire: RESP2 arrays of bulk strings, and inline
//! commands (a line of words, as typed into telnet).
//!
//! A request is one array of bulk strings, so [`scan`] walks only its
//! headers (a few bytes per argument, the payloads are skipped by length),
//! refuses what a client may not send as soon as the header that announces
//! it is buffered (a general decoder would wait for a 10 GB bulk string to
//! arrive, and recurse into nested arrays without a bound), and notes where
//! each argument lies. A whole request is then split off the read buffer
//! and its arguments handed out as slices of it (no copy). A general RESP
//! decoder (`redis-protocol`'s) had been the second pass here, building a
//! frame per argument that the scan had already found: 3 % of a node's
//! time under `redis-benchmark -t set -P 16`.
//!
//! Sans-IO: [`parse`] takes the read buffer and returns a request, "need
//! more bytes", or a [`ProtocolError`]; the connection does the reading.

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

use super::error::ProtocolError;

/// The most arguments one request may carry (Redis: 1024 * 1024).
pub const ARGS_COUNT_MAX: i64 = 1024 * 1024;

/// The longest header line (`*<count>` or `$<len>`) and the longest inline
/// command, as in Redis (`PROTO_INLINE_MAX_SIZE`).
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// What a request may weigh; set from the node's config.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// The longest single argument (a bulk string): the value limit plus
    /// room for a key, so the command can say which limit was crossed.
    pub bulk_bytes_max: usize,
    /// The largest whole request, headers included. The read buffer never
    /// holds more than this plus one read.
    pub request_bytes_max: usize,
}

/// Arguments a request holds without a heap allocation of its own: a
/// `SET key value EX n` fits.
const INLINE_ARGS: usize = 5;

/// One command: its name and arguments, each a bulk string.
#[derive(Debug, Default)]
pub struct Request {
    parts: SmallVec<[Bytes; INLINE_ARGS]>,
}

impl Request {
    /// The number of words, the command name included.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the request is empty (`*0`, or a blank inline line): Redis
    /// ignores those.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Word `i` (0 is the command name); empty past the end.
    pub fn arg(&self, i: usize) -> &Bytes {
        static EMPTY: Bytes = Bytes::from_static(b"");
        self.parts.get(i).unwrap_or(&EMPTY)
    }

    /// Words from `i` on.
    pub fn args_from(&self, i: usize) -> impl ExactSizeIterator<Item = &Bytes> + '_ {
        (i.min(self.parts.len())..self.parts.len()).map(move |j| self.arg(j))
    }

    /// A request from words, as [`parse`] builds inline commands.
    pub fn from_words(words: Vec<Bytes>) -> Request {
        Request { parts: words.into_iter().collect() }
    }
}

/// What [`scan`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// A whole request of this many bytes, its arguments at these
    /// (offset, length) spans.
    Complete(usize, SmallVec<[(usize, usize); INLINE_ARGS]>),
    /// An empty multibulk (`*0`, `*-1`) of this many bytes: skipped.
    Empty(usize),
    /// Not all there yet; everything buffered so far is acceptable.
    Incomplete,
}

/// Takes the next request off the front of `buf`.
///
/// `Ok(None)`: no whole request is buffered yet (read more). `Ok(Some)`
/// with an empty request: a blank line or `*0`, to be ignored.
///
/// # Errors
///
/// [`ProtocolError`]: the client sent something a server must refuse; the
/// connection answers the error and closes. The buffer is then left as is.
pub fn parse(buf: &mut BytesMut, limits: &FrameLimits) -> Result<Option<Request>, ProtocolError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    if first != b'*' {
        return inline(buf);
    }
    match scan(buf, limits)? {
        Scan::Incomplete => Ok(None),
        Scan::Empty(n) => {
            buf.advance(n);
            Ok(Some(Request::default()))
        }
        Scan::Complete(n, spans) => {
            let whole = buf.split_to(n).freeze();
            Ok(Some(Request {
                parts: spans.into_iter().map(|(at, len)| whole.slice(at..at + len)).collect(),
            }))
        }
    }
}

/// Walks the headers of the multibulk request at the start of `buf`.
fn scan(buf: &[u8], limits: &FrameLimits) -> Result<Scan, ProtocolError> {
    let Some((count, mut pos)) = header_line(buf, 1, ProtocolError::TooBigMultibulkCount)? else {
        return Ok(Scan::Incomplete);
    };
    let count =
        parse_int(count).filter(|&c| c <= ARGS_COUNT_MAX).ok_or(ProtocolError::InvalidMultibulkLength)?;
    if count <= 0 {
        return Ok(Scan::Empty(pos));
    }
    let mut spans = SmallVec::new();
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(Scan::Incomplete),
            Some(b'$') => {}
            Some(&other) => return Err(ProtocolError::ExpectedBulk(char::from(other))),
        }
        let Some((len, after)) = header_line(buf, pos + 1, ProtocolError::TooBigBulkCount)? else {
            return Ok(Scan::Incomplete);
        };
        let len = parse_int(len)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|&l| l <= limits.bulk_bytes_max)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        // Payload and its CRLF. Checked before waiting for the bytes, so a
        // request too big for the buffer is refused at its header.
        spans.push((after, len));
        pos = after + len + 2;
        if pos > limits.request_bytes_max {
            return Err(ProtocolError::RequestTooLarge { limit: limits.request_bytes_max });
        }
        if pos > buf.len() {
            return Ok(Scan::Incomplete);
        }
        if &buf[pos - 2..pos] != b"\r\n" {
            return Err(ProtocolError::BulkNotTerminated);
        }
    }
    Ok(Scan::Complete(pos, spans))
}

/// The header line that starts at `start` (after its type byte): its text
/// and where the next one starts. `None` when its CRLF is not buffered yet;
/// `too_long` when it cannot be a header at all.
fn header_line(
    buf: &[u8],
    start: usize,
    too_long: ProtocolError,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        Some(i) if i > INLINE_BYTES_MAX => Err(too_long),
        // The LF is not buffered yet.
        Some(i) if i + 1 >= rest.len() => Ok(None),
        Some(i) => Ok(Some((&rest[..i], start + i + 2))),
        None if rest.len() > INLINE_BYTES_MAX => Err(too_long),
        None => Ok(None),
    }
}

/// An integer as Redis reads one (`string2ll`): optional `-`, then digits
/// without a leading zero (`0` alone excepted, `-0` refused), no sign
/// alone, no spaces, no overflow. Headers and integer arguments both use it.
pub fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ if digits.len() > 19 => return None,
        _ => {}
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // -9223372036854775808 is in range; its absolute value is not.
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

/// An inline command: one line, words split as Redis's `sdssplitargs`
/// does (spaces; `"..."` with `\n`, `\r`, `\t`, `\b`, `\a`, `\\`, `\"` and
/// `\xHH`; `'...'` with `\'`).
fn inline(buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_BYTES_MAX {
            return Err(ProtocolError::TooBigInline);
        }
        return Ok(None);
    };
    if newline > INLINE_BYTES_MAX {
        return Err(ProtocolError::TooBigInline);
    }
    let line = buf.split_to(newline + 1);
    let text = line[..newline].strip_suffix(b"\r").unwrap_or(&line[..newline]);
    let words = split_args(text).ok_or(ProtocolError::UnbalancedQuotes)?;
    Ok(Some(Request::from_words(words)))
}

fn split_args(mut s: &[u8]) -> Option<Vec<Bytes>> {
    let mut words = Vec::new();
    loop {
        while let Some((c, rest)) = s.split_first() {
            if !c.is_ascii_whitespace() {
                break;
            }
            s = rest;
        }
        if s.is_empty() {
            return Some(words);
        }
        let mut word = Vec::new();
        match s[0] {
            quote @ (b'"' | b'\'') => {
                let mut i = 1;
                loop {
                    match s.get(i..)? {
                        [q, rest @ ..] if *q == quote => {
                            // The closing quote must end the word.
                            if rest.first().is_some_and(|c| !c.is_ascii_whitespace()) {
                                return None;
                            }
                            s = rest;
                            break;
                        }
                        [b'\\', tail @ ..] => match unescape(quote, tail) {
                            Some((byte, used)) => {
                                word.push(byte);
                                i += 1 + used;
                            }
                            None => {
                                word.push(b'\\');
                                i += 1;
                            }
                        },
                        [c, ..] => {
                            word.push(*c);
                            i += 1;
                        }
                        [] => return None,
                    }
                }
            }
            _ => {
                let end = s.iter().position(|c| c.is_ascii_whitespace()).unwrap_or(s.len());
                word.extend_from_slice(&s[..end]);
                s = &s[end..];
            }
        }
        words.push(Bytes::from(word));
    }
}

/// The byte an escape after a backslash stands for inside `quote`s, and
/// how many bytes of `tail` it used; `None`: the backslash is literal.
/// Double quotes take `\xHH` and C escapes; single quotes only `\'`, as in
/// Redis's `sdssplitargs`.
fn unescape(quote: u8, tail: &[u8]) -> Option<(u8, usize)> {
    match (quote, tail) {
        (b'"', [b'x', h, l, ..]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
            let hex = [*h, *l];
            Some((u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?, 3))
        }
        (b'"', [c, ..]) => Some((
            match c {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'b' => 8,
                b'a' => 7,
                other => *other,
            },
            1,
        )),
        (b'\'', [b'\'', ..]) => Some((b'\'', 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits { bulk_bytes_max: 1024, request_bytes_max: 4096 };

    fn words(r: &Request) -> Vec<&[u8]> {
        r.args_from(0).map(|b| &b[..]).collect()
    }

    #[test]
    fn pipelined_requests_come_out_one_by_one_and_partial_ones_wait() {
        let mut buf =
            BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI"[..]);
        assert_eq!(words(&parse(&mut buf, &LIMITS).unwrap().unwrap()), [&b"GET"[..], b"k"]);
        assert_eq!(words(&parse(&mut buf, &LIMITS).unwrap().unwrap()), [&b"PING"[..]]);
        assert!(parse(&mut buf, &LIMITS).unwrap().is_none());
        buf.extend_from_slice(b"NG\r\n");
        assert_eq!(words(&parse(&mut buf, &LIMITS).unwrap().unwrap()), [&b"PING"[..]]);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_headers_are_refused_before_their_payload_arrives() {
        for (input, want) in [
            (&b"*1\r\n$99999999999\r\n"[..], ProtocolError::InvalidBulkLength),
            (b"*1\r\n$1025\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
            (b"*2000000\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n:5\r\n", ProtocolError::ExpectedBulk(':')),
            (b"*1\r\n*1\r\n", ProtocolError::ExpectedBulk('*')),
            // A payload longer than its header said.
            (b"*2\r\n$3\r\nGETx\r\n", ProtocolError::BulkNotTerminated),
            (b"*1\r\n$2\r\nab\n\n", ProtocolError::BulkNotTerminated),
        ] {
            let mut buf = BytesMut::from(input);
            assert_eq!(parse(&mut buf, &LIMITS).unwrap_err(), want, "{input:?}");
        }
        // The second argument's header pushes the request over the limit.
        let mut big = BytesMut::from(&b"*5\r\n"[..]);
        for _ in 0..4 {
            big.extend_from_slice(b"$1000\r\n");
            big.extend_from_slice(&[b'v'; 1000]);
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b"$1000\r\n");
        assert_eq!(parse(&mut big, &LIMITS).unwrap_err(), ProtocolError::RequestTooLarge { limit: 4096 });
        let mut long = BytesMut::from(&b"*"[..]);
        long.extend_from_slice(&[b'1'; INLINE_BYTES_MAX + 2]);
        assert_eq!(parse(&mut long, &LIMITS).unwrap_err(), ProtocolError::TooBigMultibulkCount);
    }

    #[test]
    fn integers_parse_as_strictly_as_redis() {
        for (text, want) in [
            (&b"0"[..], Some(0)),
            (b"42", Some(42)),
            (b"-7", Some(-7)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"01", None),
            (b"-0", None),
            (b"+1", None),
            (b"-", None),
            (b"", None),
            (b" 1", None),
            (b"1x", None),
        ] {
            assert_eq!(parse_int(text), want, "{text:?}");
        }
    }

    #[test]
    fn empty_multibulks_and_blank_lines_are_skipped() {
        let mut buf = BytesMut::from(&b"*0\r\n\r\n*-1\r\n"[..]);
        for _ in 0..3 {
            assert!(parse(&mut buf, &LIMITS).unwrap().unwrap().is_empty());
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn inline_commands_split_like_redis() {
        let mut buf = BytesMut::from(&b"SET k \"a b\\x41\\n\" 'it\\'s'\r\nPING\n"[..]);
        assert_eq!(
            words(&parse(&mut buf, &LIMITS).unwrap().unwrap()),
            [&b"SET"[..], b"k", b"a bA\n", b"it's"]
        );
        assert_eq!(words(&parse(&mut buf, &LIMITS).unwrap().unwrap()), [&b"PING"[..]]);
        // Inside single quotes only \' escapes; inside double, \" does.
        let mut escapes = BytesMut::from(&b"ECHO 'a\\b' \"q\\\"q\"\r\n"[..]);
        assert_eq!(words(&parse(&mut escapes, &LIMITS).unwrap().unwrap()), [&b"ECHO"[..], b"a\\b", b"q\"q"]);
        let mut bad = BytesMut::from(&b"SET \"k v\r\n"[..]);
        assert_eq!(parse(&mut bad, &LIMITS).unwrap_err(), ProtocolError::UnbalancedQuotes);
        let mut huge = BytesMut::from(&vec![b'a'; INLINE_BYTES_MAX + 1][..]);
        assert_eq!(parse(&mut huge, &LIMITS).unwrap_err(), ProtocolError::TooBigInline);
    }

    #[test]
    fn random_bytes_never_panic() {
        // A fixed xorshift stream: deterministic, no RNG crate needed.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut buf = BytesMut::new();
            let len = (x % 40) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"*$\r\n0123-x \"";
                buf.extend_from_slice(&[alphabet[(x % alphabet.len() as u64) as usize]]);
            }
            // Every request parsed consumes bytes, so this ends.
            while let Ok(Some(_)) = parse(&mut buf, &LIMITS) {}
        }
    }
}
