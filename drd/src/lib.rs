//! drd: disaster recovery and multi-region failover for a serverless AWS workload.
//!
//! The library holds everything; `main.rs` only parses arguments, sets up tracing and calls
//! [`cli::run`]. The dependency rule (which module may use which) is stated once, in
//! ARCHITECTURE.md's `layers` block, and enforced by `tests/tidy.rs`; that page also has the code
//! map and the invariants. The local lab is the separate `drd-sandbox` crate.

pub mod actions;
pub mod aws;
pub mod backup;
pub mod check;
pub mod ci;
pub mod cli;
pub mod daemon;
pub mod deploy;
pub mod dns;
pub mod drill;
pub mod error;
pub mod frontdoor;
pub mod github;
pub mod iam;
pub mod lambda;
pub mod policy;
pub mod restore;
pub mod runbook;
pub mod schedule;
pub mod stack;
pub mod status;
pub mod store;
pub mod workload;

pub use error::{Error, Result};
