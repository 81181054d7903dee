//! TLS on the client ports (`--tls-cert`, `--tls-key`): rustls, so a
//! client outside the host reaches a node without a proxy.
//!
//! The handshake runs inside the connection's first reads, not in the
//! accept loop: one slow client cannot hold up the others, and a handshake
//! that stalls is cut off by the same `--header-timeout` as a stalled
//! request.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};

/// Plaintext taken from a TLS stream per read: one TLS record's worth.
const TLS_READ_CHUNK_BYTES: usize = 16 * 1024;

/// The certificate or key for the client ports could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// A file did not hold what it should.
    #[error("{flag} {path}: {reason}")]
    File {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The path given.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match, say).
    #[error("--tls-cert/--tls-key: {0}")]
    Config(#[from] rustls::Error),
}

/// An acceptor for the certificate chain and key in these PEM files.
///
/// # Errors
///
/// [`ClientTlsError`] naming the flag of the file at fault.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ClientTlsError> {
    let file_error = |flag, path: &Path, reason: String| ClientTlsError::File {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error("--tls-cert", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("--tls-cert", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error("--tls-cert", cert, "no certificate in the file".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("--tls-key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client connection, in clear or TLS.
pub enum ClientStream {
    /// No TLS on this port.
    Plain(TcpStream),
    /// The TLS handshake is under way (boxed: it holds the whole TLS
    /// state, and plain connections should not pay for it).
    Handshaking(Box<Accept<TcpStream>>),
    /// TLS established.
    Tls(Box<TlsStream<TcpStream>>),
    /// The handshake failed; every further call fails.
    Failed,
}

impl ClientStream {
    /// A connection accepted on a port with `tls` (or none).
    pub fn new(stream: TcpStream, tls: Option<&TlsAcceptor>) -> ClientStream {
        match tls {
            Some(acceptor) => ClientStream::Handshaking(Box::new(acceptor.accept(stream))),
            None => ClientStream::Plain(stream),
        }
    }

    /// Drives the handshake; ready once the stream can carry data.
    fn poll_established(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let ClientStream::Handshaking(accept) = self {
            match Pin::new(accept.as_mut()).poll(cx) {
                Poll::Ready(Ok(tls)) => *self = ClientStream::Tls(Box::new(tls)),
                Poll::Ready(Err(e)) => {
                    *self = ClientStream::Failed;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if matches!(self, ClientStream::Failed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "TLS handshake failed",
            )));
        }
        Poll::Ready(Ok(()))
    }

    /// A connection with its TLS handshake done (the RESP port, whose
    /// reads wait on the socket): at most `timeout` for the handshake.
    ///
    /// # Errors
    ///
    /// The handshake failed or timed out.
    pub async fn established(
        stream: TcpStream,
        tls: Option<&TlsAcceptor>,
        timeout: std::time::Duration,
    ) -> io::Result<ClientStream> {
        let Some(acceptor) = tls else { return Ok(ClientStream::Plain(stream)) };
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(ClientStream::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake not done within --header-timeout"))
            }
        }
    }

    /// Whether bytes may wait inside the stream that the socket no longer
    /// signals (TLS decrypts whole records ahead of the reader).
    pub fn may_hold_input(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// Waits until the socket has input.
    ///
    /// # Errors
    ///
    /// The socket's error.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.readable().await,
            ClientStream::Tls(s) => s.get_ref().0.readable().await,
            _ => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Reads what is there without waiting: `WouldBlock` when nothing is.
    ///
    /// # Errors
    ///
    /// The stream's error, or `WouldBlock`.
    pub fn try_read_buf(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_read_buf(buf),
            ClientStream::Tls(s) => {
                // One poll with a waker that does nothing: the caller waits
                // on `readable`, which registers the real one.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut chunk = [0u8; TLS_READ_CHUNK_BYTES];
                let mut read = ReadBuf::new(&mut chunk);
                match Pin::new(s.as_mut()).poll_read(&mut cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(read.filled());
                        Ok(read.filled().len())
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::Error::from(io::ErrorKind::WouldBlock)),
                }
            }
            _ => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Whether vectored writes go through as such.
    pub fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
            _ => false,
        }
    }
}

macro_rules! established {
    ($self:ident, $cx:ident, $s:ident => $call:expr) => {{
        let this = &mut *$self;
        match this.poll_established($cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match this {
            ClientStream::Plain($s) => {
                let $s = Pin::new($s);
                $call
            }
            ClientStream::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $call
            }
            _ => Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected))),
        }
    }};
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        established!(self, cx, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        established!(self, cx, s => s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        established!(self, cx, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        established!(self, cx, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        established!(self, cx, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        ClientStream::is_write_vectored(self)
    }
}
