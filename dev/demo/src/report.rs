//! What the presenter reads: each step prints what it did, what it expected and what it saw as
//! it happens; the run ends with a summary table and one machine-readable line per step,
//! `PASS <n> <title> <seconds>` or `FAIL <n> <title> <reason>`. Everything printed is also
//! appended to `<logs>/demo.log`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wait::secs;

/// The runbook's steps, in order.
pub const TITLES: [&str; 9] = [
    "CRDs installed with kubectl UX",
    "Deployment fans out to one DeviceProcess per device",
    "Status within seconds",
    "Gateway answers 304 after the first poll",
    "Gateway lists once and writes status only on change",
    "Template change reaches both devices",
    "Stopped agent goes stale with exactly one Warning",
    "Restarted agent reconnects without a desired change",
    "Agents hold no Kubernetes credentials",
];

/// Printer to stdout and the demo log.
#[derive(Clone, Default)]
pub struct Out {
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Out")
    }
}

impl Out {
    pub fn new(log: Option<&Path>) -> Self {
        let file = log.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(|f| Arc::new(Mutex::new(f)))
        });
        Out { file }
    }

    pub fn line(&self, s: &str) {
        // Not println!: a closed stdout (`apollo-demo ... | head`) must not abort the run
        // before it has stopped what it started.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
        drop(out);
        if let Some(f) = &self.file
            && let Ok(mut f) = f.lock()
        {
            let _ = writeln!(f, "{s}");
        }
    }
}

/// One running step.
#[derive(Debug)]
pub struct Step {
    pub n: usize,
    pub title: &'static str,
    start: Instant,
    out: Out,
}

const INDENT: &str = "           ";

impl Step {
    /// Step `n` of the runbook.
    pub fn begin(n: usize, out: &Out) -> Step {
        Step::begin_of(n, &TITLES, out)
    }

    /// Step `n` of a run whose steps are `titles`.
    pub fn begin_of(n: usize, titles: &[&'static str], out: &Out) -> Step {
        let title = titles.get(n - 1).copied().unwrap_or("?");
        out.line("");
        out.line(&format!(
            "━━ Step {n}/{} · {title} {}",
            titles.len(),
            "━".repeat(60usize.saturating_sub(title.len()))
        ));
        Step {
            n,
            title,
            start: Instant::now(),
            out: out.clone(),
        }
    }

    /// An optional step after the runbook's, numbered `n`.
    pub fn begin_extra(n: usize, title: &'static str, out: &Out) -> Step {
        out.line("");
        out.line(&format!(
            "━━ Step {n} (optional) · {title} {}",
            "━".repeat(60usize.saturating_sub(title.len()))
        ));
        Step {
            n,
            title,
            start: Instant::now(),
            out: out.clone(),
        }
    }

    fn tagged(&self, tag: &str, text: &str) {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        self.out.line(&format!("  {tag:<8} {first}"));
        for l in lines {
            self.out.line(&format!("{INDENT}{l}"));
        }
    }

    /// An action the demo took.
    pub fn did(&self, text: &str) {
        self.tagged("did", text);
    }

    /// What the runbook expects.
    pub fn expect(&self, text: &str) {
        self.tagged("expect", text);
    }

    /// What the demo observed.
    pub fn saw(&self, text: &str) {
        self.tagged("saw", text);
    }

    /// A command and its output (kubectl, curl, docker compose).
    pub fn shell(&self, command: &str, output: &str) {
        self.tagged("saw", &format!("$ {command}"));
        for l in output.lines() {
            self.out.line(&format!("{INDENT}  {l}"));
        }
    }

    /// Ends the step with its outcome.
    pub fn finish(self, outcome: Result<(), String>) -> StepResult {
        let duration = self.start.elapsed();
        match &outcome {
            Ok(()) => self
                .out
                .line(&format!("  PASS     in {} s", secs(duration))),
            Err(reason) => self.out.line(&format!("  FAIL     {reason}")),
        }
        StepResult {
            n: self.n,
            title: self.title,
            duration,
            outcome,
        }
    }
}

/// The result of one step.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub n: usize,
    pub title: &'static str,
    pub duration: Duration,
    pub outcome: Result<(), String>,
}

impl StepResult {
    /// A step of a run whose steps are `titles` that could not run.
    pub fn not_run_of(n: usize, titles: &[&'static str], reason: &str) -> StepResult {
        StepResult {
            n,
            title: titles.get(n - 1).copied().unwrap_or("?"),
            duration: Duration::ZERO,
            outcome: Err(format!("not run: {reason}")),
        }
    }

    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// `PASS <n> <title> <seconds>` or `FAIL <n> <title> <reason>` (reason on one line).
    pub fn summary_line(&self) -> String {
        match &self.outcome {
            Ok(()) => format!("PASS {} {} {}", self.n, self.title, secs(self.duration)),
            Err(reason) => format!(
                "FAIL {} {} {}",
                self.n,
                self.title,
                reason.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        }
    }
}

/// Prints the summary table and the final per-step lines.
pub fn summary(out: &Out, results: &[StepResult], logs_dir: &Path, total: Duration) {
    out.line("");
    out.line(&format!("━━ Summary {}", "━".repeat(66)));
    out.line(&format!(
        "  {:>2}  {:<52} {:<6} {:>7}",
        "#", "Step", "Result", "Seconds"
    ));
    for r in results {
        out.line(&format!(
            "  {:>2}  {:<52} {:<6} {:>7}",
            r.n,
            r.title,
            if r.passed() { "PASS" } else { "FAIL" },
            secs(r.duration)
        ));
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    out.line(&format!(
        "  {passed}/{} steps passed in {} s; component logs: {}",
        results.len(),
        secs(total),
        logs_dir.display()
    ));
    out.line("");
    for r in results {
        out.line(&r.summary_line());
    }
}

/// `.demo/logs-<UTC timestamp>` under `base`.
pub fn default_logs_dir(base: &Path) -> PathBuf {
    let ts = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    base.join(".demo").join(format!("logs-{ts}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_have_the_contract_shape() {
        let ok = StepResult {
            n: 3,
            title: TITLES[2],
            duration: Duration::from_millis(1234),
            outcome: Ok(()),
        };
        assert_eq!(ok.summary_line(), "PASS 3 Status within seconds 1.2");
        let bad = StepResult {
            n: 7,
            title: TITLES[6],
            duration: Duration::ZERO,
            outcome: Err("no Warning event\nafter 30s".into()),
        };
        assert_eq!(
            bad.summary_line(),
            "FAIL 7 Stopped agent goes stale with exactly one Warning no Warning event after 30s"
        );
        assert!(
            StepResult::not_run_of(9, &TITLES, "setup failed")
                .summary_line()
                .starts_with("FAIL 9 Agents hold no Kubernetes credentials not run: setup failed")
        );
    }
}
