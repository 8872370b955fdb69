//! Procedure 5 on the lab (issue 16): `drd failover-ci` both ways, end to end, every end state
//! read back with a second client (the AWS CLI, the git CLI, the lab GitHub's REST API).
//!
//! One sandbox for the whole story, because the pipeline's Test stage compiles the classifier:
//! GitHub goes down; a fix committed in a developer's clone reaches the mirror with `drd mirror
//! push --from`; `--dry-run` shows the plan and writes nothing; the failover is killed after
//! every step and while it waits on the pipeline, and resumed (while it runs, a second run of
//! either direction exits 3); the standby pipeline deploys the fix once; a second run starts
//! nothing; a GitHub deploy that starts late is refused by the CI epoch and touches nothing;
//! GitHub answers again and a further run disables the workflow (closing the reconcile item);
//! failback pushes the fix to GitHub, moves the epoch and deploys through the workflow, and a
//! second failback dispatches nothing.

use drd_e2e::{bootstrap, git, root, text, Sandbox};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PIPELINE: &str = "ci-standby";
const STORE: &str = "drd-classifier-points";
const PREFIX: &str = "speaker-role-classifier/";
const FUNCTION: &str = "speaker-role-classifier";
const REPO: &str = "speaker-role/classifier";

/// The shipped policy with the standby pipeline, the mirrored repository and the GitHub API.
fn policy(sb: &Sandbox) -> PathBuf {
    let shipped = std::fs::read_to_string(root().join("policies/classifier.toml")).unwrap();
    let path = sb.dir.path().join("classifier.toml");
    std::fs::write(
        &path,
        shipped.replace(
            "../classifier",
            &root().join("classifier").display().to_string(),
        ) + &format!(
            r#"
[pipeline]
name = "{PIPELINE}"
max_retries = 2
template = "{}"
deploy_policy_arn = "arn:aws:iam::123456789012:policy/drd-deploy"

[ci]
repository = "https://github.com/{REPO}.git"
branch = "main"

[github]
api_url = "{}"
repository = "{REPO}"
token_secret = "github-token"
"#,
            root().join("classifier/ci/pipeline.yaml").display(),
            sb.var("DRD_GITHUB_API"),
        ),
    )
    .unwrap();
    path
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The lab GitHub's REST API, as a second client.
fn github(sb: &Sandbox, path: &str) -> Value {
    let token = std::fs::read_to_string(sb.var("DRD_SANDBOX_GITHUB_TOKEN_FILE")).unwrap();
    let url = format!("{}/repos/{REPO}/actions/{path}", sb.var("DRD_GITHUB_API"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(token.trim())
            .header("user-agent", "drd-e2e")
            .send()
            .await
            .expect("the lab GitHub answers");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    })
}

fn store_json(sb: &Sandbox, key: &str) -> Value {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(sb.get_json("us-west-2", STORE, &format!("{PREFIX}{key}")))
}

fn store_keys(sb: &Sandbox, prefix: &str) -> Vec<String> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(sb.list_keys("us-west-2", STORE, &format!("{PREFIX}{prefix}")))
}

fn executions(sb: &Sandbox) -> Vec<Value> {
    sb.aws_cli(&[
        "codepipeline",
        "list-pipeline-executions",
        "--pipeline-name",
        PIPELINE,
    ])["pipelineExecutionSummaries"]
        .as_array()
        .unwrap()
        .clone()
}

/// What a refused deploy must not change: versions, the alias, the stack, the artifacts.
fn deployed_state(sb: &Sandbox) -> Vec<Value> {
    let artifacts = sb.aws_cli(&["s3api", "list-buckets"])["Buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["Name"].as_str())
        .filter(|n| n.starts_with("drd-artifacts"))
        .map(|b| sb.aws_cli(&["s3api", "list-objects-v2", "--bucket", b]))
        .collect::<Vec<_>>();
    vec![
        sb.aws_cli(&[
            "lambda",
            "list-versions-by-function",
            "--function-name",
            FUNCTION,
        ]),
        sb.aws_cli(&[
            "lambda",
            "get-alias",
            "--function-name",
            FUNCTION,
            "--name",
            "live",
        ]),
        sb.aws_cli(&[
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            FUNCTION,
        ])["Stacks"][0]["LastUpdatedTime"]
            .clone(),
        Value::Array(artifacts),
    ]
}

/// A bootstrap that differs from the deployed one (a byte appended to the ELF): a deploy of it
/// would upload a package and publish a version, so a refusal that changes nothing is visible.
fn other_bootstrap(dir: &Path) -> PathBuf {
    let mut b = std::fs::read(bootstrap()).unwrap();
    b.extend_from_slice(b"\0drd-e2e stale run");
    let p = dir.join("bootstrap-stale");
    std::fs::write(&p, b).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

/// Set up: secrets, a clone and a mirror while GitHub answers; then the outage and a fix that
/// reaches the mirror from the clone. Returns (policy, clone, seed commit, fix commit).
fn outage_with_a_fix(sb: &Sandbox) -> (String, PathBuf, String, String) {
    let p = policy(sb).display().to_string();
    let key = sb.dir.path().join("api-key");
    std::fs::write(&key, "sk-failover-ci-0123456789").unwrap();
    sb.allow_key("sk-failover-ci-0123456789");
    for (name, file) in [
        ("openai-api-key", key.display().to_string()),
        ("github-token", sb.var("DRD_SANDBOX_GITHUB_TOKEN_FILE")),
    ] {
        // file://: neither value is ever a process argument.
        sb.aws_cli(&[
            "secretsmanager",
            "create-secret",
            "--name",
            name,
            "--secret-string",
            &format!("file://{file}"),
        ]);
    }
    let work = sb.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let clone = work.join("clone");
    git(
        &work,
        &["clone", "--quiet", &sb.var("DRD_CI_REPOSITORY"), "clone"],
    );
    let seed = git(&clone, &["rev-parse", "HEAD"]);
    ok(&sb.run(&["--policy", &p, "mirror"], ""), "drd mirror");

    ok(&sb.run(&["sandbox", "github", "down"], ""), "github down");
    std::fs::write(
        clone.join("ci/OUTAGE-FIX.md"),
        "A fix written while GitHub was down.\n",
    )
    .unwrap();
    git(&clone, &["add", "ci/OUTAGE-FIX.md"]);
    git(
        &clone,
        &[
            "-c",
            "user.name=On Call",
            "-c",
            "user.email=oncall@example.invalid",
            "commit",
            "--quiet",
            "-m",
            "Fix shipped during the GitHub outage",
        ],
    );
    let fix = git(&clone, &["rev-parse", "HEAD"]);
    let out = sb.run(
        &[
            "--policy",
            &p,
            "mirror",
            "push",
            "--from",
            clone.to_str().unwrap(),
        ],
        "",
    );
    ok(&out, "mirror push --from");
    assert!(
        text(&out).contains(&fix),
        "the mirror took the fix: {}",
        text(&out)
    );
    (p, clone, seed, fix)
}

/// `drd --output json failover-ci --to TO EXTRA...`, killed at the failpoint `fp` if given.
fn failover_ci(
    sb: &Sandbox,
    p: &str,
    to: &str,
    extra: &[&str],
    fp: Option<&str>,
) -> std::process::Output {
    let mut args = vec!["--policy", p, "--output", "json", "failover-ci", "--to", to];
    args.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = fp.map(|f| vec![("DRD_FAILPOINT", f)]).unwrap_or_default();
    sb.run_env(&args, "", &env)
}

/// The runs journaled in the store.
fn journal_runs(sb: &Sandbox) -> Vec<String> {
    let mut runs: Vec<String> = store_keys(sb, "journal/")
        .iter()
        .filter_map(|k| k.split('/').nth(2).map(str::to_string))
        .collect();
    runs.dedup();
    runs
}

/// Kill the failover after every step's action and check but before its journal entry
/// (SIGKILL), so each resume runs that action again; then kill it while it waits on the
/// execution it started, and check meanwhile that a run of either direction exits 3. The final
/// report.
fn killed_after_every_step_then_resumed(sb: &Sandbox, p: &str) -> Value {
    let steps = ["preflight", "pipeline", "epoch", "github", "source"];
    let failover = |extra: &[&str], fp: Option<&str>| failover_ci(sb, p, "codepipeline", extra, fp);
    let fp = format!("{}:after-action", steps[0]);
    let out = failover(&[], Some(&fp));
    assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text(&out));
    let run = journal_runs(sb).first().expect("a journaled run").clone();
    for step in &steps[1..] {
        let fp = format!("{step}:after-action");
        let out = failover(&["--resume", &run], Some(&fp));
        assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text(&out));
    }
    // The deploy step, killed while it waits on the execution it started (the window between
    // StartPipelineExecution and the journal); meanwhile neither direction may start.
    let mut c = sb.drd();
    c.args([
        "--policy",
        p,
        "failover-ci",
        "--to",
        "codepipeline",
        "--resume",
        &run,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while executions(sb).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no execution started");
        std::thread::sleep(Duration::from_millis(200));
    }
    for to in ["codepipeline", "github"] {
        let out = sb.run(&["--policy", p, "failover-ci", "--to", to], "");
        assert_eq!(
            out.status.code(),
            Some(3),
            "a concurrent --to {to}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("runbook-ci-failover"),
            "held by the one run lease of both directions: {}",
            text(&out)
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let out = failover(&["--resume", &run], None);
    serde_json::from_str(&ok(&out, "the last resume")).unwrap()
}

#[test]
fn ci_fails_over_to_codepipeline_from_the_mirror_and_back_to_github() {
    drd_e2e::require_failpoints();
    let sb = Sandbox::start_ci_lab();
    let (p, _clone, seed, fix) = outage_with_a_fix(&sb);
    assert_ne!(seed, fix);

    // --dry-run: the plan with what preflight observed; nothing written.
    let out = sb.run(
        &[
            "--policy",
            &p,
            "failover-ci",
            "--to",
            "codepipeline",
            "--dry-run",
        ],
        "",
    );
    let plan = ok(&out, "dry-run");
    assert!(
        plan.contains(&fix),
        "the plan names the mirrored fix: {plan}"
    );
    assert!(
        plan.contains("unreachable"),
        "GitHub's state is observed: {plan}"
    );
    assert!(store_keys(&sb, "ci/").is_empty(), "no epoch written");
    assert!(store_keys(&sb, "journal/").is_empty(), "no journal written");
    let pipelines = sb.aws_cli(&["codepipeline", "list-pipelines"]);
    assert_eq!(pipelines["pipelines"], serde_json::json!([]), "{pipelines}");

    let report = killed_after_every_step_then_resumed(&sb, &p);
    assert_eq!(report["to"], "codepipeline", "{report}");
    assert_eq!(report["commit"], fix.as_str(), "{report}");
    assert!(report["ci_rto_ms"].as_u64().unwrap() > 0, "{report}");
    assert!(report["ci_rpo_s"].as_u64().is_some(), "{report}");
    let execution = report["execution"].as_str().unwrap().to_string();
    let steps = report["run"]["steps"].as_array().unwrap();
    let version = steps.iter().find(|s| s["id"] == "source").unwrap()["outputs"]["version_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Read back with the AWS CLI: one execution, on the zip's object version, with the commit.
    let list = executions(&sb);
    assert_eq!(
        list.len(),
        1,
        "the resume after a kill during the wait started nothing twice: {list:?}"
    );
    let e = sb.aws_cli(&[
        "codepipeline",
        "get-pipeline-execution",
        "--pipeline-name",
        PIPELINE,
        "--pipeline-execution-id",
        &execution,
    ])["pipelineExecution"]
        .clone();
    assert_eq!(e["status"], "Succeeded", "{e}");
    assert_eq!(
        e["artifactRevisions"][0]["revisionId"],
        version.as_str(),
        "{e}"
    );
    assert_eq!(e["variables"][0]["name"], "COMMIT_SHA", "{e}");
    assert_eq!(e["variables"][0]["resolvedValue"], fix.as_str(), "{e}");
    let st: Value = serde_json::from_str(&ok(
        &sb.run(
            &["--policy", &p, "--output", "json", "status", "--deep"],
            "",
        ),
        "status",
    ))
    .unwrap();
    assert_eq!(st["live"]["commit"], fix.as_str(), "{st}");
    assert_eq!(st["healthy"], true, "T2 included: {st}");
    let epoch = store_json(&sb, "ci/active.json");
    assert_eq!(epoch["provider"], "codepipeline", "{epoch}");
    assert_eq!(epoch["epoch"], 1, "{epoch}");
    assert_eq!(
        epoch["reconcile"][0]["id"], "disable-workflow:deploy.yml",
        "GitHub was down, so disabling the workflow is left to reconcile: {epoch}"
    );

    // A second run starts nothing and uploads nothing.
    let source = steps.iter().find(|s| s["id"] == "source").unwrap()["outputs"]["bucket"]
        .as_str()
        .unwrap()
        .to_string();
    let zips = |sb: &Sandbox| {
        sb.aws_cli(&["s3api", "list-object-versions", "--bucket", &source])["Versions"].clone()
    };
    let before = zips(&sb);
    ok(
        &sb.run(&["--policy", &p, "failover-ci", "--to", "codepipeline"], ""),
        "second run",
    );
    assert_eq!(
        executions(&sb).len(),
        1,
        "a second run started an execution"
    );
    assert_eq!(zips(&sb), before, "a second run uploaded a zip");

    // A GitHub run that starts late (queued during the outage) is refused and touches nothing.
    let before = deployed_state(&sb);
    let stale = other_bootstrap(sb.dir.path());
    let out = sb.run(
        &[
            "--policy",
            &p,
            "deploy",
            "--ci-provider",
            "github",
            "--commit",
            &seed,
            "--bootstrap",
            stale.to_str().unwrap(),
        ],
        "",
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not hold the CI epoch"),
        "{}",
        text(&out)
    );
    assert_eq!(
        deployed_state(&sb),
        before,
        "the refused deploy changed AWS"
    );

    // GitHub answers again before failback: a further failover run disables the workflow
    // now, which closes the reconcile item, and starts nothing.
    ok(&sb.run(&["sandbox", "github", "up"], ""), "github up");
    ok(
        &sb.run(&["--policy", &p, "failover-ci", "--to", "codepipeline"], ""),
        "a run with GitHub back",
    );
    assert_eq!(executions(&sb).len(), 1, "{:?}", executions(&sb));
    let wf = github(&sb, "workflows/deploy.yml");
    assert_eq!(wf["state"], "disabled_manually", "{wf}");
    let epoch = store_json(&sb, "ci/active.json");
    assert_eq!(epoch["reconcile"], serde_json::json!([]), "{epoch}");
    assert_eq!(epoch["epoch"], 1, "{epoch}");

    failback(&sb, &p, &fix, &stale);
}

/// GitHub returns: failback pushes the fix, moves the epoch, deploys through the workflow;
/// killed after every step's action (before its journal entry) and resumed, it still
/// dispatches exactly one run.
fn failback(sb: &Sandbox, p: &str, fix: &str, stale: &Path) {
    let failback = |extra: &[&str], fp: Option<&str>| failover_ci(sb, p, "github", extra, fp);
    let before = journal_runs(sb);
    let out = failback(&[], Some("preflight:after-action"));
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    let run = journal_runs(sb)
        .into_iter()
        .find(|r| !before.contains(r))
        .expect("the failback's journal");
    for step in ["push", "epoch", "deploy", "reconcile"] {
        let fp = format!("{step}:after-action");
        let out = failback(&["--resume", &run], Some(&fp));
        assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text(&out));
    }
    let out = failback(&["--resume", &run], None);
    let report: Value = serde_json::from_str(&ok(&out, "failover-ci --to github")).unwrap();
    assert_eq!(report["commit"], fix, "{report}");

    // The lab remote's main is the fix (git CLI), the workflow is enabled and its run of the
    // fix succeeded (REST), the epoch moved on and nothing is left to reconcile.
    let remote = git(
        sb.dir.path(),
        &["ls-remote", &sb.var("DRD_CI_REPOSITORY"), "refs/heads/main"],
    );
    assert!(remote.starts_with(fix), "{remote}");
    let wf = github(sb, "workflows/deploy.yml");
    assert_eq!(wf["state"], "active", "{wf}");
    let runs = github(sb, &format!("workflows/deploy.yml/runs?head_sha={fix}"));
    assert_eq!(
        runs["total_count"], 1,
        "one dispatch through five kills: {runs}"
    );
    let run = &runs["workflow_runs"][0];
    assert_eq!(run["conclusion"], "success", "{runs}");
    assert_eq!(
        report["execution"].as_str(),
        Some(run["id"].to_string().as_str()),
        "{report}"
    );
    let epoch = store_json(sb, "ci/active.json");
    assert_eq!(epoch["provider"], "github", "{epoch}");
    assert_eq!(epoch["epoch"], 2, "{epoch}");
    assert_eq!(epoch["reconcile"], serde_json::json!([]), "{epoch}");
    // A second failback dispatches nothing new.
    ok(
        &sb.run(&["--policy", p, "failover-ci", "--to", "github"], ""),
        "second failback",
    );
    let again = github(sb, &format!("workflows/deploy.yml/runs?head_sha={fix}"));
    assert_eq!(again["total_count"], runs["total_count"], "{again}");
    let st: Value = serde_json::from_str(&ok(
        &sb.run(&["--policy", p, "--output", "json", "status"], ""),
        "status",
    ))
    .unwrap();
    assert_eq!(st["live"]["commit"], fix, "{st}");

    // Now a late CodePipeline execution is the stale one (the provider from the environment).
    let before = deployed_state(sb);
    let out = sb.run_env(
        &[
            "--policy",
            p,
            "deploy",
            "--bootstrap",
            stale.to_str().unwrap(),
        ],
        "",
        &[("DRD_CI_PROVIDER", "codepipeline")],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not hold the CI epoch"),
        "{}",
        text(&out)
    );
    assert_eq!(deployed_state(sb), before);
}

/// The CI epoch record has many writers (operators, runs): every change is a compare-and-swap,
/// so eight concurrent switches to the same provider yield exactly one switch, and reconcile
/// items added while switches race are all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_epoch_switches_make_exactly_one_switch_and_lose_no_item() {
    use drd::store::ci_epoch::{self, Provider, Reconcile};
    let sb = Sandbox::start();
    let store = std::sync::Arc::new(sb.store("epoch-race", "race").await);
    let switches = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            ci_epoch::switch(&store, Provider::Codepipeline, &format!("run-{i}"), "test")
                .await
                .unwrap()
        })
    });
    let items = (0..4).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let item = Reconcile {
                id: format!("item-{i}"),
                what: "x".into(),
                since: String::new(),
                run: String::new(),
            };
            ci_epoch::add_reconcile(&store, item).await.unwrap()
        })
    });
    let switched = futures::future::join_all(switches)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().1)
        .count();
    for r in futures::future::join_all(items).await {
        assert!(r.unwrap().1, "every item was added");
    }
    assert_eq!(switched, 1, "exactly one of eight racing switches wrote");
    let (rec, _) = ci_epoch::read(&store).await.unwrap();
    assert_eq!(rec.provider, Provider::Codepipeline);
    assert_eq!(rec.epoch, 1);
    assert_eq!(rec.reconcile.len(), 4, "{rec:?}");
    // The provider that does not hold the epoch is refused; the one that does passes.
    assert!(ci_epoch::require(&store, Provider::Github).await.is_err());
    assert!(ci_epoch::require(&store, Provider::Codepipeline)
        .await
        .is_ok());
}

/// The shipped github-outage drill on the CI lab: GitHub goes down, ci-failover moves deploys to
/// the standby CodePipeline (which deploys the mirrored head), the CI tier of the prober sees the
/// outage and its end; the rollback brings GitHub back and fails back. Read with second clients:
/// the epoch record (S3), the workflow (the lab GitHub's REST API), the pipeline's executions.
#[test]
fn the_github_outage_drill_fails_ci_over_and_back() {
    let sb = Sandbox::start_ci_lab();
    let p = policy(&sb).display().to_string();
    let key = sb.dir.path().join("api-key");
    std::fs::write(&key, "sk-drill-ci-0123456789").unwrap();
    sb.allow_key("sk-drill-ci-0123456789");
    for (name, file) in [
        ("openai-api-key", key.display().to_string()),
        ("github-token", sb.var("DRD_SANDBOX_GITHUB_TOKEN_FILE")),
    ] {
        sb.aws_cli(&[
            "secretsmanager",
            "create-secret",
            "--name",
            name,
            "--secret-string",
            &format!("file://{file}"),
        ]);
    }
    let work = sb.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(
        &work,
        &["clone", "--quiet", &sb.var("DRD_CI_REPOSITORY"), "clone"],
    );
    let seed = git(&work.join("clone"), &["rev-parse", "HEAD"]);
    ok(&sb.run(&["--policy", &p, "mirror"], ""), "drd mirror");
    // The service as GitHub's workflow deployed it.
    ok(
        &sb.run(
            &[
                "--policy",
                &p,
                "deploy",
                "--bootstrap",
                bootstrap().to_str().unwrap(),
                "--commit",
                &seed,
            ],
            "",
        ),
        "deploy",
    );
    let report = sb.dir.path().join("reports");
    let out = sb.run(
        &[
            "--policy",
            &p,
            "--output",
            "json",
            "drill",
            "run",
            "github-outage",
            "--report",
            report.to_str().unwrap(),
        ],
        "",
    );
    let r: Value = serde_json::from_str(&ok(&out, "drill run github-outage")).unwrap();
    assert_eq!(r["outcome"], "met", "{r:#}");
    assert_eq!(r["recovery"]["runbook"], "ci-failover");
    assert_eq!(r["recovery"]["outcome"], "succeeded", "{r:#}");
    assert!(r["gate"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["tier"] == "CI"));
    // The CI tier saw GitHub hold the epoch without answering, then a CI that answers.
    let samples = r["samples"].as_array().unwrap();
    assert!(
        samples.iter().any(|s| s["detail"]
            .as_str()
            .unwrap_or("")
            .contains("github holds the CI epoch and does not answer")),
        "{r:#}"
    );
    assert!(
        r["measured"]["rto_seconds"].as_f64().unwrap() >= 2.0,
        "{r:#}"
    );
    // RPO: the mirror's age at the fault (it was fetched before the drill began).
    assert!(
        r["measured"]["rpo_seconds"].as_f64().unwrap() > 0.0,
        "{r:#}"
    );
    assert!(
        r["measured"]["rpo_note"].as_str().unwrap().contains(&seed),
        "{r:#}"
    );
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    assert!(
        r["rollback"]["done"]
            .to_string()
            .contains("ci-failback (run"),
        "{r:#}"
    );
    // As before: GitHub holds the epoch (after two switches) and its workflow is enabled.
    let epoch = store_json(&sb, "ci/active.json");
    assert_eq!(epoch["provider"], "github", "{epoch:#}");
    assert_eq!(epoch["epoch"], 2, "{epoch:#}");
    assert_eq!(github(&sb, "workflows/deploy.yml")["state"], "active");
    // live already ran the mirrored head: the standby pipeline had nothing to deploy and was
    // not started (ci_fails_over_... covers a deploy through it).
    let runs = executions(&sb);
    assert!(runs.is_empty(), "{runs:?} {:#}", r["recovery"]);
}
