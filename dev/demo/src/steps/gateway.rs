//! Steps 3, 4 and 5: what the gateway does for connected agents: status within seconds, `304`
//! after the first poll, one list of the DeviceProcesses and status writes only on change.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};

use crate::apievidence::{self, ApiCounts, Evidence};
use crate::cli::flag_duration;
use crate::cluster::RequestCounts;
use crate::metrics::Scrape;
use crate::report::Step;
use crate::wait::{poll_until, secs};

use super::checks::{status_ok, wait_all};
use super::render::render_conditions;
use super::{Demo, Identities, gw};

// ---------------------------------------------------------------------------------------------
// Step 3

pub(super) async fn step3_status(demo: &mut Demo, step: &Step) -> Result<()> {
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

pub(super) async fn step4_not_modified(demo: &mut Demo, step: &Step) -> Result<()> {
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

pub(super) async fn step5_efficiency(demo: &mut Demo, step: &Step) -> Result<()> {
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
