//! The runbook's "Demo Flow Requirements" as nine self-checking steps. Each step acts, states
//! its expectation (a deadline is the expectation: "within 5 s"), polls for it, and shows what
//! it saw: kubectl output when kubectl is installed, the same facts from the client otherwise.

use crate::apievidence::{self, ApiCounts, Evidence};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use apollo_api::conditions::{AGENT_CONNECTED, SPEC_OBSERVED};
use apollo_api::{DeviceProcess, Phase};
use kube::ResourceExt as _;
use kube::api::{Patch, PatchParams};

use crate::agents::Agents;
use crate::app::Shared;
use crate::cli::{Timings, flag_duration};
use crate::cluster::{Kube, RequestCounts, event_occurrences, event_time};
use crate::httpc::Http;
use crate::kubectl::Kubectl;
use crate::metrics::Scrape;
use crate::procs::Supervisor;
use crate::report::Step;
use crate::wait::{poll_until, secs};

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
        self.show(step, &["get", "deviceprocesses"], || render_dps(&dps))
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
        1 => step1_crds(demo, step).await,
        2 => step2_fanout(demo, step).await,
        3 => step3_status(demo, step).await,
        4 => step4_not_modified(demo, step).await,
        5 => step5_efficiency(demo, step).await,
        6 => step6_template_change(demo, step).await,
        7 => step7_stale(demo, step).await,
        8 => step8_reconnect(demo, step).await,
        9 => step9_no_credentials(demo, step).await,
        _ => bail!("no step {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering without kubectl

fn condition_status(dp: &DeviceProcess, type_: &str) -> Option<String> {
    dp.status
        .as_ref()?
        .condition(type_)
        .map(|c| c.status.clone())
}

fn render_dps(dps: &[DeviceProcess]) -> String {
    let mut s = format!(
        "{:<24} {:<10} {:<8} {:<10} {}\n",
        "NAME", "DEVICE", "PHASE", "CONNECTED", "OBSERVED"
    );
    for dp in dps {
        let st = dp.status.clone().unwrap_or_default();
        s.push_str(&format!(
            "{:<24} {:<10} {:<8} {:<10} {}\n",
            dp.name_any(),
            dp.spec.device_ref.name,
            st.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
            condition_status(dp, AGENT_CONNECTED).unwrap_or_default(),
            st.observed_spec_hash.unwrap_or_default(),
        ));
    }
    s.trim_end().to_string()
}

fn render_conditions(dp: &DeviceProcess) -> String {
    let st = dp.status.clone().unwrap_or_default();
    let mut s = String::new();
    for c in &st.conditions {
        s.push_str(&format!(
            "{}={} ({}) {}\n",
            c.type_, c.status, c.reason, c.message
        ));
    }
    s.trim_end().to_string()
}

fn render_events(events: &[k8s_openapi::api::core::v1::Event]) -> String {
    let mut s = format!(
        "{:<8} {:<18} {:<6} {}\n",
        "TYPE", "REASON", "COUNT", "MESSAGE"
    );
    for e in events {
        s.push_str(&format!(
            "{:<8} {:<18} {:<6} {}\n",
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            event_occurrences(e),
            e.message.clone().unwrap_or_default()
        ));
    }
    s.trim_end().to_string()
}

/// Checks one DeviceProcess's status against step 3's expectation; `Err` says what is off.
fn status_ok(dp: &DeviceProcess) -> Result<(), String> {
    let st = dp
        .status
        .as_ref()
        .ok_or_else(|| format!("{}: no status yet", dp.name_any()))?;
    let want = apollo_api::spec_hash(&dp.spec);
    let mut off = Vec::new();
    if st.phase != Some(Phase::Pending) {
        off.push(format!("phase={:?}", st.phase));
    }
    if !st.is_true(AGENT_CONNECTED) {
        off.push(format!(
            "AgentConnected={}",
            condition_status(dp, AGENT_CONNECTED).unwrap_or_else(|| "absent".into())
        ));
    }
    if !st.is_true(SPEC_OBSERVED) {
        off.push(format!(
            "SpecObserved={}",
            condition_status(dp, SPEC_OBSERVED).unwrap_or_else(|| "absent".into())
        ));
    }
    if st.observed_spec_hash.as_deref() != Some(want.as_str()) {
        off.push(format!(
            "observedSpecHash={} (spec hash {want})",
            st.observed_spec_hash.as_deref().unwrap_or("unset")
        ));
    }
    if off.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", dp.name_any(), off.join(", ")))
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1

async fn step1_crds(demo: &mut Demo, step: &Step) -> Result<()> {
    let crds_dir = demo.kube.crd_dir(&demo.repo).await?;
    let applied = demo.kube.apply_path(&crds_dir).await?;
    step.did(&format!(
        "$ kubectl apply --server-side -f {}\n{}",
        crds_dir.display(),
        applied.join("\n")
    ));
    let rbac_dir = demo.repo.join("k8s/rbac");
    if rbac_dir.is_dir() {
        let applied = demo.kube.apply_path(&rbac_dir).await?;
        step.did(&format!(
            "$ kubectl apply --server-side -f {}\n{}",
            rbac_dir.display(),
            applied.join("\n")
        ));
    } else if demo.local.is_some() {
        step.did(&format!(
            "{} does not exist: the components' RBAC cannot be installed",
            rbac_dir.display()
        ));
    }
    let names: Vec<String> = applied
        .iter()
        .filter_map(|a| a.strip_prefix("customresourcedefinition/"))
        .map(str::to_string)
        .collect();
    step.expect(&format!(
        "within 10 s: {} CRDs Established; short names nsw, dpd, dp; category apollo; printer \
         columns Device/Phase/Connected/Observed on dp and Desired/Current/Up-To-Date/Connected/Observed on dpd",
        names.len()
    ));
    demo.kube
        .wait_established(&names, Duration::from_secs(10))
        .await?;
    let mut problems = Vec::new();
    let mut table = format!(
        "{:<38} {:<10} {:<10} {}\n",
        "NAME", "SHORTNAMES", "CATEGORIES", "PRINTER COLUMNS"
    );
    let want: [(&str, &str, &[&str]); 3] = [
        ("networkswitches.azure.com", "nsw", &[]),
        (
            "deviceprocessdeployments.azure.com",
            "dpd",
            &["Desired", "Current", "Up-To-Date", "Connected", "Observed"],
        ),
        (
            "deviceprocesses.azure.com",
            "dp",
            &["Device", "Phase", "Connected", "Observed"],
        ),
    ];
    for (name, short, columns) in want {
        let crd = match demo.kube.crd(name).await {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        let shorts = crd.spec.names.short_names.clone().unwrap_or_default();
        let cats = crd.spec.names.categories.clone().unwrap_or_default();
        let cols: Vec<String> = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == apollo_api::VERSION)
            .and_then(|v| v.additional_printer_columns.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        table.push_str(&format!(
            "{:<38} {:<10} {:<10} {}\n",
            name,
            shorts.join(","),
            cats.join(","),
            cols.join(",")
        ));
        if !shorts.iter().any(|s| s == short) {
            problems.push(format!("{name}: short name {short} missing"));
        }
        if !cats.iter().any(|c| c == apollo_api::CATEGORY) {
            problems.push(format!("{name}: category apollo missing"));
        }
        for c in columns {
            if !cols.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                problems.push(format!("{name}: printer column {c} missing"));
            }
        }
    }
    demo.show(step, &["get", "crd"], || {
        names
            .iter()
            .map(|n| format!("{n}   Established=True"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    demo.show(
        step,
        &["api-resources", "--api-group=azure.com", "-o", "wide"],
        || table.trim_end().to_string(),
    )
    .await;
    if demo.kubectl.available() {
        // The category works end to end (empty for now).
        match demo.kubectl.run(&["get", "apollo"]).await {
            Some(Ok(t)) => step.shell("kubectl get apollo", &t),
            Some(Err(e)) => problems.push(format!("kubectl get apollo: {e:#}")),
            None => {}
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    step.saw("CRDs Established with the expected short names, category and printer columns");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 2

async fn step2_fanout(demo: &mut Demo, step: &Step) -> Result<()> {
    // Components that do not come up are reported, and the step still applies the samples:
    // what the controller did (or not) is the check.
    let mut startup_problem = None;
    let started = if let Some(local) = demo.local.clone() {
        Some(
            crate::app::start_components(&demo.sup, &local, &demo.kube.namespace, &demo.timings)
                .await,
        )
    } else if let Some(c) = demo.containers.clone() {
        Some(c.stack.start_components(&c.master_key, &demo.timings).await)
    } else {
        None
    };
    if let Some(started) = started {
        match started {
            Ok(did) => {
                for d in did {
                    step.did(&d);
                }
            }
            Err(e) => {
                step.saw(&format!("{e:#}"));
                startup_problem = Some(e);
            }
        }
    }
    let samples = demo.repo.join("k8s/samples");
    let mut applied = Vec::new();
    for f in ["networkswitches.yaml", "demo-logger.yaml"] {
        let path = samples.join(f);
        applied.extend(demo.kube.apply_path(&path).await?);
        step.did(&format!(
            "$ kubectl apply --server-side -f {}",
            path.display()
        ));
    }
    step.did(&format!("applied {}", applied.join(", ")));
    let t0 = Instant::now();
    let names: Vec<String> = demo.devices.iter().map(|d| demo.dp_name(d)).collect();
    step.expect(&format!(
        "within {} s: exactly {} DeviceProcesses {} (one per device), labels app=logger, \
         {}={DEPLOYMENT}, {}=<device>, owned by deployment {DEPLOYMENT} (controller: true), \
         spec.deviceRef.name = device",
        demo.timings.within.as_secs() * 2,
        names.len(),
        names.join(", "),
        apollo_api::labels::DEPLOYMENT,
        apollo_api::labels::DEVICE,
    ));
    let dpd = demo.kube.deployments().get(DEPLOYMENT).await?;
    let dpd_uid = dpd.metadata.uid.clone().unwrap_or_default();
    // Up to date: each spec is the template plus its device (a DeviceProcess left over from an
    // earlier run with another template does not count until the controller updated it).
    let want = expected_hashes(&dpd, &demo.devices);
    let last = RefCell::new(String::from("no DeviceProcess yet"));
    let deadline = demo.timings.within * 2;
    let got = poll_until(deadline, demo.timings.poll, || {
        let kube = demo.kube.clone();
        let names = names.clone();
        let devices = demo.devices.clone();
        let dpd_uid = dpd_uid.clone();
        let want = &want;
        let last = &last;
        async move {
            let dps = match kube.processes_of(DEPLOYMENT).await {
                Ok(d) => d,
                Err(e) => {
                    *last.borrow_mut() = format!("{e:#}");
                    return None;
                }
            };
            match check_fanout(&dps, &names, &devices, &dpd_uid, want) {
                Ok(()) => Some(dps),
                Err(e) => {
                    *last.borrow_mut() = e;
                    None
                }
            }
        }
    })
    .await;
    demo.show(step, &["get", "networkswitches", "--show-labels"], || {
        "tor1-01  rack=r1,role=tor,site=sfo\ntor1-02  rack=r1,role=tor,site=sfo".into()
    })
    .await;
    let dps = match (got, startup_problem) {
        (Some(dps), None) => dps,
        (Some(_), Some(e)) => return Err(e),
        (None, Some(e)) => {
            return Err(e.context(format!("after {} s: {}", secs(deadline), last.borrow())));
        }
        (None, None) => bail!("after {} s: {}", secs(deadline), last.borrow()),
    };
    let took = t0.elapsed();
    for dp in &dps {
        demo.memo
            .uids
            .insert(dp.name_any(), dp.metadata.uid.clone().unwrap_or_default());
        demo.memo
            .hashes
            .insert(dp.name_any(), apollo_api::spec_hash(&dp.spec));
        demo.memo
            .generations
            .insert(dp.name_any(), dp.metadata.generation.unwrap_or_default());
    }
    let fallback_labels = dps
        .iter()
        .map(|d| {
            let labels: Vec<String> = d.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}  {}", d.name_any(), labels.join(","))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dpd = demo.kube.deployments().get(DEPLOYMENT).await.ok();
    demo.show(step, &["get", "deviceprocessdeployments"], || {
        let st = dpd.and_then(|d| d.status).unwrap_or_default();
        format!(
            "{:<12} {:<8} {:<8} {:<11} {:<10} {}\n{:<12} {:<8} {:<8} {:<11} {:<10} {}",
            "NAME",
            "DESIRED",
            "CURRENT",
            "UP-TO-DATE",
            "CONNECTED",
            "OBSERVED",
            DEPLOYMENT,
            st.desired_number_scheduled,
            st.current_number_scheduled,
            st.updated_number_scheduled,
            st.number_agent_connected,
            st.number_spec_observed
        )
    })
    .await;
    demo.show(step, &["get", "dp", "--show-labels"], || fallback_labels)
        .await;
    step.saw(&format!(
        "{} created {} s after the deployment was applied; spec hashes {}",
        names.join(", "),
        secs(took),
        demo.memo
            .hashes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// The spec hash each device's DeviceProcess must have for the deployment's current template.
fn expected_hashes(
    dpd: &apollo_api::DeviceProcessDeployment,
    devices: &[String],
) -> BTreeMap<String, String> {
    devices
        .iter()
        .map(|d| {
            (
                d.clone(),
                apollo_api::spec_hash(&dpd.spec.template.spec.for_device(d)),
            )
        })
        .collect()
}

fn check_fanout(
    dps: &[DeviceProcess],
    names: &[String],
    devices: &[String],
    dpd_uid: &str,
    want_hash: &BTreeMap<String, String>,
) -> Result<(), String> {
    let got: Vec<String> = dps.iter().map(|d| d.name_any()).collect();
    if got != names {
        return Err(format!("DeviceProcesses are [{}]", got.join(", ")));
    }
    for (dp, device) in dps.iter().zip(devices) {
        let labels = dp.labels();
        let want = [
            ("app", "logger".to_string()),
            (
                apollo_api::labels::DEPLOYMENT,
                apollo_api::naming::label_value(DEPLOYMENT),
            ),
            (
                apollo_api::labels::DEVICE,
                apollo_api::naming::label_value(device),
            ),
        ];
        for (k, v) in want {
            if labels.get(k) != Some(&v) {
                return Err(format!(
                    "{}: label {k}={:?}, expected {v}",
                    dp.name_any(),
                    labels.get(k)
                ));
            }
        }
        let hash = apollo_api::spec_hash(&dp.spec);
        if want_hash.get(device) != Some(&hash) {
            return Err(format!(
                "{}: spec hash {hash}, the template gives {}",
                dp.name_any(),
                want_hash.get(device).map(String::as_str).unwrap_or("?")
            ));
        }
        if dp.spec.device_ref.name != *device {
            return Err(format!(
                "{}: spec.deviceRef.name={}",
                dp.name_any(),
                dp.spec.device_ref.name
            ));
        }
        let owned = dp.owner_references().iter().any(|o| {
            o.kind == "DeviceProcessDeployment"
                && o.name == DEPLOYMENT
                && o.uid == dpd_uid
                && o.controller == Some(true)
        });
        if !owned {
            return Err(format!(
                "{}: no controller ownerReference to {DEPLOYMENT}",
                dp.name_any()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 3

/// Polls until every DeviceProcess of the deployment passes `ok`; returns the time each first
/// did, or the last complaint.
async fn wait_all(
    demo: &Demo,
    deadline: Duration,
    ok: impl Fn(&DeviceProcess) -> Result<(), String>,
) -> Result<BTreeMap<String, Duration>, String> {
    let t0 = Instant::now();
    let first: RefCell<BTreeMap<String, Duration>> = RefCell::default();
    let last = RefCell::new(String::from("nothing checked"));
    let expected = demo.devices.len();
    let done = poll_until(deadline, demo.timings.poll, || {
        let kube = demo.kube.clone();
        let first = &first;
        let last = &last;
        let ok = &ok;
        async move {
            let dps = match kube.processes_of(DEPLOYMENT).await {
                Ok(d) => d,
                Err(e) => {
                    *last.borrow_mut() = format!("{e:#}");
                    return None;
                }
            };
            let mut bad = Vec::new();
            for dp in &dps {
                match ok(dp) {
                    Ok(()) => {
                        first
                            .borrow_mut()
                            .entry(dp.name_any())
                            .or_insert_with(|| t0.elapsed());
                    }
                    Err(e) => bad.push(e),
                }
            }
            if dps.len() != expected {
                bad.push(format!(
                    "{} DeviceProcesses, expected {expected}",
                    dps.len()
                ));
            }
            if bad.is_empty() {
                Some(())
            } else {
                *last.borrow_mut() = bad.join("; ");
                None
            }
        }
    })
    .await;
    match done {
        Some(()) => Ok(first.into_inner()),
        None => Err(format!("after {} s: {}", secs(deadline), last.borrow())),
    }
}

async fn step3_status(demo: &mut Demo, step: &Step) -> Result<()> {
    demo.memo.baseline = demo.scrape().await.ok();
    for d in demo.devices.clone() {
        let did = demo.agents.start(&d).await?;
        step.did(&did);
    }
    step.expect(&format!(
        "within {} s of the agents starting, on every DeviceProcess: phase=Pending, \
         AgentConnected=True, SpecObserved=True, observedSpecHash = the spec's hash",
        demo.timings.within.as_secs()
    ));
    let r = wait_all(demo, demo.timings.within, status_ok).await;
    demo.show_dps(step).await;
    let name = demo.dp_name(&demo.devices[0]);
    let dp = demo.kube.device_processes().get(&name).await.ok();
    demo.show(
        step,
        &[
            "get",
            "dp",
            &name,
            "-o",
            "jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}){\"\\n\"}{end}",
        ],
        || dp.as_ref().map(render_conditions).unwrap_or_default(),
    )
    .await;
    let first = r.map_err(|e| anyhow!(e))?;
    step.saw(&format!(
        "status complete: {}",
        first
            .iter()
            .map(|(k, v)| format!("{k} after {} s", secs(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 4

async fn step4_not_modified(demo: &mut Demo, step: &Step) -> Result<()> {
    let long_poll = demo.timings.long_poll.unwrap_or(Duration::from_secs(30));
    let n = demo.devices.len() as f64;
    let base = demo.memo.baseline.clone().unwrap_or_default();
    let desired = |s: &Scrape, code: &str| {
        s.sum(gw::HTTP_REQUESTS, &[("route", "desired"), ("code", code)])
            - base.sum(gw::HTTP_REQUESTS, &[("route", "desired"), ("code", code)])
    };
    step.did(&format!(
        "agents long-poll GET /v1/devices/<device>/desired?wait={} with If-None-Match; reading \
         the gateway's {}",
        flag_duration(long_poll),
        gw::HTTP_REQUESTS
    ));
    step.expect(&format!(
        "within one long-poll wait ({} s + {} s): at least one 304 per agent on route=desired, \
         and 200s only for first polls and changes (≤ 2 per device so far)",
        long_poll.as_secs(),
        demo.timings.within.as_secs()
    ));
    let deadline = long_poll + demo.timings.within;
    let last = RefCell::new(Scrape::default());
    let err = RefCell::new(String::new());
    let got = poll_until(
        deadline,
        demo.timings.poll.max(Duration::from_millis(200)),
        || {
            let last = &last;
            let err = &err;
            let demo = &*demo;
            let desired = &desired;
            async move {
                match demo.scrape().await {
                    Ok(s) => {
                        let n304 = desired(&s, "304");
                        *last.borrow_mut() = s;
                        (n304 >= n).then_some(())
                    }
                    Err(e) => {
                        *err.borrow_mut() = format!("{e:#}");
                        None
                    }
                }
            }
        },
    )
    .await;
    let last = last.into_inner();
    let err = err.into_inner();
    let shown = last.lines_matching(&[gw::HTTP_REQUESTS, gw::NOT_MODIFIED_RATIO, gw::LONG_POLLS]);
    step.shell(
        &format!(
            "curl -s {}/metrics | grep -E 'http_requests_total\\{{route=\"desired\"|not_modified_ratio|long_polls_held'",
            demo.gateway_metrics.base()
        ),
        &shown
            .iter()
            .filter(|l| !l.starts_with(gw::HTTP_REQUESTS) || l.contains("route=\"desired\""))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // Without a signature the gateway answers 401 and says nothing more.
    if let Ok(r) = demo
        .gateway
        .get(
            &format!("/v1/devices/{}/desired", demo.devices[0]),
            &[],
            Duration::from_secs(5),
        )
        .await
    {
        step.shell(
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' {}/v1/devices/{}/desired   (unsigned)",
                demo.gateway.base(),
                demo.devices[0]
            ),
            &r.status.to_string(),
        );
    }
    if got.is_none() {
        if !err.is_empty() {
            bail!("cannot read the gateway's metrics: {err}");
        }
        bail!(
            "after {} s: {} 304 answers on route=desired since the agents started, expected ≥ {n}",
            secs(deadline),
            desired(&last, "304")
        );
    }
    let n200 = desired(&last, "200");
    let n304 = desired(&last, "304");
    ensure!(
        n200 <= 2.0 * n,
        "{n200} full (200) answers on route=desired for {n} devices: the ETag is not working"
    );
    step.saw(&format!(
        "route=desired since the agents started: {n200} × 200 (first polls), {n304} × 304 Not Modified"
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 5

struct Counters {
    list: u64,
    watch: u64,
    status_writes: u64,
    events: u64,
    controller_writes: u64,
}

fn counters(c: &RequestCounts, ids: &Identities) -> Option<Counters> {
    let gw = ids.gateway.as_deref()?;
    let ctl = ids.controller.as_deref()?;
    let writes = |user: &str, res: Option<&str>, sub: Option<&str>| -> u64 {
        ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .map(|v| c.count(Some(user), Some(v), res, sub))
            .sum()
    };
    Some(Counters {
        list: c.count(Some(gw), Some("list"), Some("deviceprocesses"), None),
        watch: c.count(Some(gw), Some("watch"), Some("deviceprocesses"), None),
        status_writes: writes(gw, Some("deviceprocesses"), Some("status")),
        events: writes(gw, Some("events"), None),
        controller_writes: writes(ctl, None, None),
    })
}

async fn step5_efficiency(demo: &mut Demo, step: &Step) -> Result<()> {
    let quiet = demo.timings.quiet;
    let hb = demo.timings.heartbeat;
    let n = demo.devices.len() as f64;
    let beats = (quiet.as_millis() / hb.as_millis().max(1)) as f64;
    step.did(&format!(
        "read the gateway's /metrics and the API server's request counters, waited a quiet period \
         of {} s ({beats} heartbeats, nothing changing), read them again",
        secs(quiet)
    ));
    step.expect(&format!(
        "during the quiet period: ≥ {} reports from the agents, 0 new list calls by the gateway \
         (it listed once at start and watches), 0 status writes, 0 events",
        ((beats - 1.0).max(1.0) * n) as u64
    ));
    let m0 = demo.scrape().await?;
    let c0 = demo.kube.request_counts().await;
    // Without a per-identity request log: the API server's own request metrics, if readable.
    let a0 = if c0.is_none() || demo.ids.gateway.is_none() {
        apievidence::scrape(&demo.kube).await
    } else {
        None
    };
    let t0 = Instant::now();
    // The quiet period is the measurement itself (no condition ends it early).
    tokio::time::sleep(quiet).await;
    let m1 = demo.scrape().await?;
    let c1 = demo.kube.request_counts().await;
    let a1 = match a0 {
        Some(_) => apievidence::scrape(&demo.kube).await,
        None => None,
    };
    let elapsed = t0.elapsed();
    let reports = m1.sum(gw::HTTP_REQUESTS, &[("route", "report")])
        - m0.sum(gw::HTTP_REQUESTS, &[("route", "report")]);
    let desired = m1.sum(gw::HTTP_REQUESTS, &[("route", "desired")])
        - m0.sum(gw::HTTP_REQUESTS, &[("route", "desired")]);
    let gw_lists = m1.sum(gw::API_REQUESTS, &[("verb", "list")]);
    let gw_status = m1.sum(gw::STATUS_WRITES, &[]) - m0.sum(gw::STATUS_WRITES, &[]);
    let gw_events = m1.sum(gw::EVENTS, &[]) - m0.sum(gw::EVENTS, &[]);
    let mut problems = Vec::new();
    let mut lines = vec![format!(
        "gateway metrics over {} s: +{reports} reports, +{desired} desired requests, +{gw_status} \
         status writes, +{gw_events} events; API list calls since start: {gw_lists}",
        secs(elapsed)
    )];
    if reports < (beats - 1.0).max(1.0) * n {
        problems.push(format!(
            "only {reports} reports in {} s: agents are not heartbeating every {}",
            secs(elapsed),
            flag_duration(hb)
        ));
    }
    let gw_lists_before = m0.sum(gw::API_REQUESTS, &[("verb", "list")]);
    if gw_lists != gw_lists_before {
        problems.push(format!(
            "the gateway listed DeviceProcesses {} more times (its own api_requests counter)",
            gw_lists - gw_lists_before
        ));
    }
    if gw_status != 0.0 {
        problems.push(format!(
            "gateway wrote status {gw_status} times while nothing changed"
        ));
    }
    if gw_events != 0.0 {
        problems.push(format!(
            "gateway emitted {gw_events} events while nothing changed"
        ));
    }
    match (c0, c1) {
        (Some(c0), Some(c1)) if demo.ids.gateway.is_some() => {
            if let (Some(a), Some(b)) = (counters(&c0, &demo.ids), counters(&c1, &demo.ids)) {
                lines.push(format!(
                    "API server request log, gateway identity: list deviceprocesses {} → {}, watch {} → {}, \
                     status writes {} → {}, event writes {} → {}; controller writes {} → {}",
                    a.list, b.list, a.watch, b.watch, a.status_writes, b.status_writes, a.events,
                    b.events, a.controller_writes, b.controller_writes
                ));
                if b.list != a.list {
                    problems.push(format!(
                        "the gateway listed DeviceProcesses {} more times",
                        b.list - a.list
                    ));
                }
                if b.status_writes != a.status_writes {
                    problems.push(format!(
                        "the API server saw {} status writes from the gateway during the quiet period",
                        b.status_writes - a.status_writes
                    ));
                }
                if b.list > 2 {
                    problems.push(format!(
                        "the gateway listed DeviceProcesses {} times in total (expected one per (re)sync)",
                        b.list
                    ));
                }
                if b.controller_writes != a.controller_writes {
                    lines.push(format!(
                        "note: the controller wrote {} times during the quiet period",
                        b.controller_writes - a.controller_writes
                    ));
                }
                if let Some(gwu) = demo.ids.gateway.as_deref() {
                    step.shell(
                        &format!(
                            "kubectl get --raw /_devcluster/requests   (rows of {gwu}: verb, resource, count)"
                        ),
                        &c1.rows_of(gwu).join("\n"),
                    );
                }
                lines.push(Evidence::RequestLog.describe().to_string());
            }
        }
        _ => match (a0, a1) {
            (Some(a0), Some(a1)) => {
                let (b, a) = (ApiCounts::from_scrape(&a0), ApiCounts::from_scrape(&a1));
                let d = b.delta(&a);
                lines.push(format!(
                    "API server apiserver_request_total over the quiet period (all clients): \
                     LIST deviceprocesses +{}, WATCH +{}, status writes +{}, event writes +{}; \
                     LISTs of deviceprocesses since the server started: {}",
                    d.list_dp, d.watch_dp, d.status_writes_dp, d.event_writes, a.list_dp
                ));
                problems.extend(d.quiet_problems());
                step.shell(
                    "kubectl get --raw /metrics | grep apiserver_request_total | grep -E 'deviceprocesses|events'",
                    &apievidence::shown(&a1).join("\n"),
                );
                lines.push(Evidence::ApiServerMetrics.describe().to_string());
            }
            _ => {
                lines.push(
                    "no per-identity request log for this cluster (only the development API \
                     server keeps one, and only when each component has its own identity)"
                        .to_string(),
                );
                lines.push(Evidence::GatewayCounters.describe().to_string());
            }
        },
    }
    step.shell(
        &format!(
            "curl -s {}/metrics | grep -E 'api_requests|status_writes|events_total|route=\"report\"'",
            demo.gateway_metrics.base()
        ),
        &m1.lines_matching(&[gw::API_REQUESTS, gw::STATUS_WRITES, gw::EVENTS])
            .join("\n"),
    );
    for l in &lines {
        step.saw(l);
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 6

async fn step6_template_change(demo: &mut Demo, step: &Step) -> Result<()> {
    let patch =
        serde_json::json!({"spec":{"template":{"spec":{"execution":{"args":["echo","updated"]}}}}});
    demo.kube
        .deployments()
        .patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("patching the deployment")?;
    step.did(&format!(
        "$ kubectl patch deviceprocessdeployment {DEPLOYMENT} --type merge -p '{patch}'"
    ));
    let old = demo.memo.hashes.clone();
    let uids = demo.memo.uids.clone();
    let patched = demo.kube.deployments().get(DEPLOYMENT).await?;
    let want: BTreeMap<String, String> = expected_hashes(&patched, &demo.devices)
        .into_iter()
        .map(|(d, h)| (apollo_api::naming::device_process_name(DEPLOYMENT, &d), h))
        .collect();
    step.expect(&format!(
        "within {} s on both DeviceProcesses: a new spec hash (≠ {}), observedSpecHash = it, \
         SpecObserved=True; same objects (uid unchanged)",
        demo.timings.within.as_secs(),
        old.values().cloned().collect::<Vec<_>>().join(", ")
    ));
    let r = wait_all(demo, demo.timings.within, |dp| {
        let name = dp.name_any();
        let hash = apollo_api::spec_hash(&dp.spec);
        if want.get(&name) != Some(&hash) {
            return Err(format!("{name}: spec not updated yet"));
        }
        if old.get(&name) == Some(&hash) {
            return Err(format!(
                "{name}: the template change did not change the spec"
            ));
        }
        if uids.get(&name) != dp.metadata.uid.as_ref() {
            return Err(format!("{name}: recreated (uid changed)"));
        }
        status_ok(dp)
    })
    .await;
    demo.show_dps(step).await;
    let took = r.map_err(|e| anyhow!(e))?;
    let dps = demo.kube.processes_of(DEPLOYMENT).await?;
    let mut changes = Vec::new();
    for dp in &dps {
        let name = dp.name_any();
        let new = apollo_api::spec_hash(&dp.spec);
        changes.push(format!(
            "{name}: {} → {new} (observed after {} s, generation {} → {})",
            old.get(&name).map(String::as_str).unwrap_or("?"),
            took.get(&name).map(|d| secs(*d)).unwrap_or_default(),
            demo.memo
                .generations
                .get(&name)
                .copied()
                .unwrap_or_default(),
            dp.metadata.generation.unwrap_or_default()
        ));
        demo.memo.hashes.insert(name.clone(), new);
        demo.memo
            .generations
            .insert(name, dp.metadata.generation.unwrap_or_default());
    }
    step.saw(&changes.join("\n"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 7

async fn warning_occurrences(
    demo: &Demo,
    name: &str,
) -> Result<(i64, Vec<k8s_openapi::api::core::v1::Event>)> {
    let events = demo.kube.events_for("DeviceProcess", name).await?;
    let n = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(event_occurrences)
        .sum();
    Ok((n, events))
}

async fn show_events(
    demo: &Demo,
    step: &Step,
    name: &str,
    events: &[k8s_openapi::api::core::v1::Event],
) {
    match demo.kubectl.run(&["describe", "dp", name]).await {
        Some(Ok(text)) => {
            let tail: Vec<&str> = text
                .lines()
                .skip_while(|l| !l.starts_with("Events:"))
                .collect();
            step.shell(
                &format!("kubectl describe dp {name} | sed -n '/Events/,$p'"),
                &tail.join("\n"),
            );
        }
        Some(Err(e)) => step.saw(&format!("{e:#}")),
        None => step.shell(
            &format!(
                "kubectl get events --field-selector involvedObject.name={name}   (client view)"
            ),
            &render_events(events),
        ),
    }
}

async fn step7_stale(demo: &mut Demo, step: &Step) -> Result<()> {
    let device = demo
        .devices
        .last()
        .cloned()
        .ok_or_else(|| anyhow!("no device"))?;
    let name = demo.dp_name(&device);
    let other = demo.dp_name(&demo.devices[0]);
    let (before, _) = warning_occurrences(demo, &name).await?;
    let t = &demo.timings;
    step.expect(&format!(
        "AgentConnected=False on {name} between {} s and {} s after the agent stops (stale window {} \
         = 3 × heartbeat, minus up to one heartbeat already elapsed, plus {} s slack); {other} \
         stays True; exactly one new Warning event on {name}, still one after another window",
        secs(t.stale_min()),
        secs(t.stale_max()),
        flag_duration(t.stale),
        secs(t.stale_slack)
    ));
    // Measured from the stop command: the agent stops heartbeating at SIGTERM, while
    // `docker compose stop` (or our wait) returns only once it has exited.
    let stopped = Instant::now();
    let did = demo.agents.stop(&device).await?;
    step.did(&format!(
        "{did} (returned after {} s)",
        secs(stopped.elapsed())
    ));
    // Poll past the acceptable range so a late transition is measured, not just missed.
    let deadline = t.stale_max() + t.stale;
    let kube = demo.kube.clone();
    let flipped = poll_until(deadline, t.poll, || {
        let api = kube.device_processes();
        let name = name.clone();
        async move {
            let dp = api.get(&name).await.ok()?;
            (condition_status(&dp, AGENT_CONNECTED).as_deref() == Some("False"))
                .then(|| (stopped.elapsed(), dp))
        }
    })
    .await;
    let Some((after, dp)) = flipped else {
        demo.show_dps(step).await;
        bail!(
            "{name} still AgentConnected={} {} s after the agent stopped",
            demo.kube
                .device_processes()
                .get(&name)
                .await
                .ok()
                .and_then(|d| condition_status(&d, AGENT_CONNECTED))
                .unwrap_or_default(),
            secs(deadline)
        );
    };
    step.saw(&format!(
        "{name}: AgentConnected=False {} s after the stop ({})",
        secs(after),
        dp.status
            .as_ref()
            .and_then(|s| s.condition(AGENT_CONNECTED))
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default()
    ));
    demo.show_dps(step).await;
    if let Ok(m) = demo.scrape().await {
        step.shell(
            &format!(
                "curl -s {}/metrics | grep -E 'connected_devices|stale_transitions'",
                demo.gateway_metrics.base()
            ),
            &m.lines_matching(&[gw::CONNECTED, gw::STALE]).join("\n"),
        );
    }
    let mut problems = Vec::new();
    if after < t.stale_min() {
        problems.push(format!(
            "went stale after {} s, before the {} window could have passed",
            secs(after),
            flag_duration(t.stale)
        ));
    }
    if after > t.stale_max() {
        problems.push(format!(
            "went stale after {} s, later than {} s",
            secs(after),
            secs(t.stale_max())
        ));
    }
    let other_dp = demo.kube.device_processes().get(&other).await?;
    if condition_status(&other_dp, AGENT_CONNECTED).as_deref() != Some("True") {
        problems.push(format!("{other} is not AgentConnected=True any more"));
    }
    // One Warning must be there now...
    let got_one = poll_until(demo.timings.within, demo.timings.poll, || {
        let demo = &*demo;
        let name = name.clone();
        async move {
            let (n, _) = warning_occurrences(demo, &name).await.ok()?;
            (n > before).then_some(())
        }
    })
    .await;
    if got_one.is_none() {
        problems.push(format!("no Warning event on {name}"));
    }
    // ...and still exactly one after another whole window of silence (no repeats).
    let extra = t.stale + t.stale_slack;
    step.did(&format!(
        "waited another stale window ({} s) with the agent still stopped",
        secs(extra)
    ));
    tokio::time::sleep(extra).await;
    let (now, events) = warning_occurrences(demo, &name).await?;
    show_events(demo, step, &name, &events).await;
    let warnings: Vec<String> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| {
            format!(
                "{} ×{} at {}: {}",
                e.reason.clone().unwrap_or_default(),
                event_occurrences(e),
                event_time(e).unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            )
        })
        .collect();
    step.saw(&format!(
        "Warning events on {name}: {} new ({})",
        now - before,
        warnings.join("; ")
    ));
    if now - before != 1 {
        problems.push(format!(
            "{} new Warning events on {name}, expected exactly 1",
            now - before
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 8

async fn step8_reconnect(demo: &mut Demo, step: &Step) -> Result<()> {
    let device = demo
        .devices
        .last()
        .cloned()
        .ok_or_else(|| anyhow!("no device"))?;
    let name = demo.dp_name(&device);
    let before = demo.kube.device_processes().get(&name).await?;
    let dpd_gen = demo
        .kube
        .deployments()
        .get(DEPLOYMENT)
        .await?
        .metadata
        .generation;
    let hash = apollo_api::spec_hash(&before.spec);
    step.expect(&format!(
        "within {} s of the restart: {name} AgentConnected=True (heartbeat-only reconnect), \
         SpecObserved=True with the same hash {hash}; no desired change (generation {} and \
         deployment generation {} unchanged)",
        demo.timings.within.as_secs(),
        before.metadata.generation.unwrap_or_default(),
        dpd_gen.unwrap_or_default()
    ));
    let did = demo.agents.restart(&device).await?;
    step.did(&did);
    let t0 = Instant::now();
    let dev_name = name.clone();
    let r = wait_all(demo, demo.timings.within, |dp| {
        if dp.name_any() == dev_name {
            status_ok(dp)
        } else {
            Ok(())
        }
    })
    .await;
    demo.show_dps(step).await;
    r.map_err(|e| anyhow!(e))?;
    let took = t0.elapsed();
    let after = demo.kube.device_processes().get(&name).await?;
    let dpd_gen_after = demo
        .kube
        .deployments()
        .get(DEPLOYMENT)
        .await?
        .metadata
        .generation;
    let events = demo.kube.events_for("DeviceProcess", &name).await?;
    show_events(demo, step, &name, &events).await;
    ensure!(
        after.metadata.generation == before.metadata.generation
            && apollo_api::spec_hash(&after.spec) == hash
            && dpd_gen_after == dpd_gen,
        "the desired state changed during the restart (generation {:?} → {:?})",
        before.metadata.generation,
        after.metadata.generation
    );
    let normal = events
        .iter()
        .rev()
        .find(|e| e.type_.as_deref() == Some("Normal"))
        .and_then(|e| e.reason.clone())
        .unwrap_or_else(|| "none".into());
    step.saw(&format!(
        "{name}: AgentConnected=True {} s after the restart; desired unchanged (hash {hash}); \
         latest Normal event: {normal}",
        secs(took)
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 9

fn read_device_key(dir: &std::path::Path, device: &str) -> Option<String> {
    for f in [format!("{device}.key"), format!("{device}.env")] {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            for l in t.lines() {
                let l = l.trim();
                let v = l.strip_prefix("APOLLO_DEVICE_KEY=").unwrap_or(l);
                if v.starts_with("apollo-dk1:") {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

async fn step9_no_credentials(demo: &mut Demo, step: &Step) -> Result<()> {
    step.expect(
        "each agent's argv and environment name only its device, the gateway URL and its device \
         key: no KUBECONFIG, no token, no kubeconfig file open; its only TCP peer is the gateway; \
         the API server's request log holds no request from any identity but admin, controller \
         and gateway; the device key is refused by the API server (401)",
    );
    let gateway_addr = demo
        .gateway
        .base()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut forbidden: Vec<String> = demo.api_url.iter().cloned().collect();
    forbidden.push(
        demo.kube
            .kubeconfig
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    let mut problems = Vec::new();
    for d in demo.devices.clone() {
        match demo.agents.evidence(&d, &gateway_addr, &forbidden).await {
            Ok(ev) => {
                step.saw(&format!("agent {d}:\n{}", ev.shown.join("\n")));
                problems.extend(ev.problems.into_iter().map(|p| format!("agent {d}: {p}")));
            }
            Err(e) => problems.push(format!("agent {d}: {e:#}")),
        }
    }
    // The request log before our own probe below.
    let log = if demo.ids.admin.is_some() {
        demo.kube.request_counts().await
    } else {
        None
    };
    let log_missing = log.is_none();
    if !log_missing {
        step.saw(Evidence::RequestLog.describe());
    }
    match log {
        Some(c) => {
            let known: Vec<&str> = [&demo.ids.admin, &demo.ids.controller, &demo.ids.gateway]
                .iter()
                .filter_map(|x| x.as_deref())
                .collect();
            let users = c.users();
            let strangers: Vec<&String> = users
                .iter()
                .filter(|u| !known.contains(&u.as_str()))
                .collect();
            let agent_n = demo
                .ids
                .agent
                .as_deref()
                .map(|a| c.count(Some(a), None, None, None))
                .unwrap_or(0);
            step.shell(
                "kubectl get --raw /_devcluster/requests   (requests per identity, before the probe below)",
                &users
                    .iter()
                    .map(|u| {
                        format!(
                            "{:>6} {}",
                            c.count(Some(u), None, None, None),
                            if u.is_empty() { "(anonymous)" } else { u }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            if agent_n != 0 {
                problems.push(format!(
                    "the API server saw {agent_n} requests from the agent identity"
                ));
            }
            if !strangers.is_empty() {
                problems.push(format!(
                    "the API server saw requests from {}",
                    strangers
                        .iter()
                        .map(|s| if s.is_empty() {
                            "(anonymous)".to_string()
                        } else {
                            s.to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        None => {
            step.saw(
                "no per-identity request log for this cluster (the components share one \
                 kubeconfig or the server keeps none)",
            );
        }
    }
    // Without the log, the API server's request metrics around the probe below: the device
    // key's 401 is counted, and how many 401s there were before it.
    let metrics_before = if log_missing {
        apievidence::scrape(&demo.kube).await
    } else {
        None
    };
    // The device key is not a Kubernetes credential.
    match read_device_key(&demo.keys_dir, &demo.devices[0]) {
        Some(key) => {
            let kc = crate::cluster::kubeconfig_with_token(&demo.kube.kubeconfig, &key)?;
            let kc = kube::config::Kubeconfig::from_yaml(&serde_json::to_string(&kc)?)?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            let client = kube::Client::try_from(cfg)?;
            let api: kube::Api<DeviceProcess> = kube::Api::namespaced(client, &demo.kube.namespace);
            let r = api.list(&Default::default()).await;
            let shown = match &r {
                Ok(_) => "200 OK: the device key was accepted!".to_string(),
                Err(kube::Error::Api(s)) => format!("{} {}: {}", s.code, s.reason, s.message),
                Err(e) => format!("{e}"),
            };
            let env_file = demo.keys_dir.join(format!("{}.env", demo.devices[0]));
            let key_cmd = if env_file.is_file() {
                format!("sed -n 's/^APOLLO_DEVICE_KEY=//p' {}", env_file.display())
            } else {
                format!("cat {}/{}.key", demo.keys_dir.display(), demo.devices[0])
            };
            step.shell(
                &format!(
                    "curl -sk -H \"Authorization: Bearer $({key_cmd})\" {}/apis/azure.com/v1alpha1/namespaces/{}/deviceprocesses   (the device key as a bearer token)",
                    demo.api_url.as_deref().unwrap_or("$APISERVER"),
                    demo.kube.namespace
                ),
                &shown,
            );
            match r {
                Err(kube::Error::Api(s)) if s.code == 401 => {}
                _ => problems.push(format!(
                    "the API server did not refuse the device key: {shown}"
                )),
            }
        }
        None => step.saw(&format!(
            "no device key under {} to try against the API server",
            demo.keys_dir.display()
        )),
    }
    if log_missing {
        match (metrics_before, apievidence::scrape(&demo.kube).await) {
            (Some(before), Some(after)) => {
                let (b, a) = (
                    ApiCounts::from_scrape(&before),
                    ApiCounts::from_scrape(&after),
                );
                step.saw(&format!(
                    "API server apiserver_request_total (all clients): {} requests refused 401 \
                     and {} refused 403 before the probe, {} and {} after it; the counter has no \
                     user label, so it cannot attribute requests to identities: the agents' \
                     configuration and connections above are the per-agent evidence",
                    b.unauthorized, b.forbidden, a.unauthorized, a.forbidden
                ));
                step.saw(Evidence::ApiServerMetrics.describe());
            }
            _ => step.saw(
                "evidence: the agents' configuration and connections above (no per-identity \
                 request log, and /metrics of the API server not readable with this identity)",
            ),
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    step.saw("no Kubernetes credential in any agent, and no agent request at the API server");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_are_read_from_key_and_env_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tor1-01.key"), "apollo-dk1:k:tor1-01:abc\n").unwrap();
        std::fs::write(
            dir.path().join("tor1-02.env"),
            "# comment\nAPOLLO_DEVICE_KEY=apollo-dk1:k:tor1-02:def\n",
        )
        .unwrap();
        assert_eq!(
            read_device_key(dir.path(), "tor1-01").as_deref(),
            Some("apollo-dk1:k:tor1-01:abc")
        );
        assert_eq!(
            read_device_key(dir.path(), "tor1-02").as_deref(),
            Some("apollo-dk1:k:tor1-02:def")
        );
        assert!(read_device_key(dir.path(), "tor1-03").is_none());
    }

    #[test]
    fn status_check_names_what_is_off() {
        let mut dp = DeviceProcess::new(
            "demo-logger-tor1-01",
            serde_json::from_value(serde_json::json!({
                "deviceRef": {"name": "tor1-01"},
                "artifact": {"type": "oci", "url": "alpine:3.19"},
                "execution": {"backend": "container", "command": ["/bin/sh"], "args": [], "env": []}
            }))
            .unwrap(),
        );
        assert!(status_ok(&dp).unwrap_err().contains("no status"));
        let hash = apollo_api::spec_hash(&dp.spec);
        dp.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Pending",
                "observedSpecHash": hash,
                "conditions": [
                    {"type": "AgentConnected", "status": "True", "reason": "Heartbeat", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "SpecObserved", "status": "False", "reason": "SpecHashMismatch", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                ]
            }))
            .unwrap(),
        );
        let e = status_ok(&dp).unwrap_err();
        assert!(
            e.contains("SpecObserved=False") && !e.contains("AgentConnected"),
            "{e}"
        );
    }
}
