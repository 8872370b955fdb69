//! Lambda environments in a point: the values age-encrypted like secrets (the daemon can write
//! them, never read them), the names readable in the manifest.

use super::crypto;
use super::manifest::{EnvCapture, Manifest};
use super::writer::Writer;
use crate::error::Result;
use crate::store::BlobRef;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Each version's environment values, age-encrypted. A version whose configuration stamp
/// the previous point recorded reuses that blob (published versions never change), and
/// versions with equal variables share one blob, so an unchanged function writes nothing.
pub(super) async fn environments(
    w: &Writer<'_>,
    recipients: &[Box<dyn age::Recipient + Send + Sync>],
    prev: Option<&Manifest>,
    listed: &[aws_sdk_lambda::types::FunctionConfiguration],
) -> Result<Vec<EnvCapture>> {
    let known: BTreeMap<(&str, &str), &EnvCapture> = prev
        .iter()
        .flat_map(|m| m.function.environments.iter())
        .map(|e| ((e.version.as_str(), e.stamp.as_str()), e))
        .collect();
    let mut by_plain: BTreeMap<String, BlobRef> = BTreeMap::new();
    let mut pending = vec![];
    let mut out = vec![];
    for v in listed {
        let version = v.version().unwrap_or_default().to_string();
        // Lambda answers an environment it cannot decrypt (a KMS key the caller may not use)
        // with an error and no variables: a point without them would restore a broken function.
        if let Some(err) = v.environment().and_then(|e| e.error()) {
            return Err(crate::error::Error::failed_hint(
                format!(
                    "the environment of {} version {version} cannot be read: {} {}",
                    v.function_name().unwrap_or_default(),
                    err.error_code().unwrap_or_default(),
                    err.message().unwrap_or_default()
                ),
                "grant drd kms:Decrypt on the function's KMS key",
            ));
        }
        let Some(vars) = v.environment().and_then(|e| e.variables()) else {
            continue;
        };
        if vars.is_empty() {
            continue;
        }
        // What identifies this configuration: RevisionId changes with every update. Without it
        // (moto), only a published version, which never changes, is recognised; `$LATEST` is
        // encrypted again unless it equals a version's environment.
        let stamp = match v.revision_id() {
            Some(r) => r.to_string(),
            None if version == "$LATEST" => String::new(),
            None => format!(
                "{}/{}",
                v.last_modified().unwrap_or_default(),
                v.code_sha256().unwrap_or_default()
            ),
        };
        let sorted: BTreeMap<&String, &String> = vars.iter().collect();
        let plain = SecretSlice::from(serde_json::to_vec(&sorted).expect("serializes"));
        // Equal environments share a blob: compared by digest, in memory only.
        let digest = hex::encode(Sha256::digest(plain.expose_secret()));
        let names: Vec<String> = sorted.keys().map(|k| k.to_string()).collect();
        let reuse = match known.get(&(version.as_str(), stamp.as_str())) {
            Some(k)
                if !stamp.is_empty()
                    && k.names == names
                    && w.stored_size(&k.blob.sha256).await?.is_some() =>
            {
                Some(k.blob.clone())
            }
            _ => None,
        };
        match reuse {
            Some(blob) => {
                by_plain.insert(digest, blob.clone());
                out.push(EnvCapture {
                    version,
                    stamp,
                    names,
                    blob,
                });
            }
            None => pending.push((version, stamp, names, plain, digest)),
        }
    }
    for (version, stamp, names, plain, digest) in pending {
        let blob = match by_plain.get(&digest) {
            Some(b) => b.clone(),
            None => {
                let cipher = crypto::encrypt(recipients, plain.expose_secret())?;
                let b = w.put(&cipher).await?;
                by_plain.insert(digest, b.clone());
                b
            }
        };
        drop(plain);
        out.push(EnvCapture {
            version,
            stamp,
            names,
            blob,
        });
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}
