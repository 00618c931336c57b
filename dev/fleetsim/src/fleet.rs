//! A fleet of real agents (the `apollo-agent` library) in one process, each stoppable and
//! restartable on its own.
//!
//! Agents share connection pools, one per loopback source address: with
//! [`FleetOptions::agents_per_address`] set, every group of that many agents connects from its
//! own address in 127.0.0.0/8 (bound before connect), so neither the ephemeral port range of
//! one address (about 28,000 ports) nor the gateway's per-address connection cap
//! (`--max-connections-per-address`, default 1,024) limits the fleet. An agent holds at most
//! two connections (a long poll and a report), so 400 agents per address stay under 1,024.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use apollo_agent::agent::{Agent, AgentState};
use apollo_agent::client::{GatewayClient, HttpClient, SharedPool, http_client_from};
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
    /// Agents per loopback source address; 0 = connect from whatever address the kernel
    /// picks (127.0.0.1 for a loopback gateway).
    pub agents_per_address: usize,
    /// Idle connections each source address's pool keeps; `None`: as many as were opened
    /// (every agent keeps its report connection alive, as a real agent does). A fleet larger
    /// than the open-file limit bounds it ([`POLLING_IDLE_PER_ADDRESS`]).
    pub max_idle_per_address: Option<usize>,
}

/// Idle connections per source address for a polling fleet that cannot hold a connection per
/// agent: 400 agents polling and reporting every 10 s send about 80 requests/s, a handful in
/// flight at a time, so 16 keep-alive connections carry them; 250 addresses (100,000 agents)
/// then hold about 4,000 descriptors here and in the gateway instead of one or two per agent.
pub const POLLING_IDLE_PER_ADDRESS: usize = 16;

/// Agents per source address that keep every address under the gateway's default per-address
/// cap of 1,024 connections (two connections per agent at most, plus slack).
pub const DEFAULT_AGENTS_PER_ADDRESS: usize = 400;

/// The next unused loopback source address, as an offset from 127.1.0.0: every fleet of this
/// process gets addresses of its own, so a fleet's lingering connections never count against
/// another's.
static NEXT_ADDRESS: AtomicU32 = AtomicU32::new(1);

/// A fresh loopback address in 127.1.0.1 – 127.254.255.254.
fn next_loopback() -> IpAddr {
    let offset = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed) % (254 << 16);
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(127, 1, 0, 0)) + offset,
    ))
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    state: watch::Receiver<AgentState>,
}

/// Simulated agents.
pub struct Fleet {
    options: FleetOptions,
    /// One pool per source address (index: slot / agents_per_address).
    pools: Vec<(Option<IpAddr>, HttpClient)>,
    /// The slot of every device ever started (stable over restarts).
    slots: BTreeMap<String, usize>,
    agents: BTreeMap<String, Running>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("gateway_url", &self.options.gateway_url)
            .field("agents", &self.agents.len())
            .field("source_addresses", &self.pools.len())
            .finish()
    }
}

impl Fleet {
    /// An empty fleet.
    pub fn new(options: FleetOptions) -> Self {
        Self {
            pools: Vec::new(),
            slots: BTreeMap::new(),
            options,
            agents: BTreeMap::new(),
        }
    }

    /// The pool for the agent in `slot`, created with its source address on first use.
    fn pool(&mut self, slot: usize) -> HttpClient {
        let per = self.options.agents_per_address;
        let index = slot.checked_div(per).unwrap_or(0);
        while self.pools.len() <= index {
            let pool = SharedPool {
                local_address: (per > 0).then(next_loopback),
                max_idle: self.options.max_idle_per_address,
            };
            let http = http_client_from(Duration::from_secs(10), &pool);
            self.pools.push((pool.local_address, http));
        }
        self.pools[index].1.clone()
    }

    /// Source addresses in use (0 when the kernel picks).
    pub fn source_addresses(&self) -> usize {
        self.pools.iter().filter(|(a, _)| a.is_some()).count()
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
        let next = self.slots.len();
        let slot = *self.slots.entry(device.to_owned()).or_insert(next);
        let http = self.pool(slot);
        let client =
            GatewayClient::with_http(http, &config.gateway_base, key, config.request_timeout);
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
