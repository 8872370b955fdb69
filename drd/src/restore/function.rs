//! The function in the target: publish, probe, point `live`, the Function URL, the pin and the
//! active-region record; and the check that it serves.

use super::plan::live_code;
use crate::aws::Aws;
use crate::backup::manifest::Manifest;
use crate::error::{Error, Result};
use crate::lambda::ops;
use crate::lambda::probe::{self, ProbeResult, Tier, UrlProber};
use crate::policy::Policy;
use crate::store::active::ActiveRegion;
use crate::store::Store;
use serde::Serialize;
use std::time::SystemTime;

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
    let up = serve(aws, policy, m, target, progress).await?;
    let lambda = aws.lambda(target).await;
    let invoke: Vec<ProbeResult> = up
        .probes
        .iter()
        .filter(|p| p.via != "url")
        .cloned()
        .collect();
    let by = format!(
        "drd restore {run_id} on {}",
        crate::store::lease::hostname()
    );
    let (_, pinned) = crate::lambda::pins::record(
        store,
        &lambda,
        target,
        policy.function_name(),
        &up.version,
        invoke,
        &by,
    )
    .await?;
    let active = ActiveRegion {
        region: target.to_string(),
        function_url: up.function_url.clone(),
        point: m.id.clone(),
        since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        by,
    };
    crate::store::active::record(store, &active).await?;
    Ok(FunctionUp { pinned, ..up })
}

/// Publish the restored code, probe the version (Invoke, T0/T1), point `live`, make sure the
/// Function URL exists and passes T0/T1. Writes nothing to the store (a rehearsal stops here).
pub async fn serve(
    aws: &Aws,
    policy: &Policy,
    m: &Manifest,
    target: &str,
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
    let prober = UrlProber::signing(aws).await;
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
    Ok(FunctionUp {
        version: version.version,
        published,
        alias_changed: alias != ops::AliasChange::Unchanged,
        function_url: url,
        url_created,
        pinned: false,
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
    let r = UrlProber::signing(aws).await.probe(&url, Tier::T1).await;
    if !r.ok {
        return Err(Error::failed(format!("{url} fails T1: {}", r.detail)));
    }
    Ok(())
}
