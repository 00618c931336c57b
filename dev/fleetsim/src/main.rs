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

/// Run the benchmarks against the development API server and the built binaries.
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
}

fn parse_sizes(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .with_context(|| format!("bad size {p:?}"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Args = argh::from_env();
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
            let config = BenchConfig {
                work_dir,
                repo: b.repo,
                bin_dir: b.bin_dir,
                sizes,
                heartbeat,
                steady_heartbeats: 3,
                load_duration: Duration::from_secs(if b.short { 3 } else { 10 }),
                load_concurrency: 32,
                throughput_devices: 2048,
            };
            let report_data = bench::run(&config).await?;
            println!("{}", report::render(&report_data));
            if let Some(path) = b.json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report_data)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("results written to {}", path.display());
            }
        }
        Command::Charts(c) => {
            let text = std::fs::read_to_string(&c.json)
                .with_context(|| format!("reading {}", c.json.display()))?;
            let report_data: bench::BenchReport = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a bench report", c.json.display()))?;
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
            let mut fleet = Fleet::new(FleetOptions {
                gateway_url: r.gateway_url,
                master: ring.current().clone(),
                long_poll: r.long_poll.0,
                initial_heartbeat: Duration::from_secs(10),
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
