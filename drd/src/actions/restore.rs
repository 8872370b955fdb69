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
        ("dns_now", p.dns_now.unwrap_or_default()),
    ]))
}

pub async fn secrets(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let m = manifest(ctx, args).await?;
    let target = arg(args, "region")?;
    let identity = args.get("identity").map(String::as_str).unwrap_or("");
    let done = crate::restore::restore_secrets(ctx.aws, &ctx.store, &m, identity, target).await?;
    let mut put = 0;
    for s in &done {
        put += s.versions_put;
        (ctx.progress)(&format!(
            "secret {} in {target}: {}{} version(s) put, {} stage(s) moved",
            s.name,
            if s.created { "created, " } else { "" },
            s.versions_put,
            s.stages_moved
        ));
    }
    Ok(out([
        ("secrets", done.len().to_string()),
        ("versions_put", put.to_string()),
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
    let host = arg(args, "host")?;
    if ctx.policy.dns.is_none() {
        (ctx.progress)("no [dns] in the policy: nothing to fail over (users reach the new Function URL directly)");
        return Ok(out([
            ("record", String::new()),
            ("changed", "false".into()),
            ("skipped", "true".into()),
        ]));
    }
    let zone = crate::dns::require_zone(ctx.aws, ctx.policy).await?;
    let c = crate::dns::point_at(ctx.aws, ctx.policy, &zone, host).await?;
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
    let host = arg(args, "host")?;
    if ctx.policy.dns.is_none() {
        return Ok(());
    }
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
