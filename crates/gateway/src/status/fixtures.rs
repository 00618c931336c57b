//! Test fixtures shared by the status unit tests: facts, agents and timestamps.

use std::time::Duration;

use apollo_protocol::wire::ObservedProcess;
use k8s_openapi::jiff::Timestamp;

use super::compute::Facts;
use crate::liveness::Agent;

pub const H1: &str = "1111111111111111";
pub const H2: &str = "2222222222222222";

pub fn facts(hash: &str) -> Facts<'_> {
    Facts {
        name: "dp",
        generation: 3,
        spec_hash: hash,
    }
}

pub fn agent(instance: &str, hash: Option<&str>) -> Agent {
    let observed = hash
        .map(|h| {
            vec![ObservedProcess {
                name: "dp".into(),
                spec_hash: h.into(),
                generation: None,
            }]
        })
        .unwrap_or_default();
    Agent::new(instance.into(), "0.1.0".into(), observed, true)
}

pub fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_764_115_200 + s).unwrap()
}

pub const WINDOW: Duration = Duration::from_secs(30);
