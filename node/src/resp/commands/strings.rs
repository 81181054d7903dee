//! String commands: GET, SET, MGET, MSET, INCR, DECR, INCRBY, DECRBY.

use bytes::BytesMut;
use geocache_crdt::CounterError;

use super::{is, value_bytes, Context};
use crate::resp::error::CommandError;
use crate::resp::frame::parse_int;
use crate::resp::reply;
use crate::resp::reply::{Replies, SHARE_FROM_BYTES};
use crate::store::{Condition, Entry, Ttl, ValueRef, Write, WriteError, WriteOp};

/// `GET key`. A large value is queued as the store's own bytes, not
/// copied.
pub(super) fn get(cx: &Context<'_>, out: &mut Replies) -> Result<(), CommandError> {
    match cx.get_named(cx.arg(1)) {
        Some(entry) => value_reply(out, &entry),
        None => reply::null(out),
    }
    Ok(())
}

/// A value as a bulk string: bytes shared with the store, a document as
/// its JSON.
fn value_reply(out: &mut Replies, entry: &Entry) {
    match entry.value() {
        // A small value is copied from the entry as it is: a shared
        // `Bytes` would cost an allocation to save a copy of a few bytes.
        ValueRef::Bytes(b) if b.len() < SHARE_FROM_BYTES => reply::bulk(out, b),
        ValueRef::Bytes(_) => out.shared_bulk(entry.bytes_value()),
        ValueRef::Doc(_) | ValueRef::Counter(_) => reply::bulk(out, &value_bytes(entry)),
    }
}

/// `MGET key [key ...]`. The reply is sized first and refused past
/// `--reply-bytes-max`; within it, large values are queued without a
/// copy, so one command naming a large key many times costs the queue,
/// not the bytes.
pub(super) fn mget(cx: &Context<'_>, out: &mut Replies) -> Result<(), CommandError> {
    let entries: Vec<Option<Entry>> = cx.req.args_from(1).map(|name| cx.get_named(name)).collect();
    // A bulk header and its line ends cost at most 16 bytes; a null 5.
    let reply_bytes: usize =
        entries.iter().map(|e| e.as_ref().map_or(5, |e| e.register_size_bytes() + 16)).sum();
    let max = cx.shared.state.config.reply_bytes_max.as_u64();
    if reply_bytes as u64 > max {
        return Err(CommandError::ReplyTooLarge { bytes: reply_bytes as u64, max });
    }
    out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
    for entry in &entries {
        match entry {
            Some(e) => value_reply(out, e),
            None => reply::null(out),
        }
    }
    Ok(())
}

/// When SET writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    Always,
    IfAbsent,
    IfPresent,
}

/// SET's expiry option, before its number is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExpireArg {
    None,
    KeepTtl,
    /// `EX`/`PX`/`EXAT`/`PXAT`: the word index of the number, ms per unit,
    /// and whether it is absolute.
    Number {
        at: usize,
        unit_ms: i64,
        absolute: bool,
    },
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT unix-s|PXAT unix-ms|KEEPTTL]`.
///
/// Options are checked first and a bad combination is `syntax error`, then
/// the number (`not an integer`, then `invalid expire time`), as Redis does.
pub(super) async fn set(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    let (mut only, mut expire, mut want_old) = (Only::Always, ExpireArg::None, false);
    let mut i = 3;
    while i < cx.req.len() {
        let word = cx.arg(i);
        let number = |unit_ms, absolute| ExpireArg::Number { at: i + 1, unit_ms, absolute };
        let next = if is(word, "NX") && only != Only::IfPresent {
            only = Only::IfAbsent;
            None
        } else if is(word, "XX") && only != Only::IfAbsent {
            only = Only::IfPresent;
            None
        } else if is(word, "GET") {
            want_old = true;
            None
        } else if is(word, "KEEPTTL") && expire == ExpireArg::None {
            expire = ExpireArg::KeepTtl;
            None
        } else if is(word, "EX") {
            Some(number(1_000, false))
        } else if is(word, "PX") {
            Some(number(1, false))
        } else if is(word, "EXAT") {
            Some(number(1_000, true))
        } else if is(word, "PXAT") {
            Some(number(1, true))
        } else {
            return Err(CommandError::Syntax);
        };
        if let Some(n) = next {
            if expire != ExpireArg::None || i + 1 >= cx.req.len() {
                return Err(CommandError::Syntax);
            }
            expire = n;
            i += 1;
        }
        i += 1;
    }
    // `None`: an absolute time already past: the key goes, as in Redis.
    let ttl = match expire {
        ExpireArg::None => Some(cx.put_ttl()),
        ExpireArg::KeepTtl => Some(Ttl::Keep { or_ms: cx.default_ttl_ms() }),
        ExpireArg::Number { at, unit_ms, absolute } => {
            let now = cx.shared.state.store.now_ms();
            let n = parse_int(cx.arg(at)).ok_or(CommandError::NotInteger)?;
            let ms = n.checked_mul(unit_ms).filter(|&ms| ms > 0).ok_or(CommandError::InvalidExpire("set"))?;
            let ms = ms.unsigned_abs();
            if absolute {
                match ms.checked_sub(now) {
                    Some(left) if left > 0 => Some(Ttl::AfterMs(cx.check_ttl_ms(left)?)),
                    _ => None,
                }
            } else {
                // Redis refuses a relative time whose absolute one overflows.
                now.checked_add(ms)
                    .filter(|&t| i64::try_from(t).is_ok())
                    .ok_or(CommandError::InvalidExpire("set"))?;
                Some(Ttl::AfterMs(cx.check_ttl_ms(ms)?))
            }
        }
    };
    let key = cx.write_key(cx.arg(1))?;
    if want_old && cx.get(&key).is_some_and(|r| matches!(r.value(), ValueRef::Doc(_))) {
        return Err(CommandError::WrongType);
    }
    let condition = match only {
        Only::Always => Condition::Always,
        Only::IfAbsent => Condition::IfAbsent,
        Only::IfPresent => Condition::IfPresent,
    };
    let op = match ttl {
        // The store copies the value into its own entry: no copy here.
        Some(_) => WriteOp::Put { value: cx.arg(2).clone(), content_type: None },
        None => WriteOp::Delete,
    };
    let write = Write { key, op, ttl: ttl.unwrap_or(Ttl::Never), condition };
    match cx.write(write).await? {
        Ok(outcome) if want_old => match outcome.previous {
            Some(r) => reply::bulk(out, &value_bytes(&r)),
            None => reply::null(out),
        },
        Ok(_) => reply::ok(out),
        // NX or XX did not hold: nil, or with GET the value that stopped it.
        Err(WriteError::PreconditionFailed { .. }) => match cx.get_named(cx.arg(1)).filter(|_| want_old) {
            Some(r) => reply::bulk(out, &value_bytes(&r)),
            None => reply::null(out),
        },
        Err(WriteError::Doc(_) | WriteError::NotCounter) => return Err(CommandError::WrongType),
        Err(WriteError::NotInteger) => return Err(CommandError::NotInteger),
        Err(WriteError::Counter(e)) => return Err(CommandError::CounterFull(e)),
    }
    Ok(())
}

/// `MSET key value [key value ...]`: each pair is its own write (not
/// atomic across keys); every key is checked before any is written.
pub(super) async fn mset(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    if cx.req.len().is_multiple_of(2) {
        return Err(CommandError::WrongArity("mset"));
    }
    let keys =
        (1..cx.req.len()).step_by(2).map(|i| cx.write_key(cx.arg(i))).collect::<Result<Vec<_>, _>>()?;
    let ttl = cx.put_ttl();
    for (key, i) in keys.into_iter().zip((2..cx.req.len()).step_by(2)) {
        let op = WriteOp::Put { value: cx.arg(i).clone(), content_type: None };
        // `Always` cannot fail.
        let _ = cx.write(Write { key, op, ttl, condition: Condition::Always }).await?;
    }
    reply::ok(out);
    Ok(())
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`: an increment of the key's counter
/// (`WriteOp::Add`), so increments made concurrently in every region all
/// count; no read-modify-write and no retry. A string holding an integer
/// becomes a counter starting there. The expiry is kept. `by` is `None`
/// when the increment is not an integer.
pub(super) async fn incr_by(
    cx: &Context<'_>,
    out: &mut BytesMut,
    by: Option<i64>,
) -> Result<(), CommandError> {
    let by = by.ok_or(CommandError::NotInteger)?;
    let key = cx.write_key(cx.arg(1))?;
    let write =
        Write { key, op: WriteOp::Add(by), ttl: Ttl::Keep { or_ms: None }, condition: Condition::Always };
    match cx.write(write).await? {
        Ok(outcome) => {
            let value = crate::write::integer_value(&outcome.entry).unwrap_or(0);
            reply::int(out, i64::try_from(value).map_err(|_| CommandError::Overflow)?);
            Ok(())
        }
        Err(WriteError::Counter(CounterError::Overflow)) => Err(CommandError::Overflow),
        Err(WriteError::Counter(e)) => Err(CommandError::CounterFull(e)),
        Err(WriteError::NotInteger) => Err(CommandError::NotInteger),
        Err(WriteError::NotCounter | WriteError::Doc(_)) => Err(CommandError::WrongType),
        // `Always` holds.
        Err(WriteError::PreconditionFailed { .. }) => Err(CommandError::Contention(1)),
    }
}
