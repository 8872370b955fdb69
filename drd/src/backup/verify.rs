//! Verification of recovery points: the manifest parses, every blob it names is present with the
//! right hash and size, and (with an identity) every secret backup decrypts to a well-formed
//! value. Problems name the point and the object.

use super::crypto::{self, Identities};
use super::manifest::Manifest;
use crate::error::Result;
use crate::store::Store;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize)]
pub struct PointCheck {
    pub id: String,
    pub ok: bool,
    pub blobs_checked: usize,
    pub secrets_decrypted: usize,
    /// Lambda environment backups that decrypted to the variables the manifest names.
    pub environments_decrypted: usize,
    /// The age recipients the point's secrets are encrypted to (empty: not recorded, a point
    /// older than schema 5, or nothing encrypted).
    pub recipients: Vec<String>,
    /// With an identity: whether it opens every encrypted blob of the point (`false`: the point
    /// is sound but encrypted to other recipients, e.g. made before a recipient change). Absent
    /// without an identity or when the point holds nothing encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens: Option<bool>,
    /// The manifest is of a newer schema than this drd reads.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub newer: bool,
    pub problems: Vec<String>,
}

/// Verify one point. `cache` remembers blobs already found sound in this run.
pub async fn verify_point(
    store: &Store,
    id: &str,
    identities: Option<&Identities>,
    cache: &mut HashMap<String, Result<(), String>>,
) -> Result<PointCheck> {
    let mut check = PointCheck {
        id: id.to_string(),
        ok: false,
        blobs_checked: 0,
        secrets_decrypted: 0,
        environments_decrypted: 0,
        recipients: vec![],
        opens: None,
        newer: false,
        problems: vec![],
    };
    let key = store.point_key(id);
    let manifest: Manifest = match store.get(&key).await? {
        None => {
            check.problems.push(format!("manifest {key} is missing"));
            return Ok(check);
        }
        Some(b) => match super::manifest::parse(&key, &b) {
            Ok(m) => m,
            Err(p) => {
                check
                    .problems
                    .push(crate::error::Error::from(p).to_string());
                return Ok(check);
            }
        },
    };
    check.recipients.clone_from(&manifest.recipients);
    // Encrypted blobs this identity is not among the recipients of (sound, not ours to open).
    let mut foreign = 0usize;
    for (what, blob) in manifest.blobs() {
        check.blobs_checked += 1;
        let r = match cache.get(&blob.sha256) {
            Some(r) => r.clone(),
            None => {
                let okey = store.blob_key(&blob.sha256);
                let r = match store.get_blob(&blob.sha256).await? {
                    None => Err(format!("{what} {okey} is missing")),
                    Some(bytes) => {
                        let got = hex::encode(Sha256::digest(&bytes));
                        if got != blob.sha256 {
                            Err(format!(
                                "{what} {okey} is corrupted: its content hashes to {got}"
                            ))
                        } else if bytes.len() as u64 != blob.size {
                            Err(format!(
                                "{what} {okey} has {} bytes, the manifest says {}",
                                bytes.len(),
                                blob.size
                            ))
                        } else {
                            Ok(())
                        }
                    }
                };
                cache.insert(blob.sha256.clone(), r.clone());
                r
            }
        };
        if let Err(p) = r {
            check.problems.push(p);
        }
    }
    if let Some(ids) = identities {
        for s in &manifest.secrets {
            for v in &s.versions {
                let okey = store.blob_key(&v.blob.sha256);
                let Some(cipher) = store.get_blob(&v.blob.sha256).await? else {
                    continue; // already reported as missing
                };
                match ids.decrypt(&cipher) {
                    Ok(plain) if crypto::well_formed(&plain, v.json) => check.secrets_decrypted += 1,
                    Ok(_) => check.problems.push(format!(
                        "secret {} version {} ({okey}) decrypts to a malformed value{}",
                        s.name,
                        v.version_id,
                        if v.json { " (expected JSON)" } else { "" }
                    )),
                    Err(why) if why == crypto::NOT_FOR_THIS_IDENTITY => foreign += 1,
                    Err(why) => check.problems.push(format!(
                        "secret {} version {} ({okey}): {why} (is --identity the key for the policy's recipients?)",
                        s.name, v.version_id
                    )),
                }
            }
        }
        for e in &manifest.function.environments {
            let okey = store.blob_key(&e.blob.sha256);
            let Some(cipher) = store.get_blob(&e.blob.sha256).await? else {
                continue;
            };
            match ids.decrypt(&cipher) {
                Ok(plain) => {
                    let names: Option<Vec<String>> =
                        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
                            plain.expose_secret(),
                        )
                        .ok()
                        .map(|m| m.keys().cloned().collect());
                    let mut want = e.names.clone();
                    want.sort();
                    if names.as_ref() == Some(&want) {
                        check.environments_decrypted += 1;
                    } else {
                        check.problems.push(format!(
                            "the environment of version {} ({okey}) does not decrypt to the variables {:?}",
                            e.version, e.names
                        ));
                    }
                }
                Err(why) if why == crypto::NOT_FOR_THIS_IDENTITY => foreign += 1,
                Err(why) => check.problems.push(format!(
                    "the environment of version {} ({okey}): {why} (is --identity the key for the policy's recipients?)",
                    e.version
                )),
            }
        }
        let encrypted = check.secrets_decrypted + check.environments_decrypted + foreign;
        if encrypted > 0 {
            check.opens = Some(foreign == 0);
        }
    }
    check.ok = check.problems.is_empty();
    Ok(check)
}

/// A point the identity cannot open is sound but not its to open, unless it is encrypted to the
/// policy's current recipients (or to unrecorded ones, a point from before they were recorded):
/// then the identity is the wrong one, or a current key is lost, and the check fails.
pub fn require_current(check: &mut PointCheck, current: &[String]) {
    if check.opens != Some(false) {
        return;
    }
    let mut have = check.recipients.clone();
    have.sort();
    let mut want: Vec<String> = current.iter().map(|r| r.trim().to_string()).collect();
    want.sort();
    if check.recipients.is_empty() || have == want {
        check.problems.push(format!(
            "this identity cannot open it, yet it is encrypted to the policy's current recipients ({}): is --identity the key for backup.recipients?",
            if have.is_empty() { "not recorded".to_string() } else { have.join(", ") }
        ));
        check.ok = false;
    }
}
