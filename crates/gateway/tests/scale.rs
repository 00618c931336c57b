//! 100,000 devices: the in-memory side of the gateway (object index with the desired
//! documents and status views, status controller, liveness) holds them in bounded memory, a GET is a lookup, a heartbeat is O(1), and a
//! change touches only its device. One test per binary so the RSS measurement is its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apollo_api::DeviceProcess;
use apollo_gateway::events;
use apollo_gateway::index::ObjectIndex;
use apollo_gateway::liveness::{Agent, Liveness};
use apollo_gateway::metrics::Metrics;
use apollo_gateway::status::StatusController;
use apollo_gateway::sync::apply;
use apollo_protocol::wire::ObservedProcess;

const DEVICES: usize = 100_000;

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn dp(i: usize) -> DeviceProcess {
    let device = format!("tor{:06}", i);
    let mut dp = DeviceProcess::new(
        &format!("demo-logger-{device}"),
        apollo_api::DeviceProcessSpec {
            device_ref: apollo_api::DeviceRef { name: device },
            artifact: apollo_api::Artifact {
                type_: apollo_api::ArtifactType::Oci,
                url: "alpine:3.19".into(),
            },
            execution: apollo_api::Execution {
                backend: apollo_api::ExecutionBackend::Container,
                command: vec!["/bin/sh".into(), "-c".into()],
                args: vec!["echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600".into()],
                env: vec![apollo_api::EnvVar {
                    name: "APOLLO_DEVICE_NAME".into(),
                    value: "${APOLLO_DEVICE_NAME}".into(),
                }],
            },
        },
    );
    dp.metadata.namespace = Some("default".into());
    dp.metadata.uid = Some(format!("uid-{i}"));
    dp.metadata.resource_version = Some(format!("{}", i + 10));
    dp.metadata.generation = Some(1);
    dp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_devices() {
    let before = rss_kib();
    let metrics = Metrics::new();
    let liveness = Arc::new(Liveness::new(Duration::from_secs(30), metrics.clone()));
    let (recorder, _worker) =
        events::recorder(metrics.clone(), "scale".into(), Duration::from_secs(60));
    let desired = Arc::new(ObjectIndex::new());
    let status = StatusController::new(
        desired.clone(),
        liveness.clone(),
        recorder.clone(),
        metrics.clone(),
        Duration::from_secs(1),
    );

    let started = Instant::now();
    // One feed for both views, as from the watch.
    for i in 0..DEVICES {
        apply(&desired, &status, &dp(i));
    }
    let after_index = rss_kib();
    status.initial_sync(tokio::time::Instant::now());
    let load = started.elapsed();
    assert_eq!(desired.device_count(), DEVICES);
    assert_eq!(
        recorder.capacity(),
        events::KEYS_PER_OBJECT * DEVICES,
        "the Event table is sized for the fleet as the watch feeds it"
    );
    assert_eq!(
        status.pending(),
        DEVICES,
        "one initial status write per object"
    );

    // Every device reports once (first contact), then heartbeats.
    let now = tokio::time::Instant::now();
    let agent = |i: usize| {
        Agent::new(
            format!("instance-{i}"),
            "0.1.0".into(),
            vec![ObservedProcess {
                name: format!("demo-logger-tor{:06}", i),
                spec_hash: "23648a6c57cc6195".into(),
                generation: Some(1),
            }],
            true,
        )
    };
    for i in 0..DEVICES {
        let device = format!("tor{:06}", i);
        status.agent_reported(&device, agent(i), now, None, true);
    }
    let after = rss_kib();
    if std::env::var_os("SCALE_PROBE").is_some() {
        eprintln!(
            "rss: start {before:?}, index (documents and status views) {after_index:?}, liveness {after:?}"
        );
    }

    // Heartbeats: no change, no recomputation.
    let hb = Instant::now();
    for i in 0..DEVICES {
        assert!(
            liveness
                .report(&format!("tor{:06}", i), agent(i), now)
                .is_none()
        );
    }
    let heartbeat_all = hb.elapsed();

    // GETs are lookups.
    let g = Instant::now();
    for i in (0..DEVICES).step_by(7) {
        let doc = desired.current(&format!("tor{:06}", i));
        assert!(!doc.body.is_empty());
    }
    let gets = g.elapsed();

    // A change touches one device's document only.
    let other_before = desired.current("tor000002");
    let mut changed = dp(1);
    changed.spec.execution.args = vec!["updated".into()];
    changed.metadata.generation = Some(2);
    let c = Instant::now();
    assert!(apply(&desired, &status, &changed));
    let one_change = c.elapsed();
    assert_eq!(desired.current("tor000002"), other_before);

    eprintln!(
        "load {load:?}, heartbeats for all {heartbeat_all:?}, {} GETs {gets:?}, one change {one_change:?}, rss {before:?} -> {after:?} KiB",
        DEVICES / 7 + 1
    );
    assert!(one_change < Duration::from_millis(50), "{one_change:?}");
    if let (Some(b), Some(a)) = (before, after) {
        let per_device = (a.saturating_sub(b) * 1024) / DEVICES as u64;
        eprintln!("≈ {per_device} bytes per device (document, index, status views, liveness)");
        assert!(per_device < 8 * 1024, "{per_device} bytes per device");
    }
}
