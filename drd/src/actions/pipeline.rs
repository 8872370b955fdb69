//! Pipeline actions (procedure 1): read the latest CodePipeline execution, retry its failed stage
//! (failed actions only) or start a new execution, and wait for it, up to the policy's limit.
//!
//! Idempotent: an execution already in progress is waited on, never started twice.

use super::{arg, Args, Ctx, Outputs};
use crate::aws::aws_error;
use crate::error::{Error, Result};
use aws_sdk_codepipeline::types::{
    PipelineExecutionStatus as Pes, StageExecutionStatus as Ses, StageRetryMode,
};
use std::time::Duration;

struct Latest {
    id: String,
    status: Pes,
    failed_stage: Option<String>,
}

fn pipeline_name(args: &Args) -> Result<String> {
    match args.get("pipeline").filter(|s| !s.is_empty()) {
        Some(p) => Ok(p.clone()),
        None => Err(Error::failed_hint(
            "no pipeline is configured",
            "add [pipeline] name = \"...\" to the policy",
        )),
    }
}

async fn latest(cp: &aws_sdk_codepipeline::Client, name: &str) -> Result<Option<Latest>> {
    let out = cp
        .list_pipeline_executions()
        .pipeline_name(name)
        .max_results(1)
        .send()
        .await
        .map_err(|e| aws_error("codepipeline", "ListPipelineExecutions", e))?;
    let Some(s) = out.pipeline_execution_summaries().first() else {
        return Ok(None);
    };
    let id = s.pipeline_execution_id().unwrap_or_default().to_string();
    let status = s.status().cloned().unwrap_or(Pes::InProgress);
    let failed_stage = if status == Pes::Failed {
        failed_stage(cp, name, &id).await?
    } else {
        None
    };
    Ok(Some(Latest {
        id,
        status,
        failed_stage,
    }))
}

/// The stage of execution `id` that failed, if its latest execution is `id`'s.
pub(super) async fn failed_stage(
    cp: &aws_sdk_codepipeline::Client,
    name: &str,
    id: &str,
) -> Result<Option<String>> {
    let st = cp
        .get_pipeline_state()
        .name(name)
        .send()
        .await
        .map_err(|e| aws_error("codepipeline", "GetPipelineState", e))?;
    Ok(st
        .stage_states()
        .iter()
        .find(|s| {
            s.latest_execution()
                .is_some_and(|e| e.pipeline_execution_id() == id && *e.status() == Ses::Failed)
        })
        .and_then(|s| s.stage_name().map(str::to_string)))
}

pub async fn inspect(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let name = pipeline_name(args)?;
    let cp = ctx.aws.codepipeline(&ctx.region).await;
    let l = latest(&cp, &name).await?;
    let (id, status, stage) = match &l {
        Some(l) => (
            l.id.clone(),
            l.status.as_str().to_string(),
            l.failed_stage.clone().unwrap_or_else(|| "none".into()),
        ),
        None => ("none".into(), "None".into(), "none".into()),
    };
    (ctx.progress)(&format!(
        "pipeline {name}: latest execution {id} {status}{}",
        if stage == "none" {
            String::new()
        } else {
            format!(", failed in stage {stage}")
        }
    ));
    Ok(Outputs::from([
        ("execution_id".into(), id),
        ("status".into(), status),
        ("failed_stage".into(), stage),
    ]))
}

pub(super) async fn wait(
    ctx: &Ctx<'_>,
    cp: &aws_sdk_codepipeline::Client,
    name: &str,
    id: &str,
    poll: Duration,
) -> Result<Pes> {
    let mut last = None;
    loop {
        let out = cp
            .get_pipeline_execution()
            .pipeline_name(name)
            .pipeline_execution_id(id)
            .send()
            .await
            .map_err(|e| aws_error("codepipeline", "GetPipelineExecution", e))?;
        let status = out
            .pipeline_execution()
            .and_then(|e| e.status())
            .cloned()
            .unwrap_or(Pes::InProgress);
        if last.as_ref() != Some(&status) {
            (ctx.progress)(&format!("execution {id}: {}", status.as_str()));
            last = Some(status.clone());
        }
        if !matches!(status, Pes::InProgress | Pes::Stopping) {
            return Ok(status);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Retry the failed stage (or start a new execution) and wait, up to `max_retries` times.
/// `baseline` is the execution `inspect` saw: a newer execution that succeeded means this step
/// already did its work (a resumed run), so nothing is started again.
pub async fn recover(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let name = pipeline_name(args)?;
    let max: u32 = arg(args, "max_retries")?.parse().map_err(|_| {
        Error::failed_hint(
            "max_retries is not a number",
            "set [pipeline] max_retries = N in the policy",
        )
    })?;
    let poll = match args.get("poll").filter(|s| !s.is_empty()) {
        Some(p) => humantime::parse_duration(p)
            .map_err(|e| Error::failed(format!("poll {p:?} is not a duration: {e}")))?,
        None => Duration::from_secs(10),
    };
    let baseline = args.get("baseline").cloned().unwrap_or_default();
    let cp = ctx.aws.codepipeline(&ctx.region).await;
    let mut actions = vec![];
    for attempt in 1..=max.max(1) {
        let l = latest(&cp, &name).await?;
        let id = match &l {
            Some(l) if l.status == Pes::Succeeded && attempt == 1 && l.id != baseline => {
                actions.push(format!("{} already succeeded", l.id));
                return Ok(done(&l.id, 0, &actions));
            }
            // Already running (a resumed run, or someone else): wait for it, start nothing.
            Some(l) if matches!(l.status, Pes::InProgress | Pes::Stopping) => {
                actions.push(format!("waited on {}", l.id));
                l.id.clone()
            }
            Some(l) if l.status == Pes::Succeeded && attempt > 1 => {
                return Ok(done(&l.id, attempt - 1, &actions));
            }
            Some(Latest {
                id,
                status: Pes::Failed,
                failed_stage: Some(stage),
            }) => {
                cp.retry_stage_execution()
                    .pipeline_name(&name)
                    .stage_name(stage)
                    .pipeline_execution_id(id)
                    .retry_mode(StageRetryMode::FailedActions)
                    .send()
                    .await
                    .map_err(|e| aws_error("codepipeline", "RetryStageExecution", e))?;
                (ctx.progress)(&format!(
                    "retrying the failed actions of stage {stage} ({id})"
                ));
                actions.push(format!("retried stage {stage} of {id}"));
                id.clone()
            }
            _ => {
                let (vars, revisions) = match &l {
                    Some(l) => restart_inputs(&cp, &name, &l.id).await,
                    None => (vec![], vec![]),
                };
                let out = cp
                    .start_pipeline_execution()
                    .name(&name)
                    .set_variables(Some(vars).filter(|v| !v.is_empty()))
                    .set_source_revisions(Some(revisions).filter(|r| !r.is_empty()))
                    .send()
                    .await
                    .map_err(|e| aws_error("codepipeline", "StartPipelineExecution", e))?;
                let id = out.pipeline_execution_id().unwrap_or_default().to_string();
                (ctx.progress)(&format!("started execution {id}"));
                actions.push(format!("started {id}"));
                id
            }
        };
        match wait(ctx, &cp, &name, &id, poll).await? {
            Pes::Succeeded => return Ok(done(&id, attempt, &actions)),
            other => (ctx.progress)(&format!(
                "execution {id} ended {} (attempt {attempt}/{max})",
                other.as_str()
            )),
        }
    }
    Err(Error::failed_hint(
        format!(
            "pipeline {name} is still failing after {max} attempt(s): {}",
            actions.join(", ")
        ),
        "read the failed action's logs in the console; fix and push, or fail CI over with drd failover-ci",
    ))
}

/// What a new execution must repeat of the one it replaces: its variables (the commit it
/// deploys) and, for S3 sources, the exact object version, so a restart never deploys another
/// zip under the same commit. Best effort: without them the pipeline's defaults apply.
async fn restart_inputs(
    cp: &aws_sdk_codepipeline::Client,
    name: &str,
    id: &str,
) -> (
    Vec<aws_sdk_codepipeline::types::PipelineVariable>,
    Vec<aws_sdk_codepipeline::types::SourceRevisionOverride>,
) {
    use aws_sdk_codepipeline::types::{
        PipelineVariable, SourceRevisionOverride, SourceRevisionType,
    };
    let Ok(e) = cp
        .get_pipeline_execution()
        .pipeline_name(name)
        .pipeline_execution_id(id)
        .send()
        .await
    else {
        return (vec![], vec![]);
    };
    let vars = e
        .pipeline_execution()
        .map(|x| x.variables())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            PipelineVariable::builder()
                .name(v.name()?)
                .value(v.resolved_value()?)
                .build()
                .ok()
        })
        .collect();
    // S3 source actions and the artifacts they output, from the pipeline's declaration.
    let mut revisions = vec![];
    if let Ok(p) = cp.get_pipeline().name(name).send().await {
        let sources: Vec<(String, String)> = p
            .pipeline()
            .map(|d| d.stages())
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.actions())
            .filter(|a| a.action_type_id().is_some_and(|t| t.provider() == "S3"))
            .flat_map(|a| {
                a.output_artifacts()
                    .iter()
                    .map(|o| (a.name().to_string(), o.name().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for r in e
            .pipeline_execution()
            .map(|x| x.artifact_revisions())
            .unwrap_or_default()
        {
            let Some((action, _)) = sources
                .iter()
                .find(|(_, art)| Some(art.as_str()) == r.name())
            else {
                continue;
            };
            if let Some(v) = r.revision_id() {
                if let Ok(o) = SourceRevisionOverride::builder()
                    .action_name(action)
                    .revision_type(SourceRevisionType::S3ObjectVersionId)
                    .revision_value(v)
                    .build()
                {
                    revisions.push(o);
                }
            }
        }
    }
    (vars, revisions)
}

fn done(id: &str, attempts: u32, actions: &[String]) -> Outputs {
    Outputs::from([
        ("execution_id".into(), id.to_string()),
        ("attempts".into(), attempts.to_string()),
        ("actions".into(), actions.join("; ")),
    ])
}

pub async fn latest_succeeded(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let name = pipeline_name(args)?;
    let cp = ctx.aws.codepipeline(&ctx.region).await;
    match latest(&cp, &name).await? {
        Some(l) if l.status == Pes::Succeeded => Ok(()),
        Some(l) => Err(Error::failed(format!(
            "the latest execution of {name} ({}) is {}",
            l.id,
            l.status.as_str()
        ))),
        None => Err(Error::failed(format!("{name} has no execution"))),
    }
}
