//! `scripts/demo-kind.sh` cannot reach a real kind cluster here (no container engine), so this
//! runs it against recording stand-ins for kind, docker, nix, kubectl and curl, in a copy of the
//! repository layout, and checks what it would do on a real machine: the pinned node image and
//! port mapping, the order of the steps, the Secret and key files, the `apollo-demo cluster`
//! invocation, and `down`. It also runs shellcheck on every script under `scripts/` (when
//! installed) and checks the kind wiring against the manifests in `k8s/`.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

fn write_exe(path: &Path, body: &str) {
    std::fs::write(path, format!("{}\n{body}", common::bash_shebang())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of what `scripts/demo-kind.sh` reads: the scripts and the manifests (with the
/// CRD variant for older servers).
fn repo_copy(ws: &Path, root: &Path) {
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    for script in ["demo-kind.sh", "k8s-variant.sh"] {
        let to = root.join("scripts").join(script);
        std::fs::copy(ws.join("scripts").join(script), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for e in std::fs::read_dir(ws).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name == "k8s" || name.starts_with("k8s-pre-1.") {
            copy_dir(&ws.join(&name), &root.join(&name));
        }
    }
}

/// Stand-ins that append `<tool> <args>` to `$CALLS` and answer what the script reads.
fn stubs(dir: &Path) {
    write_exe(
        &dir.join("kind"),
        r#"echo "kind $*" >> "$CALLS"
case "$1 $2" in
  "get clusters") [ -f "$STATE/cluster" ] && echo apollo-dev; exit 0 ;;
  "create cluster") touch "$STATE/cluster"
     while [ $# -gt 0 ]; do [ "$1" = --config ] && cp "$2" "$STATE/kind-config.yaml"; shift; done ;;
  "get kubeconfig") echo "apiVersion: v1 # fake kubeconfig" ;;
  "delete cluster") rm -f "$STATE/cluster" ;;
esac"#,
    );
    write_exe(
        &dir.join("kubectl"),
        r#"echo "kubectl $*" >> "$CALLS"
for a in "$@"; do
  case "$a" in
    version) echo "{\"serverVersion\": {\"major\": \"1\", \"minor\": \"${FAKE_MINOR:-33}\"}}"; exit 0 ;;
    create) printf 'apiVersion: v1\nkind: Secret\n'; exit 0 ;;
  esac
done
cat >/dev/null 2>&1 || true"#,
    );
    write_exe(
        &dir.join("docker"),
        r#"echo "docker $*" >> "$CALLS"
case "$*" in
  *"keys generate"*) echo "apollo-mk1:k1:c2VjcmV0" ;;
  *"keys derive"*) cat >/dev/null; for a in "$@"; do d="$a"; done; echo "apollo-dk1:k1:$d:ZGV2aWNl" ;;
esac
exit 0"#,
    );
    write_exe(
        &dir.join("nix"),
        r##"echo "nix $*" >> "$CALLS"
out=""; prev=""
for a in "$@"; do [ "$prev" = --out-link ] && out="$a"; prev="$a"; done
case "$2" in
  *"#images") mkdir -p "$out"
    printf '#!%s\necho "load-into-kind $*" >> "$CALLS"\n' "$BASH" > "$out/load-into-kind"
    printf '#!%s\necho "load-into-docker $*" >> "$CALLS"\n' "$BASH" > "$out/load-into-docker"
    chmod +x "$out/load-into-kind" "$out/load-into-docker" ;;
  *"#compose") mkdir -p "$out/bin"
    printf '#!%s\necho "write-compose $*" >> "$CALLS"\necho "services: {}" > "$1"\n' "$BASH" > "$out/bin/apollo-write-compose"
    chmod +x "$out/bin/apollo-write-compose" ;;
esac"##,
    );
    write_exe(&dir.join("curl"), r#"echo "curl $*" >> "$CALLS""#);
    write_exe(
        &dir.join("nix-instantiate"),
        r#"echo "nix-instantiate $*" >> "$CALLS"; echo '{"services":{}}'"#,
    );
    write_exe(
        &dir.join("fake-apollo-demo"),
        r#"echo "apollo-demo $*" >> "$CALLS"; echo "PASS 9 Agents hold no Kubernetes credentials 0.1""#,
    );
}

/// The stand-ins first, then the test's own `PATH` (where bash and the basic tools are: not
/// necessarily /usr/bin or /bin, e.g. in the Nix build sandbox).
fn stub_path(stubs: &Path) -> std::ffi::OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(
        std::iter::once(stubs.to_path_buf()).chain(std::env::split_paths(&inherited)),
    )
    .expect("PATH entries without ':'")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn demo_kind_up_and_down_do_the_runbook_steps_in_order() {
    let ws = workspace();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    repo_copy(&ws, &root);
    let bin = tmp.path().join("bin");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    stubs(&bin);
    let calls = tmp.path().join("calls.log");
    let port = free_port();
    let run_on = |cmd: &str, port: u16| {
        Command::new("bash")
            .arg(root.join("scripts/demo-kind.sh"))
            .arg(cmd)
            .env("PATH", stub_path(&bin))
            .env("CALLS", &calls)
            .env("STATE", &state)
            .env("APOLLO_DEMO", bin.join("fake-apollo-demo"))
            .env("GATEWAY_PORT", port.to_string())
            .env_remove("KUBECONFIG")
            .env_remove("KIND_CLUSTER")
            .env_remove("KIND_NODE_IMAGE")
            .output()
            .expect("run demo-kind.sh")
    };
    let run = |cmd: &str| run_on(cmd, port);
    let out = run("up");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "up failed:\n{stdout}\n{stderr}");
    let log = std::fs::read_to_string(&calls).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let pos = |needle: &str| -> usize {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no call containing {needle:?} in:\n{log}"))
    };
    // The runbook's order.
    let order = [
        "kind create cluster --name apollo-dev",
        "load-into-kind --name apollo-dev",
        "load-into-docker",
        "apply --server-side -f",
        "wait --for=condition=Established",
        "create secret generic apollo-gateway-master-key",
        "docker run --rm -i --network none apollo/gateway:dev keys derive",
        "/k8s/controller/ -f",
        "patch deployment/apollo-deviceprocess-gateway --type merge -p {\"spec\":{\"replicas\":1}}",
        "rollout status deployment/apollo-deviceprocess-gateway",
        "curl -fsS http://127.0.0.1:",
        "compose.nix --argstr gatewayUrl http://host.docker.internal:",
        "apollo-demo cluster",
    ];
    let mut last = 0;
    for step in order {
        let p = pos(step);
        assert!(p >= last, "{step:?} came out of order in:\n{log}");
        last = p;
    }
    // Kind: the pinned node image, host port -> NodePort of the gateway Service; the CRDs with
    // selectableFields for its Kubernetes 1.33.
    let cfg = std::fs::read_to_string(state.join("kind-config.yaml")).unwrap();
    assert!(cfg.contains("image: kindest/node:v1.33.1@sha256:"), "{cfg}");
    assert!(
        lines[pos("apply --server-side -f")].ends_with(&format!("{}/k8s/crds/", root.display())),
        "{log}"
    );
    assert!(cfg.contains(&format!("hostPort: {port}")), "{cfg}");
    assert!(cfg.contains("containerPort: 30080"), "{cfg}");
    // kubectl always against the demo cluster's own kubeconfig.
    for l in lines.iter().filter(|l| l.starts_with("kubectl ")) {
        assert!(
            l.contains("--kubeconfig ") && l.contains(".demo/kind/kubeconfig"),
            "{l}"
        );
    }
    // Device key env files for compose, private.
    for d in ["tor1-01", "tor1-02"] {
        let p = root.join(format!("keys/{d}.env"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            format!("APOLLO_DEVICE_KEY=apollo-dk1:k1:{d}:ZGV2aWNl\n")
        );
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{d}.env mode {mode:o}");
    }
    // The self-checking steps against the cluster, agents through compose.
    let demo = lines[pos("apollo-demo cluster")];
    for want in [
        "--kubeconfig ",
        &format!("--gateway-url http://127.0.0.1:{port}"),
        "--agents compose",
        "--compose-file ",
        "docker-compose.yaml",
        "--compose-project apollo-demo",
    ] {
        assert!(demo.contains(want), "{demo} lacks {want}");
    }
    assert!(stdout.contains("PASS 9"), "{stdout}");
    assert!(
        stdout.contains("scripts/demo-kind.sh down removes it"),
        "{stdout}"
    );

    // A second `up` reuses the cluster; on the runbook's port the flake's compose output is
    // written as it is.
    std::fs::write(&calls, "").unwrap();
    let out = run_on("up", 18080);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(!log.contains("kind create cluster"), "{log}");
    assert!(
        log.contains("nix build ") && log.contains("#compose --out-link"),
        "{log}"
    );
    assert!(
        log.contains("write-compose ") && log.contains("docker-compose.yaml"),
        "{log}"
    );
    assert!(!log.contains("nix-instantiate"), "{log}");

    // down: agents, cluster, keys.
    let out = run("down");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains("kind delete cluster --name apollo-dev"),
        "{log}"
    );
    assert!(log.contains("compose -p apollo-demo"), "{log}");
    assert!(!root.join("keys/tor1-01.env").exists());
    assert!(!root.join("keys/master.key").exists());
    assert!(!root.join(".demo/kind").exists());
}

/// The runbook's own node image, Kubernetes 1.29: accepted, and the CRDs come from the variant
/// without selectableFields.
#[test]
fn demo_kind_accepts_the_runbooks_kubernetes_1_29() {
    let ws = workspace();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    repo_copy(&ws, &root);
    let bin = tmp.path().join("bin");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    stubs(&bin);
    let calls = tmp.path().join("calls.log");
    let run = |minor: &str| {
        Command::new("bash")
            .arg(root.join("scripts/demo-kind.sh"))
            .arg("up")
            .env("PATH", stub_path(&bin))
            .env("CALLS", &calls)
            .env("STATE", &state)
            .env("APOLLO_DEMO", bin.join("fake-apollo-demo"))
            .env("GATEWAY_PORT", free_port().to_string())
            .env("KIND_NODE_IMAGE", "kindest/node:v1.29.4")
            .env("FAKE_MINOR", minor)
            .env_remove("KUBECONFIG")
            .env_remove("KIND_CLUSTER")
            .output()
            .expect("run demo-kind.sh")
    };
    let out = run("29");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "up failed:\n{stdout}\n{stderr}");
    let cfg = std::fs::read_to_string(state.join("kind-config.yaml")).unwrap();
    assert!(cfg.contains("image: kindest/node:v1.29.4\n"), "{cfg}");
    let log = std::fs::read_to_string(&calls).unwrap();
    let crds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("apply --server-side -f") && l.contains("crds"))
        .collect();
    assert_eq!(
        crds,
        [format!(
            "kubectl --kubeconfig {}/.demo/kind/kubeconfig apply --server-side -f {}/k8s-pre-1.31/crds/",
            root.display(),
            root.display()
        )],
        "{log}"
    );
    assert!(stdout.contains("Kubernetes 1.29"), "{stdout}");
    assert!(
        stdout.contains("k8s-pre-1.31/crds/ for Kubernetes 1.29"),
        "{stdout}"
    );
    // Older than the project supports: a clear refusal before anything is installed.
    std::fs::write(&calls, "").unwrap();
    let out = run("28");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Kubernetes 1.28; the demo needs 1.29 or newer"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(!log.contains("apply"), "{log}");
}

#[test]
fn scripts_pass_shellcheck() {
    let Ok(out) = Command::new("shellcheck").arg("--version").output() else {
        eprintln!("shellcheck not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let dir = workspace().join("scripts");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    let out = Command::new("shellcheck")
        .arg("-x")
        .args(&scripts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The kind wiring matches the manifests: the NodePort the kind config maps, the Service
/// selecting the gateway pods on a port they expose, the Secret the script creates.
#[test]
fn kind_wiring_matches_the_gateway_manifests() {
    let ws = workspace();
    let docs = |p: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(ws.join(p)).unwrap();
        serde_saphyr::from_multiple::<serde_json::Value>(&text)
            .unwrap()
            .into_iter()
            .filter(|d| d.is_object())
            .collect()
    };
    let svc = &docs("k8s/gateway/service-nodeport.yaml")[0];
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    let deploy = docs("k8s/gateway/deployment.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("gateway Deployment");
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[k], v,
            "selector {k} does not match the gateway pods"
        );
    }
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let target = &svc["spec"]["ports"][0]["targetPort"];
    let ports = container["ports"].as_array().unwrap();
    assert!(
        ports
            .iter()
            .any(|p| &p["name"] == target || &p["containerPort"] == target),
        "targetPort {target} not exposed by the gateway container"
    );
    assert_eq!(container["image"], "apollo/gateway:dev");
    let secret = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .expect("master key Secret volume");
    assert_eq!(secret, "apollo-gateway-master-key");
    let out = Command::new("bash")
        .arg(ws.join("scripts/demo-kind.sh"))
        .arg("config")
        .output()
        .unwrap();
    let cfg = String::from_utf8_lossy(&out.stdout);
    assert!(
        cfg.contains("containerPort: 30080") && cfg.contains("hostPort: 18080"),
        "{cfg}"
    );
}

/// The kubectl part of `scripts/demo-kind.sh up` against the development API server: the CRDs,
/// their Established wait, RBAC and the master key Secret go through the real kubectl to a real
/// (development) API server; only what it cannot serve (apps/v1 Deployments, Services, rollouts)
/// is stood in for. Afterwards the Secret holds exactly the key the device keys derive from.
#[test]
fn demo_kind_manifests_apply_to_the_dev_api_server() {
    kind_manifests_on_dev_server("1.33");
}

/// The same with the development API server pretending to be the runbook's Kubernetes 1.29,
/// which refuses the CRDs with selectableFields as a 1.29 server does.
#[test]
fn demo_kind_manifests_apply_to_a_1_29_dev_api_server() {
    kind_manifests_on_dev_server("1.29");
}

fn kind_manifests_on_dev_server(version: &str) {
    use std::io::{BufRead as _, BufReader};
    let Some(real_kubectl) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("kubectl not installed: skipped");
        return;
    };
    let bins = common::build_components();
    let ws = workspace();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    repo_copy(&ws, &root);
    let state = tmp.path().join("state");
    let api_dir = tmp.path().join("api");
    let bin = tmp.path().join("bin");
    for d in [&state, &api_dir, &bin] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut api = Command::new(bins.join("apollo-devcluster"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--version",
            version,
            "--dir",
        ])
        .arg(&api_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(api.stdout.take().unwrap()).lines();
    let _api = Kill(api);
    let ready = lines.next().expect("ready line").unwrap();
    assert!(ready.starts_with("ready "), "{ready}");
    std::thread::spawn(move || for _ in lines {});
    let admin = api_dir.join("admin.kubeconfig");

    stubs(&bin);
    // kubectl: the real one against the development API server, except for what it does not
    // serve (workloads and Services).
    write_exe(
        &bin.join("kubectl"),
        r#"echo "kubectl $*" >> "$CALLS"
case "$*" in
  *k8s/controller*|*rollout*|*cluster-info*|*"patch deployment/"*) exit 0 ;;
esac
args=(); next=0
for a in "$@"; do
  if [ "$next" = 1 ]; then args+=("$REAL_KUBECONFIG"); next=0; continue; fi
  [ "$a" = --kubeconfig ] && next=1
  args+=("$a")
done
exec "$REAL_KUBECTL" "${args[@]}""#,
    );
    // The gateway image's `keys` subcommands, from the real binary.
    write_exe(
        &bin.join("docker"),
        r#"echo "docker $*" >> "$CALLS"
case "$*" in
  *"keys generate"*) exec "$GATEWAY_BIN" keys generate ;;
  *"keys derive"*) for a in "$@"; do d="$a"; done
    exec "$GATEWAY_BIN" keys derive --master-key-file /dev/stdin --device "$d" ;;
esac
exit 0"#,
    );
    let calls = tmp.path().join("calls.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("bash")
        .arg(root.join("scripts/demo-kind.sh"))
        .arg("up")
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("CALLS", &calls)
        .env("STATE", &state)
        .env("REAL_KUBECTL", &real_kubectl)
        .env("REAL_KUBECONFIG", &admin)
        .env("GATEWAY_BIN", bins.join("apollo-gateway"))
        .env("APOLLO_DEMO", bin.join("fake-apollo-demo"))
        .env("GATEWAY_PORT", port.to_string())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "up failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
    let k = |args: &[&str]| -> String {
        let o = Command::new(&real_kubectl)
            .arg("--kubeconfig")
            .arg(&admin)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "kubectl {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let crds = k(&["get", "crd", "-o", "name"]);
    for c in [
        "networkswitches.azure.com",
        "deviceprocessdeployments.azure.com",
        "deviceprocesses.azure.com",
    ] {
        assert!(crds.contains(c), "{crds}");
    }
    let fields = k(&[
        "get",
        "crd",
        "deviceprocesses.azure.com",
        "-o",
        "jsonpath={.spec.versions[0].selectableFields[*].jsonPath}",
    ]);
    let old = version == "1.29";
    assert_eq!(fields, if old { "" } else { ".spec.deviceRef.name" });
    if old {
        // What the variant avoids: the full CRDs are refused by this server.
        let o = Command::new(&real_kubectl)
            .arg("--kubeconfig")
            .arg(&admin)
            .args(["apply", "-f"])
            .arg(ws.join("k8s/crds/deviceprocesses.azure.com.yaml"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(r#"unknown field "spec.versions[0].selectableFields""#),
            "{stderr}"
        );
    }
    let sas = k(&["get", "serviceaccounts", "-o", "name"]);
    assert!(sas.contains("apollo-deviceprocess-gateway"), "{sas}");
    let secret = k(&[
        "get",
        "secret",
        "apollo-gateway-master-key",
        "-o",
        "jsonpath={.data.master\\.key}",
    ]);
    use base64::Engine as _;
    let in_cluster = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .unwrap();
    let on_disk = std::fs::read(root.join("keys/master.key")).unwrap();
    assert_eq!(
        in_cluster, on_disk,
        "the Secret holds the key the device keys derive from"
    );
    assert!(String::from_utf8_lossy(&on_disk).starts_with("apollo-mk1:"));
    // Device keys derived from that master key, for that device.
    let env = std::fs::read_to_string(root.join("keys/tor1-02.env")).unwrap();
    assert!(env.starts_with("APOLLO_DEVICE_KEY=apollo-dk1:"), "{env}");
    assert!(env.contains(":tor1-02:"), "{env}");
}
