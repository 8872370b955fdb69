//! drd: disaster recovery and multi-region failover for a serverless AWS workload.
//!
//! The library holds everything; `main.rs` only parses arguments, sets up tracing and calls
//! [`cli::run`]. Dependencies point one way: `cli` -> `deploy`/`status`/`check`/`sandbox` ->
//! `lambda`/`workload` -> `aws`. See ARCHITECTURE.md for the code map and the invariants.

pub mod actions;
pub mod aws;
pub mod backup;
pub mod check;
pub mod cli;
pub mod daemon;
pub mod deploy;
pub mod dns;
pub mod error;
pub mod github;
pub mod lambda;
pub mod policy;
pub mod restore;
pub mod runbook;
pub mod sandbox;
pub mod status;
pub mod store;
pub mod workload;

pub use error::{Error, Result};
