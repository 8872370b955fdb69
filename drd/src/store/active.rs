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
/// A store that cannot be read is an error naming it, never a silent fallback: after a restore,
/// guessing "the primary" would send rollback, rotate and pin to the failed region.
pub async fn active_region(aws: &Aws, policy: &Policy) -> Result<String> {
    let store = crate::store::store_of(aws, policy).await;
    let found = match read_active(&store).await {
        Ok(a) => a,
        // No store bucket yet: no restore ever recorded a region.
        Err(Error::Aws { code, .. }) if code == "NoSuchBucket" => None,
        Err(e) => {
            // One hint: the cause's (it knows the failure class), then this one's way out.
            let (cause, hint) = e.split_hint();
            let way_out = "or name the region with --region R";
            return Err(Error::failed_hint(
                format!(
                    "cannot tell where the stack serves: reading s3://{}/{} failed: {cause}",
                    store.bucket,
                    active_key(&store)
                ),
                match hint {
                    Some(h) => format!("{h}; {way_out}"),
                    None => format!("retry when the store answers, {way_out}"),
                },
            ));
        }
    };
    check_copies(aws, policy, found.as_ref()).await?;
    Ok(found
        .map(|a| a.region)
        .unwrap_or_else(|| policy.primary_region().to_string()))
}

/// A `--from-copy` restore records where the service went in the copy only (the store's region
/// was down). A copy whose record is newer than the store's and names another region means the
/// store's record is stale: refused, never guessed (each copy is asked once, for 3 s at most; a
/// copy that does not answer is passed over).
async fn check_copies(aws: &Aws, policy: &Policy, main: Option<&ActiveRegion>) -> Result<()> {
    if policy.bypassed_store.is_some() {
        return Ok(());
    }
    let primary = policy.primary_region();
    for c in &policy.backup.copies {
        let role = policy
            .backup
            .role_arn
            .as_ref()
            .map(|r| r.get_ref().as_str());
        let copy = Store::new(
            aws.s3_as(c.region.get_ref(), role).await,
            c.bucket.get_ref(),
            policy.stack_name(),
        );
        let read = tokio::time::timeout(std::time::Duration::from_secs(3), read_active(&copy));
        let Ok(Ok(Some(a))) = read.await else {
            continue;
        };
        let stale = match main {
            None => a.region != primary,
            Some(m) => a.region != m.region && a.since > m.since,
        };
        if stale {
            return Err(Error::failed_hint(
                format!(
                    "the copy s3://{}/{} records the service in {} since {} (a --from-copy restore), but the store says {}",
                    copy.bucket,
                    active_key(&copy),
                    a.region,
                    a.since,
                    main.map(|m| m.region.as_str()).unwrap_or(primary)
                ),
                format!(
                    "act there with --region {}, fail back with drd failback --from-copy {}, or copy that record into the store once it is back",
                    a.region,
                    c.region.get_ref()
                ),
            ));
        }
    }
    Ok(())
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
