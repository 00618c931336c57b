//! `apiserver_request_total` on `GET /metrics`, as a real kube-apiserver exposes it: a counter
//! of resource requests by `verb` (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`,
//! `DELETE`), `group`, `version`, `resource`, `subresource`, `scope` (`resource`, `namespace`,
//! `cluster`), `component` (`apiserver`), `dry_run` and HTTP `code`. It counts every request
//! that was authenticated, refusals (403, 404, 409, 422, ...) included (a 401 is not
//! counted: the real server rejects those before its request metrics). Served only to
//! identities allowed the non-resource URL `/metrics` (`system:masters`, or an RBAC
//! `nonResourceURLs: ["/metrics"]` rule with verb `get`), as on a real cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::server::RequestInfo;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    code: u16,
    dry_run: String,
    group: String,
    resource: String,
    scope: &'static str,
    subresource: String,
    verb: &'static str,
    version: String,
}

/// The counters.
#[derive(Clone, Default)]
pub(crate) struct ApiMetrics {
    inner: Arc<Mutex<BTreeMap<Labels, u64>>>,
}

/// The metric verb of a request: the HTTP method, with `LIST` for collection reads, `WATCH`
/// for watches and `APPLY` for server-side apply patches (the apiserver's `cleanVerb`).
fn metric_verb(info: &RequestInfo, content_type: &str) -> &'static str {
    match info.verb.as_str() {
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "create" => "POST",
        "update" => "PUT",
        "patch" if content_type.starts_with("application/apply-patch") => "APPLY",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        _ => "",
    }
}

/// A label value in the text exposition: `\\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn scope(info: &RequestInfo) -> &'static str {
    if !info.name.is_empty() {
        "resource"
    } else if !info.namespace.is_empty() {
        "namespace"
    } else {
        "cluster"
    }
}

impl ApiMetrics {
    /// Counts one resource request answered with `code`.
    pub(crate) fn record(&self, info: &RequestInfo, content_type: &str, dry_run: bool, code: u16) {
        if !info.resource_request || info.resource.is_empty() {
            return;
        }
        let verb = metric_verb(info, content_type);
        if verb.is_empty() {
            return;
        }
        let labels = Labels {
            code,
            dry_run: if dry_run { "All".into() } else { String::new() },
            group: info.group.clone(),
            resource: info.resource.clone(),
            scope: scope(info),
            subresource: info.subresource.clone(),
            verb,
            version: info.version.clone(),
        };
        if let Ok(mut m) = self.inner.lock() {
            *m.entry(labels).or_insert(0) += 1;
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from(
            "# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n\
             # TYPE apiserver_request_total counter\n",
        );
        if let Ok(m) = self.inner.lock() {
            for (l, n) in m.iter() {
                out.push_str(&format!(
                    "apiserver_request_total{{code=\"{}\",component=\"apiserver\",dry_run=\"{}\",group=\"{}\",resource=\"{}\",scope=\"{}\",subresource=\"{}\",verb=\"{}\",version=\"{}\"}} {n}\n",
                    l.code,
                    escape(&l.dry_run),
                    escape(&l.group),
                    escape(&l.resource),
                    l.scope,
                    escape(&l.subresource),
                    l.verb,
                    escape(&l.version)
                ));
            }
        }
        out
    }
}
