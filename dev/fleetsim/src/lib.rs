//! # apollo-fleetsim
//!
//! Plays a fleet of agents speaking the real device protocol (HMAC, ETags, long poll or plain
//! polling, heartbeats) against a gateway, and benchmarks how far one gateway and one
//! controller scale.
//!
//! - [`bench`](mod@bench): the scenarios of `apollo-fleetsim bench` and what each measures.
//! - [`charts`]: SVG charts of a report (`apollo-fleetsim charts`).
//! - [`cluster`]: the system under test (development API server in process, controller and
//!   gateway as processes) and a reflector to time status convergence.
//! - [`compare`]: per-row deltas between two bench JSON reports.
//! - [`fleet`]: N real agents (the agent library) in one process, spread over loopback source
//!   addresses.
//! - [`floor`]: the API server's write floor (status patches per second).
//! - [`limits`]: the open-file limit of the simulator (and the gateway it starts).
//! - [`load`]: conditional-GET throughput against the gateway and a bare-hyper baseline.
//! - [`procstat`]: RSS and CPU of the measured processes.
//! - [`report`]: the results table and JSON.
//! - [`stats`]: latency histograms.

pub mod bench;
pub mod charts;
pub mod cluster;
pub mod compare;
pub mod fleet;
pub mod floor;
pub mod limits;
pub mod load;
pub mod procstat;
pub mod report;
pub mod stats;
