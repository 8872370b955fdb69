//! Which commit each published version was deployed from (`commits/<function>.json` in the
//! store, beside `pins/`).
//!
//! Lambda cannot say it: tags are per function, not per version, and `PublishVersion` hands back
//! the existing version when the code and configuration did not change, so two commits can map
//! to one version. `drd deploy --commit SHA` (what the CI runs) appends a record after the
//! version passed its probes; `drd status` reads the newest record of the version `live` points
//! to whose code is the code `live` runs.
//!
//! Writers: any `drd deploy --commit`, concurrently (two CI systems may deploy at once). Each
//! write is a compare-and-swap on the ETag it read (`If-Match`, or `If-None-Match: *` for the
//! first record), retried on 412, so no record is lost (docs/recovery-points.md, "Who writes
//! what").

use crate::error::{ConfigError, Error, Result};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// Records kept per function; the oldest records are dropped first.
const KEEP: usize = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitFile {
    pub function: String,
    pub records: Vec<CommitRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitRecord {
    /// The full commit SHA (40 hex digits, or 64 in a SHA-256 repository).
    pub commit: String,
    pub region: String,
    pub version: String,
    pub code_sha256: String,
    /// RFC 3339.
    pub deployed_at: String,
    pub by: String,
}

pub fn key(store: &Store, function: &str) -> String {
    format!("{}commits/{function}.json", store.prefix)
}

/// A commit SHA as `--commit` takes it: full length, lower-case hex.
pub fn parse_commit(s: &str) -> Result<String> {
    let t = s.trim();
    if (t.len() == 40 || t.len() == 64) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(t.to_ascii_lowercase());
    }
    Err(ConfigError::new(
        "--commit",
        format!("{s:?} is not a full commit SHA (40 or 64 hex digits)"),
    )
    .hint("pass the full SHA, e.g. --commit \"$(git rev-parse HEAD)\" or \"$GITHUB_SHA\"")
    .into())
}

impl CommitFile {
    /// The newest record of `version` in `region`.
    pub fn for_version(&self, region: &str, version: &str) -> Option<&CommitRecord> {
        self.records
            .iter()
            .rev()
            .find(|r| r.region == region && r.version == version)
    }

    /// The newest record of `version` in `region` that ran `code_sha256`: version numbers start
    /// again at 1 when a restore recreates the function, so the code must match too.
    pub fn for_live(
        &self,
        region: &str,
        version: &str,
        code_sha256: &str,
    ) -> Option<&CommitRecord> {
        self.records
            .iter()
            .rev()
            .find(|r| r.region == region && r.version == version && r.code_sha256 == code_sha256)
    }

    /// The newest record of `commit` (any region).
    pub fn for_commit(&self, commit: &str) -> Option<&CommitRecord> {
        self.records.iter().rev().find(|r| r.commit == commit)
    }
}

fn parse(store: &Store, key: &str, bytes: &[u8]) -> Result<CommitFile> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::failed_hint(
            format!(
                "the commit record s3://{}/{key} is unreadable: {e}",
                store.bucket
            ),
            "move it aside; the next drd deploy --commit starts a new one",
        )
    })
}

/// The commit records of `function` (empty when none were written).
pub async fn load(store: &Store, function: &str) -> Result<CommitFile> {
    let key = key(store, function);
    match store.get(&key).await? {
        None => Ok(CommitFile {
            function: function.to_string(),
            records: vec![],
        }),
        Some(b) => parse(store, &key, &b),
    }
}

/// Append `rec` (compare-and-swap, retried); false when the newest record of that version is
/// already this commit.
pub async fn record(store: &Store, function: &str, rec: CommitRecord) -> Result<bool> {
    let key = key(store, function);
    for _ in 0..20 {
        let (mut file, etag) = match store.get_versioned(&key).await? {
            None => (
                CommitFile {
                    function: function.to_string(),
                    records: vec![],
                },
                None,
            ),
            Some((b, etag)) => (parse(store, &key, &b)?, Some(etag)),
        };
        if file
            .for_version(&rec.region, &rec.version)
            .is_some_and(|r| r.commit == rec.commit)
        {
            return Ok(false);
        }
        file.records.push(rec.clone());
        if file.records.len() > KEEP {
            let extra = file.records.len() - KEEP;
            file.records.drain(..extra);
        }
        let body = serde_json::to_vec_pretty(&file).expect("commit file serializes");
        if store.put_if(&key, &body, etag.as_deref()).await?.is_some() {
            return Ok(true);
        }
        // Another deploy wrote in between: read again and re-apply.
    }
    Err(Error::failed(format!(
        "could not record commit {} in s3://{}/{key}: twenty concurrent writers in a row",
        rec.commit, store.bucket
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_shas_are_full_hex() {
        let sha = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(parse_commit(sha).unwrap(), sha.to_ascii_lowercase());
        assert!(parse_commit(&"a".repeat(64)).is_ok());
        for bad in ["", "abc1234", "main", &"g".repeat(40), &"a".repeat(41)] {
            let e = parse_commit(bad).unwrap_err().to_string();
            assert!(e.contains("--commit"), "{e}");
        }
    }

    #[test]
    fn the_newest_record_of_a_version_wins() {
        let r = |c: &str, v: &str| CommitRecord {
            commit: c.repeat(40),
            region: "us-east-1".into(),
            version: v.into(),
            code_sha256: String::new(),
            deployed_at: String::new(),
            by: String::new(),
        };
        let f = CommitFile {
            function: "f".into(),
            records: vec![r("a", "1"), r("b", "2"), r("c", "2")],
        };
        assert_eq!(
            f.for_version("us-east-1", "2").unwrap().commit,
            "c".repeat(40)
        );
        assert_eq!(
            f.for_version("us-east-1", "1").unwrap().commit,
            "a".repeat(40)
        );
        assert!(f.for_version("eu-west-1", "1").is_none());
        assert_eq!(f.for_commit(&"b".repeat(40)).unwrap().version, "2");
    }
}
