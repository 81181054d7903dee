//! One client connection: read, run every whole request buffered, write
//! the replies, repeat.
//!
//! Pipelining falls out of the loop: a client that sends 16 commands
//! before reading gets them run back to back, their replies gathered in
//! the write buffer and sent with one write once no whole request is left
//! in the read buffer. Replies are flushed early only when the write buffer
//! passes [`WRITE_FLUSH_BYTES`], so it stays bounded too.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::commands::{self, Flow, Session};
use super::frame;
use super::reply::{self, Replies};
use super::Shared;
use crate::client_tls::ClientStream;

/// Bytes asked of the socket per read: one read takes a whole pipeline of
/// small commands.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Replies buffered past this are written before the next command runs.
pub const WRITE_FLUSH_BYTES: usize = 64 * 1024;

/// A connection that has sent nothing for this long gives its buffers
/// back: ten thousand idle clients then hold sockets, not 32 KiB each.
const SHED_BUFFERS_AFTER_MS: u64 = 1_000;

/// After a protocol error, at most this much more input is read and
/// dropped before the socket closes, for at most [`LINGER_MS`].
const LINGER_BYTES_MAX: usize = 256 * 1024;

/// How long [`close_after_error`] waits for the client to stop sending.
const LINGER_MS: u64 = 200;

/// Why a connection ended; for the log.
#[derive(Debug)]
pub enum End {
    /// The client closed, or sent `QUIT`.
    Client,
    /// The client broke the protocol; it was told why.
    Protocol,
    /// The client stalled inside a request past `--header-timeout`, or
    /// stayed idle past `--resp-idle-timeout`.
    Timeout,
    /// The node is shutting down.
    Shutdown,
    /// The socket failed.
    Io(std::io::Error),
}

/// Serves one client until it leaves, breaks the protocol, times out, or
/// `shutdown` turns true. The read buffer holds at most one request
/// (bounded by `shared.limits`, checked as headers arrive) plus one read;
/// the replies waiting to be written at most [`WRITE_FLUSH_BYTES`] plus
/// one reply (bounded by `--reply-bytes-max`, its large values shared
/// with the store).
pub async fn run(shared: &Shared, mut stream: ClientStream, mut shutdown: watch::Receiver<bool>) -> End {
    let id = shared.next_client_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut session = Session::new(id, &shared.state.config.resp_namespace);
    let mut read = BytesMut::new();
    let mut write = Replies::default();
    let config = &shared.state.config;
    loop {
        // Run every whole request already buffered.
        loop {
            match frame::parse(&mut read, &shared.limits) {
                Ok(Some(req)) if req.is_empty() => {}
                Ok(Some(req)) => {
                    let flow = commands::execute(shared, &mut session, &req, &mut write).await;
                    if flow == Flow::Close {
                        let _ = send(shared, &mut write, &mut stream).await;
                        return End::Client;
                    }
                    if write.queued_bytes() >= WRITE_FLUSH_BYTES {
                        if let Err(e) = send(shared, &mut write, &mut stream).await {
                            return End::Io(e);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    reply::error(&mut write, &e.to_string());
                    let _ = send(shared, &mut write, &mut stream).await;
                    close_after_error(&mut stream).await;
                    return End::Protocol;
                }
            }
        }
        if let Err(e) = send(shared, &mut write, &mut stream).await {
            return End::Io(e);
        }
        // TLS may hold decrypted input the socket no longer signals: take
        // it before waiting on the socket.
        if stream.may_hold_input() {
            read.reserve(READ_CHUNK_BYTES);
            match stream.try_read_buf(&mut read) {
                Ok(0) => return End::Client,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return End::Io(e),
            }
        }
        // Wait for input: a stalled request has `--header-timeout`, an
        // idle connection `--resp-idle-timeout` (zero: forever); either
        // way the buffers go back after a second of silence.
        let limit = if !read.is_empty() {
            Some(config.header_timeout)
        } else if !config.resp_idle_timeout.is_zero() {
            Some(config.resp_idle_timeout)
        } else {
            None
        };
        let started = Instant::now();
        let mut shed = false;
        loop {
            let shed_at = started + Duration::from_millis(SHED_BUFFERS_AFTER_MS);
            let wake = match (limit, shed) {
                (Some(l), true) => started + l,
                (Some(l), false) => shed_at.min(started + l),
                (None, false) => shed_at,
                (None, true) => started + Duration::from_secs(365 * 24 * 3600),
            };
            tokio::select! {
                ready = stream.readable() => match ready {
                    Ok(()) => break,
                    Err(e) => return End::Io(e),
                },
                () = tokio::time::sleep_until(wake) => {
                    if limit.is_some_and(|l| started.elapsed() >= l) {
                        if !read.is_empty() {
                            let why = format!(
                                "ERR the request was not completed within {} (--header-timeout)",
                                humantime::format_duration(config.header_timeout)
                            );
                            reply::error(&mut write, &why);
                            let _ = send(shared, &mut write, &mut stream).await;
                        }
                        return End::Timeout;
                    }
                    if read.is_empty() {
                        read = BytesMut::new();
                    }
                    write = Replies::default();
                    shed = true;
                }
                () = stopped(&mut shutdown) => return End::Shutdown,
            }
        }
        // Room for one more read; the buffer reuses its space once the
        // requests parsed out of it are dropped.
        read.reserve(READ_CHUNK_BYTES);
        match stream.try_read_buf(&mut read) {
            Ok(0) => return End::Client,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return End::Io(e),
        }
    }
}

/// Sends the replies queued, once what their commands wrote reached the OS
/// (a node killed after it answered still has it).
async fn send(shared: &Shared, write: &mut Replies, stream: &mut ClientStream) -> std::io::Result<()> {
    if let Some(disk) = shared.state.store.disk() {
        disk.wait_os().await;
    }
    write.write_to(stream).await
}

/// After a protocol error: send FIN after the error reply, then read and
/// drop what the client is still sending, a bounded amount for a bounded
/// time. Closing a socket with unread input sends a reset instead, which
/// can destroy the error reply before the client reads it.
async fn close_after_error(stream: &mut ClientStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(LINGER_MS), drain).await;
}

/// Resolves once shutdown is asked for; never if the sender is gone
/// without asking.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
