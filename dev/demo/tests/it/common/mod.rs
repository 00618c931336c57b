//! Shared by the end-to-end tests: where the workspace and the component binaries are.
//!
//! The demo runs four other packages' binaries (`apollo-devcluster`, `apollo-controller`,
//! `apollo-gateway`, `apollo-agent`). Cargo only exposes this package's own binary to its tests
//! (`CARGO_BIN_EXE_apollo-demo`), so the tests build the others with `cargo build -p ...` (a
//! no-op when they are fresh; `make demo-local` and CI build them first) and find them next to
//! it in the target directory (same profile). `APOLLO_DEMO_SKIP_BUILD=1` uses them as they are.
//!
//! The tests are independent of each other (ports chosen by the kernel, their own temporary
//! directories), so they run in parallel, also as one process per test under `cargo nextest`.
//! Nothing here assumes a fixed path for a program: the Nix build sandbox has no `/usr/bin/env`
//! and no `/bin/bash` (see `nix/tests/nextest-sandbox.sh`).

#![allow(dead_code)]

pub mod docker;
pub mod monitoring;

use std::path::{Path, PathBuf};
use std::process::Command;

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
        .expect("dev/demo is two levels below the workspace")
        .to_path_buf()
}

/// Directory of this test's own binaries (…/target/<profile>).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_apollo-demo"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Clears what cargo sets for a test process (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …) from a
/// nested `cargo` or `make` command. Build scripts such as ring's declare
/// `rerun-if-env-changed` on those names, so a nested build that inherits them sees the whole
/// tree as dirty, rebuilds it from ring up, and leaves it dirty for the next ordinary build.
pub fn without_test_env(cmd: &mut Command) -> &mut Command {
    const SET_FOR_TESTS: [&str; 9] = [
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_TARGET_TMPDIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    const PREFIXES: [&str; 4] = [
        "CARGO_PKG_",
        "CARGO_BIN_EXE_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if SET_FOR_TESTS.contains(&name)
            || name == "OUT_DIR"
            || PREFIXES.iter().any(|p| name.starts_with(p))
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Builds the component binaries (same profile) unless told not to; returns their directory.
pub fn build_components() -> PathBuf {
    let dir = bin_dir();
    if std::env::var_os("APOLLO_DEMO_SKIP_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // The same package and target selection as `cargo test --workspace` and
        // `cargo nextest run --workspace`, so the features match and this is a no-op after them
        // (`-p <component>` alone would rebuild, and replace, binaries other tests are running).
        let mut cmd = Command::new(cargo);
        without_test_env(&mut cmd).current_dir(workspace()).args([
            "build",
            "--workspace",
            "--bins",
            "--tests",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
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
    step_lines_of(out, 9)
}

/// The last `steps` lines of the output, each `PASS <n> …` or `FAIL <n> …` in order.
pub fn step_lines_of(out: &str, steps: usize) -> Vec<String> {
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= steps, "output too short:\n{out}");
    let last = &lines[lines.len() - steps..];
    for (i, l) in last.iter().enumerate() {
        let n = i + 1;
        assert!(
            l.starts_with(&format!("PASS {n} ")) || l.starts_with(&format!("FAIL {n} ")),
            "line {n} of the summary is {l:?}; output:\n{out}"
        );
    }
    last.iter().map(|s| s.to_string()).collect()
}

/// Where `name` is on `PATH`, if anywhere.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `#!<bash on PATH>`: the first line of the tests' stand-in scripts (not `env bash` from
/// /usr/bin, which the Nix build sandbox does not have).
pub fn bash_shebang() -> String {
    let bash = which("bash").expect("bash on PATH (the stand-in scripts are bash scripts)");
    format!("#!{}", bash.display())
}

/// Sends `signal` to `pid` (no `kill` program needed: not every coreutils build has one).
pub fn signal(pid: u32, signal: rustix::process::Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("not a process id: {pid}")))?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}
