//! Blob writes of one backup run: content-addressed, counted, and decided from one listing of
//! the store when it fits in a page.

use crate::error::Result;
use crate::store::{BlobRef, Store, Written};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes blobs and counts what was new; shared by the concurrent capture tasks.
pub(super) struct Writer<'a> {
    pub store: &'a Store,
    pub new_blobs: AtomicU64,
    pub new_bytes: AtomicU64,
    /// The bytes of every blob this run wrote, so copies need not read them back.
    pub fresh: std::sync::Mutex<BTreeMap<String, Vec<u8>>>,
    /// The blobs (hex digest -> size) the store held when the run took its lease, when one
    /// listing page held them all: a blob found there is neither looked up nor written again.
    /// `None`: each blob is looked up (or conditionally written) on its own.
    pub listed: Option<BTreeMap<String, u64>>,
}

impl Writer<'_> {
    /// The stored size of a blob, or `None` when the store does not hold it.
    pub async fn stored_size(&self, hex: &str) -> Result<Option<u64>> {
        match &self.listed {
            Some(l) => Ok(l.get(hex).copied()),
            None => self.store.head_size(&self.store.blob_key(hex)).await,
        }
    }

    pub async fn put(&self, bytes: &[u8]) -> Result<BlobRef> {
        let (r, w) = match &self.listed {
            Some(l) => {
                let r = BlobRef {
                    sha256: hex::encode(Sha256::digest(bytes)),
                    size: bytes.len() as u64,
                };
                // Listed: nothing to write. Not listed (or listed with another size, which
                // `drd verify` reports as damaged): a conditional write, without a lookup first.
                if l.get(&r.sha256) == Some(&r.size) {
                    return Ok(r);
                }
                let w = self
                    .store
                    .put_new(&self.store.blob_key(&r.sha256), bytes)
                    .await?;
                (r, w)
            }
            None => self.store.put_blob(bytes).await?,
        };
        if w == Written::New {
            self.new_blobs.fetch_add(1, Ordering::Relaxed);
            self.new_bytes.fetch_add(r.size, Ordering::Relaxed);
            self.fresh
                .lock()
                .expect("fresh blobs")
                .insert(r.sha256.clone(), bytes.to_vec());
        }
        Ok(r)
    }
}

/// The blobs the store holds (hex digest -> size), when one listing page holds them all.
pub(super) async fn listed_blobs(store: &Store) -> Result<Option<BTreeMap<String, u64>>> {
    let prefix = store.objects_prefix();
    let (keys, more) = store.list_first_page(&prefix).await?;
    if more {
        return Ok(None);
    }
    Ok(Some(
        keys.into_iter()
            .filter_map(|(k, size)| Some((k.rsplit('/').next()?.to_string(), size)))
            .collect(),
    ))
}
