//! `apollo-demo containers-ha`: the gateway's replica scenarios (docs/GATEWAY.md, Replicas)
//! with each component in its own container — the container machine's version of
//! `crates/gateway/tests/ha.rs`.
//!
//! Two docker networks separate the paths a replica depends on:
//!
//! ```text
//!  <run>-api:    apiserver ── controller ── gw-a ── gw-b ── gw-c
//!  <run>-agents:                            gw-a ── gw-b ── gw-c   (peers forward reports
//!                                            ▲       ▲       ▲      here; ports published here)
//!  default bridge: compose agents ── host.docker.internal:<published port of each gateway>
//! ```
//!
//! so `docker network disconnect <run>-api gw-x` cuts one replica off the API server while
//! its agents and its peers still reach it. Every gateway is created on `<run>-agents` (its
//! ports are published there: docker keeps them on the endpoint of the network whose name sorts
//! first) and then connected to `<run>-api`.
//!
//! The steps: three gateways share the devices; every agent (docker compose, each listing
//! every gateway's URL, starting with a different one) is connected and observed; `docker
//! kill` of the gateway owning most devices: the survivors own everything within the Lease
//! duration plus a heartbeat, no DeviceProcess ever shows `AgentConnected=False`, no Event
//! is emitted and every object's status writer changes at most once, from the dead one;
//! `docker start` of it: it rejoins, again without a flap or an Event; `docker network
//! disconnect` of the gateway owning most devices from the API network: it stops writing
//! (its log shows no status write while cut off) and its devices move within the Lease
//! duration plus a heartbeat; `docker network connect`: it rejoins and owns its share again.
//! A DeviceProcess watch from this machine records every object ever seen disconnected.
//!
//! Everything runs under a run name of its own (`apollo-ha-<pid>-<hex>`) and is removed at
//! the end, on failure and on Ctrl-C, by [`crate::containers::Created`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use apollo_testkit::DeviceProcessObserver;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use crate::agents::ComposeAgents;
use crate::app::Shared;
use crate::cli::{CommonFlags, ContainersHaArgs, Timings, flag_duration, parse_duration};
use crate::cluster::Kube;
use crate::containers::{
    GATEWAY_PORT, GatewayContainer, Prerequisites, Stack, docker, private_dir, provision_keys,
    run_name_with, stable_host_port,
};
use crate::httpc::Http;
use crate::metrics::Scrape;
use crate::report::Step;
use crate::wait::{poll_until, secs};

/// The scenario's steps.
pub const TITLES: [&str; 7] = [
    "Three gateway containers share the devices",
    "Every DeviceProcess connected and observed",
    "docker kill: survivors own every device in time",
    "After the kill: no flap, no Event, one writer each",
    "Killed gateway restarted: it rejoins without a flap",
    "docker network disconnect: writes stop, devices move",
    "docker network connect: it rejoins without a flap",
];

/// The deployment the scenario applies (the runbook's sample, `k8s/samples/demo-logger.yaml`).
const DEPLOYMENT: &str = "demo-logger";
/// The replicas' ids (`--id`; their Leases are `apollo-gateway-<id>`).
const IDS: [&str; 3] = ["gw-a", "gw-b", "gw-c"];
/// The gateway's `reportingController` on its Events.
const GATEWAY_EVENTS: &str = "azure.com/apollo-gateway";
/// Longest wait for containers, memberships and fleets to settle.
const SETTLE: Duration = Duration::from_secs(60);
/// Allowance for observing a handover from the host (see `Ha::observed_in_time`).
const OBSERVING: Duration = Duration::from_secs(1);

/// The scenario's devices: `tor1-01` … (the runbook's names, more of them).
pub fn devices(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("tor1-{i:02}")).collect()
}

/// One gateway container.
#[derive(Debug, Clone)]
struct Gateway {
    id: &'static str,
    container: String,
    /// Host port of its device listener (what agents list).
    host_port: u16,
    /// Its metrics and health listener, published on 127.0.0.1.
    metrics: Http,
}

impl Gateway {
    async fn scrape(&self) -> Option<Scrape> {
        let r = self
            .metrics
            .get("/metrics", &[], Duration::from_secs(2))
            .await
            .ok()?;
        (r.status == 200).then(|| Scrape::parse(&r.body))
    }

    async fn ready(&self) -> bool {
        self.metrics
            .get("/readyz", &[], Duration::from_secs(2))
            .await
            .is_ok_and(|r| r.status == 200)
    }

    /// (members, owned devices) as this replica sees them.
    async fn view(&self) -> Option<(f64, f64)> {
        let s = self.scrape().await?;
        Some((
            s.sum("apollo_gateway_members", &[]),
            s.sum("apollo_gateway_owned_devices", &[]),
        ))
    }

    /// (time, object) of every status write its log shows at or after `since`.
    async fn writes(&self, since: jiff::Timestamp) -> Result<Vec<(jiff::Timestamp, String)>> {
        // The gateway logs to stderr; `docker logs` replays both streams.
        let out = tokio::process::Command::new("docker")
            .args(["logs", &self.container])
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .map_err(|_| anyhow!("docker logs {} timed out", self.container))??;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(status_writes(&text)
            .into_iter()
            .filter(|(t, _)| *t >= since)
            .collect())
    }
}

/// (time, object) of the `status written` lines of a gateway log (debug level of
/// `apollo_gateway::status`; each line starts with its RFC 3339 time).
fn status_writes(log: &str) -> Vec<(jiff::Timestamp, String)> {
    log.lines()
        .filter(|l| l.contains("status written"))
        .filter_map(|l| {
            let ts = l.split_whitespace().next()?.parse().ok()?;
            let obj = l
                .split_whitespace()
                .find_map(|t| t.strip_prefix("object="))?
                .to_string();
            Some((ts, obj))
        })
        .collect()
}

/// Every object's status writers in time order, consecutive repeats merged.
fn writer_sequences(
    writes: &[(&str, Vec<(jiff::Timestamp, String)>)],
) -> BTreeMap<String, Vec<String>> {
    let mut all: Vec<(jiff::Timestamp, &str, &str)> = writes
        .iter()
        .flat_map(|(id, w)| w.iter().map(move |(t, o)| (*t, o.as_str(), *id)))
        .collect();
    all.sort();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, obj, id) in all {
        let seq = out.entry(obj.to_string()).or_default();
        if seq.last().map(String::as_str) != Some(id) {
            seq.push(id.to_string());
        }
    }
    out
}

/// Objects whose writers do not fit `allowed` (one writer, or one change as `allowed` says).
fn bad_writers(
    seqs: &BTreeMap<String, Vec<String>>,
    allowed: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    seqs.iter()
        .filter(|(_, seq)| seq.len() > 1 && !allowed(seq))
        .map(|(obj, seq)| format!("{obj} written by {}", seq.join(" then ")))
        .collect()
}

/// Watches for `period`: fails as soon as a DeviceProcess shows `AgentConnected=False`
/// (a flap), and unless all `n` are connected and observed at the end.
async fn hold(observer: &DeviceProcessObserver, period: Duration, n: usize) -> Result<()> {
    observer.hold_without_flap(period).await?;
    let ok = observer.connected_and_observed();
    ensure!(
        ok == n,
        "{ok} of {n} DeviceProcesses connected and observed"
    );
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The gateway's Events in the namespace by (type, reason).
async fn gateway_events(kube: &Kube) -> Result<BTreeMap<(String, String), usize>> {
    let api: Api<Event> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let mut out = BTreeMap::new();
    for e in api.list(&ListParams::default()).await?.items {
        if e.reporting_controller.as_deref() != Some(GATEWAY_EVENTS) {
            continue;
        }
        *out.entry((e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .or_insert(0) += 1;
    }
    Ok(out)
}

fn show_events(m: &BTreeMap<(String, String), usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|((t, r), n)| format!("{n} {t} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scenario's state from one step to the next.
struct Ha {
    stack: Stack,
    kube: Kube,
    gateways: Vec<Gateway>,
    devices: Vec<String>,
    compose: ComposeAgents,
    timings: Timings,
    lease: Duration,
    /// The network separating the replicas from the API server.
    api_network: String,
    observer: Option<DeviceProcessObserver>,
    /// The gateway's Events once every agent connected (nothing may add to them).
    baseline: BTreeMap<(String, String), usize>,
    /// When the member set was last stable (status writes are compared from there).
    stable_since: jiff::Timestamp,
    /// The gateway killed in step 3 (index into `gateways`).
    killed: Option<usize>,
    /// The gateway cut off in step 6, with how many devices it owned and when it was cut.
    cut: Option<(usize, f64, jiff::Timestamp)>,
}

impl Ha {
    fn n(&self) -> usize {
        self.devices.len()
    }

    /// (members, owned) per gateway, `None` where it does not answer.
    async fn views(&self) -> Vec<Option<(f64, f64)>> {
        let mut out = Vec::new();
        for g in &self.gateways {
            out.push(g.view().await);
        }
        out
    }

    fn show_views(&self, views: &[Option<(f64, f64)>]) -> String {
        self.gateways
            .iter()
            .zip(views)
            .map(|(g, v)| match v {
                Some((m, o)) => format!("{}: {m} members, owns {o}", g.id),
                None => format!("{}: no answer", g.id),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Waits until every gateway in `live` is ready, sees `live.len()` members, the gateways
    /// in `live` own every device between them and each of `must_own` owns some; returns the
    /// time it took and the views.
    async fn wait_shared(
        &self,
        live: &[usize],
        must_own: &[usize],
        deadline: Duration,
    ) -> Result<(Duration, Vec<Option<(f64, f64)>>)> {
        let t = Instant::now();
        let n = self.n() as f64;
        let last = Mutex::new(Vec::new());
        let got = poll_until(deadline, Duration::from_millis(100), || async {
            let views = self.views().await;
            *lock(&last) = views.clone();
            for &i in live {
                if !self.gateways[i].ready().await {
                    return None;
                }
            }
            let mut owned = 0.0;
            for &i in live {
                let (members, o) = views[i]?;
                if members != live.len() as f64 {
                    return None;
                }
                owned += o;
            }
            let each = must_own
                .iter()
                .all(|&i| views[i].is_some_and(|(_, o)| o > 0.0));
            (owned == n && each).then_some(views)
        })
        .await;
        match got {
            Some(views) => Ok((t.elapsed(), views)),
            None => bail!(
                "after {} s: {} (want {} members among {} and {} devices owned once)",
                secs(deadline),
                self.show_views(&lock(&last)),
                live.len(),
                live.iter()
                    .map(|&i| self.gateways[i].id)
                    .collect::<Vec<_>>()
                    .join(", "),
                self.n()
            ),
        }
    }

    /// The gateway owning most devices among `among`.
    async fn busiest(&self, among: &[usize]) -> Result<(usize, f64)> {
        let views = self.views().await;
        among
            .iter()
            .filter_map(|&i| views[i].map(|(_, o)| (i, o)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| anyhow!("no gateway answers: {}", self.show_views(&views)))
    }

    fn observer(&self) -> Result<&DeviceProcessObserver> {
        self.observer
            .as_ref()
            .ok_or_else(|| anyhow!("the DeviceProcess watch was not started (step 2 failed)"))
    }

    /// No Event of the gateway since the baseline.
    async fn no_new_events(&self, step: &Step) -> Result<()> {
        let now = gateway_events(&self.kube).await?;
        ensure!(
            now == self.baseline,
            "the gateway's Events changed: {} (before: {})",
            show_events(&now),
            show_events(&self.baseline)
        );
        step.saw(&format!(
            "the gateway's Events are still {}",
            show_events(&now)
        ));
        Ok(())
    }

    /// Status writes of every gateway since `since`, by object.
    async fn writers(&self, since: jiff::Timestamp) -> Result<BTreeMap<String, Vec<String>>> {
        let mut writes = Vec::new();
        for g in &self.gateways {
            writes.push((g.id, g.writes(since).await?));
        }
        Ok(writer_sequences(&writes))
    }

    /// The window in which a live agent would have been marked stale twice over.
    fn quiet(&self) -> Duration {
        self.timings.stale * 2
    }

    fn in_time(&self) -> Duration {
        self.lease + self.timings.heartbeat
    }

    /// [`Self::in_time`] plus what observing it costs: `docker kill` and `docker network
    /// disconnect` returning, and the host's scrapes of every gateway's metrics (a loaded
    /// machine delays both; the product's own bound is `in_time`).
    fn observed_in_time(&self) -> Duration {
        self.in_time() + OBSERVING
    }

    /// Shows where the devices are `took` after a handover began, and checks it was within the
    /// Lease duration + a heartbeat (+ the time to observe it from here).
    fn handover_in_time(
        &self,
        step: &Step,
        what: &str,
        took: Duration,
        views: &[Option<(f64, f64)>],
    ) -> Result<()> {
        step.saw(&format!(
            "after {} s: {}",
            secs(took),
            self.show_views(views)
        ));
        ensure!(
            took <= self.observed_in_time(),
            "{what} in {} s, more than the Lease duration + a heartbeat ({} s) and {} s for \
             observing it",
            secs(took),
            secs(self.in_time()),
            secs(OBSERVING)
        );
        Ok(())
    }
}

async fn step1_share(ha: &mut Ha, step: &Step) -> Result<()> {
    step.expect(&format!(
        "three gateways ({}) each answer /readyz, each sees 3 members and together they own \
         all {} devices once (rendezvous hashing of the member set)",
        IDS.join(", "),
        ha.n()
    ));
    let (took, views) = ha.wait_shared(&[0, 1, 2], &[], SETTLE).await?;
    step.saw(&format!(
        "after {} s: {}",
        secs(took),
        ha.show_views(&views)
    ));
    ha.stable_since = jiff::Timestamp::now();
    Ok(())
}

async fn step2_connected(ha: &mut Ha, step: &Step) -> Result<()> {
    let observer = DeviceProcessObserver::start(ha.kube.device_processes());
    let up = ha.compose.run(&["up", "-d"]).await?;
    step.did(&format!("$ {}\n{up}", ha.compose.display(&["up", "-d"])));
    let n = ha.n();
    step.expect(&format!(
        "all {n} DeviceProcesses AgentConnected=True and SpecObserved=True; the gateway's \
         Events: {n} Normal AgentConnected and {n} Normal SpecObserved"
    ));
    let t = Instant::now();
    poll_until(SETTLE, ha.timings.poll, || async {
        (observer.connected_and_observed() == n).then_some(())
    })
    .await
    .ok_or_else(|| {
        anyhow!(
            "{} of {n} connected and observed",
            observer.connected_and_observed()
        )
    })?;
    let want: BTreeMap<(String, String), usize> = [
        (("Normal".into(), "AgentConnected".into()), n),
        (("Normal".into(), "SpecObserved".into()), n),
    ]
    .into_iter()
    .collect();
    let last = Mutex::new(BTreeMap::new());
    poll_until(Duration::from_secs(30), ha.timings.poll, || async {
        let got = gateway_events(&ha.kube).await.ok()?;
        *lock(&last) = got.clone();
        (got == want).then_some(())
    })
    .await
    .ok_or_else(|| anyhow!("the gateway's Events: {}", show_events(&lock(&last))))?;
    let d = observer.disconnected();
    ensure!(
        d.is_empty(),
        "AgentConnected=False seen on {}",
        d.join(", ")
    );
    ha.baseline = want;
    step.saw(&format!(
        "all {n} connected and observed after {} s; Events {}",
        secs(t.elapsed()),
        show_events(&ha.baseline)
    ));
    ha.observer = Some(observer);
    Ok(())
}

async fn step3_kill(ha: &mut Ha, step: &Step) -> Result<()> {
    let (victim, owned) = ha.busiest(&[0, 1, 2]).await?;
    let g = ha.gateways[victim].clone();
    step.expect(&format!(
        "within the Lease duration + a heartbeat ({} s) of `docker kill {}` (it owns {owned} \
         devices): the two survivors see 2 members and own all {} devices",
        secs(ha.in_time()),
        g.container,
        ha.n()
    ));
    let killed = Instant::now();
    docker(&["kill", &g.container], None).await?;
    ha.killed = Some(victim);
    step.did(&format!("$ docker kill {}   (SIGKILL)", g.container));
    let live: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let (_, views) = ha
        .wait_shared(&live, &[], ha.in_time() + Duration::from_secs(10))
        .await?;
    ha.handover_in_time(step, "ownership moved", killed.elapsed(), &views)
}

async fn step4_no_flap(ha: &mut Ha, step: &Step) -> Result<()> {
    let victim = ha.killed.ok_or_else(|| anyhow!("no gateway was killed"))?;
    let dead = ha.gateways[victim].id;
    step.expect(&format!(
        "for {} s (two stale windows) no DeviceProcess shows AgentConnected=False, all {} \
         stay connected and observed, the gateway posts no Event, and each object's status \
         was written by one replica, or by {dead} and then its successor only",
        secs(ha.quiet()),
        ha.n()
    ));
    hold(ha.observer()?, ha.quiet(), ha.n()).await?;
    step.saw(&format!(
        "no AgentConnected=False in {} s; {} of {} connected and observed",
        secs(ha.quiet()),
        ha.observer()?.connected_and_observed(),
        ha.n()
    ));
    ha.no_new_events(step).await?;
    let seqs = ha.writers(ha.stable_since).await?;
    let bad = bad_writers(&seqs, |seq| seq.len() == 2 && seq[0] == dead);
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    let moved = seqs.values().filter(|s| s.len() == 2).count();
    step.saw(&format!(
        "status writes of {} objects since the member set was stable: one writer each \
         ({moved} moved from {dead} to a survivor)",
        seqs.len()
    ));
    Ok(())
}

async fn step5_restart(ha: &mut Ha, step: &Step) -> Result<()> {
    let victim = ha.killed.ok_or_else(|| anyhow!("no gateway was killed"))?;
    let g = ha.gateways[victim].clone();
    step.expect(&format!(
        "`docker start {}`: it is ready, all three see 3 members, it owns its share again; \
         for {} s no flap and no Event; an object's writer changes at most once, to {}",
        g.container,
        secs(ha.quiet()),
        g.id
    ));
    let since = jiff::Timestamp::now();
    docker(&["start", &g.container], None).await?;
    step.did(&format!(
        "$ docker start {}   (same container: same id, ports, files)",
        g.container
    ));
    let (took, views) = ha.wait_shared(&[0, 1, 2], &[victim], SETTLE).await?;
    step.saw(&format!(
        "after {} s: {}",
        secs(took),
        ha.show_views(&views)
    ));
    hold(ha.observer()?, ha.quiet(), ha.n()).await?;
    ha.no_new_events(step).await?;
    let seqs = ha.writers(since).await?;
    let bad = bad_writers(&seqs, |seq| seq.len() == 2 && seq[1] == g.id);
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    ha.stable_since = jiff::Timestamp::now();
    Ok(())
}

async fn step6_disconnect(ha: &mut Ha, step: &Step) -> Result<()> {
    let (target, owned) = ha.busiest(&[0, 1, 2]).await?;
    let g = ha.gateways[target].clone();
    let others: Vec<usize> = (0..3).filter(|&i| i != target).collect();
    step.expect(&format!(
        "`docker network disconnect {} {}` (it owns {owned} devices; its agents and peers \
         still reach it on {}-agents): within the Lease duration + a heartbeat ({} s) the \
         two others see 2 members and own all {} devices and {} owns none; for {} s no flap, \
         no Event, and {} writes no status",
        ha.api_network,
        g.container,
        ha.stack.run,
        secs(ha.in_time()),
        ha.n(),
        g.id,
        secs(ha.quiet()),
        g.id
    ));
    let cut_at = jiff::Timestamp::now();
    let t = Instant::now();
    docker(
        &["network", "disconnect", &ha.api_network, &g.container],
        None,
    )
    .await?;
    ha.cut = Some((target, owned, cut_at));
    step.did(&format!(
        "$ docker network disconnect {} {}",
        ha.api_network, g.container
    ));
    let last = Mutex::new(Vec::new());
    let n = ha.n() as f64;
    let moved = poll_until(
        ha.in_time() + Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let views = ha.views().await;
            *lock(&last) = views.clone();
            let mut owned = 0.0;
            for &i in &others {
                let (members, o) = views[i]?;
                if members != 2.0 {
                    return None;
                }
                owned += o;
            }
            let cut_owns = views[target]?.1;
            (owned == n && cut_owns == 0.0).then_some(views)
        },
    )
    .await;
    let took = t.elapsed();
    let Some(views) = moved else {
        bail!("after {} s: {}", secs(took), ha.show_views(&lock(&last)));
    };
    ha.handover_in_time(step, "the devices moved", took, &views)?;
    hold(ha.observer()?, ha.quiet(), ha.n()).await?;
    ha.no_new_events(step).await?;
    let written = g.writes(cut_at).await?;
    ensure!(
        written.is_empty(),
        "{} wrote status while cut off from the API server: {}",
        g.id,
        written
            .iter()
            .map(|(t, o)| format!("{o} at {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    step.saw(&format!(
        "{} wrote no status since it was cut off ({} s ago); no AgentConnected=False",
        g.id,
        secs(t.elapsed())
    ));
    Ok(())
}

async fn step7_reconnect(ha: &mut Ha, step: &Step) -> Result<()> {
    let (target, owned, cut_at) = ha.cut.ok_or_else(|| anyhow!("no gateway was cut off"))?;
    let g = ha.gateways[target].clone();
    step.expect(&format!(
        "`docker network connect {} {}`: all three see 3 members and {} owns its {owned} \
         devices again; for {} s no flap; no Event since step 2 (kill, restart and partition \
         added none); an object's writer changed at most once to another replica and back",
        ha.api_network,
        g.container,
        g.id,
        secs(ha.quiet())
    ));
    docker(&["network", "connect", &ha.api_network, &g.container], None).await?;
    step.did(&format!(
        "$ docker network connect {} {}",
        ha.api_network, g.container
    ));
    let (took, views) = ha.wait_shared(&[0, 1, 2], &[target], SETTLE).await?;
    step.saw(&format!(
        "after {} s: {}",
        secs(took),
        ha.show_views(&views)
    ));
    ensure!(
        views[target].is_some_and(|(_, o)| o == owned),
        "{} owns {:?} devices, {owned} before the cut (ownership is a function of the member set)",
        g.id,
        views[target].map(|(_, o)| o)
    );
    hold(ha.observer()?, ha.quiet(), ha.n()).await?;
    ha.no_new_events(step).await?;
    let seqs = ha.writers(cut_at).await?;
    let bad = bad_writers(&seqs, |seq| seq.len() == 2 && seq[1] == g.id);
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

async fn run_step(n: usize, ha: &mut Ha, step: &Step) -> Result<()> {
    match n {
        1 => step1_share(ha, step).await,
        2 => step2_connected(ha, step).await,
        3 => step3_kill(ha, step).await,
        4 => step4_no_flap(ha, step).await,
        5 => step5_restart(ha, step).await,
        6 => step6_disconnect(ha, step).await,
        7 => step7_reconnect(ha, step).await,
        _ => bail!("no step {n}"),
    }
}

/// The compose file: `compose.nix`'s output for each third of the devices, whose agents list
/// every gateway's URL starting with a different one, merged into one file.
fn agents_compose(
    devices: &[String],
    urls: &[String],
    image: &str,
) -> Result<(serde_json::Value, Vec<String>)> {
    let mut services = serde_json::Map::new();
    let mut shown = Vec::new();
    for first in 0..urls.len() {
        let group: Vec<String> = devices
            .iter()
            .enumerate()
            .filter(|(i, _)| i % urls.len() == first)
            .map(|(_, d)| d.clone())
            .collect();
        if group.is_empty() {
            continue;
        }
        let list: Vec<String> = (0..urls.len())
            .map(|k| urls[(first + k) % urls.len()].clone())
            .collect();
        let args = crate::compose::ComposeArgs {
            devices: group,
            gateway_url: list.join(","),
            image: image.to_string(),
            key_dir: "./keys".into(),
        };
        let doc = crate::compose::agents_compose(&args)?;
        if let Some(s) = doc["services"].as_object() {
            services.extend(s.clone());
        }
        shown.push(crate::compose::nix_command(&args));
    }
    Ok((serde_json::json!({ "services": services }), shown))
}

/// `apollo-demo containers-ha`.
pub async fn run(args: &ContainersHaArgs, common: &CommonFlags, shared: &Shared) -> Result<()> {
    use crate::app::header;
    let out = &shared.out;
    let timings = common.timings()?.for_compose_agents();
    let lease = parse_duration(&args.lease_duration)?;
    ensure!(args.devices >= 3, "--devices must be at least 3");
    let Prerequisites {
        engine,
        cli,
        repo,
        images,
        image_lines,
    } = Prerequisites::check(common, &args.image_tag).await?;
    let ns = common.namespace.clone();
    let run = run_name_with("apollo-ha");
    let devs = devices(args.devices);
    let mut lines = vec![
        format!(
            "mode: gateway replicas in containers (docker engine {engine}, {}), namespace {ns}, run {run}",
            cli.display()
        ),
        format!(
            "timings: heartbeat {}, stale window {}, Lease duration {}; {} devices",
            flag_duration(timings.heartbeat),
            flag_duration(timings.stale),
            flag_duration(lease),
            devs.len()
        ),
        format!("logs: {}", shared.logs_dir.display()),
    ];
    lines.extend(image_lines);
    header(out, &lines);

    // From here on everything is registered for removal before it is created.
    shared.docker.set_run(&run, &shared.logs_dir);
    let dir = private_dir(&run)?;
    shared.docker.temp_dir(&dir);
    let api_network = format!("{run}-api");
    let agents_network = format!("{run}-agents");
    let stack = Stack {
        run: run.clone(),
        network: api_network.clone(),
        images: images.clone(),
        namespace: ns.clone(),
        created: shared.docker.clone(),
        staging: dir.join("staging"),
        publish_address: args.publish_address.clone(),
        // The single-gateway fields are unused here: each replica has its own ports.
        gateway_host_port: 0,
        gateway_metrics_host_port: 0,
    };
    let mut setup = vec![
        stack.create_network_named(&api_network).await?,
        stack.create_network_named(&agents_network).await?,
    ];
    let (did, _) = stack.start_apiserver().await?;
    setup.extend(did);
    let admin = stack.staging.join("admin.kubeconfig");
    let kube = Kube::connect(&admin, &ns).await?;
    let crds = kube.crd_dir(&repo).await?;
    let applied = kube.apply_path(&crds).await?;
    let names: Vec<String> = applied
        .iter()
        .filter_map(|a| a.strip_prefix("customresourcedefinition/"))
        .map(str::to_string)
        .collect();
    kube.wait_established(&names, Duration::from_secs(10))
        .await?;
    kube.apply_path(&repo.join("k8s/rbac")).await?;
    setup.push(format!(
        "$ kubectl apply --server-side -f {} -f {}",
        crds.display(),
        repo.join("k8s/rbac").display()
    ));
    setup.extend(stack.start_controller().await?);
    kube.apply_switches(
        &devs,
        &[("site", "sfo"), ("role", "tor"), ("rack", "r1")],
        "ok",
    )
    .await?;
    kube.apply_path(&repo.join("k8s/samples/demo-logger.yaml"))
        .await?;
    let t = Instant::now();
    poll_until(SETTLE, Duration::from_millis(200), || async {
        let dps = kube.processes_of(DEPLOYMENT).await.ok()?;
        (dps.len() == devs.len()).then_some(())
    })
    .await
    .ok_or_else(|| {
        anyhow!(
            "the controller did not create {} DeviceProcesses",
            devs.len()
        )
    })?;
    setup.push(format!(
        "NetworkSwitches {} … {} (site=sfo, role=tor) and k8s/samples/demo-logger.yaml applied: \
         the controller created {} DeviceProcesses in {} s",
        devs[0],
        devs[devs.len() - 1],
        devs.len(),
        secs(t.elapsed())
    ));
    let keys_dir = dir.join("keys");
    setup.extend(provision_keys(&images.gateway, &run, &keys_dir, &devs).await?);
    let master_key = keys_dir.join("master.key");
    let mut gateways = Vec::new();
    for id in IDS {
        // Below the ephemeral range: `docker start` after `docker kill` publishes them again.
        let host_port = stable_host_port(&args.publish_address)?;
        let metrics_host_port = stable_host_port("127.0.0.1")?;
        let gw = GatewayContainer {
            component: id.to_string(),
            network: agents_network.clone(),
            connect: vec![api_network.clone()],
            publish_address: args.publish_address.clone(),
            host_port,
            metrics_host_port,
            opts: vec![
                // Peers reach it by this name on the agents' network only.
                "--network-alias".into(),
                id.to_string(),
                "--env".into(),
                "RUST_LOG=info,apollo_gateway::status=debug".into(),
            ],
            args: vec![
                "--id".into(),
                id.to_string(),
                "--advertise-url".into(),
                format!("http://{id}:{GATEWAY_PORT}"),
                "--lease-duration".into(),
                flag_duration(lease),
            ],
        };
        let container = stack.container(id);
        setup.extend(stack.start_gateway(&gw, &master_key, &timings).await?);
        gateways.push(Gateway {
            id,
            container,
            host_port,
            metrics: Http::new(&format!("http://127.0.0.1:{metrics_host_port}")),
        });
    }
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| format!("http://host.docker.internal:{}", g.host_port))
        .collect();
    let (doc, shown) = agents_compose(&devs, &urls, &images.agent)?;
    let compose_file = dir.join("docker-compose.yaml");
    crate::compose::write_compose_file(&compose_file, &doc)?;
    let _ = std::fs::copy(&compose_file, shared.logs_dir.join("docker-compose.yaml"));
    setup.push(format!(
        "wrote {}: the services of\n{}",
        compose_file.display(),
        shown.join("\n")
    ));
    let compose = ComposeAgents {
        compose_file: Some(compose_file),
        project: Some(run.clone()),
        cli,
    };
    shared.docker.compose(&compose);
    setup.push(format!("export KUBECONFIG={}", admin.display()));
    for l in &setup {
        for (i, part) in l.lines().enumerate() {
            out.line(&format!(
                "  {}  {part}",
                if i == 0 { "setup  " } else { "       " }
            ));
        }
    }
    let mut ha = Ha {
        stack,
        kube,
        gateways,
        devices: devs,
        compose,
        timings,
        lease,
        api_network,
        observer: None,
        baseline: BTreeMap::new(),
        stable_since: jiff::Timestamp::now(),
        killed: None,
        cut: None,
    };
    for n in 1..=TITLES.len() {
        let step = Step::begin_of(n, &TITLES, out);
        let r = run_step(n, &mut ha, &step)
            .await
            .map_err(|e| crate::app::concise(&e));
        let failed = r.is_err();
        shared.push(step.finish(r));
        if failed {
            // The steps build on each other: the rest are reported as not run.
            for m in n + 1..=TITLES.len() {
                shared.push(crate::report::StepResult::not_run_of(
                    m,
                    &TITLES,
                    &format!("step {n} failed"),
                ));
            }
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_are_read_from_gateway_logs_and_sequenced() {
        let a = "2026-12-07T08:30:00.100000Z DEBUG status written object=demo-logger-tor1-01\n\
                 2026-12-07T08:30:01.000000Z  INFO event: connected object=x\n\
                 2026-12-07T08:30:02.000000Z DEBUG status written object=demo-logger-tor1-02";
        let b = "2026-12-07T08:30:01.500000Z DEBUG status written object=demo-logger-tor1-01";
        let wa = status_writes(a);
        assert_eq!(wa.len(), 2);
        let seqs = writer_sequences(&[("gw-a", wa.clone()), ("gw-b", status_writes(b))]);
        assert_eq!(seqs["demo-logger-tor1-01"], vec!["gw-a", "gw-b"]);
        assert_eq!(seqs["demo-logger-tor1-02"], vec!["gw-a"]);
        assert!(bad_writers(&seqs, |s| s[0] == "gw-a").is_empty());
        assert_eq!(
            bad_writers(&seqs, |s| s[1] == "gw-a"),
            vec!["demo-logger-tor1-01 written by gw-a then gw-b"]
        );
        // Back and forth is never allowed by the scenario's rules.
        let c = "2026-12-07T08:30:03.000000Z DEBUG status written object=demo-logger-tor1-01";
        let seqs = writer_sequences(&[
            ("gw-a", wa),
            ("gw-b", status_writes(b)),
            ("gw-a", status_writes(c)),
        ]);
        assert_eq!(seqs["demo-logger-tor1-01"], vec!["gw-a", "gw-b", "gw-a"]);
        assert_eq!(
            bad_writers(&seqs, |s| s.len() == 2 && s[0] == "gw-a").len(),
            1
        );
    }

    #[test]
    fn agents_start_on_different_gateways_and_list_all() {
        let devs = devices(7);
        let urls: Vec<String> = ["http://h:1", "http://h:2", "http://h:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (doc, shown) = agents_compose(&devs, &urls, "apollo/agent:t").unwrap();
        let services = doc["services"].as_object().unwrap();
        assert_eq!(services.len(), 7);
        assert_eq!(shown.len(), 3);
        let url = |d: &str| {
            services[&format!("agent-{d}")]["environment"]["APOLLO_GATEWAY_URL"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(url("tor1-01"), "http://h:1,http://h:2,http://h:3");
        assert_eq!(url("tor1-02"), "http://h:2,http://h:3,http://h:1");
        assert_eq!(url("tor1-03"), "http://h:3,http://h:1,http://h:2");
        assert_eq!(url("tor1-04"), "http://h:1,http://h:2,http://h:3");
        // Otherwise exactly compose.nix's service.
        assert_eq!(services["agent-tor1-05"]["network_mode"], "bridge");
        assert_eq!(
            services["agent-tor1-05"]["env_file"][0],
            "./keys/tor1-05.env"
        );
    }
}
