//! The agents' compose file, exactly as `compose.nix` produces it, and the compose client the
//! machine has (`docker compose`, v2, or the standalone `docker-compose`, v1).
//!
//! `compose.nix` is the description of record (the flake wraps it, `make compose` evaluates
//! it); [`agents_compose`] is the same function in Rust so the containerised demo runs on a
//! machine without Nix. The test `same_as_compose_nix` evaluates `compose.nix` with
//! `nix-instantiate` for the demo's arguments (and others) and requires identical output.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

/// The arguments of `compose.nix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeArgs {
    pub devices: Vec<String>,
    pub gateway_url: String,
    pub image: String,
    pub key_dir: String,
}

impl Default for ComposeArgs {
    /// `compose.nix`'s defaults.
    fn default() -> Self {
        ComposeArgs {
            devices: vec!["tor1-01".into(), "tor1-02".into()],
            gateway_url: "http://host.docker.internal:18080".into(),
            image: "apollo/agent:dev".into(),
            key_dir: "./keys".into(),
        }
    }
}

/// A lower-case DNS label, as `compose.nix` requires of device names.
fn valid_device(d: &str) -> bool {
    let b = d.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 63 && edge(&b[0]) && edge(&b[b.len() - 1]) && b.iter().all(inner)
}

/// `https?://[^ ]+`, `compose.nix`'s check of the gateway URL.
fn valid_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(' '))
}

/// `compose.nix`'s output for `args` (services `agent-<device>`), or its refusal.
pub fn agents_compose(args: &ComposeArgs) -> Result<Value> {
    if args.devices.is_empty() {
        bail!("compose.nix: devices must not be empty");
    }
    let invalid: Vec<&String> = args.devices.iter().filter(|d| !valid_device(d)).collect();
    if !invalid.is_empty() {
        bail!(
            "compose.nix: invalid device name(s) {}: use lower-case letters, digits and '-' (a DNS label)",
            json!(invalid)
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = args.devices.iter().find(|d| !seen.insert(d.as_str())) {
        bail!("compose.nix: duplicate device name(s) {}", json!([d]));
    }
    if !valid_url(&args.gateway_url) {
        bail!(
            "compose.nix: gatewayUrl must be an http:// or https:// URL, got {}",
            json!(args.gateway_url)
        );
    }
    if args.image.is_empty() {
        bail!("compose.nix: image must be a non-empty string");
    }
    if args.key_dir.is_empty() {
        bail!("compose.nix: keyDir must be a non-empty string");
    }
    let mut key_dir = args.key_dir.as_str();
    while key_dir.len() > 1 && key_dir.ends_with('/') {
        key_dir = &key_dir[..key_dir.len() - 1];
    }
    let mut services = serde_json::Map::new();
    for d in &args.devices {
        services.insert(
            format!("agent-{d}"),
            json!({
                "image": args.image,
                "pull_policy": "never",
                "environment": {
                    "APOLLO_DEVICE_NAME": d,
                    "APOLLO_GATEWAY_URL": args.gateway_url,
                },
                "env_file": [format!("{key_dir}/{d}.env")],
                "extra_hosts": ["host.docker.internal:host-gateway"],
                "network_mode": "bridge",
                "restart": "unless-stopped",
                "read_only": true,
                "user": "65532:65532",
                "cap_drop": ["ALL"],
                "security_opt": ["no-new-privileges:true"],
                "labels": { "io.apollo.device": d },
            }),
        );
    }
    Ok(json!({ "services": services }))
}

/// The `nix-instantiate` command that prints the same file.
pub fn nix_command(args: &ComposeArgs) -> String {
    let devices: Vec<String> = args.devices.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "nix-instantiate --eval --strict --json compose.nix --arg devices '[ {} ]' \
         --argstr gatewayUrl {} --argstr image {} --argstr keyDir {}",
        devices.join(" "),
        args.gateway_url,
        args.image,
        args.key_dir
    )
}

/// How to run compose on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeCli {
    /// `docker` (v2 plugin) or `docker-compose` (v1).
    pub program: String,
    /// `["compose"]` for the plugin, nothing for the standalone client.
    pub prefix: Vec<String>,
}

impl ComposeCli {
    /// Compose v2, the `docker compose` plugin.
    pub fn plugin() -> ComposeCli {
        ComposeCli {
            program: "docker".into(),
            prefix: vec!["compose".into()],
        }
    }

    /// Compose v1, the standalone `docker-compose`.
    pub fn standalone() -> ComposeCli {
        ComposeCli {
            program: "docker-compose".into(),
            prefix: Vec::new(),
        }
    }

    /// `docker compose` when `docker compose version` answers, else `docker-compose` when
    /// `docker-compose version` does; an error naming both otherwise.
    pub async fn detect() -> Result<ComposeCli> {
        for cli in [ComposeCli::plugin(), ComposeCli::standalone()] {
            let mut cmd = tokio::process::Command::new(&cli.program);
            cmd.args(&cli.prefix)
                .arg("version")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let ok = tokio::time::timeout(Duration::from_secs(30), cmd.status())
                .await
                .ok()
                .and_then(Result::ok)
                .is_some_and(|s| s.success());
            if ok {
                return Ok(cli);
            }
        }
        Err(anyhow!(
            "neither `docker compose` (compose v2, the docker-compose-plugin package) nor the \
             standalone `docker-compose` (v1) is installed: install one of them"
        ))
    }

    /// The command as a presenter types it (`docker compose`, `docker-compose`).
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for p in &self.prefix {
            s.push(' ');
            s.push_str(p);
        }
        s
    }

    /// A command with the program and prefix set.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.prefix);
        cmd
    }
}

/// Writes `doc` as the compose file `path` (JSON is valid compose YAML, as `compose.nix`'s
/// output is).
pub fn write_compose_file(path: &Path, doc: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, format!("{text}\n"))
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hardened_service_per_device() {
        let doc = agents_compose(&ComposeArgs::default()).unwrap();
        let svc = &doc["services"]["agent-tor1-02"];
        assert_eq!(svc["environment"]["APOLLO_DEVICE_NAME"], "tor1-02");
        assert_eq!(svc["env_file"][0], "./keys/tor1-02.env");
        assert_eq!(svc["network_mode"], "bridge");
        assert_eq!(svc["extra_hosts"][0], "host.docker.internal:host-gateway");
        assert_eq!(svc["user"], "65532:65532");
        assert!(svc.get("volumes").is_none());
        assert_eq!(doc["services"].as_object().unwrap().len(), 2);
        let trailing = agents_compose(&ComposeArgs {
            key_dir: "/etc/keys//".into(),
            ..ComposeArgs::default()
        })
        .unwrap();
        assert_eq!(
            trailing["services"]["agent-tor1-01"]["env_file"][0],
            "/etc/keys/tor1-01.env"
        );
    }

    /// `compose.nix` evaluated by Nix, or `None` (with a note) where `nix-instantiate` is not
    /// installed (CI installs it: `.ci/run`, package nix-bin).
    fn nix_eval(a: &ComposeArgs) -> Option<Result<Value, String>> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let devices: Vec<String> = a.devices.iter().map(|d| format!("\"{d}\"")).collect();
        let out = std::process::Command::new("nix-instantiate")
            .current_dir(&repo)
            .args([
                "--eval",
                "--strict",
                "--json",
                "compose.nix",
                "--arg",
                "devices",
            ])
            .arg(format!("[ {} ]", devices.join(" ")))
            .args(["--argstr", "gatewayUrl", &a.gateway_url])
            .args(["--argstr", "image", &a.image])
            .args(["--argstr", "keyDir", &a.key_dir])
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "nix-instantiate not installed (apt-get install nix-bin): compose.nix not evaluated"
                );
                None
            }
            Err(e) => Some(Err(e.to_string())),
            Ok(o) if o.status.success() => {
                Some(serde_json::from_slice(&o.stdout).map_err(|e| e.to_string()))
            }
            Ok(o) => Some(Err(String::from_utf8_lossy(&o.stderr).into_owned())),
        }
    }

    #[test]
    fn same_as_compose_nix() {
        let cases = [
            // What `apollo-demo containers` writes.
            ComposeArgs {
                gateway_url: "http://host.docker.internal:40123".into(),
                image: "apollo/agent:test-1234".into(),
                ..ComposeArgs::default()
            },
            ComposeArgs::default(),
            ComposeArgs {
                devices: vec!["spine1-01".into(), "tor2-07".into(), "t".into()],
                gateway_url: "https://gw.example.test:8443/base".into(),
                image: "registry.test/apollo/agent:1.2.3".into(),
                key_dir: "/etc/apollo/keys/".into(),
            },
        ];
        for a in &cases {
            let Some(nix) = nix_eval(a) else { return };
            let nix = nix.unwrap_or_else(|e| panic!("compose.nix refused {a:?}: {e}"));
            assert_eq!(agents_compose(a).unwrap(), nix, "for {a:?}");
        }
        // And both refuse the same bad input.
        for bad in [
            ComposeArgs {
                devices: vec!["Tor_1".into()],
                ..ComposeArgs::default()
            },
            ComposeArgs {
                devices: vec!["a".into(), "a".into()],
                ..ComposeArgs::default()
            },
            ComposeArgs {
                gateway_url: "host:18080".into(),
                ..ComposeArgs::default()
            },
        ] {
            assert!(agents_compose(&bad).is_err(), "{bad:?}");
            if let Some(nix) = nix_eval(&bad) {
                assert!(nix.is_err(), "compose.nix accepted {bad:?}");
            }
        }
    }

    #[test]
    fn refuses_what_compose_nix_refuses() {
        let with = |f: &dyn Fn(&mut ComposeArgs)| {
            let mut a = ComposeArgs::default();
            f(&mut a);
            agents_compose(&a)
        };
        assert!(with(&|a| a.devices = vec![]).is_err());
        assert!(with(&|a| a.devices = vec!["Tor_1".into()]).is_err());
        assert!(with(&|a| a.devices = vec!["../x".into()]).is_err());
        assert!(with(&|a| a.devices = vec!["-a".into()]).is_err());
        assert!(with(&|a| a.devices = vec!["a".into(), "a".into()]).is_err());
        assert!(with(&|a| a.gateway_url = "host:18080".into()).is_err());
        assert!(with(&|a| a.gateway_url = "http://a b".into()).is_err());
        assert!(with(&|a| a.image = String::new()).is_err());
        assert!(with(&|a| a.devices = vec!["a".repeat(64)]).is_err());
        assert!(with(&|a| a.devices = vec!["a".repeat(63)]).is_ok());
    }
}
