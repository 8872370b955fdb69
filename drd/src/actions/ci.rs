//! CI failover actions (procedure 5, runbooks `ci-failover` and `ci-failback`): the preflight,
//! the standby pipeline, the CI epoch, the mirrored source in the pipeline's bucket and the
//! execution that deploys it, and the check that `live` runs the commit. The GitHub side
//! (disable, push, dispatch, reconcile) is in `ci_github.rs`.

use super::{arg, Args, Ctx, Outputs};
use crate::aws::aws_error;
use crate::ci::mirror::{self, MirrorManifest};
use crate::error::{Error, Result};
use crate::store::ci_epoch::{self, Provider};
use aws_sdk_codepipeline::types::{
    PipelineExecutionStatus as Pes, PipelineVariable, SourceRevisionOverride, SourceRevisionType,
    StageRetryMode,
};
use std::time::{Duration, SystemTime};

/// The pipeline variable the deploy stage reads (classifier/ci/pipeline.yaml).
pub const COMMIT_VARIABLE: &str = "COMMIT_SHA";
/// Object metadata on the uploaded source zip (for idempotence and the check).
const META_COMMIT: &str = "drd-commit";
const META_SHA256: &str = "drd-zip-sha256";

fn to_of(args: &Args) -> Result<Provider> {
    Provider::parse(arg(args, "to")?)
}

fn age_secs(rfc3339: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z'))
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs())
}

/// The mirror manifest whose deploy-branch head is `commit` (`latest`: the newest manifest).
pub(super) async fn mirrored(ctx: &Ctx<'_>, commit: &str) -> Result<(MirrorManifest, String)> {
    let newest = mirror::newest(&ctx.store).await?.ok_or_else(|| {
        Error::failed_hint(
            "the store holds no mirror of the workload's repository: CodePipeline has nothing to build",
            "run drd mirror while GitHub answers (the daemon's mirror job keeps it fresh), or drd mirror push --from CLONE",
        )
    })?;
    let (pointer, m, _) = newest;
    if commit == "latest" || commit == m.head {
        return Ok((m, pointer.fetched_at));
    }
    let sha = crate::lambda::commits::parse_commit(commit)?;
    let prefix = format!("{}mirror/manifests/", ctx.store.prefix);
    let mut found: Option<MirrorManifest> = None;
    for (key, _) in ctx.store.list(&prefix).await? {
        let Some(b) = ctx.store.get(&key).await? else {
            continue;
        };
        let Ok(x) = serde_json::from_slice::<MirrorManifest>(&b) else {
            continue;
        };
        if x.head == sha && found.as_ref().is_none_or(|f| x.created_at > f.created_at) {
            found = Some(x);
        }
    }
    match found {
        Some(x) => {
            let at = x.fetched_at.clone();
            Ok((x, at))
        }
        None => Err(Error::failed_hint(
            format!(
                "commit {sha} is not the head of {} in any mirror manifest (the newest mirrors {})",
                m.branch, m.head
            ),
            format!(
                "deploy the mirrored head with --commit latest, or mirror that commit first: check it out as {} in a clone and run drd mirror push --from CLONE",
                m.branch
            ),
        )),
    }
}

/// The pipeline's S3 source action: (action name, bucket, object key).
async fn source_of(
    cp: &aws_sdk_codepipeline::Client,
    name: &str,
) -> Result<Option<(String, String, String)>> {
    let p = match cp.get_pipeline().name(name).send().await {
        Ok(p) => p,
        Err(e) if crate::aws::error_code(&e) == Some("PipelineNotFoundException") => {
            return Ok(None)
        }
        Err(e) => return Err(aws_error("codepipeline", "GetPipeline", e)),
    };
    let found = p
        .pipeline()
        .map(|d| d.stages())
        .unwrap_or_default()
        .iter()
        .flat_map(|s| s.actions())
        .find(|a| a.action_type_id().is_some_and(|t| t.provider() == "S3"))
        .and_then(|a| {
            let c = a.configuration()?;
            Some((
                a.name().to_string(),
                c.get("S3Bucket")?.clone(),
                c.get("S3ObjectKey")?.clone(),
            ))
        });
    match found {
        Some(f) => Ok(Some(f)),
        None => Err(Error::failed_hint(
            format!("pipeline {name} has no S3 source action with S3Bucket and S3ObjectKey"),
            "install the standby pipeline from the workload's template: drd ci install",
        )),
    }
}

fn pipeline_name(ctx: &Ctx<'_>) -> Result<String> {
    Ok(crate::ci::names(ctx.policy, &ctx.region)?.pipeline)
}

/// Preflight, no writes: the epoch, GitHub, the mirror and its age (the CI RPO), the commit,
/// and for CodePipeline the standby pipeline.
pub async fn preflight(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let to = to_of(args)?;
    let commit = args
        .get("commit")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("latest");
    let mut out = Outputs::new();
    out.insert("to".into(), to.to_string());
    let (epoch, _) = ci_epoch::read(&ctx.store).await?;
    out.insert("provider_now".into(), epoch.provider.to_string());
    out.insert("epoch_now".into(), epoch.epoch.to_string());
    out.insert("reconcile_open".into(), epoch.reconcile.len().to_string());
    super::ci_github::require_section(ctx)?;
    let github = super::ci_github::reachable(ctx).await;
    (ctx.progress)(&format!(
        "GitHub: {}",
        github
            .as_ref()
            .map_or_else(|e| format!("unreachable ({e})"), |_| "reachable".into())
    ));
    out.insert(
        "github".into(),
        match &github {
            Ok(()) => "reachable".into(),
            Err(e) => format!("unreachable: {e}"),
        },
    );
    let (m, fetched_at) = mirrored(ctx, commit).await?;
    let age = age_secs(&fetched_at).map_or_else(
        || format!("unknown (fetched_at {fetched_at:?} is unreadable or ahead of this clock)"),
        |a| a.to_string(),
    );
    (ctx.progress)(&format!(
        "mirror {}: {} at {} (fetched {fetched_at}, {age}s ago, from {})",
        m.id, m.branch, m.head, m.source
    ));
    out.insert("manifest".into(), m.id.clone());
    out.insert("commit".into(), m.head.clone());
    out.insert("branch".into(), m.branch.clone());
    out.insert("mirror_fetched_at".into(), fetched_at);
    out.insert("mirror_age_s".into(), age);
    match to {
        Provider::Codepipeline => {
            let name = pipeline_name(ctx)?;
            let cp = ctx.aws.codepipeline(&ctx.region).await;
            let state = match source_of(&cp, &name).await? {
                Some((_, bucket, key)) => format!("installed (source s3://{bucket}/{key})"),
                None => "missing: the next step installs it".into(),
            };
            (ctx.progress)(&format!(
                "standby pipeline {name} in {}: {state}",
                ctx.region
            ));
            out.insert("pipeline".into(), name);
            out.insert("pipeline_state".into(), state);
        }
        Provider::Github => {
            if let Err(e) = github {
                return Err(Error::failed_hint(
                    format!("GitHub is not reachable, so CI cannot move back to it: {e}"),
                    "wait until GitHub answers (githubstatus.com), then run drd failover-ci --to github again",
                ));
            }
        }
    }
    Ok(out)
}

/// Install (or converge) the standby pipeline, as `drd ci install` does.
pub async fn install(ctx: &Ctx<'_>) -> Result<Outputs> {
    let r = crate::ci::install(ctx.aws, ctx.policy, &ctx.region, ctx.progress).await?;
    Ok(Outputs::from([
        ("pipeline".into(), r.pipeline),
        ("stack_action".into(), r.stack_action),
        ("source_bucket".into(), r.source_bucket),
    ]))
}

pub async fn pipeline_ready(ctx: &Ctx<'_>, _args: &Args) -> Result<()> {
    let name = pipeline_name(ctx)?;
    let cp = ctx.aws.codepipeline(&ctx.region).await;
    let Some((_, bucket, _)) = source_of(&cp, &name).await? else {
        return Err(Error::failed(format!(
            "pipeline {name} does not exist in {}",
            ctx.region
        )));
    };
    let v = ctx
        .aws
        .s3(&ctx.region)
        .await
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .map_err(|e| aws_error("s3", "GetBucketVersioning", e))?;
    if v.status().map(|s| s.as_str()) != Some("Enabled") {
        return Err(Error::failed_hint(
            format!("the source bucket {bucket} of {name} is not versioned: an execution could not be pinned to one zip"),
            "enable versioning on it (classifier/ci/pipeline.yaml does)",
        ));
    }
    Ok(())
}

/// Give the CI epoch to `to`, under the lease every provider-checked deploy holds.
pub async fn take_epoch(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let to = to_of(args)?;
    let by = format!("drd failover-ci on {}", crate::store::lease::hostname());
    let mut lease = crate::store::lease::Lease::acquire_waiting(
        &ctx.store,
        ci_epoch::LEASE,
        &format!("drd failover-ci --to {to} (run {})", ctx.run_id),
        crate::backup::LEASE_TTL,
        Duration::from_secs(3600),
        ctx.progress,
    )
    .await?;
    // Renewed while it runs: a switch that outlives its lease stops, never lands after a
    // deploy took the lease and read the old epoch.
    let r = match lease
        .guard(ci_epoch::switch(&ctx.store, to, &ctx.run_id, &by))
        .await
    {
        Ok(r) => r,
        Err(lost) => Err(Error::failed(format!(
            "the switch stopped: the lease {} was lost ({})",
            lost.key, lost.why
        ))),
    };
    let released = lease.release().await;
    let (rec, changed) = r?;
    released?;
    (ctx.progress)(&format!(
        "CI epoch {}: {to}{}",
        rec.epoch,
        if changed { " (switched)" } else { " (already)" }
    ));
    Ok(Outputs::from([
        ("epoch".into(), rec.epoch.to_string()),
        ("provider".into(), rec.provider.to_string()),
        ("since".into(), rec.since),
        ("switched".into(), changed.to_string()),
    ]))
}

pub async fn epoch_is(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let to = to_of(args)?;
    let (rec, _) = ci_epoch::read(&ctx.store).await?;
    if rec.provider != to {
        return Err(Error::failed(format!(
            "the CI epoch ({}) is held by {}, not {to}",
            rec.epoch, rec.provider
        )));
    }
    Ok(())
}

/// Put the mirrored zip into the pipeline's source bucket as a new object version (or find the
/// version an earlier attempt put there).
pub async fn upload_source(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let commit = arg(args, "commit")?;
    let (m, _) = mirrored(ctx, commit).await?;
    let name = pipeline_name(ctx)?;
    let cp = ctx.aws.codepipeline(&ctx.region).await;
    let (_, bucket, key) = source_of(&cp, &name)
        .await?
        .ok_or_else(|| Error::failed(format!("pipeline {name} does not exist")))?;
    let s3 = ctx.aws.s3(&ctx.region).await;
    let out = |version: String, uploaded: bool| {
        Outputs::from([
            ("bucket".into(), bucket.clone()),
            ("key".into(), key.clone()),
            ("version_id".into(), version),
            ("uploaded".into(), uploaded.to_string()),
        ])
    };
    // The current object already this zip for this commit: an earlier attempt put it there.
    if let Ok(h) = s3.head_object().bucket(&bucket).key(&key).send().await {
        let meta = h.metadata();
        if meta.and_then(|x| x.get(META_COMMIT)) == Some(&m.head)
            && meta.and_then(|x| x.get(META_SHA256)) == Some(&m.zip.sha256)
        {
            if let Some(v) = h.version_id() {
                (ctx.progress)(&format!(
                    "s3://{bucket}/{key} version {v} already holds {}",
                    m.head
                ));
                return Ok(out(v.to_string(), false));
            }
        }
    }
    let spool = crate::ci::run::download(&ctx.store, &m.zip.sha256).await?;
    let (hex, size) = mirror::hash_file(&spool)?;
    if hex != m.zip.sha256 {
        return Err(Error::failed_hint(
            format!(
                "the mirrored zip {} hashes to {hex}, not {}: refusing to build it",
                ctx.store.blob_key(&m.zip.sha256),
                m.zip.sha256
            ),
            "run drd verify --mirror, then drd mirror --force (or push --from a clone)",
        ));
    }
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&spool)
        .await
        .map_err(|e| Error::failed(format!("reading the spooled zip: {e}")))?;
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .content_length(size as i64)
        .metadata(META_COMMIT, &m.head)
        .metadata(META_SHA256, &m.zip.sha256)
        .metadata("drd-mirror-manifest", &m.id)
        .body(body)
        .send()
        .await
        .map_err(|e| aws_error("s3", "PutObject", e))?;
    let version = put.version_id().map(str::to_string).ok_or_else(|| {
        Error::failed_hint(
            format!("s3://{bucket}/{key} returned no version id: the bucket is not versioned"),
            "enable versioning on the source bucket (drd ci install does)",
        )
    })?;
    (ctx.progress)(&format!(
        "put {} ({size} bytes) as s3://{bucket}/{key} version {version}",
        m.head
    ));
    Ok(out(version, true))
}

pub async fn source_present(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let (bucket, key, version, commit) = (
        arg(args, "bucket")?,
        arg(args, "key")?,
        arg(args, "version_id")?,
        arg(args, "commit")?,
    );
    let h = ctx
        .aws
        .s3(&ctx.region)
        .await
        .head_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await
        .map_err(|e| aws_error("s3", "HeadObject", e))?;
    let got = h.metadata().and_then(|m| m.get(META_COMMIT)).cloned();
    let (m, _) = mirrored(ctx, commit).await?;
    if got.as_deref() != Some(m.head.as_str()) {
        return Err(Error::failed(format!(
            "s3://{bucket}/{key} version {version} is commit {got:?}, not {}",
            m.head
        )));
    }
    Ok(())
}

/// An execution still running exactly `version` with `commit` (started by someone else, or by
/// this run before a crash once its Source stage read the version).
async fn find_execution(
    cp: &aws_sdk_codepipeline::Client,
    name: &str,
    version: &str,
    commit: &str,
) -> Result<Option<(String, Pes)>> {
    let list = cp
        .list_pipeline_executions()
        .pipeline_name(name)
        .max_results(20)
        .send()
        .await
        .map_err(|e| aws_error("codepipeline", "ListPipelineExecutions", e))?;
    for s in list.pipeline_execution_summaries() {
        let Some(id) = s.pipeline_execution_id() else {
            continue;
        };
        let e = cp
            .get_pipeline_execution()
            .pipeline_name(name)
            .pipeline_execution_id(id)
            .send()
            .await
            .map_err(|e| aws_error("codepipeline", "GetPipelineExecution", e))?;
        let Some(x) = e.pipeline_execution() else {
            continue;
        };
        let on_version = x
            .artifact_revisions()
            .iter()
            .any(|r| r.revision_id() == Some(version));
        let on_commit = x
            .variables()
            .iter()
            .any(|v| v.name() == Some(COMMIT_VARIABLE) && v.resolved_value() == Some(commit));
        let status = x.status().cloned().unwrap_or(Pes::InProgress);
        // Only one that still runs is taken over: a finished one belongs to an earlier run
        // (this run's own is found again by its request token).
        if on_version && on_commit && matches!(status, Pes::InProgress | Pes::Stopping) {
            return Ok(Some((id.to_string(), status)));
        }
    }
    Ok(None)
}

/// `clientRequestToken` of StartPipelineExecution (`[a-zA-Z0-9-]{1,128}`).
fn request_token(run_id: &str, version: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{run_id}\n{version}").as_bytes());
    format!("drd-{}", &hex::encode(h)[..40])
}

fn poll_of(args: &Args) -> Result<Duration> {
    match args.get("poll").filter(|s| !s.is_empty()) {
        Some(p) => humantime::parse_duration(p)
            .map_err(|e| Error::failed(format!("poll {p:?} is not a duration: {e}"))),
        None => Ok(Duration::from_secs(5)),
    }
}

/// Start the pipeline on exactly the uploaded object version with the commit as a variable
/// (or find the execution an earlier attempt started), wait, and retry a failed stage as
/// procedure 1 does.
pub async fn run_pipeline(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let (version, commit) = (arg(args, "version_id")?, arg(args, "commit")?);
    let max: u32 = arg(args, "max_retries")?
        .parse()
        .map_err(|_| Error::failed("max_retries is not a number"))?;
    let poll = poll_of(args)?;
    let name = pipeline_name(ctx)?;
    let cp = ctx.aws.codepipeline(&ctx.region).await;
    let (action, _, _) = source_of(&cp, &name)
        .await?
        .ok_or_else(|| Error::failed(format!("pipeline {name} does not exist")))?;
    // Already done (a second run, or a resume after the deploy): start nothing.
    if live_at_commit(ctx, &Args::from([("commit".into(), commit.to_string())]))
        .await
        .is_ok()
    {
        return Ok(Outputs::from([
            (
                "execution_id".into(),
                format!("none: live already runs {commit}"),
            ),
            ("started".into(), "false".into()),
            ("stage_retries".into(), "0".into()),
        ]));
    }
    let (id, started) = match find_execution(&cp, &name, version, commit).await? {
        Some((id, status)) => {
            (ctx.progress)(&format!(
                "execution {id} already runs {commit}: {}",
                status.as_str()
            ));
            (id, false)
        }
        None => {
            // The same token for every attempt of this run on this version: a start whose
            // answer was lost (a crash, a timeout) returns the same execution when repeated.
            let out = cp
                .start_pipeline_execution()
                .name(&name)
                .client_request_token(request_token(&ctx.run_id, version))
                .variables(
                    PipelineVariable::builder()
                        .name(COMMIT_VARIABLE)
                        .value(commit)
                        .build()
                        .map_err(|e| Error::failed(e.to_string()))?,
                )
                .source_revisions(
                    SourceRevisionOverride::builder()
                        .action_name(&action)
                        .revision_type(SourceRevisionType::S3ObjectVersionId)
                        .revision_value(version)
                        .build()
                        .map_err(|e| Error::failed(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| aws_error("codepipeline", "StartPipelineExecution", e))?;
            let id = out
                .pipeline_execution_id()
                .filter(|i| !i.is_empty())
                .ok_or_else(|| Error::failed("StartPipelineExecution returned no execution id"))?
                .to_string();
            (ctx.progress)(&format!(
                "execution {id} of {name} on version {version} (commit {commit})"
            ));
            (id, true)
        }
    };
    let mut retries = 0;
    loop {
        let status = super::pipeline::wait(ctx, &cp, &name, &id, poll).await?;
        if status == Pes::Succeeded {
            break;
        }
        let stage = super::pipeline::failed_stage(&cp, &name, &id).await?;
        match stage {
            Some(stage) if retries < max => {
                retries += 1;
                cp.retry_stage_execution()
                    .pipeline_name(&name)
                    .stage_name(&stage)
                    .pipeline_execution_id(&id)
                    .retry_mode(StageRetryMode::FailedActions)
                    .send()
                    .await
                    .map_err(|e| aws_error("codepipeline", "RetryStageExecution", e))?;
                (ctx.progress)(&format!(
                    "retrying the failed actions of stage {stage} ({retries}/{max})"
                ));
                // Let the retry show before the next read of the status.
                tokio::time::sleep(poll).await;
            }
            _ => {
                return Err(Error::failed_hint(
                    format!(
                        "execution {id} of {name} ended {} after {retries} retr{}",
                        status.as_str(),
                        if retries == 1 { "y" } else { "ies" }
                    ),
                    "read the failed action's log (the console, or the lab's build log), fix, drd mirror push --from CLONE, and run drd failover-ci --to codepipeline again",
                ))
            }
        }
    }
    Ok(Outputs::from([
        ("execution_id".into(), id),
        ("started".into(), started.to_string()),
        ("stage_retries".into(), retries.to_string()),
    ]))
}

/// `live` runs a version recorded with `commit` (`commits/<function>.json`, matched by version
/// and code hash) and passes T0-T2 through the Function URL.
pub async fn live_at_commit(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let commit = arg(args, "commit")?;
    let lambda = ctx.aws.lambda(&ctx.region).await;
    let f = ctx.function();
    let version = crate::lambda::ops::live_version(&lambda, f)
        .await?
        .ok_or_else(|| Error::failed(format!("{f} has no alias live in {}", ctx.region)))?;
    let sha = crate::lambda::ops::code_sha256(&lambda, f, &version).await?;
    let records = crate::lambda::commits::load(&ctx.store, f).await?;
    let rec = records.for_live(&ctx.region, &version, &sha);
    match rec {
        Some(r) if r.commit == commit => {}
        Some(r) => {
            return Err(Error::failed(format!(
                "live is version {version}, deployed from commit {}, not {commit}",
                r.commit
            )))
        }
        None => {
            return Err(Error::failed(format!(
                "live is version {version}, which no deploy recorded a commit for"
            )))
        }
    }
    super::lambda::probe_url(ctx, &Args::from([("tiers".into(), "T0,T1,T2".into())])).await?;
    (ctx.progress)(&format!(
        "live is version {version}, commit {commit}, healthy"
    ));
    Ok(())
}

/// Whether the CI that holds the epoch answers (a drill's CI tier): GitHub reads the deploy
/// workflow (10 s bound), CodePipeline reads the standby pipeline.
pub async fn ci_holder_answers(
    ctx: &super::Ctx<'_>,
    provider: crate::store::ci_epoch::Provider,
) -> crate::error::Result<()> {
    use crate::store::ci_epoch::Provider;
    match provider {
        Provider::Github => super::ci_github::reachable(ctx).await,
        Provider::Codepipeline => {
            let n = crate::ci::names(ctx.policy, &ctx.region)?;
            ctx.aws
                .codepipeline(&ctx.region)
                .await
                .get_pipeline()
                .name(&n.pipeline)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| crate::aws::aws_error("codepipeline", "GetPipeline", e))
        }
    }
}
