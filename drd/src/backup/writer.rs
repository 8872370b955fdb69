//! Blob writes of one backup run: content-addressed and counted. Nothing is listed: a small blob
//! is one conditional PUT (`If-None-Match: *` answers 412 when it is there), a large one a HEAD
//! and a PUT only when missing, so a backup's requests do not grow with the store.

use crate::error::Result;
use crate::store::{BlobRef, Store, Written};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes blobs and counts what was new; shared by the concurrent capture tasks.
pub(super) struct Writer<'a> {
    pub store: &'a Store,
    pub new_blobs: AtomicU64,
    pub new_bytes: AtomicU64,
    /// Every blob this run wrote, so copies need not read them back.
    pub fresh: std::sync::Mutex<BTreeMap<String, Fresh>>,
}

/// A blob this run wrote: small ones in memory, code packages in their spool file.
pub(super) enum Fresh {
    Bytes(Vec<u8>),
    File(std::sync::Arc<tempfile::TempPath>, u64),
}

impl Writer<'_> {
    /// The stored size of a blob, or `None` when the store does not hold it.
    pub async fn stored_size(&self, hex: &str) -> Result<Option<u64>> {
        self.store.head_size(&self.store.blob_key(hex)).await
    }

    pub async fn put(&self, bytes: &[u8]) -> Result<BlobRef> {
        let (r, w) = self.store.put_blob(bytes).await?;
        if w == Written::New {
            self.new_blobs.fetch_add(1, Ordering::Relaxed);
            self.new_bytes.fetch_add(r.size, Ordering::Relaxed);
            self.fresh
                .lock()
                .expect("fresh blobs")
                .insert(r.sha256.clone(), Fresh::Bytes(bytes.to_vec()));
        }
        Ok(r)
    }

    /// Store a spooled code package (streamed from its file) unless the store holds it.
    pub async fn put_spooled(&self, s: super::code::Spooled) -> Result<BlobRef> {
        let key = self.store.blob_key(&s.sha256);
        let r = BlobRef {
            sha256: s.sha256.clone(),
            size: s.size,
        };
        if self.store.exists(&key).await? {
            return Ok(r);
        }
        if self.store.put_new_file(&key, &s.path, s.size).await? == Written::New {
            self.new_blobs.fetch_add(1, Ordering::Relaxed);
            self.new_bytes.fetch_add(r.size, Ordering::Relaxed);
            self.fresh.lock().expect("fresh blobs").insert(
                r.sha256.clone(),
                Fresh::File(std::sync::Arc::new(s.path), s.size),
            );
        }
        Ok(r)
    }
}
