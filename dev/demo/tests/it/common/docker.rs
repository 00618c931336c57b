//! Shared by the container tests (`tests/containers_demo.rs`, `tests/containers_ha.rs`): the
//! docker CLI, this run's images built from the tree's static binaries under a tag of the
//! test's own (removed when dropped), and the check that a run left nothing behind.

use std::process::{Command, Stdio};

use super::{without_test_env, workspace};

/// Label the demo puts on everything it creates; its value is the run's name.
pub const RUN_LABEL: &str = "io.apollo.demo.run";

/// `docker <args>`: stdout (trimmed) or stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `Err(why)` when no docker engine answers: the container tests then skip, saying so.
pub fn engine() -> Result<String, String> {
    docker(&["version", "--format", "{{.Server.Version}}"])
}

/// The images of this test run, removed (only these tags) when dropped.
pub struct Images {
    pub tag: String,
}

impl Images {
    pub fn refs(&self) -> Vec<String> {
        [
            "apollo/devcluster",
            "apollo/controller",
            "apollo-deviceprocess-controller",
            "apollo/gateway",
            "apollo/agent",
        ]
        .iter()
        .map(|r| format!("{r}:{}", self.tag))
        .collect()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for r in self.refs() {
            let _ = docker(&["image", "rm", &r]);
        }
    }
}

/// `make build` (unless `APOLLO_DEMO_SKIP_BUILD` is set), then `make docker-images` under the
/// tag `<prefix>-<pid>`.
pub fn build_images(prefix: &str) -> Images {
    let root = workspace();
    if std::env::var_os("APOLLO_DEMO_SKIP_BUILD").is_none() {
        eprintln!(
            "building the static binaries first: make build (set APOLLO_DEMO_SKIP_BUILD=1 to use bin/ as it is)"
        );
        let status = without_test_env(&mut Command::new("make"))
            .current_dir(&root)
            .args(["-s", "build"])
            .stdout(Stdio::null())
            .status()
            .expect("run make");
        assert!(status.success(), "make build failed: {status}");
    }
    let images = Images {
        tag: format!("{prefix}-{}", std::process::id()),
    };
    let out = without_test_env(&mut Command::new("make"))
        .current_dir(&root)
        .args(["-s", "docker-images", &format!("IMAGE_TAG={}", images.tag)])
        .output()
        .expect("run make docker-images");
    assert!(
        out.status.success(),
        "make docker-images failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    images
}

/// The run name the demo printed in its header (`run apollo-demo-<pid>-<hex>`, `run
/// apollo-ha-<pid>-<hex>`).
pub fn run_name(out: &str, prefix: &str) -> String {
    let needle = format!(", run {prefix}-");
    let i = out.find(&needle).expect("the header names the run") + 6;
    out[i..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(',')
        .to_string()
}

/// Nothing of `run` is left: containers (its label or its compose project), networks,
/// volumes, and its private directory.
pub fn assert_nothing_left(run: &str) {
    for filter in [
        format!("label={RUN_LABEL}={run}"),
        format!("label=com.docker.compose.project={run}"),
        format!("name={run}"),
    ] {
        let c = docker(&["ps", "-a", "-q", "--filter", &filter]).unwrap();
        assert!(c.is_empty(), "containers left ({filter}): {c}");
        let n = docker(&["network", "ls", "-q", "--filter", &filter]).unwrap();
        assert!(n.is_empty(), "networks left ({filter}): {n}");
        let v = docker(&["volume", "ls", "-q", "--filter", &filter]).unwrap();
        assert!(v.is_empty(), "volumes left ({filter}): {v}");
    }
    let dir = std::env::temp_dir().join(run);
    assert!(!dir.exists(), "{} (device keys) left", dir.display());
}
