//! The server against hostile and unusual clients, over real sockets: what a client observes
//! (answers, their order, connections closed or kept) and that a long poll's slot is released
//! when its client leaves.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

const HEADER_TIMEOUT: Duration = Duration::from_millis(600);
const BODY_TIMEOUT: Duration = Duration::from_millis(400);

/// Echoes bodies, answers `/hello`, holds `/wait` (counting the held ones) until `/release`.
#[derive(Default)]
struct Test {
    held: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn text(status: u16, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

impl Service for Test {
    async fn call<'a>(&'a self, req: Request, body: Body<'a>) -> Reply {
        match (req.method.clone(), req.path()) {
            (Method::GET, "/hello") => {
                Reply::Now(text(200, format!("hi {}", req.query().unwrap_or(""))))
            }
            (Method::HEAD, "/hello") => Reply::Now(text(200, "hi ")),
            (Method::POST, "/echo") => match body.read(64 * 1024, BODY_TIMEOUT).await {
                Ok(b) => Reply::Now(text(200, b)),
                Err(e) => Reply::Now(text(e.status(), e.to_string())),
            },
            (Method::GET, "/wait") => {
                self.held.fetch_add(1, Ordering::SeqCst);
                let held = Held(self.held.clone());
                let release = self.release.clone();
                Reply::Later(Box::pin(async move {
                    let _held = held;
                    release.notified().await;
                    text(304, "")
                }))
            }
            _ => Reply::Now(text(404, "no such route")),
        }
    }

    fn refuse(&self, status: u16, message: &str) -> Answer {
        text(status, message.to_string())
    }
}

const LIMITS: Limits = Limits {
    header_timeout: HEADER_TIMEOUT,
    max_head: 8 * 1024,
    max_headers: 32,
};

struct Server {
    addr: std::net::SocketAddr,
    service: Arc<Test>,
    shutdown: watch::Sender<bool>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Arc::new(Test::default());
    let (shutdown, rx) = watch::channel(false);
    let svc = service.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = svc.clone();
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let _ = serve_connection(stream, &*svc, LIMITS, &mut rx).await;
            });
        }
    });
    Server {
        addr,
        service,
        shutdown,
    }
}

/// A client reading answers off one connection.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn connect(addr: std::net::SocketAddr) -> Client<TcpStream> {
    Client {
        stream: TcpStream::connect(addr).await.unwrap(),
        buf: Vec::new(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next answer (`None`: the connection ended first); `no_body` for answers to `HEAD`.
    async fn answer_of(&mut self, no_body: bool) -> Option<Got> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                let mut r = httparse::Response::new(&mut fields);
                if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                    let status = r.code.unwrap();
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let len: usize = if no_body {
                        0
                    } else {
                        headers
                            .iter()
                            .find(|(k, _)| k == "content-length")
                            .map_or(0, |(_, v)| v.parse().unwrap())
                    };
                    while self.buf.len() < n + len {
                        if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                            return None;
                        }
                    }
                    let body = self.buf[n..n + len].to_vec();
                    self.buf.drain(..n + len);
                    return Some(Got {
                        status,
                        headers,
                        body,
                    });
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("an answer or the end of the connection within 5 s")
    }

    async fn answer(&mut self) -> Got {
        self.answer_of(false).await.expect("an answer")
    }

    /// Whether the server closes the connection (end of stream, nothing more) within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(within, self.stream.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty() && self.buf.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn keep_alive_serves_requests_in_turn() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    for i in 0..3 {
        c.send(format!("GET /hello?{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let a = c.answer().await;
        assert_eq!((a.status, &a.body), (200, &format!("hi {i}").into_bytes()));
        assert!(a.header("date").is_some_and(|d| d.ends_with(" GMT")));
        assert_eq!(a.header("connection"), None);
    }
    c.send(post("/echo", "report").as_bytes()).await;
    assert_eq!(c.answer().await.body, b"report");
    // HEAD: the length of the GET's answer, no body.
    c.send(b"HEAD /hello HTTP/1.1\r\n\r\n").await;
    let a = c.answer_of(true).await.unwrap();
    assert_eq!(a.header("content-length"), Some("3"));
    c.send(b"GET /hello HTTP/1.1\r\n\r\n").await;
    assert_eq!(c.answer().await.body, b"hi ", "nothing left over from HEAD");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    let mut all = String::new();
    all.push_str("GET /hello?1 HTTP/1.1\r\n\r\n");
    all.push_str(&post("/echo", "two"));
    all.push_str(&post("/echo", &"3".repeat(5000)));
    all.push_str("GET /hello?4 HTTP/1.1\r\nConnection: close\r\n\r\n");
    c.send(all.as_bytes()).await;
    assert_eq!(c.answer().await.body, b"hi 1");
    assert_eq!(c.answer().await.body, b"two");
    assert_eq!(c.answer().await.body, "3".repeat(5000).as_bytes());
    let last = c.answer().await;
    assert_eq!(last.body, b"hi 4");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_slowloris_head_is_cut_at_the_header_timeout() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    let started = tokio::time::Instant::now();
    // A byte every 100 ms: each arrives well within any per-read timeout, the whole head never.
    let head = b"GET /hello HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for b in head.iter().take(20) {
        if c.stream.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.closed_within(Duration::from_secs(2)).await,
        "closed without an answer"
    );
    let took = started.elapsed();
    assert!(
        took < HEADER_TIMEOUT + Duration::from_millis(1500),
        "{took:?}"
    );
    // An idle keep-alive connection is closed at the same timeout.
    let mut idle = connect(s.addr).await;
    idle.send(b"GET /hello HTTP/1.1\r\n\r\n").await;
    idle.answer().await;
    assert!(idle.closed_within(HEADER_TIMEOUT * 3).await);
}

#[tokio::test]
async fn an_oversized_head_gets_431_and_a_close() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    let big = format!("GET /hello HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    c.send(big.as_bytes()).await;
    let a = c.answer().await;
    assert_eq!(a.status, 431);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)).await);
    // Too many header fields too.
    let mut c = connect(s.addr).await;
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    c.send(format!("GET /hello HTTP/1.1\r\n{many}\r\n").as_bytes())
        .await;
    assert_eq!(c.answer().await.status, 431);
    // A head just under the limit is served.
    let mut c = connect(s.addr).await;
    let fits = format!("GET /hello HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(8000));
    c.send(fits.as_bytes()).await;
    assert_eq!(c.answer().await.status, 200);
}

#[tokio::test]
async fn a_half_sent_body_gets_408_or_400() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
        .await;
    let a = c.answer().await;
    assert_eq!(a.status, 408, "{:?}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)).await);
    // The client gives up sending (half close) but still reads: 400.
    let mut c = connect(s.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
        .await;
    c.stream.shutdown().await.unwrap();
    assert_eq!(c.answer().await.status, 400);
}

#[tokio::test]
async fn transfer_encodings_are_refused_and_close() {
    let s = start().await;
    for (te, want) in [
        ("chunked", 411),
        ("gzip, chunked", 501),
        ("chunked, gzip", 400),
    ] {
        let mut c = connect(s.addr).await;
        c.send(
            format!(
                "POST /echo HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /hello HTTP/1.1\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let a = c.answer().await;
        assert_eq!(a.status, want, "{te}");
        assert_eq!(a.header("connection"), Some("close"), "{te}");
        // The chunks are never taken for a request.
        assert!(c.closed_within(Duration::from_secs(3)).await, "{te}");
    }
    // With a Content-Length as well (a smuggling attempt): the same.
    let mut c = connect(s.addr).await;
    c.send(
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(c.answer().await.status, 411);
    assert!(c.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn bad_content_lengths_get_400_and_a_close() {
    let s = start().await;
    for cl in [
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: 1, 1",
        "Content-Length: 3\r\nContent-Length: 3",
        "Content-Length: 3\r\nContent-Length: 4",
    ] {
        let mut c = connect(s.addr).await;
        c.send(format!("POST /echo HTTP/1.1\r\n{cl}\r\n\r\nabc").as_bytes())
            .await;
        let a = c.answer().await;
        assert_eq!(a.status, 400, "{cl}");
        assert_eq!(a.header("connection"), Some("close"), "{cl}");
        assert!(c.closed_within(Duration::from_secs(3)).await, "{cl}");
    }
    // Not HTTP at all.
    let mut c = connect(s.addr).await;
    c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        .await;
    assert_eq!(c.answer().await.status, 400);
}

#[tokio::test]
async fn an_unread_body_closes_the_connection_after_the_answer() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    // The 404 handler does not read the body: its bytes are never taken for a request.
    c.send(b"POST /nothing HTTP/1.1\r\nContent-Length: 24\r\n\r\nGET /hello HTTP/1.1\r\n\r\n")
        .await;
    let a = c.answer().await;
    assert_eq!(a.status, 404);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn http_1_0_and_connection_close() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    c.send(b"GET /hello HTTP/1.0\r\n\r\n").await;
    let a = c.answer().await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(3)).await);

    let mut c = connect(s.addr).await;
    c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let a = c.answer().await;
    assert_eq!(a.header("connection"), Some("keep-alive"));
    c.send(b"GET /hello?again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(c.answer().await.body, b"hi again");

    let mut c = connect(s.addr).await;
    c.send(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    let a = c.answer().await;
    assert_eq!((a.status, a.header("connection")), (200, Some("close")));
    assert!(c.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn expect_100_continue() {
    let s = start().await;
    let mut c = connect(s.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    let a = c.answer_of(true).await.unwrap();
    assert_eq!(a.status, 100);
    c.send(b"body").await;
    assert_eq!(c.answer().await.body, b"body");
}

async fn held(s: &Server, n: usize) {
    for _ in 0..200 {
        if s.service.held.load(Ordering::SeqCst) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "held: {} instead of {n}",
        s.service.held.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_client_leaving_a_long_poll_releases_its_slot() {
    let s = start().await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    a.send(b"GET /wait HTTP/1.1\r\n\r\n").await;
    b.send(b"GET /wait HTTP/1.1\r\n\r\n").await;
    held(&s, 2).await;
    drop(a);
    held(&s, 1).await;
    // A request pipelined behind a long poll waits for it, and is then answered.
    b.send(b"GET /hello?next HTTP/1.1\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.service.held.load(Ordering::SeqCst), 1, "still held");
    s.service.release.notify_waiters();
    assert_eq!(b.answer().await.status, 304);
    assert_eq!(b.answer().await.body, b"hi next");
    held(&s, 0).await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_answers_open_requests() {
    let s = start().await;
    let mut idle = connect(s.addr).await;
    idle.send(b"GET /hello HTTP/1.1\r\n\r\n").await;
    idle.answer().await;
    let mut polling = connect(s.addr).await;
    polling.send(b"GET /wait HTTP/1.1\r\n\r\n").await;
    held(&s, 1).await;
    s.shutdown.send(true).unwrap();
    assert!(idle.closed_within(Duration::from_secs(1)).await);
    s.service.release.notify_waiters();
    let a = polling.answer().await;
    assert_eq!((a.status, a.header("connection")), (304, Some("close")));
    assert!(polling.closed_within(Duration::from_secs(2)).await);
}

/// TLS: rustls decrypts whole records, so a request pipelined in the same record as a body
/// waits in rustls, not in the socket: it must be served without more bytes arriving.
#[tokio::test]
async fn tls_serves_pipelined_requests_buffered_in_rustls() {
    let ca = apollo_testca::TestCa::new();
    let certified =
        crate::tls::load_certified_key(ca.cert_pem.as_bytes(), ca.key_pem.as_bytes()).unwrap();
    let reloadable = Arc::new(crate::reload::Reloadable::new(Arc::new(certified)));
    let config = crate::tls::server_config(reloadable).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Arc::new(Test::default());
    let svc = service.clone();
    tokio::spawn(async move {
        let (_keep, mut rx) = watch::channel(false);
        let (stream, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(stream).await.unwrap();
        let _ = serve_connection(tls, &*svc, LIMITS, &mut rx).await;
    });
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(ca.ca_pem.as_bytes()).unwrap()
    };
    roots.add(ca_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let mut c = Client {
        stream,
        buf: Vec::new(),
    };
    let mut all = post("/echo", &"b".repeat(3000));
    all.push_str("GET /hello?after HTTP/1.1\r\n\r\n");
    c.send(all.as_bytes()).await;
    assert_eq!(c.answer().await.body.len(), 3000);
    assert_eq!(c.answer().await.body, b"hi after");
    // A long poll over TLS, its client leaving.
    c.send(b"GET /wait HTTP/1.1\r\n\r\n").await;
    for _ in 0..200 {
        if service.held.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(service.held.load(Ordering::SeqCst), 1);
    drop(c);
    for _ in 0..200 {
        if service.held.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the TLS long poll's slot was not released");
}
