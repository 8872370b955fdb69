//! The lab's GitHub, driven as CI failover will drive it: `drd sandbox up --seed-repo DIR`, then
//! the real `git` CLI against the lab remote (clone, ls-remote, push) and reqwest against the
//! Actions REST API (workflows, disable/enable, dispatch, runs), with the outage switch
//! (`drd sandbox github down|up`) in between. The seed is a tiny repository made here, whose
//! deploy step writes the commit it was run for.

use drd_e2e::{drd_bin, text, Sandbox};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REPO: &str = "speaker-role/classifier";

const DEPLOY_YML: &str = r#"name: Deploy
on:
  push:
    branches: [main]
  workflow_dispatch:
env:
  STAGE: lab
jobs:
  deploy:
    runs-on: ubuntu-latest
    env:
      TOKEN: ${{ secrets.TOKEN }}
    steps:
      - uses: actions/checkout@v4
      - name: never run by the lab
        run: exit 1
      - id: deploy
        run: |
          echo deployed "$GITHUB_SHA" > out.txt
          cat out.txt
          echo "stage $STAGE ref $GITHUB_REF repo $GITHUB_REPOSITORY run $GITHUB_RUN_ID"
          test "$GITHUB_WORKSPACE" = "$PWD"
"#;

/// A seed directory: two dispatchable workflows (one without a deploy step), one that only
/// pushes trigger, a crate manifest with workspace inheritance, and a `target/` to leave out.
fn seed(root: &Path) -> PathBuf {
    let dir = root.join("seed");
    let wf = dir.join(".github/workflows");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::create_dir_all(dir.join("target/debug")).unwrap();
    std::fs::write(wf.join("deploy.yml"), DEPLOY_YML).unwrap();
    std::fs::write(
        wf.join("lint.yml"),
        "name: Lint\non: workflow_dispatch\njobs:\n  lint:\n    steps:\n      - run: echo lint\n",
    )
    .unwrap();
    std::fs::write(
        wf.join("push-only.yml"),
        "on: push\njobs:\n  deploy:\n    steps:\n      - id: deploy\n        run: echo x\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"classifier\"\nversion.workspace = true\n",
    )
    .unwrap();
    std::fs::write(dir.join("target/debug/classifier"), "build output").unwrap();
    dir
}

/// `drd sandbox up --seed-repo` into `dir/sandbox`; the sandbox and what `up` said.
fn up(dir: tempfile::TempDir, seed: &Path) -> (Sandbox, String) {
    let out = std::process::Command::new(drd_bin())
        .args(["sandbox", "up", "--output", "json", "--dir"])
        .arg(dir.path().join("sandbox"))
        .arg("--seed-repo")
        .arg(seed)
        .output()
        .expect("run drd sandbox up");
    assert!(out.status.success(), "{}", text(&out));
    let env: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let env = env
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    (Sandbox { dir, env }, said)
}

/// The real git CLI, with no user configuration and a fixed identity.
fn git(cwd: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@drd.invalid")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@drd.invalid")
        .output()
        .expect("git is installed")
}

fn git_ok(cwd: &Path, args: &[&str]) -> String {
    let out = git(cwd, args);
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `refs/heads/main`'s SHA as `git ls-remote` of the lab remote shows it.
fn remote_main(sb: &Sandbox) -> String {
    let refs = git_ok(
        sb.dir.path(),
        &["ls-remote", &sb.var("DRD_CI_REPOSITORY"), "refs/heads/main"],
    );
    refs.split_whitespace().next().unwrap_or("").to_string()
}

/// A REST client with the lab's token (read from the file the environment names).
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(sb: &Sandbox) -> Self {
        let token = std::fs::read_to_string(sb.var("DRD_SANDBOX_GITHUB_TOKEN_FILE")).unwrap();
        Self {
            base: sb.var("DRD_GITHUB_API"),
            token: token.trim().to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/repos/{REPO}/actions/{path}", self.base);
        let mut r = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(&self.token)
            .header("user-agent", "drd-e2e")
            .header("x-github-api-version", "2022-11-28");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("the lab GitHub answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// Poll a run until it completes (30 s at most).
    async fn completed(&self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, run) = self.get(&format!("runs/{id}")).await;
            assert_eq!(status, 200, "{run}");
            if run["status"] == "completed" {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} still {}",
                run["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn dispatch(&self, workflow: &str, body: Value) -> (u16, Value) {
        let path = format!("workflows/{workflow}/dispatches");
        self.call("POST", &path, Some(body)).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lab_remote_is_seeded_reproducibly_takes_pushes_and_goes_down_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = seed(tmp.path());
    let (mut sb, said) = up(tempfile::tempdir().unwrap(), &seed);
    assert!(said.contains("seeded from"), "{said}");
    assert_eq!(sb.var("DRD_GITHUB_REPOSITORY"), REPO);
    let url = sb.var("DRD_CI_REPOSITORY");
    assert!(url.ends_with("/git/speaker-role/classifier.git"), "{url}");
    assert!(
        !sb.env.iter().any(|(_, v)| v.starts_with("ghp_")),
        "the token is never printed"
    );
    let token_file = PathBuf::from(sb.var("DRD_SANDBOX_GITHUB_TOKEN_FILE"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // The seed: one commit on main, fixed identity and dates, the files as they were (the
    // workspace-inherited manifest untouched), no target/.
    let seeded = remote_main(&sb);
    assert_eq!(seeded.len(), 40, "{seeded}");
    let clone = tmp.path().join("clone");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", &url, clone.to_str().unwrap()],
    );
    let log = git_ok(&clone, &["log", "--format=%H|%an <%ae>|%aI|%cn|%cI"]);
    assert_eq!(
        log.trim(),
        format!(
            "{seeded}|drd lab <lab@drd.invalid>|2026-01-01T00:00:00Z|drd lab|2026-01-01T00:00:00Z"
        )
    );
    assert_eq!(
        std::fs::read(clone.join("Cargo.toml")).unwrap(),
        std::fs::read(seed.join("Cargo.toml")).unwrap()
    );
    assert!(!clone.join("target").exists());

    // A push with the git CLI is what ls-remote shows next.
    std::fs::write(clone.join("CHANGELOG"), "pushed by the test\n").unwrap();
    git_ok(&clone, &["add", "CHANGELOG"]);
    git_ok(&clone, &["commit", "--quiet", "-m", "a pushed commit"]);
    git_ok(&clone, &["push", "--quiet", "origin", "main"]);
    let pushed = git_ok(&clone, &["rev-parse", "HEAD"]).trim().to_string();
    assert_eq!(remote_main(&sb), pushed);

    // `up` on the running sandbox does not reseed.
    let out = sb.run(
        &[
            "sandbox",
            "up",
            "--output",
            "json",
            "--seed-repo",
            seed.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not reseeded"),
        "{}",
        text(&out)
    );
    assert_eq!(remote_main(&sb), pushed);

    // Outage: git and REST both refuse; status says so; `up` restores both.
    let api = Api::new(&sb);
    let out = sb.run(&["sandbox", "github", "down"], "");
    assert!(out.status.success(), "{}", text(&out));
    let ls = git(sb.dir.path(), &["ls-remote", &url]);
    assert!(
        !ls.status.success(),
        "ls-remote must fail while GitHub is down: {}",
        text(&ls)
    );
    let (status, body) = api.get("workflows").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().is_some(),
        "GitHub-style body: {body}"
    );
    let out = sb.run(&["sandbox", "status", "--output", "json"], "");
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["github"]["up"], false, "{st}");
    let out = sb.run(&["sandbox", "github", "up"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(remote_main(&sb), pushed);
    assert_eq!(api.get("workflows").await.0, 200);

    // A sandbox that starts again gets a fresh repository: the same seed, the same SHA.
    let out = sb.run(&["sandbox", "down"], "");
    assert!(out.status.success(), "{}", text(&out));
    let dir = std::mem::replace(&mut sb.dir, tempfile::tempdir().unwrap());
    drop(sb);
    let (sb, _) = up(dir, &seed);
    assert_eq!(remote_main(&sb), seeded, "the seed commit is reproducible");
}

/// Workflows are listed, disabled and enabled; bad dispatches are refused. The deploy
/// workflow's id.
async fn listed_disabled_enabled_and_refused(api: &Api) -> u64 {
    // Listed from the default branch's .github/workflows.
    let (status, list) = api.get("workflows").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total_count"], 3, "{list}");
    let deploy = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["path"] == ".github/workflows/deploy.yml")
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(deploy["name"], "Deploy");
    assert_eq!(deploy["state"], "active");
    for field in [
        "id",
        "node_id",
        "created_at",
        "updated_at",
        "url",
        "html_url",
        "badge_url",
    ] {
        assert!(!deploy[field].is_null(), "{field} in {deploy}");
    }
    let id = deploy["id"].as_u64().unwrap();
    let (status, by_name) = api.get("workflows/deploy.yml").await;
    assert_eq!((status, by_name["id"].as_u64()), (200, Some(id)));

    // Disabled: the state says so and a dispatch is refused, as GitHub refuses it.
    let (status, _) = api
        .call("PUT", &format!("workflows/{id}/disable"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        api.get(&format!("workflows/{id}")).await.1["state"],
        "disabled_manually"
    );
    let (status, body) = api
        .dispatch("deploy.yml", serde_json::json!({"ref": "main"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("disabled workflow"),
        "{body}"
    );
    let (status, _) = api.call("PUT", "workflows/deploy.yml/enable", None).await;
    assert_eq!(status, 204);
    assert_eq!(
        api.get(&format!("workflows/{id}")).await.1["state"],
        "active"
    );

    // Refused dispatches: unknown ref, no workflow_dispatch trigger, unknown inputs.
    let (status, body) = api
        .dispatch("deploy.yml", serde_json::json!({"ref": "nope"}))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (422, Some("No ref found for: nope"))
    );
    let (status, body) = api
        .dispatch("push-only.yml", serde_json::json!({"ref": "main"}))
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = api
        .dispatch(
            "deploy.yml",
            serde_json::json!({"ref": "main", "inputs": {"x": "1"}}),
        )
        .await;
    assert_eq!(status, 422);
    // The push was no trigger: no run exists yet.
    assert_eq!(api.get("runs").await.1["total_count"], 0);
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn workflows_are_listed_disabled_enabled_and_a_dispatch_runs_the_deploy_step() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = seed(tmp.path());
    let (sb, _) = up(tempfile::tempdir().unwrap(), &seed);
    let api = Api::new(&sb);
    // A push to main (whose deploy workflow has a push trigger) and a tag: no run starts.
    let clone = tmp.path().join("clone");
    let url = sb.var("DRD_CI_REPOSITORY");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", &url, clone.to_str().unwrap()],
    );
    git_ok(
        &clone,
        &["commit", "--quiet", "--allow-empty", "-m", "pushed"],
    );
    git_ok(&clone, &["tag", "v1"]);
    git_ok(&clone, &["push", "--quiet", "origin", "main", "v1"]);
    let sha = remote_main(&sb);

    let id = listed_disabled_enabled_and_refused(&api).await;

    // Without run details: 204. With: 200 and the run's id and URLs.
    let (status, _) = api
        .dispatch("deploy.yml", serde_json::json!({"ref": "main"}))
        .await;
    assert_eq!(status, 204);
    let (status, details) = api
        .dispatch(
            &id.to_string(),
            serde_json::json!({"ref": "refs/heads/main", "return_run_details": true}),
        )
        .await;
    assert_eq!(status, 200, "{details}");
    let run_id = details["workflow_run_id"].as_u64().unwrap();
    assert!(details["run_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/actions/runs/{run_id}")));
    assert!(details["html_url"].is_string());

    let run = api.completed(run_id).await;
    assert_eq!(run["conclusion"], "success", "{run}");
    assert_eq!(run["head_sha"], sha.as_str());
    assert_eq!(run["head_branch"], "main");
    assert_eq!(run["event"], "workflow_dispatch");
    assert_eq!(run["workflow_id"].as_u64(), Some(id));
    let run_dir = sb
        .sandbox_dir()
        .join("github-runs")
        .join(run_id.to_string());
    let log = std::fs::read_to_string(run_dir.join("log")).unwrap();
    assert!(log.contains(&format!("deployed {sha}")), "{log}");
    assert!(
        log.contains(&format!(
            "stage lab ref refs/heads/main repo {REPO} run {run_id}"
        )),
        "{log}"
    );
    assert!(log.contains("TOKEN: not a literal"), "{log}");
    assert!(
        log.contains(
            "not run, the lab is their environment: actions/checkout@v4, never run by the lab"
        ),
        "{log}"
    );
    // The step ran in the checkout of that commit (`cat out.txt` printed what it wrote there);
    // the checkout itself is gone with the run.
    assert!(log.contains(&format!("deployed {sha}\n")), "{log}");

    // Runs listed by head_sha (both dispatches), per workflow, by status and conclusion.
    let (_, runs) = api.get(&format!("runs?head_sha={sha}")).await;
    let ids: Vec<u64> = runs["workflow_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&run_id), "{runs}");
    assert_eq!(runs["total_count"], 2, "{runs}");
    let other = "0".repeat(40);
    assert_eq!(
        api.get(&format!("runs?head_sha={other}")).await.1["total_count"],
        0
    );
    let (_, runs) = api
        .get(&format!(
            "workflows/{id}/runs?event=workflow_dispatch&branch=main"
        ))
        .await;
    assert_eq!(runs["total_count"], 2, "{runs}");
    api.completed(ids.iter().copied().find(|i| *i != run_id).unwrap())
        .await;
    assert_eq!(api.get("runs?status=success").await.1["total_count"], 2);
    assert_eq!(api.get("runs?event=push").await.1["total_count"], 0);

    // A workflow without the deploy step completes as a failure and says why.
    let (status, details) = api
        .dispatch(
            "lint.yml",
            serde_json::json!({"ref": "main", "return_run_details": true}),
        )
        .await;
    assert_eq!(status, 200, "{details}");
    let lint = details["workflow_run_id"].as_u64().unwrap();
    assert_eq!(api.completed(lint).await["conclusion"], "failure");
    let log =
        std::fs::read_to_string(sb.sandbox_dir().join(format!("github-runs/{lint}/log"))).unwrap();
    assert!(log.contains("has no job `deploy`"), "{log}");

    // A tag is a ref too.
    let (status, details) = api
        .dispatch(
            "deploy.yml",
            serde_json::json!({"ref": "v1", "return_run_details": true}),
        )
        .await;
    assert_eq!(status, 200, "{details}");
    let tagged = api
        .completed(details["workflow_run_id"].as_u64().unwrap())
        .await;
    assert_eq!(
        (
            tagged["head_branch"].as_str(),
            tagged["conclusion"].as_str()
        ),
        (Some("v1"), Some("success"))
    );
    assert_eq!(tagged["head_sha"], sha.as_str());

    // The Actions secrets API is served too (drd's rotation writes there).
    let (status, key) = api.get("secrets/public-key").await;
    assert_eq!(status, 200, "{key}");
    assert!(key["key_id"].is_string() && key["key"].is_string(), "{key}");

    // A wrong token is refused; the token never reaches the host's log.
    let r = reqwest::Client::new()
        .get(format!("{}/repos/{REPO}/actions/workflows", api.base))
        .bearer_auth("ghp_wrong")
        .header("user-agent", "drd-e2e")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (status, _) = api.get("runs/999999").await;
    assert_eq!(status, 404);
    let host_log = std::fs::read_to_string(sb.sandbox_dir().join("host.log")).unwrap();
    assert!(!host_log.contains(&api.token), "the token is in host.log");
}
