//! Key commands: DEL, EXISTS, EXPIRE, PEXPIRE, TTL, PTTL, PERSIST, DBSIZE.

use bytes::{Bytes, BytesMut};
use geocache_crdt::Key;
use serde_json::json;

use super::{is, Context, CAS_ATTEMPTS_MAX};
use crate::resp::error::CommandError;
use crate::resp::frame::parse_int;
use crate::resp::reply;
use crate::store::{Condition, Entry, Ttl, ValueRef, Write, WriteError, WriteOp};

/// `DEL key [key ...]`: the number of keys that held a value. As HTTP's
/// `DELETE`, a tombstone is written even for a key not visible here, so the
/// delete still wins over older writes on their way from other regions.
pub(super) async fn del(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    let keys = cx.req.args_from(1).map(|name| cx.write_key(name)).collect::<Result<Vec<_>, _>>()?;
    let mut deleted = 0;
    for key in keys {
        let write = Write { key, op: WriteOp::Delete, ttl: Ttl::Never, condition: Condition::Always };
        if cx.write(write).await?.is_ok_and(|o| o.previous.is_some()) {
            deleted += 1;
        }
    }
    reply::int(out, deleted);
    Ok(())
}

/// `EXISTS key [key ...]`: how many of the keys hold a value, a key named
/// twice counting twice.
pub(super) fn exists(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    let found = cx.req.args_from(1).filter(|name| cx.get_named(name).is_some()).count();
    reply::int(out, found as i64);
    Ok(())
}

/// `TTL key` (`unit_ms` 1000) and `PTTL key` (1): -2 when missing, -1
/// without expiry, else what is left, seconds rounded as Redis does.
pub(super) fn ttl(cx: &Context<'_>, out: &mut BytesMut, unit_ms: u64) -> Result<(), CommandError> {
    let answer = match cx.get_named(cx.arg(1)) {
        None => -2,
        Some(r) => match r.expires_at_ms() {
            None => -1,
            Some(at) => {
                let left = at.saturating_sub(cx.shared.state.store.now_ms());
                i64::try_from((left + unit_ms / 2) / unit_ms).unwrap_or(i64::MAX)
            }
        },
    };
    reply::int(out, answer);
    Ok(())
}

/// `DBSIZE`: the keys of the namespace visible now (a walk of the store,
/// not Redis's O(1) counter: the store's own count includes tombstones,
/// expired entries and other namespaces).
pub(super) fn dbsize(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    let n = cx.shared.state.store.visible_entry_count(cx.namespace.as_arc());
    reply::int(out, i64::try_from(n).unwrap_or(i64::MAX));
    Ok(())
}

/// What a read-modify-write of the expiry decided for the register read.
enum Decision {
    /// Change nothing; answer this.
    Answer(i64),
    /// Rewrite the value with this expiry; answer 1.
    Set(Ttl),
    /// Delete the key (an expiry already past); answer 1.
    Delete,
}

/// Reads the key, lets `decide` choose from the register and the time,
/// then writes only if the register is still the one read (`IfMatch` on its
/// version vector), else reads again. 0 for a missing key.
async fn rewrite_expiry(
    cx: &Context<'_>,
    key: &Key,
    decide: impl Fn(&Entry, u64) -> Decision,
) -> Result<i64, CommandError> {
    for _ in 0..CAS_ATTEMPTS_MAX {
        let Some(r) = cx.get(key) else { return Ok(0) };
        let op = match decide(&r, cx.shared.state.store.now_ms()) {
            Decision::Answer(n) => return Ok(n),
            Decision::Delete => (WriteOp::Delete, Ttl::Never),
            Decision::Set(ttl) => match r.value() {
                // The same value again, with the new expiry.
                ValueRef::Bytes(_) => (
                    WriteOp::Put {
                        value: r.bytes_value(),
                        content_type: r.content_type().map(str::to_owned),
                    },
                    ttl,
                ),
                // An empty merge patch keeps the document and its epoch;
                // adding nothing keeps the counter and its epoch, so
                // increments made elsewhere meanwhile still join.
                ValueRef::Doc(_) => (WriteOp::Patch(json!({})), ttl),
                ValueRef::Counter(_) => (WriteOp::Add(0), ttl),
            },
        };
        let write = Write { key: key.clone(), op: op.0, ttl: op.1, condition: Condition::IfMatch(r.vv()) };
        match cx.write(write).await? {
            Ok(_) => return Ok(1),
            Err(WriteError::PreconditionFailed { .. }) => tokio::task::yield_now().await,
            Err(WriteError::Doc(_) | WriteError::NotCounter) => return Err(CommandError::WrongType),
            Err(WriteError::NotInteger) => return Err(CommandError::NotInteger),
            Err(WriteError::Counter(e)) => return Err(CommandError::CounterFull(e)),
        }
    }
    Err(CommandError::Contention(CAS_ATTEMPTS_MAX))
}

/// `EXPIRE key seconds [NX|XX|GT|LT]` (`unit_ms` 1000) and `PEXPIRE key ms
/// [...]` (1). A time not in the future deletes the key, as in Redis.
pub(super) async fn expire(cx: &Context<'_>, out: &mut BytesMut, unit_ms: i64) -> Result<(), CommandError> {
    let command = if unit_ms == 1 { "pexpire" } else { "expire" };
    let n = parse_int(cx.arg(2)).ok_or(CommandError::NotInteger)?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for word in cx.req.args_from(3) {
        match () {
            () if is(word, "NX") => nx = true,
            () if is(word, "XX") => xx = true,
            () if is(word, "GT") => gt = true,
            () if is(word, "LT") => lt = true,
            () => {
                return Err(CommandError::Unsupported(String::from_utf8_lossy(word).into_owned()));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::ExpireOptions(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(CommandError::ExpireOptions("GT and LT options at the same time are not compatible"));
    }
    let ms = n.checked_mul(unit_ms).ok_or(CommandError::InvalidExpire(command))?;
    let now = cx.shared.state.store.now_ms();
    let now_signed = i64::try_from(now).unwrap_or(i64::MAX);
    let at = now_signed.checked_add(ms).ok_or(CommandError::InvalidExpire(command))?;
    let ttl_ms = if at > now_signed { Some(cx.check_ttl_ms(ms.unsigned_abs())?) } else { None };
    let Some(key) = cx.read_key(cx.arg(1)) else {
        reply::int(out, 0);
        return Ok(());
    };
    let key = Key::new(key.namespace, Bytes::copy_from_slice(&key.name));
    let answer = rewrite_expiry(cx, &key, |r, now| {
        let current = r.expires_at_ms();
        let new_at = now.saturating_add(ttl_ms.unwrap_or(0));
        let allowed = match current {
            _ if nx => current.is_none(),
            None if xx || gt => false,
            None => true,
            Some(c) => !((gt && new_at <= c) || (lt && new_at >= c)),
        };
        match ttl_ms {
            _ if !allowed => Decision::Answer(0),
            Some(ms) => Decision::Set(Ttl::AfterMs(ms)),
            None => Decision::Delete,
        }
    })
    .await?;
    reply::int(out, answer);
    Ok(())
}

/// `PERSIST key`: 1 when an expiry was removed, 0 when the key is missing
/// or has none.
pub(super) async fn persist(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    let Some(key) = cx.read_key(cx.arg(1)) else {
        reply::int(out, 0);
        return Ok(());
    };
    let key = Key::new(key.namespace, Bytes::copy_from_slice(&key.name));
    let answer = rewrite_expiry(cx, &key, |r, _| match r.expires_at_ms() {
        None => Decision::Answer(0),
        Some(_) => Decision::Set(Ttl::Never),
    })
    .await?;
    reply::int(out, answer);
    Ok(())
}
