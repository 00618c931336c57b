//! Starting, stopping and inspecting the device agents: as local processes (`local` mode) or
//! as docker compose services `agent-<device>` (`cluster` mode, the kind demo).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::procs::{self, Spec, Supervisor};

/// Evidence about one agent's credentials and connections.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// What to show (commands and their output, env with secrets redacted).
    pub shown: Vec<String>,
    /// Problems found (empty = no Kubernetes credential, no API server connection).
    pub problems: Vec<String>,
}

/// Environment variable names that would give a process Kubernetes access.
const KUBE_ENV: [&str; 4] = [
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBERNETES_TOKEN",
];

/// Substrings that betray a Kubernetes credential in argv, env values or open files.
const KUBE_MARKERS: [&str; 5] = [
    "kubeconfig",
    "serviceaccount/token",
    "client-certificate",
    "bearer ",
    "/var/run/secrets/kubernetes.io",
];

/// Checks an agent's argv and environment for Kubernetes credentials; `forbidden` holds
/// further strings that must not appear (the API server URL, the kubeconfig directory).
pub fn credential_problems(
    argv: &[String],
    env: &[(String, String)],
    files: &[String],
    forbidden: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (k, _) in env {
        if KUBE_ENV.contains(&k.as_str()) {
            problems.push(format!("environment holds {k}"));
        }
    }
    let texts = argv
        .iter()
        .map(|a| ("argument", a.as_str()))
        .chain(env.iter().map(|(_, v)| ("environment value", v.as_str())))
        .chain(files.iter().map(|f| ("open file", f.as_str())));
    for (what, t) in texts {
        let lower = t.to_lowercase();
        for m in KUBE_MARKERS {
            if lower.contains(m) {
                problems.push(format!("{what} mentions {m:?}"));
            }
        }
        for f in forbidden.iter().filter(|f| !f.is_empty()) {
            if t.contains(f.as_str()) {
                problems.push(format!("{what} mentions {f}"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// Environment as shown to the audience: secrets' values replaced.
pub fn redact(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .map(|(k, v)| {
            if k.contains("KEY") && !k.ends_with("_FILE")
                || k.contains("TOKEN")
                || k.contains("SECRET")
            {
                format!("{k}=<redacted, {} chars>", v.len())
            } else {
                format!("{k}={v}")
            }
        })
        .collect()
}

/// Agents as local processes, each given only its device name, the gateway URL and its key.
#[derive(Debug, Clone)]
pub struct LocalAgents {
    pub sup: Supervisor,
    pub bin: PathBuf,
    pub gateway_url: String,
    pub keys_dir: PathBuf,
    pub long_poll: Option<String>,
}

/// Agents as docker compose services.
#[derive(Debug, Clone)]
pub struct ComposeAgents {
    pub compose_file: Option<PathBuf>,
    pub project: Option<String>,
    /// `docker compose` or `docker-compose`, whichever the machine has.
    pub cli: crate::compose::ComposeCli,
}

/// How the demo drives agents.
#[derive(Debug, Clone)]
pub enum Agents {
    Local(LocalAgents),
    Compose(ComposeAgents),
}

pub fn process_name(device: &str) -> String {
    format!("agent-{device}")
}

impl LocalAgents {
    pub fn key_file(&self, device: &str) -> PathBuf {
        self.keys_dir.join(format!("{device}.key"))
    }

    pub fn spec(&self, device: &str) -> Spec {
        let mut spec = Spec::new(&process_name(device), &self.bin)
            .env("APOLLO_DEVICE_NAME", device)
            .env("APOLLO_GATEWAY_URL", self.gateway_url.clone())
            .env(
                "APOLLO_DEVICE_KEY_FILE",
                self.key_file(device).display().to_string(),
            );
        if let Some(lp) = &self.long_poll {
            spec = spec.arg("--long-poll").arg(lp.clone());
        }
        // Nothing inherited: no KUBECONFIG, no HOME/.kube, no token.
        spec.clear_env = true;
        spec
    }
}

impl ComposeAgents {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.cli.command();
        if let Some(f) = &self.compose_file {
            cmd.arg("-f").arg(f);
        }
        if let Some(p) = &self.project {
            cmd.arg("-p").arg(p);
        }
        // Its own process group: Ctrl-C reaches the demo, which then cleans up.
        cmd.args(args).process_group(0).kill_on_drop(true);
        cmd
    }

    /// The command line as the presenter types it.
    pub fn display(&self, args: &[&str]) -> String {
        let mut s = self.cli.display();
        if let Some(f) = &self.compose_file {
            s.push_str(&format!(" -f {}", f.display()));
        }
        if let Some(p) = &self.project {
            s.push_str(&format!(" -p {p}"));
        }
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    pub async fn run(&self, args: &[&str]) -> Result<String> {
        let out = tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .map_err(|_| anyhow!("{} timed out", self.display(args)))?
            .with_context(|| format!("cannot run {}", self.display(args)))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.display(args),
                out.status,
                text.trim()
            );
        }
        Ok(text.trim_end().to_string())
    }
}

impl Agents {
    /// Starts the agent of `device`; returns what was done, for the report.
    pub async fn start(&self, device: &str) -> Result<String> {
        match self {
            Agents::Local(l) => {
                let spec = l.spec(device);
                let pid = l.sup.start(&spec).await?;
                let env: Vec<String> = spec.env.keys().cloned().collect();
                Ok(format!(
                    "started agent {device} (pid {pid}) with only {}: {}",
                    env.join(", "),
                    spec.display()
                ))
            }
            Agents::Compose(c) => {
                let svc = process_name(device);
                let args = ["up", "-d", "--no-deps", svc.as_str()];
                c.run(&args).await?;
                Ok(format!("$ {}", c.display(&args)))
            }
        }
    }

    /// Stops the agent of `device` (SIGTERM, as `docker compose stop` does).
    pub async fn stop(&self, device: &str) -> Result<String> {
        match self {
            Agents::Local(l) => {
                let how = l.sup.stop(&process_name(device)).await?;
                Ok(format!("stopped agent {device}: {how}"))
            }
            Agents::Compose(c) => {
                let svc = process_name(device);
                let args = ["stop", svc.as_str()];
                c.run(&args).await?;
                Ok(format!("$ {}", c.display(&args)))
            }
        }
    }

    /// Restarts a stopped agent.
    pub async fn restart(&self, device: &str) -> Result<String> {
        match self {
            Agents::Local(_) => self.start(device).await,
            Agents::Compose(c) => {
                let svc = process_name(device);
                let args = ["start", svc.as_str()];
                c.run(&args).await?;
                Ok(format!("$ {}", c.display(&args)))
            }
        }
    }

    /// What the agent of `device` holds: argv, environment, open files, connections.
    /// `gateway` is the address it may talk to; `forbidden` strings must not appear.
    pub async fn evidence(
        &self,
        device: &str,
        gateway: &str,
        forbidden: &[String],
    ) -> Result<Evidence> {
        match self {
            Agents::Local(l) => {
                let pid = l
                    .sup
                    .pid(&process_name(device))
                    .ok_or_else(|| anyhow!("agent {device} is not running"))?;
                let view = match procs::inspect(pid) {
                    Ok(v) => v,
                    Err(e) => {
                        // No /proc (not Linux): what the demo launched it with, said as such.
                        let spec = l.spec(device);
                        let mut ev = Evidence::default();
                        ev.shown.push(format!(
                            "cannot read /proc/{pid} ({e}); the agent was started with an empty \
                             environment plus:"
                        ));
                        let env: Vec<(String, String)> = spec.env.clone().into_iter().collect();
                        for l in redact(&env) {
                            ev.shown.push(format!("  {l}"));
                        }
                        ev.shown.push(format!("  argv: {}", spec.display()));
                        let mut argv = vec![spec.program.display().to_string()];
                        argv.extend(spec.args.clone());
                        ev.problems = credential_problems(&argv, &env, &[], forbidden);
                        return Ok(ev);
                    }
                };
                let mut ev = Evidence::default();
                ev.shown
                    .push(format!("$ tr '\\0' ' ' < /proc/{pid}/cmdline"));
                ev.shown.push(format!("  {}", view.argv.join(" ")));
                ev.shown
                    .push(format!("$ tr '\\0' '\\n' < /proc/{pid}/environ"));
                for l in redact(&view.env) {
                    ev.shown.push(format!("  {l}"));
                }
                ev.shown.push(format!(
                    "TCP connections of pid {pid}: {}",
                    if view.tcp_peers.is_empty() {
                        "none open right now".to_string()
                    } else {
                        view.tcp_peers.join(", ")
                    }
                ));
                ev.problems =
                    credential_problems(&view.argv, &view.env, &view.open_files, forbidden);
                for peer in &view.tcp_peers {
                    if peer != gateway {
                        ev.problems
                            .push(format!("connected to {peer}, which is not the gateway"));
                    }
                }
                Ok(ev)
            }
            Agents::Compose(c) => {
                let svc = process_name(device);
                let id = c.run(&["ps", "-q", svc.as_str()]).await?;
                let id = id.lines().next().unwrap_or("").trim().to_string();
                if id.is_empty() {
                    bail!("no container for {svc}");
                }
                let out = tokio::process::Command::new("docker")
                    .args(["inspect", &id])
                    .output()
                    .await
                    .context("cannot run docker inspect")?;
                let v: Value = serde_json::from_slice(&out.stdout)
                    .context("docker inspect printed no JSON")?;
                let mut ev = compose_evidence(&svc, &v, forbidden)?;
                container_connections(&v, &mut ev);
                Ok(ev)
            }
        }
    }
}

/// Evidence from `docker inspect` output of one agent container.
pub fn compose_evidence(svc: &str, inspect: &Value, forbidden: &[String]) -> Result<Evidence> {
    let c = inspect
        .get(0)
        .ok_or_else(|| anyhow!("docker inspect returned nothing for {svc}"))?;
    let env: Vec<(String, String)> = c["Config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut argv: Vec<String> = Vec::new();
    for key in ["Entrypoint", "Cmd"] {
        if let Some(a) = c["Config"][key].as_array() {
            argv.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
        }
    }
    let mounts: Vec<String> = c["Mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    format!(
                        "{} -> {}",
                        m["Source"].as_str().unwrap_or("?"),
                        m["Destination"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ev = Evidence::default();
    ev.shown.push(format!(
        "$ docker inspect {svc} --format '{{{{json .Config.Env}}}} {{{{json .Mounts}}}}'"
    ));
    ev.shown.push(format!("  command: {}", argv.join(" ")));
    for l in redact(&env) {
        ev.shown.push(format!("  {l}"));
    }
    ev.shown.push(format!(
        "  mounts: {}",
        if mounts.is_empty() {
            "none".to_string()
        } else {
            mounts.join(", ")
        }
    ));
    ev.problems = credential_problems(&argv, &env, &mounts, forbidden);
    Ok(ev)
}

/// The container's TCP peers, read from the kernel (`/proc/<pid>/net/tcp*` of the container's
/// main process: the container's own network namespace), checked against the gateway the
/// container is configured with (`APOLLO_GATEWAY_URL`; `host.docker.internal` is the bridge's
/// gateway address, where docker publishes the gateway's port).
pub fn container_connections(inspect: &Value, ev: &mut Evidence) {
    let c = &inspect[0];
    let pid = c["State"]["Pid"].as_u64().filter(|p| *p > 0);
    let Some(pid) = pid else {
        ev.shown
            .push("  connections: docker inspect names no running process".to_string());
        return;
    };
    let url = c["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|kv| kv.strip_prefix("APOLLO_GATEWAY_URL="))
        .unwrap_or_default()
        .to_string();
    let bridge_gateway = c["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|n| n["Gateway"].as_str())
        .find(|g| !g.is_empty())
        .map(str::to_string);
    let expected = gateway_peer(&url, bridge_gateway.as_deref());
    let mut tables = String::new();
    for t in ["net/tcp", "net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/{t}")) {
            tables.push_str(&text);
        }
    }
    if tables.is_empty() {
        ev.shown.push(format!(
            "  connections: cannot read /proc/{pid}/net/tcp (the docker engine is on another \
             machine, or no permission): not shown"
        ));
        return;
    }
    let peers = crate::procs::netns_peers(&tables);
    ev.shown.push(format!(
        "  TCP peers of the container (/proc/{pid}/net/tcp): {}{}",
        if peers.is_empty() {
            "none open right now".to_string()
        } else {
            peers.join(", ")
        },
        match &expected {
            Some(e) => format!("   (the gateway: {url} = {e})"),
            None => format!("   (the gateway: {url})"),
        }
    ));
    for peer in peers {
        let ok = match &expected {
            Some(e) => &peer == e,
            None => false,
        };
        if !ok {
            ev.problems.push(format!(
                "connected to {peer}, which is not the gateway ({url})"
            ));
        }
    }
}

/// `ip:port` an agent container reaches for `url`: an IP host as is, `host.docker.internal`
/// as the bridge gateway address (compose's `host-gateway`); `None` for other names.
pub fn gateway_peer(url: &str, bridge_gateway: Option<&str>) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let default_port = if url.starts_with("https://") { 443 } else { 80 };
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = if host == "host.docker.internal" {
        bridge_gateway?.parse().ok()?
    } else {
        host.parse().ok()?
    };
    Some(std::net::SocketAddr::new(ip, port).to_string())
}

/// Where device keys for local agents live.
pub fn key_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn finds_kubernetes_credentials() {
        let clean = vec![
            kv("APOLLO_DEVICE_NAME", "tor1-01"),
            kv("APOLLO_GATEWAY_URL", "http://127.0.0.1:18080"),
            kv("APOLLO_DEVICE_KEY_FILE", "/tmp/x/keys/tor1-01.key"),
        ];
        assert!(credential_problems(&["apollo-agent".into()], &clean, &[], &[]).is_empty());
        let mut dirty = clean.clone();
        dirty.push(kv("KUBECONFIG", "/tmp/state/agent.kubeconfig"));
        let p = credential_problems(&[], &dirty, &[], &["https://127.0.0.1:6443".into()]);
        assert!(p.iter().any(|x| x.contains("KUBECONFIG")), "{p:?}");
        let p = credential_problems(
            &["--server".into(), "https://127.0.0.1:6443".into()],
            &clean,
            &["/var/run/secrets/kubernetes.io/serviceaccount/token".into()],
            &["https://127.0.0.1:6443".into()],
        );
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn redacts_keys_not_key_files() {
        let shown = redact(&[
            kv("APOLLO_DEVICE_KEY", "apollo-dk1:k1:tor1-01:secret"),
            kv("APOLLO_DEVICE_KEY_FILE", "/keys/tor1-01.key"),
        ]);
        assert_eq!(shown[0], "APOLLO_DEVICE_KEY=<redacted, 28 chars>");
        assert_eq!(shown[1], "APOLLO_DEVICE_KEY_FILE=/keys/tor1-01.key");
    }

    #[test]
    fn gateway_peer_of_a_compose_agent() {
        assert_eq!(
            gateway_peer("http://host.docker.internal:18080", Some("172.17.0.1")).as_deref(),
            Some("172.17.0.1:18080")
        );
        assert_eq!(
            gateway_peer("http://10.0.0.5:8080/x", None).as_deref(),
            Some("10.0.0.5:8080")
        );
        assert_eq!(
            gateway_peer("http://10.0.0.5", None).as_deref(),
            Some("10.0.0.5:80")
        );
        assert_eq!(gateway_peer("http://gw.example:8080", None), None);
        assert_eq!(gateway_peer("http://host.docker.internal:1", None), None);
        assert_eq!(gateway_peer("ftp://x", None), None);
    }

    #[test]
    fn compose_evidence_from_docker_inspect() {
        let v = serde_json::json!([{
            "Config": {"Env": ["APOLLO_DEVICE_NAME=tor1-01", "APOLLO_DEVICE_KEY=apollo-dk1:k:tor1-01:abc"],
                       "Entrypoint": ["/usr/local/bin/apollo-agent"], "Cmd": null},
            "Mounts": []
        }]);
        let ev = compose_evidence("agent-tor1-01", &v, &[]).unwrap();
        assert!(ev.problems.is_empty(), "{:?}", ev.problems);
        assert!(ev.shown.iter().any(|l| l.contains("mounts: none")));
        assert!(!ev.shown.iter().any(|l| l.contains("abc")));
        let v = serde_json::json!([{
            "Config": {"Env": ["KUBECONFIG=/k"]},
            "Mounts": [{"Source": "/home/u/.kube/config", "Destination": "/kubeconfig"}]
        }]);
        let ev = compose_evidence("agent-tor1-01", &v, &[]).unwrap();
        assert!(ev.problems.len() >= 2, "{:?}", ev.problems);
    }
}
