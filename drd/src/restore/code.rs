//! The code package: copied from the store into the target region's artifact bucket, re-hashed.

use super::plan::live_code;
use crate::aws::Aws;
use crate::backup::manifest::Manifest;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::Store;
use crate::workload::package;
use sha2::{Digest, Sha256};

/// Copy live's code package from the store into the target region's artifact bucket (created if
/// absent), checking its hash; returns (bucket, key, uploaded).
pub async fn restore_code(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    target: &str,
) -> Result<(String, String, bool)> {
    let (_, _, hex) = live_code(m)?;
    let bucket = policy.artifact_bucket(target);
    let s3 = aws.s3(target).await;
    crate::store::ensure_store_bucket(&s3, &bucket, target, None, "").await?;
    let artifacts = Store::with_prefix(s3, &bucket, "");
    let key = package::object_key(&hex);
    if let Some(have) = artifacts.get(&key).await? {
        if hex::encode(Sha256::digest(&have)) == hex {
            return Ok((bucket, key, false));
        }
    }
    let zip = store.get_blob(&hex).await?.ok_or_else(|| {
        Error::failed(format!("the code package {hex} is missing from the store"))
    })?;
    let got = hex::encode(Sha256::digest(&zip));
    if got != hex {
        return Err(Error::failed(format!(
            "the stored code package {hex} hashes to {got}: refusing to deploy it"
        )));
    }
    // put (not put_once): a corrupted object under the content address is replaced.
    artifacts.put(&key, &zip).await?;
    Ok((bucket, key, true))
}

/// Check: the package is in the target's artifact bucket and hashes to its address.
pub async fn code_present(aws: &Aws, policy: &Policy, m: &Manifest, target: &str) -> Result<()> {
    let (_, _, hex) = live_code(m)?;
    let bucket = policy.artifact_bucket(target);
    let artifacts = Store::with_prefix(aws.s3(target).await, &bucket, "");
    let key = package::object_key(&hex);
    match artifacts.get(&key).await? {
        None => Err(Error::failed(format!("s3://{bucket}/{key} does not exist"))),
        Some(b) if hex::encode(Sha256::digest(&b)) != hex => Err(Error::failed(format!(
            "s3://{bucket}/{key} does not hash to its address"
        ))),
        Some(_) => Ok(()),
    }
}
