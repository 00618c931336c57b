//! # apollo-fleetsim
//!
//! Plays a fleet of agents speaking the real device protocol (HMAC, ETags, long poll or plain
//! polling, heartbeats) against a gateway, and benchmarks how far one gateway and one
//! controller scale.
//!
//! - [`load`]: conditional-GET throughput against the gateway and a bare-hyper baseline.
//! - [`procstat`]: RSS and CPU of the measured processes.
//! - [`stats`]: latency histograms.

pub mod load;
pub mod procstat;
pub mod stats;
