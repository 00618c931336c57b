//! Resident memory and CPU time of a process, from `/proc` (Linux).

use std::time::Duration;

/// A process' resource use at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
}

/// Reads `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/stat` (utime, stime).
pub fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(ProcSample {
        rss_bytes: rss_kib * 1024,
        cpu: parse_cpu(&stat).unwrap_or_default(),
    })
}

/// utime + stime from a `/proc/<pid>/stat` line, assuming 100 ticks per second (the Linux
/// default USER_HZ).
fn parse_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) may contain spaces; fields after the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// This process' soft limit on open files (`/proc/self/limits`), if readable.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
    }

    #[test]
    fn reads_the_open_files_limit() {
        assert!(open_files_limit().is_some_and(|l| l > 0));
    }

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let line = "123 (my proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu(line), Some(Duration::from_millis(3000)));
    }
}
