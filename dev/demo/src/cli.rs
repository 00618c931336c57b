//! Command line (argh) and the timings it selects.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use argh::FromArgs;

/// Apollo DeviceProcess demo: performs every step of the demo runbook, checks each outcome,
/// measures each timing and ends with PASS/FAIL per step (exit 0 only if all pass).
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub cmd: Cmd,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Cmd {
    Local(LocalArgs),
    Cluster(ClusterArgs),
    Containers(ContainersArgs),
    ContainersHa(ContainersHaArgs),
}

impl Cmd {
    /// The flags every mode shares, in one form.
    pub fn common(&self) -> CommonFlags {
        match self {
            Cmd::Local(a) => CommonFlags {
                logs_dir: a.logs_dir.clone(),
                namespace: a.namespace.clone(),
                repo: a.repo.clone(),
                fast: a.fast,
                heartbeat: a.heartbeat.clone(),
                stale_after: a.stale_after.clone(),
                no_kubectl: a.no_kubectl,
                pause: a.pause,
            },
            Cmd::Cluster(a) => CommonFlags {
                logs_dir: a.logs_dir.clone(),
                namespace: a.namespace.clone(),
                repo: a.repo.clone(),
                fast: false,
                heartbeat: Some(a.heartbeat.clone()),
                stale_after: a.stale_after.clone(),
                no_kubectl: a.no_kubectl,
                pause: a.pause,
            },
            Cmd::Containers(a) => CommonFlags {
                logs_dir: a.logs_dir.clone(),
                namespace: a.namespace.clone(),
                repo: a.repo.clone(),
                fast: a.fast,
                heartbeat: a.heartbeat.clone(),
                stale_after: a.stale_after.clone(),
                no_kubectl: a.no_kubectl,
                pause: a.pause,
            },
            Cmd::ContainersHa(a) => CommonFlags {
                logs_dir: a.logs_dir.clone(),
                namespace: a.namespace.clone(),
                repo: a.repo.clone(),
                // The replica scenarios always run at the short timings their flags set.
                fast: true,
                heartbeat: Some(a.heartbeat.clone()),
                stale_after: Some(a.stale_after.clone()),
                no_kubectl: true,
                pause: false,
            },
        }
    }
}

/// The flags of the modes that mean the same in each. argh cannot flatten one struct into
/// several subcommands, so each subcommand declares them (with help text of its own) and
/// [`Cmd::common`] gathers them here; the modes read them from here only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonFlags {
    /// `--logs-dir`.
    pub logs_dir: Option<PathBuf>,
    /// `--namespace`.
    pub namespace: String,
    /// `--repo`.
    pub repo: Option<PathBuf>,
    /// `--fast`: the short timings.
    pub fast: bool,
    /// `--heartbeat`: overrides the heartbeat `fast` selects.
    pub heartbeat: Option<String>,
    /// `--stale-after`: overrides the stale window (default 3 x heartbeat).
    pub stale_after: Option<String>,
    /// `--no-kubectl`.
    pub no_kubectl: bool,
    /// `--pause`: wait for Enter before each step.
    pub pause: bool,
}

impl CommonFlags {
    /// The timings the flags select.
    pub fn timings(&self) -> Result<Timings> {
        Timings::from_flags(
            self.fast,
            self.heartbeat.as_deref(),
            self.stale_after.as_deref(),
        )
    }
}

/// run everything as local processes: the development API server (unless --kubeconfig names
/// an existing cluster), controller, gateway and two agents; no containers, no network
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "local")]
pub struct LocalArgs {
    /// short intervals (1s heartbeat, 3s stale window): the whole run takes well under a
    /// minute; default is the runbook's 10s heartbeat and 30s stale window
    #[argh(switch)]
    pub fast: bool,
    /// directory holding apollo-devcluster, apollo-controller, apollo-gateway and apollo-agent
    /// (default: the newest of bin/, target/debug/, target/release/, then PATH)
    #[argh(option)]
    pub bin_dir: Option<PathBuf>,
    /// where component logs go (default .demo/logs-\<UTC timestamp\>/)
    #[argh(option)]
    pub logs_dir: Option<PathBuf>,
    /// use the existing cluster of this kubeconfig instead of starting the development API
    /// server [env APOLLO_DEMO_KUBECONFIG]
    #[argh(option)]
    pub kubeconfig: Option<PathBuf>,
    /// namespace to work in (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    pub namespace: String,
    /// repository root holding k8s/ (default: found from the current directory upwards)
    #[argh(option)]
    pub repo: Option<PathBuf>,
    /// override the gateway heartbeat interval, e.g. 2s
    #[argh(option)]
    pub heartbeat: Option<String>,
    /// override the stale window, e.g. 6s (default 3 x heartbeat)
    #[argh(option)]
    pub stale_after: Option<String>,
    /// do not run kubectl even if it is installed (show the client's view instead)
    #[argh(switch)]
    pub no_kubectl: bool,
    /// after the report, keep everything running until Ctrl-C (for poking around by hand)
    #[argh(switch)]
    pub hold: bool,
    /// presenter mode: wait for Enter before each step
    #[argh(switch)]
    pub pause: bool,
    /// after the runbook, also roll a template change to this many extra switches (own agents),
    /// 2 at a time, pausing and resuming half-way (docs/DEMO.md, optional step)
    #[argh(option)]
    pub rollout_devices: Option<usize>,
}

/// run the steps against a cluster where controller and gateway are already deployed (the
/// kind demo), driving the agents through docker compose
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "cluster")]
pub struct ClusterArgs {
    /// kubeconfig of the cluster (default: $KUBECONFIG, then ~/.kube/config)
    #[argh(option)]
    pub kubeconfig: Option<PathBuf>,
    /// namespace the controller and gateway serve (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    pub namespace: String,
    /// the gateway as seen from this machine (default http://127.0.0.1:18080)
    #[argh(option, default = "String::from(\"http://127.0.0.1:18080\")")]
    pub gateway_url: String,
    /// the gateway's metrics listener (--metrics-addr) as seen from this machine (default
    /// http://127.0.0.1:19090)
    #[argh(option, default = "String::from(\"http://127.0.0.1:19090\")")]
    pub gateway_metrics_url: String,
    /// how agents run: compose (docker compose services agent-\<device\>) (default compose)
    #[argh(option, default = "String::from(\"compose\")")]
    pub agents: String,
    /// compose file with the agent services (default: docker compose's own lookup)
    #[argh(option)]
    pub compose_file: Option<PathBuf>,
    /// compose project name
    #[argh(option)]
    pub compose_project: Option<String>,
    /// heartbeat interval the deployed gateway uses (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub heartbeat: String,
    /// stale window the deployed gateway uses (default 3 x heartbeat)
    #[argh(option)]
    pub stale_after: Option<String>,
    /// where the demo log goes (default .demo/logs-\<UTC timestamp\>/)
    #[argh(option)]
    pub logs_dir: Option<PathBuf>,
    /// repository root holding k8s/ (default: found from the current directory upwards)
    #[argh(option)]
    pub repo: Option<PathBuf>,
    /// do not run kubectl even if it is installed
    #[argh(switch)]
    pub no_kubectl: bool,
    /// presenter mode: wait for Enter before each step
    #[argh(switch)]
    pub pause: bool,
}

/// run every component in a local container: the development API server, controller and
/// gateway from the images `make docker-images` builds, on a docker network of their own, and
/// the agents with docker compose (compose.nix's file) reaching the gateway through its port
/// published on the host; removes everything it created when it ends (Ctrl-C too)
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "containers")]
pub struct ContainersArgs {
    /// short intervals (1s heartbeat, 3s stale window); default is the runbook's 10s
    /// heartbeat and 30s stale window
    #[argh(switch)]
    pub fast: bool,
    /// tag of the images apollo/{devcluster,controller,gateway,agent} (default dev)
    #[argh(option, default = "String::from(\"dev\")")]
    pub image_tag: String,
    /// host address the gateway's port is published on (default 0.0.0.0, as the runbook's
    /// port-forward: compose agents on the docker bridge reach the host there, not on
    /// 127.0.0.1); e.g. the docker bridge's address 172.17.0.1 keeps it off other interfaces
    #[argh(option, default = "String::from(\"0.0.0.0\")")]
    pub publish_address: String,
    /// host port of the gateway (default: a free one)
    #[argh(option)]
    pub gateway_port: Option<u16>,
    /// where component logs go (default .demo/logs-\<UTC timestamp\>/)
    #[argh(option)]
    pub logs_dir: Option<PathBuf>,
    /// namespace to work in (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    pub namespace: String,
    /// repository root holding k8s/ (default: found from the current directory upwards)
    #[argh(option)]
    pub repo: Option<PathBuf>,
    /// override the gateway heartbeat interval, e.g. 2s
    #[argh(option)]
    pub heartbeat: Option<String>,
    /// override the stale window, e.g. 6s (default 3 x heartbeat)
    #[argh(option)]
    pub stale_after: Option<String>,
    /// do not run kubectl even if it is installed
    #[argh(switch)]
    pub no_kubectl: bool,
    /// presenter mode: wait for Enter before each step
    #[argh(switch)]
    pub pause: bool,
}

/// the gateway's replica scenarios in containers: the development API server, controller and
/// three gateways (one container each, on an API network and an agents' network), agents in
/// docker compose listing every gateway; then docker kill of one gateway, its restart, and
/// docker network disconnect/connect of one from the API network, each checked for ownership
/// moving in time without a flap, an Event or a second writer; removes everything it created
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "containers-ha")]
pub struct ContainersHaArgs {
    /// tag of the images apollo/{devcluster,controller,gateway,agent} (default dev)
    #[argh(option, default = "String::from(\"dev\")")]
    pub image_tag: String,
    /// number of switches, one compose agent each (default 9)
    #[argh(option, default = "9")]
    pub devices: usize,
    /// the gateways' heartbeat interval (default 1s)
    #[argh(option, default = "String::from(\"1s\")")]
    pub heartbeat: String,
    /// the gateways' stale window (default 5s)
    #[argh(option, default = "String::from(\"5s\")")]
    pub stale_after: String,
    /// each gateway's Lease duration, --lease-duration (default 4s)
    #[argh(option, default = "String::from(\"4s\")")]
    pub lease_duration: String,
    /// host address the gateways' ports are published on (default 0.0.0.0: compose agents
    /// on the docker bridge reach the host there)
    #[argh(option, default = "String::from(\"0.0.0.0\")")]
    pub publish_address: String,
    /// where component logs go (default .demo/logs-\<UTC timestamp\>/)
    #[argh(option)]
    pub logs_dir: Option<PathBuf>,
    /// namespace to work in (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    pub namespace: String,
    /// repository root holding k8s/ (default: found from the current directory upwards)
    #[argh(option)]
    pub repo: Option<PathBuf>,
}

/// Every interval and deadline the demo uses.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Gateway heartbeat interval (what agents are told).
    pub heartbeat: Duration,
    /// Silence after which a device is stale.
    pub stale: Duration,
    /// "Within seconds": DeviceProcesses created, status written, new hash observed.
    pub within: Duration,
    /// Quiet period of step 5 (several heartbeats).
    pub quiet: Duration,
    /// Tolerance on the stale transition (sweep granularity, scheduling).
    pub stale_slack: Duration,
    /// Long-poll wait agents use (`--long-poll`); `None` leaves the agent's default.
    pub long_poll: Option<Duration>,
    /// Poll interval of checks.
    pub poll: Duration,
    /// Whether these are the short intervals of `--fast`.
    pub fast: bool,
}

impl Timings {
    /// The runbook's: 10 s heartbeat, 30 s stale window.
    pub fn runbook() -> Timings {
        Timings::with(Duration::from_secs(10), None, false)
    }

    /// `--fast`: 1 s heartbeat, 3 s stale window. (Agents clamp the heartbeat they are asked
    /// for to at least 1 s, docs/PROTOCOL.md, so a shorter one would make them look stale.)
    pub fn fast() -> Timings {
        Timings::with(Duration::from_secs(1), None, true)
    }

    pub fn with(heartbeat: Duration, stale: Option<Duration>, fast: bool) -> Timings {
        let stale = stale.unwrap_or(heartbeat * 3);
        Timings {
            heartbeat,
            stale,
            within: Duration::from_secs(5),
            quiet: (heartbeat * 3).max(Duration::from_secs(2)),
            stale_slack: heartbeat + Duration::from_secs(1),
            long_poll: if fast {
                Some(Duration::from_secs(2))
            } else {
                Some(heartbeat)
            },
            poll: (heartbeat / 5).clamp(Duration::from_millis(50), Duration::from_millis(250)),
            fast,
        }
    }

    /// These timings for agents in docker compose, which run as compose.nix describes them:
    /// with their default 30 s long poll.
    pub fn for_compose_agents(self) -> Timings {
        Timings {
            long_poll: None,
            ..self
        }
    }

    /// Earliest acceptable stale transition after the agent stopped: its last heartbeat may
    /// have been up to one (jittered) heartbeat before the stop.
    pub fn stale_min(&self) -> Duration {
        self.stale.saturating_sub(self.heartbeat * 3 / 2)
    }

    /// Latest acceptable stale transition after the agent stopped.
    pub fn stale_max(&self) -> Duration {
        self.stale + self.stale_slack
    }

    /// Resolves the timing flags.
    pub fn from_flags(fast: bool, heartbeat: Option<&str>, stale: Option<&str>) -> Result<Timings> {
        let base = if fast {
            Timings::fast()
        } else {
            Timings::runbook()
        };
        let hb = heartbeat.map(parse_duration).transpose()?;
        let st = stale.map(parse_duration).transpose()?;
        if hb.is_none() && st.is_none() {
            return Ok(base);
        }
        Ok(Timings::with(hb.unwrap_or(base.heartbeat), st, fast))
    }
}

/// `500ms`, `2s`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| anyhow!("invalid duration {s:?}: {e} (examples: 500ms, 2s, 1m)"))?;
    if d.is_zero() {
        return Err(anyhow!("invalid duration {s:?}: must be positive"));
    }
    Ok(d)
}

/// Go-style duration text for flags (`500ms`, `1.5s`, `30s`).
pub fn flag_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings() {
        let f = Timings::fast();
        assert_eq!(f.heartbeat, Duration::from_secs(1));
        assert_eq!(f.stale, Duration::from_secs(3));
        assert!(f.stale_min() <= f.stale && f.stale <= f.stale_max());
        let r = Timings::runbook();
        assert_eq!(r.stale, Duration::from_secs(30));
        assert_eq!(r.quiet, Duration::from_secs(30));
        let o = Timings::from_flags(true, Some("1s"), Some("4s")).unwrap();
        assert_eq!(
            (o.heartbeat, o.stale),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
        assert!(Timings::from_flags(false, Some("soon"), None).is_err());
        assert_eq!(flag_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(flag_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn every_mode_gathers_its_common_flags() {
        let cli = Cli::from_args(
            &["apollo-demo"],
            &[
                "containers",
                "--namespace",
                "n",
                "--heartbeat",
                "2s",
                "--pause",
            ],
        )
        .unwrap();
        let c = cli.cmd.common();
        assert_eq!(
            (
                c.namespace.as_str(),
                c.heartbeat.as_deref(),
                c.pause,
                c.fast
            ),
            ("n", Some("2s"), true, false)
        );
        let cli = Cli::from_args(&["apollo-demo"], &["cluster"]).unwrap();
        let t = cli.cmd.common().timings().unwrap();
        assert_eq!(t.heartbeat, Duration::from_secs(10));
        let cli = Cli::from_args(&["apollo-demo"], &["containers-ha"]).unwrap();
        let t = cli.cmd.common().timings().unwrap();
        assert_eq!(
            (t.heartbeat, t.stale, t.fast),
            (Duration::from_secs(1), Duration::from_secs(5), true)
        );
    }

    #[test]
    fn parses_subcommands() {
        let cli =
            Cli::from_args(&["apollo-demo"], &["local", "--fast", "--bin-dir", "bin"]).unwrap();
        match cli.cmd {
            Cmd::Local(a) => {
                assert!(a.fast);
                assert_eq!(a.bin_dir, Some(PathBuf::from("bin")));
                assert_eq!(a.namespace, "default");
            }
            Cmd::Cluster(_) | Cmd::Containers(_) | Cmd::ContainersHa(_) => {
                panic!("wrong subcommand")
            }
        }
        let cli = Cli::from_args(
            &["apollo-demo"],
            &[
                "cluster",
                "--kubeconfig",
                "k",
                "--gateway-url",
                "http://127.0.0.1:18080",
                "--agents",
                "compose",
            ],
        )
        .unwrap();
        assert!(matches!(cli.cmd, Cmd::Cluster(ref c) if c.agents == "compose"));
        let cli = Cli::from_args(&["apollo-demo"], &["containers", "--fast"]).unwrap();
        assert!(matches!(
            cli.cmd,
            Cmd::Containers(ref c) if c.fast && c.image_tag == "dev" && c.publish_address == "0.0.0.0"
        ));
        let cli = Cli::from_args(
            &["apollo-demo"],
            &["containers-ha", "--lease-duration", "6s", "--devices", "12"],
        )
        .unwrap();
        assert!(matches!(
            cli.cmd,
            Cmd::ContainersHa(ref c) if c.lease_duration == "6s" && c.devices == 12
                && c.heartbeat == "1s" && c.stale_after == "5s" && c.image_tag == "dev"
        ));
    }
}
