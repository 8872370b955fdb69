//! Actions of procedure 4 (`region-redeploy`): thin wrappers around `crate::restore` and
//! `crate::dns` that turn arguments into calls and results into journaled outputs. No output
//! ever carries a secret value.

use super::{arg, Args, Ctx, Outputs};
use crate::backup::manifest::Manifest;
use crate::error::{Error, Result};

async fn manifest(ctx: &Ctx<'_>, args: &Args) -> Result<Manifest> {
    crate::backup::read_manifest(&ctx.store, arg(args, "point")?).await
}

fn out<const N: usize>(pairs: [(&str, String); N]) -> Outputs {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub async fn preflight(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let target = arg(args, "region")?;
    let sel = args.get("point").map(String::as_str).unwrap_or("latest");
    let identity = args.get("identity").map(String::as_str).unwrap_or("");
    let p =
        crate::restore::preflight(ctx.aws, ctx.policy, &ctx.store, target, sel, identity).await?;
    (ctx.progress)(&format!("store: {}", p.store));
    if p.mode == "repair" {
        (ctx.progress)(&format!(
            "{target} is the primary: repairing it in place from the point (what is intact stays)"
        ));
    }
    (ctx.progress)(&format!(
        "point {} ({}; RPO {}s) captured in {}; live was version {}",
        p.point, p.created_at, p.rpo_seconds, p.point_region, p.live_version
    ));
    for s in &p.skipped {
        (ctx.progress)(&format!("skipped a point that fails verify: {s}"));
    }
    for r in &p.rewrites {
        (ctx.progress)(&format!(
            "will rewrite {}: {} -> {} ({})",
            r.place, r.from, r.to, r.why
        ));
    }
    (ctx.progress)(&format!(
        "primary {}: {}",
        p.primary_region, p.primary_detail
    ));
    if let Some(why) = &p.dns_unreachable {
        (ctx.progress)(&format!(
            "warning: the DNS record was not read, and the dns step will fail until Route 53's control plane answers: {why}"
        ));
    }
    let rewrites: Vec<String> = p
        .rewrites
        .iter()
        .map(|r| format!("{}: {} -> {}", r.place, r.from, r.to))
        .collect();
    Ok(out([
        ("point", p.point),
        ("created_at", p.created_at),
        ("rpo_seconds", p.rpo_seconds.to_string()),
        ("point_region", p.point_region),
        ("live_version", p.live_version),
        ("code_sha256", p.code_sha256),
        ("secret_versions", p.secret_versions.to_string()),
        ("rewrites", rewrites.join("; ")),
        ("stack_exists", p.stack_exists.to_string()),
        ("primary_reachable", p.primary_reachable.to_string()),
        ("primary", p.primary_detail),
        ("skipped_points", p.skipped.len().to_string()),
        (
            "dns_now",
            match (&p.dns_unreachable, p.dns_now) {
                (Some(_), _) => "unknown: Route 53's control plane does not answer".into(),
                (None, now) => now.unwrap_or_default(),
            },
        ),
        ("mode", p.mode.to_string()),
        ("store", p.store),
    ]))
}

pub async fn secrets(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let m = manifest(ctx, args).await?;
    let target = arg(args, "region")?;
    let identity = args.get("identity").map(String::as_str).unwrap_or("");
    let done = crate::restore::restore_secrets(ctx.aws, &ctx.store, &m, identity, target).await?;
    let mut put = 0;
    let mut repairs = vec![];
    for s in &done {
        put += s.versions_put;
        if let Some(v) = &s.kept_newer {
            (ctx.progress)(&format!(
                "secret {} in {target}: kept; its AWSCURRENT (version {v}) is newer than the point (rotate it with drd rotate if it is damaged)",
                s.name
            ));
            repairs.push(format!("{} kept (newer than the point)", s.name));
            continue;
        }
        let what = if s.recovered {
            "recovered from its deletion window (RestoreSecret), "
        } else if s.created {
            "created, "
        } else {
            ""
        };
        (ctx.progress)(&format!(
            "secret {} in {target}: {what}{} version(s) put, {} stage(s) moved",
            s.name, s.versions_put, s.stages_moved
        ));
        if s.recovered {
            repairs.push(format!("{} recovered", s.name));
        } else if s.created {
            repairs.push(format!("{} recreated", s.name));
        } else if s.versions_put + s.stages_moved > 0 {
            repairs.push(format!("{} versions/stages set back", s.name));
        }
    }
    Ok(out([
        ("secrets", done.len().to_string()),
        ("versions_put", put.to_string()),
        (
            "recovered",
            done.iter().filter(|s| s.recovered).count().to_string(),
        ),
        ("repairs", repairs.join("; ")),
    ]))
}

pub async fn secrets_match(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let m = manifest(ctx, args).await?;
    crate::restore::secrets_match(ctx.aws, &m, arg(args, "region")?).await
}

pub async fn code(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let m = manifest(ctx, args).await?;
    let target = arg(args, "region")?;
    let (bucket, key, uploaded) =
        crate::restore::restore_code(ctx.aws, ctx.policy, &ctx.store, &m, target).await?;
    (ctx.progress)(&format!(
        "code package s3://{bucket}/{key}: {}",
        if uploaded {
            "copied from the store"
        } else {
            "already there"
        }
    ));
    Ok(out([
        ("bucket", bucket),
        ("key", key),
        ("uploaded", uploaded.to_string()),
    ]))
}

pub async fn code_present(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let m = manifest(ctx, args).await?;
    crate::restore::code_present(ctx.aws, ctx.policy, &m, arg(args, "region")?).await
}

pub async fn stack(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let m = manifest(ctx, args).await?;
    let target = arg(args, "region")?;
    let (action, status, plan) =
        crate::restore::restore_stack(ctx.aws, ctx.policy, &ctx.store, &m, target, ctx.progress)
            .await?;
    Ok(out([
        ("action", action),
        ("status", status),
        ("rewrites", plan.rewrites.len().to_string()),
    ]))
}

pub async fn stack_matches(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let m = manifest(ctx, args).await?;
    crate::restore::stack_matches(ctx.aws, ctx.policy, &ctx.store, &m, arg(args, "region")?).await
}

pub async fn function(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let m = manifest(ctx, args).await?;
    let target = arg(args, "region")?;
    let up = crate::restore::bring_up_function(
        ctx.aws,
        ctx.policy,
        &ctx.store,
        &m,
        target,
        &ctx.run_id,
        ctx.progress,
    )
    .await?;
    Ok(out([
        ("version", up.version),
        ("published", up.published.to_string()),
        ("function_url", up.function_url.clone()),
        ("url_host", crate::dns::url_host(&up.function_url)),
        ("healthy_at", up.healthy_at),
        ("pinned", up.pinned.to_string()),
    ]))
}

pub async fn function_healthy(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let m = manifest(ctx, args).await?;
    crate::restore::function_healthy(ctx.aws, ctx.policy, &m, arg(args, "region")?).await
}

pub async fn dns_point_at(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    // Without [dns] there is no front door either, so no host: nothing to ask for.
    if ctx.policy.dns.is_none() {
        (ctx.progress)("no [dns] in the policy: nothing to fail over (users reach the new Function URL directly)");
        return Ok(out([
            ("record", "skipped: no [dns] in the policy".to_string()),
            ("changed", "false".into()),
            ("skipped", "true".into()),
        ]));
    }
    let host = arg(args, "host")?;
    // A custom domain's regional target refuses requests for its own name: Route 53's health
    // check must go to the API's endpoint, which the front-door step gives.
    let health_host = match args.get("health_host").map(String::as_str) {
        Some(h) if !h.is_empty() => h,
        _ if host.starts_with("d-") && host.contains(".execute-api.") => {
            return Err(Error::failed_hint(
                format!("{host} is a custom domain's target, and no health_host was given"),
                "pass health_host = \"${steps.front-door.health_host}\" (the API's endpoint)",
            ))
        }
        _ => host,
    };
    let zone = crate::dns::require_zone(ctx.aws, ctx.policy).await?;
    let c = crate::dns::point_at(ctx.aws, ctx.policy, &zone, host, health_host).await?;
    (ctx.progress)(&format!(
        "{} ({:?}): {} -> {}{}",
        c.after.record,
        c.after.mode,
        c.before.primary.as_deref().unwrap_or("nothing"),
        host,
        if c.changed { "" } else { " (already)" }
    ));
    Ok(out([
        ("record", c.after.record),
        ("before", c.before.primary.unwrap_or_default()),
        ("secondary", c.after.secondary.unwrap_or_default()),
        ("changed", c.changed.to_string()),
        ("change_id", c.change_id.unwrap_or_default()),
        ("skipped", "false".into()),
    ]))
}

pub async fn dns_points_at(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    if ctx.policy.dns.is_none() {
        return Ok(());
    }
    let host = arg(args, "host")?;
    let zone = crate::dns::require_zone(ctx.aws, ctx.policy).await?;
    let v = crate::dns::view(ctx.aws, ctx.policy, &zone).await?;
    if v.primary.as_deref() != Some(host) {
        return Err(Error::failed(format!(
            "{} sends users to {}, not {host}",
            v.record,
            v.primary.as_deref().unwrap_or("nothing")
        )));
    }
    Ok(())
}

pub async fn backup_captures(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let m = manifest(ctx, args).await?;
    let region = arg(args, "region")?;
    if m.stack.region != region {
        return Err(Error::failed(format!(
            "point {} captured the stack in {}, not {region}",
            m.id, m.stack.region
        )));
    }
    Ok(())
}

pub async fn failback_preflight(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let standby = crate::restore::failback::standby_of(ctx.policy, &ctx.store).await?;
    let primary = ctx.policy.primary_region().to_string();
    (ctx.progress)(&format!(
        "the service runs in {} since {} (restored from point {}); failing back to {primary}",
        standby.region, standby.since, standby.point
    ));
    let mut pre = args.clone();
    pre.insert("region".into(), primary.clone());
    let o = preflight(ctx, &pre).await?;
    let get = |k: &str| o.get(k).cloned().unwrap_or_default();
    Ok(out([
        ("region", primary),
        ("standby", standby.region),
        ("point", get("point")),
        ("rpo_seconds", get("rpo_seconds")),
        ("primary", get("primary")),
        ("store", get("store")),
    ]))
}

pub async fn retire_standby(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let standby = arg(args, "region")?;
    if !super::flag(args, "retire")? {
        let detail =
            format!("the standby stack in {standby} is kept (pass --retire-standby to delete it)");
        (ctx.progress)(&detail);
        return Ok(out([("retired", "false".into()), ("detail", detail)]));
    }
    let detail =
        crate::restore::failback::retire_standby(ctx.aws, ctx.policy, standby, ctx.progress)
            .await?;
    (ctx.progress)(&detail);
    Ok(out([("retired", "true".into()), ("detail", detail)]))
}

pub async fn standby_retired(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    if !super::flag(args, "retire")? {
        return Ok(());
    }
    crate::restore::failback::standby_gone(ctx.aws, ctx.policy, arg(args, "region")?).await
}
