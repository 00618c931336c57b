//! The gateway's HTTP/1.1 server: one task per connection, built on `httparse` and tokio, that
//! holds **no buffer while a connection is idle or long-polling**. hyper 1 keeps an 8 KiB read
//! buffer and an 8 KiB write buffer for a connection's whole life; at fleet scale (an agent
//! holds a long poll and a keep-alive connection) those buffers were most of the gateway's
//! memory (docs/GATEWAY.md, "Memory per device").
//!
//! Per request, [`serve_connection`]:
//! 1. waits until the connection is readable without a buffer ([`Transport::read_ready`]:
//!    the socket's readiness for plain TCP; for TLS also rustls' already decrypted
//!    plaintext), within the header timeout (which also bounds an idle keep-alive
//!    connection) or until shutdown; then closes, or takes a read buffer and reads what is
//!    there (a spurious readiness drops the buffer again and waits without it);
//! 2. reads the head into it, growing it up to `max_head` (`431` above, or with more than
//!    `max_headers` fields; `400` for a malformed head or `Content-Length`), all within the
//!    header timeout (else the connection is closed without an answer), and parses it
//!    ([`request`]); bytes after the head stay as the connection's leftover, and without any
//!    the buffer is freed;
//! 3. calls the [`Service`] with the owned [`Request`] and its [`Body`], which the handler
//!    reads when and if it decides to ([`body`]: `Content-Length` only, in this task); the
//!    handler's future is boxed, so it is allocated only while a request is handled;
//! 4. a [`Reply::Later`] (a long poll) is awaited while the connection is watched for the
//!    client leaving (again without a buffer until bytes arrive): a client that closes its
//!    connection drops the reply's future, and with it whatever it holds (its long-poll slot);
//! 5. writes the answer with one write of head and body ([`response`]) and drops it; closes
//!    when the client asked (`Connection: close`, HTTP/1.0 without `keep-alive`), when the
//!    body was left unread or was transfer-coded, or at shutdown, after a lingering close
//!    (shut down the write side, drain what the client still sends for a moment) so that
//!    the answer is not lost to a reset.

pub mod body;
pub mod request;
pub mod response;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

pub use body::{Body, BodyError};
pub use request::{HeadError, Request};

/// A read buffer's first size: agents' request heads are well under 2 KiB.
pub const INITIAL_READ_BUFFER: usize = 2 * 1024;
/// How long a closing connection keeps reading (and discarding) what the client still sends.
pub const LINGER: Duration = Duration::from_secs(1);
/// Most bytes a closing connection discards.
pub const LINGER_BYTES: usize = 256 * 1024;

/// An answer.
pub type Answer = Response<Bytes>;

/// What a handler comes to.
pub enum Reply {
    /// An answer now.
    Now(Answer),
    /// An answer later (a long poll): the future holds no borrow of the connection, which is
    /// watched meanwhile; it is dropped if the client leaves.
    Later(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Now(a) => f.debug_tuple("Now").field(&a.status()).finish(),
            Reply::Later(_) => f.write_str("Later"),
        }
    }
}

/// What a listener serves.
pub trait Service: Send + Sync {
    /// Answers one request; reads its body through `body` if it wants it.
    fn call<'a>(&'a self, req: Request, body: Body<'a>) -> impl Future<Output = Reply> + Send + 'a;

    /// The answer to a request the server refuses itself (malformed head: `400`; head too
    /// large: `431`).
    fn refuse(&self, status: u16, message: &str) -> Answer;
}

/// A connection's byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves once a read may return bytes (or end of stream) soon, without holding a
    /// buffer while waiting. Spurious readiness is allowed (the read then waits with a
    /// buffer); missing readiness is not.
    fn read_ready(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_;
}

impl Transport for TcpStream {
    fn read_ready(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_ {
        self.readable()
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn read_ready(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_ {
        let (tcp, tls) = self.get_ref();
        // rustls may hold decrypted plaintext already (it decrypts every complete record a
        // read brought in): then the socket may never become readable again, and the
        // bytes are there now. A partial record needs more bytes from the socket.
        let buffered = !tls.wants_read();
        async move {
            if buffered {
                Ok(())
            } else {
                tcp.readable().await
            }
        }
    }
}

/// A boxed stream: a large one (TLS: rustls' state, about 1.2 KiB) moved once instead of
/// through every future that serves it.
impl<T: Transport> Transport for Box<T> {
    fn read_ready(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_ {
        (**self).read_ready()
    }
}

/// Per-connection settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to receive a request head, counted from the end of the previous answer (so it
    /// also bounds an idle keep-alive connection); then the connection is closed.
    pub header_timeout: Duration,
    /// Longest request head (`431` above).
    pub max_head: usize,
    /// Most header fields (`431` above).
    pub max_headers: usize,
}

/// How a connection ended, when not cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("request head not received within the header timeout")]
    HeaderTimeout,
    #[error("TLS handshake not completed within the header timeout")]
    HandshakeTimeout,
    #[error("request head refused: {0}")]
    Head(#[from] HeadError),
    #[error("connection closed in the middle of a request head")]
    Truncated,
    #[error("answer not taken by the client within the header timeout")]
    WriteTimeout,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What waiting for a request came to.
enum Next {
    Request(Box<Request>),
    /// The client closed an idle connection, or shutdown began.
    Closed,
}

/// Serves HTTP/1.1 on one connection until it closes, a limit closes it, or shutdown (an idle
/// connection closes at once; a request being handled is answered, then the connection
/// closes).
pub async fn serve_connection<T: Transport, S: Service>(
    mut io: T,
    service: &S,
    limits: Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    // Bytes received past the last request's head or body; `None` between requests.
    let mut leftover: Option<BytesMut> = None;
    loop {
        let req = match next_request(&mut io, &mut leftover, limits, shutdown).await {
            Ok(Next::Request(req)) => req,
            Ok(Next::Closed) => return Ok(()),
            Err(ConnectionError::Head(e)) => {
                Box::pin(refuse_head(&mut io, service, &e, limits)).await?;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        // Boxed: a request's state exists while it is handled, not in every idle connection.
        let keep = Box::pin(answer_request(
            &mut io,
            &mut leftover,
            service,
            req,
            limits,
            shutdown,
        ))
        .await?;
        if !keep {
            return Ok(());
        }
    }
}

/// Answers a refused head (`400`, `431`) and closes.
async fn refuse_head<T: Transport, S: Service>(
    io: &mut T,
    service: &S,
    e: &HeadError,
    limits: Limits,
) -> Result<(), ConnectionError> {
    let answer = service.refuse(e.status(), &e.to_string());
    write_answer(io, &answer, None, true, limits).await?;
    linger(io).await;
    Ok(())
}

/// Handles one request and writes its answer (steps 3 to 5 of the module doc); whether the
/// connection stays open.
async fn answer_request<T: Transport, S: Service>(
    io: &mut T,
    leftover: &mut Option<BytesMut>,
    service: &S,
    req: Box<Request>,
    limits: Limits,
    shutdown: &watch::Receiver<bool>,
) -> Result<bool, ConnectionError> {
    let (head, version, keep_alive) = (req.method == Method::HEAD, req.version, req.keep_alive);
    let mut body_done = !req.has_body();
    let body = Body {
        io: &mut *io,
        leftover: &mut *leftover,
        framing: req.framing,
        expect_continue: req.expect_continue,
        done: &mut body_done,
    };
    let reply = Box::pin(service.call(*req, body)).await;
    let answer = match reply {
        Reply::Now(answer) => answer,
        Reply::Later(later) if body_done && leftover.is_none() => {
            match until_left(io, later).await {
                (Some(answer), rest) => {
                    *leftover = rest;
                    answer
                }
                // The client left: nobody to answer.
                (None, _) => return Ok(false),
            }
        }
        Reply::Later(later) => later.await,
    };
    let close = !keep_alive || !body_done || *shutdown.borrow();
    write_answer(io, &answer, Some((head, version)), close, limits).await?;
    drop(answer);
    if close {
        linger(io).await;
    }
    Ok(!close)
}

/// Waits for the next request and reads its head (steps 1 and 2 of the module doc).
async fn next_request<T: Transport>(
    io: &mut T,
    leftover: &mut Option<BytesMut>,
    limits: Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Next, ConnectionError> {
    let deadline = Instant::now() + limits.header_timeout;
    let mut buf = match leftover.take() {
        Some(buf) => buf,
        None => loop {
            tokio::select! {
                ready = tokio::time::timeout_at(deadline, io.read_ready()) => match ready {
                    Err(_) => return Err(ConnectionError::HeaderTimeout),
                    Ok(r) => r?,
                },
                _ = crate::stopped(shutdown) => return Ok(Next::Closed),
            }
            match read_if_ready(io, INITIAL_READ_BUFFER.min(limits.max_head)).await {
                // Spurious readiness: no buffer kept while waiting again.
                None => continue,
                Some(Ok(buf)) if buf.is_empty() => return Ok(Next::Closed),
                Some(Ok(buf)) => break buf,
                Some(Err(e)) => return Err(e.into()),
            }
        },
    };
    loop {
        if !buf.is_empty()
            && let Some(req) = request::parse(&mut buf, limits.max_headers)?
        {
            if !buf.is_empty() {
                *leftover = Some(buf);
            }
            return Ok(Next::Request(req));
        }
        if buf.len() >= limits.max_head {
            return Err(HeadError::TooLarge.into());
        }
        if buf.len() == buf.capacity() {
            let grow = buf.capacity().max(INITIAL_READ_BUFFER);
            buf.reserve(grow.min(limits.max_head - buf.len()));
        }
        let room = (buf.capacity().min(limits.max_head) - buf.len()) as u64;
        let mut limited = (&mut *io).take(room);
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)) => r,
            _ = crate::stopped(shutdown) => return Ok(Next::Closed),
        };
        match read {
            Err(_) => return Err(ConnectionError::HeaderTimeout),
            Ok(Ok(0)) if buf.is_empty() => return Ok(Next::Closed),
            Ok(Ok(0)) => return Err(ConnectionError::Truncated),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Awaits a later answer while watching the connection: `(None, _)` when the client closed it
/// (or it failed) first; otherwise the answer and any bytes that arrived meanwhile (a
/// pipelined request).
async fn until_left<T: Transport>(
    io: &mut T,
    mut later: Pin<Box<dyn Future<Output = Answer> + Send>>,
) -> (Option<Answer>, Option<BytesMut>) {
    let arrived = {
        let watch = async {
            loop {
                io.read_ready().await?;
                if let Some(read) = read_if_ready(io, INITIAL_READ_BUFFER).await {
                    return read;
                }
            }
        };
        tokio::select! {
            answer = &mut later => return (Some(answer), None),
            arrived = watch => arrived,
        }
    };
    match arrived {
        Ok(buf) if !buf.is_empty() => (Some(later.await), Some(buf)),
        _ => (None, None),
    }
}

/// Reads into a new buffer of `capacity` bytes only if bytes (or the end of the stream) are
/// there now: `None`, and no buffer kept, when the readiness was spurious (the read is then
/// registered for the next readiness, which [`Transport::read_ready`] waits for).
async fn read_if_ready<T: AsyncRead + Unpin>(
    io: &mut T,
    capacity: usize,
) -> Option<std::io::Result<BytesMut>> {
    let mut buf = BytesMut::with_capacity(capacity);
    let read = {
        let mut read = std::pin::pin!(io.read_buf(&mut buf));
        std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Ready(None),
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
        })
        .await
    };
    match read? {
        Ok(_) => Some(Ok(buf)),
        Err(e) => Some(Err(e)),
    }
}

/// Writes one answer (head and body in one buffer, dropped after), within the header
/// timeout. `request`: whether it was a `HEAD` and its version (`None`: the head was refused).
async fn write_answer<T: AsyncWrite + Unpin>(
    io: &mut T,
    answer: &Answer,
    request: Option<(bool, http::Version)>,
    close: bool,
    limits: Limits,
) -> Result<(), ConnectionError> {
    let (head, version) = request.unwrap_or((false, http::Version::HTTP_11));
    let bytes = response::encode(
        answer,
        response::Answering {
            head,
            version,
            close,
        },
    );
    match tokio::time::timeout(limits.header_timeout, async {
        io.write_all(&bytes).await?;
        io.flush().await
    })
    .await
    {
        Err(_) => Err(ConnectionError::WriteTimeout),
        Ok(r) => Ok(r?),
    }
}

/// A lingering close: shut down the write side (the client reads the answer, then end of
/// stream), then discard what the client still sends for up to [`LINGER`] or
/// [`LINGER_BYTES`], so that closing with unread bytes does not reset the connection before
/// the client has read the answer.
async fn linger<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T) {
    let _ = tokio::time::timeout(LINGER, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut sink = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
