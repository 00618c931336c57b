//! `apollo-demo containers`: the runbook with every component in a local container.
//!
//! The development API server, the controller and the gateway run from the images that
//! `make docker-images` builds (`Dockerfile.*`, `FROM scratch`) on a docker network of their
//! own; the agents run with docker compose from the compose file `compose.nix` describes
//! ([`crate::compose`]), on the default bridge, reaching the gateway the way the runbook's
//! step 10 does: its port published on the host, `host.docker.internal:host-gateway`.
//!
//! Every container, network and compose project carries the run's unique name (and the
//! label [`RUN_LABEL`]), so parallel runs never collide, and [`Created::remove_all`] removes
//! exactly what this run created — at the end, on failure and on Ctrl-C — after saving each
//! container's log into the logs directory.
//!
//! The same pieces (networks, gateway containers, readiness, keys) run the gateway's replica
//! scenarios, three gateways on two networks: [`crate::ha`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::agents::ComposeAgents;
use crate::cli::{Timings, flag_duration};
use crate::httpc::Http;

/// Label on everything a run creates; its value is the run's name.
pub const RUN_LABEL: &str = "io.apollo.demo.run";

/// Port the gateway listens on inside its container (the image's `EXPOSE`).
pub const GATEWAY_PORT: u16 = 8080;
/// Port the development API server listens on inside its container.
pub const APISERVER_PORT: u16 = 6443;
/// The controller's health port inside its container.
pub const CONTROLLER_HEALTH_PORT: u16 = 8081;
/// The gateway's metrics and health listener inside its container (its `--metrics-addr`).
pub const GATEWAY_METRICS_PORT: u16 = 9090;

/// How long one docker CLI call may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// A unique run name: `apollo-demo-<pid>-<4 hex digits>` (also the network and compose
/// project name, and the prefix of each container's).
pub fn run_name() -> String {
    run_name_with("apollo-demo")
}

/// A unique run name `<prefix>-<pid>-<4 hex digits>`: `apollo-demo` for the runbook,
/// `apollo-ha` for the replica scenarios, so runs of both on one machine never collide.
pub fn run_name_with(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{:04x}", std::process::id(), nanos & 0xffff)
}

/// `docker <args>`: stdout (trimmed) or an error with stderr. `input` goes to stdin.
pub async fn docker(args: &[&str], input: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group: a Ctrl-C at the terminal reaches the demo (which cleans up),
        // not a docker command half-way through.
        .process_group(0)
        .kill_on_drop(true);
    let shown = format!("docker {}", args.join(" "));
    let run = async {
        let mut child = cmd.spawn().with_context(|| format!("cannot run {shown}"))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await?;
            drop(stdin);
        }
        Ok::<_, anyhow::Error>(child.wait_with_output().await?)
    };
    let out = tokio::time::timeout(DOCKER_TIMEOUT, run)
        .await
        .map_err(|_| anyhow!("{shown} timed out"))??;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Checks that a docker engine answers; the error says what is missing.
pub async fn check_engine() -> Result<String> {
    docker(&["version", "--format", "{{.Server.Version}}"], None)
        .await
        .map_err(|e| {
            anyhow!(
                "no docker engine answers ({e}): install and start Docker (`docker info` must \
                 work for this user)"
            )
        })
}

/// What both container modes check and resolve before they create anything: a docker engine
/// that answers (its version), the compose CLI, the repository, and the run's images (one
/// line each for the header).
pub struct Prerequisites {
    pub engine: String,
    pub cli: crate::compose::ComposeCli,
    pub repo: std::path::PathBuf,
    pub images: Images,
    pub image_lines: Vec<String>,
}

impl Prerequisites {
    pub async fn check(common: &crate::cli::CommonFlags, image_tag: &str) -> Result<Self> {
        let engine = check_engine().await?;
        let cli = crate::compose::ComposeCli::detect().await?;
        let repo = crate::app::find_repo(common.repo.as_deref())?;
        let images = Images::tagged(image_tag);
        let image_lines = images.check().await?;
        Ok(Prerequisites {
            engine,
            cli,
            repo,
            images,
            image_lines,
        })
    }
}

/// The images of one run.
#[derive(Debug, Clone)]
pub struct Images {
    pub devcluster: String,
    pub controller: String,
    pub gateway: String,
    pub agent: String,
}

impl Images {
    pub fn tagged(tag: &str) -> Images {
        Images {
            devcluster: format!("apollo/devcluster:{tag}"),
            controller: format!("apollo/controller:{tag}"),
            gateway: format!("apollo/gateway:{tag}"),
            agent: format!("apollo/agent:{tag}"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [
            &self.devcluster,
            &self.controller,
            &self.gateway,
            &self.agent,
        ]
    }

    /// One line per image (`ref  id  size`); an error naming the missing ones and how to
    /// build them.
    pub async fn check(&self) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        let mut lines = Vec::new();
        for image in self.all() {
            match docker(
                &["image", "inspect", "--format", "{{.Id}} {{.Size}}", image],
                None,
            )
            .await
            {
                Ok(s) => {
                    let (id, size) = s.split_once(' ').unwrap_or((s.as_str(), "0"));
                    let mib = size.parse::<f64>().unwrap_or(0.0) / (1024.0 * 1024.0);
                    let short = id.trim_start_matches("sha256:");
                    lines.push(format!(
                        "image {image}: {} ({mib:.1} MiB)",
                        &short[..short.len().min(12)]
                    ));
                }
                Err(_) => missing.push(image.to_string()),
            }
        }
        if !missing.is_empty() {
            bail!(
                "image(s) {} not found: build them with `make build docker-images` (static \
                 binaries into bin/, then Dockerfile.* FROM scratch; nothing is pulled)",
                missing.join(", ")
            );
        }
        Ok(lines)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Container names, in creation order.
    containers: Vec<String>,
    networks: Vec<String>,
    compose: Option<ComposeAgents>,
    /// The run's label value (everything created carries it).
    run: Option<String>,
    logs_dir: Option<PathBuf>,
    /// Private directories (keys, compose file, staged files), deleted last.
    temp_dirs: Vec<PathBuf>,
}

/// What a run created, registered *before* it is created (a Ctrl-C between `docker run`
/// and its answer still gets it removed). Clonable; every clone sees the same set.
#[derive(Debug, Clone, Default)]
pub struct Created {
    inner: Arc<Mutex<Inner>>,
}

impl Created {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn set_run(&self, run: &str, logs_dir: &Path) {
        self.with(|i| {
            i.run = Some(run.to_string());
            i.logs_dir = Some(logs_dir.to_path_buf());
        });
    }

    pub fn container(&self, name: &str) {
        self.with(|i| i.containers.push(name.to_string()));
    }

    pub fn network(&self, name: &str) {
        self.with(|i| i.networks.push(name.to_string()));
    }

    pub fn temp_dir(&self, dir: &Path) {
        self.with(|i| i.temp_dirs.push(dir.to_path_buf()));
    }

    pub fn compose(&self, c: &ComposeAgents) {
        self.with(|i| i.compose = Some(c.clone()));
    }

    /// Whether anything was (or was about to be) created.
    pub fn is_empty(&self) -> bool {
        self.with(|i| i.run.is_none())
    }

    /// Saves each container's log, then removes the compose project (`down`), the containers,
    /// the networks, and anything else carrying this run's label (containers, networks,
    /// volumes). Returns one line per thing removed or failed.
    pub async fn remove_all(&self) -> Vec<String> {
        let (containers, networks, compose, run, logs, temp_dirs) = self.with(|i| {
            (
                std::mem::take(&mut i.containers),
                std::mem::take(&mut i.networks),
                i.compose.take(),
                i.run.take(),
                i.logs_dir.clone(),
                std::mem::take(&mut i.temp_dirs),
            )
        });
        let Some(run) = run else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        if let Some(c) = &compose {
            if let Some(dir) = &logs
                && let Ok(text) = c.run(&["logs", "--no-color", "--timestamps"]).await
            {
                let path = dir.join("agents.log");
                if std::fs::write(&path, format!("{text}\n")).is_ok() {
                    lines.push(format!("saved the agents' logs to {}", path.display()));
                }
            }
            let args = ["down", "--volumes", "--remove-orphans", "--timeout", "5"];
            match c.run(&args).await {
                Ok(_) => lines.push(format!("$ {}", c.display(&args))),
                Err(e) => lines.push(format!("{e:#}")),
            }
        }
        for name in containers.iter().rev() {
            if let Some(dir) = &logs {
                save_container_log(name, &run, dir).await;
            }
            match docker(&["rm", "--force", "--volumes", name], None).await {
                Ok(_) => lines.push(format!("removed container {name}")),
                // Registered but never created (setup failed before it).
                Err(e) if e.to_string().contains("No such container") => {}
                Err(e) => lines.push(format!("{e:#}")),
            }
        }
        // Anything else of this run: a `docker run` interrupted mid-way, compose leftovers.
        let filter = format!("label={RUN_LABEL}={run}");
        let compose_filter = format!("label=com.docker.compose.project={run}");
        for f in [&filter, &compose_filter] {
            if let Ok(ids) = docker(&["ps", "-aq", "--filter", f], None).await {
                for id in ids.split_whitespace() {
                    match docker(&["rm", "--force", "--volumes", id], None).await {
                        Ok(_) => lines.push(format!("removed container {id} ({f})")),
                        Err(e) => lines.push(format!("{e:#}")),
                    }
                }
            }
        }
        for name in networks.iter().rev() {
            match docker(&["network", "rm", name], None).await {
                Ok(_) => lines.push(format!("removed network {name}")),
                Err(e) if e.to_string().contains("No such network") => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => lines.push(format!("{e:#}")),
            }
        }
        for f in [&filter, &compose_filter] {
            if let Ok(ids) = docker(&["network", "ls", "-q", "--filter", f], None).await {
                for id in ids.split_whitespace() {
                    match docker(&["network", "rm", id], None).await {
                        Ok(_) => lines.push(format!("removed network {id} ({f})")),
                        Err(e) => lines.push(format!("{e:#}")),
                    }
                }
            }
            if let Ok(ids) = docker(&["volume", "ls", "-q", "--filter", f], None).await {
                for id in ids.split_whitespace() {
                    match docker(&["volume", "rm", "--force", id], None).await {
                        Ok(_) => lines.push(format!("removed volume {id} ({f})")),
                        Err(e) => lines.push(format!("{e:#}")),
                    }
                }
            }
        }
        for dir in temp_dirs {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => lines.push(format!(
                    "removed {} (device keys, compose file)",
                    dir.display()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => lines.push(format!("cannot remove {}: {e}", dir.display())),
            }
        }
        lines
    }
}

/// `docker logs NAME` into `<dir>/<component>.log` (the part of the name after the run's).
async fn save_container_log(name: &str, run: &str, dir: &Path) {
    let out = tokio::process::Command::new("docker")
        .args(["logs", "--timestamps", name])
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .output();
    if let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(30), out).await
        && out.status.success()
    {
        {
            let component = name
                .strip_prefix(run)
                .map(|s| s.trim_start_matches('-'))
                .filter(|s| !s.is_empty())
                .unwrap_or(name);
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            let _ = std::fs::write(dir.join(format!("{component}.log")), text);
        }
    }
}

/// The host address of a published container port (`docker port NAME PORT/tcp`), IPv4 first.
pub async fn published(name: &str, port: u16) -> Result<std::net::SocketAddr> {
    let out = docker(&["port", name, &format!("{port}/tcp")], None).await?;
    let mut addrs: Vec<std::net::SocketAddr> =
        out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{name} publishes no port for {port}/tcp ({out:?})"))
}

/// A free port on the host address `address` (bound, then released): a published port
/// chosen before the container starts stays the same when it is restarted.
pub fn free_host_port(address: &str) -> Result<u16> {
    let bind = match address {
        "" | "::" | "[::]" => "0.0.0.0",
        a => a,
    };
    Ok(std::net::TcpListener::bind((bind, 0))
        .with_context(|| format!("cannot bind a port on {bind}"))?
        .local_addr()?
        .port())
}

/// A free port on the host address `address` below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): a port the kernel never hands to an outgoing connection,
/// so it is still free when a stopped container publishing it starts again (a port from
/// [`free_host_port`] may meanwhile be the local port of any connection on the machine).
pub fn stable_host_port(address: &str) -> Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u16, low.max(10_001));
    let bind = match address {
        "" | "::" | "[::]" => "0.0.0.0",
        a => a,
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let span = u32::from(to - from);
    for i in 0..span {
        let port = from + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if std::net::TcpListener::bind((bind, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {from} and {to} on {bind}")
}

/// The development API server's kubeconfig `text` pointed at `server` (same CA, same user).
pub fn with_server(text: &str, server: &str) -> Result<serde_json::Value> {
    let mut v: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| anyhow!("kubeconfig: {e}"))?;
    let clusters = v
        .get_mut("clusters")
        .and_then(|c| c.as_array_mut())
        .ok_or_else(|| anyhow!("kubeconfig has no clusters"))?;
    for c in clusters {
        c["cluster"]["server"] = serde_json::Value::String(server.to_string());
    }
    Ok(v)
}

/// Writes `text` to `path` with `mode`.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The containerised stack of one run.
#[derive(Debug, Clone)]
pub struct Stack {
    pub run: String,
    pub network: String,
    pub images: Images,
    pub namespace: String,
    pub created: Created,
    /// Files handed to the controller and gateway containers (`docker cp`).
    pub staging: PathBuf,
    /// Host address the gateway's port is published on (`0.0.0.0`: reachable from the
    /// docker bridge, as the runbook's `port-forward --address 0.0.0.0`).
    pub publish_address: String,
    /// Host port of the gateway.
    pub gateway_host_port: u16,
    /// Host port (on 127.0.0.1 only) of the gateway's metrics and health listener.
    pub gateway_metrics_host_port: u16,
}

/// One gateway container: its name within the run, network, published ports and what it
/// gets besides the common flags ([`Stack::start_gateway`]).
#[derive(Debug, Clone)]
pub struct GatewayContainer {
    /// The part of the container name after the run's (`gateway`, `gw-a`).
    pub component: String,
    /// The network it is created on.
    pub network: String,
    /// More networks it is connected to before it starts.
    pub connect: Vec<String>,
    /// Host address and port its device port is published on.
    pub publish_address: String,
    pub host_port: u16,
    /// Host port (on 127.0.0.1) of its metrics and health listener.
    pub metrics_host_port: u16,
    /// More `docker create` options (`--env`, `--network-alias`).
    pub opts: Vec<String>,
    /// More gateway flags (`--id`, `--advertise-url`, `--lease-duration`).
    pub args: Vec<String>,
}

impl Stack {
    pub fn container(&self, component: &str) -> String {
        format!("{}-{component}", self.run)
    }

    /// `docker network create` for the run.
    pub async fn create_network(&self) -> Result<String> {
        self.create_network_named(&self.network).await
    }

    /// `docker network create NAME` with the run's label (removed with the run).
    pub async fn create_network_named(&self, name: &str) -> Result<String> {
        self.created.network(name);
        let label = format!("{RUN_LABEL}={}", self.run);
        docker(&["network", "create", "--label", &label, name], None).await?;
        Ok(format!("$ docker network create --label {label} {name}"))
    }

    /// `docker run -d` of `image` with `args` after the image name, on the run's network;
    /// `create_only` stops after `docker create` (files are copied in before it starts).
    async fn run_container(
        &self,
        component: &str,
        opts: &[String],
        image: &str,
        args: &[String],
        create_only: bool,
    ) -> Result<String> {
        self.run_container_on(&self.network, component, opts, image, args, create_only)
            .await
    }

    /// [`Stack::run_container`] on `network`.
    async fn run_container_on(
        &self,
        network: &str,
        component: &str,
        opts: &[String],
        image: &str,
        args: &[String],
        create_only: bool,
    ) -> Result<String> {
        let name = self.container(component);
        self.created.container(&name);
        let label = format!("{RUN_LABEL}={}", self.run);
        let mut all: Vec<String> = vec![
            if create_only { "create" } else { "run" }.to_string(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            label,
            "--network".into(),
            network.to_string(),
        ];
        if !create_only {
            all.push("--detach".into());
        }
        all.extend(opts.iter().cloned());
        all.push(image.to_string());
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        docker(&refs, None).await?;
        Ok(format!("$ docker {}", all.join(" ")))
    }

    /// Starts the development API server and waits for its `ready` line; copies its
    /// kubeconfigs out: the admin one pointed at the published port (for this machine), the
    /// controller's and gateway's as written (the container name on the run's network).
    /// Returns what it did and the host URL of the API server.
    pub async fn start_apiserver(&self) -> Result<(Vec<String>, String)> {
        let name = self.container("apiserver");
        let url_inside = format!("https://{name}:{APISERVER_PORT}");
        let did = self
            .run_container(
                "apiserver",
                &["--publish".into(), format!("127.0.0.1::{APISERVER_PORT}")],
                &self.images.devcluster,
                &[
                    "serve".into(),
                    "--listen".into(),
                    format!("0.0.0.0:{APISERVER_PORT}"),
                    "--dir".into(),
                    "/tmp/state".into(),
                    "--namespace".into(),
                    self.namespace.clone(),
                    "--tls-san".into(),
                    name.clone(),
                    "--advertise-url".into(),
                    url_inside.clone(),
                ],
                false,
            )
            .await?;
        let mut lines = vec![did];
        let t = Instant::now();
        let ready = crate::wait::poll_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                let out = docker(&["logs", &name], None).await.ok()?;
                out.lines().any(|l| l.starts_with("ready ")).then_some(())
            },
        )
        .await;
        if ready.is_none() {
            let logs = docker(&["logs", "--tail", "20", &name], None)
                .await
                .unwrap_or_default();
            bail!("the development API server did not print `ready` within 30 s: {logs}");
        }
        let host = published(&name, APISERVER_PORT).await?;
        let host_url = format!("https://127.0.0.1:{}", host.port());
        lines.push(format!(
            "development API server ready after {} s: {url_inside} on the network {}, \
             published at {host_url}",
            crate::wait::secs(t.elapsed()),
            self.network
        ));
        std::fs::create_dir_all(&self.staging)?;
        for user in ["admin", "controller", "gateway"] {
            let file = format!("{user}.kubeconfig");
            let dest = self.staging.join(&file);
            docker(
                &[
                    "cp",
                    &format!("{name}:/tmp/state/{file}"),
                    &dest.display().to_string(),
                ],
                None,
            )
            .await?;
            if user == "admin" {
                let text = std::fs::read_to_string(&dest)?;
                let v = with_server(&text, &host_url)?;
                write_file(&dest, &serde_json::to_string_pretty(&v)?, 0o600)?;
            } else {
                // Read by the container's user 65532 after `docker cp` (files arrive owned by
                // root); the staging directory itself is private.
                let text = std::fs::read_to_string(&dest)?;
                write_file(&dest, &text, 0o644)?;
            }
        }
        lines.push(format!(
            "$ docker cp {name}:/tmp/state/<admin|controller|gateway>.kubeconfig {}/   (admin's \
             server rewritten to {host_url})",
            self.staging.display()
        ));
        Ok((lines, host_url))
    }

    /// `docker create` on `network`, `docker network connect` to each of `connect`, copies
    /// `files` (host path → path in the container), `docker start`.
    #[allow(clippy::too_many_arguments)]
    async fn start_with_files(
        &self,
        network: &str,
        connect: &[String],
        component: &str,
        opts: &[String],
        image: &str,
        args: &[String],
        files: &[(PathBuf, &str)],
    ) -> Result<Vec<String>> {
        let mut did = vec![
            self.run_container_on(network, component, opts, image, args, true)
                .await?,
        ];
        let name = self.container(component);
        for net in connect {
            docker(&["network", "connect", net, &name], None).await?;
            did.push(format!("$ docker network connect {net} {name}"));
        }
        for (from, to) in files {
            let from = from.display().to_string();
            let to = format!("{name}:{to}");
            docker(&["cp", &from, &to], None).await?;
            did.push(format!("$ docker cp {from} {to}"));
        }
        docker(&["start", &name], None).await?;
        did.push(format!("$ docker start {name}"));
        Ok(did)
    }

    /// Starts the controller and the gateway containers (each with its own ServiceAccount's
    /// kubeconfig) and waits until the gateway answers `/readyz` on its published port and
    /// the controller `/healthz`.
    pub async fn start_components(
        &self,
        master_key: &Path,
        timings: &Timings,
    ) -> Result<Vec<String>> {
        let mut did = self.start_controller().await?;
        did.extend(
            self.start_gateway(
                &GatewayContainer {
                    component: "gateway".into(),
                    network: self.network.clone(),
                    connect: Vec::new(),
                    publish_address: self.publish_address.clone(),
                    host_port: self.gateway_host_port,
                    metrics_host_port: self.gateway_metrics_host_port,
                    opts: Vec::new(),
                    args: Vec::new(),
                },
                master_key,
                timings,
            )
            .await?,
        );
        let health = published(&self.container("controller"), CONTROLLER_HEALTH_PORT).await?;
        did.push(
            self.wait_http_ok("gateway", &self.gateway_metrics_local_url(), "/readyz")
                .await?,
        );
        did.push(
            self.wait_http_ok("controller", &format!("http://{health}"), "/healthz")
                .await?,
        );
        Ok(did)
    }

    /// Starts the controller container on the run's network with its ServiceAccount's
    /// kubeconfig (health port published on 127.0.0.1).
    pub async fn start_controller(&self) -> Result<Vec<String>> {
        let kc = "/home/nonroot/kubeconfig";
        self.start_with_files(
            &self.network,
            &[],
            "controller",
            &[
                "--publish".into(),
                format!("127.0.0.1::{CONTROLLER_HEALTH_PORT}"),
            ],
            &self.images.controller,
            &[
                "--kubeconfig".into(),
                kc.into(),
                "--namespace".into(),
                self.namespace.clone(),
                "--health-addr".into(),
                format!("0.0.0.0:{CONTROLLER_HEALTH_PORT}"),
                "--metrics-addr".into(),
                "0.0.0.0:8080".into(),
            ],
            &[(self.staging.join("controller.kubeconfig"), kc)],
        )
        .await
    }

    /// Starts one gateway container with its ServiceAccount's kubeconfig and a copy of the
    /// master key ring (staged readable for the container's user, removed again at once).
    pub async fn start_gateway(
        &self,
        gw: &GatewayContainer,
        master_key: &Path,
        timings: &Timings,
    ) -> Result<Vec<String>> {
        let kc = "/home/nonroot/kubeconfig";
        let staged_key = self.staging.join(format!("{}-master.key", gw.component));
        let key = std::fs::read_to_string(master_key)
            .with_context(|| format!("cannot read {}", master_key.display()))?;
        write_file(&staged_key, &key, 0o644)?;
        let mk = "/home/nonroot/master.key";
        let mut opts = vec![
            "--publish".into(),
            format!("{}:{}:{GATEWAY_PORT}", gw.publish_address, gw.host_port),
            "--publish".into(),
            format!("127.0.0.1:{}:{GATEWAY_METRICS_PORT}", gw.metrics_host_port),
        ];
        opts.extend(gw.opts.iter().cloned());
        let mut args: Vec<String> = vec![
            "--addr".into(),
            format!("0.0.0.0:{GATEWAY_PORT}"),
            "--metrics-addr".into(),
            format!("0.0.0.0:{GATEWAY_METRICS_PORT}"),
            "--kubeconfig".into(),
            kc.into(),
            "--namespace".into(),
            self.namespace.clone(),
            "--master-key-file".into(),
            mk.into(),
            "--heartbeat-interval".into(),
            flag_duration(timings.heartbeat),
            "--stale-after".into(),
            flag_duration(timings.stale),
        ];
        args.extend(gw.args.iter().cloned());
        let started = self
            .start_with_files(
                &gw.network,
                &gw.connect,
                &gw.component,
                &opts,
                &self.images.gateway,
                &args,
                &[
                    (self.staging.join("gateway.kubeconfig"), kc),
                    (staged_key.clone(), mk),
                ],
            )
            .await;
        let _ = std::fs::remove_file(&staged_key);
        started
    }

    /// Waits up to 30 s until `url` + `path` answers 200; the error carries the last lines of
    /// the component's container log.
    pub async fn wait_http_ok(&self, component: &str, url: &str, path: &str) -> Result<String> {
        let http = Http::new(url);
        let t = Instant::now();
        let ready =
            crate::wait::poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
                let http = http.clone();
                async move {
                    let r = http.get(path, &[], Duration::from_secs(2)).await.ok()?;
                    (r.status == 200).then_some(())
                }
            })
            .await;
        if ready.is_none() {
            let c = self.container(component);
            let logs = docker(&["logs", "--tail", "20", &c], None)
                .await
                .unwrap_or_else(|e| format!("{e:#}"));
            bail!(
                "{component} not answering 200 on {url}{path} within 30 s; docker logs {c}:\n{logs}"
            );
        }
        Ok(format!(
            "{component} {url}{path} = 200 after {} s",
            crate::wait::secs(t.elapsed())
        ))
    }

    /// The gateway as this machine reaches it.
    pub fn gateway_local_url(&self) -> String {
        let host = match self.publish_address.as_str() {
            "0.0.0.0" | "" => "127.0.0.1",
            "::" | "[::]" => "[::1]",
            a => a,
        };
        format!("http://{host}:{}", self.gateway_host_port)
    }

    /// The gateway's metrics and health listener as this machine reaches it.
    pub fn gateway_metrics_local_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_metrics_host_port)
    }

    /// The gateway as the compose agents reach it (runbook step 10).
    pub fn gateway_agent_url(&self) -> String {
        format!("http://host.docker.internal:{}", self.gateway_host_port)
    }
}

/// `keys generate` once and `keys derive` per device, run from the gateway image with no
/// network; the master key ring goes to `dir/master.key`, each device key to
/// `dir/<device>.env` as `APOLLO_DEVICE_KEY=...` (mode 0600), the env files compose reads.
pub async fn provision_keys(
    gateway_image: &str,
    run: &str,
    dir: &Path,
    devices: &[String],
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let label = format!("{RUN_LABEL}={run}");
    let base = [
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        "--label",
        label.as_str(),
        gateway_image,
        "keys",
    ];
    let mut gen_args = base.to_vec();
    gen_args.push("generate");
    let master = docker(&gen_args, None).await?;
    let master_file = dir.join("master.key");
    write_file(&master_file, &format!("{master}\n"), 0o600)?;
    let mut did = vec![format!(
        "$ docker run --rm --network none {gateway_image} keys generate > {}   (mode 0600)",
        master_file.display()
    )];
    for d in devices {
        let mut args = base.to_vec();
        args.extend([
            "derive",
            "--master-key-file",
            "/dev/stdin",
            "--device",
            d.as_str(),
        ]);
        let key = docker(&args, Some(&format!("{master}\n"))).await?;
        let env = dir.join(format!("{d}.env"));
        write_file(&env, &format!("APOLLO_DEVICE_KEY={key}\n"), 0o600)?;
        did.push(format!(
            "$ docker run --rm -i --network none {gateway_image} keys derive --master-key-file \
             /dev/stdin --device {d} < master.key   → {} (APOLLO_DEVICE_KEY=…, mode 0600, never \
             committed)",
            env.display()
        ));
    }
    Ok(did)
}

/// What step 2 starts in `containers` mode.
#[derive(Debug, Clone)]
pub struct Components {
    pub stack: Stack,
    /// The master key ring on this machine (copied into the gateway container).
    pub master_key: PathBuf,
}

/// A private directory for the run's keys, compose file and staged files (removed at the
/// end with everything else).
pub(crate) fn private_dir(run: &str) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = std::env::temp_dir().join(run);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// `apollo-demo containers`.
pub async fn demo(
    args: &crate::cli::ContainersArgs,
    common: &crate::cli::CommonFlags,
    shared: &crate::app::Shared,
) -> Result<()> {
    use crate::agents::Agents;
    use crate::app::{devices, header, kubectl_bin, run_steps};
    let out = &shared.out;
    let timings = common.timings()?.for_compose_agents();
    let Prerequisites {
        engine,
        cli,
        repo,
        images,
        image_lines,
    } = Prerequisites::check(common, &args.image_tag).await?;
    let ns = common.namespace.clone();
    let run = run_name();
    let gateway_host_port = match args.gateway_port {
        Some(p) => p,
        None => free_host_port(&args.publish_address)?,
    };
    let gateway_metrics_host_port = free_host_port("127.0.0.1")?;
    let mut lines = vec![
        format!(
            "mode: containers (docker engine {engine}, {}), namespace {ns}, run {run}",
            cli.display()
        ),
        format!(
            "timings: heartbeat {}, stale window {}, \"within seconds\" = {}{}",
            flag_duration(timings.heartbeat),
            flag_duration(timings.stale),
            flag_duration(timings.within),
            if common.fast {
                " (--fast)"
            } else {
                " (runbook)"
            }
        ),
        format!("logs: {}", shared.logs_dir.display()),
        format!("repository: {}", repo.display()),
    ];
    lines.extend(image_lines);
    header(out, &lines);

    // From here on everything is registered for removal before it is created.
    shared.docker.set_run(&run, &shared.logs_dir);
    let dir = private_dir(&run)?;
    shared.docker.temp_dir(&dir);
    let stack = Stack {
        run: run.clone(),
        network: run.clone(),
        images: images.clone(),
        namespace: ns.clone(),
        created: shared.docker.clone(),
        staging: dir.join("staging"),
        publish_address: args.publish_address.clone(),
        gateway_host_port,
        gateway_metrics_host_port,
    };
    let mut setup = vec![stack.create_network().await?];
    let (did, api_url) = stack.start_apiserver().await?;
    setup.extend(did);
    let keys_dir = dir.join("keys");
    let devs = devices();
    setup.extend(provision_keys(&images.gateway, &run, &keys_dir, &devs).await?);
    let compose_args = crate::compose::ComposeArgs {
        devices: devs.clone(),
        gateway_url: stack.gateway_agent_url(),
        image: images.agent.clone(),
        key_dir: "./keys".into(),
    };
    let doc = crate::compose::agents_compose(&compose_args)?;
    let compose_file = dir.join("docker-compose.yaml");
    crate::compose::write_compose_file(&compose_file, &doc)?;
    // A copy beside the logs (it holds no secret: the keys stay in the env files).
    let _ = std::fs::copy(&compose_file, shared.logs_dir.join("docker-compose.yaml"));
    setup.push(format!(
        "wrote {} = `{}` (compose.nix's output; agents on the default bridge reach the gateway \
         at {} = its port published on {}:{gateway_host_port})",
        compose_file.display(),
        crate::compose::nix_command(&compose_args),
        stack.gateway_agent_url(),
        stack.publish_address,
    ));
    let compose = ComposeAgents {
        compose_file: Some(compose_file),
        project: Some(run.clone()),
        cli,
    };
    shared.docker.compose(&compose);
    let admin = stack.staging.join("admin.kubeconfig");
    setup.push(format!("export KUBECONFIG={}", admin.display()));
    for l in &setup {
        out.line(&format!("  setup    {l}"));
    }
    let kube = crate::cluster::Kube::connect(&admin, &ns).await?;
    let mut demo = crate::steps::Demo::new(
        shared,
        kube,
        crate::kubectl::Kubectl::new(kubectl_bin(common.no_kubectl), &admin, &ns),
        Http::new(&stack.gateway_local_url()),
        Http::new(&stack.gateway_metrics_local_url()),
        Agents::Compose(compose),
        timings,
        repo,
        devs,
        crate::steps::Identities::dev(&ns),
        Some(api_url),
        None,
        keys_dir.clone(),
    );
    demo.containers = Some(Components {
        stack,
        master_key: keys_dir.join("master.key"),
    });
    run_steps(shared, &mut demo, common.pause).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_server_is_rewritten_and_nothing_else() {
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: apollo-devcluster\n  cluster:\n    server: https://apollo-demo-1-apiserver:6443\n    certificate-authority-data: Q0E=\nusers:\n- name: admin\n  user:\n    token: abc\ncontexts:\n- name: admin@apollo-devcluster\n  context:\n    cluster: apollo-devcluster\n    user: admin\ncurrent-context: admin@apollo-devcluster\n";
        let v = with_server(text, "https://127.0.0.1:32768").unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:32768"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["users"][0]["user"]["token"], "abc");
        assert!(with_server("kind: Config\n", "https://x").is_err());
    }

    #[test]
    fn run_names_are_unique_per_process_and_valid_compose_projects() {
        let a = run_name();
        assert!(a.starts_with(&format!("apollo-demo-{}-", std::process::id())));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
    }

    #[test]
    fn gateway_urls_for_this_machine_and_for_the_agents() {
        let s = Stack {
            run: "r".into(),
            network: "r".into(),
            images: Images::tagged("dev"),
            namespace: "default".into(),
            created: Created::default(),
            staging: PathBuf::from("/tmp/x"),
            publish_address: "0.0.0.0".into(),
            gateway_host_port: 18080,
            gateway_metrics_host_port: 19090,
        };
        assert_eq!(s.gateway_local_url(), "http://127.0.0.1:18080");
        assert_eq!(s.gateway_agent_url(), "http://host.docker.internal:18080");
        assert_eq!(s.container("gateway"), "r-gateway");
        let s = Stack {
            publish_address: "172.17.0.1".into(),
            ..s
        };
        assert_eq!(s.gateway_local_url(), "http://172.17.0.1:18080");
    }
}
