//! Request counting: a client whose every request to the API server is reported, by verb and
//! resource, to a counter the component supplies ([`CountRequests`], e.g. a closure feeding a
//! Prometheus counter), so this crate stays free of any component's metrics.
//!
//! [`counting_client`] wraps a built [`kube::Client`] (its whole request stack: auth, kube's
//! retry when on) as the tower service of a new client, so one call of the API counts once,
//! however often the stack inside retries it. The gateway counts every request by verb (the
//! proof that it lists once per (re)sync whatever the device traffic); the controller counts
//! its writes by verb and resource.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, Uri};
use kube::client::Body;

/// One request to the API server, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRequest<'a> {
    /// `get`, `list`, `watch`, `create`, `apply` (a server-side apply patch), `patch`,
    /// `update`, `delete` or `other` ([`request_verb`]).
    pub verb: &'static str,
    /// The plural resource, with `/<subresource>` for a subresource (`deviceprocesses/status`);
    /// empty for a path that names no resource (discovery, `/version`).
    pub resource: &'a str,
}

impl ApiRequest<'_> {
    /// Whether the request changes something (anything but get, list and watch).
    pub fn is_write(&self) -> bool {
        !matches!(self.verb, "get" | "list" | "watch")
    }
}

/// What counts the requests of a [`counting_client`]; any `Fn(ApiRequest)` is one.
pub trait CountRequests: Send + Sync + 'static {
    /// Counts one request (called as it is sent; keep it cheap).
    fn count(&self, request: ApiRequest<'_>);
}

impl<F> CountRequests for F
where
    F: Fn(ApiRequest<'_>) + Send + Sync + 'static,
{
    fn count(&self, request: ApiRequest<'_>) {
        self(request)
    }
}

/// `client` with every request reported to `counter` as it is sent.
pub fn counting_client(client: kube::Client, counter: impl CountRequests) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    kube::Client::new(
        Counting {
            inner: client,
            counter: Arc::new(counter),
        },
        namespace,
    )
}

#[derive(Clone)]
struct Counting {
    inner: kube::Client,
    counter: Arc<dyn CountRequests>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

impl tower::Service<Request<Body>> for Counting {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let resource = resource_of(req.uri());
        self.counter.count(ApiRequest {
            verb: request_verb(&req),
            resource: &resource,
        });
        let client = self.inner.clone();
        Box::pin(async move { client.send(req).await })
    }
}

/// The verb of `req` as [`verb_of`] names it, except that a server-side apply patch (content
/// type `application/apply-patch+yaml`) is `apply`, as the API server's request metrics
/// name it.
pub fn request_verb<B>(req: &Request<B>) -> &'static str {
    let apply = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    if *req.method() == Method::PATCH && apply {
        "apply"
    } else {
        verb_of(req.method(), req.uri())
    }
}

/// The verb of an API request, as the API server's audit log would name it: a GET is a
/// `watch` with `watch=true`, a `list` of a collection, else a `get`.
pub fn verb_of(method: &Method, uri: &Uri) -> &'static str {
    match *method {
        Method::GET => {
            let watch = uri.query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
            });
            if watch {
                "watch"
            } else if parse(uri.path()).is_some_and(|p| p.name.is_none()) {
                "list"
            } else {
                "get"
            }
        }
        Method::POST => "create",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// The resource of an API request: `plural` or `plural/subresource`; empty when the path
/// names none.
pub fn resource_of(uri: &Uri) -> Cow<'_, str> {
    match parse(uri.path()) {
        Some(Path {
            resource,
            subresource: Some(sub),
            ..
        }) => Cow::Owned(format!("{resource}/{sub}")),
        Some(p) => Cow::Borrowed(p.resource),
        None => Cow::Borrowed(""),
    }
}

/// A resource path's parts, read as the API server's `RequestInfo` does.
struct Path<'a> {
    resource: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse(path: &str) -> Option<Path<'_>> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // `/api/<version>/…` (the core group) or `/apis/<group>/<version>/…`.
    let mut rest = match segments.first() {
        Some(&"api") => segments.get(2..)?,
        Some(&"apis") => segments.get(3..)?,
        _ => return None,
    };
    // `namespaces/<ns>/<resource>…`, except a Namespace's own subresources.
    if rest.first() == Some(&"namespaces")
        && rest.len() > 2
        && !matches!(rest[2], "status" | "finalize")
    {
        rest = &rest[2..];
    }
    let resource = rest.first()?;
    Some(Path {
        resource,
        name: rest.get(1).copied(),
        subresource: rest.get(2).copied(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};

    use super::*;

    #[test]
    fn verbs() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        let base = "/apis/azure.com/v1alpha1/namespaces/default/deviceprocesses";
        assert_eq!(verb_of(&Method::GET, &u(base)), "list");
        assert_eq!(
            verb_of(&Method::GET, &u(&format!("{base}?limit=500"))),
            "list"
        );
        assert_eq!(
            verb_of(
                &Method::GET,
                &u(&format!("{base}?watch=true&resourceVersion=5"))
            ),
            "watch"
        );
        assert_eq!(verb_of(&Method::GET, &u(&format!("{base}/x"))), "get");
        assert_eq!(verb_of(&Method::GET, &u("/api/v1/namespaces/a")), "get");
        assert_eq!(verb_of(&Method::GET, &u("/api/v1/namespaces")), "list");
        assert_eq!(verb_of(&Method::GET, &u("/apis/azure.com/v1alpha1")), "get");
        assert_eq!(verb_of(&Method::GET, &u("/version")), "get");
        assert_eq!(
            verb_of(&Method::PATCH, &u(&format!("{base}/x/status"))),
            "patch"
        );
        assert_eq!(
            verb_of(
                &Method::POST,
                &u("/apis/events.k8s.io/v1/namespaces/default/events")
            ),
            "create"
        );
    }

    #[test]
    fn resources() {
        let r = |s: &str| resource_of(&s.parse::<Uri>().unwrap()).into_owned();
        let base = "/apis/azure.com/v1alpha1/namespaces/default/deviceprocesses";
        assert_eq!(r(base), "deviceprocesses");
        assert_eq!(r(&format!("{base}/x?fieldManager=y")), "deviceprocesses");
        assert_eq!(r(&format!("{base}/x/status")), "deviceprocesses/status");
        assert_eq!(
            r("/apis/azure.com/v1alpha1/deviceprocesses"),
            "deviceprocesses"
        );
        assert_eq!(r("/api/v1/namespaces/default/configmaps/c"), "configmaps");
        assert_eq!(r("/api/v1/namespaces/default"), "namespaces");
        assert_eq!(
            r("/api/v1/namespaces/default/finalize"),
            "namespaces/finalize"
        );
        assert_eq!(r("/api/v1/nodes/n1/status"), "nodes/status");
        assert_eq!(r("/apis/azure.com/v1alpha1"), "");
        assert_eq!(r("/apis"), "");
        assert_eq!(r("/version"), "");
    }

    /// A stand-in API server: answers every request 200 with an empty list (what a list,
    /// and a watch that ends at once, can read).
    #[derive(Clone)]
    struct FakeApi;

    impl tower::Service<Request<Body>> for FakeApi {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Response<Body>, std::convert::Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            let body = br#"{"apiVersion":"v1","kind":"List","metadata":{},"items":[]}"#;
            std::future::ready(Ok(Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(body.to_vec()))
                .unwrap()))
        }
    }

    #[tokio::test]
    async fn counts_each_request_by_verb_and_resource() {
        let seen = Arc::new(Mutex::new(Vec::<(&'static str, String)>::new()));
        let counter = {
            let seen = seen.clone();
            move |r: ApiRequest<'_>| seen.lock().unwrap().push((r.verb, r.resource.to_string()))
        };
        let client = counting_client(kube::Client::new(FakeApi, "default"), counter);
        let send = |req: Request<Vec<u8>>| {
            let client = client.clone();
            async move { client.send(req.map(Body::from)).await.unwrap() }
        };
        let dp =
            kube::core::Request::new("/apis/azure.com/v1alpha1/namespaces/default/deviceprocesses");
        let events = kube::core::Request::new("/apis/events.k8s.io/v1/namespaces/default/events");
        send(dp.list(&ListParams::default()).unwrap()).await;
        send(dp.watch(&WatchParams::default(), "5").unwrap()).await;
        let merge = Patch::Merge(serde_json::json!({"status": {}}));
        let pp = PatchParams::default();
        send(dp.patch_subresource("status", "x", &pp, &merge).unwrap()).await;
        let apply = Patch::Apply(serde_json::json!({"spec": {}}));
        let ssa = PatchParams::apply("apollo").force();
        send(dp.patch("x", &ssa, &apply).unwrap()).await;
        send(
            events
                .create(&PostParams::default(), b"{}".to_vec())
                .unwrap(),
        )
        .await;
        send(dp.delete("x", &DeleteParams::default()).unwrap()).await;
        let seen = seen.lock().unwrap().clone();
        let want: Vec<(&'static str, String)> = [
            ("list", "deviceprocesses"),
            ("watch", "deviceprocesses"),
            ("patch", "deviceprocesses/status"),
            ("apply", "deviceprocesses"),
            ("create", "events"),
            ("delete", "deviceprocesses"),
        ]
        .into_iter()
        .map(|(v, r)| (v, r.to_string()))
        .collect();
        assert_eq!(seen, want);
        let writes = want
            .iter()
            .filter(|(verb, resource)| ApiRequest { verb, resource }.is_write())
            .count();
        assert_eq!(writes, 4);
    }

    #[tokio::test]
    async fn a_call_through_the_api_counts_once() {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = {
            let count = count.clone();
            move |_: ApiRequest<'_>| {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let client = counting_client(kube::Client::new(FakeApi, "default"), counter);
        let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::default_namespaced(client);
        let listed = cms.list(&ListParams::default()).await.unwrap();
        assert!(listed.items.is_empty());
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
