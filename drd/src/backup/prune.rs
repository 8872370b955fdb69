//! Retention: delete the manifests no rule keeps, then the blobs no kept manifest names.

use super::{read_manifest, retention, LEASE_TTL, STORE_LEASE};
use crate::aws::Aws;
use crate::error::Result;
use crate::policy::Policy;
use crate::store::lease::Lease;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<retention::Decision>,
    pub blobs_deleted: Vec<String>,
}

/// Apply the policy's retention at `now` (under the store lease unless `dry_run`).
pub async fn prune(
    aws: &Aws,
    policy: &Policy,
    now: SystemTime,
    dry_run: bool,
) -> Result<PruneReport> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let store = crate::store::open_store_read(aws, policy).await?;
    let mut lease = if dry_run {
        None
    } else {
        Some(Lease::acquire(&store, STORE_LEASE, "drd prune", LEASE_TTL).await?)
    };
    let work = async {
        let mut points = vec![];
        let mut manifests = std::collections::BTreeMap::new();
        for id in store.point_ids().await? {
            if let Ok(m) = read_manifest(&store, &id).await {
                let t = humantime::parse_rfc3339(&m.created_at)
                    .map(secs)
                    .unwrap_or(0);
                points.push((id.clone(), t));
                manifests.insert(id, m);
            }
        }
        let decisions = retention::apply(
            &retention::Rules::from_policy(&policy.retention),
            &points,
            secs(now),
        );
        let kept: Vec<BTreeSet<String>> = decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| {
                manifests[&d.id]
                    .blobs()
                    .into_iter()
                    .map(|(_, b)| b.sha256.clone())
                    .collect()
            })
            .collect();
        let prefix = store.objects_prefix();
        let all: Vec<String> = store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.rsplit('/').next().map(str::to_string))
            .collect();
        let gone = retention::unreferenced(all.iter(), &kept);
        if !dry_run {
            // Manifests first: a point disappears before any blob it names.
            for d in decisions.iter().filter(|d| !d.keep) {
                store.delete(&store.point_key(&d.id)).await?;
            }
            for b in &gone {
                store.delete(&store.blob_key(b)).await?;
            }
        }
        Ok::<_, crate::Error>(PruneReport {
            dry_run,
            decisions,
            blobs_deleted: gone,
        })
    };
    // A real prune deletes under the renewed store lease; losing it stops the deletes.
    let result = match lease.as_mut() {
        None => work.await,
        Some(l) => match l.guard(work).await {
            Ok(r) => r,
            Err(lost) => Err(crate::Error::failed(format!(
                "prune stopped: the store lease {} was lost ({})",
                lost.key, lost.why
            ))),
        },
    };
    if let Some(l) = lease {
        l.release().await?;
    }
    result
}
