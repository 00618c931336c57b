//! The integration tests of the controller (`apollo-controller`), linked into one test binary
//! (one link of the dependency tree instead of one per file): each module is one former
//! `tests/<name>.rs`, and `common` holds the helpers they share.

mod common;

mod binary;
mod controller;
mod manifests;
mod rollout;
