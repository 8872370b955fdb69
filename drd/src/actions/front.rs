//! The front-door step of the region runbooks (`region-redeploy`, `failback`): make the region's
//! API Gateway front door serve the service's name (`crate::frontdoor`) before the DNS step moves
//! users to it. Regional control planes only: API Gateway, ACM and Lambda in that region.

use super::{arg, ActionSpec, Args, Ctx, Outputs};
use crate::error::{Error, Result};
use crate::lambda::probe::{Tier, UrlProber};

pub const ACTIONS: &[ActionSpec] = &[ActionSpec {
    name: "front_door.ensure",
    summary: "Create what is missing of the region's front door (HTTP API on `live`, the \
              `$default` route and stage, the invoke permission, the custom domain with the \
              region's ACM certificate, its mapping) and read it back. Without [front_door] in \
              the policy: skipped, and reported.",
    required: &["region"],
    optional: &[],
    outputs: &[
        "api_id",
        "endpoint",
        "target",
        "health_host",
        "changes",
        "skipped",
    ],
    writes: true,
    suggested_check: Some("front_door.serves"),
}];

pub const CHECKS: &[ActionSpec] = &[ActionSpec {
    name: "front_door.serves",
    summary: "The region's front door is complete and its endpoint passes T0 and T1 (no \
              [front_door]: nothing to prove).",
    required: &["region"],
    optional: &[],
    outputs: &[],
    writes: false,
    suggested_check: None,
}];

pub async fn run(ctx: &Ctx<'_>, name: &str, args: &Args) -> Result<Outputs> {
    match name {
        "front_door.ensure" => ensure(ctx, args).await,
        other => Err(Error::failed(format!("unknown action {other}"))),
    }
}

pub async fn check(ctx: &Ctx<'_>, name: &str, args: &Args) -> Result<()> {
    match name {
        "front_door.serves" => serves(ctx, args).await,
        other => Err(Error::failed(format!("unknown check {other}"))),
    }
}

pub fn describe(name: &str, args: &Args) -> String {
    let region = args.get("region").map(String::as_str).unwrap_or("?");
    match name {
        "front_door.ensure" => format!("make the front door in {region} serve the service's name"),
        other => other.to_string(),
    }
}

fn out(pairs: &[(&str, String)]) -> Outputs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

async fn ensure(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let region = arg(args, "region")?;
    if ctx.policy.front_door.is_none() {
        (ctx.progress)("no [front_door] in the policy: users reach the function by its URL");
        return Ok(out(&[
            ("target", String::new()),
            ("health_host", String::new()),
            ("skipped", "true".into()),
        ]));
    }
    let (door, changes) = crate::frontdoor::ensure(ctx.aws, ctx.policy, region).await?;
    (ctx.progress)(&format!(
        "front door in {region}: {} -> API {} ({}){}",
        door.domain,
        door.api_id,
        door.target,
        if changes.is_empty() {
            " (already)".to_string()
        } else {
            format!(": {}", changes.join(", "))
        }
    ));
    Ok(out(&[
        ("api_id", door.api_id.clone()),
        ("endpoint", door.endpoint.clone()),
        ("health_host", door.health_host()),
        ("target", door.target),
        ("changes", changes.join("; ")),
        ("skipped", "false".into()),
    ]))
}

async fn serves(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let region = arg(args, "region")?;
    if ctx.policy.front_door.is_none() {
        return Ok(());
    }
    let door = crate::frontdoor::view(ctx.aws, ctx.policy, region)
        .await?
        .ok_or_else(|| Error::failed(format!("the front door in {region} is not complete")))?;
    let prober = UrlProber::signing(ctx.aws).await;
    for t in [Tier::T0, Tier::T1] {
        let r = prober.probe(&format!("{}/", door.endpoint), t).await;
        if !r.ok {
            return Err(Error::failed(format!(
                "the front door in {region} failed probe {t:?}: {}",
                r.detail
            )));
        }
    }
    Ok(())
}
