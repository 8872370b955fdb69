//! The workload's CI on the lab (issue 14): `drd ci install` creates the standby pipeline from
//! classifier/ci/pipeline.yaml, the AWS CLI (not drd) starts it on one exact source version with
//! the commit as a pipeline variable, the lab's executor runs the real buildspecs (cargo fmt,
//! clippy and test of the classifier; `drd deploy --commit`), and `live` then runs that commit.
//! Then procedure 1 through the CLI: a flaky build fails an execution and `drd runbook run
//! pipeline-failure` heals it by retrying the failed stage, checked with the AWS CLI.
//!
//! One test, one sandbox: the Test stage compiles the classifier on its own (its repository's
//! view), which is paid once; `DRD_SANDBOX_CI_CACHE` keeps that build across runs.

use drd_e2e::{git, root, text, Sandbox};
use serde_json::Value;
use std::time::{Duration, Instant};

const PIPELINE: &str = "ci-standby";

fn aws(sb: &Sandbox, args: &[&str]) -> Value {
    sb.aws_cli(args)
}

/// Wait until the execution leaves InProgress; its final status.
fn wait(sb: &Sandbox, id: &str) -> String {
    let start = Instant::now();
    loop {
        let e = aws(
            sb,
            &[
                "codepipeline",
                "get-pipeline-execution",
                "--pipeline-name",
                PIPELINE,
                "--pipeline-execution-id",
                id,
            ],
        );
        let status = e["pipelineExecution"]["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status != "InProgress" && status != "Stopping" {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1200),
            "execution {id} still {status} after 20 minutes: {}",
            aws(
                sb,
                &["codepipeline", "get-pipeline-state", "--name", PIPELINE]
            )
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn start(sb: &Sandbox, version: &str, sha: &str) -> String {
    let r = aws(
        sb,
        &[
            "codepipeline",
            "start-pipeline-execution",
            "--name",
            PIPELINE,
            "--source-revisions",
            &format!("actionName=Source,revisionType=S3_OBJECT_VERSION_ID,revisionValue={version}"),
            "--variables",
            &format!("name=COMMIT_SHA,value={sha}"),
        ],
    );
    r["pipelineExecutionId"].as_str().unwrap().to_string()
}

fn stage_status(sb: &Sandbox, stage: &str) -> (String, String) {
    let st = aws(
        sb,
        &["codepipeline", "get-pipeline-state", "--name", PIPELINE],
    );
    let s = st["stageStates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stageName"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage}: {st}"));
    (
        s["latestExecution"]["pipelineExecutionId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        s["latestExecution"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn the_standby_pipeline_deploys_the_commit_it_was_given_and_procedure_1_heals_a_flaky_build() {
    let sb = Sandbox::start_ci_lab();
    let (policy, bucket) = install(&sb);
    let p = policy.to_str().unwrap();
    codepipeline_holds_the_epoch(&sb);
    let (version, sha) = upload(&sb, &bucket);
    let id = start(&sb, &version, &sha);
    assert_eq!(
        wait(&sb, &id),
        "Succeeded",
        "{}",
        aws(
            &sb,
            &["codepipeline", "get-pipeline-state", "--name", PIPELINE]
        )
    );
    let e = aws(
        &sb,
        &[
            "codepipeline",
            "get-pipeline-execution",
            "--pipeline-name",
            PIPELINE,
            "--pipeline-execution-id",
            &id,
        ],
    );
    assert_eq!(
        e["pipelineExecution"]["artifactRevisions"][0]["revisionId"],
        version.as_str()
    );
    assert_eq!(
        e["pipelineExecution"]["variables"][0]["resolvedValue"],
        sha.as_str()
    );

    // live runs the commit it was given: drd status and the store's commit record agree.
    let out = sb.run(&["--policy", p, "--output", "json", "status"], "");
    assert!(out.status.success(), "status: {}", text(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["healthy"], true, "{st}");
    assert_eq!(st["live"]["commit"], sha.as_str(), "{st}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rec = rt.block_on(sb.get_json(
        "us-west-2",
        "drd-classifier-points",
        "speaker-role-classifier/commits/speaker-role-classifier.json",
    ));
    let last = rec["records"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["commit"], sha.as_str(), "{rec}");
    assert_eq!(last["version"], st["live"]["version"], "{rec}");

    heal_a_flaky_build(&sb, p, &version, &sha);
}

/// CodePipeline's deploys are accepted only while it holds the CI epoch (as after `drd
/// failover-ci --to codepipeline`, whose own test is failover_ci.rs): give it the epoch.
fn codepipeline_holds_the_epoch(sb: &Sandbox) {
    use drd::store::ci_epoch::{self, Provider};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = sb
            .store("drd-classifier-points", "speaker-role-classifier")
            .await;
        let (rec, switched) = ci_epoch::switch(&store, Provider::Codepipeline, "ci-test", "ci.rs")
            .await
            .unwrap();
        assert!(switched && rec.epoch == 1, "{rec:?}");
    });
}

/// The policy (the shipped one with the standby pipeline), the API key, `drd ci install`;
/// the policy's path and the source bucket.
fn install(sb: &Sandbox) -> (std::path::PathBuf, String) {
    // The shipped policy (the stack and function the repository's ci/drd.toml deploys), with
    // the standby pipeline.
    let shipped = std::fs::read_to_string(root().join("policies/classifier.toml")).unwrap();
    let policy = sb.dir.path().join("classifier.toml");
    std::fs::write(
        &policy,
        shipped.replace("../classifier", &root().join("classifier").display().to_string())
            + &format!(
                "\n[pipeline]\nname = \"{PIPELINE}\"\nmax_retries = 2\ntemplate = \"{}\"\ndeploy_policy_arn = \"arn:aws:iam::123456789012:policy/drd-deploy\"\n",
                root().join("classifier/ci/pipeline.yaml").display()
            ),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    // The CI never creates the API-key secret (its stdin is empty): it exists beforehand.
    let key = "sk-ci-test-0123456789";
    sb.allow_key(key);
    aws(
        sb,
        &[
            "secretsmanager",
            "create-secret",
            "--name",
            "openai-api-key",
            "--secret-string",
            key,
        ],
    );

    let out = sb.run(&["--policy", p, "--output", "json", "ci", "install"], "");
    assert!(out.status.success(), "ci install: {}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["created_through"], "cloudformation+api", "{r}");
    assert_eq!(
        r["verified"], true,
        "what the lab runs equals the template: {r}"
    );
    assert_eq!(
        r["projects"],
        serde_json::json!([format!("{PIPELINE}-test"), format!("{PIPELINE}-deploy")])
    );
    let bucket = r["source_bucket"].as_str().unwrap().to_string();
    // Installing again changes nothing.
    let again = sb.run(&["--policy", p, "ci", "install"], "");
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("pipeline ci-standby: unchanged"),
        "{}",
        text(&again)
    );

    (policy, bucket)
}

/// The lab repository's main as a zip without .git, put into the source bucket: (the object
/// version, the commit).
fn upload(sb: &Sandbox, bucket: &str) -> (String, String) {
    // The source as the pipeline takes it: a zip of the lab repository's main, without .git.
    let work = sb.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let clone = work.join("clone");
    git(
        &work,
        &[
            "clone",
            "--quiet",
            &sb.var("DRD_CI_REPOSITORY"),
            clone.to_str().unwrap(),
        ],
    );
    let sha = git(&clone, &["rev-parse", "HEAD"]);
    let zip = work.join("source.zip");
    git(
        &clone,
        &[
            "archive",
            "--format=zip",
            "-o",
            zip.to_str().unwrap(),
            "HEAD",
        ],
    );
    let put = aws(
        sb,
        &[
            "s3api",
            "put-object",
            "--bucket",
            bucket,
            "--key",
            "source.zip",
            "--body",
            zip.to_str().unwrap(),
        ],
    );
    let version = put["VersionId"]
        .as_str()
        .expect("a versioned source bucket")
        .to_string();

    (version, sha)
}

/// Procedure 1 through the CLI, checked with the AWS CLI.
fn heal_a_flaky_build(sb: &Sandbox, p: &str, version: &str, sha: &str) {
    // Procedure 1: the Test action fails once (the lab's flaky switch); the runbook retries the
    // failed stage of that same execution and the pipeline succeeds.
    let out = sb.run(
        &[
            "sandbox",
            "ci",
            "flaky",
            "--pipeline",
            PIPELINE,
            "--action",
            "Test",
            "--times",
            "1",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let flaky = start(sb, version, sha);
    assert_eq!(wait(sb, &flaky), "Failed");
    assert_eq!(
        stage_status(sb, "Test"),
        (flaky.clone(), "Failed".to_string())
    );
    let before = aws(
        sb,
        &[
            "codepipeline",
            "list-pipeline-executions",
            "--pipeline-name",
            PIPELINE,
        ],
    );
    let out = sb.run(&["--policy", p, "runbook", "run", "pipeline-failure"], "");
    assert!(out.status.success(), "pipeline-failure: {}", text(&out));
    let after = aws(
        sb,
        &[
            "codepipeline",
            "list-pipeline-executions",
            "--pipeline-name",
            PIPELINE,
        ],
    );
    let summaries = after["pipelineExecutionSummaries"].as_array().unwrap();
    assert_eq!(
        summaries.len(),
        before["pipelineExecutionSummaries"]
            .as_array()
            .unwrap()
            .len(),
        "healed by a retry, not a new execution: {after}"
    );
    assert_eq!(summaries[0]["pipelineExecutionId"], flaky.as_str());
    assert_eq!(summaries[0]["status"], "Succeeded", "{after}");
    assert_eq!(
        stage_status(sb, "Test"),
        (flaky.clone(), "Succeeded".to_string())
    );
    assert_eq!(stage_status(sb, "Deploy"), (flaky, "Succeeded".to_string()));
}

/// `commits/<function>.json` has many writers (every CI deploy): each write is a
/// compare-and-swap on the ETag it read, so writers that race never lose a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deploys_never_lose_a_commit_record() {
    use drd::lambda::commits::{self, CommitRecord};
    let sb = Sandbox::start();
    let store = std::sync::Arc::new(sb.store("race-points", "race").await);
    let writers = (0..8u8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let rec = CommitRecord {
                commit: format!("{i:x}").repeat(40),
                region: "us-east-1".into(),
                version: (i + 1).to_string(),
                code_sha256: String::new(),
                deployed_at: String::new(),
                by: format!("writer {i}"),
            };
            commits::record(&store, "fn", rec).await.unwrap()
        })
    });
    for w in futures::future::join_all(writers).await {
        assert!(w.unwrap(), "every writer added its record");
    }
    let file = commits::load(&store, "fn").await.unwrap();
    assert_eq!(file.records.len(), 8, "{file:?}");
    for i in 0..8u8 {
        assert_eq!(
            file.for_version("us-east-1", &(i + 1).to_string())
                .map(|r| r.commit.clone()),
            Some(format!("{i:x}").repeat(40))
        );
    }
    // Recording the same commit for the same version again changes nothing.
    let again = CommitRecord {
        commit: "0".repeat(40),
        region: "us-east-1".into(),
        version: "1".into(),
        code_sha256: String::new(),
        deployed_at: String::new(),
        by: "again".into(),
    };
    assert!(!commits::record(&store, "fn", again).await.unwrap());
}
