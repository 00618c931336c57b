//! The gateway client: signed requests over plain HTTP/1.1 (hyper-util), responses verified
//! against the device key and the request's nonce before anything in them is used.

use std::time::Duration;

use apollo_protocol::auth::{self, AuthError, HEADER_SIGNATURE, RequestSigner};
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
            ClientError::Signature { .. } => "bad-signature",
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
#[cfg(not(feature = "tls"))]
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// A pooled plain-HTTP client with the agent's connection settings (no TLS configured).
#[cfg(feature = "tls")]
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(crate::tls::GatewayConnector::new(connect_timeout, None))
}

/// Signs, sends, verifies.
#[derive(Clone)]
pub struct GatewayClient {
    http: HttpClient,
    base: String,
    key: DeviceKey,
    request_timeout: Duration,
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
        GatewayClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            request_timeout,
        }
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
            StatusCode::NOT_MODIFIED => Ok(DesiredAnswer::NotModified),
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
                            "ETag {etag} does not name its revision {:?}",
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

    /// Send a signed request; return a verified 2xx/304 answer or an error.
    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        if_none_match: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let signed = RequestSigner::new(&self.key).sign_now(method.as_str(), path_and_query, &body);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.base, path_and_query));
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
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
                });
            let gateway_date = (status == StatusCode::UNAUTHORIZED)
                .then(|| header_str(DATE.as_str()).map(str::to_string))
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
        auth::verify_response(
            &self.key,
            status.as_u16(),
            &signed.nonce,
            etag.as_deref(),
            &body,
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
