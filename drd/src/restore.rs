//! Procedure 4: redeploy the stack from a recovery point into another region.
//!
//! Everything here reads only the recovery-point store (outside the primary region) and the
//! target region; the primary is touched by one bounded reachability probe, whose result is
//! reported and never waited on. Each function is idempotent: a second restore into a region that
//! already holds the restored stack converges without creating anything twice (secret versions
//! keep their ids, code is content-addressed, the stack update is skipped when nothing differs,
//! `PublishVersion` reuses an unchanged version, DNS changes are read first).

use crate::aws::{aws_error, error_code, Aws};
use crate::backup::crypto::Identities;
use crate::backup::manifest::Manifest;
use crate::backup::verify::verify_point;
use crate::error::{ConfigError, Error, Result};
use crate::lambda::probe::{self, ProbeResult, Tier, UrlProber};
use crate::lambda::{ops, LIVE_ALIAS};
use crate::policy::Policy;
use crate::store::Store;
use crate::workload::package;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Where the stack serves from, as the last restore left it (in the store, beside the points).
pub const ACTIVE_KEY: &str = "active-region.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveRegion {
    pub region: String,
    pub function_url: String,
    /// The point the region was restored from.
    pub point: String,
    /// RFC 3339.
    pub since: String,
    pub by: String,
}

pub fn active_key(store: &Store) -> String {
    format!("{}{ACTIVE_KEY}", store.prefix)
}

pub async fn read_active(store: &Store) -> Result<Option<ActiveRegion>> {
    match store.get(&active_key(store)).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::failed_hint(
                format!("{} is unreadable: {e}", active_key(store)),
                "delete it: the stack is then taken to run in the policy's primary region",
            )
        }),
    }
}

/// The region the stack serves from: the store's record of the last restore, else the primary.
/// A store that cannot be read gives the primary (logged).
pub async fn active_region(aws: &Aws, policy: &Policy) -> String {
    let found = async {
        let store = crate::backup::open_store_read(aws, policy).await?;
        read_active(&store).await
    };
    match found.await {
        Ok(Some(a)) => a.region,
        Ok(None) => policy.primary_region().to_string(),
        Err(e) => {
            tracing::debug!(error = %e, "no active-region record; using the primary region");
            policy.primary_region().to_string()
        }
    }
}

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

/// What the preflight found; nothing was written.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    pub point: String,
    pub created_at: String,
    pub rpo_seconds: u64,
    pub point_region: String,
    /// Newer points passed over because they fail `verify`.
    pub skipped: Vec<String>,
    pub live_version: String,
    pub code_sha256: String,
    pub secret_versions: usize,
    pub rewrites: Vec<Rewrite>,
    pub stack_exists: bool,
    pub primary_region: String,
    pub primary_reachable: bool,
    pub primary_detail: String,
    pub dns_zone: Option<String>,
    pub dns_now: Option<String>,
}

fn identities(path: &str) -> Result<Identities> {
    if path.trim().is_empty() {
        return Err(ConfigError::new("--identity", "no identity file given")
            .hint("pass --identity FILE: the age identity whose public key is in backup.recipients")
            .into());
    }
    Identities::from_file(Path::new(path))
}

/// Reject a target that cannot be right, before anything else.
pub fn check_target(policy: &Policy, target: &str) -> Result<()> {
    if !crate::policy::is_region_name(target) {
        return Err(
            ConfigError::new("--region", format!("{target:?} is not an AWS region name"))
                .hint("use a region code such as us-west-2")
                .into(),
        );
    }
    if target == policy.primary_region() {
        return Err(ConfigError::new(
            "--region",
            format!(
                "{target} is the stack's primary region, the one a restore recovers from"
            ),
        )
        .hint(format!(
            "restore into another region (e.g. {}); to return to {target} once it is back, run drd deploy --region {target}",
            policy.backup.region.get_ref()
        ))
        .into());
    }
    Ok(())
}

/// Choose the point: `sel` is an id or `latest` (the newest that passes verify with the
/// identity). A wrong identity stops at once: it is not the points' fault.
pub async fn choose_point(
    store: &Store,
    sel: &str,
    ids: &Identities,
    identity_path: &str,
) -> Result<(Manifest, Vec<String>)> {
    let named = !(sel.is_empty() || sel == "latest");
    let candidates: Vec<String> = if named {
        vec![sel.to_string()]
    } else {
        let mut all = store.point_ids().await?;
        all.reverse();
        all
    };
    if candidates.is_empty() {
        return Err(Error::failed_hint(
            "the store holds no recovery point",
            "there is nothing to restore from; check backup.bucket in the policy",
        ));
    }
    let mut cache = HashMap::new();
    let mut skipped = vec![];
    for id in candidates {
        let check = verify_point(store, &id, Some(ids), &mut cache).await?;
        if let Some(p) = check
            .problems
            .iter()
            .find(|p| p.contains("No matching keys") || p.contains("cannot decrypt"))
        {
            return Err(ConfigError::new(
                identity_path,
                format!("this identity cannot decrypt the secret backups: {p}"),
            )
            .field("--identity")
            .hint("pass the identity whose public key (age-keygen -y FILE) is in backup.recipients")
            .into());
        }
        if !check.ok {
            if named {
                return Err(Error::failed_hint(
                    format!(
                        "point {id} fails verify: {}",
                        check.problems.join("; ")
                    ),
                    "choose another point (drd points list) or omit --point to take the newest sound one",
                ));
            }
            skipped.push(format!("{id}: {}", check.problems.join("; ")));
            continue;
        }
        let m = crate::backup::read_manifest(store, &id).await?;
        return Ok((m, skipped));
    }
    Err(Error::failed_hint(
        format!("no recovery point passes verify: {}", skipped.join(" | ")),
        "inspect the store with drd verify --all --identity FILE",
    ))
}

/// Every check that can stop a restore, with no write anywhere.
pub async fn preflight(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    target: &str,
    sel: &str,
    identity_path: &str,
) -> Result<Preflight> {
    check_target(policy, target)?;
    let ids = identities(identity_path)?;
    let zone = match &policy.dns {
        Some(_) => Some(crate::dns::require_zone(aws, policy).await?),
        None => None,
    };
    let (m, skipped) = choose_point(store, sel, &ids, identity_path).await?;
    let (live_version, code_sha256, _) = live_code(&m)?;
    let template = load_template(store, &m).await?;
    let plan = plan_stack(&m, &template, policy, target)?;
    let cf = aws.cloudformation(target).await;
    let stack_exists = crate::deploy::describe_stack(&cf, policy.stack_name())
        .await?
        .is_some();
    let (primary_reachable, primary_detail) = probe_primary(aws, policy).await;
    let dns_now = match &zone {
        Some(z) => crate::dns::view(aws, policy, z).await?.primary,
        None => None,
    };
    let created: SystemTime = humantime::parse_rfc3339(&m.created_at)
        .map_err(|e| Error::failed(format!("point {} has a bad created_at: {e}", m.id)))?;
    let rpo = SystemTime::now()
        .duration_since(created)
        .unwrap_or_default()
        .as_secs();
    Ok(Preflight {
        point: m.id.clone(),
        created_at: m.created_at.clone(),
        rpo_seconds: rpo,
        point_region: m.stack.region.clone(),
        skipped,
        live_version,
        code_sha256,
        secret_versions: restorable(&m).count(),
        rewrites: plan.rewrites,
        stack_exists,
        primary_region: policy.primary_region().to_string(),
        primary_reachable,
        primary_detail,
        dns_zone: zone.map(|z| z.name),
        dns_now,
    })
}

/// One bounded look at the primary (3 s, one attempt): reported, never waited on.
async fn probe_primary(aws: &Aws, policy: &Policy) -> (bool, String) {
    let primary = policy.primary_region();
    let lambda = aws.lambda(primary).await;
    let call = lambda
        .get_function_configuration()
        .function_name(policy.function_name())
        .send();
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Err(_) => (
            false,
            format!("{primary} did not answer within 3 s: skipped"),
        ),
        Ok(Ok(_)) => (true, format!("{primary} answers; nothing is written there")),
        Ok(Err(e)) => match error_code(&e) {
            Some(code) => (
                true,
                format!("{primary} answers ({code}); nothing is written there"),
            ),
            None => {
                tracing::debug!(error = %aws_error("lambda", "GetFunctionConfiguration", e), "primary probe");
                (
                    false,
                    format!("{primary} is unreachable (no connection): nothing is read or written there"),
                )
            }
        },
    }
}

pub async fn load_template(store: &Store, m: &Manifest) -> Result<String> {
    let bytes = store
        .get_blob(&m.stack.template.sha256)
        .await?
        .ok_or_else(|| Error::failed(format!("the template blob of point {} is missing", m.id)))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::failed(format!("the template of point {} is not UTF-8", m.id)))
}

/// The secret versions a restore recreates: AWSCURRENT and AWSPREVIOUS (a pending rotation is
/// not carried over: rotate again after the restore).
fn restorable(
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
        let existing = secret_versions(&sm, &s.name).await?;
        let mut r = SecretRestore {
            name: s.name.clone(),
            created: false,
            versions_put: 0,
            stages_moved: 0,
        };
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
            let text = std::str::from_utf8(plain.expose_secret()).ok();
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
            let now = secret_versions(&sm, &s.name).await?.unwrap_or_default();
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

/// Version id -> stages of a secret, or `None` when it does not exist.
async fn secret_versions(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<String>>>> {
    match sm.describe_secret().secret_id(name).send().await {
        Ok(d) => Ok(Some(
            d.version_ids_to_stages()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        )),
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

/// Copy live's code package from the store into the target region's artifact bucket (created if
/// absent), checking its hash; returns (bucket, key, uploaded).
pub async fn restore_code(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    target: &str,
) -> Result<(String, String, bool)> {
    let (_, _, hex) = live_code(m)?;
    let bucket = policy.artifact_bucket(target);
    let s3 = aws.s3(target).await;
    crate::store::ensure_store_bucket(&s3, &bucket, target, None, "").await?;
    let artifacts = Store::with_prefix(s3, &bucket, "");
    let key = package::object_key(&hex);
    if let Some(have) = artifacts.get(&key).await? {
        if hex::encode(Sha256::digest(&have)) == hex {
            return Ok((bucket, key, false));
        }
    }
    let zip = store.get_blob(&hex).await?.ok_or_else(|| {
        Error::failed(format!("the code package {hex} is missing from the store"))
    })?;
    let got = hex::encode(Sha256::digest(&zip));
    if got != hex {
        return Err(Error::failed(format!(
            "the stored code package {hex} hashes to {got}: refusing to deploy it"
        )));
    }
    // put (not put_once): a corrupted object under the content address is replaced.
    artifacts.put(&key, &zip).await?;
    Ok((bucket, key, true))
}

/// Check: the package is in the target's artifact bucket and hashes to its address.
pub async fn code_present(aws: &Aws, policy: &Policy, m: &Manifest, target: &str) -> Result<()> {
    let (_, _, hex) = live_code(m)?;
    let bucket = policy.artifact_bucket(target);
    let artifacts = Store::with_prefix(aws.s3(target).await, &bucket, "");
    let key = package::object_key(&hex);
    match artifacts.get(&key).await? {
        None => Err(Error::failed(format!("s3://{bucket}/{key} does not exist"))),
        Some(b) if hex::encode(Sha256::digest(&b)) != hex => Err(Error::failed(format!(
            "s3://{bucket}/{key} does not hash to its address"
        ))),
        Some(_) => Ok(()),
    }
}

/// Create (or converge) the stack in `target` from the point; returns (action, status, plan).
pub async fn restore_stack(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    target: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(String, String, StackPlan)> {
    let template = load_template(store, m).await?;
    let plan = plan_stack(m, &template, policy, target)?;
    for r in &plan.rewrites {
        progress(&format!(
            "rewrite {}: {} -> {} ({})",
            r.place, r.from, r.to, r.why
        ));
    }
    let params: BTreeMap<&str, String> = plan
        .parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let cf = aws.cloudformation(target).await;
    let (action, status) =
        crate::deploy::ensure_stack(&cf, policy.stack_name(), &plan.body, &params, progress)
            .await?;
    Ok((action, status, plan))
}

/// Check: the stack in `target` is complete, with the planned template and parameters.
pub async fn stack_matches(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    target: &str,
) -> Result<()> {
    let template = load_template(store, m).await?;
    let plan = plan_stack(m, &template, policy, target)?;
    let cf = aws.cloudformation(target).await;
    let name = policy.stack_name();
    let stack = crate::deploy::describe_stack(&cf, name)
        .await?
        .ok_or_else(|| Error::failed(format!("stack {name} does not exist in {target}")))?;
    let status = stack
        .stack_status()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    if status != "CREATE_COMPLETE" && status != "UPDATE_COMPLETE" {
        return Err(Error::failed(format!(
            "stack {name} in {target} is {status}"
        )));
    }
    let body = cf
        .get_template()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| aws_error("cloudformation", "GetTemplate", e))?;
    if body.template_body() != Some(plan.body.as_str()) {
        return Err(Error::failed(format!(
            "stack {name} in {target} runs another template than the point's"
        )));
    }
    for p in stack.parameters() {
        let k = p.parameter_key().unwrap_or_default();
        if let Some(want) = plan.parameters.get(k) {
            if p.parameter_value().unwrap_or_default() != want {
                return Err(Error::failed(format!(
                    "stack {name} in {target}: parameter {k} is {:?}, expected {want:?}",
                    p.parameter_value().unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

/// What bringing the function up in the target did.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionUp {
    pub version: String,
    pub published: bool,
    pub alias_changed: bool,
    pub function_url: String,
    pub url_created: bool,
    pub pinned: bool,
    /// RFC 3339 (ms): when the Function URL first passed T1 in the target.
    pub healthy_at: String,
    pub probes: Vec<ProbeResult>,
}

/// Publish the restored code, probe the version, point `live`, make sure the Function URL
/// exists and passes T0/T1, pin the version (region-keyed) and record the target as the active
/// region in the store.
pub async fn bring_up_function(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    target: &str,
    run_id: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<FunctionUp> {
    let (_, sha, _) = live_code(m)?;
    let function = policy.function_name();
    let lambda = aws.lambda(target).await;
    let latest = ops::code_sha256(&lambda, function, "$LATEST").await?;
    if latest != sha {
        return Err(Error::failed(format!(
            "{function} in {target} runs code {latest}, not the point's {sha}"
        )));
    }
    let (version, published) = ops::publish(&lambda, function, &sha).await?;
    progress(&format!(
        "version {} in {target}: {}",
        version.version,
        if published { "published" } else { "unchanged" }
    ));
    let data = aws.lambda_data(target).await;
    let mut probes = vec![];
    for tier in [Tier::T0, Tier::T1] {
        let r = probe::probe_invoke(&data, function, &version.version, tier).await;
        if !r.ok {
            return Err(Error::failed(format!(
                "version {} in {target} failed probe {tier:?}: {}",
                version.version, r.detail
            )));
        }
        probes.push(r);
    }
    let alias = ops::point_live(&lambda, function, &version.version).await?;
    let (url, url_created) = ops::ensure_function_url(&lambda, function).await?;
    let prober = UrlProber::new(aws.settings().data_endpoint.clone());
    for tier in [Tier::T0, Tier::T1] {
        let r = prober.probe(&url, tier).await;
        if !r.ok {
            return Err(Error::failed(format!(
                "the Function URL {url} in {target} failed probe {tier:?}: {}",
                r.detail
            )));
        }
        probes.push(r);
    }
    let healthy_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    progress(&format!("{url} healthy (T0, T1) in {target}"));
    let invoke: Vec<ProbeResult> = probes.iter().filter(|p| p.via != "url").cloned().collect();
    let by = format!(
        "drd restore {run_id} on {}",
        crate::store::lease::hostname()
    );
    let (_, pinned) = crate::lambda::pins::record(
        store,
        &lambda,
        target,
        function,
        &version.version,
        invoke,
        &by,
    )
    .await?;
    let active = ActiveRegion {
        region: target.to_string(),
        function_url: url.clone(),
        point: m.id.clone(),
        since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        by,
    };
    let same = read_active(store)
        .await
        .ok()
        .flatten()
        .is_some_and(|a| a.region == active.region && a.function_url == active.function_url);
    if !same {
        store
            .put(
                &active_key(store),
                &serde_json::to_vec_pretty(&active).expect("serializes"),
            )
            .await?;
    }
    Ok(FunctionUp {
        version: version.version,
        published,
        alias_changed: alias != ops::AliasChange::Unchanged,
        function_url: url,
        url_created,
        pinned,
        healthy_at,
        probes,
    })
}

/// Check: `live` in the target runs the point's code and its URL passes T1.
pub async fn function_healthy(
    aws: &Aws,
    policy: &Policy,
    m: &Manifest,
    target: &str,
) -> Result<()> {
    let (_, sha, _) = live_code(m)?;
    let function = policy.function_name();
    let lambda = aws.lambda(target).await;
    let live = ops::live_version(&lambda, function)
        .await?
        .ok_or_else(|| Error::failed(format!("{function} in {target} has no live alias")))?;
    let got = ops::code_sha256(&lambda, function, &live).await?;
    if got != sha {
        return Err(Error::failed(format!(
            "live ({live}) in {target} runs {got}, not the point's {sha}"
        )));
    }
    let url = ops::function_url(&lambda, function)
        .await?
        .ok_or_else(|| Error::failed(format!("{function} in {target} has no Function URL")))?;
    let r = UrlProber::new(aws.settings().data_endpoint.clone())
        .probe(&url, Tier::T1)
        .await;
    if !r.ok {
        return Err(Error::failed(format!("{url} fails T1: {}", r.detail)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::*;
    use crate::store::BlobRef;

    fn policy() -> Policy {
        let text = r#"
[stack]
name = "s"
primary_region = "us-east-1"
template = "t.yaml"
function_name = "f"
[artifacts]
bucket_prefix = "drd-artifacts"
[backup]
bucket = "points"
region = "us-west-2"
recipients = ["age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k"]
"#;
        Policy::parse(text, Path::new("p.toml")).unwrap()
    }

    fn blob(h: &str) -> BlobRef {
        BlobRef {
            sha256: h.repeat(64 / h.len()),
            size: 1,
        }
    }

    fn manifest(params: &[(&str, Option<&str>)]) -> Manifest {
        let code_hex = "ab".repeat(32);
        let code_b64 = package::code_sha256_of_hex(&code_hex);
        Manifest {
            schema: MANIFEST_SCHEMA,
            id: "p1".into(),
            created_at: "2026-11-27T00:00:00Z".into(),
            holder: "t".into(),
            fencing_token: 1,
            scheduled: None,
            stack: StackCapture {
                name: "s".into(),
                region: "us-east-1".into(),
                status: "CREATE_COMPLETE".into(),
                template: blob("1"),
                parameters: params
                    .iter()
                    .map(|(k, v)| ParameterCapture {
                        key: k.to_string(),
                        value: v.map(str::to_string),
                        redacted: v.is_none(),
                    })
                    .collect(),
                outputs: Default::default(),
                tags: Default::default(),
                resources: vec![],
            },
            function: FunctionCapture {
                name: "f".into(),
                configuration: blob("2"),
                versions: vec![VersionCapture {
                    version: "3".into(),
                    code_sha256: code_b64.clone(),
                }],
                aliases: [("live".to_string(), "3".to_string())].into(),
                url: None,
            },
            code: vec![CodeCapture {
                code_sha256: code_b64,
                used_by: vec!["3".into()],
                blob: BlobRef {
                    sha256: code_hex,
                    size: 10,
                },
            }],
            log_group: None,
            secrets: vec![],
            changes: Default::default(),
        }
    }

    #[test]
    fn only_region_bound_values_are_rewritten_and_each_is_reported() {
        let key = package::object_key(&"ab".repeat(32));
        let m = manifest(&[
            ("CodeBucket", Some("drd-artifacts-us-east-1")),
            ("CodeKey", Some(&key)),
            ("ApiKeySecretName", Some("openai-api-key")),
            ("Topic", Some("arn:aws:sns:us-east-1:123456789012:alerts")),
            ("LlmBaseUrl", Some("https://api.openai.com/v1")),
        ]);
        let tpl = "Resources:\n  X:\n    Properties:\n      Bucket: drd-artifacts-us-east-1\n      Arn: !Sub arn:${AWS::Partition}:secretsmanager:${AWS::Region}:x\n      Q: arn:aws:sqs:us-east-1:1:q\n";
        let plan = plan_stack(&m, tpl, &policy(), "us-west-2").unwrap();
        assert_eq!(plan.parameters["CodeBucket"], "drd-artifacts-us-west-2");
        assert_eq!(plan.parameters["CodeKey"], key, "the same content address");
        assert_eq!(plan.parameters["ApiKeySecretName"], "openai-api-key");
        assert_eq!(
            plan.parameters["Topic"],
            "arn:aws:sns:us-west-2:123456789012:alerts"
        );
        assert_eq!(plan.parameters["LlmBaseUrl"], "https://api.openai.com/v1");
        let places: Vec<&str> = plan.rewrites.iter().map(|r| r.place.as_str()).collect();
        assert_eq!(
            places,
            [
                "parameter CodeBucket",
                "parameter Topic",
                "template line 4",
                "template line 6"
            ]
        );
        // Apart from the reported lines, the template is byte for byte the same.
        let changed: Vec<usize> = vec![4, 6];
        for (i, (a, b)) in tpl.lines().zip(plan.body.lines()).enumerate() {
            assert_eq!(a == b, !changed.contains(&(i + 1)), "line {}", i + 1);
        }
        assert_eq!(plan.body.len(), tpl.len(), "same length: region names are");
        // Into the point's own region: nothing changes.
        let same = plan_stack(&m, tpl, &policy(), "us-east-1").unwrap();
        assert!(same.rewrites.is_empty());
        assert_eq!(same.body, tpl);
    }

    #[test]
    fn the_code_key_follows_what_live_ran_and_no_echo_stops_the_plan() {
        let m = manifest(&[("CodeKey", Some("objects/sha256/cd/old"))]);
        let plan = plan_stack(&m, "", &policy(), "us-west-2").unwrap();
        assert_eq!(
            plan.parameters["CodeKey"],
            package::object_key(&"ab".repeat(32))
        );
        assert!(
            plan.rewrites[0].why.contains("version 3"),
            "{:?}",
            plan.rewrites
        );
        let e = plan_stack(
            &manifest(&[("DbPassword", None)]),
            "",
            &policy(),
            "us-west-2",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("DbPassword") && e.contains("NoEcho"), "{e}");
    }

    #[test]
    fn the_primary_and_non_regions_are_rejected_as_targets() {
        let p = policy();
        let e = check_target(&p, "us-east-1").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("primary region"), "{e}");
        assert_eq!(check_target(&p, "mars-1").unwrap_err().exit_code(), 2);
        assert!(check_target(&p, "us-west-2").is_ok());
    }
}
