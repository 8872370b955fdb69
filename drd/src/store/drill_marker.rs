//! The drill marker, `<stack>/drills/active.json`: while a drill runs, the stack is known to be
//! broken on purpose. Backups taken meanwhile are labelled with the drill (manifest `drill`), and
//! `restore --point latest` never chooses them.
//!
//! Writer: `drd drill run` only, after its gate passed and before the fault (plain PUT: one
//! drill runs at a time under the `drill` lease); it deletes the marker when the drill ends.
//! The marker carries an expiry, so a drill process that died leaves no label forever.

use super::Store;
use crate::error::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillMarker {
    pub drill: String,
    pub run: String,
    /// Unix seconds: when the drill started, and when the marker stops counting.
    pub since: u64,
    pub until: u64,
}

pub fn key(store: &Store) -> String {
    format!("{}drills/active.json", store.prefix)
}

/// The marker in force at `now` (unix seconds), if any.
pub async fn active(store: &Store, now: u64) -> Result<Option<DrillMarker>> {
    let Some(bytes) = store.get(&key(store)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<DrillMarker>(&bytes)
        .ok()
        .filter(|m| m.since <= now && now < m.until))
}

pub async fn set(store: &Store, m: &DrillMarker) -> Result<()> {
    store
        .put(&key(store), &serde_json::to_vec(m).expect("serializes"))
        .await
}

/// Remove the marker if it is this run's.
pub async fn clear(store: &Store, run: &str) -> Result<()> {
    if let Some(bytes) = store.get(&key(store)).await? {
        if serde_json::from_slice::<DrillMarker>(&bytes).is_ok_and(|m| m.run == run) {
            store.delete(&key(store)).await?;
        }
    }
    Ok(())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
