//! Connection and server commands: PING, INFO, COMMAND, SELECT, CLIENT,
//! CONFIG, HELLO, AUTH. Enough of each for `redis-cli`, `redis-benchmark` and
//! the client libraries, which send some of them when they connect.

use bytes::BytesMut;
use redis_protocol::resp2::types::BorrowedFrame;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{is, Cmd, Context, Session};
use crate::resp::error::CommandError;
use crate::resp::frame::parse_int;
use crate::resp::reply;

/// The Redis version this port answers to: tools check it to know which
/// commands exist, and everything they use here behaves as in 7.2.
const REDIS_VERSION: &str = "7.2.0";

/// `PING [message]`.
pub(super) fn ping(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    match cx.req.len() {
        1 => reply::simple(out, b"PONG"),
        2 => reply::bulk(out, cx.arg(1)),
        _ => return Err(CommandError::WrongArity("ping")),
    }
    Ok(())
}

/// `SELECT index`: only database 0 exists (the namespace is the database).
pub(super) fn select(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    match parse_int(cx.arg(1)) {
        Some(0) => reply::ok(out),
        Some(_) => return Err(CommandError::DbOutOfRange),
        None => return Err(CommandError::NotInteger),
    }
    Ok(())
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`, `COMMAND INFO`, `COMMAND
/// LIST`. `redis-cli` asks for the docs at start only for its hints; an
/// empty answer is fine for it.
pub(super) fn command(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    let sub = cx.arg(1);
    if cx.req.len() == 1 || is(sub, "DOCS") || is(sub, "INFO") {
        reply::array(out, &[]);
    } else if is(sub, "COUNT") {
        reply::int(out, Cmd::ALL.len() as i64);
    } else if is(sub, "LIST") {
        let names: Vec<_> = Cmd::ALL.iter().map(|c| BorrowedFrame::BulkString(c.name().as_bytes())).collect();
        reply::array(out, &names);
    } else {
        return Err(unknown_sub("COMMAND", sub));
    }
    Ok(())
}

/// `CONFIG GET parameter [...]`: the two `redis-benchmark` reads at start
/// (`save`, `appendonly`), with the values that are true here (no
/// snapshots; `appendonly` is whether the node has a data dir, which logs
/// every write as an append-only file does); every other parameter is
/// absent.
pub(super) fn config(cx: &Context<'_>, out: &mut BytesMut) -> Result<(), CommandError> {
    if !is(cx.arg(1), "GET") {
        return Err(unknown_sub("CONFIG", cx.arg(1)));
    }
    if cx.req.len() < 3 {
        return Err(CommandError::WrongArity("config|get"));
    }
    let mut pairs = Vec::new();
    for name in cx.req.args_from(2) {
        let value: &[u8] = if is(name, "save") {
            b""
        } else if is(name, "appendonly") {
            if cx.shared.state.store.disk().is_some() {
                b"yes"
            } else {
                b"no"
            }
        } else {
            continue;
        };
        pairs.push(BorrowedFrame::BulkString(name));
        pairs.push(BorrowedFrame::BulkString(value));
    }
    reply::array(out, &pairs);
    Ok(())
}

/// `CLIENT SETNAME|GETNAME|SETINFO|ID`. Client libraries send `SETINFO`
/// when they connect; it is accepted and ignored.
pub(super) fn client(
    cx: &Context<'_>,
    session: &mut Session,
    out: &mut BytesMut,
) -> Result<(), CommandError> {
    let (sub, words) = (cx.arg(1), cx.req.len());
    if is(sub, "SETNAME") {
        if words != 3 {
            return Err(CommandError::WrongArity("client|setname"));
        }
        session.name = Some(valid_name(cx.arg(2))?.clone()).filter(|n| !n.is_empty());
        reply::ok(out);
    } else if is(sub, "GETNAME") {
        if words != 2 {
            return Err(CommandError::WrongArity("client|getname"));
        }
        match &session.name {
            Some(n) => reply::bulk(out, n),
            None => reply::null(out),
        }
    } else if is(sub, "SETINFO") {
        if words != 4 {
            return Err(CommandError::WrongArity("client|setinfo"));
        }
        reply::ok(out);
    } else if is(sub, "ID") {
        reply::int(out, i64::try_from(session.id).unwrap_or(i64::MAX));
    } else {
        return Err(unknown_sub("CLIENT", sub));
    }
    Ok(())
}

/// A client name may not hold spaces or control characters (Redis's rule).
fn valid_name(name: &bytes::Bytes) -> Result<&bytes::Bytes, CommandError> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(name)
    } else {
        Err(CommandError::BadClientName)
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: RESP2 only; 3 is
/// `-NOPROTO`, so a client falls back to RESP2. `AUTH` authenticates as
/// the `AUTH` command does; on a node without users it is ignored, as
/// Redis's default user without a password takes any.
pub(super) fn hello(cx: &Context<'_>, session: &mut Session, out: &mut BytesMut) -> Result<(), CommandError> {
    let mut i = 1;
    if cx.req.len() > 1 {
        match parse_int(cx.arg(1)) {
            Some(2) => {}
            Some(_) => return Err(CommandError::NoProto),
            None => return Err(CommandError::ProtocolVersion),
        }
        i = 2;
    }
    let mut name = None;
    let mut authenticated = false;
    while i < cx.req.len() {
        let left = cx.req.len() - i - 1;
        if is(cx.arg(i), "AUTH") && left >= 2 {
            if cx.shared.state.config.access.is_on() {
                authenticate(cx, session, cx.arg(i + 1), cx.arg(i + 2))?;
                authenticated = true;
            }
            i += 3;
        } else if is(cx.arg(i), "SETNAME") && left >= 1 {
            name = Some(valid_name(cx.arg(i + 1))?.clone());
            i += 2;
        } else {
            return Err(CommandError::Syntax);
        }
    }
    if !authenticated {
        // What any connection command needs; Redis words the refusal
        // differently for HELLO.
        super::check_access(cx.shared, session, Cmd::Ping).map_err(|e| match e {
            CommandError::NoAuth => CommandError::HelloNoAuth,
            other => other,
        })?;
    }
    if let Some(n) = name {
        session.name = Some(n).filter(|n| !n.is_empty());
    }
    let id = i64::try_from(session.id).unwrap_or(i64::MAX);
    reply::array(
        out,
        &[
            BorrowedFrame::BulkString(b"server"),
            BorrowedFrame::BulkString(b"redis"),
            BorrowedFrame::BulkString(b"version"),
            BorrowedFrame::BulkString(REDIS_VERSION.as_bytes()),
            BorrowedFrame::BulkString(b"proto"),
            BorrowedFrame::Integer(2),
            BorrowedFrame::BulkString(b"id"),
            BorrowedFrame::Integer(id),
            BorrowedFrame::BulkString(b"mode"),
            BorrowedFrame::BulkString(b"standalone"),
            BorrowedFrame::BulkString(b"role"),
            BorrowedFrame::BulkString(b"master"),
            BorrowedFrame::BulkString(b"modules"),
            BorrowedFrame::Array(&[]),
        ],
    );
    Ok(())
}

/// `AUTH [user] secret`: `AUTH secret` is the user `default`'s, as in
/// Redis. The connection then acts in the user's first namespace.
pub(super) fn auth(cx: &Context<'_>, session: &mut Session, out: &mut BytesMut) -> Result<(), CommandError> {
    let (user, secret) = match cx.req.len() {
        2 => (&b"default"[..], cx.arg(1)),
        3 => (&cx.arg(1)[..], cx.arg(2)),
        _ => return Err(CommandError::Syntax),
    };
    if !cx.shared.state.config.access.is_on() {
        return Err(CommandError::AuthNotConfigured);
    }
    authenticate(cx, session, user, secret)?;
    reply::ok(out);
    Ok(())
}

/// Checks `user`'s `secret` and binds the session to the user; a failure
/// leaves the session as it was and is counted.
fn authenticate(
    cx: &Context<'_>,
    session: &mut Session,
    user: &[u8],
    secret: &[u8],
) -> Result<(), CommandError> {
    let state = &cx.shared.state;
    let Some(found) = state.config.access.by_name(user, secret) else {
        state.metrics.auth_failures.inc();
        return Err(CommandError::WrongPass);
    };
    session.namespace = found.resp_namespace(&state.config.resp_namespace).own_copy();
    session.user = Some(found);
    Ok(())
}

/// The sections `INFO` knows, in the order it prints them.
const SECTIONS: [&str; 6] = ["server", "clients", "stats", "replication", "keyspace", "geocache"];

/// `INFO [section ...]`: `server`, `clients`, `stats`, `replication`,
/// `keyspace` and `geocache`; no argument, `default`, `all` or
/// `everything` give them all. An unknown section gives nothing, as in
/// Redis.
///
/// Without `node_wide` (auth on, a user without the admin scope) the
/// figures of the whole node are left out: `clients` and `stats` come
/// back empty and `server` keeps only the versions client libraries read,
/// so one tenant learns nothing of another's traffic; `keyspace` is the
/// user's own namespace either way.
pub(super) fn info(cx: &Context<'_>, out: &mut BytesMut, node_wide: bool) -> Result<(), CommandError> {
    let wanted = |section: &str| {
        cx.req.len() == 1
            || cx
                .req
                .args_from(1)
                .any(|a| is(a, section) || is(a, "all") || is(a, "default") || is(a, "everything"))
    };
    let shared = cx.shared;
    let state = &shared.state;
    let stats = state.store.stats();
    let uptime_secs = state.started.elapsed().as_secs();
    let mut text = String::with_capacity(1024);
    let node_sections = ["clients", "stats"];
    for section in SECTIONS.iter().filter(|s| wanted(s) && (node_wide || !node_sections.contains(s))) {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        // Writing to a String cannot fail.
        let _ = match *section {
            "server" => {
                let _ = write!(
                    text,
                    "# Server\r\nredis_version:{REDIS_VERSION}\r\ngeocache_version:{}\r\nredis_mode:standalone\r\n",
                    env!("CARGO_PKG_VERSION"),
                );
                // The process itself: for the admin scope only.
                if node_wide {
                    let _ = write!(
                        text,
                        "os:{}\r\narch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime_secs}\r\n\
                         uptime_in_days:{}\r\n",
                        std::env::consts::OS,
                        usize::BITS,
                        std::process::id(),
                        shared.addr.port(),
                        uptime_secs / 86_400,
                    );
                }
                Ok(())
            }
            "clients" => write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n",
                shared.connected(),
                shared.connections_max()
            ),
            "stats" => write!(
                text,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 rejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\n\
                 keyspace_misses:{}\r\n",
                shared.connections_total.load(Ordering::Relaxed),
                shared.commands_total(),
                shared.connections_rejected.load(Ordering::Relaxed),
                stats.expirations.get(),
                stats.evictions.get(),
                stats.hits.get(),
                stats.misses.get(),
            ),
            // Every node takes writes and replicates them to every other:
            // to a Redis client each is a master without replicas.
            "replication" => {
                write!(text, "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n")
            }
            "keyspace" => {
                let keys = state.store.visible_entry_count(cx.namespace.as_arc());
                write!(text, "# Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n")
            }
            _ => write!(
                text,
                "# Geocache\r\nnode_id:{}\r\nregion:{}\r\nnamespace:{}\r\nreplicating:{}\r\n",
                geocache_crdt::NodeId(state.config.node_id),
                state.config.region,
                cx.namespace,
                if state.cluster.is_some() { 1 } else { 0 },
            ),
        };
    }
    reply::bulk(out, text.as_bytes());
    Ok(())
}

fn unknown_sub(command: &'static str, sub: &[u8]) -> CommandError {
    CommandError::UnknownSubcommand {
        command,
        sub: String::from_utf8_lossy(&sub[..sub.len().min(128)]).into_owned(),
    }
}
