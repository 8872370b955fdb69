//! Secret rotation actions: observe, stage AWSPENDING, prove it through a candidate function
//! version, promote, unstage. Values travel only in memory (`SecretString`); outputs, journal
//! entries and errors carry version ids, never values.

use super::{arg, Args, Ctx, Outputs};
use crate::aws::{aws_error, error_code};
use crate::error::{Error, Result};
use crate::lambda::probe::{self, Tier};
use secrecy::ExposeSecret;
use std::collections::HashMap;

pub const STAGE_ENV: &str = "OPENAI_SECRET_STAGE";

/// Version id -> stages of a secret.
async fn versions(
    sm: &aws_sdk_secretsmanager::Client,
    secret: &str,
) -> Result<Vec<(String, Vec<String>)>> {
    let out = sm
        .list_secret_version_ids()
        .secret_id(secret)
        .send()
        .await
        .map_err(|e| aws_error("secretsmanager", "ListSecretVersionIds", e))?;
    Ok(out
        .versions()
        .iter()
        .map(|v| {
            (
                v.version_id().unwrap_or_default().to_string(),
                v.version_stages().to_vec(),
            )
        })
        .collect())
}

fn with_stage(vs: &[(String, Vec<String>)], stage: &str) -> Option<String> {
    vs.iter()
        .find(|(_, s)| s.iter().any(|x| x == stage))
        .map(|(v, _)| v.clone())
}

fn check_secret(ctx: &Ctx<'_>, secret: &str) -> Result<()> {
    if !ctx.policy.secret_names().iter().any(|s| s == secret) {
        return Err(Error::failed_hint(
            format!("{secret:?} is not a secret of this policy"),
            format!("use one of: {}", ctx.policy.secret_names().join(", ")),
        ));
    }
    Ok(())
}

pub async fn observe(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let secret = arg(args, "secret")?;
    check_secret(ctx, secret)?;
    let sm = ctx.aws.secrets(&ctx.region).await;
    let vs = versions(&sm, secret).await?;
    let current = with_stage(&vs, "AWSCURRENT")
        .ok_or_else(|| Error::failed(format!("secret {secret} has no AWSCURRENT version")))?;
    Ok(Outputs::from([("current_version".into(), current)]))
}

/// Stage the new value as AWSPENDING. A pending version holding the same value is reused, so a
/// resumed run adds no version.
pub async fn stage(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let secret = arg(args, "secret")?;
    check_secret(ctx, secret)?;
    let Some(value) = ctx.secret_value else {
        return Err(Error::failed_hint(
            "the new secret value is needed to stage it",
            "run it as drd rotate SECRET with the new value on stdin (never as an argument)",
        ));
    };
    let body = if secret == ctx.policy.api_key_secret() {
        serde_json::json!({"OPENAI_API_KEY": value.expose_secret()}).to_string()
    } else {
        value.expose_secret().to_string()
    };
    let sm = ctx.aws.secrets(&ctx.region).await;
    let vs = versions(&sm, secret).await?;
    if let Some(p) = with_stage(&vs, "AWSPENDING") {
        let cur = sm
            .get_secret_value()
            .secret_id(secret)
            .version_id(&p)
            .send()
            .await
            .map_err(|e| aws_error("secretsmanager", "GetSecretValue", e))?;
        if cur.secret_string() == Some(body.as_str()) {
            (ctx.progress)(&format!("{secret}: the new value is already staged ({p})"));
            return Ok(Outputs::from([("pending_version".into(), p)]));
        }
    }
    if let Some(c) = with_stage(&vs, "AWSCURRENT") {
        let cur = sm
            .get_secret_value()
            .secret_id(secret)
            .version_id(&c)
            .send()
            .await
            .map_err(|e| aws_error("secretsmanager", "GetSecretValue", e))?;
        if cur.secret_string() == Some(body.as_str()) {
            return Err(Error::failed_hint(
                format!("the new value of {secret} equals its current value ({c})"),
                "give the new value issued by the provider",
            ));
        }
    }
    let out = sm
        .put_secret_value()
        .secret_id(secret)
        .secret_string(body)
        .version_stages("AWSPENDING")
        .send()
        .await
        .map_err(|e| aws_error("secretsmanager", "PutSecretValue", e))?;
    let v = out.version_id().unwrap_or_default().to_string();
    (ctx.progress)(&format!("{secret}: new value staged as AWSPENDING ({v})"));
    Ok(Outputs::from([("pending_version".into(), v)]))
}

pub async fn stage_is(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let secret = arg(args, "secret")?;
    let stage = arg(args, "stage")?;
    let version = arg(args, "version")?;
    let sm = ctx.aws.secrets(&ctx.region).await;
    match with_stage(&versions(&sm, secret).await?, stage) {
        Some(v) if v == version => Ok(()),
        Some(v) => Err(Error::failed(format!(
            "{stage} of {secret} is on version {v}, not {version}"
        ))),
        None => Err(Error::failed(format!("{secret} has no {stage} version"))),
    }
}

/// Prove the pending value through the function itself: publish a candidate version whose
/// environment reads AWSPENDING, restore `$LATEST` at once, and probe the candidate T2 by
/// invoking it (one LLM call with the pending key).
pub async fn prove_pending(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let secret = arg(args, "secret")?;
    if secret != ctx.policy.api_key_secret() {
        // The function reads only the API key: nothing it runs can prove another secret.
        (ctx.progress)(&format!(
            "{secret} is not read by the function: no candidate version to prove it with"
        ));
        return Ok(Outputs::from([(
            "candidate_version".into(),
            format!("skipped: the function does not read {secret}"),
        )]));
    }
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let f = ctx.function();
    let conf = lambda
        .get_function_configuration()
        .function_name(f)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetFunctionConfiguration", e))?;
    let mut env: HashMap<String, String> = conf
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    // The original environment, even if an interrupted run left the marker behind.
    env.remove(STAGE_ENV);
    let original = env.clone();
    env.insert(STAGE_ENV.into(), "AWSPENDING".into());
    let set_env = |vars: HashMap<String, String>| {
        let lambda = lambda.clone();
        async move {
            lambda
                .update_function_configuration()
                .function_name(f)
                .environment(
                    aws_sdk_lambda::types::Environment::builder()
                        .set_variables(Some(vars))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| aws_error("lambda", "UpdateFunctionConfiguration", e))
        }
    };
    set_env(env).await?;
    // Lambda applies configuration updates asynchronously: publish only once it is done.
    let published = match crate::lambda::ops::wait_updated(&lambda, f).await {
        Ok(()) => lambda
            .publish_version()
            .function_name(f)
            .description("drd secret-rotation candidate (reads AWSPENDING)")
            .send()
            .await
            .map_err(|e| aws_error("lambda", "PublishVersion", e)),
        Err(e) => Err(e),
    };
    // Restore $LATEST whatever happened, retrying while an update is still in progress.
    let mut restored = Err(Error::failed("not attempted"));
    for _ in 0..10 {
        let _ = crate::lambda::ops::wait_updated(&lambda, f).await;
        restored = set_env(original.clone()).await.map(|_| ());
        if restored.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    if let Err(e) = restored {
        return Err(Error::failed_hint(
            format!("$LATEST of {f} still has {STAGE_ENV}=AWSPENDING: restoring it failed: {e}"),
            format!("remove {STAGE_ENV} from the function's environment before the next deploy, then resume"),
        ));
    }
    crate::lambda::ops::wait_updated(&lambda, f).await?;
    let candidate = published?.version().unwrap_or_default().to_string();
    let data = ctx.aws.lambda_data(&ctx.region).await;
    let r = probe::probe_invoke(&data, f, &candidate, Tier::T2).await;
    if !r.ok {
        return Err(Error::failed_hint(
            format!(
                "candidate version {candidate} (reading AWSPENDING) failed probe T2: {}",
                r.detail
            ),
            "the new key does not work: check it with the provider; AWSCURRENT is unchanged",
        ));
    }
    (ctx.progress)(&format!(
        "candidate version {candidate} with the pending key passed T2"
    ));
    Ok(Outputs::from([("candidate_version".into(), candidate)]))
}

/// `$LATEST` carries no rotation marker (the candidate's environment change was undone).
pub async fn latest_clean(ctx: &Ctx<'_>, _args: &Args) -> Result<()> {
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let conf = lambda
        .get_function_configuration()
        .function_name(ctx.function())
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetFunctionConfiguration", e))?;
    let marked = conf
        .environment()
        .and_then(|e| e.variables())
        .is_some_and(|v| v.contains_key(STAGE_ENV));
    if marked {
        return Err(Error::failed(format!("$LATEST still has {STAGE_ENV} set")));
    }
    Ok(())
}

/// Move AWSCURRENT to the pending version (the old one becomes AWSPREVIOUS) and drop the
/// AWSPENDING label. Already promoted: nothing to do.
pub async fn promote(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let secret = arg(args, "secret")?;
    let version = arg(args, "version")?;
    let sm = ctx.aws.secrets(&ctx.region).await;
    let vs = versions(&sm, secret).await?;
    let current = with_stage(&vs, "AWSCURRENT");
    let mut changed = false;
    if current.as_deref() != Some(version) {
        let mut req = sm
            .update_secret_version_stage()
            .secret_id(secret)
            .version_stage("AWSCURRENT")
            .move_to_version_id(version);
        if let Some(c) = &current {
            req = req.remove_from_version_id(c);
        }
        req.send()
            .await
            .map_err(|e| aws_error("secretsmanager", "UpdateSecretVersionStage", e))?;
        changed = true;
        (ctx.progress)(&format!("{secret}: AWSCURRENT -> {version}"));
    }
    if with_stage(&versions(&sm, secret).await?, "AWSPENDING").as_deref() == Some(version) {
        unstage_version(&sm, secret, version).await?;
    }
    Ok(Outputs::from([
        (
            "previous_version".into(),
            if changed {
                current.unwrap_or_default()
            } else {
                String::new()
            },
        ),
        ("changed".into(), changed.to_string()),
    ]))
}

async fn unstage_version(
    sm: &aws_sdk_secretsmanager::Client,
    secret: &str,
    version: &str,
) -> Result<()> {
    match sm
        .update_secret_version_stage()
        .secret_id(secret)
        .version_stage("AWSPENDING")
        .remove_from_version_id(version)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("InvalidParameterException") => Ok(()),
        Err(e) => Err(aws_error("secretsmanager", "UpdateSecretVersionStage", e)),
    }
}

/// Remove AWSPENDING from a version (compensation of a failed proof).
pub async fn unstage(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let secret = arg(args, "secret")?;
    let version = arg(args, "version")?;
    let sm = ctx.aws.secrets(&ctx.region).await;
    if with_stage(&versions(&sm, secret).await?, "AWSPENDING").as_deref() == Some(version) {
        unstage_version(&sm, secret, version).await?;
        (ctx.progress)(&format!("{secret}: AWSPENDING removed from {version}"));
    }
    Ok(Outputs::new())
}

pub async fn stage_absent(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let secret = arg(args, "secret")?;
    let stage = arg(args, "stage")?;
    let sm = ctx.aws.secrets(&ctx.region).await;
    match with_stage(&versions(&sm, secret).await?, stage) {
        None => Ok(()),
        Some(v) => Err(Error::failed(format!("{secret} still has {stage} on {v}"))),
    }
}

/// The current value of a secret, as the GitHub secret should hold it (the bare key for the
/// API-key secret).
pub async fn current_value(ctx: &Ctx<'_>, secret: &str) -> Result<secrecy::SecretString> {
    let sm = ctx.aws.secrets(&ctx.region).await;
    let out = sm
        .get_secret_value()
        .secret_id(secret)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|e| aws_error("secretsmanager", "GetSecretValue", e))?;
    let raw = out.secret_string().unwrap_or_default();
    if secret == ctx.policy.api_key_secret() {
        crate::deploy::parse_api_key(raw, secret, secret)
    } else {
        Ok(secrecy::SecretString::from(raw.to_string()))
    }
}
