//! The active-region record (`<stack>/active-region.json`): where the stack serves from, as the
//! last `drd restore` left it. Written only by a restore's function bring-up (under the runbook's
//! lease); read by every command that acts "where the stack serves now".

use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// Where the stack serves from, as the last restore left it (in the store, beside the points).
pub const ACTIVE_KEY: &str = "active-region.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveRegion {
    pub region: String,
    pub function_url: String,
    /// The point the region was restored from.
    pub point: String,
    /// RFC 3339.
    pub since: String,
    pub by: String,
}

pub fn active_key(store: &Store) -> String {
    format!("{}{ACTIVE_KEY}", store.prefix)
}

pub async fn read_active(store: &Store) -> Result<Option<ActiveRegion>> {
    match store.get(&active_key(store)).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::failed_hint(
                format!("{} is unreadable: {e}", active_key(store)),
                "delete it: the stack is then taken to run in the policy's primary region",
            )
        }),
    }
}

/// The region the stack serves from: the store's record of the last restore, else the primary.
/// A store that cannot be read gives the primary (logged).
pub async fn active_region(aws: &Aws, policy: &Policy) -> String {
    let found = async {
        let store = crate::store::open_store_read(aws, policy).await?;
        read_active(&store).await
    };
    match found.await {
        Ok(Some(a)) => a.region,
        Ok(None) => policy.primary_region().to_string(),
        Err(e) => {
            tracing::debug!(error = %e, "no active-region record; using the primary region");
            policy.primary_region().to_string()
        }
    }
}

/// Record `active` unless the record already names the same region and URL (a converging
/// restore writes nothing twice).
pub async fn record(store: &Store, active: &ActiveRegion) -> Result<()> {
    let same = read_active(store)
        .await
        .ok()
        .flatten()
        .is_some_and(|a| a.region == active.region && a.function_url == active.function_url);
    if !same {
        store
            .put(
                &active_key(store),
                &serde_json::to_vec_pretty(active).expect("serializes"),
            )
            .await?;
    }
    Ok(())
}
