//! GitHub and backup actions used by the rotation runbook: update the matching GitHub Actions
//! repository secret, take a recovery point that holds the new secret version.

use super::{arg, Args, Ctx, Outputs};
use crate::error::{Error, Result};
use crate::github::GitHub;
use secrecy::{ExposeSecret, SecretString};

/// The token in the `github-token` secret: a bare token or `{"token": "..."}`.
pub(super) fn token_of(raw: &SecretString) -> SecretString {
    let s = raw.expose_secret().trim();
    if s.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
            if let Some(t) = v
                .get("token")
                .or_else(|| v.get("GITHUB_TOKEN"))
                .and_then(|t| t.as_str())
            {
                return SecretString::from(t.to_string());
            }
        }
    }
    SecretString::from(s.to_string())
}

fn mapping<'a>(
    ctx: &'a Ctx<'_>,
    secret: &str,
) -> Option<(&'a crate::policy::GithubPolicy, String)> {
    let gh = ctx.policy.github.as_ref()?;
    let name = gh.secrets.get(secret)?;
    Some((gh, name.clone()))
}

pub async fn update_secret(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let secret = arg(args, "secret")?;
    let Some((gh, name)) = mapping(ctx, secret) else {
        (ctx.progress)(&format!(
            "no GitHub secret is mapped to {secret} in the policy ([github.secrets]): skipped"
        ));
        // Never an empty value in a report: say why nothing happened.
        return Ok(Outputs::from([
            (
                "github_secret".into(),
                format!("skipped: no GitHub secret is mapped to {secret} ([github.secrets])"),
            ),
            ("updated_after".into(), "skipped".into()),
        ]));
    };
    let token = token_of(&super::secret::current_value(ctx, &gh.token_secret).await?);
    let value = super::secret::current_value(ctx, secret).await?;
    let client = GitHub::new(&gh.api_url, token);
    // GitHub reports whole seconds by its own clock: a minute of slack absorbs clock skew.
    let after = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - std::time::Duration::from_secs(60),
    )
    .to_string();
    client
        .put_secret(gh.repository.get_ref(), &name, &value)
        .await?;
    (ctx.progress)(&format!(
        "GitHub secret {name} of {} updated",
        gh.repository.get_ref()
    ));
    Ok(Outputs::from([
        ("github_secret".into(), name),
        ("updated_after".into(), after),
    ]))
}

pub async fn secret_updated(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let secret = arg(args, "secret")?;
    let since = args.get("since").map(String::as_str).unwrap_or("");
    let Some((gh, name)) = mapping(ctx, secret) else {
        return Ok(()); // nothing mapped: nothing to prove
    };
    let token = token_of(&super::secret::current_value(ctx, &gh.token_secret).await?);
    let meta = GitHub::new(&gh.api_url, token)
        .secret(gh.repository.get_ref(), &name)
        .await?;
    let parse = |s: &str| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok();
    if !since.is_empty() && parse(since).is_none() {
        return Err(Error::failed(format!(
            "check argument since = {since:?} is not an RFC 3339 time"
        )));
    }
    match (parse(&meta.updated_at), parse(since)) {
        (Some(u), Some(s)) if u < s => Err(Error::failed(format!(
            "GitHub secret {} was last updated at {}, before this rotation",
            meta.name, meta.updated_at
        ))),
        (None, _) => Err(Error::failed(format!(
            "GitHub secret {}: unreadable updated_at {:?}",
            meta.name, meta.updated_at
        ))),
        _ => Ok(()),
    }
}

pub async fn take_backup(ctx: &Ctx<'_>) -> Result<Outputs> {
    let r = crate::backup::backup(ctx.aws, ctx.policy, ctx.progress).await?;
    Ok(Outputs::from([
        ("point".into(), r.id),
        ("new_blobs".into(), r.new_blobs.to_string()),
    ]))
}

pub async fn has_secret_version(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let point = arg(args, "point")?;
    let secret = arg(args, "secret")?;
    let version = arg(args, "version")?;
    let store = crate::store::open_store_read(ctx.aws, ctx.policy).await?;
    let m = crate::backup::read_manifest(&store, point).await?;
    let found = m
        .secrets
        .iter()
        .filter(|s| s.name == secret)
        .flat_map(|s| s.versions.iter())
        .any(|v| v.version_id == version);
    if !found {
        return Err(Error::failed(format!(
            "recovery point {point} holds no backup of {secret} version {version}"
        )));
    }
    Ok(())
}
