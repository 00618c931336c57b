//! Step 9: the agents hold no Kubernetes credentials: their configuration names only the
//! gateway and their device key, and the API server saw no request from them.

use anyhow::{Result, ensure};
use apollo_api::DeviceProcess;

use crate::apievidence::{self, ApiCounts, Evidence};
use crate::report::Step;

use super::Demo;

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

pub(super) async fn step9_no_credentials(demo: &mut Demo, step: &Step) -> Result<()> {
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
}
