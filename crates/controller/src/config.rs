//! Command line and environment: every flag has an `APOLLO_`-prefixed environment twin, and a
//! flag given on the command line wins over its variable.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use apollo_process::ConfigError;
use apollo_process::duration::HumanDuration;
use apollo_process::env::{Env, flag_or_env, switch_or_env};
use apollo_process::telemetry::LogFormat;
use argh::FromArgs;

use crate::inventory::InventoryKind;

/// Name of the Lease (and of the Deployment, ServiceAccount and RBAC objects).
pub const DEFAULT_LEASE_NAME: &str = "apollo-deviceprocess-controller";
/// Default inventory kind.
pub const DEFAULT_INVENTORY_KIND: &str = "NetworkSwitch.v1alpha1.azure.com";
/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// apollo-controller: fans every DeviceProcessDeployment out to one DeviceProcess per matching
/// inventory device (DaemonSet semantics). Each option has an environment twin, shown in
/// brackets; the option wins over the variable.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct Args {
    /// kubeconfig file; an empty value means in-cluster configuration; default: $KUBECONFIG,
    /// ~/.kube/config, then in-cluster \[APOLLO_KUBECONFIG\]
    #[argh(option)]
    pub kubeconfig: Option<String>,

    /// namespace to watch; default: all namespaces \[APOLLO_NAMESPACE\]
    #[argh(option)]
    pub namespace: Option<String>,

    /// inventory kind as Kind.version.group, resolved by discovery; any namespaced kind with
    /// labels (default: NetworkSwitch.v1alpha1.azure.com) \[APOLLO_INVENTORY_KIND\]
    #[argh(option)]
    pub inventory_kind: Option<String>,

    /// plural resource name of the inventory kind, to skip discovery (e.g. networkswitches)
    /// \[APOLLO_INVENTORY_PLURAL\]
    #[argh(option)]
    pub inventory_plural: Option<String>,

    /// deployments reconciled at the same time (default: 4) \[APOLLO_CONCURRENCY\]
    #[argh(option)]
    pub concurrency: Option<u16>,

    /// periodic re-check of every deployment, e.g. 10m; 0s turns it off (default: 10m)
    /// \[APOLLO_RESYNC_PERIOD\]
    #[argh(option)]
    pub resync_period: Option<HumanDuration>,

    /// first retry delay after a failed reconcile, doubled per consecutive failure
    /// (default: 500ms) \[APOLLO_RETRY_BASE\]
    #[argh(option)]
    pub retry_base: Option<HumanDuration>,

    /// longest retry delay after failures (default: 5m) \[APOLLO_RETRY_MAX\]
    #[argh(option)]
    pub retry_max: Option<HumanDuration>,

    /// listen address of /metrics (default: 127.0.0.1:8080; the in-cluster manifest uses
    /// 0.0.0.0:8080) \[APOLLO_METRICS_ADDR\]
    #[argh(option)]
    pub metrics_addr: Option<String>,

    /// listen address of /healthz and /readyz (default: 127.0.0.1:8081; the in-cluster
    /// manifest uses 0.0.0.0:8081) \[APOLLO_HEALTH_ADDR\]
    #[argh(option)]
    pub health_addr: Option<String>,

    /// run only while holding the coordination.k8s.io Lease, so that one of several replicas
    /// writes \[APOLLO_LEADER_ELECT\]
    #[argh(switch)]
    pub leader_elect: bool,

    /// namespace of the Lease (default: the pod's namespace, else "default")
    /// \[APOLLO_LEADER_ELECTION_NAMESPACE\]
    #[argh(option)]
    pub leader_election_namespace: Option<String>,

    /// name of the Lease (default: apollo-deviceprocess-controller) \[APOLLO_LEADER_ELECTION_ID\]
    #[argh(option)]
    pub leader_election_id: Option<String>,

    /// this replica's identity in the Lease (default: $POD_NAME or $HOSTNAME plus a random
    /// suffix) \[APOLLO_LEADER_ELECTION_IDENTITY\]
    #[argh(option)]
    pub leader_election_identity: Option<String>,

    /// how long a Lease stays valid without renewal (default: 15s) \[APOLLO_LEASE_DURATION\]
    #[argh(option)]
    pub lease_duration: Option<HumanDuration>,

    /// how long the leader keeps trying to renew before it gives up leadership and exits
    /// (default: 10s) \[APOLLO_RENEW_DEADLINE\]
    #[argh(option)]
    pub renew_deadline: Option<HumanDuration>,

    /// interval between Lease acquire/renew attempts (default: 2s) \[APOLLO_RETRY_PERIOD\]
    #[argh(option)]
    pub retry_period: Option<HumanDuration>,

    /// log format: text or json (default: text) \[APOLLO_LOG_FORMAT\]
    #[argh(option)]
    pub log_format: Option<LogFormat>,

    /// log filter when RUST_LOG is unset (default: info) \[APOLLO_LOG_FILTER\]
    #[argh(option)]
    pub log_filter: Option<String>,
}

/// Flags that take no value.
const SWITCHES: [&str; 1] = ["--leader-elect"];

/// Parses the command line (`argv[0]` first). Besides argh's `--flag value`, accepts the
/// `--flag=value` form that Kubernetes manifests and Go tools use (`--kubeconfig=` for an
/// empty value, `--leader-elect=true|false` for the switch).
pub fn parse_args(argv: &[String]) -> Result<Args, argh::EarlyExit> {
    let Some((cmd, rest)) = argv.split_first() else {
        return Args::from_args(&["apollo-controller"], &[]);
    };
    let args =
        apollo_process::args::split_equals(rest.iter().cloned(), &SWITCHES).map_err(|output| {
            argh::EarlyExit {
                output,
                status: Err(()),
            }
        })?;
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Args::from_args(&[cmd.as_str()], &refs)
}

/// Leader election settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity.
    pub identity: String,
    /// Validity of the Lease without renewal.
    pub lease_duration: Duration,
    /// The leader gives up when renewals fail for this long.
    pub renew_deadline: Duration,
    /// Interval between attempts.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Defaults for `namespace` and `identity` with client-go's timings (15s, 10s, 2s).
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: DEFAULT_LEASE_NAME.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "--lease-duration must be at least 1s".into(),
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ConfigError::Invalid(
                "--renew-deadline must be shorter than --lease-duration".into(),
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(ConfigError::Invalid(
                "--retry-period must be above zero and shorter than --renew-deadline".into(),
            ));
        }
        if self.identity.is_empty() || self.lease_name.is_empty() || self.namespace.is_empty() {
            return Err(ConfigError::Invalid(
                "leader election namespace, id and identity must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// Everything the controller needs to run, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `Some("")`: in-cluster; `Some(path)`: that kubeconfig; `None`: kube's inference.
    pub kubeconfig: Option<String>,
    /// Watched namespace; `None` = all namespaces.
    pub namespace: Option<String>,
    /// The inventory kind.
    pub inventory: InventoryKind,
    /// Concurrent reconciles.
    pub concurrency: u16,
    /// Periodic resync; `None` = only on change.
    pub resync_period: Option<Duration>,
    /// First retry delay after a failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// `/metrics` listener (`None`: not served).
    pub metrics_addr: Option<SocketAddr>,
    /// `/healthz`, `/readyz` listener (`None`: not served).
    pub health_addr: Option<SocketAddr>,
    /// Leader election, when on.
    pub leader_election: Option<LeaderElectionConfig>,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter.
    pub log_filter: String,
}

impl Config {
    /// Defaults for a controller of all namespaces without listeners or leader election
    /// (what tests start from).
    pub fn new() -> Self {
        Self {
            kubeconfig: None,
            namespace: None,
            inventory: InventoryKind::default(),
            concurrency: 4,
            resync_period: Some(Duration::from_secs(600)),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(300),
            metrics_addr: None,
            health_addr: None,
            leader_election: None,
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }

    /// Parses flags with their environment twins from `env`.
    pub fn from_args(args: Args, env: &dyn Env) -> Result<Self, ConfigError> {
        let defaults = Self::new();
        let kubeconfig = flag_or_env(args.kubeconfig, env, "APOLLO_KUBECONFIG")?;
        let namespace = flag_or_env(args.namespace, env, "APOLLO_NAMESPACE")?
            .filter(|ns: &String| !ns.is_empty());
        let kind = flag_or_env(args.inventory_kind, env, "APOLLO_INVENTORY_KIND")?
            .unwrap_or_else(|| DEFAULT_INVENTORY_KIND.to_owned());
        let mut inventory = InventoryKind::from_str(&kind)
            .map_err(|e| ConfigError::Invalid(format!("--inventory-kind: {e}")))?;
        if let Some(plural) = flag_or_env(args.inventory_plural, env, "APOLLO_INVENTORY_PLURAL")?
            .filter(|p: &String| !p.is_empty())
        {
            inventory.plural = Some(plural);
        } else if kind == DEFAULT_INVENTORY_KIND {
            inventory.plural = Some("networkswitches".into());
        }
        let concurrency = flag_or_env(args.concurrency, env, "APOLLO_CONCURRENCY")?
            .unwrap_or(defaults.concurrency);
        if concurrency == 0 {
            return Err(ConfigError::Invalid(
                "--concurrency must be at least 1".into(),
            ));
        }
        let resync_period = match flag_or_env(args.resync_period, env, "APOLLO_RESYNC_PERIOD")? {
            Some(d) if d.0.is_zero() => None,
            Some(d) => Some(d.0),
            None => defaults.resync_period,
        };
        let retry_base = flag_or_env(args.retry_base, env, "APOLLO_RETRY_BASE")?
            .map_or(defaults.retry_base, |d| d.0);
        let retry_max = flag_or_env(args.retry_max, env, "APOLLO_RETRY_MAX")?
            .map_or(defaults.retry_max, |d| d.0);
        if retry_base.is_zero() || retry_max < retry_base {
            return Err(ConfigError::Invalid(
                "--retry-base must be above zero and not above --retry-max".into(),
            ));
        }
        let metrics_addr = parse_addr(
            flag_or_env(args.metrics_addr, env, "APOLLO_METRICS_ADDR")?,
            "127.0.0.1:8080",
            "--metrics-addr",
        )?;
        let health_addr = parse_addr(
            flag_or_env(args.health_addr, env, "APOLLO_HEALTH_ADDR")?,
            "127.0.0.1:8081",
            "--health-addr",
        )?;
        let leader_election = if switch_or_env(args.leader_elect, env, "APOLLO_LEADER_ELECT")? {
            let namespace = flag_or_env(
                args.leader_election_namespace,
                env,
                "APOLLO_LEADER_ELECTION_NAMESPACE",
            )?
            .filter(|ns: &String| !ns.is_empty())
            .or_else(|| env.var("POD_NAMESPACE").filter(|ns| !ns.is_empty()))
            .or_else(|| {
                std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".into());
            let identity = flag_or_env(
                args.leader_election_identity,
                env,
                "APOLLO_LEADER_ELECTION_IDENTITY",
            )?
            .filter(|id: &String| !id.is_empty())
            .unwrap_or_else(|| default_identity(env));
            let mut le = LeaderElectionConfig::new(namespace, identity);
            if let Some(id) =
                flag_or_env(args.leader_election_id, env, "APOLLO_LEADER_ELECTION_ID")?
            {
                le.lease_name = id;
            }
            if let Some(d) = flag_or_env(args.lease_duration, env, "APOLLO_LEASE_DURATION")? {
                le.lease_duration = d.0;
            }
            if let Some(d) = flag_or_env(args.renew_deadline, env, "APOLLO_RENEW_DEADLINE")? {
                le.renew_deadline = d.0;
            }
            if let Some(d) = flag_or_env(args.retry_period, env, "APOLLO_RETRY_PERIOD")? {
                le.retry_period = d.0;
            }
            le.validate()?;
            Some(le)
        } else {
            None
        };
        let log_format =
            flag_or_env(args.log_format, env, "APOLLO_LOG_FORMAT")?.unwrap_or(defaults.log_format);
        let log_filter =
            flag_or_env(args.log_filter, env, "APOLLO_LOG_FILTER")?.unwrap_or(defaults.log_filter);
        Ok(Self {
            kubeconfig,
            namespace,
            inventory,
            concurrency,
            resync_period,
            retry_base,
            retry_max,
            metrics_addr,
            health_addr,
            leader_election,
            log_format,
            log_filter,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// An address, or `None` for an empty value ("do not serve").
fn parse_addr(
    value: Option<String>,
    default: &str,
    flag: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    if value.is_empty() {
        return Ok(None);
    }
    // Accept ":8080" as Go tools do, meaning every interface.
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.clone()
    };
    full.parse().map(Some).map_err(|_| {
        ConfigError::Invalid(format!(
            "{flag}: {value:?} is not an address such as 127.0.0.1:8080"
        ))
    })
}

fn default_identity(env: &dyn Env) -> String {
    let host = env
        .var("POD_NAME")
        .or_else(|| env.var("HOSTNAME"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "apollo-controller".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &id[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_process::env::MapEnv;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let argv: Vec<String> = std::iter::once("apollo-controller")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        let args = parse_args(&argv).map_err(|e| e.output)?;
        Config::from_args(args, &MapEnv::from_pairs(env.iter().copied())).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.namespace, None);
        assert_eq!(c.kubeconfig, None);
        assert_eq!(c.inventory.kind, "NetworkSwitch");
        assert_eq!(c.inventory.group, "azure.com");
        assert_eq!(c.inventory.version, "v1alpha1");
        assert_eq!(c.inventory.plural.as_deref(), Some("networkswitches"));
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.resync_period, Some(Duration::from_secs(600)));
        assert_eq!(c.metrics_addr, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.health_addr, Some("127.0.0.1:8081".parse().unwrap()));
        assert!(c.leader_election.is_none());
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_win_over_env_and_env_fills_in() {
        let c = parse(
            &[
                "--namespace",
                "flag-ns",
                "--kubeconfig",
                "",
                "--metrics-addr",
                ":9090",
            ],
            &[
                ("APOLLO_NAMESPACE", "env-ns"),
                ("APOLLO_INVENTORY_KIND", "Router.v1.example.com"),
                ("APOLLO_CONCURRENCY", "9"),
                ("APOLLO_RESYNC_PERIOD", "0s"),
                ("APOLLO_HEALTH_ADDR", ""),
                ("APOLLO_LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("flag-ns"));
        assert_eq!(c.kubeconfig.as_deref(), Some(""));
        assert_eq!(c.inventory.kind, "Router");
        assert_eq!(c.inventory.group, "example.com");
        assert_eq!(c.inventory.plural, None);
        assert_eq!(c.concurrency, 9);
        assert_eq!(c.resync_period, None);
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(c.health_addr, None);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn equals_form_as_in_manifests() {
        let c = parse(
            &[
                "--kubeconfig=",
                "--namespace=ns=odd",
                "--metrics-addr=0.0.0.0:8080",
                "--leader-elect=true",
                "--leader-election-identity=me",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.kubeconfig.as_deref(), Some(""));
        assert_eq!(c.namespace.as_deref(), Some("ns=odd"));
        assert_eq!(c.metrics_addr, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(c.leader_election.unwrap().identity, "me");
        let c = parse(&["--leader-elect=false"], &[]).unwrap();
        assert!(c.leader_election.is_none());
        assert!(parse(&["--leader-elect=maybe"], &[]).is_err());
    }

    #[test]
    fn leader_election_from_env() {
        let c = parse(
            &["--retry-period", "100ms"],
            &[
                ("APOLLO_LEADER_ELECT", "true"),
                ("APOLLO_LEADER_ELECTION_NAMESPACE", "ops"),
                ("APOLLO_LEASE_DURATION", "2s"),
                ("APOLLO_RENEW_DEADLINE", "1s"),
                ("POD_NAME", "ctrl-0"),
            ],
        )
        .unwrap();
        let le = c.leader_election.unwrap();
        assert_eq!(le.namespace, "ops");
        assert_eq!(le.lease_name, DEFAULT_LEASE_NAME);
        assert!(le.identity.starts_with("ctrl-0_"), "{}", le.identity);
        assert_eq!(le.lease_duration, Duration::from_secs(2));
        assert_eq!(le.renew_deadline, Duration::from_secs(1));
        assert_eq!(le.retry_period, Duration::from_millis(100));
    }

    #[test]
    fn leader_switch_flag_and_pod_namespace() {
        let c = parse(
            &["--leader-elect", "--leader-election-identity", "me"],
            &[("POD_NAMESPACE", "apollo-system")],
        )
        .unwrap();
        let le = c.leader_election.unwrap();
        assert_eq!(le.namespace, "apollo-system");
        assert_eq!(le.identity, "me");
        assert_eq!(le.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse(&[], &[("APOLLO_CONCURRENCY", "many")]).unwrap_err();
        assert!(err.contains("APOLLO_CONCURRENCY"), "{err}");
        let err = parse(&[], &[("APOLLO_RESYNC_PERIOD", "10")]).unwrap_err();
        assert!(err.contains("APOLLO_RESYNC_PERIOD"), "{err}");
        let err = parse(&["--inventory-kind", "Switch"], &[]).unwrap_err();
        assert!(err.contains("--inventory-kind"), "{err}");
        let err = parse(&["--metrics-addr", "nowhere"], &[]).unwrap_err();
        assert!(err.contains("--metrics-addr"), "{err}");
        let err = parse(
            &[
                "--leader-elect",
                "--lease-duration",
                "5s",
                "--renew-deadline",
                "6s",
            ],
            &[],
        )
        .unwrap_err();
        assert!(err.contains("--renew-deadline"), "{err}");
        let err = parse(&["--concurrency", "0"], &[]).unwrap_err();
        assert!(err.contains("--concurrency"), "{err}");
        let err = parse(&[], &[("APOLLO_LEADER_ELECT", "perhaps")]).unwrap_err();
        assert!(err.contains("APOLLO_LEADER_ELECT"), "{err}");
    }

    #[test]
    fn help_lists_every_flag_with_its_env_twin() {
        let help = Args::from_args(&["apollo-controller"], &["--help"])
            .unwrap_err()
            .output;
        for (flag, env) in [
            ("--kubeconfig", "APOLLO_KUBECONFIG"),
            ("--namespace", "APOLLO_NAMESPACE"),
            ("--inventory-kind", "APOLLO_INVENTORY_KIND"),
            ("--inventory-plural", "APOLLO_INVENTORY_PLURAL"),
            ("--concurrency", "APOLLO_CONCURRENCY"),
            ("--resync-period", "APOLLO_RESYNC_PERIOD"),
            ("--retry-base", "APOLLO_RETRY_BASE"),
            ("--retry-max", "APOLLO_RETRY_MAX"),
            ("--metrics-addr", "APOLLO_METRICS_ADDR"),
            ("--health-addr", "APOLLO_HEALTH_ADDR"),
            ("--leader-elect", "APOLLO_LEADER_ELECT"),
            (
                "--leader-election-namespace",
                "APOLLO_LEADER_ELECTION_NAMESPACE",
            ),
            ("--leader-election-id", "APOLLO_LEADER_ELECTION_ID"),
            (
                "--leader-election-identity",
                "APOLLO_LEADER_ELECTION_IDENTITY",
            ),
            ("--lease-duration", "APOLLO_LEASE_DURATION"),
            ("--renew-deadline", "APOLLO_RENEW_DEADLINE"),
            ("--retry-period", "APOLLO_RETRY_PERIOD"),
            ("--log-format", "APOLLO_LOG_FORMAT"),
            ("--log-filter", "APOLLO_LOG_FILTER"),
        ] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
            assert!(help.contains(env), "{env} missing from --help:\n{help}");
        }
    }
}
