//! The HTTP port's listener: a bound on open connections and a time-out
//! for a client that stalls.
//!
//! axum serves whatever this listener accepts. Each connection holds one
//! of `--http-connections-max` permits while it is open; one more is
//! answered `503` with a JSON body and closed, so the clients already
//! connected keep their service (as the RESP port does). A connection on
//! which nothing moves for `--header-timeout` while the server waits to
//! read (the headers of a request, an idle keep-alive, a stalled body) is
//! closed: a slow client cannot hold a permit and its buffers for ever. A
//! response being written is progress (hyper keeps a read pending while it
//! answers), and the time-out is never shorter than a handler may wait for
//! a write's durability.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::admission::{accept_within, Admitted};
use crate::client_tls::ClientStream;

/// Accepts connections within the limit.
pub struct GuardedListener {
    inner: TcpListener,
    tls: Option<TlsAcceptor>,
    permits: Arc<Semaphore>,
    /// The 503 a client past the limit gets, built once.
    refusal: Bytes,
    stall: Duration,
    rejected: Counter,
    timed_out: Counter,
}

impl GuardedListener {
    /// `inner` with at most `connections_max` open connections, each
    /// closed after `stall` without input while a read waits.
    pub fn new(
        inner: TcpListener,
        tls: Option<TlsAcceptor>,
        connections_max: usize,
        stall: Duration,
        rejected: Counter,
        timed_out: Counter,
    ) -> GuardedListener {
        GuardedListener {
            inner,
            tls,
            permits: Arc::new(Semaphore::new(connections_max)),
            refusal: refusal(connections_max),
            stall,
            rejected,
            timed_out,
        }
    }
}

fn refusal(connections_max: usize) -> Bytes {
    let body = format!(
        "{{\"error\":\"too many connections: {connections_max} are open (--http-connections-max)\",\"code\":\"connection_limit\"}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into()
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, std::net::SocketAddr) {
        let rejected = &self.rejected;
        let Admitted { stream, peer, permit } =
            accept_within(&self.inner, &self.permits, "http", &self.refusal, || {
                rejected.inc();
            })
            .await;
        let stream = GuardedStream {
            stream: ClientStream::new(stream, self.tls.as_ref()),
            _permit: permit,
            stall: self.stall,
            deadline: Box::pin(tokio::time::sleep(self.stall)),
            armed: false,
            timed_out: self.timed_out.clone(),
        };
        (stream, peer)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: holds its permit, and fails a read that waits
/// longer than the stall time-out.
pub struct GuardedStream {
    stream: ClientStream,
    _permit: OwnedSemaphorePermit,
    stall: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Whether a read is waiting and the deadline runs for it.
    armed: bool,
    timed_out: Counter,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !this.armed {
                    this.deadline.as_mut().reset(Instant::now() + this.stall);
                    this.armed = true;
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timed_out.inc();
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no input within --header-timeout",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl GuardedStream {
    /// Bytes went out: the connection is making progress, so a read that
    /// waits meanwhile (hyper keeps one pending to see the client hang
    /// up while it answers) starts its stall time again.
    fn wrote<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if matches!(result, Poll::Ready(Ok(_))) {
            self.armed = false;
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
