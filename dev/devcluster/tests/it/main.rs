//! The integration tests of the development API server (`apollo-devcluster`), linked into one
//! test binary (one link of the dependency tree instead of one per file): each module is one
//! former `tests/<name>.rs` (one behaviour group), and `common` holds the helpers they share.

#![recursion_limit = "256"]

mod common;

mod builtins;
mod cli;
mod crds;
mod discovery_table;
mod events;
mod faults;
mod field_selectors;
mod gc;
mod generation;
mod kubectl;
mod leases;
mod metrics;
mod pdb;
mod rbac;
mod scale;
mod server_side_apply;
mod status_subresource;
mod validation_pruning;
mod versions;
mod watches;
