//! `WAITAOF numlocal numreplicas timeout`: Redis's way to wait until a
//! client's writes are on the local disk, the RESP form of
//! `Geocache-Durability: disk`.

use bytes::BytesMut;
use redis_protocol::resp2::types::BorrowedFrame;

use super::{CommandError, Context};
use crate::resp::frame::parse_int;
use crate::resp::reply;

/// Waits (at most `timeout` ms, 0: as long as it takes) until every write
/// this connection made before is flushed to this node's data dir; answers
/// `[1, 0]` once it is, `[0, 0]` at the time-out, as Redis does.
pub(super) async fn waitaof(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    let numlocal = parse_int(cx.arg(1)).filter(|n| *n >= 0).ok_or(CommandError::NotInteger)?;
    let numreplicas = parse_int(cx.arg(2)).filter(|n| *n >= 0).ok_or(CommandError::NotInteger)?;
    let timeout_ms = parse_int(cx.arg(3)).filter(|n| *n >= 0).ok_or(CommandError::NotInteger)?;
    if numreplicas > 0 {
        return Err(CommandError::NotDurable(
            "WAITAOF counts no replicas here: every node applies every write; ask for region or all \
             with Geocache-Durability over HTTP"
                .into(),
        ));
    }
    let disk = cx.shared.state.store.disk();
    let Some(disk) = disk.filter(|_| numlocal > 0) else {
        if numlocal > 0 {
            return Err(CommandError::NotDurable(
                "WAITAOF cannot be used when numlocal is set but this node has no --data-dir".into(),
            ));
        }
        reply::array(out, &[BorrowedFrame::Integer(0), BorrowedFrame::Integer(0)]);
        return Ok(());
    };
    let wait = disk.wait_durable(disk.queued());
    let reached = if timeout_ms == 0 {
        wait.await.is_ok()
    } else {
        matches!(
            tokio::time::timeout(std::time::Duration::from_millis(timeout_ms as u64), wait).await,
            Ok(Ok(()))
        )
    };
    reply::array(out, &[BorrowedFrame::Integer(i64::from(reached)), BorrowedFrame::Integer(0)]);
    Ok(())
}
