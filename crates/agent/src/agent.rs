//! The agent loop: two cooperating halves in one task.
//!
//! - The **poller** long-polls the desired document with the ETag it holds and adopts a new
//!   document only from a response whose signature verifies.
//! - The **reporter** reports the observed spec hashes at once when a new document is held,
//!   and otherwise as a heartbeat at the interval the gateway's last ack asked for. When an ack
//!   names a revision other than the held one, it asks the poller to refetch at once.
//!
//! Errors back off exponentially with jitter (per half) and are logged once per change of
//! condition, not once per retry. Shutdown drops both halves, abandoning requests in flight.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use apollo_backoff::Backoff;
use apollo_protocol::wire::{DesiredDocument, ObservedProcess, Report};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, info, warn};

use crate::client::{ClientError, DesiredAnswer, GatewayClient};
use crate::config::Config;

/// The agent's version (its crate version), sent in every report.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The document the agent holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub etag: String,
    pub document: DesiredDocument,
}

/// What the agent is doing, for tests and embedding (a `watch` channel).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentState {
    /// The last exchange with the gateway succeeded.
    pub connected: bool,
    /// Revision of the held document.
    pub revision: Option<String>,
    /// Revision in the last acknowledged report.
    pub reported_revision: Option<String>,
    /// Heartbeat interval in use (after clamping).
    pub heartbeat_interval: Duration,
    /// Failed exchanges since the last success.
    pub consecutive_failures: u32,
    /// The last error, if the last exchange failed.
    pub last_error: Option<String>,
    /// Documents adopted (200 with a new revision).
    pub documents: u64,
    /// Reports acknowledged.
    pub reports_acked: u64,
    /// Responses refused: a missing or wrong signature, or a `304` for another document than
    /// the one held.
    pub responses_refused: u64,
}

/// The device agent.
pub struct Agent {
    config: Config,
    client: GatewayClient,
    instance_id: String,
    held: watch::Sender<Option<Held>>,
    state: watch::Sender<AgentState>,
    refetch: Notify,
    link: Mutex<Link>,
}

/// Connectivity as far as logging is concerned.
#[derive(Default)]
struct Link {
    connected_once: bool,
    failing: Option<Failing>,
}

struct Failing {
    kind: &'static str,
    since: Instant,
    failures: u32,
    last_warned: Instant,
}

impl Agent {
    /// An agent for `config` with a new random instance id.
    pub fn new(config: Config) -> Self {
        let client = GatewayClient::with_http(
            Self::http_client(&config),
            &config.gateway_base,
            config.key.clone(),
            config.request_timeout,
        );
        Self::with_client(config, client)
    }

    #[cfg(not(feature = "tls"))]
    fn http_client(config: &Config) -> crate::client::HttpClient {
        crate::client::http_client(config.request_timeout)
    }

    #[cfg(feature = "tls")]
    fn http_client(config: &Config) -> crate::client::HttpClient {
        let Some(ca) = &config.gateway_ca else {
            return crate::client::http_client(config.request_timeout);
        };
        // The CA file was validated when the configuration was resolved.
        crate::tls::https_client(config.request_timeout, ca).unwrap_or_else(|e| {
            warn!(error = %e, "invalid gateway CA; https requests will fail");
            crate::client::http_client(config.request_timeout)
        })
    }

    /// An agent that talks through `client` (e.g. one sharing a connection pool with other
    /// simulated agents); `client` must carry `config`'s key and gateway.
    pub fn with_client(config: Config, client: GatewayClient) -> Self {
        let state = AgentState {
            heartbeat_interval: config.initial_heartbeat,
            ..AgentState::default()
        };
        Agent {
            client,
            instance_id: apollo_protocol::auth::generate_nonce(),
            held: watch::Sender::new(None),
            state: watch::Sender::new(state),
            refetch: Notify::new(),
            link: Mutex::new(Link::default()),
            config,
        }
    }

    /// This run's instance id (random per start).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Follow the agent's state.
    pub fn subscribe(&self) -> watch::Receiver<AgentState> {
        self.state.subscribe()
    }

    /// Follow the held document.
    pub fn subscribe_document(&self) -> watch::Receiver<Option<Held>> {
        self.held.subscribe()
    }

    /// Run until `shutdown` completes; requests in flight are abandoned.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        info!(
            device = %self.config.device,
            gateway = %self.config.gateway_base,
            key_id = %self.config.key.key_id(),
            version = AGENT_VERSION,
            instance = %self.instance_id,
            long_poll = ?self.config.long_poll,
            "agent starting"
        );
        tokio::select! {
            _ = shutdown => info!("shutting down"),
            _ = self.poll_loop() => {}
            _ = self.report_loop() => {}
        }
    }

    async fn poll_loop(&self) {
        let mut backoff =
            Backoff::new(self.config.backoff_initial, self.config.backoff_max).jittered();
        let mut plain_next = false;
        loop {
            let started = Instant::now();
            let etag = self.held.borrow().as_ref().map(|h| h.etag.clone());
            let wait = if etag.is_some() && !plain_next {
                self.config.long_poll
            } else {
                Duration::ZERO
            };
            plain_next = false;
            let result = tokio::select! {
                r = self.client.desired(etag.as_deref(), wait) => r,
                _ = self.refetch.notified() => {
                    debug!("refetching the desired document: the gateway reports a newer revision");
                    plain_next = true;
                    continue;
                }
            };
            match result {
                Ok(answer) => {
                    backoff.reset();
                    self.succeeded();
                    if let DesiredAnswer::Document { etag, document } = answer {
                        self.adopt(etag, document);
                    }
                    if self.pace(started).await {
                        plain_next = true;
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    sleep(self.retry_delay(&mut backoff, &e)).await;
                }
            }
        }
    }

    /// Wait before the next desired-state request: plain polling waits a heartbeat interval
    /// (following interval changes from acks), long polls at least the minimum gap (a gateway
    /// that answers at once must not make us spin). Returns true when cut short by a refetch.
    async fn pace(&self, started: Instant) -> bool {
        let mut state = self.state.subscribe();
        loop {
            let gap = if self.config.long_poll.is_zero() {
                state.borrow_and_update().heartbeat_interval
            } else {
                self.config.min_poll_gap
            };
            tokio::select! {
                _ = sleep_until(started + gap) => return false,
                _ = self.refetch.notified() => return true,
                _ = state.changed() => {}
            }
        }
    }

    fn adopt(&self, etag: String, document: DesiredDocument) {
        let current = self
            .held
            .borrow()
            .as_ref()
            .map(|h| h.document.revision.clone());
        if current.as_deref() == Some(document.revision.as_str()) {
            return;
        }
        let processes: Vec<String> = document
            .processes
            .iter()
            .map(|p| format!("{}={}", p.name, p.spec_hash))
            .collect();
        info!(
            revision = %document.revision,
            previous = %current.as_deref().unwrap_or("none"),
            processes = %processes.join(","),
            "new desired revision"
        );
        self.state.send_modify(|s| {
            s.revision = Some(document.revision.clone());
            s.documents += 1;
        });
        self.held.send_replace(Some(Held { etag, document }));
    }

    async fn report_loop(&self) {
        let mut held_rx = self.held.subscribe();
        let mut backoff =
            Backoff::new(self.config.backoff_initial, self.config.backoff_max).jittered();
        let mut next_due = Instant::now() + self.state.borrow().heartbeat_interval;
        loop {
            tokio::select! {
                changed = held_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = sleep_until(next_due) => {}
            }
            loop {
                let report = self.build_report(&mut held_rx);
                match self.client.report(&report).await {
                    Ok(ack) => {
                        backoff.reset();
                        self.succeeded();
                        let interval = self.acknowledged(&report, ack.heartbeat_interval_ms);
                        let held_revision = self.state.borrow().revision.clone();
                        if held_revision.is_some()
                            && held_revision.as_deref() != Some(&ack.revision)
                        {
                            self.refetch.notify_one();
                        }
                        next_due = Instant::now() + interval;
                        break;
                    }
                    Err(e) => {
                        self.failed(&e);
                        sleep(self.retry_delay(&mut backoff, &e)).await;
                    }
                }
            }
        }
    }

    fn build_report(&self, held_rx: &mut watch::Receiver<Option<Held>>) -> Report {
        let held = held_rx.borrow_and_update();
        let (revision, observed) = match held.as_ref() {
            Some(h) => (
                Some(h.document.revision.clone()),
                h.document
                    .processes
                    .iter()
                    .map(|p| ObservedProcess {
                        name: p.name.clone(),
                        spec_hash: p.spec_hash.clone(),
                        generation: Some(p.generation),
                    })
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Report {
            agent_version: AGENT_VERSION.to_string(),
            instance_id: self.instance_id.clone(),
            revision,
            observed,
        }
    }

    /// Record an ack; returns the heartbeat interval to use.
    fn acknowledged(&self, report: &Report, interval_ms: u64) -> Duration {
        let interval = Duration::from_millis(interval_ms)
            .clamp(self.config.heartbeat_min, self.config.heartbeat_max);
        let mut interval_changed = false;
        let mut newly_observed = false;
        self.state.send_modify(|s| {
            interval_changed = s.heartbeat_interval != interval;
            newly_observed = s.reported_revision != report.revision;
            s.heartbeat_interval = interval;
            s.reported_revision = report.revision.clone();
            s.reports_acked += 1;
        });
        if newly_observed {
            let hashes: Vec<&str> = report
                .observed
                .iter()
                .map(|o| o.spec_hash.as_str())
                .collect();
            info!(
                revision = %report.revision.as_deref().unwrap_or("none"),
                spec_hashes = %hashes.join(","),
                "observed state reported"
            );
        }
        if interval_changed {
            if u128::from(interval_ms) != interval.as_millis() {
                warn!(requested_ms = interval_ms, using = ?interval, "heartbeat interval out of bounds; clamped");
            } else {
                info!(interval = ?interval, "heartbeat interval set by the gateway");
            }
        } else {
            debug!("heartbeat acknowledged");
        }
        interval
    }

    /// The next backoff delay, or the gateway's `Retry-After` when longer (capped at the
    /// backoff maximum: an unsigned header must not park the agent for long).
    fn retry_delay(&self, backoff: &mut Backoff, e: &ClientError) -> Duration {
        let delay = backoff.next_delay();
        match e.retry_after() {
            Some(asked) => delay.max(asked.min(self.config.backoff_max)),
            None => delay,
        }
    }

    fn succeeded(&self) {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = link.failing.take() {
            info!(
                after = ?f.since.elapsed(),
                failures = f.failures,
                "gateway reachable again"
            );
        } else if !link.connected_once {
            info!(gateway = %self.config.gateway_base, "connected to gateway");
        }
        link.connected_once = true;
        drop(link);
        self.state.send_if_modified(|s| {
            let changed = !s.connected || s.consecutive_failures != 0 || s.last_error.is_some();
            s.connected = true;
            s.consecutive_failures = 0;
            s.last_error = None;
            changed
        });
    }

    fn failed(&self, e: &ClientError) {
        let refused = e.kind() == "refused";
        let refused_total = self.state.borrow().responses_refused + u64::from(refused);
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        match &mut link.failing {
            Some(f) if f.kind == e.kind() && !refused => {
                f.failures += 1;
                if f.last_warned.elapsed() >= self.config.failure_log_interval {
                    f.last_warned = Instant::now();
                    warn!(
                        error = %e,
                        failures = f.failures,
                        since = ?f.since.elapsed(),
                        "still failing; retrying with backoff"
                    );
                } else {
                    debug!(error = %e, failures = f.failures, "still failing");
                }
            }
            failing => {
                let failures = failing.as_ref().map_or(0, |f| f.failures) + 1;
                let since = failing.as_ref().map_or_else(Instant::now, |f| f.since);
                if refused {
                    warn!(
                        error = %e,
                        refused = refused_total,
                        "refused gateway response; keeping the held document"
                    );
                } else if e.kind() == "unreachable" {
                    warn!(error = %e, "gateway unreachable; retrying with backoff");
                } else {
                    warn!(error = %e, "gateway request failed; retrying with backoff");
                }
                *failing = Some(Failing {
                    kind: e.kind(),
                    since,
                    failures,
                    last_warned: Instant::now(),
                });
            }
        }
        drop(link);
        self.state.send_modify(|s| {
            s.connected = false;
            s.consecutive_failures += 1;
            s.last_error = Some(e.to_string());
            if refused {
                s.responses_refused += 1;
            }
        });
    }
}
