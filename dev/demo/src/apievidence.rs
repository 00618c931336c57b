//! The API server's side of the evidence for steps 5 and 9 on clusters without the development
//! server's per-identity request log: a real kube-apiserver exposes
//! `apiserver_request_total{verb,group,resource,subresource,scope,code,...}` on `GET /metrics`
//! to identities allowed the non-resource URL `/metrics`. It counts every client (no user
//! label), so it shows what the whole cluster did: over a quiet period, no LIST of
//! DeviceProcesses and no status write by anyone; in step 9, the refusals counted (it cannot
//! attribute requests to identities, and says so). Where neither the request log nor `/metrics` is readable, the gateway's own
//! counters stand in, and the step says which evidence it used.

use crate::cluster::Kube;
use crate::metrics::Scrape;

/// The metric this module reads.
pub const REQUEST_TOTAL: &str = "apiserver_request_total";

/// Which evidence a step used for the API server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The development API server's per-identity request log (`/_devcluster/requests`).
    RequestLog,
    /// The API server's `apiserver_request_total` (`/metrics`), all clients together.
    ApiServerMetrics,
    /// The gateway's own counters of its API requests (`apollo_gateway_api_requests_total`).
    GatewayCounters,
}

impl Evidence {
    /// One line for the step's output.
    pub fn describe(self) -> &'static str {
        match self {
            Evidence::RequestLog => {
                "evidence: the development API server's per-identity request log"
            }
            Evidence::ApiServerMetrics => {
                "evidence: the API server's apiserver_request_total (GET /metrics; all clients \
                 together, no per-identity split)"
            }
            Evidence::GatewayCounters => {
                "evidence: the gateway's own API request counters (no per-identity request log, \
                 and /metrics of the API server not readable with this identity)"
            }
        }
    }
}

/// `GET /metrics` of the API server as the demo's identity; `None` when refused (RBAC) or
/// unavailable, or when it holds no `apiserver_request_total`.
pub async fn scrape(kube: &Kube) -> Option<Scrape> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = kube.client.request_text(req).await.ok()?;
    let s = Scrape::parse(&text);
    s.samples
        .iter()
        .any(|x| x.name == REQUEST_TOTAL)
        .then_some(s)
}

/// The counts steps 5 and 9 compare, from one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApiCounts {
    /// LISTs of DeviceProcesses (any client).
    pub list_dp: f64,
    /// WATCHes of DeviceProcesses started.
    pub watch_dp: f64,
    /// Writes of DeviceProcess status (PATCH, APPLY, PUT on `/status`).
    pub status_writes_dp: f64,
    /// Event writes (POST, PATCH), both API groups.
    pub event_writes: f64,
    /// Requests answered 401 (a credential the server does not know), where the server counts
    /// them.
    pub unauthorized: f64,
    /// Requests answered 403 (authenticated, not allowed).
    pub forbidden: f64,
}

impl ApiCounts {
    /// Reads the counters from a scrape of the API server.
    pub fn from_scrape(s: &Scrape) -> ApiCounts {
        let dp = |verb: &str, sub: &str| {
            s.sum(
                REQUEST_TOTAL,
                &[
                    ("group", "azure.com"),
                    ("resource", "deviceprocesses"),
                    ("subresource", sub),
                    ("verb", verb),
                ],
            )
        };
        let events = |verb: &str| s.sum(REQUEST_TOTAL, &[("resource", "events"), ("verb", verb)]);
        ApiCounts {
            list_dp: dp("LIST", ""),
            watch_dp: dp("WATCH", ""),
            status_writes_dp: dp("PATCH", "status") + dp("APPLY", "status") + dp("PUT", "status"),
            event_writes: events("POST") + events("PATCH"),
            unauthorized: s.sum(REQUEST_TOTAL, &[("code", "401")]),
            forbidden: s.sum(REQUEST_TOTAL, &[("code", "403")]),
        }
    }

    /// `after - self`, field by field.
    pub fn delta(&self, after: &ApiCounts) -> ApiCounts {
        ApiCounts {
            list_dp: after.list_dp - self.list_dp,
            watch_dp: after.watch_dp - self.watch_dp,
            status_writes_dp: after.status_writes_dp - self.status_writes_dp,
            event_writes: after.event_writes - self.event_writes,
            unauthorized: after.unauthorized - self.unauthorized,
            forbidden: after.forbidden - self.forbidden,
        }
    }

    /// What step 5 checks over the quiet period (`self` is the delta): no client listed
    /// DeviceProcesses or wrote their status. Returns the problems.
    pub fn quiet_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.list_dp != 0.0 {
            problems.push(format!(
                "the API server served {} LISTs of DeviceProcesses during the quiet period \
                 (apiserver_request_total, all clients)",
                self.list_dp
            ));
        }
        if self.status_writes_dp != 0.0 {
            problems.push(format!(
                "the API server saw {} DeviceProcess status writes during the quiet period \
                 (apiserver_request_total, all clients)",
                self.status_writes_dp
            ));
        }
        problems
    }
}

/// The `apiserver_request_total` lines about DeviceProcesses and events, for display.
pub fn shown(s: &Scrape) -> Vec<String> {
    let mut lines = s.lines_matching(&[REQUEST_TOTAL]);
    lines.retain(|l| {
        l.contains("resource=\"deviceprocesses\"") || l.contains("resource=\"events\"")
    });
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="azure.com",resource="deviceprocesses",scope="namespace",subresource="",verb="LIST",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="azure.com",resource="deviceprocesses",scope="namespace",subresource="",verb="WATCH",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="azure.com",resource="deviceprocesses",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="azure.com",resource="deviceprocesses",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 1
apiserver_request_total{code="201",component="apiserver",dry_run="",group="events.k8s.io",resource="events",scope="namespace",subresource="",verb="POST",version="v1"} 3
apiserver_request_total{code="401",component="apiserver",dry_run="",group="",resource="",scope="",subresource="",verb="GET",version=""} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="LIST",version="v1"} 9
"#;

    #[test]
    fn counts_from_a_scrape() {
        let c = ApiCounts::from_scrape(&Scrape::parse(TEXT));
        assert_eq!(
            c,
            ApiCounts {
                list_dp: 2.0,
                watch_dp: 1.0,
                status_writes_dp: 6.0,
                event_writes: 3.0,
                unauthorized: 1.0,
                forbidden: 0.0
            }
        );
        let quiet = c.delta(&c);
        assert!(quiet.quiet_problems().is_empty());
        let busier = ApiCounts {
            list_dp: 3.0,
            status_writes_dp: 7.0,
            ..c
        };
        let problems = c.delta(&busier).quiet_problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("1 LISTs of DeviceProcesses"));
        assert_eq!(shown(&Scrape::parse(TEXT)).len(), 5);
    }

    /// Against the development API server: admin reads the counters and sees its own LIST of
    /// DeviceProcesses; the gateway's identity (no `/metrics` grant) gets nothing, so the step
    /// falls back to the gateway's counters.
    #[tokio::test]
    async fn scrapes_the_api_server_where_rbac_allows() {
        use apollo_devcluster::{DevCluster, Options, User};
        let dir = tempfile::tempdir().unwrap();
        let dev = DevCluster::start(Options {
            dir: dir.path().to_path_buf(),
            ..Options::default()
        })
        .await
        .unwrap();
        let admin = Kube::connect(&dev.kubeconfig(User::Admin), "default")
            .await
            .unwrap();
        let crd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../k8s/crds/deviceprocesses.azure.com.yaml");
        admin.apply_path(&crd).await.unwrap();
        let before = ApiCounts::from_scrape(&scrape(&admin).await.expect("admin may read"));
        let dps: kube::Api<apollo_api::DeviceProcess> =
            kube::Api::namespaced(admin.client.clone(), "default");
        for _ in 0..2 {
            dps.list(&Default::default()).await.unwrap();
        }
        let after = ApiCounts::from_scrape(&scrape(&admin).await.unwrap());
        assert_eq!(before.delta(&after).list_dp, 2.0);
        let gateway = Kube::connect(&dev.kubeconfig(User::Gateway), "default")
            .await
            .unwrap();
        assert!(scrape(&gateway).await.is_none());
        dev.shutdown().await;
    }

    #[test]
    fn evidence_is_named() {
        assert!(
            Evidence::ApiServerMetrics
                .describe()
                .contains("apiserver_request_total")
        );
        assert!(Evidence::GatewayCounters.describe().contains("gateway"));
        assert!(Evidence::RequestLog.describe().contains("request log"));
    }
}
