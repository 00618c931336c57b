//! Fault injection: error share, latency, dropped watches, compaction, refused connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::Store;

/// Persistent fault settings (also the JSON body of `POST /_devcluster/faults`, camelCase).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    /// Share of API requests (0.0–1.0) answered with `error_code` instead of being served.
    pub error_share: f64,
    /// 500, 503 or 429 (429 carries `Retry-After: 1`). 0 means 500.
    pub error_code: u16,
    /// Latency added before every API request is served, in milliseconds.
    pub latency_ms: u64,
}

/// One-shot actions accepted by the admin endpoint alongside a [`FaultConfig`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FaultRequest {
    pub error_share: Option<f64>,
    pub error_code: Option<u16>,
    pub latency_ms: Option<u64>,
    pub drop_watches: bool,
    pub compact: bool,
    pub refuse_ms: u64,
    pub clear: bool,
}

/// Fault injection handle (clonable, shared with the server).
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

struct Inner {
    config: Mutex<FaultConfig>,
    drop_watches: watch::Sender<u64>,
    refuse_until: watch::Sender<Option<Instant>>,
    store: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("config", &self.config())
            .finish()
    }
}

impl Faults {
    pub(crate) fn new(store: Arc<Mutex<Store>>) -> Self {
        Faults {
            inner: Arc::new(Inner {
                config: Mutex::new(FaultConfig::default()),
                drop_watches: watch::channel(0).0,
                refuse_until: watch::channel(None).0,
                store,
            }),
        }
    }

    /// Current settings.
    pub fn config(&self) -> FaultConfig {
        self.inner
            .config
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Replaces the settings.
    pub fn set(&self, config: FaultConfig) {
        if let Ok(mut c) = self.inner.config.lock() {
            *c = config;
        }
    }

    /// Removes every persistent fault.
    pub fn clear(&self) {
        self.set(FaultConfig::default());
    }

    /// Answers `share` (0.0–1.0) of API requests with `code` (500, 503 or 429).
    pub fn fail_share(&self, share: f64, code: u16) {
        if let Ok(mut c) = self.inner.config.lock() {
            c.error_share = share.clamp(0.0, 1.0);
            c.error_code = code;
        }
    }

    /// Adds `latency` before every API request.
    pub fn latency(&self, latency: Duration) {
        if let Ok(mut c) = self.inner.config.lock() {
            c.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        }
    }

    /// Ends every open watch (the HTTP response ends cleanly, as when a real server restarts).
    pub fn drop_watches(&self) {
        self.inner.drop_watches.send_modify(|n| *n += 1);
    }

    /// Compacts history: watches and Exact lists from any earlier resourceVersion get 410.
    pub fn compact(&self) {
        if let Ok(mut s) = self.inner.store.lock() {
            s.compact();
        }
    }

    /// Closes the listener and every open connection for `duration`; state is kept and the
    /// server accepts connections on the same address afterwards.
    pub fn refuse_connections(&self, duration: Duration) {
        let until = Instant::now() + duration;
        self.inner.refuse_until.send_replace(Some(until));
    }

    pub(crate) fn watch_drops(&self) -> watch::Receiver<u64> {
        self.inner.drop_watches.subscribe()
    }

    pub(crate) fn refusals(&self) -> watch::Receiver<Option<Instant>> {
        self.inner.refuse_until.subscribe()
    }

    /// The error to inject for this request, if any: (code, reason, message).
    pub(crate) fn pick_error(&self) -> Option<u16> {
        let c = self.config();
        if c.error_share <= 0.0 {
            return None;
        }
        let roll: f64 = rand::rng().random();
        if roll < c.error_share {
            Some(match c.error_code {
                429 | 503 | 500 => c.error_code,
                0 => 500,
                other if (400..600).contains(&other) => other,
                _ => 500,
            })
        } else {
            None
        }
    }

    pub(crate) fn latency_now(&self) -> Duration {
        Duration::from_millis(self.config().latency_ms)
    }

    pub(crate) fn apply_request(&self, req: FaultRequest) {
        if req.clear {
            self.clear();
        }
        if let Ok(mut c) = self.inner.config.lock() {
            if let Some(v) = req.error_share {
                c.error_share = v.clamp(0.0, 1.0);
            }
            if let Some(v) = req.error_code {
                c.error_code = v;
            }
            if let Some(v) = req.latency_ms {
                c.latency_ms = v;
            }
        }
        if req.compact {
            self.compact();
        }
        if req.drop_watches {
            self.drop_watches();
        }
        if req.refuse_ms > 0 {
            self.refuse_connections(Duration::from_millis(req.refuse_ms));
        }
    }
}
