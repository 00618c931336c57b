//! The integration tests of the device gateway (`apollo-gateway`), linked into one test binary
//! (one link of the dependency tree instead of one per file): each module is one former
//! `tests/<name>.rs`, and `common` holds the helpers they share. `tests/flood.rs`,
//! `tests/scale.rs` stay binaries of their own: each measures the RSS of its own process;
//! `tests/ha.rs` too: its gateway processes and agents run one test at a time, alone.

mod common;

mod auth_hardening;
mod cli;
mod gateway;
mod manifests;
mod replicas;
