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
    let np: Service = serde_json::from_value(of_kind(
        &docs("k8s/gateway/service-nodeport.yaml"),
        "Service",
    ))
    .unwrap();
    let spec = np.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(30080));
}
