//! Procedure 4: redeploy the stack from a recovery point into another region.
//!
//! Everything here reads only the recovery-point store (outside the primary region) and the
//! target region; the primary is touched by one bounded reachability probe, whose result is
//! reported and never waited on. Each function is idempotent: a second restore into a region that
//! already holds the restored stack converges without creating anything twice (secret versions
//! keep their ids, code is content-addressed, the stack update is skipped when nothing differs,
//! `PublishVersion` reuses an unchanged version, DNS changes are read first).

mod code;
pub mod failback;
mod function;
mod plan;
pub mod rehearsal;
mod secrets;
mod stack;
#[cfg(test)]
mod tests;

pub use code::*;
pub use function::*;
pub use plan::*;
use secrets::restorable;
pub use secrets::*;
pub use stack::*;

use crate::aws::{aws_error, error_code, Aws};
use crate::backup::crypto::Identities;
use crate::backup::manifest::Manifest;
use crate::backup::verify::verify_point;
use crate::error::{ConfigError, Error, Result};
use crate::policy::Policy;
use crate::store::Store;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

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
    /// Why the DNS record could not be read (Route 53's control plane does not answer): the
    /// restore goes on and its dns step will fail until it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_unreachable: Option<String>,
    /// `repair`: the target is the primary, which is repaired in place from the point (what is
    /// intact is left alone); `failover`: another region.
    pub mode: &'static str,
    /// The store the run reads and writes (the copy, with `--from-copy`).
    pub store: String,
}

pub(super) fn identities(path: &str) -> Result<Identities> {
    if path.trim().is_empty() {
        return Err(ConfigError::new("--identity", "no identity file given")
            .hint("pass --identity FILE: the age identity whose public key is in backup.recipients")
            .into());
    }
    Identities::from_file(Path::new(path))
}

/// Reject a target that cannot be right, before anything else.
pub fn check_target(target: &str) -> Result<()> {
    if !crate::policy::is_region_name(target) {
        return Err(
            ConfigError::new("--region", format!("{target:?} is not an AWS region name"))
                .hint("use a region code such as us-west-2")
                .into(),
        );
    }
    Ok(())
}

/// A stack CloudFormation calls complete whose function is gone (deleted out of band) cannot be
/// repaired by an update: CloudFormation does not see the drift. Refused before any write.
async fn check_function_not_drifted(aws: &Aws, policy: &Policy, target: &str) -> Result<()> {
    let lambda = aws.lambda(target).await;
    match lambda
        .get_function_configuration()
        .function_name(policy.function_name())
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
            let stack = policy.stack_name();
            Err(Error::failed_hint(
                format!(
                    "stack {stack} exists in {target} but its function {} is gone: CloudFormation cannot see that drift, so an update would not bring it back",
                    policy.function_name()
                ),
                format!("delete the stack (aws cloudformation delete-stack --stack-name {stack} --region {target}) and run the restore again: it recreates it from the point"),
            ))
        }
        Err(e) => Err(aws_error("lambda", "GetFunctionConfiguration", e)),
    }
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
    // Newest first without listing the store when the pointer allows; the full listing only
    // when every point it offers fails verify.
    let mut candidates: Vec<String> = if named {
        vec![sel.to_string()]
    } else {
        crate::store::latest::newest_first(store).await?
    };
    if candidates.is_empty() {
        return Err(Error::failed_hint(
            "the store holds no recovery point",
            "there is nothing to restore from; check backup.bucket in the policy",
        ));
    }
    let mut listed = named;
    let mut cache = HashMap::new();
    let mut skipped = vec![];
    let mut tried = std::collections::BTreeSet::new();
    while let Some(id) = candidates.first().cloned() {
        candidates.remove(0);
        if !tried.insert(id.clone()) {
            continue;
        }
        let check = verify_point(store, &id, Some(ids), &mut cache).await?;
        if check.newer {
            // Never fall back past a point this drd cannot read: it may be the newest state.
            return Err(Error::failed_hint(
                check.problems.join("; "),
                "install the drd that wrote it; an older point is not chosen in its place",
            ));
        }
        let foreign = (check.opens == Some(false)).then(|| {
            if check.recipients.is_empty() {
                "they are encrypted to other recipients".to_string()
            } else {
                format!("they are encrypted to {}", check.recipients.join(", "))
            }
        });
        if let Some(p) = foreign.or_else(|| {
            check
                .problems
                .iter()
                .find(|p| p.contains("No matching keys") || p.contains("cannot decrypt"))
                .cloned()
        }) {
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
            refill(store, &mut candidates, &mut listed).await?;
            continue;
        }
        let m = crate::backup::read_manifest(store, &id).await?;
        if let (false, Some(d)) = (named, &m.drill) {
            // Taken while a drill had the stack broken on purpose: never the newest good state.
            skipped.push(format!(
                "{id}: taken during drill {} (run {})",
                d.drill, d.run
            ));
            refill(store, &mut candidates, &mut listed).await?;
            continue;
        }
        return Ok((m, skipped));
    }
    Err(Error::failed_hint(
        format!("no recovery point passes verify: {}", skipped.join(" | ")),
        "inspect the store with drd verify --all --identity FILE",
    ))
}

/// When the points the pointer offered are used up, every point, newest first (once).
async fn refill(store: &Store, candidates: &mut Vec<String>, listed: &mut bool) -> Result<()> {
    if candidates.is_empty() && !*listed {
        *listed = true;
        let mut all = store.point_ids().await?;
        all.reverse();
        *candidates = all;
    }
    Ok(())
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
    check_target(target)?;
    let ids = identities(identity_path)?;
    // Route 53's control plane (us-east-1) not answering stops only the dns step: the region
    // is still restored, and the step says what it needs (users move by themselves to a standby
    // prepared ahead).
    let mut dns_unreachable = None;
    let zone = match &policy.dns {
        Some(_) => match crate::dns::require_zone(aws, policy).await {
            Ok(z) => Some(z),
            Err(e) if e.aws_code() == Some("Unreachable") => {
                dns_unreachable = Some(e.to_string());
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let (primary_reachable, primary_detail) = probe_primary(aws, policy).await;
    if target == policy.primary_region() && !primary_reachable {
        return Err(ConfigError::new(
            "--region",
            format!(
                "{target} is the stack's primary region and it does not answer ({primary_detail}): a repair in place needs it"
            ),
        )
        .hint(format!(
            "restore into another region (e.g. {}), or run this again when {target} answers",
            policy.backup.region.get_ref()
        ))
        .into());
    }
    let (m, skipped) = choose_point(store, sel, &ids, identity_path).await?;
    let (live_version, code_sha256, _) = live_code(&m)?;
    let template = load_template(store, &m).await?;
    let plan = plan_stack(&m, &template, policy, target)?;
    let cf = aws.cloudformation(target).await;
    let stack_exists = crate::stack::describe_stack(&cf, policy.stack_name())
        .await?
        .is_some();
    if stack_exists {
        check_function_not_drifted(aws, policy, target).await?;
    }
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
        dns_unreachable,
        mode: if target == policy.primary_region() {
            "repair"
        } else {
            "failover"
        },
        store: policy.store_label(),
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
