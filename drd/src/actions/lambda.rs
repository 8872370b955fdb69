//! Lambda actions and checks: observe, choose a rollback target, verify code, move `live`, pin,
//! and probe through the Function URL.

use super::{arg, flag, Args, Ctx, Outputs};
use crate::error::{Error, Result};
use crate::lambda::pins::{self, Pin};
use crate::lambda::probe::{Tier, UrlProber};
use crate::lambda::{ops, LIVE_ALIAS};

pub async fn observe(ctx: &Ctx<'_>) -> Result<Outputs> {
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let f = ctx.function();
    let live = ops::live_version(&lambda, f).await?.ok_or_else(|| {
        Error::failed_hint(
            format!("{f} has no `{LIVE_ALIAS}` alias in {}", ctx.region),
            "deploy it first with drd deploy",
        )
    })?;
    let sha = ops::code_sha256(&lambda, f, &live).await?;
    let url = ops::function_url(&lambda, f).await?.unwrap_or_default();
    Ok(Outputs::from([
        ("live_version".into(), live),
        ("code_sha256".into(), sha),
        ("function_url".into(), url),
    ]))
}

pub async fn choose_rollback_target(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let current = arg(args, "current")?;
    let force = flag(args, "force")?;
    let file = pins::load(&ctx.store, ctx.function()).await?;
    let (target, sha, pinned) = match args.get("to").filter(|s| !s.is_empty()) {
        Some(to) => {
            if to.parse::<u64>().is_err() {
                return Err(Error::failed_hint(
                    format!("--to {to:?} is not a published version number"),
                    "name a version such as 2 (see drd status)",
                ));
            }
            match file.get(&ctx.region, to) {
                Some(p) => (to.clone(), p.code_sha256.clone(), true),
                None if force => {
                    let lambda = ctx.aws.lambda(&ctx.region).await;
                    let sha = ops::code_sha256(&lambda, ctx.function(), to).await?;
                    (to.clone(), sha, false)
                }
                None => {
                    return Err(Error::failed_hint(
                        format!("version {to} is not pinned as known-good"),
                        format!(
                            "pin it after checking it (drd pin --version {to}) or pass --force"
                        ),
                    ))
                }
            }
        }
        None => match file.newest_before(&ctx.region, current) {
            Some(p) => (p.version.clone(), p.code_sha256.clone(), true),
            None => {
                return Err(Error::failed_hint(
                    format!(
                        "no pinned version is older than the live version {current} (pinned: {})",
                        {
                            let v: Vec<&str> = file
                                .in_region(&ctx.region)
                                .map(|p| p.version.as_str())
                                .collect();
                            if v.is_empty() {
                                "none".to_string()
                            } else {
                                v.join(", ")
                            }
                        }
                    ),
                    "name a version with --to N --force, or redeploy a known-good build",
                ))
            }
        },
    };
    if target == current {
        return Err(Error::failed_hint(
            format!("version {target} is already live"),
            "name another version with --to",
        ));
    }
    Ok(Outputs::from([
        ("target".into(), target),
        ("code_sha256".into(), sha),
        ("pinned".into(), pinned.to_string()),
    ]))
}

pub async fn verify_code(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let version = arg(args, "version")?;
    let want = arg(args, "code_sha256")?;
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let got = ops::code_sha256(&lambda, ctx.function(), version).await?;
    if got != want {
        return Err(Error::failed_hint(
            format!("version {version} has CodeSha256 {got}, not the pinned {want}"),
            "the version's code is not what was pinned: pick another version with --to",
        ));
    }
    Ok(())
}

pub async fn point_alias(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let version = arg(args, "version")?;
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let change = ops::point_live(&lambda, ctx.function(), version).await?;
    let (previous, changed) = match change {
        ops::AliasChange::Created => (String::new(), true),
        ops::AliasChange::Moved { from } => (from, true),
        ops::AliasChange::Unchanged => (String::new(), false),
    };
    (ctx.progress)(&format!(
        "alias live -> {version}{}",
        if changed {
            format!(" (was {previous})")
        } else {
            " (already there)".into()
        }
    ));
    Ok(Outputs::from([
        ("previous".into(), previous),
        ("changed".into(), changed.to_string()),
    ]))
}

pub async fn alias_is(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let version = arg(args, "version")?;
    let lambda = ctx.aws.lambda(&ctx.region).await;
    match ops::live_version(&lambda, ctx.function()).await? {
        Some(v) if v == version => Ok(()),
        Some(v) => Err(Error::failed(format!(
            "live points to version {v}, not {version}"
        ))),
        None => Err(Error::failed("the live alias does not exist")),
    }
}

fn tiers(args: &Args) -> Result<Vec<Tier>> {
    let raw = args.get("tiers").map(String::as_str).unwrap_or("T0,T1");
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|t| match t {
            "T0" => Ok(Tier::T0),
            "T1" => Ok(Tier::T1),
            "T2" => Ok(Tier::T2),
            other => Err(Error::failed(format!(
                "probe tier {other:?} is unknown (use T0, T1, T2)"
            ))),
        })
        .collect()
}

pub async fn probe_url(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let url = ops::function_url(&lambda, ctx.function())
        .await?
        .ok_or_else(|| Error::failed("the live alias has no Function URL"))?;
    let prober = UrlProber::signing(ctx.aws).await;
    let mut latency = 0;
    let tiers = tiers(args)?;
    for t in &tiers {
        let r = prober.probe(&url, *t).await;
        latency += r.latency_ms;
        if !r.ok {
            return Err(Error::failed(format!(
                "the Function URL failed probe {t:?}: {}",
                r.detail
            )));
        }
    }
    (ctx.progress)(&format!("Function URL healthy ({tiers:?}, {latency} ms)"));
    Ok(Outputs::from([
        (
            "tiers".into(),
            tiers
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("latency_ms".into(), latency.to_string()),
    ]))
}

/// Probe `version` by invoking it and record it in `pins/`. Re-pinning an unchanged, already
/// pinned version writes nothing.
pub async fn pin(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let version = arg(args, "version")?;
    let deep = flag(args, "deep")?;
    let out = pin_version(ctx, version, deep).await?;
    Ok(Outputs::from([
        ("code_sha256".into(), out.pin.code_sha256),
        ("config_digest".into(), out.pin.config_digest),
    ]))
}

pub struct PinOutcome {
    pub pin: Pin,
    pub written: bool,
}

pub async fn pin_version(ctx: &Ctx<'_>, version: &str, deep: bool) -> Result<PinOutcome> {
    if version.parse::<u64>().is_err() {
        return Err(Error::failed_hint(
            format!("{version:?} is not a published version number"),
            "pin a number such as 2; $LATEST and aliases move",
        ));
    }
    let f = ctx.function();
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let data = ctx.aws.lambda_data(&ctx.region).await;
    let probes = pins::probe_version(&data, f, version, deep)
        .await
        .map_err(|(_, why)| {
            Error::failed_hint(why, "a version that fails its probes is never pinned")
        })?;
    let (pin, written) = pins::record(
        &ctx.store,
        &lambda,
        &ctx.region,
        f,
        version,
        probes,
        &ctx.run_id,
    )
    .await?;
    if written {
        (ctx.progress)(&format!("pinned version {version}"));
    }
    Ok(PinOutcome { pin, written })
}

pub async fn pin_exists(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let version = arg(args, "version")?;
    let file = pins::load(&ctx.store, ctx.function()).await?;
    let Some(p) = file.get(&ctx.region, version) else {
        return Err(Error::failed(format!("version {version} is not pinned")));
    };
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let (sha, _) = pins::version_identity(&lambda, ctx.function(), version).await?;
    if sha != p.code_sha256 {
        return Err(Error::failed(format!(
            "version {version} is pinned with CodeSha256 {} but now has {sha}",
            p.code_sha256
        )));
    }
    Ok(())
}
