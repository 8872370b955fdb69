//! Copies of a point to the policy's further buckets (`backup.copies`): missing blobs first,
//! the manifest last, so a copy is a valid point or none.

use super::manifest::Manifest;
use super::writer::Fresh;
use super::PrevPoint;
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::{Store, Written};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, serde::Serialize)]
pub struct CopyReport {
    pub bucket: String,
    pub region: String,
    pub objects_copied: u64,
}

/// A copy bucket made ready for this run's point: created (with the policy's Object Lock) if
/// missing, and asked whether it holds the previous point.
pub(super) struct PreparedCopy {
    bucket: String,
    region: String,
    target: Result<(Store, bool)>,
}

pub(super) async fn prepare_copy(
    aws: &Aws,
    policy: &Policy,
    c: &crate::policy::CopyPolicy,
    prev: Option<&PrevPoint>,
) -> PreparedCopy {
    let (bucket, region) = (c.bucket.get_ref().clone(), c.region.get_ref().clone());
    let target = async {
        let role = policy
            .backup
            .role_arn
            .as_ref()
            .map(|r| r.get_ref().as_str());
        let s3 = aws.s3_as(&region, role).await;
        let target = Store::new(s3.clone(), &bucket, policy.stack_name());
        let lock = policy.backup.object_lock.as_ref();
        // The common case costs one request: the bucket (without a lock to check) holds the
        // previous point. Anything else makes sure the bucket exists first.
        if let (Some(p), None) = (prev, lock) {
            if target.exists(&target.point_key(&p.id)).await? {
                return Ok((target, true));
            }
        }
        let file = policy.path.display().to_string();
        crate::store::ensure_store_bucket(&s3, &bucket, &region, lock, &file).await?;
        let prev_copied = match (prev, lock) {
            (Some(p), Some(_)) => target.exists(&target.point_key(&p.id)).await?,
            _ => false,
        };
        Ok((target, prev_copied))
    }
    .await;
    PreparedCopy {
        bucket,
        region,
        target,
    }
}

/// Copy a point to every further bucket (concurrently): missing blobs first, the manifest last.
///
/// A copy bucket that holds the previous point's manifest holds every blob it names (manifests
/// are written last), so only the blobs the previous point did not name are looked at; blobs
/// this run wrote are copied from memory, others read back from the store.
pub(super) async fn copy_point(
    store: &Store,
    manifest: &Manifest,
    body: &[u8],
    prev: Option<&PrevPoint>,
    fresh: &BTreeMap<String, Fresh>,
    prepared: Vec<PreparedCopy>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<CopyReport>> {
    let one = |p: PreparedCopy| async move {
        let PreparedCopy {
            bucket,
            region,
            target,
        } = p;
        let (target, prev_copied) = target?;
        let mut seen = BTreeSet::new();
        let jobs = manifest
            .blobs()
            .into_iter()
            .filter(|(_, b)| seen.insert(b.sha256.clone()))
            .filter(|(_, b)| !(prev_copied && prev.is_some_and(|p| p.blobs.contains(&b.sha256))))
            .map(|(_, b)| {
                let target = &target;
                async move {
                    let key = target.blob_key(&b.sha256);
                    // Written by this run: a conditional PUT, no lookup, no read-back.
                    match fresh.get(&b.sha256) {
                        Some(Fresh::Bytes(bytes)) => {
                            return Ok::<u64, Error>(u64::from(
                                target.put_new(&key, bytes).await? == Written::New,
                            ));
                        }
                        Some(Fresh::File(path, size)) => {
                            return Ok(u64::from(
                                target.put_new_file(&key, path, *size).await? == Written::New,
                            ));
                        }
                        None => {}
                    }
                    if target.exists(&key).await? {
                        return Ok(0);
                    }
                    // GET + conditional PUT rather than CopyObject: moto 5.2.1 refuses
                    // CopyObject into an Object Lock bucket without a checksum header the SDK
                    // does not send for copies.
                    let bytes = store.get_blob(&b.sha256).await?.ok_or_else(|| {
                        Error::failed(format!(
                            "blob {} vanished while copying point {}",
                            store.blob_key(&b.sha256),
                            manifest.id
                        ))
                    })?;
                    Ok(u64::from(
                        target.put_once(&key, &bytes).await? == Written::New,
                    ))
                }
            });
        let mut copied: u64 = futures::future::try_join_all(jobs).await?.into_iter().sum();
        if target
            .put_new(&target.point_key(&manifest.id), body)
            .await?
            == Written::New
        {
            copied += 1;
        }
        progress(&format!(
            "copied to s3://{bucket} ({region}): {copied} object(s)"
        ));
        Ok::<_, Error>(CopyReport {
            bucket,
            region,
            objects_copied: copied,
        })
    };
    futures::future::try_join_all(prepared.into_iter().map(one)).await
}
