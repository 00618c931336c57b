//! Gateway footprint: memory per long-polling device and CPU per 1,000 heartbeats, measured on
//! gateway *processes* (release binaries given on the command line, so an old and a new build
//! can be compared in the same run, alternating).
//!
//! ```text
//! cargo build --release -p apollo-gateway     # the binary under test
//! cargo run -p apollo-gateway --example footprint -- \
//!     --devices 6000 --heartbeats 24000 --rounds 2 --idle OLD_BINARY target/release/apollo-gateway
//! ```
//!
//! Per gateway binary and round:
//! 1. a gateway on an empty namespace: the baseline process (RSS once ready);
//! 2. the gateway under test on the namespace holding one DeviceProcess per device: RSS once
//!    ready (the desired, status and liveness state of the fleet);
//! 3. every device: `GET` (200, learns its ETag) and a first report over a few shared
//!    keep-alive connections; the status writes that follow are waited out;
//! 4. heartbeats (reports that change nothing) from 16 keep-alive connections, round robin
//!    over the devices: gateway CPU (utime + stime from `/proc/PID/stat`) per 1,000;
//! 5. one long poll per device, each on its own connection (`If-None-Match` = current ETag,
//!    `wait=60s`), held: RSS once `long_polls_held` says all are held;
//! 6. with `--idle`, one more idle keep-alive connection per device (an agent's heartbeat
//!    connection between two heartbeats): RSS again.
//!
//! `--rate R` paces the heartbeats of step 4 at R per second in all (as a fleet's heartbeats
//! arrive, each on its own; unpaced, the gateway finds many requests per wake-up and the
//! per-request figure is lower).
//!
//! `--cpu-only` stops after step 4 (no long polls, no descriptor-hungry steps): the cheap way to
//! measure report handling CPU alone, e.g. `--devices 2000 --heartbeats 24000 --rounds 3
//! --cpu-only OLD NEW`; the summary prints each binary's figures over the rounds. `--wrap CMD`
//! starts each gateway under `CMD` (split on spaces, e.g. `--wrap "valgrind --tool=callgrind
//! --callgrind-out-file=/tmp/cg.%p"` for an instruction profile; the wrapper must run the gateway
//! in its own process, as valgrind does: one that forks it, like `perf record`, leaves the
//! gateway running when it is stopped); `--before-heartbeats CMD` and
//! `--after-heartbeats CMD` run `CMD PID` around the heartbeats (with callgrind
//! `"callgrind_control -z"` and `"callgrind_control -d"`: a profile of the heartbeats alone).
//!
//! Memory per device, everything included = (RSS at 5 − baseline process) ÷ devices. The kernel
//! memory of the sockets is not in the RSS; `/proc/net/sockstat` (`mem`, pages) is printed
//! alongside.
//!
//! The descriptor limit is raised to what the run needs (the program runs as root on the
//! benchmark machine; the gateway inherits it). Connections come from 127.0.X.2.. (one source
//! address per 20,000; X from the process id and the round, so TIME-WAIT sockets of an
//! earlier run do not collide) so the ephemeral port range is no limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apollo_api::{DeviceProcess, DeviceProcessSpec};
use apollo_devcluster::{DevCluster, Options, User};
use apollo_protocol::auth::{generate_nonce, sign_request_v2, unix_now};
use apollo_protocol::keys::{DeviceKey, MasterKey};
use apollo_protocol::wire::{ObservedProcess, Report};
use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

const NAMESPACE: &str = "default";
const EMPTY_NAMESPACE: &str = "empty";

struct Args {
    devices: usize,
    heartbeats: usize,
    rounds: usize,
    idle: bool,
    cpu_only: bool,
    /// Heartbeats per second over all connections (`None`: each connection as fast as the
    /// gateway answers).
    rate: Option<f64>,
    wrap: Vec<String>,
    /// Commands run with the gateway's pid appended right before and after the heartbeats.
    before_heartbeats: Vec<String>,
    after_heartbeats: Vec<String>,
    gateways: Vec<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        devices: 10_000,
        heartbeats: 20_000,
        rounds: 1,
        idle: false,
        cpu_only: false,
        rate: None,
        wrap: Vec::new(),
        before_heartbeats: Vec::new(),
        after_heartbeats: Vec::new(),
        gateways: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{what} needs a value"))?
                .parse()
                .with_context(|| format!("{what}: not a number"))
        };
        match arg.as_str() {
            "--devices" => a.devices = num("--devices")?,
            "--heartbeats" => a.heartbeats = num("--heartbeats")?,
            "--rounds" => a.rounds = num("--rounds")?,
            "--idle" => a.idle = true,
            "--cpu-only" => a.cpu_only = true,
            "--rate" => a.rate = Some(num("--rate")? as f64),
            "--wrap" | "--before-heartbeats" | "--after-heartbeats" => {
                let words = it
                    .next()
                    .with_context(|| format!("{arg} needs a value"))?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                match arg.as_str() {
                    "--wrap" => a.wrap = words,
                    "--before-heartbeats" => a.before_heartbeats = words,
                    _ => a.after_heartbeats = words,
                }
            }
            s if s.starts_with("--") => bail!("unknown flag {s}"),
            path => a.gateways.push(PathBuf::from(path)),
        }
    }
    if a.gateways.is_empty() {
        a.gateways
            .push(PathBuf::from("target/release/apollo-gateway"));
    }
    Ok(a)
}

/// RSS (bytes) and CPU time of a process.
fn sample(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cpu = stat
        .rfind(')')
        .map(|i| stat[i + 2..].split_whitespace().collect::<Vec<_>>())
        .and_then(|f| Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
        .unwrap_or(0);
    (rss, Duration::from_millis(cpu * 10))
}

/// User and system CPU ticks (1/100 s) of a process.
fn user_sys(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 2..].split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    (tick(11), tick(12))
}

/// Kernel socket memory (TCP `mem`, pages) from `/proc/net/sockstat`.
fn tcp_mem_pages() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter()
                .position(|w| *w == "mem")
                .and_then(|i| f.get(i + 1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Raises the soft descriptor limit to the hard one (the gateway inherits it); fails when the
/// hard limit is below what the run needs (raising the hard limit takes CAP_SYS_RESOURCE,
/// which a container may not have: then lower --devices).
fn raise_fd_limit(n: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let want = if hard >= n { n } else { hard };
    if cur.current.is_none_or(|c| c < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: cur.maximum,
            },
        )
        .context("raising RLIMIT_NOFILE")?;
    }
    if want < n {
        bail!("the run needs {n} descriptors; the hard limit is {hard}: lower --devices");
    }
    Ok(())
}

fn spec(device: &str) -> DeviceProcessSpec {
    apollo_api::samples::shell_process(device, "sleep 3600")
}

/// One keep-alive HTTP/1.1 connection speaking raw bytes.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

impl Conn {
    async fn open(source: IpAddr, to: SocketAddr) -> std::io::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(to).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    async fn send(&mut self, request: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(request).await?;
        Ok(())
    }

    async fn answer(&mut self) -> anyhow::Result<Answer> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status: u16 = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .context("status line")?;
                let mut len = 0usize;
                let mut etag = None;
                for l in lines {
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        } else if k.eq_ignore_ascii_case("etag") {
                            etag = Some(v.trim().to_string());
                        }
                    }
                }
                while self.buf.len() < end + 4 + len {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Ok(Answer { status, etag, body });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn request(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        self.send(request).await?;
        self.answer().await
    }
}

fn signed(key: &DeviceKey, method: &str, pq: &str, inm: Option<&str>, body: &[u8]) -> Vec<u8> {
    let h = sign_request_v2(key, method, pq, inm, body, unix_now(), &generate_nonce());
    let mut out = format!(
        "{method} {pq} HTTP/1.1\r\nHost: gateway\r\nUser-Agent: apollo-agent/0.1.0\r\nAccept: application/json\r\n"
    );
    for (k, v) in h.pairs() {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(e) = inm {
        out.push_str(&format!("If-None-Match: {e}\r\n"));
    }
    if method == "POST" {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// What one device learned and reports.
struct Device {
    key: DeviceKey,
    etag: String,
    report: Vec<u8>,
}

fn report_body(device: &str, doc: &[u8]) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(doc).unwrap_or_default();
    let observed = v["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some(ObservedProcess {
                        name: p["name"].as_str()?.to_string(),
                        spec_hash: p["specHash"].as_str()?.to_string(),
                        generation: p["generation"].as_i64(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::to_vec(&Report {
        agent_version: "0.1.0".into(),
        // Stable across gateway runs: after the warm-up, status already shows this agent and a
        // gateway seeds its liveness from it, so first contacts cause no status writes.
        instance_id: format!("i-{device}"),
        revision: None,
        observed,
    })
    .unwrap_or_default()
}

/// Which gateway run of this process is measuring (one per binary and round).
static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The source address of connection `i`: one per 20,000, in a /24 of 127.0.0.0/8 picked by
/// the process id and the run, so that the sockets in TIME-WAIT of an earlier run (of this
/// process or another) do not take the ports a new bind needs.
fn source(i: usize) -> IpAddr {
    let run = std::process::id().wrapping_add(RUN.load(std::sync::atomic::Ordering::Relaxed));
    let net = 2 + (run % 250) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, net, 2 + (i / 20_000) as u8))
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Gateway {
    async fn start(
        wrap: &[String],
        bin: &Path,
        kubeconfig: &Path,
        key_file: &Path,
        namespace: &str,
        log: &Path,
    ) -> anyhow::Result<Gateway> {
        let addr = free_port()?;
        let metrics = free_port()?;
        let out = std::fs::File::create(log)?;
        let mut cmd = match wrap.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args([
                "--kubeconfig",
                &kubeconfig.display().to_string(),
                "--namespace",
                namespace,
                "--master-key-file",
                &key_file.display().to_string(),
                "--addr",
                &addr.to_string(),
                "--metrics-addr",
                &metrics.to_string(),
                "--heartbeat-interval",
                "10s",
                // No device goes stale while the (slow, shared-machine) run visits the others:
                // the heartbeats measured are the ones that change nothing.
                "--stale-after",
                "1h",
                "--header-timeout",
                "300s",
                "--max-connections",
                "400000",
                "--max-connections-per-address",
                "400000",
                "--max-long-polls",
                "400000",
                "--id",
                "footprint",
            ])
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let gw = Gateway {
            child,
            addr,
            metrics,
        };
        let start = Instant::now();
        // Under an instruction profiler, everything is tens of times slower.
        let limit = Duration::from_secs(if wrap.is_empty() { 120 } else { 900 });
        while gw.metric("apollo_gateway_ready").await != Some(1.0) {
            if start.elapsed() > limit {
                bail!("gateway not ready after {limit:?} (log: {})", log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(gw)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let mut c = Conn::open(IpAddr::V4(Ipv4Addr::LOCALHOST), self.metrics)
            .await
            .ok()?;
        let a = c
            .request(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&a.body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits until the CPU use stays under 10 ms per 500 ms (background work done).
    async fn settle(&self) {
        let mut last = sample(self.pid()).1;
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = sample(self.pid()).1;
            if now.saturating_sub(last) <= Duration::from_millis(10) {
                return;
            }
            last = now;
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let n = args.devices;
    raise_fd_limit(if args.cpu_only {
        1_000
    } else {
        (2 * n + 1_000) as u64
    })?;
    let dir = tempfile::tempdir()?;
    let dev = DevCluster::start(Options {
        dir: dir.path().join("cluster"),
        ..Options::default()
    })
    .await?;
    let admin = dev.client(User::Admin).await?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut applier =
        apollo_kube::manifests::Applier::new(admin.clone(), "footprint", Some(NAMESPACE));
    applier.apply_dir(&repo.join("k8s/crds")).await?;
    applier.apply_dir(&repo.join("k8s/rbac")).await?;
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": EMPTY_NAMESPACE}}))?,
    )
    .await?;
    let master = MasterKey::generate()?;
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, format!("{master}\n"))?;
    let kubeconfig = dev.kubeconfig(User::Admin);

    let names: Vec<String> = (0..n).map(|i| format!("sw-{i:06}")).collect();
    let dps: Api<DeviceProcess> = Api::namespaced(admin.clone(), NAMESPACE);
    let t = Instant::now();
    futures::stream::iter(names.iter().cloned())
        .map(|d| {
            let dps = dps.clone();
            async move {
                let dp = DeviceProcess::new(&format!("dp-{d}"), spec(&d));
                dps.create(&PostParams::default(), &dp).await
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "{n} DeviceProcesses created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let keys: Vec<DeviceKey> = names.iter().map(|d| master.derive(d)).collect();

    // Warm-up: the first contact of every device and the status writes it causes, once.
    {
        let log = dir.path().join("warmup.log");
        let gw = Gateway::start(
            &args.wrap,
            &args.gateways[0],
            &kubeconfig,
            &key_file,
            NAMESPACE,
            &log,
        )
        .await?;
        let t = Instant::now();
        first_contact(&gw, &keys).await?;
        drain(&gw, Duration::from_secs(900)).await;
        println!(
            "warm-up (first contact, status writes): {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    // Per binary: (ms per 1,000 heartbeats, the same without the idle rate, user, system).
    let mut figures: Vec<Vec<Cpu>> = vec![Vec::new(); args.gateways.len()];
    for round in 0..args.rounds {
        for (b, bin) in args.gateways.iter().enumerate() {
            println!("== round {} · {}", round + 1, bin.display());
            RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let log = dir.path().join("gateway.log");
            let baseline = if args.cpu_only {
                0
            } else {
                let base = Gateway::start(
                    &args.wrap,
                    bin,
                    &kubeconfig,
                    &key_file,
                    EMPTY_NAMESPACE,
                    &log,
                )
                .await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let baseline = sample(base.pid()).0;
                drop(base);
                baseline
            };
            let mut gw =
                Gateway::start(&args.wrap, bin, &kubeconfig, &key_file, NAMESPACE, &log).await?;
            gw.settle().await;
            let ready = sample(gw.pid()).0;
            figures[b].push(run(&gw, &keys, &args, baseline, ready).await?);
            if !args.wrap.is_empty() {
                // A profiler writes its output on a clean exit: SIGTERM, then wait.
                if let Some(pid) = gw.child.id() {
                    let _ = std::process::Command::new("kill")
                        .arg(pid.to_string())
                        .status();
                }
                let _ = tokio::time::timeout(Duration::from_secs(300), gw.child.wait()).await;
            }
        }
    }
    println!("== gateway CPU per 1,000 heartbeats (ms), median [min–max] over the rounds");
    for (bin, f) in args.gateways.iter().zip(&figures) {
        let stat = |pick: fn(&Cpu) -> f64| {
            let mut v: Vec<f64> = f.iter().map(pick).collect();
            v.sort_by(f64::total_cmp);
            format!("{:.1} [{:.1}–{:.1}]", v[v.len() / 2], v[0], v[v.len() - 1])
        };
        println!(
            "  {}: {} (without the idle rate {}; user {}, system {})",
            bin.display(),
            stat(|c| c.gross),
            stat(|c| c.net),
            stat(|c| c.user),
            stat(|c| c.system),
        );
    }
    Ok(())
}

/// Runs `cmd pid` (nothing when `cmd` is empty); a failure is printed, not fatal.
fn hook(cmd: &[String], pid: u32) {
    let Some((program, rest)) = cmd.split_first() else {
        return;
    };
    match std::process::Command::new(program)
        .args(rest)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => println!("  {program}: {s}"),
        Err(e) => println!("  {program}: {e}"),
    }
}

/// Gateway CPU of one heartbeat run, ms per 1,000 heartbeats.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    gross: f64,
    net: f64,
    user: f64,
    system: f64,
}

/// Every device: GET (200, its ETag and document) and a report, over 16 shared keep-alive
/// connections.
async fn first_contact(gw: &Gateway, keys: &[DeviceKey]) -> anyhow::Result<Vec<Device>> {
    let n = keys.len();
    let addr = gw.addr;
    let chunks: Vec<Vec<DeviceKey>> = keys.chunks(n.div_ceil(16)).map(<[_]>::to_vec).collect();
    let mut tasks = Vec::new();
    for (c, chunk) in chunks.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(source(c), addr).await?;
            let mut out = Vec::new();
            for key in chunk {
                let pq = format!("/v1/devices/{}/desired", key.device());
                let a = conn.request(&signed(&key, "GET", &pq, None, b"")).await?;
                if a.status != 200 {
                    bail!("GET {}: {}", key.device(), a.status);
                }
                let report = report_body(key.device(), &a.body);
                let pq = format!("/v1/devices/{}/report", key.device());
                let r = conn
                    .request(&signed(&key, "POST", &pq, None, &report))
                    .await?;
                if r.status != 200 {
                    bail!("report {}: {}", key.device(), r.status);
                }
                out.push(Device {
                    key,
                    etag: a.etag.unwrap_or_default(),
                    report,
                });
            }
            anyhow::Ok(out)
        }));
    }
    let mut devices = Vec::new();
    for t in tasks {
        devices.extend(t.await??);
    }
    Ok(devices)
}

/// Waits until no status write is queued (or `limit`).
async fn drain(gw: &Gateway, limit: Duration) {
    let t = Instant::now();
    loop {
        let q = gw.metric("apollo_gateway_status_write_queue").await;
        if q == Some(0.0) || t.elapsed() > limit {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(
    gw: &Gateway,
    keys: &[DeviceKey],
    args: &Args,
    baseline: u64,
    ready: u64,
) -> anyhow::Result<Cpu> {
    let n = keys.len();
    let addr = gw.addr;
    let t = Instant::now();
    let devices = Arc::new(first_contact(gw, keys).await?);
    println!(
        "  first contact of {n} devices: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drain(gw, Duration::from_secs(120)).await;
    gw.settle().await;
    let state = sample(gw.pid()).0;

    // Heartbeats: reports that change nothing, 16 connections, round robin over devices.
    let per_conn = args.heartbeats / 16;
    // The idle gateway's own CPU (sweeper, watch, lease), subtracted below.
    let idle0 = sample(gw.pid()).1;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rate =
        sample(gw.pid()).1.saturating_sub(idle0).as_secs_f64() / t.elapsed().as_secs_f64();
    hook(&args.before_heartbeats, gw.pid());
    let cpu0 = sample(gw.pid()).1;
    let (user0, sys0) = user_sys(gw.pid());
    let t = Instant::now();
    let mut tasks = Vec::new();
    let rate = args.rate;
    for c in 0..16 {
        let devices = devices.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(source(c), addr).await?;
            // Paced: each connection's heartbeats a period apart, the connections staggered.
            let period = rate.map(|r| Duration::from_secs_f64(16.0 / r));
            let start = tokio::time::Instant::now()
                + period.map_or(Duration::ZERO, |p| p.mul_f64(c as f64 / 16.0));
            for k in 0..per_conn {
                if let Some(p) = period {
                    tokio::time::sleep_until(start + p * k as u32).await;
                }
                let d = &devices[(k * 16 + c) % devices.len()];
                let pq = format!("/v1/devices/{}/report", d.key.device());
                let r = conn
                    .request(&signed(&d.key, "POST", &pq, None, &d.report))
                    .await?;
                if r.status != 200 {
                    bail!("heartbeat: {}", r.status);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let wall = t.elapsed();
    let cpu = sample(gw.pid()).1.saturating_sub(cpu0);
    let (user1, sys1) = user_sys(gw.pid());
    hook(&args.after_heartbeats, gw.pid());
    let beats = per_conn * 16;
    let net = (cpu.as_secs_f64() - idle_rate * wall.as_secs_f64()).max(0.0);
    println!(
        "  heartbeats: {beats} in {:.2} s ({:.0}/s); gateway CPU {:.0} ms = {:.1} ms per 1,000 ({:.1} ms per 1,000 without the idle gateway's {:.1} ms/s)",
        wall.as_secs_f64(),
        beats as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / beats as f64,
        net * 1e6 / beats as f64,
        idle_rate * 1e3,
    );
    let figures = Cpu {
        gross: cpu.as_secs_f64() * 1e6 / beats as f64,
        net: net * 1e6 / beats as f64,
        user: (user1 - user0) as f64 * 10.0 * 1000.0 / beats as f64,
        system: (sys1 - sys0) as f64 * 10.0 * 1000.0 / beats as f64,
    };
    println!(
        "    of which user {:.1} ms, system {:.1} ms per 1,000",
        figures.user, figures.system,
    );
    if args.cpu_only {
        return Ok(figures);
    }
    gw.settle().await;

    // Long polls, one connection each, held.
    let sock0 = tcp_mem_pages();
    let before = sample(gw.pid()).0;
    let t = Instant::now();
    let mut held = Vec::with_capacity(n);
    let opened = futures::stream::iter(0..n)
        .map(|i| {
            let devices = devices.clone();
            async move {
                let d = &devices[i];
                let mut conn = Conn::open(source(i), addr).await?;
                let pq = format!("/v1/devices/{}/desired?wait=60s", d.key.device());
                conn.send(&signed(&d.key, "GET", &pq, Some(&d.etag), b""))
                    .await?;
                anyhow::Ok(conn)
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    for c in opened {
        held.push(c?);
    }
    loop {
        let h = gw
            .metric("apollo_gateway_long_polls_held")
            .await
            .unwrap_or(0.0);
        if h as usize >= n {
            break;
        }
        if t.elapsed() > Duration::from_secs(50) {
            bail!("only {h} of {n} long polls held after 50 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened_in = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let polls = sample(gw.pid()).0;
    let sock1 = tcp_mem_pages();
    println!(
        "  RSS: baseline process {:.1} MiB; fleet state loaded {:.1} MiB; after first contact {:.1} MiB; before long polls {:.1} MiB; {n} long polls held ({:.1} s) {:.1} MiB",
        mib(baseline),
        mib(ready),
        mib(state),
        mib(before),
        opened_in.as_secs_f64(),
        mib(polls)
    );
    println!(
        "  per device: everything {:.2} KiB (state {:.2} KiB, held long poll {:.2} KiB); kernel TCP memory {:.2} KiB per connection (both ends)",
        (polls.saturating_sub(baseline)) as f64 / 1024.0 / n as f64,
        (state.saturating_sub(baseline)) as f64 / 1024.0 / n as f64,
        (polls.saturating_sub(before)) as f64 / 1024.0 / n as f64,
        (sock1.saturating_sub(sock0)) as f64 * 4.0 / n as f64,
    );
    if args.idle {
        let t = Instant::now();
        let idle = futures::stream::iter(0..n)
            .map(|i| {
                let devices = devices.clone();
                async move {
                    let d = &devices[i];
                    let mut conn = Conn::open(source(i), addr).await?;
                    let pq = format!("/v1/devices/{}/report", d.key.device());
                    let r = conn
                        .request(&signed(&d.key, "POST", &pq, None, &d.report))
                        .await?;
                    if r.status != 200 {
                        bail!("report: {}", r.status);
                    }
                    anyhow::Ok(conn)
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let mut idles = Vec::with_capacity(n);
        for c in idle {
            idles.push(c?);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let with_idle = sample(gw.pid()).0;
        println!(
            "  + one idle keep-alive connection per device ({:.1} s): {:.1} MiB, {:.2} KiB per idle connection; everything per device with both {:.2} KiB",
            t.elapsed().as_secs_f64(),
            mib(with_idle),
            (with_idle.saturating_sub(polls)) as f64 / 1024.0 / n as f64,
            (with_idle.saturating_sub(baseline)) as f64 / 1024.0 / n as f64,
        );
        drop(idles);
    }
    drop(held);
    Ok(figures)
}
