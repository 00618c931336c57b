//! A request head parsed with `httparse` into an owned [`Request`] (method, target, version,
//! header fields), and its message framing per RFC 9112: the body length from one valid
//! `Content-Length` (§6.3), `Transfer-Encoding` recognised but not decoded (the body is then
//! refused when read and the connection closed), and whether the connection stays open after
//! the answer (`Connection: close`, HTTP/1.0 without `keep-alive`; §9.3).
//!
//! The request owns its data: its target and header values are slices of the head, split off
//! the read buffer without a copy, so the head's bytes live exactly as long as the request
//! (handlers drop it before a long poll waits).

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

/// Why a request head was refused; each maps to the status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head (request line and header fields) is longer than the limit, or has more
    /// header fields than the limit: `431`.
    #[error("request head too large")]
    TooLarge,
    /// Not an HTTP/1.x request head: `400`.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// A `Content-Length` that is not one decimal number, or given twice: `400`.
    #[error("invalid Content-Length: {0}")]
    ContentLength(&'static str),
}

impl HeadError {
    /// The status the head is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Malformed(_) | HeadError::ContentLength(_) => 400,
        }
    }
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 without the field).
    Length(u64),
    /// A `Transfer-Encoding` (chunked or other): not decoded here. `chunked_last`: the final
    /// coding is `chunked` (else the length cannot be determined at all, RFC 9112 §6.3);
    /// `chunked_only`: it is the only one.
    TransferEncoded {
        chunked_last: bool,
        chunked_only: bool,
    },
}

/// A parsed request head.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the client allows the connection to stay open after the answer.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (HTTP/1.1): the client waits for `100 Continue` before the body.
    pub expect_continue: bool,
}

impl Request {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Path and query as sent (what request signatures cover).
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }

    /// A header field's value as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The declared body length (`None` with a `Transfer-Encoding`).
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::TransferEncoded { .. } => None,
        }
    }

    /// Whether the request has a body (a non-zero length or a transfer coding).
    pub fn has_body(&self) -> bool {
        !matches!(self.framing, Framing::Length(0))
    }
}

/// Header names the gateway's clients send besides the standard ones: taken as static names
/// instead of being copied per request.
const KNOWN_NAMES: [&str; 8] = [
    apollo_protocol::auth::HEADER_DEVICE,
    apollo_protocol::auth::HEADER_KEY_ID,
    apollo_protocol::auth::HEADER_TIMESTAMP,
    apollo_protocol::auth::HEADER_NONCE,
    apollo_protocol::auth::HEADER_SIGNATURE,
    apollo_protocol::auth::HEADER_AUTH_VERSION,
    apollo_protocol::replica::HEADER_REPLICA,
    apollo_protocol::replica::HEADER_CONTENT_SHA256,
];

fn header_name(name: &[u8]) -> Result<HeaderName, HeadError> {
    if let Some(known) = KNOWN_NAMES
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
    {
        return Ok(HeaderName::from_static(known));
    }
    HeaderName::from_bytes(name).map_err(|_| HeadError::Malformed("invalid header name"))
}

/// Parses a request head at the start of `buf` (at most `max_headers` header fields): `None`
/// while it is incomplete; once complete, the head is split off `buf` (which keeps what
/// follows it) and the request's target and header values are slices of it, not copies. Leading
/// empty lines are skipped (RFC 9112 §2.2).
pub fn parse(buf: &mut BytesMut, max_headers: usize) -> Result<Option<Box<Request>>, HeadError> {
    // On the stack, not in a connection's future: parsing never waits.
    let mut fields = [httparse::EMPTY_HEADER; crate::limits::MAX_HEADERS];
    let fields = &mut fields[..max_headers.min(crate::limits::MAX_HEADERS)];
    let mut req = httparse::Request::new(fields);
    let mut config = httparse::ParserConfig::default();
    config.allow_multiple_spaces_in_request_line_delimiters(false);
    let len = match config.parse_request(&mut req, buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("not HTTP/1.0 or 1.1")),
        Err(httparse::Error::Token) => return Err(HeadError::Malformed("invalid method")),
        Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Malformed("invalid header name"));
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HeadError::Malformed("invalid header value"));
        }
        Err(_) => return Err(HeadError::Malformed("invalid request line")),
    };
    // Where a slice of the head starts in it.
    let base = buf.as_ptr() as usize;
    let range = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let path = range(req.path.unwrap_or_default().as_bytes());
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut names: [Option<(HeaderName, std::ops::Range<usize>)>; crate::limits::MAX_HEADERS] =
        [const { None }; crate::limits::MAX_HEADERS];
    let mut length: Option<u64> = None;
    let mut codings: Option<(usize, bool)> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for (field, slot) in req.headers.iter().zip(names.iter_mut()) {
        let name = header_name(field.name.as_bytes())?;
        if name == header::CONTENT_LENGTH {
            if length.is_some() {
                return Err(HeadError::ContentLength("given more than once"));
            }
            length = Some(parse_length(field.value)?);
        } else if name == header::TRANSFER_ENCODING {
            // The final coding decides whether the length can be determined at all.
            let mut count = codings.map_or(0, |(n, _)| n);
            let mut last_chunked = codings.is_some_and(|(_, c)| c);
            for coding in field.value.split(|&b| b == b',').map(trim) {
                if !coding.is_empty() {
                    count += 1;
                    last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
            codings = Some((count, last_chunked));
        } else if name == header::CONNECTION {
            for token in field.value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            expect_continue = trim(field.value).eq_ignore_ascii_case(b"100-continue");
        }
        *slot = Some((name, range(field.value)));
    }
    let count = req.headers.len();
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(count);
    for (name, value) in names.into_iter().take(count).flatten() {
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let framing = match codings {
        Some((count, chunked_last)) => Framing::TransferEncoded {
            chunked_last,
            chunked_only: chunked_last && count == 1,
        },
        None => Framing::Length(length.unwrap_or(0)),
    };
    let keep_alive = !close
        && (version == Version::HTTP_11 || keep_alive_token)
        && !matches!(framing, Framing::TransferEncoded { .. });
    Ok(Some(Box::new(Request {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
    })))
}

/// A `Content-Length` value: one decimal number (no sign, no list, no spaces inside).
fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let v = trim(value);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::ContentLength("not a decimal number"));
    }
    // At most 19 digits fit in a u64 whatever they are.
    if v.len() > 19 {
        return Err(HeadError::ContentLength("too large"));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(head: &str) -> Request {
        let mut buf = BytesMut::from(format!("{head}NEXT").as_bytes());
        match parse(&mut buf, 32) {
            Ok(Some(r)) => {
                assert_eq!(&buf[..], b"NEXT", "what follows the head stays");
                *r
            }
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn refused(head: &str) -> HeadError {
        match parse(&mut BytesMut::from(head.as_bytes()), 32) {
            Err(e) => e,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_head() {
        let r = complete(
            "GET /v1/devices/a/desired?wait=30s HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"e\"\r\n\r\n",
        );
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.path(), "/v1/devices/a/desired");
        assert_eq!(r.query(), Some("wait=30s"));
        assert_eq!(r.path_and_query(), "/v1/devices/a/desired?wait=30s");
        assert_eq!(r.header(header::IF_NONE_MATCH), Some("\"e\""));
        assert_eq!(r.framing, Framing::Length(0));
        assert!(r.keep_alive && !r.has_body() && !r.expect_continue);
        // Leading empty lines are ignored; the head may end in bare LFs.
        let r = complete("\r\nPOST /r HTTP/1.1\nContent-Length: 12\n\n");
        assert_eq!(r.content_length(), Some(12));
        let mut partial = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(matches!(parse(&mut partial, 32), Ok(None)));
        assert_eq!(partial.len(), 25, "nothing taken");
        let r = complete("POST /r HTTP/1.1\r\nX-Apollo-Nonce: n\r\nx-custom: c\r\n\r\n");
        assert_eq!(r.header("x-apollo-nonce"), Some("n"));
        assert_eq!(r.header("X-Custom"), Some("c"));
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(!complete("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(complete("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        let r = complete("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(r.expect_continue);
        let r = complete("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!r.expect_continue, "HTTP/1.0 has no 100 Continue");
    }

    #[test]
    fn content_length_must_be_one_number() {
        for bad in ["-1", "+1", "1 2", "0x10", "", "1,1", "99999999999999999999"] {
            let e = refused(&format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n"));
            assert!(matches!(e, HeadError::ContentLength(_)), "{bad:?}: {e:?}");
            assert_eq!(e.status(), 400);
        }
        let e = refused("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(e, HeadError::ContentLength("given more than once"));
        let e = refused("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(e.status(), 400);
        assert_eq!(
            complete("POST / HTTP/1.1\r\nContent-Length:  7 \r\n\r\n").content_length(),
            Some(7)
        );
    }

    #[test]
    fn transfer_encoding_is_recognised_and_closes() {
        let r = complete("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            r.framing,
            Framing::TransferEncoded {
                chunked_last: true,
                chunked_only: true
            }
        );
        assert!(!r.keep_alive && r.has_body() && r.content_length().is_none());
        let r = complete("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(
            r.framing,
            Framing::TransferEncoded {
                chunked_last: false,
                chunked_only: false
            }
        );
        // With a Content-Length too, the transfer coding wins (RFC 9112 §6.3).
        let r = complete(
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        assert_eq!(
            r.framing,
            Framing::TransferEncoded {
                chunked_last: true,
                chunked_only: false
            }
        );
    }

    #[test]
    fn malformed_heads() {
        for bad in [
            "GET / HTTP/2.0\r\n\r\n",
            "GET /\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(refused(bad).status(), 400, "{bad:?}");
        }
        let many: String = (0..33).map(|i| format!("X-{i}: y\r\n")).collect();
        let e = refused(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
        assert_eq!(e, HeadError::TooLarge);
        assert_eq!(e.status(), 431);
    }
}
