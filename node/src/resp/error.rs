//! What can go wrong on the RESP port, worded as Redis words it: clients
//! and tools match on these strings, so the text is part of the protocol.
//! The `Display` of each variant is the error reply without its leading
//! `-` (so it starts with the error code: `ERR`, `WRONGTYPE`, ...).

use thiserror::Error;

/// The client broke the protocol. The node answers the error and closes
/// the connection, as Redis does; nothing was executed from the bad
/// request, and nothing else changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*<count>` is not an integer, or over 1,048,576.
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$<len>` is not an integer, negative, or over the value limit.
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An argument of a multibulk request is not a bulk string.
    #[error("ERR Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// The `*<count>` line has no end within 64 KiB.
    #[error("ERR Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$<len>` line has no end within 64 KiB.
    #[error("ERR Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline command has no end within 64 KiB.
    #[error("ERR Protocol error: too big inline request")]
    TooBigInline,
    /// An inline command has a quote that does not close.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// The whole request would not fit the read buffer.
    #[error("ERR Protocol error: request larger than {limit} bytes")]
    RequestTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// A bulk string's payload is not followed by CRLF.
    #[error("ERR Protocol error: expected CRLF after a bulk string")]
    BulkNotTerminated,
}

/// A command failed. The connection stays usable; unless the variant says
/// otherwise, nothing changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    /// No such command.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The name as sent (cut at 128 bytes).
        name: String,
        /// The first arguments, each quoted and followed by a space.
        args: String,
    },
    /// No such subcommand.
    #[error("ERR unknown subcommand '{sub}'. Try {command} HELP.")]
    UnknownSubcommand {
        /// The command, upper case.
        command: &'static str,
        /// The subcommand as sent.
        sub: String,
    },
    /// Too few or too many arguments.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// Options that do not parse or do not go together.
    #[error("ERR syntax error")]
    Syntax,
    /// An argument or a stored value that should be an integer is not one.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// `INCRBY` and friends would leave the range of a signed 64-bit integer.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// `DECRBY` of the smallest integer, whose negation does not exist.
    #[error("ERR decrement would overflow")]
    DecrementOverflow,
    /// An expire time that is not positive or overflows.
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    /// An expire time over the namespace's `max_ttl`.
    #[error("ERR expire time exceeds the maximum TTL of namespace {ns} ({max})")]
    TtlTooLong {
        /// The namespace.
        ns: String,
        /// Its maximum, humantime.
        max: String,
    },
    /// The key holds a JSON document where bytes are needed.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// A counter that takes no more writers in its epoch.
    #[error("ERR {0}")]
    CounterFull(geocache_crdt::CounterError),
    /// A key over `--key-bytes-max`.
    #[error("ERR key is {len} bytes; the limit is {max}")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: u64,
    },
    /// The write is applied here but did not reach its durability level.
    #[error("ERR {0}")]
    NotDurable(String),
    /// A strong write found no majority (or may not have been made): as
    /// Redis Cluster answers while a slot is unavailable, so a client
    /// retries later.
    #[error("TRYAGAIN {0}")]
    TryAgain(String),
    /// A strong write of a kind strong keys do not take.
    #[error("ERR {0}")]
    NotStrong(String),
    /// A reply larger than `--reply-bytes-max`; nothing was sent.
    #[error("ERR the reply would be {bytes} bytes; the limit is {max} (--reply-bytes-max): ask for fewer or smaller values")]
    ReplyTooLarge {
        /// The reply's size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// `SELECT` of a database other than 0.
    #[error("ERR DB index is out of range")]
    DbOutOfRange,
    /// `CLIENT SETNAME` with a space or a control character.
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    BadClientName,
    /// `HELLO` with a protocol version that is not a number.
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolVersion,
    /// `HELLO` asked for a protocol other than RESP2.
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    /// An option `EXPIRE` does not know.
    #[error("ERR Unsupported option {0}")]
    Unsupported(String),
    /// `EXPIRE` options that do not go together.
    #[error("ERR {0}")]
    ExpireOptions(&'static str),
    /// The data dir is still being loaded, in Redis's words.
    #[error("LOADING geocache is loading the dataset in memory")]
    Loading,
    /// Auth is on and this connection has not authenticated.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// `HELLO` without `AUTH` on a connection that has not authenticated.
    #[error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")]
    HelloNoAuth,
    /// `AUTH` with a user or secret that matches no user.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    /// `AUTH` on a node with no users configured.
    #[error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")]
    AuthNotConfigured,
    /// The user may not run this command here.
    #[error("NOPERM User {user} has no permissions to run the '{command}' command")]
    NoPerm {
        /// The user.
        user: String,
        /// The command.
        command: &'static str,
    },
    /// A compare-and-set loop lost the race too many times in a row; nothing
    /// was written, the client may retry.
    #[error("ERR the key changed {0} times while updating it; try again")]
    Contention(usize),
}
