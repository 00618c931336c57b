//! A request's body, read on demand by the handler in the connection's own task (no channel,
//! no wake-up of another task): [`Body::read`] takes what arrived with the head, then reads
//! the rest of the `Content-Length` straight from the connection into one buffer of exactly
//! that size, within a timeout (a body that arrived whole with the head is a slice of the read
//! buffer, not a copy). Bytes after the body (a pipelined request) stay with the
//! connection. A transfer-coded body is not decoded: reading it is an error and the
//! connection closes after the answer, as it does whenever a body was left unread.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::request::Framing;

/// A connection's byte stream as the body reader sees it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a body could not be read; each maps to the status it is answered with.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not received within the timeout: `408`.
    #[error("request body not received in time")]
    Timeout,
    /// `Content-Length` over the reader's limit: `413`.
    #[error("request body over the limit")]
    TooLarge,
    /// The client closed the connection before the whole body arrived, or reading failed:
    /// `400`.
    #[error("request body could not be read")]
    Incomplete(#[source] Option<std::io::Error>),
    /// A transfer-coded body (RFC 9112 §6.3): `411` for `chunked` alone (a `Content-Length`
    /// is required), `501` for other codings ending in `chunked` (not implemented), `400`
    /// when `chunked` is not the final coding (the length cannot be determined).
    #[error("Transfer-Encoding is not supported; send the body with a Content-Length")]
    TransferEncoding { status: u16 },
}

impl BodyError {
    /// The status the request is answered with.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::Timeout => 408,
            BodyError::TooLarge => 413,
            BodyError::Incomplete(_) => 400,
            BodyError::TransferEncoding { status } => *status,
        }
    }
}

/// The body of the request being handled.
pub struct Body<'a> {
    pub(super) io: &'a mut dyn Io,
    /// Bytes received after the head: the body's start, maybe a pipelined request after it.
    pub(super) leftover: &'a mut Option<BytesMut>,
    pub(super) framing: Framing,
    pub(super) expect_continue: bool,
    /// Set once the whole body has been read (the connection may then stay open).
    pub(super) done: &'a mut bool,
}

impl std::fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl Body<'_> {
    /// Reads the whole body, at most `limit` bytes (a larger `Content-Length` is refused
    /// unread), within `timeout`.
    pub async fn read(self, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
        let length = match self.framing {
            Framing::Length(n) => n,
            Framing::TransferEncoded {
                chunked_last,
                chunked_only,
            } => {
                let status = match (chunked_last, chunked_only) {
                    (true, true) => 411,
                    (true, false) => 501,
                    (false, _) => 400,
                };
                return Err(BodyError::TransferEncoding { status });
            }
        };
        if length > limit as u64 {
            return Err(BodyError::TooLarge);
        }
        let length = length as usize;
        if length == 0 {
            *self.done = true;
            return Ok(Bytes::new());
        }
        // Arrived with the head (an agent's report usually does): a slice of it, no copy.
        if let Some(left) = self.leftover.as_mut()
            && left.len() >= length
        {
            let body = left.split_to(length).freeze();
            if left.is_empty() {
                *self.leftover = None;
            }
            *self.done = true;
            return Ok(body);
        }
        let mut body = Vec::with_capacity(length);
        if let Some(left) = self.leftover.take() {
            body.extend_from_slice(&left);
        }
        if body.len() < length {
            if self.expect_continue {
                self.io
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .map_err(|e| BodyError::Incomplete(Some(e)))?;
            }
            let io = self.io;
            let rest = async {
                while body.len() < length {
                    // `take`: never past the body into a pipelined request.
                    let want = (length - body.len()) as u64;
                    match (&mut *io).take(want).read_buf(&mut body).await {
                        Ok(0) => return Err(BodyError::Incomplete(None)),
                        Ok(_) => {}
                        Err(e) => return Err(BodyError::Incomplete(Some(e))),
                    }
                }
                Ok(())
            };
            match tokio::time::timeout(timeout, rest).await {
                Err(_) => return Err(BodyError::Timeout),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) => {}
            }
        }
        *self.done = true;
        Ok(Bytes::from(body))
    }

    /// The declared length (`None` for a transfer-coded body).
    pub fn declared(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::TransferEncoded { .. } => None,
        }
    }
}
