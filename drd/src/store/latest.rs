//! The newest-point pointer, `<stack>/latest-point.json`: which point is the newest, so a backup
//! (and `--point latest`) need not list `points/`, whose listing grows with retention.
//!
//! Written by a backup right *before* its manifest, under the store lease, with a
//! compare-and-swap on its ETag (two writers can never both move it from the same state); reset
//! by prune and `drd points reindex`, under the same lease. So it is never behind the newest point a backup wrote: a run that dies between the two
//! leaves it naming a point that does not exist, which every reader notices (the manifest's GET
//! answers 404) and answers with the full listing. A backup reads it and that one manifest, and
//! lists nothing. Readers that must see the newest point whatever wrote it (restore and verify:
//! points copied in, or written by a drd from before the pointer) also ask S3 for keys after it
//! (`StartAfter`: one short listing, whatever the store holds).

use super::Store;
use crate::error::Result;
use serde::{Deserialize, Serialize};

pub const LATEST_KEY: &str = "latest-point.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    pub id: String,
    pub created_at: String,
    /// The store lease's token when it was written.
    pub fencing_token: u64,
    /// The index of points (what `drd points list` shows): the newest entries here, the older
    /// ones in segment objects, each written once. Absent in a pointer written without it.
    #[serde(default)]
    pub index: Option<Index>,
}

/// The points index: every point's listing row, oldest first, without reading its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Keys (under the stack's prefix) of the segments, oldest first; each holds up to
    /// `SEGMENT` entries and is never rewritten (prune writes new ones and deletes the old).
    pub segments: Vec<String>,
    /// The entries not yet in a segment, oldest first.
    pub recent: Vec<Entry>,
}

/// One point as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub created_at: String,
    pub bytes: u64,
    pub new_blobs: u64,
    pub changed: Vec<String>,
}

/// Entries per segment (the newest row never goes into one): 35,000 points are 136 segments.
pub const SEGMENT: usize = 256;

pub fn segment_key(store: &Store, name: &str) -> String {
    format!("{}{name}", store.prefix)
}

impl Index {
    /// Add the newest entry; a full `recent` goes into a new segment (written once, before the
    /// pointer that names it).
    pub async fn push(&mut self, store: &Store, e: Entry) -> Result<()> {
        self.recent.retain(|r| r.id != e.id);
        self.recent.push(e);
        // The newest row always stays in `recent`: it is the one a dangling pointer may name,
        // and only there can it be dropped.
        if self.recent.len() > SEGMENT {
            let rest = self.recent.split_off(SEGMENT);
            let full = std::mem::replace(&mut self.recent, rest);
            let first = &full[0].id;
            let last = &full[full.len() - 1].id;
            let body = serde_json::to_vec(&full).expect("segment serializes");
            // Named by content too: a segment rebuilt with other entries gets another name.
            let h = hex::encode(sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(&body),
            ));
            let name = format!("index/{first}--{last}-{}.json", &h[..12]);
            store.put_new(&segment_key(store, &name), &body).await?;
            self.segments.push(name);
        }
        Ok(())
    }

    /// Every entry, oldest first (the segments read concurrently).
    pub async fn entries(&self, store: &Store) -> Result<Vec<Entry>> {
        use futures::StreamExt;
        let mut reads = futures::stream::iter(&self.segments)
            .map(|n| read_segment(store, n))
            .buffered(16);
        let mut out = vec![];
        while let Some(seg) = reads.next().await {
            out.extend(seg?);
        }
        out.extend(self.recent.iter().cloned());
        // Written in lease order; listed in id (time) order, as S3 lists the manifests.
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The newest `n` entries, oldest first, reading only the segments they are in.
    pub async fn last(&self, store: &Store, n: usize) -> Result<Vec<Entry>> {
        let mut out: Vec<Entry> = self.recent.iter().rev().take(n).cloned().collect();
        for name in self.segments.iter().rev() {
            if out.len() >= n {
                break;
            }
            let seg = read_segment(store, name).await?;
            out.extend(seg.into_iter().rev().take(n - out.len()));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// The rows of `index` (all, or the newest `last`), read without the lease: when prune or
/// reindex swapped the index meanwhile (a segment it named is gone), the current pointer's
/// index is read instead.
pub async fn rows(store: &Store, index: &Index, last: Option<usize>) -> Result<Vec<Entry>> {
    let mut index = index.clone();
    for _ in 0..3 {
        let got = match last {
            Some(n) => index.last(store, n).await,
            None => index.entries(store).await,
        };
        match got {
            Ok(rows) => return Ok(rows),
            Err(e) => match read(store).await?.and_then(|l| l.index) {
                Some(now) if now != index => index = now,
                _ => return Err(e),
            },
        }
    }
    Err(crate::error::Error::failed(format!(
        "{} kept changing while it was read",
        latest_key(store)
    )))
}

async fn read_segment(store: &Store, name: &str) -> Result<Vec<Entry>> {
    let key = segment_key(store, name);
    let body = store.get(&key).await?.ok_or_else(|| {
        crate::error::Error::failed_hint(
            format!("the index segment {key} is missing"),
            "rebuild the index with drd points reindex",
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        crate::error::Error::failed_hint(
            format!("the index segment {key} is unreadable: {e}"),
            "rebuild the index with drd points reindex",
        )
    })
}

pub fn latest_key(store: &Store) -> String {
    format!("{}{LATEST_KEY}", store.prefix)
}

/// The pointer, or `None` when it is missing or unreadable (then the listing decides).
pub async fn read(store: &Store) -> Result<Option<Latest>> {
    Ok(read_versioned(store).await?.map(|(l, _)| l))
}

async fn read_versioned(store: &Store) -> Result<Option<(Latest, String)>> {
    let Some((body, etag)) = store.get_versioned(&latest_key(store)).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&body) {
        Ok(l) => Ok(Some((l, etag))),
        Err(e) => {
            tracing::warn!(
                "{} is unreadable ({e}): the listing decides",
                latest_key(store)
            );
            Ok(None)
        }
    }
}

/// Move the pointer to `to`, the point being written now (under the store lease: the last one
/// written, whatever the clocks of the hosts that wrote the ones before), adding `entry` to the
/// index it carries. `build` makes the index when the pointer has none (points from before the
/// index: indexed on first use). An entry whose manifest never appeared (the run that wrote the
/// pointer died before its manifest) is dropped on the way.
pub async fn advance<F, Fut>(store: &Store, to: &Latest, entry: Entry, build: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Index>>,
{
    let key = latest_key(store);
    for _ in 0..4 {
        let seen = store.get_versioned(&key).await?;
        let (old, etag) = match &seen {
            None => (None, None),
            Some((b, etag)) => (
                serde_json::from_slice::<Latest>(b).ok(),
                Some(etag.as_str()),
            ),
        };
        // A retried firing re-writing its own point: already there.
        if old
            .as_ref()
            .is_some_and(|l| l.id == to.id && l.index.is_some())
        {
            return Ok(());
        }
        let mut index = match old.and_then(|l| l.index.map(|i| (l.id, i))) {
            Some((old_id, mut i)) => {
                if !store.exists(&store.point_key(&old_id)).await? {
                    i.recent.retain(|e| e.id != old_id);
                }
                i
            }
            None => build().await?,
        };
        index.push(store, entry.clone()).await?;
        let next = Latest {
            index: Some(index),
            ..to.clone()
        };
        let body = serde_json::to_vec(&next).expect("pointer serializes");
        if store.put_if(&key, &body, etag).await?.is_some() {
            return Ok(());
        }
    }
    Err(crate::error::Error::failed(format!(
        "{key} kept changing while it was moved to {}",
        to.id
    )))
}

/// Set the pointer to `to` whatever it says (prune, under the store lease, after deleting the
/// point it named); `None` removes it.
pub async fn reset(store: &Store, to: Option<&Latest>) -> Result<()> {
    match to {
        Some(l) => {
            store
                .put(
                    &latest_key(store),
                    &serde_json::to_vec(l).expect("serializes"),
                )
                .await
        }
        None => store.delete(&latest_key(store)).await,
    }
}

/// Point ids newer than the pointer's, oldest first (one short listing), or `None` when there
/// is no usable pointer or more than one page follows it.
pub async fn newer_than_pointer(store: &Store) -> Result<Option<(Latest, Vec<String>)>> {
    let Some(l) = read(store).await? else {
        return Ok(None);
    };
    let prefix = store.points_prefix();
    let (keys, more) = store.list_after(&prefix, &store.point_key(&l.id)).await?;
    if more {
        return Ok(None);
    }
    let ids = keys
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".json"))
                .filter(|r| !r.contains('/'))
                .map(str::to_string)
        })
        .collect();
    Ok(Some((l, ids)))
}

/// Point ids newest first, as far as the pointer can tell without the full listing (the ids
/// after it, then its own), else from the full listing.
pub async fn newest_first(store: &Store) -> Result<Vec<String>> {
    if let Some((l, mut newer)) = newer_than_pointer(store).await? {
        if store.exists(&store.point_key(&l.id)).await? {
            newer.reverse();
            newer.push(l.id);
            return Ok(newer);
        }
    }
    let mut all = store.point_ids().await?;
    all.reverse();
    Ok(all)
}
