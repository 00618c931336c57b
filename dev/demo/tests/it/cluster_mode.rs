//! `apollo-demo cluster` (the last stage of `make demo`) end to end, without containers: the
//! "cluster" is the development API server with the controller and gateway running as its
//! ServiceAccounts, and `docker` is a stand-in that runs each compose service `agent-<device>`
//! as a local `apollo-agent` process (env from `keys/<device>.env`, like compose's env_file) and
//! answers `docker inspect` from `/proc`. What is checked is the demo's side of the contract: the
//! compose commands it issues (up, stop, start, ps, inspect) and the nine steps passing with
//! agents it only controls through them.

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bash_shebang, build_components, signal, step_lines, workspace};

/// Kills what it holds when dropped (test cleanup on every path).
struct Procs(Vec<Child>, PathBuf);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Agents started by the docker stand-in.
        if let Ok(dir) = std::fs::read_dir(&self.1) {
            for e in dir.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid")
                    && let Ok(pid) = std::fs::read_to_string(e.path())
                    && let Ok(pid) = pid.trim().parse()
                {
                    let _ = signal(pid, rustix::process::Signal::TERM);
                }
            }
        }
    }
}

/// Follows the `#!` line (`common::bash_shebang`).
const FAKE_DOCKER: &str = r#"
# docker stand-in: compose services agent-<device> are local apollo-agent processes.
set -u
state="$FAKE_DOCKER_STATE"
echo "docker $*" >> "$state/calls"
if [ "$1" = compose ]; then
  shift
  while [ $# -gt 0 ]; do case "$1" in -p|-f) shift 2 ;; *) break ;; esac; done
  cmd="$1"; shift
  svc=""; for a in "$@"; do svc="$a"; done
  dev="${svc#agent-}"
  running() { [ -f "$state/$svc.pid" ] && kill -0 "$(cat "$state/$svc.pid")" 2>/dev/null; }
  case "$cmd" in
    up|start)
      running && exit 0
      key="$(sed -n 's/^APOLLO_DEVICE_KEY=//p' "$FAKE_KEYS/$dev.env")"
      env -i APOLLO_DEVICE_NAME="$dev" APOLLO_GATEWAY_URL="$FAKE_GATEWAY_URL" APOLLO_DEVICE_KEY="$key" \
        "$FAKE_AGENT" --long-poll 2s >>"$state/$svc.log" 2>&1 </dev/null &
      echo $! > "$state/$svc.pid" ;;
    stop)
      if running; then
        pid="$(cat "$state/$svc.pid")"; kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
      fi ;;
    ps) running && cat "$state/$svc.pid" ;;
  esac
  exit 0
fi
if [ "$1" = inspect ]; then
  pid="$2"; envs=""
  while IFS= read -r -d '' kv; do envs="$envs${envs:+,}\"$kv\""; done < "/proc/$pid/environ"
  printf '[{"Id":"%s","Config":{"Env":[%s],"Entrypoint":["/usr/local/bin/apollo-agent"],"Cmd":null},"Mounts":[]}]\n' "$pid" "$envs"
  exit 0
fi
exit 1
"#;

fn wait_ready(url: &str, deadline: Duration) {
    let start = Instant::now();
    loop {
        let ok = Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{url} not ready within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn capture(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("run");
    assert!(out.status.success(), "{program:?} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn cluster_mode_drives_agents_through_docker_compose() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
        || Command::new("curl").arg("--version").output().is_err()
    {
        eprintln!("kubectl or curl not installed: skipped");
        return;
    }
    let bins = build_components();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("apiserver");
    let repo = tmp.path().join("repo");
    let fake = tmp.path().join("fakebin");
    let docker_state = tmp.path().join("docker");
    for d in [&state, &repo, &fake, &docker_state, &repo.join("keys")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut procs = Procs(Vec::new(), docker_state.clone());

    // The "cluster": the development API server, CRDs and RBAC, controller and gateway.
    let mut api = Command::new(bins.join("apollo-devcluster"))
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(api.stdout.take().unwrap()).lines();
    procs.0.push(api);
    let ready = lines.next().expect("a line").unwrap();
    assert!(ready.starts_with("ready https://"), "{ready}");
    std::thread::spawn(move || for _ in lines {});
    let admin = state.join("admin.kubeconfig");
    let ws = workspace();
    for dir in ["k8s/crds", "k8s/rbac", "k8s/samples"] {
        copy_dir(&ws.join(dir), &repo.join(dir));
    }
    let status = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&admin)
        .args(["apply", "--server-side", "-f"])
        .arg(ws.join("k8s/crds"))
        .arg("-f")
        .arg(ws.join("k8s/rbac"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let gateway = bins.join("apollo-gateway");
    let master = tmp.path().join("master.key");
    std::fs::write(&master, capture(&gateway, &["keys", "generate"])).unwrap();
    for d in ["tor1-01", "tor1-02"] {
        let key = capture(
            &gateway,
            &[
                "keys",
                "derive",
                "--master-key-file",
                master.to_str().unwrap(),
                "--device",
                d,
            ],
        );
        std::fs::write(
            repo.join(format!("keys/{d}.env")),
            format!("APOLLO_DEVICE_KEY={key}\n"),
        )
        .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw_url = format!("http://127.0.0.1:{port}");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    for (name, args) in [
        (
            "apollo-controller",
            vec![
                "--kubeconfig".to_string(),
                state.join("controller.kubeconfig").display().to_string(),
                "--namespace".into(),
                "default".into(),
                "--health-addr".into(),
                "127.0.0.1:0".into(),
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
            ],
        ),
        (
            "apollo-gateway",
            vec![
                "--addr".to_string(),
                format!("127.0.0.1:{port}"),
                "--metrics-addr".into(),
                format!("127.0.0.1:{metrics_port}"),
                "--kubeconfig".into(),
                state.join("gateway.kubeconfig").display().to_string(),
                "--namespace".into(),
                "default".into(),
                "--master-key-file".into(),
                master.display().to_string(),
                "--heartbeat-interval".into(),
                "1s".into(),
                "--stale-after".into(),
                "3s".into(),
            ],
        ),
    ] {
        let child = Command::new(bins.join(name))
            .args(&args)
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    wait_ready(&format!("{metrics_url}/readyz"), Duration::from_secs(20));

    // docker compose, as the kind demo drives it.
    let docker = fake.join("docker");
    std::fs::write(&docker, format!("{}{FAKE_DOCKER}", bash_shebang())).unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let compose_file = repo.join("docker-compose.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_apollo-demo"))
        .args(["cluster", "--kubeconfig"])
        .arg(&admin)
        .args([
            "--gateway-url",
            &gw_url,
            "--gateway-metrics-url",
            &metrics_url,
            "--agents",
            "compose",
            "--compose-file",
        ])
        .arg(&compose_file)
        .args([
            "--compose-project",
            "apollo-demo",
            "--heartbeat",
            "1s",
            "--stale-after",
            "3s",
        ])
        .arg("--repo")
        .arg(&repo)
        .arg("--logs-dir")
        .arg(tmp.path().join("logs"))
        .env("PATH", path)
        .env("FAKE_DOCKER_STATE", &docker_state)
        .env("FAKE_KEYS", repo.join("keys"))
        .env("FAKE_GATEWAY_URL", &gw_url)
        .env("FAKE_AGENT", bins.join("apollo-agent"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run apollo-demo cluster");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let calls = std::fs::read_to_string(docker_state.join("calls")).unwrap_or_default();
    assert!(
        out.status.success(),
        "apollo-demo cluster failed ({}):\n{stdout}\n{}\ndocker calls:\n{calls}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, l) in step_lines(&stdout).iter().enumerate() {
        assert!(l.starts_with(&format!("PASS {} ", i + 1)), "{l}");
    }
    let f = compose_file.display();
    for want in [
        format!("docker compose -f {f} -p apollo-demo up -d --no-deps agent-tor1-01"),
        format!("docker compose -f {f} -p apollo-demo up -d --no-deps agent-tor1-02"),
        format!("docker compose -f {f} -p apollo-demo stop agent-tor1-02"),
        format!("docker compose -f {f} -p apollo-demo start agent-tor1-02"),
        format!("docker compose -f {f} -p apollo-demo ps -q agent-tor1-01"),
        "docker inspect ".to_string(),
    ] {
        assert!(calls.contains(&want), "no {want:?} in:\n{calls}");
    }
    // The presenter sees the compose commands and the containers' configuration.
    assert!(stdout.contains("$ docker compose -f "), "{stdout}");
    assert!(stdout.contains("APOLLO_DEVICE_KEY=<redacted"), "{stdout}");
    assert!(stdout.contains("mounts: none"), "{stdout}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
