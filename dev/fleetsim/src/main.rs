//! `apollo-fleetsim`: fleet simulator and benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use apollo_fleetsim::bench::{self, BenchConfig};
use apollo_fleetsim::fleet::{Fleet, FleetOptions};
use apollo_fleetsim::report;
use apollo_process::duration::HumanDuration;
use argh::FromArgs;

/// Apollo fleet simulator: N agents speaking the real protocol, and the benchmarks.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Bench(BenchArgs),
    Charts(ChartsArgs),
    Compare(CompareArgs),
    Run(RunArgs),
    Serve304(Serve304Args),
}

/// Serve the throughput baseline: a bare hyper server answering every request with 304.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve-304")]
struct Serve304Args {
    /// listen address, e.g. 127.0.0.1:18304
    #[argh(option)]
    listen: std::net::SocketAddr,
}

/// Print per-row deltas between two bench JSON reports.
#[derive(FromArgs)]
#[argh(subcommand, name = "compare")]
struct CompareArgs {
    /// the older report
    #[argh(positional)]
    old: PathBuf,
    /// the newer report
    #[argh(positional)]
    new: PathBuf,
}

/// Run the benchmarks against the development API server (or any API server with
/// --kubeconfig) and the built binaries. Raises its own open-file limit (soft to hard; as
/// root the hard limit to fs.nr_open too); the gateway it starts inherits it.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
struct BenchArgs {
    /// short version (1,000 devices, short throughput runs; under 5 minutes)
    #[argh(switch)]
    short: bool,
    /// fleet sizes, comma-separated (default 1000,10000,100000; --short: 1000)
    #[argh(option)]
    sizes: Option<String>,
    /// heartbeat interval the gateway asks for (default 10s; --short: 1s)
    #[argh(option)]
    heartbeat: Option<HumanDuration>,
    /// directory with apollo-gateway, apollo-controller, apollo-agent (default bin)
    #[argh(option, default = "PathBuf::from(\"bin\")")]
    bin_dir: PathBuf,
    /// repository root, for k8s/ (default .)
    #[argh(option, default = "PathBuf::from(\".\")")]
    repo: PathBuf,
    /// write the results as JSON to this file
    #[argh(option)]
    json: Option<PathBuf>,
    /// directory for server state and component logs (default .fleetsim/<unix time>)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// run against the API server of this kubeconfig instead of the in-process development
    /// server (its user installs the CRDs and creates one namespace per scenario, deleted
    /// after); the numbers then show that server's write speed
    #[argh(option)]
    kubeconfig: Option<PathBuf>,
    /// prefix of the namespaces created with --kubeconfig (default fleetsim)
    #[argh(option, default = "String::from(\"fleetsim\")")]
    namespace_prefix: String,
    /// time limit of each phase; a phase that runs out records how far it got (default 60s
    /// + 2ms per device)
    #[argh(option)]
    phase_timeout: Option<HumanDuration>,
    /// agents per loopback source address (127.1.0.1 upwards), 0 = all from 127.0.0.1 with
    /// the gateway's per-address cap lifted (default 400: under the default cap of 1024)
    #[argh(option, default = "apollo_fleetsim::fleet::DEFAULT_AGENTS_PER_ADDRESS")]
    agents_per_address: usize,
    /// agents started per second, 0 = all at once (default 10000)
    #[argh(option, default = "10_000")]
    start_rate: usize,
    /// duration of each write-floor measurement (default 5s; --short: 2s)
    #[argh(option)]
    floor_duration: Option<HumanDuration>,
    /// gateway replica counts of the replica benchmark, comma-separated; "" = skip (default
    /// 1,3)
    #[argh(option)]
    replicas: Option<String>,
    /// fleet size of the replica benchmark (default: the smallest of --sizes)
    #[argh(option)]
    replica_devices: Option<usize>,
    /// lease duration of the replicas (default 15s, the gateway's default)
    #[argh(option)]
    lease_duration: Option<HumanDuration>,
    /// skip the conditional-GET throughput comparison
    #[argh(switch)]
    no_throughput: bool,
    /// after the run, print per-row deltas against this earlier bench JSON
    #[argh(option)]
    compare: Option<PathBuf>,
}

/// Draw SVG charts of a benchmark's JSON: memory per device, rollout progress, conditional GET.
#[derive(FromArgs)]
#[argh(subcommand, name = "charts")]
struct ChartsArgs {
    /// the JSON written by `bench --json`
    #[argh(option)]
    json: PathBuf,
    /// directory for the .svg files (default docs/bench)
    #[argh(option, default = "PathBuf::from(\"docs/bench\")")]
    out_dir: PathBuf,
}

/// Simulate agents against a running gateway until interrupted.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct RunArgs {
    /// gateway URL, e.g. http://127.0.0.1:18080
    #[argh(option)]
    gateway_url: String,
    /// master key ring file (device keys are derived from its current key)
    #[argh(option)]
    master_key_file: PathBuf,
    /// number of devices (default 100)
    #[argh(option, default = "100")]
    devices: usize,
    /// device name prefix (default sw-); devices are <prefix>000000, ...
    #[argh(option, default = "String::from(\"sw-\")")]
    prefix: String,
    /// long-poll wait; 0s = plain polling (default 30s)
    #[argh(option, default = "HumanDuration(Duration::from_secs(30))")]
    long_poll: HumanDuration,
    /// stop after this long (default: until Ctrl-C)
    #[argh(option)]
    duration: Option<HumanDuration>,
    /// agents per loopback source address, 0 = the kernel's choice (default 0: the gateway
    /// may not be on this machine)
    #[argh(option, default = "0")]
    agents_per_address: usize,
}

fn read_report(path: &std::path::Path) -> anyhow::Result<bench::BenchReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a bench report", path.display()))
}

fn parse_sizes(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .with_context(|| format!("bad size {p:?}"))
        })
        .collect()
}

/// The boolean flags, for `--flag=true|false` ([`apollo_process::args::split_equals`]).
const SWITCHES: &[&str] = &["--short", "--no-throughput"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Args = apollo_process::args::from_env(SWITCHES);
    match args.command {
        Command::Bench(b) => {
            let sizes = match &b.sizes {
                Some(s) => parse_sizes(s)?,
                None if b.short => vec![1000],
                None => vec![1000, 10_000, 100_000],
            };
            let heartbeat = b.heartbeat.map_or(
                if b.short {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(10)
                },
                |h| h.0,
            );
            let work_dir = b.work_dir.unwrap_or_else(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from(format!(".fleetsim/{secs}"))
            });
            eprintln!("logs and state in {}", work_dir.display());
            let open_files = apollo_fleetsim::limits::raise_open_files();
            eprintln!(
                "open files: soft {} / hard {} (were {} / {}){}",
                open_files.soft,
                open_files.hard,
                open_files.soft_before,
                open_files.hard_before,
                open_files
                    .note
                    .as_deref()
                    .map_or(String::new(), |n| format!("; {n}"))
            );
            let mut config = BenchConfig::new(b.repo, work_dir, b.bin_dir);
            config.replica_devices = b
                .replica_devices
                .unwrap_or_else(|| sizes.iter().copied().min().unwrap_or(1000));
            config.sizes = sizes;
            config.heartbeat = heartbeat;
            config.load_duration = Duration::from_secs(if b.short { 3 } else { 10 });
            config.kubeconfig = b.kubeconfig;
            config.namespace_prefix = b.namespace_prefix;
            config.phase_timeout = b.phase_timeout.map(|d| d.0);
            config.agents_per_address = b.agents_per_address;
            config.start_rate = b.start_rate;
            config.floor_duration = b
                .floor_duration
                .map_or(Duration::from_secs(if b.short { 2 } else { 5 }), |d| d.0);
            if let Some(r) = &b.replicas {
                config.replicas = parse_sizes(r)?;
            }
            if let Some(d) = b.lease_duration {
                config.lease_duration = d.0;
            }
            config.throughput = !b.no_throughput;
            let report_data = bench::run(&config, open_files).await?;
            println!("{}", report::render(&report_data));
            if let Some(path) = b.json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report_data)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("results written to {}", path.display());
            }
            if let Some(old) = b.compare {
                println!(
                    "{}",
                    apollo_fleetsim::compare::render(&read_report(&old)?, &report_data)
                );
            }
        }
        Command::Compare(c) => {
            println!(
                "{}",
                apollo_fleetsim::compare::render(&read_report(&c.old)?, &read_report(&c.new)?)
            );
        }
        Command::Charts(c) => {
            let report_data = read_report(&c.json)?;
            std::fs::create_dir_all(&c.out_dir)
                .with_context(|| format!("creating {}", c.out_dir.display()))?;
            for file in apollo_fleetsim::charts::render(&report_data, &c.out_dir)? {
                println!("wrote {}", file.display());
            }
        }
        Command::Serve304(a) => {
            let listener = tokio::net::TcpListener::bind(a.listen)
                .await
                .with_context(|| format!("binding {}", a.listen))?;
            apollo_fleetsim::load::spawn_baseline_304_on(listener)?;
            apollo_process::shutdown::signal().await;
        }
        Command::Run(r) => {
            let text = std::fs::read_to_string(&r.master_key_file)
                .with_context(|| format!("reading {}", r.master_key_file.display()))?;
            let ring = apollo_protocol::keys::MasterKeyRing::parse(&text)?;
            apollo_fleetsim::limits::raise_open_files();
            let mut fleet = Fleet::new(FleetOptions {
                gateway_url: r.gateway_url,
                master: ring.current().clone(),
                long_poll: r.long_poll.0,
                initial_heartbeat: Duration::from_secs(10),
                agents_per_address: r.agents_per_address,
                max_idle_per_address: None,
            });
            for i in 0..r.devices {
                fleet.start(&format!("{}{i:06}", r.prefix));
            }
            let stop = async {
                match r.duration {
                    Some(d) => tokio::time::sleep(d.0).await,
                    None => apollo_process::shutdown::signal().await,
                }
            };
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    _ = ticker.tick() => {
                        let (docs, reports) = fleet.totals();
                        println!("agents {} connected {} documents {docs} reports {reports}", fleet.len(), fleet.connected());
                    }
                }
            }
            fleet.shutdown();
        }
    }
    Ok(())
}
