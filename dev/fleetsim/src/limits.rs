//! The simulator's own open-file limit. Every simulated agent holds one or two connections
//! (a long poll and a report), and the gateway the benchmark starts inherits this process'
//! limits, so at 100,000 devices both need far more descriptors than the usual 1,024 or
//! 20,000. [`raise_open_files`] raises the soft limit to the hard limit and, when running as
//! root (CAP_SYS_RESOURCE), the hard limit to the kernel's ceiling (`fs.nr_open`) first.

use rustix::process::{Resource, Rlimit, geteuid, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};

/// The open-file limits before and after [`raise_open_files`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFiles {
    /// Soft limit found at start.
    pub soft_before: u64,
    /// Hard limit found at start.
    pub hard_before: u64,
    /// Soft limit now (what this process and its children may open).
    pub soft: u64,
    /// Hard limit now.
    pub hard: u64,
    /// Why the limit could not be raised further, if it could not.
    pub note: Option<String>,
}

/// `None` in an [`Rlimit`] means unlimited.
fn value(v: Option<u64>) -> u64 {
    v.unwrap_or(u64::MAX)
}

/// The kernel's ceiling for `RLIMIT_NOFILE` (`/proc/sys/fs/nr_open`).
pub fn kernel_ceiling() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises this process' open-file limit as far as it may go (see the module docs).
pub fn raise_open_files() -> OpenFiles {
    let before = getrlimit(Resource::Nofile);
    let mut out = OpenFiles {
        soft_before: value(before.current),
        hard_before: value(before.maximum),
        ..OpenFiles::default()
    };
    let mut hard = before.maximum;
    if geteuid().is_root()
        && let Some(ceiling) = kernel_ceiling()
        && value(hard) < ceiling
    {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: before.current,
                maximum: Some(ceiling),
            },
        ) {
            Ok(()) => hard = Some(ceiling),
            Err(e) => out.note = Some(format!("raising the hard limit to {ceiling}: {e}")),
        }
    } else if !geteuid().is_root() {
        out.note = Some("not root: the hard limit stays as it is".into());
    }
    if let Err(e) = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: hard,
            maximum: hard,
        },
    ) {
        out.note = Some(format!("raising the soft limit to the hard limit: {e}"));
    }
    let now = getrlimit(Resource::Nofile);
    out.soft = value(now.current);
    out.hard = value(now.maximum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let limits = raise_open_files();
        assert_eq!(limits.soft, limits.hard, "{limits:?}");
        assert!(limits.soft >= limits.soft_before, "{limits:?}");
        assert_eq!(
            crate::procstat::open_files_limit(),
            Some(limits.soft).filter(|&s| s != u64::MAX).or(None),
            "{limits:?}"
        );
    }
}
