//! The restore plan: the point's live code and its stack rewritten for the target region
//! (pure, no AWS call), and the template read from the store.

use crate::backup::manifest::Manifest;
use crate::error::{Error, Result};
use crate::lambda::LIVE_ALIAS;
use crate::policy::Policy;
use crate::store::Store;
use crate::workload::package;
use serde::Serialize;
use std::collections::BTreeMap;

/// One region-bound value the restore changes, reported in the plan.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rewrite {
    /// `parameter CodeBucket` or `template line 12`.
    pub place: String,
    pub from: String,
    pub to: String,
    pub why: String,
}

/// The stack as it will be created in the target region.
#[derive(Debug, Clone)]
pub struct StackPlan {
    pub body: String,
    pub parameters: BTreeMap<String, String>,
    pub rewrites: Vec<Rewrite>,
}

/// The live version of the point and its code package (base64 CodeSha256, hex).
pub fn live_code(m: &Manifest) -> Result<(String, String, String)> {
    let live = m.function.aliases.get(LIVE_ALIAS).ok_or_else(|| {
        Error::failed_hint(
            format!("point {} has no `live` alias: nothing was serving", m.id),
            "name an older point with --point ID (drd points list)",
        )
    })?;
    let sha = m
        .function
        .versions
        .iter()
        .find(|v| &v.version == live)
        .map(|v| v.code_sha256.clone())
        .ok_or_else(|| {
            Error::failed(format!(
                "point {} names live -> version {live} but has no configuration for it",
                m.id
            ))
        })?;
    let hex = package::hex_of_code_sha256(&sha)
        .ok_or_else(|| Error::failed(format!("CodeSha256 {sha:?} is not a SHA-256")))?;
    if !m.code.iter().any(|c| c.blob.sha256 == hex) {
        return Err(Error::failed_hint(
            format!(
                "point {} has no code package for live version {live} ({sha})",
                m.id
            ),
            "name an older point with --point ID",
        ));
    }
    Ok((live.clone(), sha, hex))
}

/// Rewrite the point's template and parameters for `target`: only region-bound values change
/// (the artifact bucket, the code key of what `live` ran, ARNs and bare region names of the
/// point's region). Every change is listed.
pub fn plan_stack(
    m: &Manifest,
    template: &str,
    policy: &Policy,
    target: &str,
) -> Result<StackPlan> {
    let from_region = m.stack.region.as_str();
    let (live, _sha, hex) = live_code(m)?;
    let from_bucket = policy.artifact_bucket(from_region);
    let to_bucket = policy.artifact_bucket(target);
    let code_key = package::object_key(&hex);
    let arn_from = format!(":{from_region}:");
    let arn_to = format!(":{target}:");
    let mut rewrites = vec![];
    let mut parameters = BTreeMap::new();
    for p in &m.stack.parameters {
        let Some(value) = &p.value else {
            return Err(Error::failed_hint(
                format!(
                    "parameter {} of point {} is NoEcho: its value was never stored",
                    p.key, m.id
                ),
                "keep such values in Secrets Manager and reference them with {{resolve:secretsmanager:...}}; drd restores the secrets",
            ));
        };
        let (new, why) = if p.key == "CodeKey" && *value != code_key {
            (
                code_key.clone(),
                format!("live ran version {live}, whose package this is"),
            )
        } else if *value == from_bucket && from_region != target {
            (
                to_bucket.clone(),
                "the artifact bucket is per region".into(),
            )
        } else if value.contains(&arn_from) && from_region != target {
            (
                value.replace(&arn_from, &arn_to),
                "an ARN of the point's region".into(),
            )
        } else if value == from_region && from_region != target {
            (target.to_string(), "the point's region".into())
        } else {
            (value.clone(), String::new())
        };
        if new != *value {
            rewrites.push(Rewrite {
                place: format!("parameter {}", p.key),
                from: value.clone(),
                to: new.clone(),
                why,
            });
        }
        parameters.insert(p.key.clone(), new);
    }
    let mut body = String::with_capacity(template.len());
    for (i, line) in template.split_inclusive('\n').enumerate() {
        let mut out = line.to_string();
        if from_region != target {
            if out.contains(&from_bucket) {
                out = out.replace(&from_bucket, &to_bucket);
            }
            if out.contains("arn:") && out.contains(&arn_from) {
                out = out.replace(&arn_from, &arn_to);
            }
        }
        if out != line {
            rewrites.push(Rewrite {
                place: format!("template line {}", i + 1),
                from: line.trim_end().to_string(),
                to: out.trim_end().to_string(),
                why: "a value bound to the point's region".into(),
            });
        }
        body.push_str(&out);
    }
    Ok(StackPlan {
        body,
        parameters,
        rewrites,
    })
}

pub async fn load_template(store: &Store, m: &Manifest) -> Result<String> {
    let bytes = store
        .get_blob(&m.stack.template.sha256)
        .await?
        .ok_or_else(|| Error::failed(format!("the template blob of point {} is missing", m.id)))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::failed(format!("the template of point {} is not UTF-8", m.id)))
}
