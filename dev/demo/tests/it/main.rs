//! The integration tests of the demo (`apollo-demo`), linked into one test binary (one link of
//! the dependency tree instead of one per file): each module is one former `tests/<name>.rs`,
//! and `common` holds the helpers they share. `tests/containers_demo.rs` stays a binary of its
//! own: it builds container images and runs the demo in docker, apart from these tests.

mod common;

mod cluster_mode;
mod demo_kind_script;
mod fast_demo;
mod image_layout;
mod monitoring;
