//! Faults a drill injects, each with the exact undo that puts the service back as it was.
//!
//! `corrupt-live`: a package whose bootstrap exits at start is uploaded (content-addressed, like
//! every package), made `$LATEST`, published as a version and made `live` (what a pipeline that
//! skipped the probes would do). The undo restores `$LATEST`'s code, points `live` at the version
//! it had before, and deletes the broken version once nothing points at it.

use crate::aws::{aws_error, Aws};
use crate::error::{Error, Result};
use crate::lambda::ops;
use crate::policy::Policy;
use crate::workload::package::{self, Package};
use serde::Serialize;

/// What an injection changed: enough to undo it exactly (recorded in the drill's journal; the
/// key values of `revoke-key` are never part of it).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Injected {
    CorruptLive(CorruptLive),
    RevokeKey(RevokeKey),
    Rehearsal(Rehearsal),
    RegionLoss(RegionLoss),
    GithubOutage(GithubOutage),
    Throttle(super::fault_fn::Throttle),
    HostFault(super::fault_fn::HostFault),
}

impl Injected {
    pub fn summary(&self) -> String {
        match self {
            Injected::CorruptLive(c) => format!(
                "corrupt-live (live {} -> broken version {})",
                c.live_before, c.broken_version
            ),
            Injected::RevokeKey(r) => format!(
                "revoke-key (the lab's LLM no longer accepts the {} in {})",
                r.secret, r.region
            ),
            Injected::RegionLoss(r) => format!(
                "region-loss (the lab has failed {}: its control and data planes stop answering)",
                r.region
            ),
            Injected::GithubOutage(_) => {
                "github-outage (the lab's GitHub answers 503 to git and to the REST API)".into()
            }
            Injected::Rehearsal(r) => format!(
                "none: a rehearsal restores point {} into {} as stack {}",
                r.scratch.point, r.scratch.region, r.scratch.stack
            ),
            Injected::Throttle(t) => format!(
                "throttle ({}'s reserved concurrency set to 0 in {}: Lambda refuses every request)",
                t.function, t.region
            ),
            Injected::HostFault(f) => f.summary(),
        }
    }

    /// The value the recovery runbook stages (the replacement key of `revoke-key`).
    pub fn replacement(&self) -> Option<&secrecy::SecretString> {
        match self {
            Injected::RevokeKey(r) => Some(&r.new_key),
            Injected::CorruptLive(_)
            | Injected::Rehearsal(_)
            | Injected::RegionLoss(_)
            | Injected::GithubOutage(_)
            | Injected::Throttle(_)
            | Injected::HostFault(_) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CorruptLive {
    pub kind: String,
    pub region: String,
    pub function: String,
    /// `live`'s version before the fault.
    pub live_before: String,
    /// `$LATEST`'s CodeSha256 before the fault (its package is in the artifact bucket).
    pub latest_sha_before: String,
    /// The broken version the fault published.
    pub broken_version: String,
    pub broken_sha: String,
}

/// The broken package: a bootstrap that exits before serving (the same bytes every time).
fn broken_package() -> Result<Package> {
    Package::from_bootstrap(b"#!/bin/sh\necho 'drd drill: corrupted package' >&2\nexit 3\n")
}

pub async fn inject_corrupt_live(aws: &Aws, policy: &Policy, region: &str) -> Result<CorruptLive> {
    let lambda = aws.lambda(region).await;
    let function = policy.function_name().to_string();
    let live_before = ops::live_version(&lambda, &function)
        .await?
        .ok_or_else(|| {
            Error::failed_hint(
                format!("{function} has no live alias in {region}"),
                "deploy first (drd deploy)",
            )
        })?;
    let latest_sha_before = ops::code_sha256(&lambda, &function, "$LATEST").await?;
    let bad = broken_package()?;
    let bucket = policy.artifact_bucket(region);
    aws.s3(region)
        .await
        .put_object()
        .bucket(&bucket)
        .key(bad.key())
        .body(bad.zip.clone().into())
        .send()
        .await
        .map_err(|e| aws_error("s3", "PutObject", e))?;
    lambda
        .update_function_code()
        .function_name(&function)
        .s3_bucket(&bucket)
        .s3_key(bad.key())
        .send()
        .await
        .map_err(|e| aws_error("lambda", "UpdateFunctionCode", e))?;
    ops::wait_updated(&lambda, &function).await?;
    let out = lambda
        .publish_version()
        .function_name(&function)
        .code_sha256(bad.code_sha256())
        .description("drd drill corrupt-live: a broken version (deleted by the drill's rollback)")
        .send()
        .await
        .map_err(|e| aws_error("lambda", "PublishVersion", e))?;
    let broken_version = out.version().unwrap_or_default().to_string();
    ops::point_live(&lambda, &function, &broken_version).await?;
    Ok(CorruptLive {
        kind: "corrupt-live".into(),
        region: region.to_string(),
        function,
        live_before,
        latest_sha_before,
        broken_version,
        broken_sha: bad.code_sha256(),
    })
}

/// Put everything back: `live` on its version before the fault, `$LATEST` on its code before
/// the fault, the broken version deleted. Each part is checked; returns what was done.
pub async fn undo(aws: &Aws, policy: &Policy, i: &Injected) -> Result<Vec<String>> {
    match i {
        Injected::CorruptLive(c) => undo_corrupt_live(aws, policy, c).await,
        Injected::RevokeKey(r) => undo_revoke_key(r).await,
        Injected::Rehearsal(r) => undo_rehearsal(aws, r).await,
        Injected::GithubOutage(g) => lab_github(&g.control, "up")
            .await
            .map(|()| vec!["the lab's GitHub answers again".to_string()]),
        Injected::RegionLoss(r) => lab_region(&r.control, &r.region, "restore")
            .await
            .map(|()| vec![format!("the lab answers for {} again", r.region)]),
        Injected::Throttle(t) => super::fault_fn::undo_throttle(aws, t).await,
        Injected::HostFault(f) => super::fault_fn::undo_host_fault(f).await,
    }
}

/// `region-loss` (lab only: an AWS region cannot be failed safely; `restore-rehearsal`
/// rehearses the restore there): the lab's gate and function host stop answering for the
/// stack's primary region, control plane and data plane alike, as in a regional outage. Global
/// services (Route 53, IAM) keep answering, as on AWS.
#[derive(Debug, Clone, Serialize)]
pub struct RegionLoss {
    pub kind: String,
    pub region: String,
    /// The lab's control endpoint (its function host).
    #[serde(skip)]
    control: String,
}

/// `github-outage` (lab only: GitHub is GitHub's): the lab's GitHub stops answering, git and
/// REST alike, as in an outage of github.com.
#[derive(Debug, Clone, Serialize)]
pub struct GithubOutage {
    pub kind: String,
    #[serde(skip)]
    control: String,
}

/// POST the lab's GitHub switch (`down` or `up`).
async fn lab_github(control: &str, verb: &str) -> Result<()> {
    let url = format!("{}/_sandbox/github/{verb}", control.trim_end_matches('/'));
    super::fault_fn::lab(
        reqwest::Client::new().post(&url),
        &format!("the lab's GitHub switch ({verb})"),
    )
    .await
}

/// Take the lab's GitHub down (`control`: the lab's function host URL).
pub async fn inject_github_outage(control: &str) -> Result<GithubOutage> {
    lab_github(control, "down").await?;
    Ok(GithubOutage {
        kind: "github-outage".into(),
        control: control.to_string(),
    })
}

/// POST the lab's region switch (`fail` or `restore`).
async fn lab_region(control: &str, region: &str, verb: &str) -> Result<()> {
    let url = format!(
        "{}/_sandbox/regions/{region}/{verb}",
        control.trim_end_matches('/')
    );
    super::fault_fn::lab(
        reqwest::Client::new().post(&url),
        &format!("the lab's region switch ({verb} {region})"),
    )
    .await
}

/// Fail the stack's primary region in the lab (`control`: the lab's function host URL).
pub async fn inject_region_loss(policy: &Policy, control: &str) -> Result<RegionLoss> {
    let region = policy.primary_region().to_string();
    lab_region(control, &region, "fail").await?;
    Ok(RegionLoss {
        kind: "region-loss".into(),
        region,
        control: control.to_string(),
    })
}

/// A restore rehearsal (fault `none`): what it will make in its scratch region, and what an
/// earlier, interrupted rehearsal had left there (removed before this one started).
#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
    pub kind: String,
    pub scratch: crate::restore::rehearsal::Scratch,
    pub leftovers_removed: Vec<String>,
    #[serde(skip)]
    pub manifest: Box<crate::backup::manifest::Manifest>,
}

/// Check the scratch region and choose the point; remove an earlier rehearsal's leftovers.
pub async fn prepare_rehearsal(
    aws: &Aws,
    policy: &Policy,
    store: &crate::store::Store,
    inputs: &std::collections::BTreeMap<String, String>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Rehearsal> {
    use crate::restore::rehearsal;
    let region = inputs.get("region").map(String::as_str).unwrap_or("");
    if region.is_empty() {
        return Err(crate::error::ConfigError::new(
            "region",
            "a restore rehearsal needs a scratch region",
        )
        .hint("pass --input region=R (a region other than the primary), or set inputs = { region = \"R\" } under [recovery]")
        .into());
    }
    let identity = inputs.get("identity").cloned().unwrap_or_default();
    let (m, scratch) = rehearsal::plan(aws, policy, store, region, &identity).await?;
    let mut leftovers_removed = vec![];
    if !rehearsal::leftovers(aws, &scratch).await?.is_empty() {
        progress("an earlier rehearsal left resources behind: removing them first");
        leftovers_removed = rehearsal::teardown(aws, &scratch, progress).await?;
        let still = rehearsal::leftovers(aws, &scratch).await?;
        if !still.is_empty() {
            return Err(Error::failed(format!(
                "an earlier rehearsal's leftovers in {region} could not be removed: {}",
                still.join(", ")
            )));
        }
    }
    Ok(Rehearsal {
        kind: "none".into(),
        scratch,
        leftovers_removed,
        manifest: Box::new(m),
    })
}

/// Tear the rehearsal down and prove that nothing is left.
async fn undo_rehearsal(aws: &Aws, r: &Rehearsal) -> Result<Vec<String>> {
    use crate::restore::rehearsal;
    let quiet = |_: &str| {};
    let mut done = rehearsal::teardown(aws, &r.scratch, &quiet).await?;
    let left = rehearsal::leftovers(aws, &r.scratch).await?;
    if !left.is_empty() {
        return Err(Error::failed(format!(
            "the teardown left {} in {}",
            left.join(", "),
            r.scratch.region
        )));
    }
    done.push(format!(
        "nothing is left in {}: stack, function, log group, {} secret(s) and code package looked up again",
        r.scratch.region,
        r.scratch.secrets.len()
    ));
    Ok(done)
}

async fn undo_corrupt_live(aws: &Aws, policy: &Policy, i: &CorruptLive) -> Result<Vec<String>> {
    let lambda = aws.lambda(&i.region).await;
    let f = &i.function;
    let mut done = vec![];
    match ops::point_live(&lambda, f, &i.live_before).await? {
        ops::AliasChange::Unchanged => {
            done.push(format!("live already on version {}", i.live_before))
        }
        _ => done.push(format!("live moved back to version {}", i.live_before)),
    }
    if ops::code_sha256(&lambda, f, "$LATEST").await? != i.latest_sha_before {
        let hex = package::hex_of_code_sha256(&i.latest_sha_before).ok_or_else(|| {
            Error::failed(format!("{:?} is not a CodeSha256", i.latest_sha_before))
        })?;
        lambda
            .update_function_code()
            .function_name(f)
            .s3_bucket(policy.artifact_bucket(&i.region))
            .s3_key(package::object_key(&hex))
            .send()
            .await
            .map_err(|e| aws_error("lambda", "UpdateFunctionCode", e))?;
        ops::wait_updated(&lambda, f).await?;
        let now = ops::code_sha256(&lambda, f, "$LATEST").await?;
        if now != i.latest_sha_before {
            return Err(Error::failed(format!(
                "$LATEST runs {now} after the undo, not {}",
                i.latest_sha_before
            )));
        }
        done.push("$LATEST's code restored".into());
    }
    match lambda
        .delete_function()
        .function_name(f)
        .qualifier(&i.broken_version)
        .send()
        .await
    {
        Ok(_) => done.push(format!("broken version {} deleted", i.broken_version)),
        Err(e) if crate::aws::error_code(&e) == Some("ResourceNotFoundException") => {}
        Err(e) => return Err(aws_error("lambda", "DeleteFunction", e)),
    }
    Ok(done)
}

/// `revoke-key` (lab only: on AWS the key belongs to the LLM provider): the lab's LLM stops
/// accepting the API key the function uses, as a provider revoking a leaked key would. A
/// replacement key the lab accepts is made for the recovery (`secret-rotation` stages it).
#[derive(Debug, Clone, Serialize)]
pub struct RevokeKey {
    pub kind: String,
    pub region: String,
    /// The secret holding the key (its value is never recorded).
    pub secret: String,
    #[serde(skip)]
    old_key: secrecy::SecretString,
    #[serde(skip)]
    new_key: secrecy::SecretString,
    #[serde(skip)]
    llm_control: String,
}

/// POST a key to the lab LLM's control endpoint (`allow` or `revoke`); the key is the body.
async fn lab_keys(control: &str, verb: &str, key: &secrecy::SecretString) -> Result<()> {
    use secrecy::ExposeSecret;
    let url = format!("{control}/_sandbox/keys/{verb}");
    let r = reqwest::Client::new()
        .post(&url)
        .body(key.expose_secret().to_string())
        .send()
        .await
        .map_err(|e| {
            Error::failed(format!(
                "the lab LLM's {verb} did not answer: {}",
                e.without_url()
            ))
        })?;
    if !r.status().is_success() {
        return Err(Error::failed(format!(
            "the lab LLM's {verb} answered {}",
            r.status()
        )));
    }
    Ok(())
}

/// A fresh key the lab's LLM accepts (`sk-drill-` and 32 random bytes, hex).
fn new_key() -> secrecy::SecretString {
    use crypto_box::aead::rand_core::RngCore;
    let mut b = [0u8; 32];
    crypto_box::aead::OsRng.fill_bytes(&mut b);
    let s = format!("sk-drill-{}", hex::encode(b));
    b.fill(0);
    secrecy::SecretString::from(s)
}

/// `llm_base` is the lab LLM's base URL (`DRD_LLM_BASE_URL`, `http://127.0.0.1:P/v1`).
pub async fn inject_revoke_key(
    aws: &Aws,
    policy: &Policy,
    region: &str,
    llm_base: &str,
) -> Result<RevokeKey> {
    let control = llm_base
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    let secret = policy.api_key_secret().to_string();
    let out = aws
        .secrets(region)
        .await
        .get_secret_value()
        .secret_id(&secret)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|e| aws_error("secretsmanager", "GetSecretValue", e))?;
    // The secret holds the key bare or as {"OPENAI_API_KEY": "..."}: the key itself is revoked.
    let old_key = crate::deploy::parse_api_key(
        out.secret_string().unwrap_or_default(),
        &format!("secret {secret} in {region}"),
        &secret,
    )?;
    let new_key = new_key();
    lab_keys(&control, "allow", &new_key).await?;
    lab_keys(&control, "revoke", &old_key).await?;
    Ok(RevokeKey {
        kind: "revoke-key".into(),
        region: region.to_string(),
        secret,
        old_key,
        new_key,
        llm_control: control,
    })
}

/// The lab's LLM accepts the revoked key again (the secret keeps the rotated one).
async fn undo_revoke_key(r: &RevokeKey) -> Result<Vec<String>> {
    lab_keys(&r.llm_control, "allow", &r.old_key).await?;
    Ok(vec![
        "the revoked key is accepted again by the lab's LLM".into()
    ])
}
