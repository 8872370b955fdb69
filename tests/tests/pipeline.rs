//! Procedure 1 (`pipeline-failure`) end to end through the runbook executor. moto 5.2.1 serves no
//! CodePipeline executions (docs/emulator-gaps.md), so CodePipeline is the SDK's own mock client
//! (aws-smithy-mocks) while the store, the journal and the leases are real (moto S3).

use aws_sdk_codepipeline::operation::get_pipeline::GetPipelineOutput;
use aws_sdk_codepipeline::operation::get_pipeline_execution::GetPipelineExecutionOutput;
use aws_sdk_codepipeline::operation::get_pipeline_state::GetPipelineStateOutput;
use aws_sdk_codepipeline::operation::list_pipeline_executions::ListPipelineExecutionsOutput;
use aws_sdk_codepipeline::operation::retry_stage_execution::RetryStageExecutionOutput;
use aws_sdk_codepipeline::operation::start_pipeline_execution::StartPipelineExecutionOutput;
use aws_sdk_codepipeline::types::{
    ActionCategory, ActionDeclaration, ActionOwner, ActionTypeId, ArtifactRevision, OutputArtifact,
    PipelineDeclaration, PipelineExecution, PipelineExecutionStatus as Pes,
    PipelineExecutionSummary, ResolvedPipelineVariable, SourceRevisionType, StageDeclaration,
    StageExecution, StageExecutionStatus, StageRetryMode, StageState,
};
use aws_sdk_codepipeline::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use drd::actions::Ctx;
use drd::aws::{Aws, AwsSettings};
use drd::runbook::exec::{self, RunOptions};
use drd_e2e::Sandbox;
use std::collections::BTreeMap;

fn summary(id: &str, s: Pes) -> ListPipelineExecutionsOutput {
    ListPipelineExecutionsOutput::builder()
        .pipeline_execution_summaries(
            PipelineExecutionSummary::builder()
                .pipeline_execution_id(id)
                .status(s)
                .build(),
        )
        .build()
}

fn execution(id: &str, s: Pes) -> GetPipelineExecutionOutput {
    GetPipelineExecutionOutput::builder()
        .pipeline_execution(
            PipelineExecution::builder()
                .pipeline_execution_id(id)
                .status(s)
                .build(),
        )
        .build()
}

fn state_failed_in(stage: &str, id: &str) -> GetPipelineStateOutput {
    GetPipelineStateOutput::builder()
        .stage_states(
            StageState::builder()
                .stage_name("Source")
                .latest_execution(
                    StageExecution::builder()
                        .pipeline_execution_id(id)
                        .status(StageExecutionStatus::Succeeded)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .stage_states(
            StageState::builder()
                .stage_name(stage)
                .latest_execution(
                    StageExecution::builder()
                        .pipeline_execution_id(id)
                        .status(StageExecutionStatus::Failed)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .build()
}

async fn run(
    sb: &Sandbox,
    name: &str,
    client: Client,
) -> drd::Result<drd::runbook::exec::RunReport> {
    let policy = sb.policy_with(
        name,
        "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k",
        "\n[pipeline]\nname = \"classifier-pipeline\"\nmax_retries = 2\n",
    );
    let policy = drd::policy::Policy::load(&policy).unwrap();
    let aws = Aws::new(AwsSettings {
        endpoint_url: Some(sb.var("AWS_ENDPOINT_URL")),
        ..Default::default()
    });
    aws.set_codepipeline(client);
    let store = drd::store::open_store(&aws, &policy).await.unwrap();
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let progress = |l: &str| lines.lock().unwrap().push(l.to_string());
    let ctx = Ctx {
        aws: &aws,
        policy: &policy,
        region: "us-east-1".into(),
        store,
        run_id: String::new(),
        progress: &progress,
        secret_value: None,
    };
    let rb = drd::runbook::load(None, "pipeline-failure").unwrap();
    let opts = RunOptions {
        inputs: BTreeMap::from([("poll".to_string(), "10ms".to_string())]),
        state_dir: Some(sb.dir.path().join("state")),
        ..Default::default()
    };
    let r = exec::execute(&ctx, &rb, &opts).await;
    for l in lines.lock().unwrap().iter() {
        eprintln!("  {l}");
    }
    r
}

/// A restart: the start it must make (commit abc123 on S3 version v-1), and what it reads to
/// know them (the previous execution, the pipeline's S3 source action).
fn restart_rules() -> (Rule, Rule, Rule) {
    let start = mock!(Client::start_pipeline_execution)
        .match_requests(|r| {
            r.variables()
                .iter()
                .any(|v| v.name() == "COMMIT_SHA" && v.value() == "abc123")
                && r.source_revisions().iter().any(|s| {
                    s.action_name() == "Source"
                        && s.revision_type() == &SourceRevisionType::S3ObjectVersionId
                        && s.revision_value() == "v-1"
                })
        })
        .then_output(|| {
            StartPipelineExecutionOutput::builder()
                .pipeline_execution_id("exec-2")
                .build()
        });
    let prev = mock!(Client::get_pipeline_execution)
        .match_requests(|r| r.pipeline_execution_id() == Some("exec-1"))
        .then_output(|| {
            GetPipelineExecutionOutput::builder()
                .pipeline_execution(
                    PipelineExecution::builder()
                        .pipeline_execution_id("exec-1")
                        .status(Pes::Succeeded)
                        .variables(
                            ResolvedPipelineVariable::builder()
                                .name("COMMIT_SHA")
                                .resolved_value("abc123")
                                .build(),
                        )
                        .artifact_revisions(
                            ArtifactRevision::builder()
                                .name("SourceOutput")
                                .revision_id("v-1")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let decl = mock!(Client::get_pipeline).then_output(|| {
        GetPipelineOutput::builder()
            .pipeline(
                PipelineDeclaration::builder()
                    .name("classifier-pipeline")
                    .role_arn("arn:aws:iam::123456789012:role/p")
                    .stages(
                        StageDeclaration::builder()
                            .name("Source")
                            .actions(
                                ActionDeclaration::builder()
                                    .name("Source")
                                    .action_type_id(
                                        ActionTypeId::builder()
                                            .category(ActionCategory::Source)
                                            .owner(ActionOwner::Aws)
                                            .provider("S3")
                                            .version("1")
                                            .build()
                                            .unwrap(),
                                    )
                                    .output_artifacts(
                                        OutputArtifact::builder()
                                            .name("SourceOutput")
                                            .build()
                                            .unwrap(),
                                    )
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
    });
    (start, prev, decl)
}

fn build(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_codepipeline, RuleMode::MatchAny, rules)
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_failure_runbook_retries_the_failed_stage_until_green() {
    // The process's credentials for the in-process SDK clients (moto accepts any).
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let sb = Sandbox::start();

    // 1. The Build stage failed: its failed actions are retried once, then the run is green.
    let list = mock!(Client::list_pipeline_executions)
        .match_requests(|r| r.pipeline_name() == Some("classifier-pipeline"))
        .sequence()
        .output(|| summary("exec-1", Pes::Failed))
        .times(2)
        .output(|| summary("exec-1", Pes::Succeeded))
        .repeatedly()
        .build();
    let state =
        mock!(Client::get_pipeline_state).then_output(|| state_failed_in("Build", "exec-1"));
    let retry = mock!(Client::retry_stage_execution)
        .match_requests(|r| {
            r.stage_name() == Some("Build")
                && r.pipeline_execution_id() == Some("exec-1")
                && r.retry_mode() == Some(&StageRetryMode::FailedActions)
        })
        .then_output(|| {
            RetryStageExecutionOutput::builder()
                .pipeline_execution_id("exec-1")
                .build()
        });
    let start = mock!(Client::start_pipeline_execution).then_output(|| {
        StartPipelineExecutionOutput::builder()
            .pipeline_execution_id("never")
            .build()
    });
    let get = mock!(Client::get_pipeline_execution)
        .sequence()
        .output(|| execution("exec-1", Pes::InProgress))
        .times(2)
        .output(|| execution("exec-1", Pes::Succeeded))
        .repeatedly()
        .build();
    let r = run(&sb, "pl-a", build(&[&list, &state, &retry, &start, &get]))
        .await
        .unwrap();
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(retry.num_calls(), 1);
    assert_eq!(start.num_calls(), 0, "nothing failed to start anew");
    assert_eq!(get.num_calls(), 3, "waited through InProgress twice");
    let out = &r.steps[1].outputs;
    assert_eq!(out["attempts"], "1");
    assert_eq!(out["actions"], "retried stage Build of exec-1");
    assert_eq!(r.steps[0].outputs["failed_stage"], "Build");
    // The journal is real: in the store on moto.
    let s3 = sb.s3("us-west-2").await;
    let keys = s3
        .list_objects_v2()
        .bucket("pl-a-points")
        .prefix(format!("pl-a/journal/{}/", r.run))
        .send()
        .await
        .unwrap();
    assert!(keys
        .contents()
        .iter()
        .any(|o| o.key().unwrap().ends_with("-succeeded-recover.json")));

    // 2. Nothing failed (the last run succeeded): a new execution is started and waited on.
    let list = mock!(Client::list_pipeline_executions)
        .sequence()
        .output(|| summary("exec-1", Pes::Succeeded))
        .times(2)
        .output(|| summary("exec-2", Pes::Succeeded))
        .repeatedly()
        .build();
    // The new execution repeats the last one's variables (its commit) and S3 object version.
    let (start, prev, decl) = restart_rules();
    let get = mock!(Client::get_pipeline_execution)
        .match_requests(|r| r.pipeline_execution_id() == Some("exec-2"))
        .then_output(|| execution("exec-2", Pes::Succeeded));
    let r = run(&sb, "pl-b", build(&[&list, &start, &prev, &decl, &get]))
        .await
        .unwrap();
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(
        start.num_calls(),
        1,
        "started with the previous commit and version"
    );
    assert_eq!(r.steps[1].outputs["actions"], "started exec-2");

    // 3. An execution already in progress (e.g. a resumed run): waited on, never started twice.
    let list = mock!(Client::list_pipeline_executions)
        .sequence()
        .output(|| summary("exec-3", Pes::InProgress))
        .times(2)
        .output(|| summary("exec-3", Pes::Succeeded))
        .repeatedly()
        .build();
    let start = mock!(Client::start_pipeline_execution).then_output(|| {
        StartPipelineExecutionOutput::builder()
            .pipeline_execution_id("never")
            .build()
    });
    let get =
        mock!(Client::get_pipeline_execution).then_output(|| execution("exec-3", Pes::Succeeded));
    let r = run(&sb, "pl-c", build(&[&list, &start, &get]))
        .await
        .unwrap();
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(start.num_calls(), 0);
    assert_eq!(r.steps[1].outputs["actions"], "waited on exec-3");

    // 3b. A resumed run whose recovery already went green (a newer execution than the one
    // inspect saw succeeded): nothing is retried or started again.
    let list = mock!(Client::list_pipeline_executions)
        .sequence()
        .output(|| summary("exec-5", Pes::Failed))
        .output(|| summary("exec-6", Pes::Succeeded))
        .repeatedly()
        .build();
    let state =
        mock!(Client::get_pipeline_state).then_output(|| state_failed_in("Build", "exec-5"));
    let retry = mock!(Client::retry_stage_execution).then_output(|| {
        RetryStageExecutionOutput::builder()
            .pipeline_execution_id("never")
            .build()
    });
    let start = mock!(Client::start_pipeline_execution).then_output(|| {
        StartPipelineExecutionOutput::builder()
            .pipeline_execution_id("never")
            .build()
    });
    let r = run(&sb, "pl-e", build(&[&list, &state, &retry, &start]))
        .await
        .unwrap();
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(retry.num_calls() + start.num_calls(), 0);
    assert_eq!(r.steps[1].outputs["actions"], "exec-6 already succeeded");

    // 4. Still failing after max_retries (2): the run fails and says what it tried.
    let list =
        mock!(Client::list_pipeline_executions).then_output(|| summary("exec-4", Pes::Failed));
    let state =
        mock!(Client::get_pipeline_state).then_output(|| state_failed_in("Deploy", "exec-4"));
    let retry = mock!(Client::retry_stage_execution).then_output(|| {
        RetryStageExecutionOutput::builder()
            .pipeline_execution_id("exec-4")
            .build()
    });
    let get =
        mock!(Client::get_pipeline_execution).then_output(|| execution("exec-4", Pes::Failed));
    let r = run(&sb, "pl-d", build(&[&list, &state, &retry, &get]))
        .await
        .unwrap();
    assert_eq!(r.outcome, "failed", "{r:?}");
    assert_eq!(retry.num_calls(), 2);
    let err = r.error.clone().unwrap();
    assert!(
        err.contains("still failing after 2 attempt(s)") && err.contains("retried stage Deploy"),
        "{err}"
    );
}
