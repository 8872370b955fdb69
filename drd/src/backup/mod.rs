//! Backups: one recovery point per run, capturing the stack, the function, its code packages,
//! its log group and age-encrypted secrets into the store (`crate::store`).
//!
//! Order matters: blobs first (content-addressed, written once), the manifest last. A run that
//! dies halfway leaves no point. Unchanged inputs add no blob: templates, configuration and code
//! hash to the same address, and a secret version already backed up (by version id) is never
//! encrypted again.

mod capture;
mod code;
mod copy;
pub mod crypto;
mod env;
pub mod manifest;
pub mod prune;
pub mod retention;
pub mod verify;
mod writer;

pub use capture::capture_parameters;
pub use copy::CopyReport;

use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::lease::Lease;
use crate::store::Store;
use capture::Capture;
use copy::{copy_point, prepare_copy};
use manifest::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};
use writer::Writer;

/// Lease on the store held by every writing command.
pub const STORE_LEASE: &str = "store";
/// Renewed every third of it while a backup or prune runs.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, serde::Serialize)]
pub struct BackupReport {
    pub id: String,
    pub new_blobs: u64,
    pub new_bytes: u64,
    /// Objects this run wrote (new blobs + the manifest).
    pub objects_written: u64,
    /// Further buckets the point was copied to, with the objects copied to each.
    pub copies: Vec<CopyReport>,
    pub changed: Vec<String>,
    pub duration_ms: u64,
}

/// The newest point whose manifest parses, if any: the one the newest-point pointer names (no
/// listing), else from the listing (a missing, unreadable or dangling pointer). A newer manifest
/// format stops it: this drd must not write beside points it cannot read.
pub async fn latest_manifest(store: &Store) -> Result<Option<Manifest>> {
    if let Some(l) = crate::store::latest::read(store).await? {
        let key = store.point_key(&l.id);
        if let Some(b) = store.get(&key).await? {
            match manifest::parse(&key, &b) {
                Ok(m) => return Ok(Some(m)),
                Err(p @ ManifestProblem::Newer { .. }) => return Err(p.into()),
                Err(p) => tracing::warn!("{}", Error::from(p)),
            }
        }
    }
    for id in store.point_ids().await?.iter().rev() {
        let key = store.point_key(id);
        if let Some(b) = store.get(&key).await? {
            match manifest::parse(&key, &b) {
                Ok(m) => return Ok(Some(m)),
                Err(p @ ManifestProblem::Newer { .. }) => return Err(p.into()),
                Err(p) => tracing::warn!("{}", Error::from(p)),
            }
        }
    }
    Ok(None)
}

pub async fn read_manifest(store: &Store, id: &str) -> Result<Manifest> {
    let b = store.get(&store.point_key(id)).await?.ok_or_else(|| {
        Error::failed_hint(
            format!("recovery point {id} does not exist"),
            "list points with drd points list",
        )
    })?;
    Ok(manifest::parse(&store.point_key(id), &b)?)
}

/// A new point id: sortable time, then a random suffix.
pub fn new_point_id(now: SystemTime) -> String {
    let t = humantime::format_rfc3339_millis(now).to_string(); // 2026-11-27T04:15:00.123Z
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let seed = format!("{:?}{}{}", now, std::process::id(), t);
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    format!("{compact}-{}", &h[..8])
}

/// The id of the point a daemon firing takes: the firing's time, then a digest of the stack, job,
/// firing and fencing token. A retried firing (the same claim) writes the same id, so a reply
/// lost after the manifest was stored can never make two points for one firing.
pub fn scheduled_point_id(stack: &str, s: &manifest::Scheduled) -> Option<String> {
    let tick = humantime::parse_rfc3339(&s.tick).ok()?;
    let t = humantime::format_rfc3339_millis(tick).to_string();
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let seed = format!("{stack}\n{}\n{}\n{}", s.job, s.tick, s.token);
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    Some(format!("{compact}-{}", &h[..8]))
}

/// Move the newest-point pointer to `m`, with its index entry (before its manifest is written;
/// see `store::latest`).
async fn advance_pointer(store: &Store, m: &Manifest) -> Result<()> {
    // A retried firing whose first attempt stored the point (its reply lost) must not move the
    // pointer back behind points written since, nor add its row twice.
    if m.scheduled.is_some() && store.exists(&store.point_key(&m.id)).await? {
        return Ok(());
    }
    let to = crate::store::latest::Latest {
        id: m.id.clone(),
        created_at: m.created_at.clone(),
        fencing_token: m.fencing_token,
        index: None,
    };
    crate::store::latest::advance(store, &to, entry_of(m), || build_index(store, None)).await
}

/// A point's row in the index.
pub fn entry_of(m: &Manifest) -> crate::store::latest::Entry {
    crate::store::latest::Entry {
        id: m.id.clone(),
        created_at: m.created_at.clone(),
        bytes: m.total_bytes(),
        new_blobs: m.changes.new_blobs,
        changed: m.changes.items.clone(),
    }
}

/// The index of the points the store holds, from the listing and every manifest (16 read at
/// a time): for points from before the index, and `drd points reindex`. `keep` limits it to
/// those ids. A manifest of a newer format stops it; one it cannot read is left out (verify
/// names it).
pub async fn build_index(
    store: &Store,
    keep: Option<&BTreeSet<String>>,
) -> Result<crate::store::latest::Index> {
    use futures::StreamExt;
    let ids: Vec<String> = store
        .point_ids()
        .await?
        .into_iter()
        .filter(|id| keep.is_none_or(|k| k.contains(id)))
        .collect();
    let mut reads = futures::stream::iter(ids)
        .map(|id| async move {
            let key = store.point_key(&id);
            Ok::<_, Error>(store.get(&key).await?.map(|b| manifest::parse(&key, &b)))
        })
        .buffered(16);
    let mut index = crate::store::latest::Index::default();
    while let Some(r) = reads.next().await {
        match r? {
            None => {}
            Some(Ok(m)) => index.push(store, entry_of(&m)).await?,
            Some(Err(p @ ManifestProblem::Newer { .. })) => return Err(p.into()),
            Some(Err(p)) => tracing::warn!("left out of the index: {}", Error::from(p)),
        }
    }
    Ok(index)
}

/// The previous point as copies see it: its id and the blobs it names.
struct PrevPoint {
    pub(crate) id: String,
    pub(crate) blobs: BTreeSet<String>,
}

/// Take one recovery point.
pub async fn backup(
    aws: &Aws,
    policy: &Policy,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BackupReport> {
    backup_scheduled(aws, policy, progress, None).await
}

/// Take one recovery point; a scheduled run records its firing and fencing token in it.
pub async fn backup_scheduled(
    aws: &Aws,
    policy: &Policy,
    progress: &(dyn Fn(&str) + Sync),
    scheduled: Option<manifest::Scheduled>,
) -> Result<BackupReport> {
    let started = Instant::now();
    let recipient_names = policy.backup.recipient_names();
    let recipients = crypto::recipients(&recipient_names)?;
    // A store with Object Lock is checked first (a lock is never weakened); one without is
    // used at once, and created only when the first write finds no bucket.
    let store = if policy.backup.object_lock.is_some() {
        crate::store::open_store(aws, policy).await?
    } else {
        crate::store::store_of(aws, policy).await
    };
    // The lease first: no prune can delete a blob between this run's lookup (or conditional
    // write) and the manifest that names it. A store without a bucket yet answers the lease
    // write with NoSuchBucket: create it and take the lease again.
    let mut lease = match Lease::acquire(&store, STORE_LEASE, "drd backup", LEASE_TTL).await {
        Err(Error::Aws { code, .. }) if code == "NoSuchBucket" => {
            crate::store::open_store(aws, policy).await?;
            Lease::acquire(&store, STORE_LEASE, "drd backup", LEASE_TTL).await?
        }
        r => r?,
    };
    let record = lease.record.clone();
    let mut prev_point = None;
    // Everything that writes runs under the renewed lease; losing it stops the run before its
    // manifest (a run that stops earlier leaves no point).
    let work = async {
        // The previous point is only a hint (which secret versions are already stored; every
        // reuse is checked against the store). No listing: a store's size costs nothing here.
        let (prev, active, source, drilling) = tokio::join!(
            latest_manifest(&store),
            crate::store::active::read_active(&store),
            source_mirror(&store, policy),
            crate::store::drill_marker::active(&store, crate::store::drill_marker::now_secs())
        );
        let (prev, active, source, drilling) = (prev?, active?, source?, drilling?);
        if let Some(d) = &drilling {
            progress(&format!(
                "drill {} (run {}) is running: this point is labelled and restore --point latest skips it",
                d.drill, d.run
            ));
        }
        prev_point = prev.as_ref().map(|m| PrevPoint {
            id: m.id.clone(),
            blobs: m
                .blobs()
                .into_iter()
                .map(|(_, b)| b.sha256.clone())
                .collect(),
        });
        // The stack is captured where it serves: the primary, or the region the last
        // `drd restore` recorded as active.
        let region = active
            .as_ref()
            .map(|a| a.region.as_str())
            .unwrap_or(policy.primary_region());
        // Copy buckets are made ready (and asked whether they hold the previous point) while
        // the capture runs; their failures are reported at the copy, after the point.
        let (r, prepared) = tokio::join!(
            Capture {
                aws,
                policy,
                store: &store,
                region,
                w: Writer {
                    store: &store,
                    new_blobs: AtomicU64::new(0),
                    new_bytes: AtomicU64::new(0),
                    fresh: Default::default(),
                },
                recipients: &recipients,
                recipient_names: &recipient_names,
                prev,
                source,
                drill: drilling.map(|d| manifest::DrillMark {
                    drill: d.drill,
                    run: d.run,
                }),
                progress,
            }
            .run(&record, scheduled),
            futures::future::join_all(policy.backup.copies.iter().map(|c| prepare_copy(
                aws,
                policy,
                c,
                prev_point.as_ref()
            )))
        );
        r.map(|r| (r, prepared))
    };
    let (result, prepared) = match lease.guard(work).await {
        Ok(Ok((captured, prepared))) => (Ok(captured), prepared),
        Ok(Err(e)) => (Err(e), vec![]),
        Err(lost) => (
            Err(Error::failed_hint(
                format!(
                    "the backup stopped before its manifest: the store lease {} was lost ({})",
                    lost.key, lost.why
                ),
                "no point was made; run drd backup again",
            )),
            vec![],
        ),
    };
    // The point is complete once its manifest exists: copy it to further buckets while the
    // store lease is given back.
    let (copies, release) = match &result {
        Ok((_, manifest, body, fresh)) => {
            let (c, r) = tokio::join!(
                copy_point(
                    &store,
                    manifest,
                    body,
                    prev_point.as_ref(),
                    fresh,
                    prepared,
                    progress
                ),
                lease.release()
            );
            (Some(c), r)
        }
        Err(_) => (None, lease.release().await),
    };
    let (mut report, _, _, _) = result?;
    report.copies = copies.transpose()?.unwrap_or_default();
    release?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The source mirror's pointer (`mirror/latest.json`, written by `drd mirror`), when the
/// policy mirrors a repository: one GET, no listing.
async fn source_mirror(store: &Store, policy: &Policy) -> Result<Option<SourceMirror>> {
    if policy.ci.is_none() {
        return Ok(None);
    }
    let key = format!("{}mirror/latest.json", store.prefix);
    // Best effort: a point is never refused because the mirror's pointer cannot be read.
    let b = match store.get(&key).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "the source mirror's pointer could not be read");
            return Ok(None);
        }
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else {
        tracing::warn!("{key} is unreadable: the point names no source mirror");
        return Ok(None);
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Ok(
        match (field("manifest"), field("head"), field("fetched_at")) {
            (Some(manifest), Some(head), Some(fetched_at)) => Some(SourceMirror {
                manifest,
                head,
                fetched_at,
            }),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_echo_parameters_are_never_recorded_in_clear() {
        let no_echo: BTreeSet<String> = ["DbPassword".to_string()].into();
        let p = capture_parameters(
            [
                ("DbPassword", "hunter2-in-clear"),
                ("CodeKey", "objects/x"),
                ("Masked", "****"),
            ]
            .into_iter(),
            &no_echo,
        );
        assert_eq!(p[0].value, None);
        assert!(p[0].redacted);
        assert_eq!(p[1].value.as_deref(), Some("objects/x"));
        assert!(p[2].redacted);
        assert!(!serde_json::to_string(&p).unwrap().contains("hunter2"));
    }

    #[test]
    fn a_firing_always_names_the_same_point() {
        let s = |token| manifest::Scheduled {
            job: "backup".into(),
            tick: "2026-11-27T04:15:00Z".into(),
            token,
            daemon: "host:1".into(),
        };
        let a = scheduled_point_id("stk", &s(7)).unwrap();
        assert_eq!(
            scheduled_point_id("stk", &s(7)).unwrap(),
            a,
            "a retry writes the same id"
        );
        assert!(a.starts_with("20261127T041500000Z-"), "{a}");
        assert_ne!(
            scheduled_point_id("stk", &s(8)).unwrap(),
            a,
            "another claim, another id"
        );
        assert_ne!(scheduled_point_id("other", &s(7)).unwrap(), a);
    }

    #[test]
    fn point_ids_sort_by_time() {
        let a = new_point_id(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let b = new_point_id(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_001));
        assert!(a < b, "{a} {b}");
        // Points taken within one second still sort in the order they were taken.
        let c = new_point_id(std::time::UNIX_EPOCH + Duration::from_millis(1_800_000_001_001));
        let d = new_point_id(std::time::UNIX_EPOCH + Duration::from_millis(1_800_000_001_999));
        assert!(b < c && c < d, "{b} {c} {d}");
        assert!(a.starts_with("20270115T"), "{a}");
    }
}
