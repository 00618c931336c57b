//! Child processes the demo starts: each in its own process group with its output in a log
//! file, stopped with SIGTERM (then SIGKILL after a grace period) in reverse start order when
//! the demo ends, fails or is interrupted. `kill_on_drop` is the last line of defence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long a component gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Short name, also the log file's stem (`gateway` → `gateway.log`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment: the child gets exactly this (plus nothing inherited) when `clear_env`,
    /// otherwise the demo's environment minus [`Spec::remove_env`] plus this.
    pub env: BTreeMap<String, String>,
    pub clear_env: bool,
    pub remove_env: Vec<String>,
}

impl Spec {
    pub fn new(name: &str, program: &Path) -> Self {
        Spec {
            name: name.to_string(),
            program: program.to_path_buf(),
            args: Vec::new(),
            env: BTreeMap::new(),
            clear_env: false,
            remove_env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.to_string(), v.into());
        self
    }

    /// The command line as a shell would show it.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

struct Running {
    name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// The set of running children. Clonable; every clone sees the same set.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Mutex<Vec<Running>>>,
    logs_dir: PathBuf,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("logs_dir", &self.logs_dir)
            .finish()
    }
}

/// Environment variables no component inherits from the demo: a stray kubeconfig or Apollo
/// setting in the presenter's shell must not change what the demo shows.
pub fn scrubbed_env_keys() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k == "KUBECONFIG" || k.starts_with("APOLLO_") || k.starts_with("KUBERNETES_"))
        .collect()
}

impl Supervisor {
    pub fn new(logs_dir: &Path) -> Self {
        Supervisor {
            inner: Arc::default(),
            logs_dir: logs_dir.to_path_buf(),
        }
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}.log"))
    }

    fn command(&self, spec: &Spec) -> Result<(Command, PathBuf)> {
        let log = self.log_path(&spec.name);
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args);
        if spec.clear_env {
            cmd.env_clear();
        }
        for k in scrubbed_env_keys().iter().chain(&spec.remove_env) {
            cmd.env_remove(k);
        }
        cmd.envs(&spec.env);
        // Own process group: the terminal's Ctrl-C reaches only the demo, which then stops
        // the components in order.
        cmd.process_group(0);
        cmd.stdin(Stdio::null());
        cmd.kill_on_drop(true);
        Ok((cmd, log))
    }

    /// Starts `spec` with stdout and stderr appended to `<logs>/<name>.log`.
    pub async fn start(&self, spec: &Spec) -> Result<u32> {
        let (mut cmd, log) = self.command(spec)?;
        let file = open_log(&log)?;
        cmd.stdout(Stdio::from(file.try_clone()?));
        cmd.stderr(Stdio::from(file));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}: {}", spec.name, spec.program.display()))?;
        self.register(spec, child, log)
    }

    /// Starts `spec` and waits until its stdout prints a line starting with `prefix`; returns
    /// the rest of that line. Stdout keeps being copied to the log afterwards.
    pub async fn start_until_line(
        &self,
        spec: &Spec,
        prefix: &str,
        deadline: Duration,
    ) -> Result<(u32, String)> {
        let (mut cmd, log) = self.command(spec)?;
        let file = open_log(&log)?;
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::from(file.try_clone()?));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}: {}", spec.name, spec.program.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe for {}", spec.name))?;
        let pid = self.register(spec, child, log.clone())?;
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let wanted = prefix.to_string();
        let mut out = tokio::fs::File::from_std(file);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = out.write_all(format!("{line}\n").as_bytes()).await;
                if let Some(rest) = line.strip_prefix(&wanted)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(rest)) => Ok((pid, rest)),
            Ok(Err(_)) => bail!(
                "{} exited before printing {:?}; see {}",
                spec.name,
                prefix.trim(),
                log.display()
            ),
            Err(_) => bail!(
                "{} did not print {:?} within {:?}; see {}",
                spec.name,
                prefix.trim(),
                deadline,
                log.display()
            ),
        }
    }

    fn register(&self, spec: &Spec, child: Child, log: PathBuf) -> Result<u32> {
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{} exited at once", spec.name))?;
        let mut set = self
            .inner
            .lock()
            .map_err(|_| anyhow!("supervisor lock poisoned"))?;
        set.retain(|r| r.name != spec.name);
        set.push(Running {
            name: spec.name.clone(),
            child,
            pid,
            log,
        });
        Ok(pid)
    }

    /// Pid of the running component `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.inner
            .lock()
            .ok()?
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.pid)
    }

    /// Components that have exited on their own, with their exit status and log path.
    pub fn exited(&self) -> Vec<String> {
        let Ok(mut set) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for r in set.iter_mut() {
            if let Ok(Some(status)) = r.child.try_wait() {
                out.push(format!(
                    "{} exited ({status}); see {}",
                    r.name,
                    r.log.display()
                ));
            }
        }
        out
    }

    /// Stops `name`: SIGTERM, then SIGKILL after [`STOP_GRACE`]. Returns how it exited.
    pub async fn stop(&self, name: &str) -> Result<String> {
        let running = {
            let mut set = self
                .inner
                .lock()
                .map_err(|_| anyhow!("supervisor lock poisoned"))?;
            let idx = set
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| anyhow!("{name} is not running"))?;
            set.remove(idx)
        };
        Ok(stop_one(running).await)
    }

    /// Stops every component, most recently started first.
    pub async fn stop_all(&self) -> Vec<String> {
        let all: Vec<Running> = match self.inner.lock() {
            Ok(mut set) => set.drain(..).rev().collect(),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for r in all {
            let name = r.name.clone();
            out.push(format!("{name}: {}", stop_one(r).await));
        }
        out
    }
}

async fn stop_one(mut r: Running) -> String {
    if let Ok(Some(status)) = r.child.try_wait() {
        return format!("had already exited ({status})");
    }
    let pid = rustix::process::Pid::from_raw(r.pid as i32);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(STOP_GRACE, r.child.wait()).await {
        Ok(Ok(status)) => format!("stopped with SIGTERM ({status})"),
        _ => {
            let _ = r.child.kill().await;
            format!("killed after {STOP_GRACE:?} (did not exit on SIGTERM)")
        }
    }
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log {}", path.display()))
}

/// What a running process was given: its argv and environment as the kernel holds them.
#[derive(Debug, Clone, Default)]
pub struct ProcessView {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Targets of its open file descriptors (files, sockets).
    pub open_files: Vec<String>,
    /// Remote `addr:port` of its TCP connections.
    pub tcp_peers: Vec<String>,
}

/// Reads `/proc/<pid>` (Linux).
pub fn inspect(pid: u32) -> Result<ProcessView> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let argv = split(std::fs::read(base.join("cmdline"))?);
    let env = split(std::fs::read(base.join("environ"))?)
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let mut open_files = Vec::new();
    let mut socket_inodes = Vec::new();
    if let Ok(dir) = std::fs::read_dir(base.join("fd")) {
        for entry in dir.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let t = target.display().to_string();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    socket_inodes.push(inode.to_string());
                }
                open_files.push(t);
            }
        }
    }
    open_files.sort();
    let mut tcp_peers = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(base.join(table)) {
            tcp_peers.extend(tcp_peers_of(&text, &socket_inodes));
        }
    }
    tcp_peers.sort();
    tcp_peers.dedup();
    Ok(ProcessView {
        argv,
        env,
        open_files,
        tcp_peers,
    })
}

/// Remote endpoints of every open (not listening) TCP socket in `/proc/<pid>/net/tcp*`
/// tables: for a container, the peers of its whole network namespace.
pub fn netns_peers(tables: &str) -> Vec<String> {
    let inodes: Vec<String> = tables
        .lines()
        .filter_map(|l| l.split_whitespace().nth(9).map(str::to_string))
        .collect();
    let mut peers = tcp_peers_of(tables, &inodes);
    peers.sort();
    peers.dedup();
    peers
}

/// Remote endpoints (`127.0.0.1:8080`) of the sockets in `inodes`, from a `/proc/net/tcp`
/// table; listening sockets (state 0A) are left out.
pub fn tcp_peers_of(table: &str, inodes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 || cols[3] == "0A" || !inodes.iter().any(|i| i == cols[9]) {
            continue;
        }
        if let Some(peer) = decode_endpoint(cols[2]) {
            out.push(peer);
        }
    }
    out
}

fn decode_endpoint(s: &str) -> Option<String> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if addr.len() == 8 {
        let v = u32::from_str_radix(addr, 16).ok()?;
        let ip = std::net::Ipv4Addr::from(v.swap_bytes());
        Some(format!("{ip}:{port}"))
    } else if addr.len() == 32 {
        let mut bytes = [0u8; 16];
        for (i, chunk) in addr.as_bytes().chunks(8).enumerate() {
            let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word.swap_bytes().to_be_bytes());
        }
        let ip = std::net::Ipv6Addr::from(bytes);
        match ip.to_ipv4_mapped() {
            Some(v4) => Some(format!("{v4}:{port}")),
            None => Some(format!("[{ip}]:{port}")),
        }
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sleep` from PATH: the Nix build sandbox has no /bin/sleep (only /bin/sh).
    fn sleep_path() -> String {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("sleep"))
            .find(|p| p.is_file())
            .expect("sleep on PATH")
            .display()
            .to_string()
    }

    #[test]
    fn decodes_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1\n\
   2: 0100007F:C351 0100007F:1A0B 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0 20 4 30 10 -1\n";
        let peers = tcp_peers_of(table, &["111".into(), "222".into()]);
        assert_eq!(peers, vec!["127.0.0.1:8080".to_string()]);
        assert_eq!(
            decode_endpoint("0000000000000000FFFF00000100007F:1F90").as_deref(),
            Some("127.0.0.1:8080")
        );
    }

    #[tokio::test]
    async fn stops_children_and_reports_exits() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path());
        let sleep = sleep_path();
        let sleeper = Spec::new("sleeper", Path::new(&sleep)).arg("300");
        let pid = sup.start(&sleeper).await.unwrap();
        assert_eq!(sup.pid("sleeper"), Some(pid));
        // Right after spawn the child may not have exec'd yet: wait (bounded) for it.
        let view = crate::wait::poll_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async {
                inspect(pid)
                    .ok()
                    .filter(|v| v.argv.first().is_some_and(|a| *a == sleep))
            },
        )
        .await
        .expect("sleep never exec'd");
        assert_eq!(view.argv, vec![sleep.as_str(), "300"]);
        let quick = Spec::new("quick", Path::new("/bin/sh"))
            .arg("-c")
            .arg("echo hello; exit 3");
        sup.start(&quick).await.unwrap();
        // Wait (bounded) for the quick one to exit on its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sup.exited().is_empty() {
            assert!(std::time::Instant::now() < deadline, "quick never exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            sup.exited()[0].contains("quick exited"),
            "{:?}",
            sup.exited()
        );
        let log = std::fs::read_to_string(sup.log_path("quick")).unwrap();
        assert_eq!(log, "hello\n");
        let stopped = sup.stop_all().await;
        assert_eq!(stopped.len(), 2);
        assert!(stopped[1].contains("stopped with SIGTERM"), "{stopped:?}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                // A zombie entry can linger briefly only if not reaped; we reaped it.
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| s.contains("State:\tZ"))
                    .unwrap_or(true)
            }
        );
    }

    #[tokio::test]
    async fn waits_for_a_ready_line() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path());
        let spec = Spec::new("server", Path::new("/bin/sh"))
            .arg("-c")
            .arg("echo starting; echo 'ready https://127.0.0.1:1234'; exec sleep 300");
        let (_, url) = sup
            .start_until_line(&spec, "ready ", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(url, "https://127.0.0.1:1234");
        let never = Spec::new("never", Path::new("/bin/sh"))
            .arg("-c")
            .arg("echo nope");
        let err = sup
            .start_until_line(&never, "ready ", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exited before"), "{err}");
        sup.stop_all().await;
        let log = std::fs::read_to_string(sup.log_path("server")).unwrap();
        assert!(log.contains("ready https://127.0.0.1:1234"), "{log}");
    }

    #[tokio::test]
    async fn children_do_not_inherit_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path());
        let sleep = sleep_path();
        let mut spec = Spec::new("agent", Path::new(&sleep)).arg("300");
        spec.clear_env = true;
        spec = spec.env("APOLLO_DEVICE_NAME", "tor1-01");
        let pid = sup.start(&spec).await.unwrap();
        let view = crate::wait::poll_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async {
                inspect(pid)
                    .ok()
                    .filter(|v| v.argv.first().is_some_and(|a| *a == sleep))
            },
        )
        .await
        .expect("sleep never exec'd");
        assert_eq!(
            view.env,
            vec![("APOLLO_DEVICE_NAME".to_string(), "tor1-01".to_string())]
        );
        sup.stop_all().await;
    }
}
