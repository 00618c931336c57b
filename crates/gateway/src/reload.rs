//! Files the gateway re-reads while it runs, without a restart: the TLS certificate and key
//! and the device-key revocation file (mounted Secrets/ConfigMaps, which the kubelet updates
//! in place by swapping a symlink).
//!
//! A [`Reloadable`] holds the current value; [`watch_files`] polls the files' *contents* every
//! interval (robust to symlink swaps and to clocks: no mtimes) and, when any changed, builds a
//! new value with the loader. A file that does not load is logged once per distinct error and
//! the previous value stays in force, so a half-written update never takes the gateway down.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

/// Largest file the gateway reloads (certificate chains and revocation lists are far smaller).
pub const MAX_RELOAD_FILE: u64 = 4 * 1024 * 1024;

/// A value replaced as a whole when its files change.
#[derive(Debug)]
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Self {
        Reloadable {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The value in force.
    pub fn get(&self) -> Arc<T> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace the value.
    pub fn set(&self, value: T) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Arc::new(value);
    }
}

/// Whether a file that does not exist reads as empty (an optional ConfigMap not created yet)
/// or is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    Empty,
    Error,
}

/// Reads `paths` (each at most [`MAX_RELOAD_FILE`] bytes).
pub fn read_all(paths: &[PathBuf], absent: Absent) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| {
            let meta = match std::fs::metadata(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && absent == Absent::Empty => {
                    return Ok(Vec::new());
                }
                m => m.map_err(|e| format!("{}: {e}", p.display()))?,
            };
            if meta.len() > MAX_RELOAD_FILE {
                return Err(format!(
                    "{}: {} bytes, over the {MAX_RELOAD_FILE}-byte limit",
                    p.display(),
                    meta.len()
                ));
            }
            std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

/// Polls `paths` every `interval` until shutdown; when their contents differ from the last
/// loaded ones, builds a value with `load` (given the contents, in order) and installs it in
/// `target`. `what` names the files in log lines. `initial` is the contents `target`'s value
/// was built from.
#[allow(clippy::too_many_arguments)]
pub async fn watch_files<T, F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    absent: Absent,
    initial: Vec<Vec<u8>>,
    interval: Duration,
    target: Arc<Reloadable<T>>,
    load: F,
    mut shutdown: watch::Receiver<bool>,
) where
    T: Send + Sync + 'static,
    F: Fn(&[Vec<u8>]) -> Result<T, String> + Send + 'static,
{
    let mut loaded = initial;
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let paths2 = paths.clone();
        let read = match tokio::task::spawn_blocking(move || read_all(&paths2, absent)).await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        };
        let result = read.and_then(|contents| {
            if contents == loaded {
                return Ok(None);
            }
            let value = load(&contents)?;
            Ok(Some((contents, value)))
        });
        match result {
            Ok(None) => {}
            Ok(Some((contents, value))) => {
                target.set(value);
                loaded = contents;
                last_error = None;
                tracing::info!(files = what, "reloaded");
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(files = what, error = %e, "cannot reload; keeping the previous version");
                    last_error = Some(e);
                }
            }
        }
    }
}
