//! Watching DeviceProcesses for flaps: [`DeviceProcessObserver`] keeps the latest version of
//! each object and the name of every one ever seen with `AgentConnected=False`. The watch
//! records every version, so a flap between two checks still counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use apollo_api::DeviceProcess;
use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

/// How often [`DeviceProcessObserver::hold_without_flap`] looks at what the watch recorded.
const HOLD_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The status (`True`, `False`, `Unknown`) of a DeviceProcess's condition of type `type_`.
pub fn condition_status(dp: &DeviceProcess, type_: &str) -> Option<String> {
    dp.status
        .as_ref()?
        .condition(type_)
        .map(|c| c.status.clone())
}

/// Whether a DeviceProcess shows `AgentConnected=True` and `SpecObserved=True`.
pub fn connected_and_observed(dp: &DeviceProcess) -> bool {
    condition_status(dp, "AgentConnected").as_deref() == Some("True")
        && condition_status(dp, "SpecObserved").as_deref() == Some("True")
}

/// DeviceProcesses seen with `AgentConnected=False` (a flap), by name in the order seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AgentConnected=False seen on {}", .names.join(", "))]
pub struct Flapped {
    pub names: Vec<String>,
}

/// A watch on DeviceProcesses: the latest of each, and every object ever seen with
/// `AgentConnected=False`. The watch stops when the observer is dropped.
#[derive(Debug)]
pub struct DeviceProcessObserver {
    latest: Arc<Mutex<HashMap<String, DeviceProcess>>>,
    disconnected: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DeviceProcessObserver {
    /// Starts watching the DeviceProcesses `api` lists.
    pub fn start(api: Api<DeviceProcess>) -> DeviceProcessObserver {
        let latest = Arc::new(Mutex::new(HashMap::new()));
        let disconnected = Arc::new(Mutex::new(Vec::new()));
        let (l, d) = (latest.clone(), disconnected.clone());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(
                // With backoff: once the API server is gone every attempt fails at once, and
                // a stream that never returns Pending would keep its worker thread (and the
                // runtime's shutdown) busy forever.
                watcher::watcher(api, watcher::Config::default()).default_backoff()
            );
            while let Some(ev) = stream.next().await {
                let dp = match ev {
                    Ok(watcher::Event::Apply(dp)) | Ok(watcher::Event::InitApply(dp)) => dp,
                    _ => continue,
                };
                let name = dp.metadata.name.clone().unwrap_or_default();
                if condition_status(&dp, "AgentConnected").as_deref() == Some("False") {
                    lock(&d).push(name.clone());
                }
                lock(&l).insert(name, dp);
            }
        });
        DeviceProcessObserver {
            latest,
            disconnected,
            task,
        }
    }

    /// How many DeviceProcesses' latest version satisfies `pred`.
    pub fn count(&self, pred: impl Fn(&DeviceProcess) -> bool) -> usize {
        lock(&self.latest).values().filter(|d| pred(d)).count()
    }

    /// How many DeviceProcesses are connected and observed ([`connected_and_observed`]).
    pub fn connected_and_observed(&self) -> usize {
        self.count(connected_and_observed)
    }

    /// Every DeviceProcess seen with `AgentConnected=False` so far, in the order seen.
    pub fn disconnected(&self) -> Vec<String> {
        lock(&self.disconnected).clone()
    }

    /// Checks every 100 ms for `window`, and once more at its end, that no DeviceProcess has
    /// shown `AgentConnected=False`; fails with the first flaps seen.
    pub async fn hold_without_flap(&self, window: Duration) -> Result<(), Flapped> {
        let until = tokio::time::Instant::now() + window;
        loop {
            let names = self.disconnected();
            if !names.is_empty() {
                return Err(Flapped { names });
            }
            if tokio::time::Instant::now() >= until {
                return Ok(());
            }
            tokio::time::sleep(HOLD_CHECK_INTERVAL).await;
        }
    }
}

impl Drop for DeviceProcessObserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
