//! Showing what kubectl shows: runs the real `kubectl` when it is installed (the presenter's
//! command, printed as typed), otherwise the caller renders the same information from the
//! kube client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};

/// `kubectl` bound to a kubeconfig and namespace.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: Option<PathBuf>,
    kubeconfig: PathBuf,
    namespace: String,
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Kubectl {
    /// `bin` None means "not installed": [`Kubectl::run`] then returns `None`.
    pub fn new(bin: Option<PathBuf>, kubeconfig: &Path, namespace: &str) -> Self {
        Kubectl {
            bin,
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: namespace.to_string(),
        }
    }

    pub fn available(&self) -> bool {
        self.bin.is_some()
    }

    /// The command as the presenter would type it (KUBECONFIG exported beforehand).
    pub fn display(args: &[&str]) -> String {
        let quoted: Vec<String> = args
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains([' ', '{', '}', '[', ']', '"', '$', '*', '?']) {
                    format!("'{a}'")
                } else {
                    (*a).to_string()
                }
            })
            .collect();
        format!("kubectl {}", quoted.join(" "))
    }

    /// Runs `kubectl <args>`; `None` when kubectl is not installed, else its combined output
    /// (an error when it exits non-zero, with that output).
    pub async fn run(&self, args: &[&str]) -> Option<Result<String>> {
        let bin = self.bin.as_ref()?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        let out = match tokio::time::timeout(Duration::from_secs(20), cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Some(Err(anyhow!("cannot run kubectl: {e}"))),
            Err(_) => return Some(Err(anyhow!("kubectl timed out after 20s"))),
        };
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Some(Ok(text.trim_end().to_string()))
        } else {
            Some(Err(anyhow!(
                "{} failed ({}): {}",
                Self::display(args),
                out.status,
                text.trim_end()
            )))
        }
    }
}
