//! Agent configuration: command-line flags (argh) mirroring environment variables, resolved
//! against an [`Env`] so that it is testable without touching the process environment.
//!
//! Precedence: a flag wins over its environment variable. The device key comes from
//! `--device-key-file`, else `APOLLO_DEVICE_KEY` (the key itself), else
//! `APOLLO_DEVICE_KEY_FILE`; setting both environment variables is an error.

use std::path::PathBuf;
use std::time::Duration;

pub use apollo_process::env::{Env, ProcessEnv};
pub use apollo_process::telemetry::LogFormat;
use apollo_protocol::keys::{DeviceKey, KeyError};
use apollo_protocol::wire::{MAX_WAIT, valid_device_name};
use argh::FromArgs;

pub const ENV_DEVICE_NAME: &str = "APOLLO_DEVICE_NAME";
pub const ENV_GATEWAY_URL: &str = "APOLLO_GATEWAY_URL";
pub const ENV_DEVICE_KEY: &str = "APOLLO_DEVICE_KEY";
pub const ENV_DEVICE_KEY_FILE: &str = "APOLLO_DEVICE_KEY_FILE";
pub const ENV_LONG_POLL: &str = "APOLLO_LONG_POLL";
pub const ENV_LOG_FORMAT: &str = "APOLLO_LOG_FORMAT";
pub const ENV_GATEWAY_CA_FILE: &str = "APOLLO_GATEWAY_CA_FILE";

/// Default long-poll wait.
pub const DEFAULT_LONG_POLL: Duration = Duration::from_secs(30);

/// Apollo device agent: fetches this device's desired state from the device gateway (long
/// poll with ETag), verifies the gateway's signature, and reports the observed spec hashes
/// at once on change and as a heartbeat otherwise. Every flag has an environment twin.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct Args {
    /// this device's name, a DNS-1123 subdomain [env APOLLO_DEVICE_NAME]
    #[argh(option)]
    pub device: Option<String>,
    /// the gateway's base URL, e.g. http://127.0.0.1:8080; several separated by commas
    /// (gateway replicas at separate addresses): the agent fails over between them
    /// [env APOLLO_GATEWAY_URL]
    #[argh(option)]
    pub gateway_url: Option<String>,
    /// file holding the device key (apollo-dk1:...) [env APOLLO_DEVICE_KEY_FILE; or the key
    /// itself in APOLLO_DEVICE_KEY]
    #[argh(option)]
    pub device_key_file: Option<PathBuf>,
    /// long-poll wait, e.g. 30s (default), 500ms; 0 = plain polling at the heartbeat interval;
    /// at most 60s [env APOLLO_LONG_POLL]
    #[argh(option)]
    pub long_poll: Option<String>,
    /// PEM file of the CA certificates to trust for an https:// gateway URL (builds with the
    /// `tls` feature only) [env APOLLO_GATEWAY_CA_FILE]
    #[argh(option)]
    pub gateway_ca_file: Option<PathBuf>,
    /// log format: text (default) or json [env APOLLO_LOG_FORMAT]
    #[argh(option)]
    pub log_format: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// Configuration errors: each names the flag and variable to fix. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no device name: set --device or {ENV_DEVICE_NAME}")]
    MissingDevice,
    #[error(
        "invalid device name {0:?}: must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.'; at most 253 characters)"
    )]
    InvalidDevice(String),
    #[error("no gateway URL: set --gateway-url or {ENV_GATEWAY_URL}")]
    MissingGatewayUrl,
    #[error("invalid gateway URL {url:?}: {why}")]
    InvalidGatewayUrl { url: String, why: &'static str },
    #[error("no device key: set --device-key-file, {ENV_DEVICE_KEY} or {ENV_DEVICE_KEY_FILE}")]
    MissingKey,
    #[error("both {ENV_DEVICE_KEY} and {ENV_DEVICE_KEY_FILE} are set: set only one")]
    AmbiguousKey,
    #[error("cannot read device key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid device key from {origin}: {source}")]
    InvalidKey { origin: String, source: KeyError },
    #[error("the device key is for device {key_device:?}, but this agent runs as {device:?}")]
    KeyDeviceMismatch { key_device: String, device: String },
    #[error(
        "invalid long-poll wait {0:?} (--long-poll / {ENV_LONG_POLL}): expected a duration like 30s or 500ms, or 0"
    )]
    InvalidLongPoll(String),
    #[error(
        "long-poll wait {0:?} (--long-poll / {ENV_LONG_POLL}) exceeds the protocol's maximum of 60s"
    )]
    LongPollTooLong(String),
    #[error("cannot read gateway CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid gateway CA file {path}: {why}")]
    InvalidCa { path: PathBuf, why: String },
    #[error("a gateway CA file is set but the gateway URL is not https://")]
    CaWithoutHttps,
    #[error("invalid log format {0:?} (--log-format / {ENV_LOG_FORMAT}): expected text or json")]
    InvalidLogFormat(String),
}

/// The agent's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub device: String,
    /// `http://host:port` or `https://host:port` (no trailing slash, no path); several
    /// separated by commas: the agent fails over between them.
    pub gateway_base: String,
    /// PEM CA certificates for an `https://` gateway (feature `tls`).
    pub gateway_ca: Option<Vec<u8>>,
    pub key: DeviceKey,
    /// Long-poll wait; zero = plain polling.
    pub long_poll: Duration,
    pub log_format: LogFormat,
    /// Heartbeat interval before the first ack.
    pub initial_heartbeat: Duration,
    /// Bounds the gateway's requested heartbeat interval is clamped to.
    pub heartbeat_min: Duration,
    pub heartbeat_max: Duration,
    /// First retry delay and its cap (delays double, jittered to 50–100%).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Timeout of a request that is not a long poll (a long poll gets wait + this).
    pub request_timeout: Duration,
    /// Least time between the starts of two desired-state requests (guards against a
    /// gateway that answers long polls at once).
    pub min_poll_gap: Duration,
    /// While one kind of failure lasts, how often a `still failing` warning with the count is
    /// logged (the first failure and the recovery are always logged).
    pub failure_log_interval: Duration,
}

impl Config {
    /// A configuration with the reference defaults.
    pub fn new(device: &str, gateway_base: &str, key: DeviceKey) -> Self {
        Config {
            device: device.to_string(),
            gateway_base: gateway_base.trim_end_matches('/').to_string(),
            gateway_ca: None,
            key,
            long_poll: DEFAULT_LONG_POLL,
            log_format: LogFormat::Text,
            initial_heartbeat: Duration::from_secs(10),
            heartbeat_min: Duration::from_secs(1),
            heartbeat_max: Duration::from_secs(300),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            min_poll_gap: Duration::from_secs(1),
            failure_log_interval: Duration::from_secs(60),
        }
    }

    /// Resolve flags against the environment, reading the key file if one is named.
    pub fn resolve(args: &Args, env: &dyn Env) -> Result<Config, ConfigError> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let device = nonempty(args.device.clone())
            .or_else(|| nonempty(env.var(ENV_DEVICE_NAME)))
            .ok_or(ConfigError::MissingDevice)?;
        let device = device.trim().to_string();
        if !valid_device_name(&device) {
            return Err(ConfigError::InvalidDevice(device));
        }
        let url = nonempty(args.gateway_url.clone())
            .or_else(|| nonempty(env.var(ENV_GATEWAY_URL)))
            .ok_or(ConfigError::MissingGatewayUrl)?;
        let urls = crate::client::split_urls(&url);
        if urls.is_empty() {
            return Err(ConfigError::MissingGatewayUrl);
        }
        let gateway_base = urls
            .iter()
            .map(|u| parse_gateway_url(u))
            .collect::<Result<Vec<_>, _>>()?
            .join(",");
        let ca_path = args
            .gateway_ca_file
            .clone()
            .or_else(|| nonempty(env.var(ENV_GATEWAY_CA_FILE)).map(PathBuf::from));
        let gateway_ca = match ca_path {
            None if gateway_base.contains("https://") => {
                return Err(ConfigError::InvalidGatewayUrl {
                    url: gateway_base,
                    why: "an https:// gateway needs --gateway-ca-file or APOLLO_GATEWAY_CA_FILE",
                });
            }
            None => None,
            Some(_) if !gateway_base.contains("https://") => {
                return Err(ConfigError::CaWithoutHttps);
            }
            Some(path) => Some(read_ca_file(&path)?),
        };

        let (text, origin) = if let Some(path) = &args.device_key_file {
            (read_key_file(path)?, format!("file {}", path.display()))
        } else {
            match (
                nonempty(env.var(ENV_DEVICE_KEY)),
                nonempty(env.var(ENV_DEVICE_KEY_FILE)),
            ) {
                (Some(_), Some(_)) => return Err(ConfigError::AmbiguousKey),
                (Some(value), None) => (value, ENV_DEVICE_KEY.to_string()),
                (None, Some(path)) => {
                    let path = PathBuf::from(path.trim());
                    (read_key_file(&path)?, format!("file {}", path.display()))
                }
                (None, None) => return Err(ConfigError::MissingKey),
            }
        };
        let key: DeviceKey = text
            .trim()
            .parse()
            .map_err(|source| ConfigError::InvalidKey { origin, source })?;
        if key.device() != device {
            return Err(ConfigError::KeyDeviceMismatch {
                key_device: key.device().to_string(),
                device,
            });
        }

        let mut config = Config::new(&device, &gateway_base, key);
        config.gateway_ca = gateway_ca;
        if let Some(lp) =
            nonempty(args.long_poll.clone()).or_else(|| nonempty(env.var(ENV_LONG_POLL)))
        {
            config.long_poll = parse_long_poll(lp.trim())?;
        }
        if let Some(f) =
            nonempty(args.log_format.clone()).or_else(|| nonempty(env.var(ENV_LOG_FORMAT)))
        {
            config.log_format = f
                .trim()
                .parse()
                .map_err(|_| ConfigError::InvalidLogFormat(f.trim().to_string()))?;
        }
        Ok(config)
    }
}

#[cfg(feature = "tls")]
fn read_ca_file(path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::CaFile {
        path: path.clone(),
        source,
    })?;
    crate::tls::client_config(&pem).map_err(|e| ConfigError::InvalidCa {
        path: path.clone(),
        why: e.to_string(),
    })?;
    Ok(pem)
}

#[cfg(not(feature = "tls"))]
fn read_ca_file(_path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    Err(ConfigError::CaWithoutHttps)
}

fn read_key_file(path: &PathBuf) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
        path: path.clone(),
        source,
    })
}

/// `0`, `0s` → zero; otherwise a humantime duration (`30s`, `500ms`, `1m`) up to 60 s.
fn parse_long_poll(text: &str) -> Result<Duration, ConfigError> {
    if text.bytes().all(|b| b == b'0') {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(text)
        .map_err(|_| ConfigError::InvalidLongPoll(text.to_string()))?;
    if d > MAX_WAIT {
        return Err(ConfigError::LongPollTooLong(text.to_string()));
    }
    Ok(d)
}

/// Check a gateway URL: `http://host[:port]` with an optional trailing `/`; returns it without
/// the slash.
fn parse_gateway_url(url: &str) -> Result<String, ConfigError> {
    let bad = |why| ConfigError::InvalidGatewayUrl {
        url: url.to_string(),
        why,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("not a URL; expected http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if cfg!(feature = "tls") => {}
        Some("https") => {
            return Err(bad(
                "https needs an agent built with the `tls` feature; use http:// (requests and responses are signed either way)",
            ));
        }
        _ => return Err(bad("expected an http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("credentials in the URL are not supported"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(
            "the URL must not have a path or query: the agent adds /v1/devices/...",
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_protocol::keys::MasterKey;
    use std::collections::HashMap;

    fn key(device: &str) -> DeviceKey {
        MasterKey::new("k1", [3; 32]).unwrap().derive(device)
    }

    fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn base_env() -> HashMap<String, String> {
        env(&[
            (ENV_DEVICE_NAME, "tor1-01".into()),
            (ENV_GATEWAY_URL, "http://127.0.0.1:8080/".into()),
            (ENV_DEVICE_KEY, key("tor1-01").to_string()),
        ])
    }

    #[test]
    fn from_env_only() {
        let c = Config::resolve(&Args::default(), &base_env()).unwrap();
        assert_eq!(c.device, "tor1-01");
        assert_eq!(c.gateway_base, "http://127.0.0.1:8080");
        assert_eq!(c.key, key("tor1-01"));
        assert_eq!(c.long_poll, DEFAULT_LONG_POLL);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn gateway_url_lists() {
        let mut env = base_env();
        env.insert(
            ENV_GATEWAY_URL.to_string(),
            "http://gw-a:8080/, http://gw-b:8080".to_string(),
        );
        let c = Config::resolve(&Args::default(), &env).unwrap();
        assert_eq!(c.gateway_base, "http://gw-a:8080,http://gw-b:8080");
        env.insert(
            ENV_GATEWAY_URL.to_string(),
            "http://gw-a:8080,ftp://x".to_string(),
        );
        assert!(matches!(
            Config::resolve(&Args::default(), &env),
            Err(ConfigError::InvalidGatewayUrl { .. })
        ));
        env.insert(ENV_GATEWAY_URL.to_string(), " , ".to_string());
        assert!(matches!(
            Config::resolve(&Args::default(), &env),
            Err(ConfigError::MissingGatewayUrl)
        ));
    }

    #[test]
    fn flags_win_over_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", key("tor1-02"))).unwrap();
        let args = Args {
            device: Some("tor1-02".into()),
            gateway_url: Some("http://gw:9000".into()),
            device_key_file: Some(path),
            long_poll: Some("0".into()),
            log_format: Some("json".into()),
            gateway_ca_file: None,
            version: false,
        };
        let c = Config::resolve(&args, &base_env()).unwrap();
        assert_eq!(c.device, "tor1-02");
        assert_eq!(c.gateway_base, "http://gw:9000");
        assert_eq!(c.key, key("tor1-02"));
        assert_eq!(c.long_poll, Duration::ZERO);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn key_from_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, key("tor1-01").to_string()).unwrap();
        let mut e = base_env();
        e.remove(ENV_DEVICE_KEY);
        e.insert(ENV_DEVICE_KEY_FILE.into(), path.display().to_string());
        assert_eq!(
            Config::resolve(&Args::default(), &e).unwrap().key,
            key("tor1-01")
        );
        e.insert(ENV_DEVICE_KEY.into(), key("tor1-01").to_string());
        assert!(matches!(
            Config::resolve(&Args::default(), &e),
            Err(ConfigError::AmbiguousKey)
        ));
    }

    fn err_of(mutate: impl FnOnce(&mut HashMap<String, String>)) -> String {
        let mut e = base_env();
        mutate(&mut e);
        Config::resolve(&Args::default(), &e)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn clear_errors() {
        let secret = key("tor1-01").to_string();
        type Mutation = Box<dyn FnOnce(&mut HashMap<String, String>)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|e| {
                    e.remove(ENV_DEVICE_NAME);
                }),
                "set --device or APOLLO_DEVICE_NAME",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_DEVICE_NAME.into(), "TOR_1".into());
                }),
                "invalid device name \"TOR_1\"",
            ),
            (
                Box::new(|e| {
                    e.remove(ENV_GATEWAY_URL);
                }),
                "set --gateway-url or APOLLO_GATEWAY_URL",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_GATEWAY_URL.into(), "gateway:8080".into());
                }),
                "expected an http:// URL",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_GATEWAY_URL.into(), "https://gw".into());
                }),
                if cfg!(feature = "tls") {
                    "an https:// gateway needs --gateway-ca-file"
                } else {
                    "https needs an agent built with the `tls` feature"
                },
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_GATEWAY_URL.into(), "http://gw/api".into());
                }),
                "must not have a path",
            ),
            (
                Box::new(|e| {
                    e.remove(ENV_DEVICE_KEY);
                }),
                "no device key",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_DEVICE_KEY.into(), "hunter2".into());
                }),
                "invalid device key from APOLLO_DEVICE_KEY: not a device key",
            ),
            (
                Box::new(|e| {
                    e.remove(ENV_DEVICE_KEY);
                    e.insert(ENV_DEVICE_KEY_FILE.into(), "/nonexistent/apollo-key".into());
                }),
                "cannot read device key file /nonexistent/apollo-key",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_DEVICE_KEY.into(), key("tor1-02").to_string());
                }),
                "the device key is for device \"tor1-02\", but this agent runs as \"tor1-01\"",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_LONG_POLL.into(), "soon".into());
                }),
                "invalid long-poll wait \"soon\"",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_LONG_POLL.into(), "2m".into());
                }),
                "exceeds the protocol's maximum of 60s",
            ),
            (
                Box::new(|e| {
                    e.insert(ENV_LOG_FORMAT.into(), "xml".into());
                }),
                "invalid log format \"xml\"",
            ),
        ];
        for (mutate, expected) in cases {
            let msg = err_of(mutate);
            assert!(msg.contains(expected), "{msg:?} lacks {expected:?}");
            assert!(!msg.contains(secret.rsplit(':').next().unwrap()));
        }
    }

    #[test]
    fn argh_flags_parse() {
        let args = Args::from_args(
            &["apollo-agent"],
            &[
                "--device",
                "tor1-01",
                "--gateway-url",
                "http://127.0.0.1:1",
                "--device-key-file",
                "/k",
                "--long-poll",
                "5s",
                "--log-format",
                "json",
            ],
        )
        .unwrap();
        assert_eq!(args.device.as_deref(), Some("tor1-01"));
        assert_eq!(args.long_poll.as_deref(), Some("5s"));
        assert_eq!(args.device_key_file, Some(PathBuf::from("/k")));
    }
}
