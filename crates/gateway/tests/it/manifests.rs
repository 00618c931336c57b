//! The gateway's Kubernetes manifests say what the docs and the CLI contract say: RBAC with
//! exactly the needed rules, a hardened Deployment running the binary's flags, the Service.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::Value;

fn docs(path: &str) -> Vec<Value> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind(docs: &[Value], kind: &str) -> Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
        .clone()
}

#[test]
fn rbac_is_exactly_what_the_gateway_needs() {
    let d = docs("k8s/rbac/gateway.yaml");
    assert_eq!(d.len(), 3);
    let sa = of_kind(&d, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "apollo-deviceprocess-gateway");
    let role: Role = serde_json::from_value(of_kind(&d, "Role")).unwrap();
    let mut rules: Vec<(String, String, Vec<String>)> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|r| {
            let groups = r.api_groups.unwrap_or_default();
            let resources = r.resources.unwrap_or_default();
            assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
            let mut verbs = r.verbs.clone();
            verbs.sort();
            groups
                .into_iter()
                .flat_map(move |g| {
                    let verbs = verbs.clone();
                    resources
                        .clone()
                        .into_iter()
                        .map(move |res| (g.clone(), res, verbs.clone()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    rules.sort();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules,
        vec![
            ("".into(), "events".into(), s(&["create", "patch"])),
            (
                "azure.com".into(),
                "deviceprocesses".into(),
                s(&["get", "list", "watch"])
            ),
            (
                "azure.com".into(),
                "deviceprocesses/status".into(),
                s(&["patch"])
            ),
            (
                "coordination.k8s.io".into(),
                "leases".into(),
                s(&["create", "delete", "get", "list", "update"])
            ),
            (
                "events.k8s.io".into(),
                "events".into(),
                s(&["create", "patch"])
            ),
        ]
    );
    let binding: RoleBinding = serde_json::from_value(of_kind(&d, "RoleBinding")).unwrap();
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, "apollo-deviceprocess-gateway");
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, "apollo-deviceprocess-gateway");
}

#[test]
fn deployment_runs_the_cli_contract_hardened() {
    let d = docs("k8s/gateway/deployment.yaml");
    let dep: Deployment = serde_json::from_value(of_kind(&d, "Deployment")).unwrap();
    assert_eq!(
        dep.metadata.name.as_deref(),
        Some("apollo-deviceprocess-gateway")
    );
    assert_eq!(dep.metadata.namespace.as_deref(), Some("default"));
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("apollo-deviceprocess-gateway")
    );
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.run_as_non_root, Some(true));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("apollo/gateway:dev"));
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--addr=:8080".to_string()), "{args:?}");
    let key_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--master-key-file="))
        .expect("master key file flag");
    // The flags parse with the binary's own parser.
    let split = apollo_gateway::config::split_equals(args.iter().cloned());
    let refs: Vec<&str> = split.iter().map(String::as_str).collect();
    let cli =
        <apollo_gateway::config::Cli as argh::FromArgs>::from_args(&["apollo-gateway"], &refs)
            .expect("deployment args parse");
    assert_eq!(cli.addr.as_deref(), Some(":8080"));
    assert_eq!(cli.kubeconfig.as_deref(), Some(""));
    // The key file comes from the Secret, mounted read-only.
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| key_arg.starts_with(&m.mount_path))
        .expect("key file is on a mount");
    assert_eq!(mount.read_only, Some(true));
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        vol.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("apollo-gateway-master-key")
    );
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_user, Some(65532));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let res = c.resources.clone().unwrap();
    assert!(res.requests.is_some() && res.limits.is_some());
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    // Health and metrics on their own port (the device port serves the device API only).
    assert_eq!(cli.metrics_addr.as_deref(), Some(":9090"));
    let metrics = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("a container port named metrics");
    assert_eq!(metrics.container_port, 9090);
    let probe_port = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|g| g.port.clone())
    };
    for probe in [&c.liveness_probe, &c.readiness_probe] {
        assert_eq!(
            probe_port(probe),
            Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into())
            )
        );
    }
    let annotations = dep_annotations(&docs("k8s/gateway/deployment.yaml"));
    assert_eq!(annotations["prometheus.io/port"], "9090");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    // The memory limit reaches the gateway (it sizes --max-connections).
    let env = c.env.as_ref().unwrap();
    let mem = env
        .iter()
        .find(|e| e.name == "APOLLO_MEMORY_LIMIT")
        .expect("APOLLO_MEMORY_LIMIT");
    let field = mem
        .value_from
        .as_ref()
        .and_then(|v| v.resource_field_ref.as_ref())
        .unwrap();
    assert_eq!(field.resource, "limits.memory");
}

fn dep_annotations(docs: &[serde_json::Value]) -> serde_json::Value {
    of_kind(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"].clone()
}

#[test]
fn services() {
    let svc: Service =
        serde_json::from_value(of_kind(&docs("k8s/gateway/service.yaml"), "Service")).unwrap();
    assert_eq!(
        svc.metadata.name.as_deref(),
        Some("apollo-deviceprocess-gateway")
    );
    let spec = svc.spec.unwrap();
    assert_eq!(spec.ports.as_ref().unwrap()[0].port, 8080);
    // Devices reach the device port only; peers reach each other's pod IPs (the peer port is
    // in no Service).
    for file in [
        "k8s/gateway/service.yaml",
        "k8s/gateway/service-nodeport.yaml",
    ] {
        let svc: Service = serde_json::from_value(of_kind(&docs(file), "Service")).unwrap();
        for p in svc.spec.unwrap().ports.unwrap() {
            let target = p.target_port.map(|t| match t {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
            });
            assert!(
                !matches!(target.as_deref(), Some("peer" | "8081")),
                "{file} exposes the peer port"
            );
        }
    }
    let np: Service = serde_json::from_value(of_kind(
        &docs("k8s/gateway/service-nodeport.yaml"),
        "Service",
    ))
    .unwrap();
    let spec = np.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(30080));
}

/// The optional revocation ConfigMap is mounted where the flag points, and the TLS patch keeps
/// every flag of the Deployment and adds the TLS flags (parsing with the binary's parser) on a
/// read-only Secret mount; the probes stay on the plain metrics listener.
#[test]
fn revocation_mount_and_tls_patch() {
    let d = docs("k8s/gateway/deployment.yaml");
    let dep: Deployment = serde_json::from_value(of_kind(&d, "Deployment")).unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let base_args = c.args.clone().unwrap();
    let file = base_args
        .iter()
        .find_map(|a| a.strip_prefix("--revocation-file="))
        .expect("revocation file flag");
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| file.starts_with(&m.mount_path))
        .expect("revocation file is on a mount");
    assert_eq!(mount.read_only, Some(true));
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let cm = vol.config_map.as_ref().expect("a ConfigMap volume");
    assert_eq!(cm.name, "apollo-gateway-revocations");
    assert_eq!(cm.optional, Some(true), "absent means nothing revoked");

    let patch = &docs("k8s/patches/gateway-tls.yaml")[0];
    let pc = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(pc["name"], "gateway");
    let args: Vec<String> = serde_json::from_value(pc["args"].clone()).unwrap();
    for a in &base_args {
        assert!(args.contains(a), "the patch drops {a}");
    }
    let split = apollo_gateway::config::split_equals(args.iter().cloned());
    let refs: Vec<&str> = split.iter().map(String::as_str).collect();
    let cli =
        <apollo_gateway::config::Cli as argh::FromArgs>::from_args(&["apollo-gateway"], &refs)
            .expect("patched args parse");
    let cert = cli.tls_cert_file.expect("--tls-cert-file");
    assert!(cli.tls_key_file.is_some());
    let mount = &pc["volumeMounts"][0];
    assert!(cert.starts_with(mount["mountPath"].as_str().unwrap()));
    assert_eq!(mount["readOnly"], true);
    let vol = &patch["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(vol["name"], mount["name"]);
    assert_eq!(vol["secret"]["secretName"], "apollo-gateway-tls");
    // Probes go to the metrics listener, which stays plain HTTP: the patch leaves them.
    assert!(pc["livenessProbe"].is_null() && pc["readinessProbe"].is_null());
    let probe_port = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|g| g.port.clone());
    assert_eq!(
        probe_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into()))
    );
}

#[test]
fn replicas_spread_with_a_disruption_budget_and_an_advertise_url() {
    let d = docs("k8s/gateway/deployment.yaml");
    let dep: Deployment = serde_json::from_value(of_kind(&d, "Deployment")).unwrap();
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let labels = spec.selector.match_labels.clone().unwrap();
    let pod = spec.template.spec.unwrap();
    let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
    assert_eq!(spread.topology_key, "kubernetes.io/hostname");
    assert_eq!(spread.max_skew, 1);
    assert_eq!(
        spread
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref(),
        Some(&labels)
    );
    let c = &pod.containers[0];
    let env = c.env.clone().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(field("POD_IP").as_deref(), Some("status.podIP"));
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    // Peers reach the peer listener: the container port named `peer` is --peer-addr's, and
    // the advertise URL the binary derives from POD_IP follows it (none set by hand).
    assert_eq!(value("APOLLO_ADVERTISE_URL"), None);
    let port = |name: &str| {
        c.ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no container port {name}"))
            .container_port
    };
    let peer_port = port("peer");
    assert_ne!(peer_port, port("http"));
    let args = c.args.clone().unwrap();
    assert!(
        args.contains(&format!("--peer-addr=:{peer_port}")),
        "{args:?}"
    );
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        format!(
            "{}\n",
            apollo_protocol::keys::MasterKey::new("k1", [1; 32]).unwrap()
        ),
    )
    .unwrap();
    let split = apollo_gateway::config::split_equals(args.iter().cloned());
    let refs: Vec<&str> = split.iter().map(String::as_str).collect();
    let cli =
        <apollo_gateway::config::Cli as argh::FromArgs>::from_args(&["apollo-gateway"], &refs)
            .unwrap();
    let env = apollo_process::env::MapEnv::from_pairs([
        ("APOLLO_MASTER_KEY_FILE", key.path().to_str().unwrap()),
        ("POD_IP", "10.0.0.7"),
    ]);
    let mut cli = cli;
    cli.master_key_file = None;
    cli.revocation_file = None;
    let config = cli.serve_config(&env).expect("deployment args resolve");
    assert_eq!(
        config.settings.advertise_url,
        Some(format!("http://10.0.0.7:{peer_port}"))
    );
    assert_eq!(value("APOLLO_LEASE_DURATION").as_deref(), Some("15s"));
    // Readiness on the metrics listener (cache and membership).
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/readyz"));

    let p = docs("k8s/gateway/pdb.yaml");
    assert_eq!(p.len(), 1);
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
        serde_json::from_value(p[0].clone()).unwrap();
    assert_eq!(
        pdb.metadata.name.as_deref(),
        Some("apollo-deviceprocess-gateway")
    );
    let ps = pdb.spec.unwrap();
    assert_eq!(
        ps.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert!(ps.min_available.is_none());
    assert_eq!(ps.selector.unwrap().match_labels.unwrap(), labels);
    let kustomization = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../k8s/kustomization.yaml"
    ))
    .unwrap();
    assert!(kustomization.contains("gateway/pdb.yaml"));
    // TLS keeps the replicas: forwarding goes to the plain-HTTP peer listener.
    let patch = &docs("k8s/patches/gateway-tls.yaml")[0];
    assert!(patch["spec"]["replicas"].is_null(), "{patch}");
}
