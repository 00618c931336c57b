//! The gateway client: signed requests over plain HTTP/1.1 (hyper-util), responses verified
//! against the device key and the request's nonce before anything in them is used.
//!
//! Requests are signed with signature version 2, which binds the `If-None-Match` sent; a `304`
//! is accepted only when its signed ETag is the one the agent holds. Text from unsigned error
//! answers (anyone on the path may have written it) is escaped and bounded before it can reach
//! a log line ([`escape_untrusted`]).

use std::time::Duration;

use apollo_protocol::auth::{self, AuthError, AuthVersion, HEADER_SIGNATURE, RequestSigner};
use apollo_protocol::keys::DeviceKey;
use apollo_protocol::wire::{
    self, CONTENT_TYPE_JSON, DesiredDocument, ErrorBody, Report, ReportAck,
};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, DATE, ETAG, IF_NONE_MATCH};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
#[cfg(not(feature = "tls"))]
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest response body the agent accepts (a desired document with many processes).
pub const MAX_RESPONSE_BODY: usize = 4 * 1024 * 1024;

/// Most characters of unsigned text (an error message) the agent keeps for its logs.
pub const MAX_UNTRUSTED_TEXT: usize = 200;

/// Text from an unsigned answer made safe for one log line: control characters (newlines,
/// escape sequences), Unicode format characters (bidi overrides) and backslashes escaped as
/// `\u{..}` / `\\`, and at most `max` characters kept (an ellipsis marks the cut).
pub fn escape_untrusted(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let format_char = matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}');
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || format_char {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A failed exchange with the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting or talking HTTP failed.
    #[error("cannot reach the gateway: {0}")]
    Unreachable(String),
    /// No complete answer in time.
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    /// The gateway answered with an error status.
    #[error("the gateway answered {status}: {message}{}", skew_hint(.gateway_date))]
    Status {
        status: u16,
        message: String,
        /// The gateway's `Date` header (on 401, to tell clock skew apart).
        gateway_date: Option<String>,
        /// The gateway's `Retry-After` (seconds form), on 429 and 503.
        retry_after: Option<Duration>,
    },
    /// The response's signature is missing or wrong: forged, replayed, or a proxy in between.
    #[error(
        "refused a response with a {what} signature (status {status}): forged, replayed or altered in transit"
    )]
    Signature { status: u16, what: &'static str },
    /// A correctly signed `304` for another document than the one held (or while holding
    /// none): what a proxy rewriting `If-None-Match` obtains from a v1 gateway.
    #[error(
        "refused a 304 Not Modified for {got} while holding {held}: the answer is not about the document held"
    )]
    StaleNotModified { held: String, got: String },
    /// A signed response whose body is not what the protocol says.
    #[error("the gateway's {what} is malformed: {detail}")]
    BadBody { what: &'static str, detail: String },
}

fn skew_hint(date: &Option<String>) -> String {
    match date {
        Some(d) => format!(
            " (gateway clock: {d}; agent clock: {}; a difference over 60s fails authentication)",
            httpdate_now()
        ),
        None => String::new(),
    }
}

fn httpdate_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl ClientError {
    /// How long the gateway asked to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short kind, to log one line per change of kind rather than per retry.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Unreachable(_) | ClientError::Timeout(_) => "unreachable",
            ClientError::Status { .. } => "error-status",
            ClientError::Signature { .. } | ClientError::StaleNotModified { .. } => "refused",
            ClientError::BadBody { .. } => "bad-body",
        }
    }
}

/// The answer to a desired-state request.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredAnswer {
    /// `200`: the document with its ETag.
    Document {
        etag: String,
        document: DesiredDocument,
    },
    /// `304`: the held document is current.
    NotModified,
}

/// The HTTP client (connection pool) a [`GatewayClient`] sends through.
#[cfg(not(feature = "tls"))]
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;
/// The HTTP client (connection pool) a [`GatewayClient`] sends through.
#[cfg(feature = "tls")]
pub type HttpClient = Client<crate::tls::GatewayConnector, Full<Bytes>>;

/// A pooled plain-HTTP client with the agent's connection settings.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    http_client_from(connect_timeout, &SharedPool::default())
}

/// How a connection pool shared by many simulated agents behaves; an agent of its own uses
/// the default (every connection it opened may stay idle for reuse).
#[derive(Debug, Clone, Default)]
pub struct SharedPool {
    /// Source address of every connection (bound before connecting): a fleet simulator
    /// spreads its agents over loopback addresses (127.0.0.0/8) so that the ephemeral port
    /// range of one source address does not limit the connections it opens.
    pub local_address: Option<std::net::IpAddr>,
    /// Idle connections kept for reuse; `None`: unbounded. A simulator that cannot hold a
    /// connection per agent (open-file limit) bounds it, so that a burst of requests does not
    /// leave a descriptor behind per request in flight.
    pub max_idle: Option<usize>,
}

fn pool_builder(pool: &SharedPool) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(90));
    if let Some(max) = pool.max_idle {
        builder.pool_max_idle_per_host(max);
    }
    builder
}

/// [`http_client`] with the settings of a pool shared by many agents.
#[cfg(not(feature = "tls"))]
pub fn http_client_from(connect_timeout: Duration, pool: &SharedPool) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_local_address(pool.local_address);
    pool_builder(pool).build(connector)
}

/// [`http_client`] with the settings of a pool shared by many agents (no TLS configured).
#[cfg(feature = "tls")]
pub fn http_client_from(connect_timeout: Duration, pool: &SharedPool) -> HttpClient {
    pool_builder(pool).build(
        crate::tls::GatewayConnector::new(connect_timeout, None)
            .with_local_address(pool.local_address),
    )
}

/// Signs, sends, verifies.
///
/// The gateway may be reachable at several URLs (`APOLLO_GATEWAY_URL` with commas: replicas
/// at separate addresses). Requests go to the current one; when it cannot be reached, times
/// out or answers `502`/`503`/`504`, the client moves on to the next URL (round robin), so
/// the caller's next attempt (after its backoff) tries another replica.
#[derive(Clone)]
pub struct GatewayClient {
    http: HttpClient,
    bases: std::sync::Arc<[String]>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    key: DeviceKey,
    request_timeout: Duration,
}

/// The URLs of a comma-separated list, without trailing slashes or empty entries.
pub fn split_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

/// Whether an error should make the client try the next gateway URL.
pub fn fails_over(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable(_) | ClientError::Timeout(_) => true,
        ClientError::Status { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Bytes,
}

impl GatewayClient {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str, key: DeviceKey, request_timeout: Duration) -> Self {
        Self::with_http(http_client(request_timeout), base, key, request_timeout)
    }

    /// A client sharing the connection pool `http` (a fleet simulator runs thousands of agents
    /// over one pool; an agent process uses [`GatewayClient::new`]).
    pub fn with_http(
        http: HttpClient,
        base: &str,
        key: DeviceKey,
        request_timeout: Duration,
    ) -> Self {
        let mut bases = split_urls(base);
        if bases.is_empty() {
            bases.push(base.trim_end_matches('/').to_string());
        }
        GatewayClient {
            http,
            bases: bases.into(),
            current: Default::default(),
            key,
            request_timeout,
        }
    }

    /// The gateway URL requests go to now.
    pub fn current_url(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// Every gateway URL, in order.
    pub fn urls(&self) -> &[String] {
        &self.bases
    }

    /// `GET desired`, with `If-None-Match` when holding a document and `?wait=` for a long poll.
    pub async fn desired(
        &self,
        etag: Option<&str>,
        wait: Duration,
    ) -> Result<DesiredAnswer, ClientError> {
        let mut path = wire::desired_path(self.key.device());
        if !wait.is_zero() {
            path.push('?');
            path.push_str(&wire::wait_query(wait));
        }
        let answer = self
            .exchange(
                Method::GET,
                &path,
                Bytes::new(),
                etag,
                self.request_timeout + wait,
            )
            .await?;
        match answer.status {
            StatusCode::NOT_MODIFIED => {
                // A 304 says "what you hold is current": only true of the ETag we sent.
                let same = etag.is_some() && answer.etag.as_deref() == etag;
                if !same {
                    return Err(ClientError::StaleNotModified {
                        held: etag
                            .map_or_else(|| "no document".to_string(), |e| escape_untrusted(e, 80)),
                        got: answer
                            .etag
                            .as_deref()
                            .map_or_else(|| "no ETag".to_string(), |e| escape_untrusted(e, 80)),
                    });
                }
                Ok(DesiredAnswer::NotModified)
            }
            StatusCode::OK => {
                let document: DesiredDocument =
                    serde_json::from_slice(&answer.body).map_err(|e| ClientError::BadBody {
                        what: "desired document",
                        detail: e.to_string(),
                    })?;
                let etag = answer.etag.ok_or_else(|| ClientError::BadBody {
                    what: "desired document",
                    detail: "no ETag".into(),
                })?;
                if wire::revision_from_etag(&etag) != Some(document.revision.as_str()) {
                    return Err(ClientError::BadBody {
                        what: "desired document",
                        detail: format!(
                            "ETag {} does not name its revision {:?}",
                            escape_untrusted(&etag, 80),
                            document.revision
                        ),
                    });
                }
                if document.device != self.key.device() {
                    return Err(ClientError::BadBody {
                        what: "desired document",
                        detail: format!("it is for device {:?}", document.device),
                    });
                }
                Ok(DesiredAnswer::Document { etag, document })
            }
            other => Err(ClientError::BadBody {
                what: "desired answer",
                detail: format!("unexpected status {other}"),
            }),
        }
    }

    /// `POST report`.
    pub async fn report(&self, report: &Report) -> Result<ReportAck, ClientError> {
        let body = Bytes::from(serde_json::to_vec(report).unwrap_or_default());
        let answer = self
            .exchange(
                Method::POST,
                &wire::report_path(self.key.device()),
                body,
                None,
                self.request_timeout,
            )
            .await?;
        if answer.status != StatusCode::OK {
            return Err(ClientError::BadBody {
                what: "report answer",
                detail: format!("unexpected status {}", answer.status),
            });
        }
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::BadBody {
            what: "report acknowledgement",
            detail: e.to_string(),
        })
    }

    /// Send a signed request to the current URL; on an error that [`fails_over`], make the
    /// next URL current (unless another request did already).
    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        if_none_match: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        use std::sync::atomic::Ordering;
        let n = self.bases.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        let result = self
            .exchange_at(
                &self.bases[i],
                method,
                path_and_query,
                body,
                if_none_match,
                timeout,
            )
            .await;
        if let Err(e) = &result
            && n > 1
            && fails_over(e)
            && self
                .current
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(
                from = %self.bases[i],
                to = %self.bases[(i + 1) % n],
                error = %e,
                "gateway unreachable; failing over to the next URL"
            );
        }
        result
    }

    /// Send a signed request to `base`; return a verified 2xx/304 answer or an error.
    async fn exchange_at(
        &self,
        base: &str,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        if_none_match: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let signed = RequestSigner::new(&self.key).sign_now_v2(
            method.as_str(),
            path_and_query,
            if_none_match,
            &body,
        );
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{base}{path_and_query}"));
        if method == Method::POST {
            builder = builder.header(CONTENT_TYPE, CONTENT_TYPE_JSON);
        }
        if let Some(etag) = if_none_match {
            builder = builder.header(IF_NONE_MATCH, etag);
        }
        let mut request = builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Unreachable(format!("cannot build request: {e}")))?;
        signed.apply(request.headers_mut());

        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| ClientError::Unreachable(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable(format!("reading the response: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;

        let status = parts.status;
        let header_str = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let etag = header_str(ETAG.as_str()).map(str::to_string);
        let signature = header_str(HEADER_SIGNATURE);

        if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
            // Error answers carry no state; a signature is not required to treat them as
            // errors. Unsigned ones are reported as the gateway's word, nothing more.
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| {
                    String::from_utf8_lossy(&body[..body.len().min(4 * MAX_UNTRUSTED_TEXT)])
                        .into_owned()
                });
            let message = escape_untrusted(&message, MAX_UNTRUSTED_TEXT);
            let gateway_date = (status == StatusCode::UNAUTHORIZED)
                .then(|| header_str(DATE.as_str()).map(|d| escape_untrusted(d, 64)))
                .flatten();
            let retry_after = header_str("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(ClientError::Status {
                status: status.as_u16(),
                message,
                gateway_date,
                retry_after,
            });
        }
        auth::verify_response_versioned(
            &self.key,
            AuthVersion::V2,
            status.as_u16(),
            &signed.nonce,
            etag.as_deref(),
            &body,
            if_none_match,
            signature,
        )
        .map_err(|e| ClientError::Signature {
            status: status.as_u16(),
            what: match e {
                AuthError::Missing => "missing",
                AuthError::Malformed => "malformed",
                _ => "wrong",
            },
        })?;
        Ok(Answer { status, etag, body })
    }
}

/// An error with its sources, on one line (hyper's top-level messages are terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists_and_failover_errors() {
        assert_eq!(
            split_urls(" http://a:1/, http://b:2 ,,"),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(fails_over(&ClientError::Unreachable("refused".into())));
        assert!(fails_over(&ClientError::Timeout(Duration::from_secs(1))));
        let status = |status| ClientError::Status {
            status,
            message: String::new(),
            gateway_date: None,
            retry_after: None,
        };
        assert!(fails_over(&status(503)));
        assert!(!fails_over(&status(401)) && !fails_over(&status(429)));
        assert!(!fails_over(&ClientError::Signature {
            status: 200,
            what: "wrong"
        }));
    }

    #[tokio::test]
    async fn fails_over_round_robin_to_a_live_url() {
        // Two closed ports, then nothing else: each failed request moves to the next URL.
        let dead = |_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let urls: Vec<String> = (0..2).map(dead).collect();
        let key = apollo_protocol::keys::MasterKey::new("k", [1; 32])
            .unwrap()
            .derive("d1");
        let c = GatewayClient::new(&urls.join(","), key, Duration::from_millis(500));
        assert_eq!(c.urls().len(), 2);
        assert_eq!(c.current_url(), urls[0]);
        assert!(c.desired(None, Duration::ZERO).await.is_err());
        assert_eq!(c.current_url(), urls[1]);
        assert!(c.desired(None, Duration::ZERO).await.is_err());
        assert_eq!(c.current_url(), urls[0], "round robin");
    }

    #[test]
    fn untrusted_text_is_escaped_and_bounded() {
        let forged =
            "oops\n2026-01-01T00:00:00Z  INFO new desired revision\r\x1b[31mred\x1b[0m\u{202e}x\\";
        let out = escape_untrusted(forged, 200);
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert!(!out.contains('\u{202e}'));
        assert_eq!(
            out,
            "oops\\u{a}2026-01-01T00:00:00Z  INFO new desired revision\\u{d}\\u{1b}[31mred\\u{1b}[0m\\u{202e}x\\\\"
        );
        let long = "é".repeat(1000);
        let out = escape_untrusted(&long, 200);
        assert_eq!(out.chars().count(), 201);
        assert!(out.ends_with('…'));
        assert_eq!(escape_untrusted("plain text", 200), "plain text");
    }
}
