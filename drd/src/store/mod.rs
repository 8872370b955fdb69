//! The recovery-point store on S3: one bucket, one prefix per protected stack.
//!
//! ```text
//! <stack>/objects/sha256/<aa>/<hex>   immutable blobs, written once (If-None-Match: *)
//! <stack>/points/<time>-<id>.json     recovery-point manifests, written LAST
//! <stack>/locks/<name>                leases
//! ```
//! A point exists only once its manifest exists; a run that dies halfway leaves at most
//! unreferenced blobs, which `prune` removes.

pub mod lease;

use crate::aws::{aws_error, error_code};
use crate::error::{Error, Result};
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
        let w = self.put_once(&self.blob_key(&hex), bytes).await?;
        Ok((r, w))
    }

    /// Write an object only if absent (`If-None-Match: *`).
    pub async fn put_once(&self, key: &str, bytes: &[u8]) -> Result<Written> {
        if self.exists(key).await? {
            return Ok(Written::Existed);
        }
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
            Err(e) if status_of(&e) == Some(412) => Ok(Written::Existed),
            Err(e) => Err(aws_error("s3", "PutObject", e)),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(aws_error("s3", "HeadObject", e)),
        }
    }

    /// Read an object; `None` when absent.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let b = o.body.collect().await.map_err(|e| {
                    Error::failed(format!("reading s3://{}/{key}: {e}", self.bucket))
                })?;
                Ok(Some(b.into_bytes().to_vec()))
            }
            Err(e) if error_code(&e) == Some("NoSuchKey") || status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(aws_error("s3", "GetObject", e)),
        }
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
