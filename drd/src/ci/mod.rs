//! `drd ci install`: the standby CI (CodePipeline V2 + CodeBuild) from the workload's own
//! template (`[pipeline] template`, e.g. classifier/ci/pipeline.yaml), created or updated as a
//! CloudFormation stack `<stack>-ci` in the acting region.
//!
//! On AWS CloudFormation creates everything. moto's CloudFormation completes such a stack
//! without its `AWS::CodePipeline::Pipeline` and `AWS::CodeBuild::Project` resources
//! (docs/emulator-gaps.md); against an emulator endpoint drd then creates those through the
//! CodeBuild and CodePipeline APIs from the template's own resource properties
//! (`template.rs`), and checks that what the emulator serves equals what the template says.
//! Against AWS a missing pipeline after a complete stack is an error, never papered over.

pub mod mirror;
pub mod run;
pub mod template;
pub mod transport;

use crate::aws::{aws_error, error_code, Aws};
use crate::error::{ConfigError, Error, Result};
use crate::policy::Policy;
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::time::Instant;
use template::{Context, ParsedTemplate};

#[derive(Debug, Serialize)]
pub struct InstallReport {
    pub region: String,
    pub stack: String,
    pub stack_action: String,
    pub stack_status: String,
    pub pipeline: String,
    pub projects: Vec<String>,
    pub source_bucket: String,
    pub artifact_bucket: String,
    /// "cloudformation", or "cloudformation+api" when the emulator's CloudFormation skipped the
    /// pipeline and its projects and drd created them from the template's properties.
    pub created_through: String,
    /// The pipeline and projects the endpoint serves were compared with the template.
    pub verified: bool,
    pub duration_ms: u64,
}

/// The names `drd ci install` derives from the policy.
pub struct Names {
    pub stack: String,
    pub pipeline: String,
    pub source_bucket: String,
    pub artifact_bucket: String,
}

pub fn names(policy: &Policy, region: &str) -> Result<Names> {
    let p = policy.pipeline.as_ref().ok_or_else(|| {
        Error::from(
            ConfigError::new(policy.path.display().to_string(), "no [pipeline] section")
                .field("pipeline")
                .hint("add [pipeline] name = \"...\" and template = \"../classifier/ci/pipeline.yaml\""),
        )
    })?;
    let name = p.name.get_ref().to_string();
    let prefix = p.bucket_prefix.clone().unwrap_or_else(|| name.clone());
    Ok(Names {
        stack: format!("{}-ci", policy.stack_name()),
        source_bucket: format!("{prefix}-source-{region}"),
        artifact_bucket: format!("{prefix}-artifacts-{region}"),
        pipeline: name,
    })
}

fn load_template(policy: &Policy) -> Result<(String, ParsedTemplate)> {
    let path = policy.pipeline_template_path().ok_or_else(|| {
        Error::from(
            ConfigError::new(
                policy.path.display().to_string(),
                "[pipeline] names no template",
            )
            .field("pipeline.template")
            .hint("add template = \"../classifier/ci/pipeline.yaml\" to [pipeline]"),
        )
    })?;
    let shown = path.display().to_string();
    let body = std::fs::read_to_string(&path).map_err(|e| {
        Error::from(
            ConfigError::new(&shown, format!("cannot read the pipeline template: {e}"))
                .field("pipeline.template")
                .hint("fix [pipeline] template (relative to the policy file)"),
        )
    })?;
    let t = ParsedTemplate::parse(&body, &shown)?;
    Ok((body, t))
}

/// The stack parameters: the names drd derives, for the parameters the template declares.
fn parameters(
    policy: &Policy,
    t: &ParsedTemplate,
    n: &Names,
) -> Result<BTreeMap<&'static str, String>> {
    let declared = t.parameter_defaults();
    let mut out = BTreeMap::new();
    let mut put = |k: &'static str, v: String| {
        if declared.contains_key(k) {
            out.insert(k, v);
        }
    };
    put("PipelineName", n.pipeline.clone());
    put("SourceBucketName", n.source_bucket.clone());
    put("ArtifactBucketName", n.artifact_bucket.clone());
    if let Some(image) = policy.pipeline.as_ref().and_then(|p| p.build_image.clone()) {
        put("BuildImage", image);
    }
    let arn = policy
        .pipeline
        .as_ref()
        .and_then(|p| p.deploy_policy_arn.clone());
    if declared.get("DeployPolicyArn").is_some_and(Option::is_none) {
        let arn = arn.ok_or_else(|| {
            Error::from(
                ConfigError::new(
                    policy.path.display().to_string(),
                    format!("{} needs DeployPolicyArn: the managed policy its deploy stage runs drd deploy with", t.shown),
                )
                .field("pipeline.deploy_policy_arn")
                .hint("create a managed policy with the deploy row of docs/permissions.md and set [pipeline] deploy_policy_arn"),
            )
        })?;
        out.insert("DeployPolicyArn", arn);
    }
    Ok(out)
}

pub async fn install(
    aws: &Aws,
    policy: &Policy,
    region: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<InstallReport> {
    let started = Instant::now();
    let n = names(policy, region)?;
    let (body, t) = load_template(policy)?;
    let params = parameters(policy, &t, &n)?;
    let cf = aws.cloudformation(region).await;
    let (stack_action, stack_status) =
        crate::stack::ensure_stack(&cf, &n.stack, &body, &params, progress).await?;
    // What the stack holds: CloudFormation created the pipeline and projects, or (an
    // emulator's CloudFormation) skipped them.
    let res = cf
        .describe_stack_resources()
        .stack_name(&n.stack)
        .send()
        .await
        .map_err(|e| aws_error("cloudformation", "DescribeStackResources", e))?;
    let held: BTreeMap<String, String> = res
        .stack_resources()
        .iter()
        .filter_map(|r| {
            Some((
                r.logical_resource_id()?.to_string(),
                r.physical_resource_id().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    let mut missing: Vec<String> = t.resources_of("AWS::CodeBuild::Project");
    missing.extend(t.resources_of("AWS::CodePipeline::Pipeline"));
    missing.retain(|l| !held.contains_key(l));
    let emulator = aws.settings().endpoint_url.is_some();
    let (created_through, verified) = if missing.is_empty() {
        let ours = t
            .resources_of("AWS::CodePipeline::Pipeline")
            .iter()
            .any(|l| held.get(l) == Some(&n.pipeline));
        if !ours {
            return Err(Error::failed_hint(
                format!(
                    "stack {} holds no pipeline named {} ([pipeline] name)",
                    n.stack, n.pipeline
                ),
                format!(
                    "the template {} must name its pipeline after the PipelineName parameter",
                    t.shown
                ),
            ));
        }
        ("cloudformation".to_string(), false)
    } else if !emulator {
        return Err(Error::failed_hint(
            format!(
                "stack {} is {stack_status} without {}",
                n.stack,
                missing.join(", ")
            ),
            "read the stack's events (aws cloudformation describe-stack-events) and install again",
        ));
    } else {
        progress("the emulator's CloudFormation skips CodePipeline and CodeBuild: creating them from the template's properties");
        let ctx = context(aws, region, res.stack_resources(), &n, &t, &params).await?;
        create_from_template(aws, region, &t, &ctx, progress).await?;
        let diffs = compare(aws, region, &t, &ctx).await?;
        if !diffs.is_empty() {
            return Err(Error::failed(format!(
                "what the endpoint serves differs from {}: {}",
                t.shown,
                diffs.join("; ")
            )));
        }
        ("cloudformation+api".to_string(), true)
    };
    Ok(InstallReport {
        region: region.to_string(),
        stack: n.stack,
        stack_action,
        stack_status,
        projects: project_names(&t, &params, region),
        pipeline: n.pipeline,
        source_bucket: n.source_bucket,
        artifact_bucket: n.artifact_bucket,
        created_through,
        verified,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The CodeBuild projects' names (their `Name` resolves from parameters alone), else their
/// logical ids.
/// A context that knows the parameters (given, else their defaults) and the region.
fn parameters_context(
    t: &ParsedTemplate,
    params: &BTreeMap<&'static str, String>,
    region: &str,
) -> Context {
    let mut ctx = Context {
        region: region.to_string(),
        partition: "aws".into(),
        ..Default::default()
    };
    for (k, d) in t.parameter_defaults() {
        if let Some(d) = d {
            ctx.parameters.insert(k, d);
        }
    }
    for (k, v) in params {
        ctx.parameters.insert(k.to_string(), v.clone());
    }
    ctx
}

fn project_names(
    t: &ParsedTemplate,
    params: &BTreeMap<&'static str, String>,
    region: &str,
) -> Vec<String> {
    let ctx = parameters_context(t, params, region);
    t.resources_of("AWS::CodeBuild::Project")
        .into_iter()
        .map(|l| {
            t.property(&l, "Name", &ctx)
                .and_then(|n| n.as_str().map(str::to_string))
                .unwrap_or(l)
        })
        .collect()
}

/// What `Ref`/`GetAtt` resolve to in the installed stack, from its `resources`.
async fn context(
    aws: &Aws,
    region: &str,
    resources: &[aws_sdk_cloudformation::types::StackResource],
    n: &Names,
    t: &ParsedTemplate,
    params: &BTreeMap<&'static str, String>,
) -> Result<Context> {
    let account = aws
        .sts(region)
        .await
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| aws_error("sts", "GetCallerIdentity", e))?
        .account()
        .unwrap_or_default()
        .to_string();
    let mut ctx = parameters_context(t, params, region);
    ctx.account = account.clone();
    // The stack's resources as install read them back (one DescribeStackResources).
    for r in resources {
        let (Some(l), Some(p)) = (r.logical_resource_id(), r.physical_resource_id()) else {
            continue;
        };
        ctx.physical.insert(l.to_string(), p.to_string());
        if r.resource_type() == Some("AWS::IAM::Role") {
            ctx.arns
                .insert(l.to_string(), format!("arn:aws:iam::{account}:role/{p}"));
        }
    }
    // The resources the emulator skipped: their names (and ARNs) come from their properties.
    for l in t.resources_of("AWS::CodeBuild::Project") {
        let name = t
            .property(&l, "Name", &ctx)
            .and_then(|n| n.as_str().map(str::to_string));
        if let Some(name) = name {
            ctx.arns.insert(
                l.clone(),
                format!("arn:aws:codebuild:{region}:{account}:project/{name}"),
            );
            ctx.physical.insert(l, name);
        }
    }
    for l in t.resources_of("AWS::CodePipeline::Pipeline") {
        ctx.physical.insert(l, n.pipeline.clone());
    }
    Ok(ctx)
}

fn sdk_project(
    j: &Json,
) -> Result<(
    aws_sdk_codebuild::types::ProjectSource,
    aws_sdk_codebuild::types::ProjectArtifacts,
    aws_sdk_codebuild::types::ProjectEnvironment,
)> {
    use aws_sdk_codebuild::types as cb;
    let s = |v: &Json, k: &str| v.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let bad =
        |e: aws_sdk_codebuild::error::BuildError| Error::failed(format!("CodeBuild project: {e}"));
    // moto 5.2.1 refuses a source or artifacts without a location even for CODEPIPELINE, which
    // AWS takes without one (docs/emulator-gaps.md); this path runs against the emulator only.
    let src = cb::ProjectSource::builder()
        .r#type(cb::SourceType::from(s(&j["source"], "type").as_str()))
        .buildspec(s(&j["source"], "buildspec"))
        .location("CODEPIPELINE")
        .build()
        .map_err(bad)?;
    let art = cb::ProjectArtifacts::builder()
        .r#type(cb::ArtifactsType::from(s(&j["artifacts"], "type").as_str()))
        .location("CODEPIPELINE")
        .build()
        .map_err(bad)?;
    let e = &j["environment"];
    let mut eb = cb::ProjectEnvironment::builder()
        .r#type(cb::EnvironmentType::from(s(e, "type").as_str()))
        .image(s(e, "image"))
        .compute_type(cb::ComputeType::from(s(e, "computeType").as_str()));
    for v in e["environmentVariables"].as_array().into_iter().flatten() {
        eb = eb.environment_variables(
            cb::EnvironmentVariable::builder()
                .name(s(v, "name"))
                .value(s(v, "value"))
                .r#type(cb::EnvironmentVariableType::from(s(v, "type").as_str()))
                .build()
                .map_err(bad)?,
        );
    }
    Ok((src, art, eb.build().map_err(bad)?))
}

async fn create_from_template(
    aws: &Aws,
    region: &str,
    t: &ParsedTemplate,
    ctx: &Context,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    // moto's CloudFormation also ignores a bucket's VersioningConfiguration; the S3 source
    // needs versions (executions start on one object version).
    let s3 = aws.s3(region).await;
    for l in t.resources_of("AWS::S3::Bucket") {
        let props = t.properties(&l, ctx)?;
        let Some(bucket) = ctx.physical.get(&l) else {
            continue;
        };
        if props["VersioningConfiguration"]["Status"] == "Enabled" {
            use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
            s3.put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| aws_error("s3", "PutBucketVersioning", e))?;
            progress(&format!("bucket {bucket}: versioning enabled"));
        }
    }
    let cb = aws.codebuild(region).await;
    for l in t.resources_of("AWS::CodeBuild::Project") {
        let j = template::project(&t.properties(&l, ctx)?)?;
        let name = j["name"].as_str().unwrap_or_default().to_string();
        let (src, art, env) = sdk_project(&j)?;
        let role = j["serviceRole"].as_str().unwrap_or_default();
        let timeout = j["timeoutInMinutes"].as_i64().unwrap_or(60) as i32;
        let existing = cb
            .batch_get_projects()
            .names(&name)
            .send()
            .await
            .map_err(|e| aws_error("codebuild", "BatchGetProjects", e))?;
        if let Some(p) = existing.projects().first() {
            if served_project(p) == j {
                progress(&format!("CodeBuild project {name}: unchanged"));
                continue;
            }
            // moto 5.2.1 has no UpdateProject (docs/emulator-gaps.md): replace the project.
            cb.delete_project()
                .name(&name)
                .send()
                .await
                .map_err(|e| aws_error("codebuild", "DeleteProject", e))?;
        }
        cb.create_project()
            .name(&name)
            .source(src)
            .artifacts(art)
            .environment(env)
            .service_role(role)
            .timeout_in_minutes(timeout)
            .send()
            .await
            .map_err(|e| aws_error("codebuild", "CreateProject", e))?;
        progress(&format!(
            "CodeBuild project {name}: {}",
            if existing.projects().is_empty() {
                "created"
            } else {
                "replaced"
            }
        ));
    }
    let cp = aws.codepipeline(region).await;
    for l in t.resources_of("AWS::CodePipeline::Pipeline") {
        let decl = template::pipeline(&t.properties(&l, ctx)?)?;
        let name = decl.name().to_string();
        let existing = cp.get_pipeline().name(&name).send().await.ok();
        let served = existing
            .as_ref()
            .and_then(|o| o.pipeline().cloned())
            .map(normalized);
        if served.as_ref() == Some(&normalized(decl.clone())) {
            progress(&format!("pipeline {name}: unchanged"));
        } else if existing.is_some() {
            cp.update_pipeline()
                .pipeline(decl)
                .send()
                .await
                .map_err(|e| aws_error("codepipeline", "UpdatePipeline", e))?;
            progress(&format!("pipeline {name}: updated"));
        } else {
            cp.create_pipeline()
                .pipeline(decl)
                .send()
                .await
                .map_err(|e| aws_error("codepipeline", "CreatePipeline", e))?;
            progress(&format!("pipeline {name}: created"));
        }
    }
    Ok(())
}

/// A project as the endpoint serves it, in the shape `template::project` gives.
fn served_project(p: &aws_sdk_codebuild::types::Project) -> Json {
    let env = p.environment();
    serde_json::json!({
        "name": p.name().unwrap_or_default(),
        "source": {
            "type": p.source().map(|s| s.r#type().as_str()).unwrap_or_default(),
            "buildspec": p.source().and_then(|s| s.buildspec()).unwrap_or_default(),
        },
        "artifacts": {"type": p.artifacts().map(|a| a.r#type().as_str()).unwrap_or_default()},
        "environment": {
            "type": env.map(|e| e.r#type().as_str()).unwrap_or_default(),
            "image": env.map(|e| e.image()).unwrap_or_default(),
            "computeType": env.map(|e| e.compute_type().as_str()).unwrap_or_default(),
            "environmentVariables": env.map(|e| e.environment_variables().iter().map(|v| serde_json::json!({
                "name": v.name(), "value": v.value(),
                "type": v.r#type().map(|t| t.as_str()).unwrap_or("PLAINTEXT"),
            })).collect::<Vec<_>>()).unwrap_or_default(),
        },
        "serviceRole": p.service_role().unwrap_or_default(),
        "timeoutInMinutes": p.timeout_in_minutes().unwrap_or(60),
    })
}

/// A declaration with what the service adds or may omit taken out: the version, and empty
/// artifact lists (served as `[]`, absent in a template).
fn normalized(
    mut d: aws_sdk_codepipeline::types::PipelineDeclaration,
) -> aws_sdk_codepipeline::types::PipelineDeclaration {
    d.version = None;
    for s in d.stages.iter_mut() {
        for a in s.actions.iter_mut() {
            if a.input_artifacts.as_ref().is_some_and(Vec::is_empty) {
                a.input_artifacts = None;
            }
            if a.output_artifacts.as_ref().is_some_and(Vec::is_empty) {
                a.output_artifacts = None;
            }
        }
    }
    d
}

/// Differences between what the endpoint serves and what the template says (empty: equal).
pub async fn compare(
    aws: &Aws,
    region: &str,
    t: &ParsedTemplate,
    ctx: &Context,
) -> Result<Vec<String>> {
    let mut diffs = vec![];
    let s3 = aws.s3(region).await;
    for l in t.resources_of("AWS::S3::Bucket") {
        let props = t.properties(&l, ctx)?;
        let Some(bucket) = ctx.physical.get(&l) else {
            diffs.push(format!("bucket {l} is missing from the stack"));
            continue;
        };
        if props["VersioningConfiguration"]["Status"] == "Enabled" {
            let v = s3
                .get_bucket_versioning()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| aws_error("s3", "GetBucketVersioning", e))?;
            if v.status().map(|s| s.as_str()) != Some("Enabled") {
                diffs.push(format!("bucket {bucket} is not versioned"));
            }
        }
    }
    let cb = aws.codebuild(region).await;
    for l in t.resources_of("AWS::CodeBuild::Project") {
        let want = template::project(&t.properties(&l, ctx)?)?;
        let name = want["name"].as_str().unwrap_or_default().to_string();
        let got = cb
            .batch_get_projects()
            .names(&name)
            .send()
            .await
            .map_err(|e| aws_error("codebuild", "BatchGetProjects", e))?;
        let Some(p) = got.projects().first() else {
            diffs.push(format!("project {name} is missing"));
            continue;
        };
        let served = served_project(p);
        if served != want {
            diffs.push(format!(
                "project {name}: serves {served}, the template says {want}"
            ));
        }
    }
    let cp = aws.codepipeline(region).await;
    for l in t.resources_of("AWS::CodePipeline::Pipeline") {
        let want = template::pipeline(&t.properties(&l, ctx)?)?;
        match cp.get_pipeline().name(want.name()).send().await {
            Ok(o) => {
                let got = o.pipeline().cloned().map(normalized);
                let want = normalized(want);
                if got.as_ref() != Some(&want) {
                    diffs.push(format!(
                        "pipeline {}: serves {got:?}, the template says {want:?}",
                        want.name()
                    ));
                }
            }
            Err(e) => diffs.push(format!(
                "pipeline {}: {}",
                want.name(),
                error_code(&e).unwrap_or("GetPipeline failed")
            )),
        }
    }
    Ok(diffs)
}
