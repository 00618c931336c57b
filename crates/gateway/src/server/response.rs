//! Encodes an answer (`http::Response<Bytes>`) into the bytes of one write: status line,
//! the response's header fields, `content-length` (not for `304`, `204` and `1xx`, RFC 9110
//! §8.6), `date` (formatted once per second per thread), `connection: close` when the
//! connection closes after it (or `keep-alive` to an HTTP/1.0 client that asked for it), then
//! the body (none to a `HEAD`). Header names go out lowercase, as hyper wrote them.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode, Version};

/// What the connection decided about the message being answered.
#[derive(Debug, Clone, Copy)]
pub struct Answering {
    /// The request was `HEAD`: no body bytes.
    pub head: bool,
    /// The request's version (an HTTP/1.0 client kept open is told `keep-alive`).
    pub version: Version,
    /// The connection closes after this answer.
    pub close: bool,
}

/// The answer's bytes: head and body in one buffer.
pub fn encode(resp: &Response<Bytes>, answering: Answering) -> Vec<u8> {
    let status = resp.status();
    let body = resp.body();
    let with_length = !(status.is_informational()
        || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED));
    let send_body = with_length && !answering.head;
    let fields: usize = resp
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(
        96 + fields + if send_body { body.len() } else { 0 }, // status line, length, date, connection
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if with_length && !resp.headers().contains_key(http::header::CONTENT_LENGTH) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    if answering.close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if answering.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"date: ");
    date(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

/// Appends the current time as an IMF-fixdate (29 bytes), formatted at most once a second
/// per thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(resp: Response<Bytes>, answering: Answering) -> String {
        String::from_utf8(encode(&resp, answering)).unwrap()
    }

    const KEEP: Answering = Answering {
        head: false,
        version: Version::HTTP_11,
        close: false,
    };

    #[test]
    fn encodes_head_and_body() {
        let mut resp = Response::new(Bytes::from_static(b"{}"));
        resp.headers_mut()
            .insert("Content-Type", "application/json".parse().unwrap());
        let t = text(resp, KEEP);
        assert!(
            t.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: "
            ),
            "{t}"
        );
        assert!(t.ends_with(" GMT\r\n\r\n{}"), "{t}");
        assert!(!t.contains("connection"));
    }

    #[test]
    fn not_modified_has_no_length_and_head_no_body() {
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        let t = text(resp, KEEP);
        assert!(t.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{t}");
        assert!(!t.contains("content-length"), "{t}");
        let t = text(
            Response::new(Bytes::from_static(b"ok\n")),
            Answering {
                head: true,
                version: Version::HTTP_10,
                close: true,
            },
        );
        assert!(t.contains("content-length: 3\r\n") && t.contains("connection: close\r\n"));
        assert!(t.ends_with("\r\n\r\n"), "{t}");
        let t = text(
            Response::new(Bytes::new()),
            Answering {
                version: Version::HTTP_10,
                ..KEEP
            },
        );
        assert!(t.contains("connection: keep-alive\r\n"), "{t}");
    }
}
