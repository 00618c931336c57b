//! Setting the stage for each mode (binaries, API server, keys, identities) and running the
//! nine steps in order.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::agents::{Agents, ComposeAgents, LocalAgents};
use crate::cli::{ClusterArgs, CommonFlags, LocalArgs, Timings, flag_duration};
use crate::cluster::{Kube, server_url};
use crate::httpc::Http;
use crate::kubectl::{Kubectl, is_executable, which};
use crate::procs::{Spec, Supervisor};
use crate::report::{Out, Step, StepResult, TITLES, summary};
use crate::steps::{self, Demo, Identities, LocalStack};

/// The project's binaries the local mode runs.
pub const BINARIES: [&str; 4] = [
    "apollo-devcluster",
    "apollo-controller",
    "apollo-gateway",
    "apollo-agent",
];

/// State shared with the signal handler: results so far, for the report on Ctrl-C.
#[derive(Clone, Debug)]
pub struct Shared {
    pub out: Out,
    pub sup: Supervisor,
    pub logs_dir: PathBuf,
    pub results: Arc<Mutex<Vec<StepResult>>>,
    pub started: Instant,
    /// What `containers` mode created in docker (removed when the demo ends).
    pub docker: crate::containers::Created,
    /// The steps of this run: the runbook's ([`TITLES`]) or a scenario's.
    pub titles: &'static [&'static str],
}

impl Shared {
    /// State of a runbook run.
    pub fn new(logs_dir: &Path) -> Result<Shared> {
        Shared::with_titles(logs_dir, &TITLES)
    }

    /// State of a run whose steps are `titles`.
    pub fn with_titles(logs_dir: &Path, titles: &'static [&'static str]) -> Result<Shared> {
        std::fs::create_dir_all(logs_dir)
            .with_context(|| format!("cannot create logs directory {}", logs_dir.display()))?;
        Ok(Shared {
            out: Out::new(Some(&logs_dir.join("demo.log"))),
            sup: Supervisor::new(logs_dir),
            logs_dir: logs_dir.to_path_buf(),
            results: Arc::default(),
            started: Instant::now(),
            docker: crate::containers::Created::default(),
            titles,
        })
    }

    pub(crate) fn push(&self, r: StepResult) {
        if let Ok(mut v) = self.results.lock() {
            v.push(r);
        }
    }

    /// Results of every step; steps that did not run are FAIL with `missing`.
    pub fn all_results(&self, missing: &str) -> Vec<StepResult> {
        let mut v = self.results.lock().map(|v| v.clone()).unwrap_or_default();
        for n in v.len() + 1..=self.titles.len() {
            v.push(StepResult::not_run_of(n, self.titles, missing));
        }
        v
    }

    /// Prints the summary; returns whether every step passed.
    pub fn finish(&self, missing: &str) -> bool {
        let results = self.all_results(missing);
        summary(&self.out, &results, &self.logs_dir, self.started.elapsed());
        results.iter().all(StepResult::passed)
    }
}

/// The repository root: `--repo`, else the first ancestor of the current directory (then of
/// this executable) holding `k8s/crds`.
pub fn find_repo(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.join("k8s/crds").is_dir() {
            return Ok(p.to_path_buf());
        }
        bail!("{} has no k8s/crds directory", p.display());
    }
    let mut starts = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            if dir.join("k8s/crds").is_dir() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    bail!(
        "cannot find the repository (a directory with k8s/crds); run from the repository or pass --repo"
    )
}

/// Located binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    pub devcluster: PathBuf,
    pub controller: PathBuf,
    pub gateway: PathBuf,
    pub agent: PathBuf,
}

/// Finds each binary: only in `bin_dir` when given; otherwise the most recently built of
/// `<repo>/bin`, `<repo>/target/debug`, `<repo>/target/release`, then `PATH`.
pub fn locate_bins(bin_dir: Option<&Path>, repo: &Path, need_devcluster: bool) -> Result<Bins> {
    let dirs: Vec<PathBuf> = match bin_dir {
        Some(d) => vec![d.to_path_buf()],
        None => vec![
            repo.join("bin"),
            repo.join("target/debug"),
            repo.join("target/release"),
        ],
    };
    let mut missing = Vec::new();
    let mut found = Vec::new();
    for name in BINARIES {
        let best = dirs
            .iter()
            .map(|d| d.join(name))
            .filter(|p| is_executable(p))
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let best = best.or_else(|| if bin_dir.is_none() { which(name) } else { None });
        match best {
            Some(p) => found.push(p),
            None if name == "apollo-devcluster" && !need_devcluster => {
                found.push(PathBuf::from(name))
            }
            None => {
                missing.push(name);
                found.push(PathBuf::new());
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing binaries {} in {}; build them with `cargo build -p {}`",
            missing.join(", "),
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            missing.join(" -p ")
        );
    }
    Ok(Bins {
        devcluster: found[0].clone(),
        controller: found[1].clone(),
        gateway: found[2].clone(),
        agent: found[3].clone(),
    })
}

/// A free loopback port (bound then released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Runs `program args` to completion and returns its stdout (trimmed); stderr in the error.
pub(crate) async fn capture(program: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for k in crate::procs::scrubbed_env_keys() {
        cmd.env_remove(k);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| anyhow!("{} timed out", program.display()))?
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// `keys generate` once, `keys derive` per device; key files readable by the owner only.
async fn provision_keys(gateway: &Path, dir: &Path, devices: &[String]) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let master = capture(gateway, &["keys", "generate"]).await?;
    let master_file = dir.join("master.key");
    write_secret(&master_file, &master)?;
    let mf = master_file.display().to_string();
    let mut did = vec![format!(
        "$ apollo-gateway keys generate > {mf}   (master key ring, mode 0600)"
    )];
    for d in devices {
        let key = capture(
            gateway,
            &["keys", "derive", "--master-key-file", &mf, "--device", d],
        )
        .await?;
        let path = crate::agents::key_path(dir, d);
        write_secret(&path, &key)?;
        did.push(format!(
            "$ apollo-gateway keys derive --master-key-file {mf} --device {d} > {}",
            path.display()
        ));
    }
    Ok(did)
}

pub fn devices() -> Vec<String> {
    vec!["tor1-01".to_string(), "tor1-02".to_string()]
}

pub fn kubectl_bin(disabled: bool) -> Option<PathBuf> {
    if disabled { None } else { which("kubectl") }
}

/// Runs the steps one after another, recording each result.
pub async fn run_steps(shared: &Shared, demo: &mut Demo, pause: bool) {
    // Enter presses, read on a thread of their own (an interactive read would hold up a
    // runtime worker); at end of input the sender is gone and the steps run on unpaused.
    let (tx, mut enter) = tokio::sync::mpsc::unbounded_channel::<()>();
    if pause {
        std::thread::spawn(move || {
            for _ in std::io::stdin().lines() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    } else {
        drop(tx);
    }
    for n in 1..=TITLES.len() {
        if pause {
            // Presenter mode: the audience reads the last step while the presenter talks.
            shared.out.line(&format!(
                "\n  ⏎  press Enter for step {n}/{}: {}",
                TITLES.len(),
                TITLES[n - 1]
            ));
            let _ = enter.recv().await;
        }
        let step = Step::begin(n, &shared.out);
        let r = steps::run(n, demo, &step).await.map_err(|e| {
            let mut reason = concise(&e);
            let exited = demo.sup.exited();
            if !exited.is_empty() {
                reason.push_str(&format!(" [{}]", exited.join("; ")));
            }
            reason
        });
        shared.push(step.finish(r));
    }
}

/// An error chain on one line, with Kubernetes API errors reduced to their message and code.
pub fn concise(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        if let Some(kube::Error::Api(s)) = cause.downcast_ref::<kube::Error>() {
            parts.push(format!("{} ({})", s.message, s.code));
            break;
        }
        let text = cause.to_string();
        if parts.last().is_none_or(|p| !p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

pub fn header(out: &Out, lines: &[String]) {
    out.line(&format!("━━ Apollo DeviceProcess demo {}", "━".repeat(48)));
    for l in lines {
        out.line(&format!("  {l}"));
    }
}

/// `apollo-demo local`.
pub async fn local(args: &LocalArgs, common: &CommonFlags, shared: &Shared) -> Result<()> {
    let out = &shared.out;
    let timings = common.timings()?;
    let existing = args
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("APOLLO_DEMO_KUBECONFIG").map(PathBuf::from));
    let repo = find_repo(common.repo.as_deref())?;
    let bins = locate_bins(args.bin_dir.as_deref(), &repo, existing.is_none())?;
    let ns = common.namespace.clone();
    header(
        out,
        &[
            format!(
                "mode: local processes ({}), namespace {ns}",
                match &existing {
                    Some(k) => format!("existing cluster of {}", k.display()),
                    None => "development API server".to_string(),
                }
            ),
            format!(
                "timings: heartbeat {}, stale window {}, \"within seconds\" = {}{}",
                flag_duration(timings.heartbeat),
                flag_duration(timings.stale),
                flag_duration(timings.within),
                if timings.fast {
                    " (--fast)"
                } else {
                    " (runbook)"
                }
            ),
            format!("logs: {}", shared.logs_dir.display()),
            format!("repository: {}", repo.display()),
            format!(
                "binaries: {}",
                [
                    &bins.devcluster,
                    &bins.controller,
                    &bins.gateway,
                    &bins.agent
                ]
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
            ),
        ],
    );

    let state = shared.logs_dir.join("state");
    std::fs::create_dir_all(&state)?;
    let mut setup = Vec::new();
    let (admin, mut controller_kc, mut gateway_kc, api_url, mut ids) = match &existing {
        Some(kc) => {
            setup.push(format!("using the existing cluster of {}", kc.display()));
            let url = server_url(kc).ok();
            (
                kc.clone(),
                kc.clone(),
                kc.clone(),
                url,
                Identities::default(),
            )
        }
        None => {
            let spec = Spec::new("devcluster", &bins.devcluster)
                .arg("serve")
                .arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--dir")
                .arg(state.display().to_string())
                .arg("--namespace")
                .arg(ns.clone());
            let (pid, url) = shared
                .sup
                .start_until_line(&spec, "ready ", Duration::from_secs(30))
                .await?;
            setup.push(format!(
                "started the development API server (pid {pid}) at {url}: {}",
                spec.display()
            ));
            let kc = |u: &str| state.join(format!("{u}.kubeconfig"));
            (
                kc("admin"),
                kc("controller"),
                kc("gateway"),
                Some(url),
                Identities::dev(&ns),
            )
        }
    };
    let mut controller_identity = format!(
        "ServiceAccount apollo-deviceprocess-controller ({})",
        controller_kc.display()
    );
    let mut gateway_identity = format!(
        "ServiceAccount apollo-deviceprocess-gateway ({})",
        gateway_kc.display()
    );
    let kube = Kube::connect(&admin, &ns).await?;
    if existing.is_some() {
        // Own RBAC identities on any cluster: the ServiceAccounts of k8s/rbac/ (applied in step
        // 1, so applied here first) with TokenRequest tokens; else the given kubeconfig.
        let mut owned = true;
        let rbac = repo.join("k8s/rbac");
        let crds = kube.crd_dir(&repo).await?;
        let applied = async {
            kube.apply_path(&crds).await?;
            kube.apply_path(&rbac).await
        }
        .await;
        for (sa, file, ident, path) in [
            (
                "apollo-deviceprocess-controller",
                "controller.kubeconfig",
                &mut controller_identity,
                &mut controller_kc,
            ),
            (
                "apollo-deviceprocess-gateway",
                "gateway.kubeconfig",
                &mut gateway_identity,
                &mut gateway_kc,
            ),
        ] {
            let dest = state.join(file);
            let r = match &applied {
                Ok(_) => kube.service_account_kubeconfig(sa, &dest).await,
                Err(e) => Err(anyhow!("{}", concise(e))),
            };
            match r {
                Ok(user) => {
                    *ident = format!("{user} (TokenRequest, {})", dest.display());
                    *path = dest;
                }
                Err(e) => {
                    owned = false;
                    *ident = format!("the kubeconfig {}", admin.display());
                    setup.push(format!(
                        "note: cannot mint a token for ServiceAccount {sa} ({}): it runs with {}",
                        concise(&e),
                        admin.display()
                    ));
                }
            }
        }
        if owned {
            ids.controller = Some(format!(
                "system:serviceaccount:{ns}:apollo-deviceprocess-controller"
            ));
            ids.gateway = Some(format!(
                "system:serviceaccount:{ns}:apollo-deviceprocess-gateway"
            ));
        }
    }
    let keys_dir = shared.logs_dir.join("keys");
    let devs = devices();
    setup.extend(provision_keys(&bins.gateway, &keys_dir, &devs).await?);
    let gateway_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let gateway_url = format!("http://{gateway_addr}");
    let gateway_metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let controller_metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    setup.push(format!("export KUBECONFIG={}", admin.display()));
    for l in &setup {
        out.line(&format!("  setup    {l}"));
    }

    let agents = Agents::Local(LocalAgents {
        sup: shared.sup.clone(),
        bin: bins.agent.clone(),
        gateway_url: gateway_url.clone(),
        keys_dir: keys_dir.clone(),
        long_poll: timings.long_poll.map(flag_duration),
    });
    let local = LocalStack {
        controller_identity,
        gateway_identity,
        controller_bin: bins.controller.clone(),
        gateway_bin: bins.gateway.clone(),
        controller_kubeconfig: controller_kc,
        gateway_kubeconfig: gateway_kc,
        gateway_addr,
        gateway_metrics_addr,
        controller_metrics_addr,
        master_key: keys_dir.join("master.key"),
    };
    let mut demo = Demo::new(
        shared,
        kube,
        Kubectl::new(kubectl_bin(common.no_kubectl), &admin, &ns),
        Http::new(&gateway_url),
        Http::new(&format!("http://{gateway_metrics_addr}")),
        agents,
        timings,
        repo,
        devs,
        ids,
        api_url,
        Some(local),
        keys_dir,
    );
    run_steps(shared, &mut demo, common.pause).await;
    if let Some(n) = args.rollout_devices {
        crate::rollout::run_step(shared, &mut demo, TITLES.len() + 1, n).await;
    }
    save_scrapes(shared, &demo).await;
    Ok(())
}

/// Saves the last `/metrics` of the controller and of the gateway into the logs folder
/// (`controller.metrics`, `gateway.metrics`): what Prometheus would have scraped, for a look
/// after the run (the fast demo's test checks k8s/monitoring against them). A component that
/// no longer answers is noted, not an error: the steps have already been judged.
async fn save_scrapes(shared: &Shared, demo: &Demo) {
    let Some(local) = &demo.local else { return };
    for (name, addr) in [
        ("controller", local.controller_metrics_addr),
        ("gateway", local.gateway_metrics_addr),
    ] {
        let file = shared.logs_dir.join(format!("{name}.metrics"));
        let http = Http::new(&format!("http://{addr}"));
        let saved = match http.get("/metrics", &[], Duration::from_secs(5)).await {
            Ok(r) if r.status == 200 => std::fs::write(&file, &r.body).map_err(anyhow::Error::from),
            Ok(r) => Err(anyhow!("GET /metrics answered {}", r.status)),
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            shared.out.line(&format!(
                "  note     cannot save the {name}'s metrics to {}: {}",
                file.display(),
                concise(&e)
            ));
        }
    }
}

/// `apollo-demo cluster`.
pub async fn cluster(args: &ClusterArgs, common: &CommonFlags, shared: &Shared) -> Result<()> {
    let out = &shared.out;
    let timings = common.timings()?.for_compose_agents();
    if args.agents != "compose" {
        bail!("--agents {:?} is not supported: use compose", args.agents);
    }
    let repo = find_repo(common.repo.as_deref())?;
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
        .ok_or_else(|| anyhow!("no kubeconfig: pass --kubeconfig"))?;
    let ns = common.namespace.clone();
    header(
        out,
        &[
            format!(
                "mode: cluster of {}, namespace {ns}, gateway {}, agents via docker compose",
                kubeconfig.display(),
                args.gateway_url
            ),
            format!(
                "timings: heartbeat {}, stale window {} (must match the deployed gateway)",
                flag_duration(timings.heartbeat),
                flag_duration(timings.stale)
            ),
            format!("logs: {}", shared.logs_dir.display()),
        ],
    );
    let kube = Kube::connect(&kubeconfig, &ns).await?;
    let api_url = server_url(&kubeconfig).ok();
    let agents = Agents::Compose(ComposeAgents {
        compose_file: args.compose_file.clone(),
        project: args.compose_project.clone(),
        cli: crate::compose::ComposeCli::detect().await?,
    });
    let keys_dir = repo.join("keys");
    let mut demo = Demo::new(
        shared,
        kube,
        Kubectl::new(kubectl_bin(common.no_kubectl), &kubeconfig, &ns),
        Http::new(&args.gateway_url),
        Http::new(&args.gateway_metrics_url),
        agents,
        timings,
        repo,
        devices(),
        Identities::default(),
        api_url,
        None,
        keys_dir,
    );
    run_steps(shared, &mut demo, common.pause).await;
    Ok(())
}

/// Starts the controller and gateway of the local mode with their own kubeconfigs; waits for
/// the gateway's `/readyz` and the controller's `/readyz`.
pub async fn start_components(
    sup: &Supervisor,
    local: &LocalStack,
    ns: &str,
    timings: &Timings,
) -> Result<Vec<String>> {
    let mut did = Vec::new();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let metrics = local.controller_metrics_addr;
    let controller = Spec::new("controller", &local.controller_bin)
        .arg("--kubeconfig")
        .arg(local.controller_kubeconfig.display().to_string())
        .arg("--namespace")
        .arg(ns)
        .arg("--health-addr")
        .arg(health.to_string())
        .arg("--metrics-addr")
        .arg(metrics.to_string());
    let pid = sup.start(&controller).await?;
    did.push(format!(
        "started the controller (pid {pid}) as {}: {}",
        local.controller_identity,
        controller.display()
    ));
    let gateway = Spec::new("gateway", &local.gateway_bin)
        .arg("--addr")
        .arg(local.gateway_addr.to_string())
        .arg("--metrics-addr")
        .arg(local.gateway_metrics_addr.to_string())
        .arg("--kubeconfig")
        .arg(local.gateway_kubeconfig.display().to_string())
        .arg("--namespace")
        .arg(ns)
        .arg("--master-key-file")
        .arg(local.master_key.display().to_string())
        .arg("--heartbeat-interval")
        .arg(flag_duration(timings.heartbeat))
        .arg("--stale-after")
        .arg(flag_duration(timings.stale));
    let pid = sup.start(&gateway).await?;
    did.push(format!(
        "started the gateway (pid {pid}) as {}: {}",
        local.gateway_identity,
        gateway.display()
    ));
    // The gateway must be ready (cache synced) before agents are told to use it; the
    // controller must be alive (its readiness is reported, the fan-out check is the proof).
    for (name, url, path, required) in [
        (
            "gateway",
            format!("http://{}", local.gateway_metrics_addr),
            "/readyz",
            true,
        ),
        ("controller", format!("http://{health}"), "/healthz", true),
        ("controller", format!("http://{health}"), "/readyz", false),
    ] {
        let http = Http::new(&url);
        let t = Instant::now();
        let deadline = if required {
            Duration::from_secs(20)
        } else {
            Duration::from_secs(2)
        };
        let ready = crate::wait::poll_until(deadline, timings.poll, || {
            let http = http.clone();
            async move {
                let r = http.get(path, &[], Duration::from_secs(2)).await.ok()?;
                (r.status == 200).then_some(())
            }
        })
        .await;
        match ready {
            Some(()) => did.push(format!(
                "{name} {url}{path} = 200 after {} s",
                crate::wait::secs(t.elapsed())
            )),
            None if required => {
                let exited = sup.exited();
                bail!(
                    "{name} not answering 200 on {url}{path} within {}s{}; see {}",
                    deadline.as_secs(),
                    if exited.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", exited.join("; "))
                    },
                    sup.log_path(name).display()
                );
            }
            None => did.push(format!(
                "note: {name} {url}{path} not 200 after {} s (carrying on: the fan-out below is the check)",
                deadline.as_secs()
            )),
        }
    }
    Ok(did)
}
