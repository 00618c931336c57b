//! The real `kubectl` against the server with only the kubeconfig changed: the runbook's steps 8
//! and 9 verbatim, printer columns, categories, describe with events, wait, patch, delete.
//! Skipped when `kubectl` is not on PATH.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;

use apollo_testkit::TestEnv;
use tokio::io::AsyncWriteExt;

fn kubectl_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()))
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn kubectl(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.env("KUBECONFIG", env.kubeconfig())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("kubectl finished in time")
        .expect("kubectl output");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn must(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> String {
    let o = kubectl(env, args, stdin).await;
    assert!(
        o.ok,
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    o.stdout
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const STEP8_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: networkswitches.azure.com
spec:
  group: azure.com
  scope: Namespaced
  names:
    plural: networkswitches
    singular: networkswitch
    kind: NetworkSwitch
    shortNames:
    - nsw
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              dummy:
                type: string
    additionalPrinterColumns:
    - name: Role
      type: string
      jsonPath: .metadata.labels.role
"#;

const STEP8_SWITCHES: &str = r#"apiVersion: azure.com/v1alpha1
kind: NetworkSwitch
metadata:
  name: tor1-01
  namespace: default
  labels:
    site: sfo
    role: tor
    rack: r1
spec:
  dummy: ok
---
apiVersion: azure.com/v1alpha1
kind: NetworkSwitch
metadata:
  name: tor1-02
  namespace: default
  labels:
    site: sfo
    role: tor
    rack: r1
spec:
  dummy: ok
"#;

const STEP9_DPD: &str = r#"apiVersion: azure.com/v1alpha1
kind: DeviceProcessDeployment
metadata:
  name: demo-logger
spec:
  selector:
    matchLabels:
      site: sfo
      role: tor
  template:
    metadata:
      labels:
        app: logger
    spec:
      artifact:
        type: oci
        url: alpine:3.19
      execution:
        backend: container
        command: ["/bin/sh", "-c"]
        args: ["echo hello from ${APOLLO_DEVICE_NAME}; sleep 3600"]
        env:
        - name: APOLLO_DEVICE_NAME
          value: ${APOLLO_DEVICE_NAME}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_steps_8_and_9_verbatim() {
    if !kubectl_available() {
        eprintln!("kubectl not on PATH: skipped");
        return;
    }
    let env = TestEnv::new().await;
    // On a shared cluster an earlier run may have left the NetworkSwitch CRD installed (e.g.
    // the project's, columns Role and Age, server-side applied): `kubectl apply` of the
    // runbook's CRD then keeps the columns it never names, as a real server does (a strategic
    // merge by name). So the expected header is the runbook's plus those leftovers.
    let before = kubectl(
        &env,
        &[
            "get",
            "crd",
            "networkswitches.azure.com",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ],
        None,
    )
    .await;
    let mut expected_header = vec!["NAME".to_string(), "ROLE".to_string()];
    if before.ok {
        expected_header.extend(
            before
                .stdout
                .split_whitespace()
                .filter(|c| *c != "Role")
                .map(str::to_uppercase),
        );
    }
    // Step 8.
    let out = must(&env, &["apply", "-f", "-"], Some(STEP8_CRD)).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/networkswitches.azure.com"),
        "{out}"
    );
    let out = must(
        &env,
        &[
            "wait",
            "--for=condition=Established",
            "crd/networkswitches.azure.com",
            "--timeout=60s",
        ],
        None,
    )
    .await;
    assert!(out.contains("condition met"), "{out}");
    let out = must(&env, &["apply", "-f", "-"], Some(STEP8_SWITCHES)).await;
    assert!(
        out.contains("networkswitch.azure.com/tor1-01 created")
            || out.contains("networkswitch.azure.com/tor1-01 configured"),
        "{out}"
    );
    let out = must(&env, &["get", "networkswitches", "-n", "default"], None).await;
    let lines: Vec<&str> = out.lines().collect();
    // Exactly Name plus the CRD's printer columns (no Age column unless declared or left by an
    // earlier install).
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        expected_header,
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("tor1-01") && l.contains("tor")),
        "{out}"
    );
    let out = must(
        &env,
        &[
            "get",
            "nsw",
            "tor1-02",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.dummy}",
        ],
        None,
    )
    .await;
    assert_eq!(out, "ok", "spec.dummy survives");
    // Step 9 needs the project's CRDs.
    let crds = env.crd_dir(&repo_root()).await;
    if crds
        .join("deviceprocessdeployments.azure.com.yaml")
        .is_file()
    {
        must(&env, &["apply", "-f", crds.to_str().unwrap()], None).await;
        for crd in [
            "deviceprocesses.azure.com",
            "deviceprocessdeployments.azure.com",
        ] {
            must(
                &env,
                &[
                    "wait",
                    "--for=condition=Established",
                    &format!("crd/{crd}"),
                    "--timeout=60s",
                ],
                None,
            )
            .await;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dpd.yaml");
        std::fs::write(&path, STEP9_DPD).unwrap();
        let out = must(
            &env,
            &["apply", "-f", path.to_str().unwrap(), "-n", "default"],
            None,
        )
        .await;
        assert!(
            out.contains("deviceprocessdeployment.azure.com/demo-logger created"),
            "{out}"
        );
        let out = must(
            &env,
            &["get", "deviceprocessdeployment", "-n", "default"],
            None,
        )
        .await;
        assert!(
            out.lines().next().unwrap_or("").starts_with("NAME"),
            "{out}"
        );
        assert!(out.contains("demo-logger"), "{out}");
        let out = must(&env, &["get", "deviceprocess", "-n", "default"], None).await;
        let _ = out; // fan-out is the controller's job; the list must just work
        let out = must(&env, &["get", "apollo", "-n", "default"], None).await;
        assert!(out.contains("networkswitch.azure.com/tor1-01"), "{out}");
        assert!(
            out.contains("deviceprocessdeployment.azure.com/demo-logger"),
            "{out}"
        );
        let out = must(&env, &["api-resources", "--api-group", "azure.com"], None).await;
        for (res, short) in [
            ("deviceprocesses", "dp"),
            ("deviceprocessdeployments", "dpd"),
            ("networkswitches", "nsw"),
        ] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(res) && l.split_whitespace().nth(1) == Some(short)),
                "{out}"
            );
        }
        must(
            &env,
            &["delete", "-f", path.to_str().unwrap(), "-n", "default"],
            None,
        )
        .await;
    }
    let out = must(&env, &["delete", "-f", "-"], Some(STEP8_SWITCHES)).await;
    assert!(out.contains("deleted"), "{out}");
    let out = must(&env, &["get", "nsw", "-n", "default", "-o", "name"], None).await;
    assert!(!out.contains("tor1-0"), "{out}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_patch_status_and_delete_with_kubectl() {
    if !kubectl_available() {
        eprintln!("kubectl not on PATH: skipped");
        return;
    }
    let env = TestEnv::new().await;
    common::install_widgets(&env).await;
    let ns = env.namespace().to_string();
    let widget = format!(
        "apiVersion: {}/{}\nkind: {}\nmetadata:\n  name: w1\nspec:\n  deviceRef:\n    name: tor1-01\n",
        common::GROUP,
        common::VERSION,
        common::KIND
    );
    must(&env, &["apply", "-n", &ns, "-f", "-"], Some(&widget)).await;
    // Strict field validation is kubectl's default.
    let bogus = format!("{widget}  bogusField: x\n");
    let o = kubectl(
        &env,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&bogus.replace("name: w1", "name: w2")),
    )
    .await;
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains("strict decoding error: unknown field \"spec.bogusField\""),
        "{}",
        o.stderr
    );
    let o = kubectl(
        &env,
        &["apply", "--validate=false", "-n", &ns, "-f", "-"],
        Some(&bogus.replace("name: w1", "name: w3")),
    )
    .await;
    assert!(o.ok, "{}", o.stderr);
    // Printer columns and short names.
    let out = must(&env, &["get", "wdg", "-n", &ns], None).await;
    let header = out.lines().next().unwrap_or("");
    for col in ["NAME", "DEVICE", "PHASE", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    // Patches.
    must(
        &env,
        &[
            "patch",
            "wdg",
            "w1",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"command":["a","b"]}}"#,
        ],
        None,
    )
    .await;
    must(
        &env,
        &[
            "patch",
            "wdg",
            "w1",
            "-n",
            &ns,
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"phase":"Pending"}}"#,
        ],
        None,
    )
    .await;
    let out = must(
        &env,
        &[
            "get",
            "wdg",
            "w1",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.phase} {.metadata.generation}",
        ],
        None,
    )
    .await;
    assert_eq!(out, "Pending 2");
    let out = must(&env, &["get", "wdg", "-n", &ns], None).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("w1") && l.contains("tor1-01") && l.contains("Pending")),
        "{out}"
    );
    // Events recorded through events.k8s.io show up in describe.
    let uid = must(
        &env,
        &[
            "get",
            "wdg",
            "w1",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
    .await;
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: w1.17a0000000000001\n  namespace: {ns}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: azure.com/apollo-gateway\nreportingInstance: gw-1\naction: Heartbeat\nreason: AgentConnected\ntype: Normal\nnote: agent tor1-01 connected\nregarding:\n  apiVersion: {}/{}\n  kind: {}\n  name: w1\n  namespace: {ns}\n  uid: {uid}\n",
        common::GROUP,
        common::VERSION,
        common::KIND
    );
    must(&env, &["create", "-f", "-"], Some(&event)).await;
    let out = must(&env, &["describe", "wdg", "w1", "-n", &ns], None).await;
    let events = out.split("Events:").nth(1).unwrap_or("");
    assert!(
        events.contains("AgentConnected") && events.contains("agent tor1-01 connected"),
        "{out}"
    );
    // Delete.
    let out = must(&env, &["delete", "wdg", "w1", "-n", &ns], None).await;
    assert!(out.contains("deleted"), "{out}");
    let o = kubectl(&env, &["get", "wdg", "w1", "-n", &ns], None).await;
    assert!(
        !o.ok && o.stderr.contains("NotFound") || o.stderr.contains("not found"),
        "{}",
        o.stderr
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_kubectl_commands_send_protobuf() {
    if !kubectl_available() {
        eprintln!("kubectl not on PATH: skipped");
        return;
    }
    let env = TestEnv::new().await;
    let ns = env.namespace().to_string();
    let extra = format!("{ns}-p");
    must(&env, &["create", "namespace", &extra], None).await;
    must(
        &env,
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            &ns,
            "--from-literal=a=b",
        ],
        None,
    )
    .await;
    let out = must(
        &env,
        &["get", "secret", "s1", "-n", &ns, "-o", "jsonpath={.data.a}"],
        None,
    )
    .await;
    assert_eq!(out, "Yg==");
    must(
        &env,
        &["create", "configmap", "c1", "-n", &ns, "--from-literal=x=y"],
        None,
    )
    .await;
    must(
        &env,
        &[
            "create",
            "role",
            "r1",
            "-n",
            &ns,
            "--verb=get",
            "--resource=configmaps",
        ],
        None,
    )
    .await;
    must(
        &env,
        &[
            "create",
            "rolebinding",
            "rb1",
            "-n",
            &ns,
            "--role=r1",
            &format!("--serviceaccount={ns}:apollo-agent"),
        ],
        None,
    )
    .await;
    let out = must(
        &env,
        &["auth", "can-i", "get", "configmaps", "-n", &ns],
        None,
    )
    .await;
    assert_eq!(out.trim(), "yes");
    let out = must(&env, &["delete", "namespace", &extra], None).await;
    assert!(out.contains("deleted"), "{out}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_cascading() {
    if !kubectl_available() {
        eprintln!("kubectl not on PATH: skipped");
        return;
    }
    let env = TestEnv::new().await;
    common::install_widgets(&env).await;
    let ns = env.namespace().to_string();
    for name in ["bg", "orph", "fg"] {
        let w = format!(
            "apiVersion: {}/{}\nkind: {}\nmetadata:\n  name: {name}\nspec:\n  deviceRef:\n    name: d\n",
            common::GROUP,
            common::VERSION,
            common::KIND
        );
        must(&env, &["apply", "-n", &ns, "-f", "-"], Some(&w)).await;
        let uid = must(
            &env,
            &[
                "get",
                "wdg",
                name,
                "-n",
                &ns,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
        .await;
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-dep\n  ownerReferences:\n  - apiVersion: {}/{}\n    kind: {}\n    name: {name}\n    uid: {uid}\n",
            common::GROUP,
            common::VERSION,
            common::KIND
        );
        must(&env, &["apply", "-n", &ns, "-f", "-"], Some(&cm)).await;
    }
    must(&env, &["delete", "wdg", "bg", "-n", &ns], None).await;
    must(
        &env,
        &["delete", "wdg", "orph", "-n", &ns, "--cascade=orphan"],
        None,
    )
    .await;
    must(
        &env,
        &["delete", "wdg", "fg", "-n", &ns, "--cascade=foreground"],
        None,
    )
    .await;
    // Foreground deletion returns once the owner is gone, i.e. after its dependents.
    let o = kubectl(&env, &["get", "configmap", "fg-dep", "-n", &ns], None).await;
    assert!(
        !o.ok,
        "foreground: dependent gone before the owner: {}",
        o.stdout
    );
    must(
        &env,
        &[
            "wait",
            "--for=delete",
            "configmap/bg-dep",
            "-n",
            &ns,
            "--timeout=60s",
        ],
        None,
    )
    .await;
    let out = must(
        &env,
        &[
            "get",
            "configmap",
            "orph-dep",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ],
        None,
    )
    .await;
    assert!(
        out.is_empty(),
        "orphaned dependent lost its owner reference: {out}"
    );
    env.cleanup().await;
}

/// `make deploy`'s `kubectl apply -k k8s` (CRDs, RBAC, controller and gateway Deployments,
/// gateway Service) and the kind NodePort Service, with kubectl's own validation; the
/// Deployments and Services are stored (no controllers act on them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_kustomization_applies() {
    if !kubectl_available() {
        eprintln!("kubectl not on PATH: skipped");
        return;
    }
    let env = TestEnv::new().await;
    let k8s = repo_root().join("k8s");
    let k8s = k8s.to_str().unwrap();
    let out = must(&env, &["apply", "-k", k8s], None).await;
    for created in [
        "customresourcedefinition.apiextensions.k8s.io/deviceprocesses.azure.com",
        "serviceaccount/apollo-deviceprocess-gateway",
        "deployment.apps/apollo-deviceprocess-controller",
        "deployment.apps/apollo-deviceprocess-gateway",
        "service/apollo-deviceprocess-gateway",
        "poddisruptionbudget.policy/apollo-deviceprocess-gateway",
        "role.rbac.authorization.k8s.io/apollo-deviceprocess-gateway",
    ] {
        assert!(out.contains(created), "{created} in:\n{out}");
    }
    let nodeport = repo_root().join("k8s/gateway/service-nodeport.yaml");
    let out = must(&env, &["apply", "-f", nodeport.to_str().unwrap()], None).await;
    assert!(
        out.contains("service/apollo-deviceprocess-gateway-nodeport"),
        "{out}"
    );
    // Applying again changes nothing.
    let out = must(&env, &["apply", "-k", k8s], None).await;
    assert!(
        out.contains("deployment.apps/apollo-deviceprocess-gateway unchanged"),
        "{out}"
    );
    let out = must(
        &env,
        &["get", "deploy,svc", "-n", "default", "-o", "name"],
        None,
    )
    .await;
    for name in [
        "deployment.apps/apollo-deviceprocess-controller",
        "deployment.apps/apollo-deviceprocess-gateway",
        "service/apollo-deviceprocess-gateway",
        "service/apollo-deviceprocess-gateway-nodeport",
    ] {
        assert!(out.lines().any(|l| l == name), "{name} in:\n{out}");
    }
    let out = must(
        &env,
        &[
            "get",
            "svc",
            "apollo-deviceprocess-gateway-nodeport",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.type} {.spec.ports[0].nodePort} {.spec.clusterIP}",
        ],
        None,
    )
    .await;
    let parts: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "{out}");
    assert_eq!(parts[..2], ["NodePort", "30080"], "{out}");
    assert!(parts[2].parse::<std::net::Ipv4Addr>().is_ok(), "{out}");
    // Deployments: generation 1 at create, a spec change bumps it, a label change does not.
    assert_eq!(controller_generation(&env).await, "1");
    must(
        &env,
        &[
            "label",
            "deploy",
            "apollo-deviceprocess-controller",
            "-n",
            "default",
            "extra=yes",
        ],
        None,
    )
    .await;
    assert_eq!(controller_generation(&env).await, "1");
    must(
        &env,
        &[
            "patch",
            "deploy",
            "apollo-deviceprocess-controller",
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ],
        None,
    )
    .await;
    assert_eq!(controller_generation(&env).await, "2");
    // Clean up everything but the CRDs (other tests may use them on a real cluster).
    let rbac = repo_root().join("k8s/rbac");
    let gateway = repo_root().join("k8s/gateway");
    let controller = repo_root().join("k8s/controller");
    must(
        &env,
        &[
            "delete",
            "--ignore-not-found",
            "-f",
            gateway.to_str().unwrap(),
            "-f",
            controller.to_str().unwrap(),
            "-f",
            rbac.to_str().unwrap(),
        ],
        None,
    )
    .await;
    env.cleanup().await;
}

async fn controller_generation(env: &TestEnv) -> String {
    must(
        env,
        &[
            "get",
            "deploy",
            "apollo-deviceprocess-controller",
            "-n",
            "default",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
        None,
    )
    .await
}

/// Runs `program` (a script by bash, found on PATH: an env-based shebang line does not work in
/// the Nix build sandbox) in the repository root as the test's identity.
async fn run_in_repo(env: &TestEnv, program: &str, args: &[&str]) -> Out {
    let mut cmd = if program.ends_with(".sh") {
        let mut c = tokio::process::Command::new("bash");
        c.arg(program);
        c
    } else {
        tokio::process::Command::new(program)
    };
    let out = cmd
        .current_dir(repo_root())
        .env("KUBECONFIG", env.kubeconfig())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("finished in time")
        .expect("spawn");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `make install` and `kubectl apply -k <variant>` on a server of `minor` (in process; a real
/// cluster's own version otherwise): the variant for that version is chosen and installs, and
/// on 1.29 the full CRDs are refused exactly as a 1.29 server refuses them.
async fn install_on(minor: u32) {
    if !kubectl_available() || !repo_root().join("Makefile").is_file() {
        eprintln!("kubectl or the Makefile missing: skipped");
        return;
    }
    let env = TestEnv::with_options(apollo_devcluster::Options {
        version: apollo_devcluster::KubeVersion::new(minor).unwrap(),
        ..Default::default()
    })
    .await;
    let variant = run_in_repo(&env, "scripts/k8s-variant.sh", &["minor"]).await;
    assert!(variant.ok, "{}", variant.stderr);
    let minor: u32 = variant.stdout.trim().parse().unwrap();
    let legacy = minor < 31;
    let full_crds = repo_root().join("k8s/crds");
    if minor < 30 {
        let o = kubectl(&env, &["apply", "-f", full_crds.to_str().unwrap()], None).await;
        assert!(!o.ok, "{}", o.stdout);
        assert!(
            o.stderr.contains(
                r#"strict decoding error: unknown field "spec.versions[0].selectableFields""#
            ),
            "{}",
            o.stderr
        );
    }
    let o = run_in_repo(&env, "make", &["-s", "install"]).await;
    assert!(o.ok, "make install:\n{}\n{}", o.stdout, o.stderr);
    let chosen = if legacy {
        "k8s-pre-1.31/crds/"
    } else {
        "k8s/crds/"
    };
    assert!(
        o.stdout.lines().next().unwrap_or("").ends_with(chosen),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(
            "customresourcedefinition.apiextensions.k8s.io/deviceprocesses.azure.com condition met"
        ),
        "{}",
        o.stdout
    );
    let fields = must(
        &env,
        &[
            "get",
            "crd",
            "deviceprocesses.azure.com",
            "-o",
            "jsonpath={.spec.versions[0].selectableFields[*].jsonPath}",
        ],
        None,
    )
    .await;
    assert_eq!(fields, if legacy { "" } else { ".spec.deviceRef.name" });
    // A field selector on the device works where the field is served.
    let o = kubectl(
        &env,
        &[
            "get",
            "dp",
            "-n",
            env.namespace(),
            "--field-selector",
            "spec.deviceRef.name=tor1-01",
        ],
        None,
    )
    .await;
    assert_eq!(o.ok, !legacy, "{}{}", o.stdout, o.stderr);
    // The whole kustomization of that variant.
    let dir = run_in_repo(&env, "scripts/k8s-variant.sh", &["kustomize"]).await;
    assert!(dir.ok, "{}", dir.stderr);
    let dir = dir.stdout.trim().to_string();
    assert_eq!(dir.ends_with("k8s-pre-1.31"), legacy, "{dir}");
    let out = must(&env, &["apply", "-k", &dir], None).await;
    for applied in [
        "customresourcedefinition.apiextensions.k8s.io/deviceprocesses.azure.com",
        "deployment.apps/apollo-deviceprocess-controller",
        "service/apollo-deviceprocess-gateway",
    ] {
        assert!(out.contains(applied), "{applied} in:\n{out}");
    }
    env.cleanup().await;
}

/// The strategic merge patch a client-side `kubectl apply` of the runbook's NetworkSwitch CRD
/// sends when the project's CRD (columns Role and Age, server-side applied, so no
/// last-applied configuration) is installed: the server merges `versions` and their printer
/// columns by name, so the Age column the patch never named stays (`NAME ROLE AGE`), as on a
/// real v1.36 server. Sent with `kubectl patch --type strategic` (kubectl computes such a
/// patch itself only from a server's OpenAPI v2, which this server does not serve).
#[tokio::test]
async fn strategic_merge_patch_of_a_crd_keeps_columns_it_never_named() {
    if !kubectl_available() {
        eprintln!("kubectl not on PATH: skipped");
        return;
    }
    let env = TestEnv::new().await;
    env.apply_manifest_file(&repo_root().join("k8s/crds/networkswitches.azure.com.yaml"))
        .await
        .unwrap();
    let patch = serde_json::json!({"spec": {
        "$setElementOrder/versions": [{"name": "v1alpha1"}],
        "versions": [{
            "$setElementOrder/additionalPrinterColumns": [{"name": "Role"}],
            "name": "v1alpha1",
            "additionalPrinterColumns": [
                {"name": "Role", "type": "string", "jsonPath": ".metadata.labels.role"}
            ],
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"dummy": {"type": "string"}}}}}}
        }]
    }});
    must(
        &env,
        &[
            "patch",
            "crd",
            "networkswitches.azure.com",
            "--type",
            "strategic",
            "-p",
            &patch.to_string(),
        ],
        None,
    )
    .await;
    let ns = env.namespace().to_string();
    must(
        &env,
        &["apply", "-f", "-"],
        Some(&STEP8_SWITCHES.replace("namespace: default", &format!("namespace: {ns}"))),
    )
    .await;
    let out = must(&env, &["get", "nsw", "-n", &ns], None).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "ROLE", "AGE"], "{out}");
    // `$patch: delete` on an element removes that column only.
    let delete = serde_json::json!({"spec": {"versions": [{"name": "v1alpha1",
        "additionalPrinterColumns": [{"name": "Age", "$patch": "delete"}]}]}});
    must(
        &env,
        &[
            "patch",
            "crd",
            "networkswitches.azure.com",
            "--type",
            "strategic",
            "-p",
            &delete.to_string(),
        ],
        None,
    )
    .await;
    let out = must(&env, &["get", "nsw", "-n", &ns], None).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "ROLE"], "{out}");
    env.cleanup().await;
}

#[tokio::test]
async fn install_on_kubernetes_1_29_uses_the_compatible_crds() {
    install_on(29).await;
}

#[tokio::test]
async fn install_on_the_default_version_keeps_selectable_fields() {
    install_on(apollo_devcluster::KubeVersion::DEFAULT.minor()).await;
}
