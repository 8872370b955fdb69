//! Lambda operations drd owns: published versions, the `live` alias, the Function URL on that
//! alias, and health probes (through the URL or by invoking one version).

pub mod commits;
pub mod logs;
pub mod ops;
pub mod pins;
pub mod probe;

/// The alias the Function URL is attached to; rollbacks move it, never the URL.
pub const LIVE_ALIAS: &str = "live";
