//! Code packages on their way into the store: streamed from the artifact bucket (or Lambda's
//! presigned `Code.Location`) into a spool file while hashed, then streamed to the store. A
//! package is tens of megabytes and a daemon backs up several stacks at once, so no package is
//! ever held in memory whole (issue 21: the 100-stack daemon's peak RSS).

use crate::aws::{aws_error, error_code};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::workload::package;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// A package spooled to a temporary file (removed when dropped), with its hash and size.
pub(super) struct Spooled {
    pub path: tempfile::TempPath,
    pub sha256: String,
    pub size: u64,
}

/// Spool files live in `TMPDIR` (the container image provides a writable `/tmp`).
async fn spool() -> Result<(tokio::fs::File, tempfile::TempPath)> {
    let t = tempfile::Builder::new()
        .prefix("drd-package-")
        .tempfile()
        .map_err(|e| {
            Error::failed_hint(
                format!(
                    "cannot create a spool file for a code package in {}: {e}",
                    std::env::temp_dir().display()
                ),
                "set TMPDIR to a writable directory",
            )
        })?;
    let (f, path) = t.into_parts();
    Ok((tokio::fs::File::from_std(f), path))
}

/// Append a chunk to the spool and the running hash.
async fn write_chunk(
    f: &mut tokio::fs::File,
    h: &mut Sha256,
    size: &mut u64,
    chunk: &[u8],
) -> Result<()> {
    h.update(chunk);
    *size += chunk.len() as u64;
    f.write_all(chunk)
        .await
        .map_err(|e| Error::failed(format!("writing a code package spool file: {e}")))
}

/// Fetch the package whose SHA-256 is `hex`: from the artifact bucket, where `drd deploy` keeps
/// it content-addressed, else from `GetFunction`'s presigned `Code.Location`.
pub(super) async fn fetch(
    artifacts: &aws_sdk_s3::Client,
    lambda: &aws_sdk_lambda::Client,
    policy: &Policy,
    region: &str,
    hex: &str,
    used_by: &[String],
) -> Result<Spooled> {
    let bucket = policy.artifact_bucket(region);
    let (mut f, path) = spool().await?;
    let (mut h, mut size) = (Sha256::new(), 0u64);
    match artifacts
        .get_object()
        .bucket(&bucket)
        .key(package::object_key(hex))
        .send()
        .await
    {
        Ok(o) => {
            let mut body = o.body;
            while let Some(chunk) = body.try_next().await.map_err(|e| {
                Error::failed(format!("reading the code package from {bucket}: {e}"))
            })? {
                write_chunk(&mut f, &mut h, &mut size, &chunk).await?;
            }
            return finish(f, path, h, size).await;
        }
        Err(e) if error_code(&e) == Some("NoSuchKey") || error_code(&e) == Some("NoSuchBucket") => {
        }
        Err(e) => return Err(aws_error("s3", "GetObject", e)),
    }
    // Not in the artifact bucket: on real AWS, Code.Location is a presigned URL.
    let qualifier = used_by
        .first()
        .and_then(|u| u.split(['(', ')']).nth(1))
        .unwrap_or("$LATEST")
        .to_string();
    let got = lambda
        .get_function()
        .function_name(policy.function_name())
        .qualifier(qualifier)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetFunction", e))?;
    let location = got
        .code()
        .and_then(|c| c.location())
        .unwrap_or_default()
        .to_string();
    let unreachable = |e: reqwest::Error| {
        Error::failed_hint(
            format!(
                "the code package {hex} is neither in {bucket} nor downloadable from Code.Location: {}",
                e.without_url()
            ),
            "deploy with drd deploy so packages are stored content-addressed",
        )
    };
    let mut r = reqwest::get(&location)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(unreachable)?;
    while let Some(chunk) = r.chunk().await.map_err(unreachable)? {
        write_chunk(&mut f, &mut h, &mut size, &chunk).await?;
    }
    finish(f, path, h, size).await
}

async fn finish(
    mut f: tokio::fs::File,
    path: tempfile::TempPath,
    h: Sha256,
    size: u64,
) -> Result<Spooled> {
    f.flush()
        .await
        .map_err(|e| Error::failed(format!("writing a code package spool file: {e}")))?;
    Ok(Spooled {
        path,
        sha256: hex::encode(h.finalize()),
        size,
    })
}
