//! Gateway high availability with real processes: several `apollo-gateway` binaries against
//! the development API server, coordinated by their Leases, with in-process agents that list
//! every replica's URL (as devices reaching replicas through separate addresses do).
//!
//! - Three replicas, 200 devices, heartbeat 1 s, lease 4 s: every DeviceProcess connected
//!   and observed; one replica is SIGKILLed; the survivors own every device within the lease
//!   duration plus a heartbeat (measured), no DeviceProcess ever shows
//!   `AgentConnected=False`, no Event at all is emitted by the failover, and each object's
//!   status writes come from one replica, then (for the dead one's objects) from its
//!   successor only: never back and forth.
//! - Scale 2 → 3: the new replica takes over its share without a flap or an Event.
//! - A real agent listing two gateways fails over when the one it uses dies.
//! - A replica cut off from the API server (a proxy in front of it that drops everything)
//!   stops writing and its devices move to the others, then come back when the cut heals;
//!   no flap, no Event. (A replica cut off from the agents but not the API keeps its devices
//!   and gets their reports forwarded: the scale-out test, whose agents never talk to gw-c.)
//! - Two replicas serving TLS on the device port with peer listeners (`--peer-addr`): agents
//!   talking HTTPS to one replica only get every DeviceProcess connected and observed,
//!   written by its owner (reports forwarded over the plain-HTTP peer listener), and the TLS
//!   device port refuses the replica route.

#[path = "it/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apollo_devcluster::User;
use apollo_testkit::DeviceProcessObserver;
use common::*;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;

const BIN: &str = env!("CARGO_BIN_EXE_apollo-gateway");

/// The tests of this file run one at a time (each runs up to three gateways and 200 agents
/// with the API server on the build machine's cores; together they starve the API server
/// past the lease timings). Under nextest the `gateway-ha` test group does the same.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const LEASE: Duration = Duration::from_secs(4);
const BEAT: Duration = Duration::from_secs(1);
const STALE_AFTER: Duration = Duration::from_secs(5);
/// What observing a handover from the test adds to the product's bound (lease + heartbeat):
/// the poll interval and four metrics scrapes per check, on two cores shared with three
/// gateways, 200 agents and the API server (the container scenarios allow the same).
const OBSERVATION: Duration = Duration::from_secs(1);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One gateway process; SIGKILLed when dropped.
struct Replica {
    id: String,
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl Replica {
    fn spawn(h: &Harness, key_file: &Path, id: &str) -> Replica {
        let kubeconfig = h.env.dev().unwrap().kubeconfig(User::Gateway);
        Self::spawn_with(h, key_file, id, &kubeconfig)
    }

    fn spawn_with(h: &Harness, key_file: &Path, id: &str, kubeconfig: &Path) -> Replica {
        Self::spawn_args(h, key_file, id, kubeconfig, &[])
    }

    /// [`Replica::spawn_with`] with more command-line flags.
    fn spawn_args(
        h: &Harness,
        key_file: &Path,
        id: &str,
        kubeconfig: &Path,
        extra: &[String],
    ) -> Replica {
        let (port, metrics_port) = (free_port(), free_port());
        let mut child = Command::new(BIN)
            .args(extra)
            .arg(format!("--addr=127.0.0.1:{port}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--namespace={}", h.env.namespace()))
            .arg(format!("--lease-duration={}ms", LEASE.as_millis()))
            .env("APOLLO_MASTER_KEY_FILE", key_file)
            .env("APOLLO_GATEWAY_ID", id)
            .env("POD_NAME", id)
            .env("APOLLO_HEARTBEAT_INTERVAL", "1s")
            // 5 heartbeats: agents in this test process share two cores with three gateways
            // and the API server; a loaded machine must not make them stale for real.
            .env("APOLLO_STALE_AFTER", "5s")
            .env("APOLLO_SHUTDOWN_GRACE", "2s")
            .env("RUST_LOG", "info,apollo_gateway::status=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn apollo-gateway");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Replica {
            id: id.to_string(),
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            metrics: format!("127.0.0.1:{metrics_port}").parse().unwrap(),
            logs,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let r = raw_request(self.metrics, &build_request("GET", "/metrics", &[], b""))
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    async fn ready(&self) -> bool {
        raw_request(self.metrics, &build_request("GET", "/readyz", &[], b""))
            .await
            .is_ok_and(|r| r.status == 200)
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// (timestamp, object) of every status write this replica logged at or after `since`
    /// (RFC 3339 UTC, as the logs write it).
    fn writes(&self, since: &str) -> Vec<(String, String)> {
        self.logs
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains("status written"))
            .filter_map(|l| {
                let ts = l.split_whitespace().next()?.to_string();
                let obj = l
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("object="))?
                    .to_string();
                Some((ts, obj))
            })
            .filter(|(ts, _)| ts.as_str() >= since)
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        // Kept for diagnosis: target/tmp/ha-<id>.log (the last run's).
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ha-{}.log", self.id));
        let _ = std::fs::write(path, self.logs.lock().unwrap().as_bytes());
    }
}

/// Events in the namespace by (type, reason).
async fn event_counts(h: &Harness) -> BTreeMap<(String, String), usize> {
    let api: Api<Event> = Api::namespaced(h.env.admin().await, h.env.namespace());
    let mut out = BTreeMap::new();
    for e in api.list(&ListParams::default()).await.unwrap().items {
        *out.entry((
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
        ))
        .or_insert(0) += 1;
    }
    out
}

/// Now, as the logs write timestamps.
fn log_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Every object's status writers since `since` in time order (consecutive duplicates
/// merged).
fn writers(replicas: &[&Replica], since: &str) -> HashMap<String, Vec<String>> {
    let mut all: Vec<(String, String, String)> = replicas
        .iter()
        .flat_map(|r| {
            r.writes(since)
                .into_iter()
                .map(|(ts, obj)| (ts, obj, r.id.clone()))
        })
        .collect();
    all.sort();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (_, obj, id) in all {
        let seq = out.entry(obj).or_default();
        if seq.last() != Some(&id) {
            seq.push(id);
        }
    }
    out
}

async fn setup(devices: usize) -> (Harness, tempfile::TempDir, std::path::PathBuf) {
    let mut h = Harness::start().await;
    h.stop_gateway().await;
    for i in 0..devices {
        h.create_dp(&format!("dp-{i:03}"), &format!("dev-{i:03}"), "x")
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, format!("{}\n", h.master)).unwrap();
    (h, dir, key_file)
}

async fn wait_members(replicas: &[&Replica], n: f64, timeout: Duration) {
    wait_until(&format!("{n} members everywhere"), timeout, || async {
        for r in replicas {
            if !r.ready().await || r.metric("apollo_gateway_members").await != Some(n) {
                return false;
            }
        }
        true
    })
    .await;
}

async fn owned_total(replicas: &[&Replica]) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        sum += r
            .metric("apollo_gateway_owned_devices")
            .await
            .unwrap_or(-1000.0);
    }
    sum
}

/// Agents listing every replica, each starting with a different one; started 10 at a time
/// every 100 ms (a fleet does not boot in the same millisecond, and the API server of these
/// tests shares two cores with everything else).
async fn start_agents(h: &Harness, replicas: &[&Replica], devices: usize) -> Vec<RunningAgent> {
    let mut out = Vec::new();
    for i in 0..devices {
        if i > 0 && i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = replicas.len();
        let urls: Vec<String> = (0..n).map(|k| replicas[(i + k) % n].url()).collect();
        out.push(RunningAgent::start(
            &urls.join(","),
            h.master.derive(&format!("dev-{i:03}")),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_a_sigkill_without_a_flap() {
    let _serial = SERIAL.lock().await;
    const DEVICES: usize = 200;
    let (h, _dir, key_file) = setup(DEVICES).await;
    if h.skip_on_real_cluster("runs gateways with the in-process cluster's kubeconfig") {
        return;
    }
    let a = Replica::spawn(&h, &key_file, "gw-a");
    let b = Replica::spawn(&h, &key_file, "gw-b");
    let mut c = Replica::spawn(&h, &key_file, "gw-c");
    wait_members(&[&a, &b, &c], 3.0, Duration::from_secs(30)).await;
    wait_until(
        "every device owned once",
        Duration::from_secs(20),
        || async { owned_total(&[&a, &b, &c]).await == DEVICES as f64 },
    )
    .await;
    // From now on the member set is stable until the kill: writes are counted from here.
    let stable = log_now();
    let observer = DeviceProcessObserver::start(h.dps().await);
    let agents = start_agents(&h, &[&a, &b, &c], DEVICES).await;
    wait_until(
        "every DeviceProcess connected and observed",
        Duration::from_secs(60),
        || async { observer.connected_and_observed() == DEVICES },
    )
    .await;
    // Every transition's Events posted: one AgentConnected and one SpecObserved each.
    let expected: BTreeMap<(String, String), usize> = [
        (
            ("Normal".to_string(), "AgentConnected".to_string()),
            DEVICES,
        ),
        (("Normal".to_string(), "SpecObserved".to_string()), DEVICES),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = event_counts(&h).await;
        if got == expected {
            break;
        }
        assert!(Instant::now() < deadline, "initial Events: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let owned_by_c = c.metric("apollo_gateway_owned_devices").await.unwrap();
    assert!(owned_by_c > 30.0, "gw-c owns its share: {owned_by_c}");

    // SIGKILL gw-c: the survivors own everything within the lease duration + a heartbeat.
    let killed = Instant::now();
    c.kill();
    wait_until(
        "survivors own every device",
        LEASE + BEAT + Duration::from_secs(5),
        || async {
            owned_total(&[&a, &b]).await == DEVICES as f64
                && a.metric("apollo_gateway_members").await == Some(2.0)
                && b.metric("apollo_gateway_members").await == Some(2.0)
        },
    )
    .await;
    let failover = killed.elapsed();
    eprintln!(
        "failover: survivors own all {DEVICES} devices {} ms after SIGKILL (gw-c owned {owned_by_c})",
        failover.as_millis()
    );
    assert!(
        failover <= LEASE + BEAT + OBSERVATION,
        "ownership moved in {failover:?}, more than lease + heartbeat (+ {OBSERVATION:?} to observe it)"
    );
    // Three stale windows later: still nobody disconnected, no Event at all.
    observer.hold_without_flap(STALE_AFTER * 2).await.unwrap();
    assert_eq!(observer.connected_and_observed(), DEVICES);
    assert_eq!(
        event_counts(&h).await,
        expected,
        "no Event from the failover"
    );
    assert!(observer.disconnected().is_empty());
    // One writer per object: gw-c's objects moved once, to one survivor, never back.
    let seqs = writers(&[&a, &b, &c], &stable);
    for (obj, seq) in &seqs {
        assert!(
            seq.len() == 1 || (seq.len() == 2 && seq[0] == "gw-c"),
            "{obj} written by {seq:?}"
        );
    }
    let forwarded = a
        .metric("apollo_gateway_forwarded_reports_total{result=\"received\"}")
        .await;
    eprintln!("gw-a received {forwarded:?} forwarded reports");
    for agent in agents {
        agent.stop().await;
    }
    drop((a, b));
    h.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_two_to_three_moves_devices_without_a_flap() {
    let _serial = SERIAL.lock().await;
    const DEVICES: usize = 60;
    let (h, _dir, key_file) = setup(DEVICES).await;
    if h.skip_on_real_cluster("runs gateways with the in-process cluster's kubeconfig") {
        return;
    }
    let a = Replica::spawn(&h, &key_file, "gw-a");
    let b = Replica::spawn(&h, &key_file, "gw-b");
    wait_members(&[&a, &b], 2.0, Duration::from_secs(30)).await;
    let observer = DeviceProcessObserver::start(h.dps().await);
    let agents = start_agents(&h, &[&a, &b], DEVICES).await;
    wait_until("all healthy", Duration::from_secs(60), || async {
        observer.connected_and_observed() == DEVICES
    })
    .await;
    wait_until("initial Events", Duration::from_secs(30), || async {
        event_counts(&h).await.values().sum::<usize>() == 2 * DEVICES
    })
    .await;
    let before = event_counts(&h).await;
    let joined = Instant::now();
    let since = log_now();
    let c = Replica::spawn(&h, &key_file, "gw-c");
    wait_members(&[&a, &b, &c], 3.0, Duration::from_secs(30)).await;
    wait_until("gw-c owns its share", Duration::from_secs(10), || async {
        c.metric("apollo_gateway_owned_devices")
            .await
            .is_some_and(|n| n > 0.0)
            && owned_total(&[&a, &b, &c]).await == DEVICES as f64
    })
    .await;
    eprintln!(
        "scale-out: gw-c owns {:?} devices {} ms after it started",
        c.metric("apollo_gateway_owned_devices").await,
        joined.elapsed().as_millis()
    );
    // Agents still talk to gw-a and gw-b only: gw-c learns of its devices by forwarding.
    observer.hold_without_flap(STALE_AFTER * 2).await.unwrap();
    assert_eq!(observer.connected_and_observed(), DEVICES);
    assert_eq!(
        event_counts(&h).await,
        before,
        "no Event from the scale-out"
    );
    // A scrape can fail on a loaded machine: asked again until the deadline.
    wait_until(
        "gw-c receives its devices' reports",
        Duration::from_secs(10),
        || async {
            c.metric("apollo_gateway_forwarded_reports_total{result=\"received\"}")
                .await
                .is_some_and(|n| n > 0.0)
        },
    )
    .await;
    // An object's writer changes at most once (to gw-c), never back.
    for (obj, seq) in writers(&[&a, &b, &c], &since) {
        assert!(
            seq.len() == 1 || (seq.len() == 2 && seq[1] == "gw-c"),
            "{obj}: {seq:?}"
        );
    }
    for agent in agents {
        agent.stop().await;
    }
    drop((a, b, c));
    h.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_fails_over_to_the_next_url() {
    let _serial = SERIAL.lock().await;
    let (h, _dir, key_file) = setup(1).await;
    if h.skip_on_real_cluster("runs gateways with the in-process cluster's kubeconfig") {
        return;
    }
    let mut a = Replica::spawn(&h, &key_file, "gw-a");
    let b = Replica::spawn(&h, &key_file, "gw-b");
    wait_members(&[&a, &b], 2.0, Duration::from_secs(30)).await;
    let observer = DeviceProcessObserver::start(h.dps().await);
    let agent = RunningAgent::start(
        &format!("{},{}", a.url(), b.url()),
        h.master.derive("dev-000"),
    );
    wait_until("healthy", Duration::from_secs(20), || async {
        observer.connected_and_observed() == 1
    })
    .await;
    let ok_before = b
        .metric("apollo_gateway_http_requests_total{route=\"report\",code=\"200\"}")
        .await
        .unwrap_or(0.0);
    assert_eq!(ok_before, 0.0, "the agent uses the first URL");
    a.kill();
    let killed = Instant::now();
    wait_until("reports reach gw-b", Duration::from_secs(10), || async {
        b.metric("apollo_gateway_http_requests_total{route=\"report\",code=\"200\"}")
            .await
            .unwrap_or(0.0)
            > 0.0
    })
    .await;
    eprintln!("agent failed over in {} ms", killed.elapsed().as_millis());
    observer.hold_without_flap(STALE_AFTER * 2).await.unwrap();
    assert_eq!(observer.connected_and_observed(), 1);
    agent.stop().await;
    drop(b);
    h.env.cleanup().await;
}

/// A TCP proxy to the API server that can cut every connection and refuse new ones.
struct Cut {
    addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cut {
    async fn start(upstream: SocketAddr) -> Cut {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (c, cs) = (cut.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                cs.lock().unwrap().push(h);
            }
        });
        Cut {
            addr,
            cut,
            conns,
            task,
        }
    }

    fn set(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.task.abort();
        self.set(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_api_stops_writing_and_its_devices_move() {
    let _serial = SERIAL.lock().await;
    const DEVICES: usize = 60;
    let (h, dir, key_file) = setup(DEVICES).await;
    if h.skip_on_real_cluster("needs a proxy in front of the in-process API server") {
        return;
    }
    // gw-c reaches the API server through the proxy.
    let kubeconfig = h.env.dev().unwrap().kubeconfig(User::Gateway);
    let (text, server) = common::kubeconfig_server(&kubeconfig);
    let upstream: SocketAddr = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = Cut::start(upstream).await;
    let proxied = dir.path().join("gw-c.kubeconfig");
    std::fs::write(
        &proxied,
        text.replace(&server, &format!("https://{}", proxy.addr)),
    )
    .unwrap();
    let a = Replica::spawn(&h, &key_file, "gw-a");
    let b = Replica::spawn(&h, &key_file, "gw-b");
    let c = Replica::spawn_with(&h, &key_file, "gw-c", &proxied);
    wait_members(&[&a, &b, &c], 3.0, Duration::from_secs(30)).await;
    let observer = DeviceProcessObserver::start(h.dps().await);
    let agents = start_agents(&h, &[&a, &b, &c], DEVICES).await;
    wait_until("all healthy", Duration::from_secs(60), || async {
        observer.connected_and_observed() == DEVICES
    })
    .await;
    wait_until("initial Events", Duration::from_secs(30), || async {
        event_counts(&h).await.values().sum::<usize>() == 2 * DEVICES
    })
    .await;
    let before = event_counts(&h).await;
    let owned_by_c = c.metric("apollo_gateway_owned_devices").await.unwrap();
    assert!(owned_by_c > 0.0);

    // Cut gw-c off the API server: it stops writing (its fence lapses) and owns nothing;
    // gw-a and gw-b take its devices after the lease duration.
    let cut_at = Instant::now();
    proxy.set(true);
    let cut_log = log_now();
    wait_until(
        "gw-c's devices moved",
        LEASE + BEAT + Duration::from_secs(5),
        || async {
            owned_total(&[&a, &b]).await == DEVICES as f64
                && c.metric("apollo_gateway_owned_devices").await == Some(0.0)
        },
    )
    .await;
    eprintln!(
        "partition: gw-a and gw-b own all {DEVICES} devices {} ms after gw-c was cut off",
        cut_at.elapsed().as_millis()
    );
    observer.hold_without_flap(STALE_AFTER * 2).await.unwrap();
    assert_eq!(observer.connected_and_observed(), DEVICES);
    assert!(c.writes(&cut_log).is_empty(), "gw-c wrote while cut off");
    // Heal: gw-c renews, rejoins and owns its share again, still without a flap or an Event.
    proxy.set(false);
    wait_members(&[&a, &b, &c], 3.0, Duration::from_secs(20)).await;
    wait_until(
        "gw-c owns its share again",
        Duration::from_secs(10),
        || async {
            c.metric("apollo_gateway_owned_devices").await == Some(owned_by_c)
                && owned_total(&[&a, &b, &c]).await == DEVICES as f64
        },
    )
    .await;
    observer.hold_without_flap(STALE_AFTER * 2).await.unwrap();
    assert_eq!(observer.connected_and_observed(), DEVICES);
    assert_eq!(
        event_counts(&h).await,
        before,
        "no Event from the partition"
    );
    for agent in agents {
        agent.stop().await;
    }
    drop((a, b, c, proxy));
    h.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serving_tls_forward_reports_over_the_peer_listener() {
    let _serial = SERIAL.lock().await;
    const DEVICES: usize = 20;
    let (h, dir, key_file) = setup(DEVICES).await;
    if h.skip_on_real_cluster("runs gateways with the in-process cluster's kubeconfig") {
        return;
    }
    let (ca, cert, key) = ca_and_leaf();
    let (cert_file, tls_key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&tls_key_file, key).unwrap();
    let kubeconfig = h.env.dev().unwrap().kubeconfig(User::Gateway);
    let spawn = |id: &str| {
        let peer = free_port();
        let r = Replica::spawn_args(
            &h,
            &key_file,
            id,
            &kubeconfig,
            &[
                format!("--tls-cert-file={}", cert_file.display()),
                format!("--tls-key-file={}", tls_key_file.display()),
                format!("--peer-addr=127.0.0.1:{peer}"),
            ],
        );
        (r, peer)
    };
    let (a, _) = spawn("gw-a");
    let (b, b_peer) = spawn("gw-b");
    wait_members(&[&a, &b], 2.0, Duration::from_secs(30)).await;
    wait_until(
        "every device owned once",
        Duration::from_secs(20),
        || async { owned_total(&[&a, &b]).await == DEVICES as f64 },
    )
    .await;
    let owned_by_b = b.metric("apollo_gateway_owned_devices").await.unwrap();
    assert!(
        owned_by_b > 0.0,
        "gw-b owns nothing: the test would prove nothing"
    );
    let since = log_now();
    // Every agent talks HTTPS to gw-a only: gw-b's devices are connected only if gw-a's
    // forwarded reports reach gw-b (the advertise URL defaults to its peer port).
    let observer = DeviceProcessObserver::start(h.dps().await);
    let a_url = format!("https://localhost:{}", a.addr.port());
    let agents: Vec<RunningAgent> = (0..DEVICES)
        .map(|i| {
            RunningAgent::start_with_ca(&a_url, h.master.derive(&format!("dev-{i:03}")), Some(&ca))
        })
        .collect();
    wait_until(
        "every DeviceProcess connected and observed",
        Duration::from_secs(60),
        || async { observer.connected_and_observed() == DEVICES },
    )
    .await;
    let received = b
        .metric("apollo_gateway_forwarded_reports_total{result=\"received\"}")
        .await
        .unwrap_or(0.0);
    assert!(received > 0.0, "gw-b received no forwarded report");
    assert_eq!(
        b.metric("apollo_gateway_http_requests_total{route=\"report\",code=\"200\"}")
            .await
            .unwrap_or(0.0),
        0.0,
        "an agent talked to gw-b"
    );
    // gw-b, not gw-a, wrote the status of the devices it owns.
    let by_b = b.writes(&since).len();
    assert!(by_b > 0, "gw-b wrote no status");
    // One writer per object (its owner; gw-b's reports all came forwarded).
    for (object, seq) in writers(&[&a, &b], &since) {
        assert_eq!(seq.len(), 1, "{object} written by {seq:?}");
    }
    // The TLS device port no longer serves the replica route, even correctly signed.
    let ring = apollo_protocol::keys::MasterKeyRing::from(h.master.clone());
    let body = br#"{"reports":[]}"#;
    let path = apollo_gateway::forward::FORWARD_PATH;
    let mut headers: Vec<(String, String)> = apollo_protocol::replica::sign_replica_request(
        &ring,
        "gw-a",
        "POST",
        path,
        body,
        apollo_protocol::auth::unix_now(),
        &apollo_protocol::auth::generate_nonce(),
    )
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    headers.push(("Content-Type".into(), "application/json".into()));
    let request = build_request("POST", path, &headers, body);
    let (status, _) = https_request(
        b.addr,
        &ca,
        &[&tokio_rustls::rustls::version::TLS13],
        &request,
    )
    .await
    .unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // The same request on the (plain) peer listener is accepted.
    let peer: SocketAddr = format!("127.0.0.1:{b_peer}").parse().unwrap();
    assert_eq!(raw_request(peer, &request).await.unwrap().status, 200);
    for agent in agents {
        agent.stop().await;
    }
    drop((a, b));
    h.env.cleanup().await;
}
