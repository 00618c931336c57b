//! Object semantics of the Kubernetes API server over `serde_json::Value`.
//!
//! Pure library, no I/O. See [`schema`] (structural schemas: pruning, defaulting,
//! validation) and [`apply`] (server-side apply with `metadata.managedFields`).

pub mod apply;
mod formats;
mod gofmt;
mod regex;
pub mod schema;
