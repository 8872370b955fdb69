//! Secrets from age backups: every restorable version recreated in the target with its
//! original version id and stage labels, and the check that they are there.

use super::identities;
use crate::aws::{aws_error, error_code, Aws};
use crate::backup::manifest::Manifest;
use crate::error::{Error, Result};
use crate::store::Store;
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::BTreeMap;

/// The secret versions a restore recreates: AWSCURRENT and AWSPREVIOUS (a pending rotation is
/// not carried over: rotate again after the restore).
pub(super) fn restorable(
    m: &Manifest,
) -> impl Iterator<Item = (&str, &crate::backup::manifest::SecretVersionCapture)> {
    m.secrets.iter().flat_map(|s| {
        s.versions
            .iter()
            .filter(|v| {
                v.stages
                    .iter()
                    .any(|st| st == "AWSCURRENT" || st == "AWSPREVIOUS")
            })
            .map(move |v| (s.name.as_str(), v))
    })
}

/// What the secret step did, per secret.
#[derive(Debug, Clone, Serialize)]
pub struct SecretRestore {
    pub name: String,
    pub created: bool,
    /// It was scheduled for deletion and came back with RestoreSecret (its versions intact).
    pub recovered: bool,
    /// Left alone: its AWSCURRENT is this version, which the point does not know.
    pub kept_newer: Option<String>,
    pub versions_put: usize,
    pub stages_moved: usize,
}

/// Recreate every secret in `target` from the point: each AWSPREVIOUS and AWSCURRENT version
/// with its original version id, then the stage labels. Plaintext lives only in zeroizing
/// buffers and the request bodies.
pub async fn restore_secrets(
    aws: &Aws,
    store: &Store,
    m: &Manifest,
    identity_path: &str,
    target: &str,
) -> Result<Vec<SecretRestore>> {
    let ids = identities(identity_path)?;
    let sm = aws.secrets(target).await;
    let mut out = vec![];
    for s in &m.secrets {
        let mut wanted: Vec<&crate::backup::manifest::SecretVersionCapture> = s
            .versions
            .iter()
            .filter(|v| {
                v.stages
                    .iter()
                    .any(|st| st == "AWSCURRENT" || st == "AWSPREVIOUS")
            })
            .collect();
        if wanted.is_empty() {
            // Absent when the point was taken: nothing to recreate.
            continue;
        }
        // AWSPREVIOUS first, so AWSCURRENT is the last one put.
        wanted.sort_by_key(|v| v.stages.iter().any(|st| st == "AWSCURRENT"));
        let mut existing = secret_versions(&sm, &s.name).await?;
        let mut r = SecretRestore {
            name: s.name.clone(),
            created: false,
            recovered: false,
            kept_newer: None,
            versions_put: 0,
            stages_moved: 0,
        };
        if existing.as_ref().is_some_and(|e| e.deleted) {
            // Still in its deletion window: bring it back as it was, never recreate it.
            sm.restore_secret()
                .secret_id(&s.name)
                .send()
                .await
                .map_err(|e| aws_error("secretsmanager", "RestoreSecret", e))?;
            r.recovered = true;
            existing = secret_versions(&sm, &s.name).await?;
        }
        let existing = existing.map(|e| e.versions);
        let newer = match existing.as_ref() {
            Some(h) => newer_than_point(&sm, h, s, m).await?,
            None => None,
        };
        if let Some(newer) = newer {
            // Changed after the point (a rotation, or a value put by hand): drd cannot tell
            // which, and never moves AWSCURRENT back behind it.
            r.kept_newer = Some(newer);
            out.push(r);
            continue;
        }
        let mut exists = existing.is_some();
        let have = existing.unwrap_or_default();
        for v in &wanted {
            if have.contains_key(&v.version_id) {
                continue;
            }
            let cipher = store.get_blob(&v.blob.sha256).await?.ok_or_else(|| {
                Error::failed(format!(
                    "the backup of {} version {} is missing from the store",
                    s.name, v.version_id
                ))
            })?;
            let plain = ids.decrypt(&cipher).map_err(|why| {
                Error::failed(format!("secret {} version {}: {why}", s.name, v.version_id))
            })?;
            // Bytes go back as SecretBinary exactly; strings as SecretString.
            let text = if v.binary {
                None
            } else if m.schema < 2
                && String::from_utf8_lossy(plain.expose_secret()).contains('\u{FFFD}')
            {
                return Err(Error::failed_hint(
                    format!(
                        "secret {} version {}: point {} was written by a drd that stored binary values through a lossy string; it cannot be restored byte for byte",
                        s.name, v.version_id, m.id
                    ),
                    "choose a point taken by this drd (manifest schema 2), or restore this secret by hand",
                ));
            } else {
                Some(std::str::from_utf8(plain.expose_secret()).map_err(|_| {
                    Error::failed(format!(
                        "secret {} version {}: the backup of a string value is not UTF-8",
                        s.name, v.version_id
                    ))
                })?)
            };
            if !exists {
                let mut req = sm
                    .create_secret()
                    .name(&s.name)
                    .client_request_token(&v.version_id)
                    .description("restored by drd from a recovery point");
                req = match text {
                    Some(t) => req.secret_string(t),
                    None => req
                        .secret_binary(aws_smithy_types::Blob::new(plain.expose_secret().to_vec())),
                };
                req.send()
                    .await
                    .map_err(|e| aws_error("secretsmanager", "CreateSecret", e))?;
                exists = true;
                r.created = true;
            } else {
                let mut req = sm
                    .put_secret_value()
                    .secret_id(&s.name)
                    .client_request_token(&v.version_id);
                req = match text {
                    Some(t) => req.secret_string(t),
                    None => req
                        .secret_binary(aws_smithy_types::Blob::new(plain.expose_secret().to_vec())),
                };
                req.send()
                    .await
                    .map_err(|e| aws_error("secretsmanager", "PutSecretValue", e))?;
            }
            r.versions_put += 1;
        }
        // Stage labels exactly as in the point.
        for stage in ["AWSCURRENT", "AWSPREVIOUS"] {
            let Some(v) = wanted
                .iter()
                .find(|v| v.stages.iter().any(|st| st == stage))
            else {
                continue;
            };
            let now = secret_versions(&sm, &s.name)
                .await?
                .map(|e| e.versions)
                .unwrap_or_default();
            let holder = now
                .iter()
                .find(|(_, stages)| stages.iter().any(|st| st == stage))
                .map(|(id, _)| id.clone());
            if holder.as_deref() == Some(v.version_id.as_str()) {
                continue;
            }
            let mut req = sm
                .update_secret_version_stage()
                .secret_id(&s.name)
                .version_stage(stage)
                .move_to_version_id(&v.version_id);
            if let Some(h) = holder {
                req = req.remove_from_version_id(h);
            }
            req.send()
                .await
                .map_err(|e| aws_error("secretsmanager", "UpdateSecretVersionStage", e))?;
            r.stages_moved += 1;
        }
        out.push(r);
    }
    Ok(out)
}

/// The version holding AWSCURRENT when it was made after the point was taken (a rotation, or a
/// value put by hand since): the secret changed after the point. A holder the point knows, or
/// one older than the point (the primary's state before a failover), is not newer.
async fn newer_than_point(
    sm: &aws_sdk_secretsmanager::Client,
    have: &BTreeMap<String, Vec<String>>,
    s: &crate::backup::manifest::SecretCapture,
    m: &Manifest,
) -> Result<Option<String>> {
    let Some(current) = have
        .iter()
        .find(|(_, st)| st.iter().any(|x| x == "AWSCURRENT"))
        .map(|(id, _)| id.clone())
    else {
        return Ok(None);
    };
    if s.versions.iter().any(|v| v.version_id == current) {
        return Ok(None);
    }
    let taken = humantime::parse_rfc3339(&m.created_at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let listed = sm
        .list_secret_version_ids()
        .secret_id(&s.name)
        .send()
        .await
        .map_err(|e| aws_error("secretsmanager", "ListSecretVersionIds", e))?;
    let made = listed
        .versions()
        .iter()
        .find(|v| v.version_id() == Some(current.as_str()))
        .and_then(|v| v.created_date())
        .map(|d| d.secs());
    Ok(match (made, taken) {
        (Some(made), Some(taken)) if made <= taken => None,
        // Made after the point, or no way to tell: kept.
        _ => Some(current),
    })
}

/// A secret as DescribeSecret shows it.
struct SecretState {
    /// Scheduled for deletion (in its recovery window).
    deleted: bool,
    /// Version id -> stages.
    versions: BTreeMap<String, Vec<String>>,
}

/// The secret's state, or `None` when it does not exist.
async fn secret_versions(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<Option<SecretState>> {
    match sm.describe_secret().secret_id(name).send().await {
        Ok(d) => Ok(Some(SecretState {
            deleted: d.deleted_date().is_some(),
            versions: d
                .version_ids_to_stages()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(aws_error("secretsmanager", "DescribeSecret", e)),
    }
}

/// Check: every restorable version exists in `target` with its stage labels.
pub async fn secrets_match(aws: &Aws, m: &Manifest, target: &str) -> Result<()> {
    let sm = aws.secrets(target).await;
    let mut problems = vec![];
    for s in &m.secrets {
        let have = secret_versions(&sm, &s.name).await?;
        if let Some(h) = &have {
            if h.deleted {
                problems.push(format!("{} is scheduled for deletion in {target}", s.name));
                continue;
            }
        }
        let have = have.map(|h| h.versions);
        if let Some(h) = &have {
            if newer_than_point(&sm, h, s, m).await?.is_some() {
                continue; // kept as it is: changed after the point
            }
        }
        let wanted = s.versions.iter().any(|v| {
            v.stages
                .iter()
                .any(|st| st == "AWSCURRENT" || st == "AWSPREVIOUS")
        });
        let Some(have) = have else {
            // A secret the point holds no version of (absent at backup time) stays absent.
            if wanted {
                problems.push(format!("{} does not exist in {target}", s.name));
            }
            continue;
        };
        for v in s.versions.iter() {
            for st in v
                .stages
                .iter()
                .filter(|st| *st == "AWSCURRENT" || *st == "AWSPREVIOUS")
            {
                let ok = have
                    .get(&v.version_id)
                    .is_some_and(|stages| stages.contains(st));
                if !ok {
                    problems.push(format!(
                        "{} version {} does not carry {st} in {target}",
                        s.name, v.version_id
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(problems.join("; ")))
    }
}
