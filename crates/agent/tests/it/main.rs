//! The integration tests of the device agent (`apollo-agent`), linked into one test binary (one
//! link of the dependency tree instead of one per file): each module is one former
//! `tests/<name>.rs`, and `common` holds the helpers they share.

mod common;

mod agent_loop;
mod binary;
mod no_kubernetes;
mod shared_pool;
mod tls;
