//! The runbook's "Demo Flow Requirements" as nine self-checking steps. Each step acts, states
//! its expectation (a deadline is the expectation: "within 5 s"), polls for it, and shows what
//! it saw: kubectl output when kubectl is installed, the same facts from the client otherwise.

//!
//! The steps, grouped by what they show:
//!
//! - [`deployment`]: 1, 2 and 6 (CRDs, fan-out, template change: the controller's part);
//! - [`gateway`]: 3, 4 and 5 (status within seconds, `304`s, one list and writes on change);
//! - [`liveness`]: 7 and 8 (a stopped agent goes stale, a restarted one reconnects);
//! - [`credentials`]: 9 (no Kubernetes credential on any agent);
//! - [`checks`] and [`render`]: what several steps share (status checks, kubectl-less views).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail, ensure};

use crate::agents::Agents;
use crate::app::Shared;
use crate::cli::Timings;
use crate::cluster::Kube;
use crate::httpc::Http;
use crate::kubectl::Kubectl;
use crate::metrics::Scrape;
use crate::procs::Supervisor;
use crate::report::Step;

mod checks;
mod credentials;
mod deployment;
mod gateway;
mod liveness;
mod render;

/// The runbook's deployment.
pub const DEPLOYMENT: &str = "demo-logger";

/// Gateway metric families (crates/gateway/src/metrics.rs).
pub mod gw {
    pub const HTTP_REQUESTS: &str = "apollo_gateway_http_requests_total";
    pub const NOT_MODIFIED_RATIO: &str = "apollo_gateway_desired_not_modified_ratio";
    pub const STATUS_WRITES: &str = "apollo_gateway_status_writes_total";
    pub const EVENTS: &str = "apollo_gateway_events_total";
    pub const CONNECTED: &str = "apollo_gateway_connected_devices";
    pub const STALE: &str = "apollo_gateway_stale_transitions_total";
    pub const API_REQUESTS: &str = "apollo_gateway_api_requests_total";
    pub const LONG_POLLS: &str = "apollo_gateway_long_polls_held";
}

/// User names of the components on the development API server (None on other clusters).
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pub controller: Option<String>,
    pub gateway: Option<String>,
    pub agent: Option<String>,
    pub admin: Option<String>,
}

impl Identities {
    pub fn dev(ns: &str) -> Identities {
        Identities {
            controller: Some(format!(
                "system:serviceaccount:{ns}:apollo-deviceprocess-controller"
            )),
            gateway: Some(format!(
                "system:serviceaccount:{ns}:apollo-deviceprocess-gateway"
            )),
            agent: Some(format!("system:serviceaccount:{ns}:apollo-agent")),
            admin: Some("admin".to_string()),
        }
    }
}

/// How the local mode starts controller and gateway.
#[derive(Debug, Clone)]
pub struct LocalStack {
    /// Who the components run as, for the report ("ServiceAccount X", "the kubeconfig Y").
    pub controller_identity: String,
    pub gateway_identity: String,
    pub controller_bin: PathBuf,
    pub gateway_bin: PathBuf,
    pub controller_kubeconfig: PathBuf,
    pub gateway_kubeconfig: PathBuf,
    pub gateway_addr: SocketAddr,
    /// The gateway's `/healthz`, `/readyz` and `/metrics` listener.
    pub gateway_metrics_addr: SocketAddr,
    /// The controller's `/metrics` listener.
    pub controller_metrics_addr: SocketAddr,
    pub master_key: PathBuf,
}

/// Facts carried from one step to the next.
#[derive(Debug, Clone, Default)]
pub struct Memo {
    pub uids: BTreeMap<String, String>,
    pub hashes: BTreeMap<String, String>,
    pub generations: BTreeMap<String, i64>,
    /// The gateway's metrics before the agents started (a gateway that served earlier runs
    /// has counts of its own).
    pub baseline: Option<Scrape>,
}

/// Everything the steps use.
#[derive(Debug)]
pub struct Demo {
    pub sup: Supervisor,
    pub kube: Kube,
    pub kubectl: Kubectl,
    pub gateway: Http,
    /// The gateway's metrics listener (`--metrics-addr`).
    pub gateway_metrics: Http,
    pub agents: Agents,
    pub timings: Timings,
    pub repo: PathBuf,
    pub devices: Vec<String>,
    pub ids: Identities,
    pub api_url: Option<String>,
    pub local: Option<LocalStack>,
    /// `containers` mode: the controller and gateway containers step 2 starts.
    pub containers: Option<crate::containers::Components>,
    pub keys_dir: PathBuf,
    pub memo: Memo,
}

impl Demo {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: &Shared,
        kube: Kube,
        kubectl: Kubectl,
        gateway: Http,
        gateway_metrics: Http,
        agents: Agents,
        timings: Timings,
        repo: PathBuf,
        devices: Vec<String>,
        ids: Identities,
        api_url: Option<String>,
        local: Option<LocalStack>,
        keys_dir: PathBuf,
    ) -> Demo {
        Demo {
            sup: shared.sup.clone(),
            kube,
            kubectl,
            gateway,
            gateway_metrics,
            agents,
            timings,
            repo,
            devices,
            ids,
            api_url,
            local,
            containers: None,
            keys_dir,
            memo: Memo::default(),
        }
    }

    /// The device whose agent steps 7 and 8 stop and restart: the last one of the runbook.
    fn restarted_device(&self) -> anyhow::Result<String> {
        self.devices
            .last()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no device"))
    }

    fn dp_name(&self, device: &str) -> String {
        apollo_api::naming::device_process_name(DEPLOYMENT, device)
    }

    /// Shows `kubectl <args>` (or `fallback` when kubectl is not installed).
    pub(crate) async fn show(&self, step: &Step, args: &[&str], fallback: impl FnOnce() -> String) {
        match self.kubectl.run(args).await {
            Some(Ok(text)) => step.shell(&Kubectl::display(args), &text),
            Some(Err(e)) => step.saw(&format!("{e:#}")),
            None => step.shell(
                &format!(
                    "{}   (without kubectl: the same facts from the demo's client)",
                    Kubectl::display(args)
                ),
                &fallback(),
            ),
        }
    }

    async fn show_dps(&self, step: &Step) {
        let dps = self.kube.processes_of(DEPLOYMENT).await.unwrap_or_default();
        self.show(step, &["get", "deviceprocesses"], || {
            render::render_dps(&dps)
        })
        .await;
    }

    async fn scrape(&self) -> Result<Scrape> {
        let r = self
            .gateway_metrics
            .get("/metrics", &[], Duration::from_secs(5))
            .await?;
        ensure!(
            r.status == 200,
            "GET {}/metrics answered {}",
            self.gateway_metrics.base(),
            r.status
        );
        Ok(Scrape::parse(&r.body))
    }
}

/// Runs step `n`.
pub async fn run(n: usize, demo: &mut Demo, step: &Step) -> Result<()> {
    match n {
        1 => deployment::step1_crds(demo, step).await,
        2 => deployment::step2_fanout(demo, step).await,
        3 => gateway::step3_status(demo, step).await,
        4 => gateway::step4_not_modified(demo, step).await,
        5 => gateway::step5_efficiency(demo, step).await,
        6 => deployment::step6_template_change(demo, step).await,
        7 => liveness::step7_stale(demo, step).await,
        8 => liveness::step8_reconnect(demo, step).await,
        9 => credentials::step9_no_credentials(demo, step).await,
        _ => bail!("no step {n}"),
    }
}
