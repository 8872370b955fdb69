//! Retention: delete the manifests no rule keeps, then the blobs no kept manifest names.

use super::manifest::{self, ManifestProblem};
use super::{retention, LEASE_TTL, STORE_LEASE};
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::lease::Lease;
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<retention::Decision>,
    pub blobs_deleted: Vec<String>,
    /// Manifests passed over with `--skip-unreadable`: never deleted, and every blob they may
    /// name kept.
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, serde::Serialize)]
pub struct Unreadable {
    pub key: String,
    pub why: String,
    /// Blobs kept for it: the hashes found in its bytes, or every blob when it could not be read.
    pub kept: String,
}

/// Which manifests a prune may pass over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unreadables {
    /// Any manifest it cannot read or does not understand stops the prune, before any delete.
    #[default]
    Stop,
    /// Pass over them, keeping them and every blob they may name.
    Skip,
}

/// What the prune read: the points retention decides on, and what unreadable manifests pin.
struct Readings {
    points: Vec<(String, u64)>,
    /// What prune keeps of each manifest it read: the blobs it names and its index entry (not
    /// the manifest: memory grows with the index and the distinct blobs, not the manifests).
    read: BTreeMap<String, Read>,
    /// Blob hashes, each stored once; `Read::blobs` holds positions here.
    names: Vec<String>,
    unreadable: Vec<Unreadable>,
    /// Blobs named (or possibly named) by manifests prune cannot read.
    pinned: BTreeSet<String>,
    /// A manifest could not even be fetched: no blob may be deleted.
    keep_all_blobs: bool,
}

struct Read {
    blobs: Vec<u32>,
    entry: crate::store::latest::Entry,
}

/// Read every manifest, failing closed: a newer format always stops the prune, anything else
/// unreadable stops it unless `Skip`.
async fn read_all(store: &Store, mode: Unreadables) -> Result<Readings> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let mut r = Readings {
        points: vec![],
        read: BTreeMap::new(),
        names: vec![],
        unreadable: vec![],
        pinned: BTreeSet::new(),
        keep_all_blobs: false,
    };
    let hint = "fix the manifest, or run drd prune --skip-unreadable (it keeps that object and every blob it may name)";
    let prefix = store.points_prefix();
    let mut positions: std::collections::HashMap<String, u32> = Default::default();
    // Sixteen manifests fetched at a time, handled in key order.
    use futures::StreamExt;
    let mut fetched = futures::stream::iter(store.list(&prefix).await?)
        .map(|(key, _)| async move {
            let got = store.get(&key).await;
            (key, got)
        })
        .buffered(16);
    while let Some((key, got)) = fetched.next().await {
        // Anything else under points/ (a manifest renamed aside, a newer drd's file) may name
        // blobs too: it counts as a manifest this drd cannot read.
        let Some(id) = key
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".json"))
            .filter(|r| !r.contains('/'))
            .map(str::to_string)
        else {
            if mode == Unreadables::Stop {
                return Err(Error::failed_hint(
                    format!("prune stopped before any delete: {key} is not a manifest name, and may name blobs"),
                    hint,
                ));
            }
            let named = match got {
                Ok(Some(b)) => manifest::hashes_in(&b),
                Ok(None) => continue,
                Err(_) => {
                    r.keep_all_blobs = true;
                    BTreeSet::new()
                }
            };
            r.unreadable.push(Unreadable {
                key,
                why: "not a manifest name".into(),
                kept: format!("{} blob(s) its bytes name", named.len()),
            });
            r.pinned.extend(named);
            continue;
        };
        let bytes = match got {
            Ok(Some(b)) => b,
            // Deleted since the listing (another prune): nothing to keep for it.
            Ok(None) => continue,
            Err(e) if mode == Unreadables::Skip => {
                r.keep_all_blobs = true;
                r.unreadable.push(Unreadable {
                    key,
                    why: e.to_string(),
                    kept: "every blob (the manifest could not be read)".into(),
                });
                continue;
            }
            Err(e) => {
                return Err(Error::failed_hint(
                    format!(
                        "prune stopped before any delete: manifest {key} could not be read: {e}"
                    ),
                    hint,
                ))
            }
        };
        match manifest::parse(&key, &bytes) {
            Ok(m) => {
                let t = humantime::parse_rfc3339(&m.created_at)
                    .map(secs)
                    .unwrap_or(0);
                r.points.push((id.clone(), t));
                let mut blobs: Vec<u32> = m
                    .blobs()
                    .into_iter()
                    .map(|(_, b)| {
                        *positions.entry(b.sha256.clone()).or_insert_with(|| {
                            r.names.push(b.sha256.clone());
                            (r.names.len() - 1) as u32
                        })
                    })
                    .collect();
                blobs.sort_unstable();
                blobs.dedup();
                let entry = super::entry_of(&m);
                r.read.insert(id, Read { blobs, entry });
            }
            Err(p @ ManifestProblem::Newer { .. }) => return Err(p.into()),
            Err(ManifestProblem::Unreadable { key, why }) if mode == Unreadables::Skip => {
                let named = manifest::hashes_in(&bytes);
                r.unreadable.push(Unreadable {
                    key,
                    why,
                    kept: format!("{} blob(s) its bytes name", named.len()),
                });
                r.pinned.extend(named);
            }
            Err(ManifestProblem::Unreadable { key, why }) => {
                return Err(Error::failed_hint(
                    format!("prune stopped before any delete: manifest {key} is unreadable: {why}"),
                    hint,
                ))
            }
        }
    }
    Ok(r)
}

/// Before any delete, the index and the newest-point pointer describe only the kept points
/// (from what prune read; new segments written once, then the pointer), so a prune that stops
/// halfway leaves unlisted points about to go, never listed points that are gone. Returns the
/// old segments, deleted after everything else (a reader holding the old pointer retries).
async fn reindex(
    store: &Store,
    decisions: &[retention::Decision],
    read: &BTreeMap<String, Read>,
    token: u64,
) -> Result<Vec<String>> {
    use crate::store::latest;
    let mut kept: Vec<&latest::Entry> = decisions
        .iter()
        .filter(|d| d.keep)
        .filter_map(|d| read.get(&d.id).map(|r| &r.entry))
        .collect();
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    let mut index = latest::Index::default();
    for e in &kept {
        index.push(store, (*e).clone()).await?;
    }
    let old = latest::read(store).await?.and_then(|l| l.index);
    let head = kept.last().map(|e| latest::Latest {
        id: e.id.clone(),
        created_at: e.created_at.clone(),
        fencing_token: token,
        index: Some(index.clone()),
    });
    latest::reset(store, head.as_ref()).await?;
    Ok(old
        .map(|old| {
            old.segments
                .iter()
                .filter(|s| !index.segments.contains(s))
                .map(|s| latest::segment_key(store, s))
                .collect()
        })
        .unwrap_or_default())
}

/// Apply the policy's retention at `now` (under the store lease unless `dry_run`).
/// Every blob a source-mirror manifest (`mirror/manifests/`) names: the hashes in its bytes.
/// A manifest that cannot be read stops prune, as a point manifest does.
async fn mirror_blobs(store: &crate::store::Store) -> Result<BTreeSet<String>> {
    let prefix = format!("{}mirror/", store.prefix);
    let mut out = BTreeSet::new();
    for (key, _) in store.list(&prefix).await? {
        if !key.ends_with(".json") {
            continue;
        }
        let bytes = store.get(&key).await?.ok_or_else(|| {
            crate::Error::failed_hint(
                format!("{key} vanished while prune read it"),
                "run prune again",
            )
        })?;
        out.extend(manifest::hashes_in(&bytes));
    }
    Ok(out)
}

pub async fn prune(
    aws: &Aws,
    policy: &Policy,
    now: SystemTime,
    dry_run: bool,
    mode: Unreadables,
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
    let token = lease.as_ref().map(|l| l.record.token).unwrap_or(0);
    let work = async {
        let Readings {
            points,
            read,
            names,
            unreadable,
            pinned,
            keep_all_blobs,
        } = read_all(&store, mode).await?;
        let decisions = retention::apply(
            &retention::Rules::from_policy(&policy.retention),
            &points,
            secs(now),
        );
        let named: BTreeSet<String> = decisions
            .iter()
            .filter(|d| d.keep)
            .filter_map(|d| read.get(&d.id))
            .flat_map(|r| r.blobs.iter().map(|&i| names[i as usize].clone()))
            .collect();
        // The source mirror's bundles and zips are blobs too, named by its manifests
        // (`drd mirror`), which retention does not touch: every one of them is kept.
        let mirrored = mirror_blobs(&store).await?;
        let kept = [named, pinned, mirrored];
        let prefix = store.objects_prefix();
        let all: Vec<String> = store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.rsplit('/').next().map(str::to_string))
            .collect();
        let gone = if keep_all_blobs {
            vec![]
        } else {
            retention::unreferenced(all.iter(), &kept)
        };
        if !dry_run {
            // Manifests first: a point disappears before any blob it names. DeleteObjects, a
            // thousand keys a call.
            let points: Vec<String> = decisions
                .iter()
                .filter(|d| !d.keep)
                .map(|d| store.point_key(&d.id))
                .collect();
            let old_segments = if points.is_empty() {
                vec![]
            } else {
                reindex(&store, &decisions, &read, token).await?
            };
            store.delete_many(&points).await?;
            let blobs: Vec<String> = gone.iter().map(|b| store.blob_key(b)).collect();
            store.delete_many(&blobs).await?;
            store.delete_many(&old_segments).await?;
        }
        Ok::<_, crate::Error>(PruneReport {
            dry_run,
            decisions,
            blobs_deleted: gone,
            unreadable,
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
