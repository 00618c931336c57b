//! Request counting by (user, verb, resource, subresource).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One row of the request log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RequestCount {
    /// Authenticated user name (empty for unauthenticated requests).
    pub user: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection;
    /// for non-resource paths the lowercase HTTP method.
    pub verb: String,
    /// Plural resource name (`deviceprocesses`), or the path for non-resource requests.
    pub resource: String,
    /// `status` or empty.
    pub subresource: String,
    /// Number of requests.
    pub count: u64,
}

type Key = (String, String, String, String);

/// Counts of requests served (including rejected and fault-injected ones).
#[derive(Clone, Default)]
pub struct RequestLog {
    inner: Arc<Mutex<HashMap<Key, u64>>>,
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

/// Verbs that change state.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl RequestLog {
    pub(crate) fn record(&self, user: &str, verb: &str, resource: &str, subresource: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.entry((
                user.to_string(),
                verb.to_string(),
                resource.to_string(),
                subresource.to_string(),
            ))
            .or_insert(0) += 1;
        }
    }

    /// All rows, sorted.
    pub fn snapshot(&self) -> Vec<RequestCount> {
        let mut rows: Vec<RequestCount> = self
            .inner
            .lock()
            .map(|m| {
                m.iter()
                    .map(
                        |((user, verb, resource, subresource), count)| RequestCount {
                            user: user.clone(),
                            verb: verb.clone(),
                            resource: resource.clone(),
                            subresource: subresource.clone(),
                            count: *count,
                        },
                    )
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| {
            (&a.user, &a.verb, &a.resource, &a.subresource).cmp(&(
                &b.user,
                &b.verb,
                &b.resource,
                &b.subresource,
            ))
        });
        rows
    }

    /// Sum of counts matching every given filter (None matches anything).
    pub fn count(
        &self,
        user: Option<&str>,
        verb: Option<&str>,
        resource: Option<&str>,
        subresource: Option<&str>,
    ) -> u64 {
        self.snapshot()
            .iter()
            .filter(|r| user.is_none_or(|u| r.user == u))
            .filter(|r| verb.is_none_or(|v| r.verb == v))
            .filter(|r| resource.is_none_or(|x| r.resource == x))
            .filter(|r| subresource.is_none_or(|s| r.subresource == s))
            .map(|r| r.count)
            .sum()
    }

    /// Write requests (create/update/patch/delete/deletecollection) by `user` on any resource.
    pub fn writes_by(&self, user: &str) -> u64 {
        WRITE_VERBS
            .iter()
            .map(|v| self.count(Some(user), Some(v), None, None))
            .sum()
    }

    /// Forgets all counts.
    pub fn reset(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.clear();
        }
    }
}
