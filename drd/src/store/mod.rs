//! The recovery-point store on S3: one bucket, one prefix per protected stack.
//!
//! ```text
//! <stack>/objects/sha256/<aa>/<hex>   immutable blobs, written once (If-None-Match: *)
//! <stack>/points/<time>-<id>.json     recovery-point manifests, written LAST
//! <stack>/latest-point.json           the newest-point pointer and points index (`latest`)
//! <stack>/index/<segment>.json        index segments, written once
//! <stack>/locks/<name>                leases
//! ```
//! A point exists only once its manifest exists; a run that dies halfway leaves at most
//! unreferenced blobs, which `prune` removes.

pub mod active;
pub mod ci_epoch;
pub mod drill_marker;
pub mod latest;
pub mod lease;
pub mod protect;

use crate::aws::{aws_error, error_code, Aws};
use crate::error::{Error, Result};
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A blob named by its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone)]
pub struct Store {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    Existed,
}

impl Store {
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, stack: &str) -> Self {
        Self {
            s3,
            bucket: bucket.to_string(),
            prefix: format!("{stack}/"),
        }
    }

    /// A store with an explicit key prefix ("" for an artifact bucket).
    pub fn with_prefix(s3: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        Self {
            s3,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    /// Where an operator's approval of a runbook step is recorded.
    pub fn approval_key(&self, run: &str, step: &str) -> String {
        format!("{}journal/{run}/approvals/{step}.json", self.prefix)
    }

    pub fn blob_key(&self, hex: &str) -> String {
        format!(
            "{}objects/sha256/{}/{}",
            self.prefix,
            &hex[..2.min(hex.len())],
            hex
        )
    }

    pub fn point_key(&self, id: &str) -> String {
        format!("{}points/{id}.json", self.prefix)
    }

    pub fn points_prefix(&self) -> String {
        format!("{}points/", self.prefix)
    }

    pub fn objects_prefix(&self) -> String {
        format!("{}objects/sha256/", self.prefix)
    }

    /// Store bytes under their SHA-256 unless already present.
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<(BlobRef, Written)> {
        let hex = hex::encode(Sha256::digest(bytes));
        let r = BlobRef {
            sha256: hex.clone(),
            size: bytes.len() as u64,
        };
        // Small blobs go straight to a conditional PUT (one round trip); large ones are looked
        // up first so an unchanged code package is never uploaded again.
        let key = self.blob_key(&hex);
        let w = if bytes.len() < 1 << 20 {
            self.put_new(&key, bytes).await?
        } else {
            self.put_once(&key, bytes).await?
        };
        Ok((r, w))
    }

    /// A conditional PUT (`If-None-Match: *`) without a lookup first.
    pub async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Written> {
        match self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(bytes.to_vec().into())
            .send()
            .await
        {
            Ok(_) => Ok(Written::New),
            // 409: a conditional write to this key overlapped ours (S3 ConditionalRequestConflict).
            Err(e) if matches!(status_of(&e), Some(412 | 409)) => Ok(Written::Existed),
            Err(e) => Err(aws_error("s3", "PutObject", e)),
        }
    }

    /// A conditional PUT (`If-None-Match: *`) of a file, streamed from disk (code packages are
    /// never held in memory whole).
    pub async fn put_new_file(
        &self,
        key: &str,
        path: &std::path::Path,
        size: u64,
    ) -> Result<Written> {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| Error::failed(format!("reading {}: {e}", path.display())))?;
        match self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_length(size as i64)
            .body(body)
            .send()
            .await
        {
            Ok(_) => Ok(Written::New),
            // 409: a conditional write to this key overlapped ours (S3 ConditionalRequestConflict).
            Err(e) if matches!(status_of(&e), Some(412 | 409)) => Ok(Written::Existed),
            Err(e) => Err(aws_error("s3", "PutObject", e)),
        }
    }

    /// An object with its ETag, for a compare-and-swap; `None` when absent.
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let etag = o.e_tag().unwrap_or_default().to_string();
                let b = o.body.collect().await.map_err(|e| {
                    Error::failed(format!("reading s3://{}/{key}: {e}", self.bucket))
                })?;
                Ok(Some((b.into_bytes().to_vec(), etag)))
            }
            Err(e) if error_code(&e) == Some("NoSuchKey") || status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(aws_error("s3", "GetObject", e)),
        }
    }

    /// Compare-and-swap: write `bytes` only if the object is absent (`etag` None:
    /// `If-None-Match: *`) or still has `etag` (`If-Match`). `Ok(None)` when the condition
    /// failed (412, or 409 when S3 saw two conditional writes overlap); else the new ETag.
    pub async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        etag: Option<&str>,
    ) -> Result<Option<String>> {
        let req = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(bytes.to_vec().into());
        let req = match etag {
            None => req.if_none_match("*"),
            Some(e) => req.if_match(e),
        };
        match req.send().await {
            Ok(o) => Ok(Some(o.e_tag().unwrap_or_default().to_string())),
            Err(e) if matches!(status_of(&e), Some(412 | 409)) => Ok(None),
            Err(e) if status_of(&e) == Some(404) && etag.is_some() => Ok(None),
            Err(e) => Err(aws_error("s3", "PutObject", e)),
        }
    }

    /// Write (or replace) a mutable object such as `pins/<function>.json`.
    pub async fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(bytes.to_vec().into())
            .send()
            .await
            .map_err(|e| aws_error("s3", "PutObject", e))?;
        Ok(())
    }

    /// Write an object only if absent (`If-None-Match: *`).
    pub async fn put_once(&self, key: &str, bytes: &[u8]) -> Result<Written> {
        if self.exists(key).await? {
            return Ok(Written::Existed);
        }
        self.put_new(key, bytes).await
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.head_size(key).await?.is_some())
    }

    /// An object's size, or `None` when absent (one HEAD).
    pub async fn head_size(&self, key: &str) -> Result<Option<u64>> {
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0) as u64)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(aws_error("s3", "HeadObject", e)),
        }
    }

    /// Read an object; `None` when absent.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key).await?.map(|(bytes, _)| bytes))
    }

    pub async fn get_blob(&self, hex: &str) -> Result<Option<Vec<u8>>> {
        self.get(&self.blob_key(hex)).await
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| aws_error("s3", "DeleteObject", e))?;
        Ok(())
    }

    /// Delete keys with DeleteObjects, a thousand a call (the most S3 takes); a key S3 reports
    /// it could not delete is an error naming it.
    pub async fn delete_many(&self, keys: &[String]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::failed(format!("DeleteObjects request: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::failed(format!("DeleteObjects request: {e}")))?;
            let out = self
                .s3
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| aws_error("s3", "DeleteObjects", e))?;
            if let Some(e) = out.errors().first() {
                let msg = format!(
                    "s3://{}/{} was not deleted: {} {}",
                    self.bucket,
                    e.key().unwrap_or("?"),
                    e.code().unwrap_or(""),
                    e.message().unwrap_or("")
                );
                // A per-key denial names no action: say which one, and whose role holds it.
                return Err(if e.code() == Some("AccessDenied") {
                    Error::failed_hint(
                        msg,
                        "the caller lacks s3:DeleteObject on it: only the store's prune role (backup.prune_role_arn) deletes points and blobs; `drd iam policy --store-role prune` (docs/store-account.md)",
                    )
                } else {
                    Error::failed(msg)
                });
            }
        }
        Ok(())
    }

    /// Every key under a prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = vec![];
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("s3", "ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_string(), o.size().unwrap_or(0) as u64));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The first page of keys under `prefix` after `start_after` (S3 `StartAfter`: what a store
    /// holds before that key costs nothing), and whether more follow.
    pub async fn list_after(&self, prefix: &str, start_after: &str) -> Result<(Vec<String>, bool)> {
        let page = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .start_after(start_after)
            .send()
            .await
            .map_err(|e| aws_error("s3", "ListObjectsV2", e))?;
        let keys = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        Ok((keys, page.is_truncated().unwrap_or(false)))
    }

    /// Point ids (sorted oldest first) whose manifests exist.
    pub async fn point_ids(&self) -> Result<Vec<String>> {
        let prefix = self.points_prefix();
        Ok(self
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| {
                k.strip_prefix(&prefix)
                    .and_then(|r| r.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect())
    }
}

pub fn status_of<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    e.raw_response().map(HasStatus::status_code)
}

/// The HTTP status of a raw SDK response.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Make sure a store bucket exists in `region`, with Object Lock when asked. An existing lock is
/// never weakened: a policy asking for less than the bucket has is refused.
pub async fn ensure_store_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
    lock: Option<&crate::policy::ObjectLockPolicy>,
    policy_file: &str,
) -> Result<()> {
    use aws_sdk_s3::types::{
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule,
    };
    let exists = match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => true,
        Err(e) if status_of(&e) == Some(404) => false,
        Err(e) => return Err(aws_error("s3", "HeadBucket", e)),
    };
    if !exists {
        let mut req = s3
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(lock.is_some());
        if region != "us-east-1" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) => return Err(aws_error("s3", "CreateBucket", e)),
        }
    }
    let Some(lock) = lock else { return Ok(()) };
    let mode = |m: crate::policy::LockMode| match m {
        crate::policy::LockMode::Governance => ObjectLockRetentionMode::Governance,
        crate::policy::LockMode::Compliance => ObjectLockRetentionMode::Compliance,
    };
    let current = match s3
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(o) => o.object_lock_configuration().cloned(),
        Err(e) if error_code(&e) == Some("ObjectLockConfigurationNotFoundError") => None,
        Err(e) => return Err(aws_error("s3", "GetObjectLockConfiguration", e)),
    };
    let enabled =
        current.as_ref().and_then(|c| c.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled);
    if exists && !enabled {
        return Err(crate::error::ConfigError::new(
            policy_file,
            format!("the store bucket {bucket} exists without Object Lock, which can only be switched on at creation"),
        )
        .field("backup.object_lock")
        .hint("point backup.bucket at a new bucket (drd creates it locked) or remove [backup.object_lock]")
        .into());
    }
    let have = current
        .as_ref()
        .and_then(|c| c.rule())
        .and_then(|r| r.default_retention())
        .map(|d| (d.mode().cloned(), d.days().unwrap_or(0)));
    let want_mode = mode(lock.mode);
    let want_days = *lock.days.get_ref() as i32;
    if let Some((have_mode, have_days)) = &have {
        let rank = |m: &Option<ObjectLockRetentionMode>| match m {
            Some(ObjectLockRetentionMode::Compliance) => 2,
            Some(ObjectLockRetentionMode::Governance) => 1,
            _ => 0,
        };
        if rank(&Some(want_mode.clone())) < rank(have_mode) || want_days < *have_days {
            return Err(crate::error::ConfigError::new(
                policy_file,
                format!(
                    "the store bucket {bucket} is locked {} for {have_days} days; the policy asks for {} for {want_days}: drd never weakens a lock",
                    have_mode.as_ref().map(|m| m.as_str()).unwrap_or("?"),
                    want_mode.as_str()
                ),
            )
            .field("backup.object_lock")
            .hint("raise backup.object_lock to at least the bucket's lock")
            .into());
        }
        if rank(&Some(want_mode.clone())) == rank(have_mode) && want_days == *have_days {
            return Ok(());
        }
    }
    let conf = ObjectLockConfiguration::builder()
        .object_lock_enabled(ObjectLockEnabled::Enabled)
        .rule(
            ObjectLockRule::builder()
                .default_retention(
                    DefaultRetention::builder()
                        .mode(want_mode)
                        .days(want_days)
                        .build(),
                )
                .build(),
        )
        .build();
    s3.put_object_lock_configuration()
        .bucket(bucket)
        .object_lock_configuration(conf)
        .send()
        .await
        .map_err(|e| aws_error("s3", "PutObjectLockConfiguration", e))?;
    Ok(())
}

/// The policy's store, without asking S3 anything: the bucket may not exist yet.
pub async fn store_of(aws: &Aws, policy: &Policy) -> Store {
    let role = policy
        .backup
        .role_arn
        .as_ref()
        .map(|r| r.get_ref().as_str());
    let s3 = aws.s3_as(policy.backup.region.get_ref(), role).await;
    Store::new(s3, policy.backup.bucket.get_ref(), policy.stack_name())
}

/// Open the store of the policy's stack, creating the bucket in the backup region if needed.
pub async fn open_store(aws: &Aws, policy: &Policy) -> Result<Store> {
    let store = store_of(aws, policy).await;
    ensure_store_bucket(
        &store.s3,
        &store.bucket,
        policy.backup.region.get_ref(),
        policy.backup.object_lock.as_ref(),
        &policy.path.display().to_string(),
    )
    .await?;
    Ok(store)
}

/// Open an existing store for reading; never creates anything.
pub async fn open_store_read(aws: &Aws, policy: &Policy) -> Result<Store> {
    let region = policy.backup.region.get_ref();
    let store = store_of(aws, policy).await;
    let bucket = &store.bucket;
    match store.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(store),
        Err(e) if status_of(&e) == Some(404) => Err(Error::failed_hint(
            format!("the store bucket {bucket} does not exist in {region}: there is no recovery point yet"),
            "take one with drd backup",
        )),
        Err(e) => Err(aws_error("s3", "HeadBucket", e)),
    }
}
