//! Frames on QUIC streams: a `u32` big-endian length, then that many bytes.
//!
//! Used for the per-peer frame stream (many frames, one after the other) and for
//! requests and responses (one frame each way). The reader checks the length prefix
//! against the limit before anything is allocated, and then grows its buffer only as
//! bytes actually arrive, so a peer announcing a large frame costs nothing until it
//! sends it.

use bytes::{Bytes, BytesMut};
use quinn::{ReadError, ReadExactError, RecvStream, SendStream, WriteError};

/// Length prefix size, in bytes.
pub(crate) const PREFIX_BYTES: usize = 4;

/// Largest first allocation for an incoming frame, in bytes; the buffer grows past it only
/// as data arrives.
const READ_BUFFER_BYTES_INITIAL_MAX: usize = 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameReadError {
    /// The length prefix is over the limit; nothing of the frame was read.
    #[error("frame of {len} bytes is over the {max} byte limit")]
    TooLarge { len: u64, max: usize },
    /// The stream ended inside a frame.
    #[error("stream ended after {got} of {want} bytes of a frame")]
    Truncated { got: usize, want: usize },
    /// The stream or its connection failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameWriteError {
    /// Longer than the length prefix can say.
    #[error("frame of {len} bytes does not fit a u32 length prefix")]
    TooLarge { len: usize },
    /// The stream or its connection failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Writes one frame. Not cancel-safe: a cancelled write leaves a partial frame behind,
/// so the stream must then be abandoned.
pub(crate) async fn write_frame(send: &mut SendStream, bytes: &Bytes) -> Result<(), FrameWriteError> {
    let len = u32::try_from(bytes.len()).map_err(|_| FrameWriteError::TooLarge { len: bytes.len() })?;
    let mut chunks = [Bytes::copy_from_slice(&len.to_be_bytes()), bytes.clone()];
    send.write_all_chunks(&mut chunks).await?;
    Ok(())
}

/// Reads one frame of at most `frame_bytes_max` bytes; `Ok(None)` when the stream ended
/// cleanly at a frame boundary.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    frame_bytes_max: usize,
) -> Result<Option<Bytes>, FrameReadError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(got)) => {
            return Err(FrameReadError::Truncated { got, want: PREFIX_BYTES })
        }
        Err(ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let announced = u32::from_be_bytes(prefix);
    let len = match usize::try_from(announced) {
        Ok(len) if len <= frame_bytes_max => len,
        _ => return Err(FrameReadError::TooLarge { len: u64::from(announced), max: frame_bytes_max }),
    };
    let mut buf = BytesMut::with_capacity(len.min(READ_BUFFER_BYTES_INITIAL_MAX));
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => return Err(FrameReadError::Truncated { got: buf.len(), want: len }),
        }
    }
    Ok(Some(buf.freeze()))
}
