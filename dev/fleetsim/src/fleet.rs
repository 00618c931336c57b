//! A fleet of real agents (the `apollo-agent` library) in one process, sharing one connection
//! pool, each stoppable and restartable on its own.

use std::collections::BTreeMap;
use std::time::Duration;

use apollo_agent::agent::{Agent, AgentState};
use apollo_agent::client::{GatewayClient, HttpClient, http_client};
use apollo_agent::config::Config;
use apollo_protocol::keys::MasterKey;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How the fleet's agents talk to the gateway.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// `http://host:port` of the gateway.
    pub gateway_url: String,
    /// The gateway's master key (device keys are derived from it, as at provisioning).
    pub master: MasterKey,
    /// Long-poll wait; zero = plain polling at the heartbeat interval.
    pub long_poll: Duration,
    /// Heartbeat interval before the gateway's first ack says otherwise.
    pub initial_heartbeat: Duration,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    state: watch::Receiver<AgentState>,
}

/// Simulated agents.
pub struct Fleet {
    options: FleetOptions,
    http: HttpClient,
    agents: BTreeMap<String, Running>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("gateway_url", &self.options.gateway_url)
            .field("agents", &self.agents.len())
            .finish()
    }
}

impl Fleet {
    /// An empty fleet.
    pub fn new(options: FleetOptions) -> Self {
        Self {
            http: http_client(Duration::from_secs(10)),
            options,
            agents: BTreeMap::new(),
        }
    }

    /// Starts (or restarts, with a new instance id) the agent of `device`.
    pub fn start(&mut self, device: &str) {
        self.stop(device);
        let key = self.options.master.derive(device);
        let mut config = Config::new(device, &self.options.gateway_url, key.clone());
        config.long_poll = self.options.long_poll;
        config.initial_heartbeat = self.options.initial_heartbeat;
        config.heartbeat_min = Duration::from_millis(100);
        config.min_poll_gap = Duration::from_millis(100);
        let client = GatewayClient::with_http(
            self.http.clone(),
            &config.gateway_base,
            key,
            config.request_timeout,
        );
        let agent = Agent::with_client(config, client);
        let state = agent.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            agent
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.agents
            .insert(device.to_owned(), Running { stop, task, state });
    }

    /// Stops the agent of `device` (silence: no more requests).
    pub fn stop(&mut self, device: &str) {
        if let Some(running) = self.agents.remove(device) {
            let _ = running.stop.send(());
            running.task.abort();
        }
    }

    /// Devices with a running agent.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent runs.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Running agents whose last exchange succeeded.
    pub fn connected(&self) -> usize {
        self.agents
            .values()
            .filter(|r| r.state.borrow().connected)
            .count()
    }

    /// Sum over running agents of (documents adopted, reports acknowledged).
    pub fn totals(&self) -> (u64, u64) {
        self.agents.values().fold((0, 0), |(d, r), a| {
            let s = a.state.borrow();
            (d + s.documents, r + s.reports_acked)
        })
    }

    /// Stops every agent.
    pub fn shutdown(&mut self) {
        let devices: Vec<String> = self.agents.keys().cloned().collect();
        for device in devices {
            self.stop(&device);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}
