//! Shared by the end-to-end tests: where the workspace and the component binaries are.
//!
//! The demo runs four other packages' binaries (`apollo-devcluster`, `apollo-controller`,
//! `apollo-gateway`, `apollo-agent`). Cargo only exposes this package's own binary to its tests
//! (`CARGO_BIN_EXE_apollo-demo`), so the tests build the others with `cargo build -p ...` (a
//! no-op when they are fresh; `make demo-local` and CI build them first) and find them next to
//! it in the target directory (same profile). `APOLLO_DEMO_SKIP_BUILD=1` uses them as they are.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The end-to-end tests start whole stacks; one at a time keeps the timings honest.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub const COMPONENTS: [&str; 4] = [
    "apollo-devcluster",
    "apollo-controller",
    "apollo-gateway",
    "apollo-agent",
];

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/demo is two levels below the workspace")
        .to_path_buf()
}

/// Directory of this test's own binaries (…/target/<profile>).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_apollo-demo"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Builds the component binaries (same profile) unless told not to; returns their directory.
pub fn build_components() -> PathBuf {
    let dir = bin_dir();
    if std::env::var_os("APOLLO_DEMO_SKIP_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace()).arg("build");
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        for c in COMPONENTS {
            cmd.arg("-p").arg(c);
        }
        eprintln!(
            "building the demo's components first: {cmd:?} (set APOLLO_DEMO_SKIP_BUILD=1 to skip)"
        );
        let status = cmd.status().expect("cannot run cargo");
        assert!(status.success(), "building the components failed: {status}");
    }
    for c in COMPONENTS {
        assert!(
            dir.join(c).is_file(),
            "{} missing: run `cargo build -p {c}`",
            dir.join(c).display()
        );
    }
    dir
}

/// Pids the demo reported starting (`(pid N)` in its output).
pub fn reported_pids(out: &str) -> Vec<u32> {
    out.match_indices("(pid ")
        .filter_map(|(i, _)| {
            let rest = &out[i + 5..];
            rest[..rest.find(')')?].parse().ok()
        })
        .collect()
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

/// The last nine lines: `PASS <n> <title> <seconds>` or `FAIL <n> <title> <reason>`.
pub fn step_lines(out: &str) -> Vec<String> {
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 9, "output too short:\n{out}");
    let last = &lines[lines.len() - 9..];
    for (i, l) in last.iter().enumerate() {
        let n = i + 1;
        assert!(
            l.starts_with(&format!("PASS {n} ")) || l.starts_with(&format!("FAIL {n} ")),
            "line {n} of the summary is {l:?}; output:\n{out}"
        );
    }
    last.iter().map(|s| s.to_string()).collect()
}
