//! Unit tests of the rollout decisions.

use super::*;
use apollo_api::{
    DeviceProcessDeploymentSpec, DeviceProcessStatus, DeviceProcessTemplate, TemplateMetadata,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn dpd(args: &str) -> DeviceProcessDeployment {
    let mut spec = apollo_api::samples::demo_logger_template();
    spec.execution.args = vec![args.to_owned()];
    let mut d = DeviceProcessDeployment::new(
        "fleet",
        DeviceProcessDeploymentSpec {
            selector: LabelSelector::default(),
            template: DeviceProcessTemplate {
                metadata: TemplateMetadata {
                    labels: [("app".to_owned(), "logger".to_owned())].into(),
                },
                spec,
            },
            update_strategy: None,
            paused: None,
            progress_deadline_seconds: None,
        },
    );
    d.metadata.namespace = Some("default".into());
    d.metadata.uid = Some("uid-1".into());
    d.metadata.generation = Some(1);
    d
}

/// The DeviceProcess of `device` as written from `d`, with an agent that is `connected` and
/// has (or has not) `observed` its spec.
fn dp(d: &DeviceProcessDeployment, device: &str, connected: bool, observed: bool) -> DeviceProcess {
    let owner = plan::owner_reference(d).unwrap();
    let mut dp = plan::desired_object(d, &owner, &format!("fleet-{device}"), device);
    let hash = apollo_api::spec_hash(&dp.spec);
    dp.status = Some(DeviceProcessStatus {
        observed_spec_hash: observed.then_some(hash),
        conditions: vec![Condition {
            type_: "AgentConnected".into(),
            status: if connected { "True" } else { "False" }.into(),
            reason: "Heartbeat".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: plan::now(),
        }],
        ..DeviceProcessStatus::default()
    });
    dp
}

fn settings(max: usize) -> Settings {
    Settings {
        on_delete: false,
        paused: false,
        max_unavailable: max,
        deadline_seconds: 600,
    }
}

/// Plans `new` over `live` (device → DeviceProcess) and gates it.
fn gated(new: &DeviceProcessDeployment, live: &[DeviceProcess], s: &Settings) -> Vec<String> {
    let owner = plan::owner_reference(new).unwrap();
    let devices: Vec<String> = live
        .iter()
        .map(|d| d.spec.device_ref.name.clone())
        .collect();
    let live: Vec<Arc<DeviceProcess>> = live.iter().cloned().map(Arc::new).collect();
    let p = plan::plan(new, &owner, &devices, &live, &Default::default());
    let want = plan::Desired::new(new, &owner);
    let hashes = SpecHashes::default();
    let fleet = Fleet {
        matching: devices.len(),
        unchanged: &p.unchanged,
        hashes: &hashes,
    };
    let g = gate(s, &want, None, fleet, p.apply);
    g.apply.into_iter().map(|i| i.device).collect()
}

#[test]
fn max_unavailable_numbers_and_percentages() {
    use apollo_api::deployment::max_unavailable;
    let int = |n| IntOrString::Int(n);
    let pct = |s: &str| IntOrString::String(s.to_owned());
    assert_eq!(max_unavailable(None, 10), Ok(1));
    assert_eq!(max_unavailable(Some(&int(2)), 10), Ok(2));
    assert_eq!(max_unavailable(Some(&int(0)), 10), Ok(1), "at least 1");
    assert_eq!(max_unavailable(Some(&pct("10%")), 1000), Ok(100));
    assert_eq!(max_unavailable(Some(&pct("1%")), 1000), Ok(10));
    assert_eq!(max_unavailable(Some(&pct("20%")), 11), Ok(3), "rounded up");
    assert_eq!(max_unavailable(Some(&pct("1%")), 5), Ok(1));
    assert_eq!(max_unavailable(Some(&pct("100%")), 7), Ok(7));
    assert_eq!(max_unavailable(Some(&pct("0%")), 7), Ok(1));
    for bad in ["two", "%", "101%", "-5%", "5 %", "99999999999999999999%"] {
        let err = max_unavailable(Some(&pct(bad)), 10).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value"),
            "{bad}: {err}"
        );
    }
    assert!(max_unavailable(Some(&int(-1)), 10).is_err());
}

#[test]
fn budget_in_name_order() {
    let old = dpd("v1");
    let live: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|d| dp(&old, d, true, true))
        .collect();
    let new = dpd("v2");
    assert_eq!(gated(&new, &live, &settings(2)), ["a", "b"]);
    assert_eq!(gated(&new, &live, &settings(1)), ["a"]);
    assert_eq!(gated(&new, &live, &settings(10)), ["a", "b", "c", "d"]);

    // a and b updated, a observed: one more (c); b still counts.
    let mut live2 = live.clone();
    live2[0] = dp(&new, "a", true, true);
    live2[1] = dp(&new, "b", true, false);
    assert_eq!(gated(&new, &live2, &settings(2)), ["c"]);
    // Both updated and unobserved: nothing.
    live2[0] = dp(&new, "a", true, false);
    assert!(gated(&new, &live2, &settings(2)).is_empty());
}

#[test]
fn offline_devices_first_and_against_the_budget() {
    let old = dpd("v1");
    let new = dpd("v2");
    let live = vec![
        dp(&old, "a", true, true),
        dp(&old, "b", true, true),
        dp(&old, "c", false, true),
        dp(&old, "d", true, false),
    ];
    // c (offline) and d (not observed) are unavailable: both go now, and they use the budget.
    assert_eq!(gated(&new, &live, &settings(2)), ["c", "d"]);
    assert_eq!(gated(&new, &live, &settings(3)), ["c", "d", "a"]);
    // More unavailable than the budget: still updated (costs nothing), nobody else.
    assert_eq!(gated(&new, &live, &settings(1)), ["c", "d"]);
}

#[test]
fn paused_and_on_delete_write_nothing_existing_and_new_devices_get_the_current_revision() {
    let old = dpd("v1");
    let new = dpd("v2");
    let live = vec![dp(&old, "a", true, true), dp(&old, "b", true, true)];
    let mut s = settings(10);
    s.paused = true;
    assert!(gated(&new, &live, &s).is_empty());
    let s2 = Settings {
        on_delete: true,
        ..settings(10)
    };
    assert!(gated(&new, &live, &s2).is_empty());

    // A new device while paused: the current revision's template and labels.
    let owner = plan::owner_reference(&new).unwrap();
    let arcs: Vec<Arc<DeviceProcess>> = live.iter().cloned().map(Arc::new).collect();
    let devices = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let p = plan::plan(&new, &owner, &devices, &arcs, &Default::default());
    let old_rev = template_hash(&old.spec.template);
    let refs: Vec<&DeviceProcess> = live.iter().collect();
    let rev = revision_template(&refs, &old_rev).unwrap();
    let want = plan::Desired::new(&new, &owner);
    let hashes = SpecHashes::default();
    let fleet = Fleet {
        matching: 3,
        unchanged: &p.unchanged,
        hashes: &hashes,
    };
    let g = gate(&s, &want, Some(&rev), fleet, p.apply);
    assert_eq!(g.apply.len(), 1);
    assert_eq!(g.held.len(), 2);
    let created = &g.apply[0].object;
    assert_eq!(created.spec.device_ref.name, "c");
    assert_eq!(created.spec.execution.args, ["v1"]);
    let labels = created.labels();
    assert_eq!(labels.get(labels::TEMPLATE_HASH), Some(&old_rev));
    assert_eq!(labels.get(labels::DEVICE).map(String::as_str), Some("c"));
    assert_eq!(labels.get("app").map(String::as_str), Some("logger"));
    // With OnDelete (not paused) the new device gets the update revision.
    let p = plan::plan(&new, &owner, &devices, &arcs, &Default::default());
    let fleet = Fleet {
        matching: 3,
        unchanged: &p.unchanged,
        hashes: &hashes,
    };
    let g = gate(&s2, &want, Some(&rev), fleet, p.apply);
    assert_eq!(g.apply[0].object.spec.execution.args, ["v2"]);
}

#[test]
fn label_only_changes_are_free() {
    let old = dpd("v1");
    let mut new = dpd("v1");
    new.spec
        .template
        .metadata
        .labels
        .insert("tier".into(), "edge".into());
    let live = vec![dp(&old, "a", true, true), dp(&old, "b", true, true)];
    assert_eq!(gated(&new, &live, &settings(1)), ["a", "b"]);
}

fn at(second: i64) -> Time {
    Time(jiff::Timestamp::from_second(second).unwrap())
}

fn counts(desired: i32, updated: i32, observed: i32, available: i32) -> Counts {
    Counts {
        desired,
        current: desired,
        updated,
        connected: desired,
        observed,
        available,
    }
}

fn with_status(
    mut d: DeviceProcessDeployment,
    p: &Progress,
    c: Counts,
    now: &Time,
) -> DeviceProcessDeployment {
    d.status = Some(plan::status(&d, c, None, p, now));
    d
}

#[test]
fn progress_condition_deadline_and_events() {
    let s = Settings {
        deadline_seconds: 60,
        ..settings(2)
    };
    let v1 = dpd("v1");
    let c = counts(10, 10, 10, 10);
    let p = progress(&v1, Some(&s), c, &[], None, &at(1_000));
    assert_eq!(p.rolled_out.1, "True");
    assert_eq!(p.rolled_out.3, "10 of 10 updated, 0 unavailable");
    let rev1 = template_hash(&v1.spec.template);
    assert_eq!(p.current_revision.as_deref(), Some(rev1.as_str()));
    let v1 = with_status(v1, &p, c, &at(1_000));

    // Template change: in progress, current revision stays, a started event.
    let mut v2 = dpd("v2");
    v2.status = v1.status.clone();
    let c = counts(10, 2, 0, 8);
    let unavailable = vec![
        ("sw-00".to_owned(), "spec not observed"),
        ("sw-01".to_owned(), "spec not observed"),
    ];
    let p = progress(&v2, Some(&s), c, &unavailable, None, &at(1_010));
    assert_eq!(
        (p.rolled_out.1, p.rolled_out.2, p.rolled_out.3.as_str()),
        ("False", "InProgress", "2 of 10 updated, 2 unavailable")
    );
    assert_eq!(p.current_revision.as_deref(), Some(rev1.as_str()));
    assert_eq!(p.last_progress_time, Some(at(1_010)));
    assert_eq!(p.stalls_in, Some(std::time::Duration::from_secs(60)));
    let next = plan::status(&v2, c, None, &p, &at(1_010));
    let due = transitions(v2.status.as_ref(), &next, Some(&s));
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].reason, "RolloutStarted");
    assert!(
        due[0].note.contains(&format!("(from {rev1})")),
        "{}",
        due[0].note
    );
    let v2 = with_status(v2, &p, c, &at(1_010));

    // No progress, before the deadline: same status (no write), requeue for the rest.
    let p2 = progress(&v2, Some(&s), c, &unavailable, None, &at(1_040));
    assert_eq!(
        plan::status(&v2, c, None, &p2, &at(1_040)),
        *v2.status.as_ref().unwrap()
    );
    assert_eq!(p2.stalls_in, Some(std::time::Duration::from_secs(30)));
    // Past it: stalled, naming the devices, once.
    let p3 = progress(&v2, Some(&s), c, &unavailable, None, &at(1_070));
    assert_eq!(p3.rolled_out.2, "Stalled");
    assert_eq!(
        p3.rolled_out.3,
        "2 of 10 updated, 2 unavailable; no progress for 60s, held up by sw-00 (spec not observed), sw-01 (spec not observed)"
    );
    assert_eq!(p3.stalls_in, None);
    let next = plan::status(&v2, c, None, &p3, &at(1_070));
    let due = transitions(v2.status.as_ref(), &next, Some(&s));
    assert_eq!(
        due.iter().map(|d| d.reason).collect::<Vec<_>>(),
        ["RolloutStalled"]
    );
    assert_eq!(due[0].type_, EventType::Warning);
    let v2s = with_status(v2.clone(), &p3, c, &at(1_070));
    let again = plan::status(
        &v2s,
        c,
        None,
        &progress(&v2s, Some(&s), c, &unavailable, None, &at(1_100)),
        &at(1_100),
    );
    assert!(transitions(v2s.status.as_ref(), &again, Some(&s)).is_empty());

    // Progress clears the stall.
    let c2 = counts(10, 3, 1, 9);
    let p4 = progress(&v2s, Some(&s), c2, &unavailable, None, &at(1_101));
    assert_eq!(p4.rolled_out.2, "InProgress");
    assert_eq!(p4.last_progress_time, Some(at(1_101)));

    // Paused, resumed, complete.
    let mut paused = v2s.clone();
    paused.spec.paused = Some(true);
    let sp = Settings { paused: true, ..s };
    let pp = progress(&paused, Some(&sp), c2, &unavailable, None, &at(2_000));
    assert_eq!(
        (pp.rolled_out.2, pp.rolled_out.3.as_str()),
        ("Paused", "3 of 10 updated, 1 unavailable; paused")
    );
    assert_eq!(pp.stalls_in, None);
    let next = plan::status(&paused, c2, None, &pp, &at(2_000));
    let due = transitions(paused.status.as_ref(), &next, Some(&sp));
    assert_eq!(
        due.iter().map(|d| d.reason).collect::<Vec<_>>(),
        ["RolloutPaused"]
    );
    let paused = with_status(paused, &pp, c2, &at(2_000));
    let mut resumed = paused.clone();
    resumed.spec.paused = Some(false);
    let pr = progress(&resumed, Some(&s), c2, &unavailable, None, &at(9_000));
    assert_eq!(
        pr.rolled_out.2, "InProgress",
        "the deadline counts from the resume"
    );
    let next = plan::status(&resumed, c2, None, &pr, &at(9_000));
    let due = transitions(resumed.status.as_ref(), &next, Some(&s));
    assert_eq!(
        due.iter().map(|d| d.reason).collect::<Vec<_>>(),
        ["RolloutResumed"]
    );
    let resumed = with_status(resumed, &pr, c2, &at(9_000));
    let done = counts(10, 10, 10, 10);
    let pd = progress(&resumed, Some(&s), done, &[], None, &at(9_100));
    let rev2 = template_hash(&resumed.spec.template);
    assert_eq!(pd.current_revision.as_deref(), Some(rev2.as_str()));
    let next = plan::status(&resumed, done, None, &pd, &at(9_100));
    let due = transitions(resumed.status.as_ref(), &next, Some(&s));
    assert_eq!(
        due.iter().map(|d| d.reason).collect::<Vec<_>>(),
        ["RolloutComplete"]
    );
}

#[test]
fn many_held_up_devices_are_cut_short() {
    let list: Vec<(String, &'static str)> = (0..25)
        .map(|i| (format!("sw-{i:02}"), "agent not connected"))
        .collect();
    let named = name_devices(&list);
    assert!(
        named.ends_with("sw-09 (agent not connected), and 15 more"),
        "{named}"
    );
}
