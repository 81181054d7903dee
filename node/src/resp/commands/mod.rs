//! The command table: names, arity, dispatch, and what commands share
//! (keys in the namespace, writes that replicate, compare-and-set loops).

mod durability;
mod keys;
mod server;
mod strings;

use bytes::Bytes;
use geocache_crdt::Key;
use std::borrow::Cow;
use std::sync::Arc;

use super::error::CommandError;
use super::frame::{parse_int, Request};
use super::reply::{self, Replies};
use super::Shared;
use crate::auth::{Decision, Need, Scope, User};
use crate::cluster::Durability;
use crate::namespace::Namespace;
use crate::store::{Entry, Ttl, ValueRef, Write, WriteError, WriteOutcome};
use crate::write_path::{TtlPolicy, WritePathError};

/// How many times a read-modify-write (`INCR`, `EXPIRE`, ...) retries when
/// another write to the key came between its read and its write. Each
/// retry means another client's write succeeded, so this only runs out
/// under heavy contention on one key; the command then fails and changes
/// nothing.
pub const CAS_ATTEMPTS_MAX: usize = 1_000;

/// Keys one command fills at once at a sidecar (`MGET` of many).
pub const FILL_KEYS_PER_COMMAND_MAX: usize = 64;

/// What the connection does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Flush the replies and close (`QUIT`).
    Close,
}

/// One client's state.
#[derive(Debug)]
pub struct Session {
    /// `CLIENT ID`.
    pub id: u64,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// Who authenticated (`AUTH`, `HELLO ... AUTH`); `None`: anonymous.
    pub user: Option<Arc<User>>,
    /// The namespace of every key: the user's first, else
    /// `--resp-namespace`.
    pub namespace: Namespace,
}

impl Session {
    /// A fresh connection's session: anonymous, in `--resp-namespace`.
    pub fn new(id: u64, namespace: &Namespace) -> Session {
        Session { id, name: None, user: None, namespace: namespace.own_copy() }
    }
}

/// What a command needs of the connection's credentials.
enum CommandNeed {
    /// Nothing: it may authenticate or leave.
    Nothing,
    /// Some access (a user, or a namespace open to anonymous clients).
    Connection,
    /// This scope in the session's namespace.
    Scope(Scope),
}

impl Cmd {
    fn need(self) -> CommandNeed {
        match self {
            Cmd::Auth | Cmd::Hello | Cmd::Quit => CommandNeed::Nothing,
            Cmd::Get | Cmd::Mget | Cmd::Exists | Cmd::Ttl | Cmd::Pttl | Cmd::Dbsize => {
                CommandNeed::Scope(Scope::Read)
            }
            Cmd::Set
            | Cmd::Mset
            | Cmd::Del
            | Cmd::Expire
            | Cmd::Pexpire
            | Cmd::Persist
            | Cmd::Incr
            | Cmd::Decr
            | Cmd::Incrby
            | Cmd::Decrby => CommandNeed::Scope(Scope::Write),
            Cmd::Ping
            | Cmd::Echo
            | Cmd::Info
            | Cmd::Command
            | Cmd::Select
            | Cmd::Client
            | Cmd::Config
            | Cmd::Waitaof => CommandNeed::Connection,
        }
    }
}

/// Whether the session may run `cmd`: the error Redis would answer if not.
pub(super) fn check_access(shared: &Shared, session: &Session, cmd: Cmd) -> Result<(), CommandError> {
    let need = match cmd.need() {
        CommandNeed::Nothing => return Ok(()),
        CommandNeed::Connection => Need::Session(&session.namespace),
        // Data waits for the data dir, as Redis answers while it loads.
        CommandNeed::Scope(_) if shared.state.loading.load(std::sync::atomic::Ordering::Acquire) => {
            return Err(CommandError::Loading)
        }
        CommandNeed::Scope(scope) => Need::In(&session.namespace, scope),
    };
    match shared.state.config.access.decide(session.user.as_deref(), need) {
        Decision::Allowed => Ok(()),
        Decision::Unauthenticated => Err(CommandError::NoAuth),
        Decision::Forbidden => Err(CommandError::NoPerm {
            user: session.user.as_ref().map_or_else(|| "default".to_string(), |u| u.name.clone()),
            command: cmd.name(),
        }),
    }
}

macro_rules! commands {
    ($($variant:ident $name:literal $arity:literal,)*) => {
        /// A command this port knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Cmd {
            $(#[doc = concat!("`", $name, "`")] $variant,)*
        }

        impl Cmd {
            /// Every command, in table order (`Cmd as usize` indexes it).
            pub const ALL: &'static [Cmd] = &[$(Cmd::$variant,)*];

            /// The name, lower case, as Redis names it in errors.
            pub fn name(self) -> &'static str {
                match self { $(Cmd::$variant => $name,)* }
            }

            /// Redis's arity: the number of words with the name, or at
            /// least `-arity` when negative.
            fn arity(self) -> i32 {
                match self { $(Cmd::$variant => $arity,)* }
            }

            /// The command named `name`, in any case.
            pub fn lookup(name: &[u8]) -> Option<Cmd> {
                // Lower-case into a stack buffer: no allocation per command.
                let mut lower = [0u8; 8];
                let slot = lower.get_mut(..name.len())?;
                slot.copy_from_slice(name);
                slot.make_ascii_lowercase();
                match &*slot {
                    $(n if n == $name.as_bytes() => Some(Cmd::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

commands! {
    Get "get" 2,
    Set "set" -3,
    Ping "ping" -1,
    Echo "echo" 2,
    Del "del" -2,
    Exists "exists" -2,
    Expire "expire" -3,
    Pexpire "pexpire" -3,
    Ttl "ttl" 2,
    Pttl "pttl" 2,
    Persist "persist" 2,
    Mget "mget" -2,
    Mset "mset" -3,
    Incr "incr" 2,
    Decr "decr" 2,
    Incrby "incrby" 3,
    Decrby "decrby" 3,
    Dbsize "dbsize" 1,
    Info "info" -1,
    Command "command" -1,
    Select "select" 2,
    Client "client" -2,
    Config "config" -2,
    Hello "hello" -1,
    Quit "quit" -1,
    Auth "auth" -2,
    Waitaof "waitaof" 4,
}

/// Runs one request and appends its reply to `out`.
pub async fn execute(shared: &Shared, session: &mut Session, req: &Request, out: &mut Replies) -> Flow {
    let Some(cmd) = Cmd::lookup(req.arg(0)) else {
        reply::error(out, &unknown_command(req).to_string());
        return Flow::Continue;
    };
    shared.count(cmd);
    let arity = cmd.arity();
    let words = req.len();
    let arity_ok = if arity > 0 { words == arity as usize } else { words >= arity.unsigned_abs() as usize };
    if !arity_ok {
        reply::error(out, &CommandError::WrongArity(cmd.name()).to_string());
        return Flow::Continue;
    }
    if let Err(e) = check_access(shared, session, cmd) {
        reply::error(out, &e.to_string());
        return Flow::Continue;
    }
    // A copy of the name (an `Arc`): AUTH and HELLO change the session.
    let namespace = session.namespace.clone();
    let cx = Context { shared, req, namespace: &namespace };
    if shared.state.is_sidecar() {
        cx.fill_read_keys(cmd).await;
    }
    let result = match cmd {
        Cmd::Get => strings::get(&cx, out),
        Cmd::Set => strings::set(&cx, out).await,
        Cmd::Mget => strings::mget(&cx, out),
        Cmd::Mset => strings::mset(&cx, out).await,
        Cmd::Incr => strings::incr_by(&cx, out, Some(1)).await,
        Cmd::Decr => strings::incr_by(&cx, out, Some(-1)).await,
        Cmd::Incrby => strings::incr_by(&cx, out, parse_int(req.arg(2))).await,
        Cmd::Decrby => match parse_int(req.arg(2)) {
            Some(i64::MIN) => Err(CommandError::DecrementOverflow),
            by => strings::incr_by(&cx, out, by.map(|b| -b)).await,
        },
        Cmd::Del => keys::del(&cx, out).await,
        Cmd::Exists => keys::exists(&cx, out),
        Cmd::Expire => keys::expire(&cx, out, 1_000).await,
        Cmd::Pexpire => keys::expire(&cx, out, 1).await,
        Cmd::Ttl => keys::ttl(&cx, out, 1_000),
        Cmd::Pttl => keys::ttl(&cx, out, 1),
        Cmd::Persist => keys::persist(&cx, out).await,
        Cmd::Dbsize => keys::dbsize(&cx, out),
        Cmd::Ping => server::ping(&cx, out),
        Cmd::Echo => {
            reply::bulk(out, req.arg(1));
            Ok(())
        }
        Cmd::Info => {
            let node_wide = shared.state.config.access.decide(session.user.as_deref(), Need::Admin);
            server::info(&cx, out, node_wide == Decision::Allowed)
        }
        Cmd::Command => server::command(&cx, out),
        Cmd::Select => server::select(&cx, out),
        Cmd::Client => server::client(&cx, session, out),
        Cmd::Config => server::config(&cx, out),
        Cmd::Hello => server::hello(&cx, session, out),
        Cmd::Auth => server::auth(&cx, session, out),
        Cmd::Waitaof => durability::waitaof(&cx, out).await,
        Cmd::Quit => {
            reply::ok(out);
            return Flow::Close;
        }
    };
    if let Err(e) = result {
        reply::error(out, &e.to_string());
    }
    Flow::Continue
}

/// Redis's "unknown command" error: the name and the first arguments,
/// each quoted, 128 bytes at most.
fn unknown_command(req: &Request) -> CommandError {
    let name = String::from_utf8_lossy(&req.arg(0)[..req.arg(0).len().min(128)]).into_owned();
    let mut args = String::new();
    for arg in req.args_from(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        args.push('\'');
        args.push_str(&String::from_utf8_lossy(&arg[..arg.len().min(room)]));
        args.push_str("' ");
    }
    CommandError::UnknownCommand { name, args }
}

/// What a command runs with.
struct Context<'a> {
    shared: &'a Shared,
    req: &'a Request,
    /// The session's namespace.
    namespace: &'a Namespace,
}

impl Context<'_> {
    /// Word `i` of the request.
    fn arg(&self, i: usize) -> &Bytes {
        self.req.arg(i)
    }

    /// The key named by `name` for a read: shares the request's bytes.
    /// A key over the limit cannot be stored, so reading it misses.
    fn read_key(&self, name: &Bytes) -> Option<Key> {
        self.may_be_key(name).then(|| Key::new(self.namespace.as_arc().clone(), name.clone()))
    }

    /// Whether `name` is short enough to name a key: a longer one names
    /// none, so a read of it misses.
    fn may_be_key(&self, name: &[u8]) -> bool {
        name.len() as u64 <= self.shared.state.config.key_bytes_max.as_u64()
    }

    /// The key named by `name` for a write: its own copy, so the store does
    /// not pin the read buffer the request arrived in.
    fn write_key(&self, name: &[u8]) -> Result<Key, CommandError> {
        let max = self.shared.state.config.key_bytes_max.as_u64();
        if name.len() as u64 > max {
            return Err(CommandError::KeyTooLarge { len: name.len(), max });
        }
        Ok(Key::new(self.namespace.as_arc().clone(), Bytes::copy_from_slice(name)))
    }

    /// At a sidecar, fills the keys `cmd` reads that are not held, from a
    /// full node of the region (at most [`FILL_KEYS_PER_COMMAND_MAX`] at
    /// once; the rest read as held, which may be a miss).
    async fn fill_read_keys(&self, cmd: Cmd) {
        let names: Vec<&Bytes> = match cmd {
            Cmd::Get
            | Cmd::Set
            | Cmd::Ttl
            | Cmd::Pttl
            | Cmd::Persist
            | Cmd::Expire
            | Cmd::Pexpire
            | Cmd::Incr
            | Cmd::Decr
            | Cmd::Incrby
            | Cmd::Decrby => vec![self.arg(1)],
            Cmd::Mget | Cmd::Exists => self.req.args_from(1).take(FILL_KEYS_PER_COMMAND_MAX).collect(),
            _ => return,
        };
        let state = &self.shared.state;
        let missing: Vec<Key> =
            names.into_iter().filter_map(|n| self.read_key(n)).filter(|k| !state.store.holds(k)).collect();
        match (missing.len(), &state.cluster) {
            (0, _) | (_, None) => {}
            (1, Some(_)) => state.fill_if_missing(&missing[0]).await,
            (_, Some(cluster)) => {
                let mut fills = tokio::task::JoinSet::new();
                for key in missing {
                    let cluster = cluster.clone();
                    fills.spawn(async move { cluster.fill(key).await });
                }
                while fills.join_next().await.is_some() {}
            }
        }
    }

    /// The visible register of a key, if any.
    fn get(&self, key: &Key) -> Option<Entry> {
        self.shared.state.store.get(key)
    }

    /// The value of the key `name` names, if it may be a key and one is
    /// visible: [`read_key`](Self::read_key) then [`get`](Self::get),
    /// without building the key.
    fn get_named(&self, name: &[u8]) -> Option<Entry> {
        self.may_be_key(name).then(|| self.shared.state.store.get_in(self.namespace.as_str(), name)).flatten()
    }

    /// A write through the node's one write path, durability `local` (as
    /// Redis acknowledges a write). The inner result is the store's
    /// verdict; the outer error a durability not reached.
    async fn write(&self, write: Write) -> Result<Result<WriteOutcome, WriteError>, CommandError> {
        match self.shared.state.write(write, Durability::Local).await {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(WritePathError::Refused(e)) => Ok(Err(e)),
            Err(e @ WritePathError::DurabilityTimeout { .. }) => Err(CommandError::NotDurable(e.to_string())),
            Err(
                e @ (WritePathError::ReplicationStopped(_)
                | WritePathError::DiskFailed(_)
                | WritePathError::NoDataDir),
            ) => Err(CommandError::NotDurable(e.to_string())),
            Err(e @ (WritePathError::StrongUnavailable(_) | WritePathError::StrongUnknown)) => {
                Err(CommandError::TryAgain(e.to_string()))
            }
            Err(e @ (WritePathError::StrongUnsupported(_) | WritePathError::StrongNotConfigured)) => {
                Err(CommandError::NotStrong(e.to_string()))
            }
        }
    }

    /// The TTL rules of the session's namespace.
    fn ttl_policy(&self) -> TtlPolicy<'_> {
        self.shared.state.ttl_policy(self.namespace)
    }

    /// The namespace's default TTL, ms.
    fn default_ttl_ms(&self) -> Option<u64> {
        self.ttl_policy().default_ms()
    }

    /// The TTL of a write that gives none: the namespace's default, as an
    /// HTTP `PUT` without a TTL.
    fn put_ttl(&self) -> Ttl {
        self.ttl_policy().put(None)
    }

    /// Checks a TTL against the namespace's maximum.
    fn check_ttl_ms(&self, ms: u64) -> Result<u64, CommandError> {
        self.ttl_policy().check_ms(ms).map_err(|e| CommandError::TtlTooLong {
            ns: e.namespace,
            max: humantime::format_duration(e.max).to_string(),
        })
    }
}

/// The bytes a GET answers: the value, a document's JSON, or a counter's
/// integer in decimal (as HTTP's `GET /v1/kv` does).
fn value_bytes(entry: &Entry) -> Cow<'_, [u8]> {
    match entry.value() {
        ValueRef::Bytes(b) => Cow::Borrowed(b),
        ValueRef::Doc(d) => Cow::Owned(d.to_json().to_string().into_bytes()),
        ValueRef::Counter(c) => Cow::Owned(c.value().to_string().into_bytes()),
    }
}

/// `arg` equals `upper` in any case.
fn is(arg: &[u8], upper: &str) -> bool {
    arg.eq_ignore_ascii_case(upper.as_bytes())
}
