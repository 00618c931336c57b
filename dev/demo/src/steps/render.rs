//! Rendering without kubectl: the same facts `kubectl get` would show, from the demo's client,
//! for runs on a machine without kubectl.

use apollo_api::DeviceProcess;
use apollo_api::conditions::AGENT_CONNECTED;
use apollo_testkit::condition_status;
use kube::ResourceExt as _;

use crate::cluster::event_occurrences;

pub(super) fn render_dps(dps: &[DeviceProcess]) -> String {
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

pub(super) fn render_conditions(dp: &DeviceProcess) -> String {
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

pub(super) fn render_events(events: &[k8s_openapi::api::core::v1::Event]) -> String {
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
