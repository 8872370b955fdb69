//! GitHub Actions in the lab: the workflows and workflow-runs REST endpoints
//! (<https://docs.github.com/en/rest/actions/workflows>, `.../actions/workflow-runs`) over the
//! lab repository, and the runner behind a dispatch.
//!
//! Workflows are the default branch's `.github/workflows/*.yml`; a workflow's id is derived from
//! its path. `PUT .../disable` and `.../enable` set its state (`disabled_manually`, `active`). A
//! dispatch (`POST .../dispatches` with a branch or tag of the lab repository) is refused as
//! GitHub refuses it (422: disabled workflow, unknown ref, no `workflow_dispatch` trigger in
//! the ref's copy of the file, unexpected or missing inputs); otherwise it queues a run, which
//! checks out the ref's commit in a scratch directory (its log under `<dir>/github-runs/<run_id>/`) and runs the step
//! `deploy` of job `deploy` (see [`crate::workflow`]) with bash, its output in `.../log`. Runs
//! go queued -> in_progress -> completed (`success` or `failure`). Only dispatches start runs.

use crate::git::{Resolved, REPOSITORY};
use crate::github::{gh_error, now, runs_dir, Lab};
use crate::workflow::{Workflow, DEPLOY};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

type Q = Query<HashMap<String, String>>;

/// The workflows and runs routes (the caller adds authorization and the state).
pub(crate) fn routes() -> Router<Arc<Lab>> {
    let wf = "/repos/{owner}/{repo}/actions/workflows/{workflow_id}";
    Router::new()
        .route(
            "/repos/{owner}/{repo}/actions/workflows",
            get(list_workflows),
        )
        .route(wf, get(get_workflow))
        .route(&format!("{wf}/disable"), put(disable))
        .route(&format!("{wf}/enable"), put(enable))
        .route(&format!("{wf}/dispatches"), post(dispatch))
        .route(&format!("{wf}/runs"), get(list_workflow_runs))
        .route("/repos/{owner}/{repo}/actions/runs", get(list_runs))
        .route("/repos/{owner}/{repo}/actions/runs/{run_id}", get(get_run))
}

/// One workflow run (`event` is always `workflow_dispatch`: only dispatches start runs).
#[derive(Debug, Clone)]
pub(crate) struct Run {
    id: u64,
    workflow_id: u64,
    name: String,
    path: String,
    run_number: u64,
    head_branch: String,
    head_sha: String,
    status: &'static str,
    conclusion: Option<&'static str>,
    created_at: String,
    updated_at: String,
    run_started_at: String,
}

/// A workflow on the default branch.
struct Listed {
    wf: Workflow,
    id: u64,
    created: String,
    updated: String,
    branch: String,
}

/// A workflow's id: a number derived from its path, so it is the same in every sandbox.
fn workflow_id(path: &str) -> u64 {
    let d = Sha256::digest(path.as_bytes());
    u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])) % 900_000_000 + 100_000_000
}

impl Lab {
    /// The workflows of the default branch's head.
    async fn workflows(&self) -> Vec<Listed> {
        let Some(head) = self.repo.default_branch().await else {
            return vec![];
        };
        let mut out = vec![];
        for path in self.repo.workflow_files(&head.sha).await {
            let text = self.repo.show(&head.sha, &path).await.unwrap_or_default();
            let (created, updated) = self.repo.dates(&head.sha, &path).await.unwrap_or_default();
            out.push(Listed {
                id: workflow_id(&path),
                wf: Workflow::parse(&path, &text),
                created,
                updated,
                branch: head.name.clone(),
            });
        }
        out
    }

    /// A workflow by id or by file name (`deploy.yml`).
    async fn find(&self, key: &str) -> Option<Listed> {
        self.workflows()
            .await
            .into_iter()
            .find(|l| l.id.to_string() == key || l.wf.file_name() == key)
    }

    fn workflow_json(&self, l: &Listed) -> Value {
        let disabled = self.disabled.lock().expect("disabled").contains(&l.id);
        let html = format!("{}/{REPOSITORY}/blob/{}/{}", self.api, l.branch, l.wf.path);
        json!({
            "id": l.id,
            "node_id": format!("W_lab{}", l.id),
            "name": l.wf.name,
            "path": l.wf.path,
            "state": if disabled { "disabled_manually" } else { "active" },
            "created_at": l.created,
            "updated_at": l.updated,
            "url": format!("{}/repos/{REPOSITORY}/actions/workflows/{}", self.api, l.id),
            "html_url": html,
            "badge_url": format!("{}/{REPOSITORY}/workflows/{}/badge.svg", self.api, l.wf.name),
        })
    }

    fn run_json(&self, r: &Run) -> Value {
        let url = format!("{}/repos/{REPOSITORY}/actions/runs/{}", self.api, r.id);
        json!({
            "id": r.id,
            "name": r.name,
            "node_id": format!("WFR_lab{}", r.id),
            "head_branch": r.head_branch,
            "head_sha": r.head_sha,
            "path": r.path,
            "display_title": r.name,
            "run_number": r.run_number,
            "run_attempt": 1,
            "event": "workflow_dispatch",
            "status": r.status,
            "conclusion": r.conclusion,
            "workflow_id": r.workflow_id,
            "url": url,
            "html_url": format!("{}/{REPOSITORY}/actions/runs/{}", self.api, r.id),
            "jobs_url": format!("{url}/jobs"),
            "logs_url": format!("{url}/logs"),
            "cancel_url": format!("{url}/cancel"),
            "rerun_url": format!("{url}/rerun"),
            "workflow_url": format!("{}/repos/{REPOSITORY}/actions/workflows/{}", self.api, r.workflow_id),
            "pull_requests": [],
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "run_started_at": r.run_started_at,
            "actor": {"login": "drd-lab"},
            "triggering_actor": {"login": "drd-lab"},
            "repository": {"full_name": REPOSITORY},
        })
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Run)) {
        if let Some(r) = self
            .runs
            .lock()
            .expect("runs")
            .iter_mut()
            .find(|r| r.id == id)
        {
            f(r);
        }
    }

    /// Run the dispatched workflow: queued -> in_progress -> completed.
    async fn execute(self: Arc<Self>, id: u64, wf: Workflow, at: Resolved) {
        let t = now();
        self.update(id, |r| {
            r.status = "in_progress";
            r.run_started_at = t.clone();
            r.updated_at = t;
        });
        let dir = runs_dir(&self.dir).join(id.to_string());
        let ok = self.run_step(id, &wf, &at, &dir).await;
        let t = now();
        self.update(id, |r| {
            r.status = "completed";
            r.conclusion = Some(if ok { "success" } else { "failure" });
            r.updated_at = t;
        });
    }

    /// Check out the ref's commit and run its step `deploy`; whether it succeeded. Every reason
    /// for a failure is a `lab:` line in the run's log.
    async fn run_step(&self, id: u64, wf: &Workflow, at: &Resolved, dir: &std::path::Path) -> bool {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(run = id, "cannot create {}: {e}", dir.display());
            return false;
        }
        let files = std::fs::File::create(dir.join("log"))
            .and_then(|l| Ok((l.try_clone()?, l.try_clone()?, l)));
        let (out, err, mut log) = match files {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(run = id, "cannot create the log of run {id}: {e}");
                return false;
            }
        };
        let mut say = |line: String| {
            let _ = writeln!(log, "lab: {line}");
        };
        say(format!(
            "run {id} of {} at {} ({})",
            wf.path, at.full, at.sha
        ));
        let step = match wf.deploy_step() {
            Ok(s) => s,
            Err(why) => {
                say(why);
                return false;
            }
        };
        for s in &step.skipped_env {
            say(s.clone());
        }
        if !step.not_run.is_empty() {
            say(format!(
                "not run, the lab is their environment: {}",
                step.not_run.join(", ")
            ));
        }
        // Checked out outside the sandbox directory, as a runner checks out on a machine of its
        // own: a sandbox directory inside a cargo workspace (the demo's .drd/) would otherwise
        // make cargo take the checkout for a member of that workspace. Removed after the run.
        let scratch = match tempfile::Builder::new().prefix("drd-lab-runner-").tempdir() {
            Ok(t) => t,
            Err(e) => {
                say(format!(
                    "cannot make a scratch directory for the checkout: {e}"
                ));
                return false;
            }
        };
        let workspace = scratch.path().join("workspace");
        if let Err(e) = self
            .repo
            .checkout(&at.sha, &workspace, &dir.join("index"))
            .await
        {
            say(format!("cannot check out {}: {e}", at.sha));
            return false;
        }
        let script = dir.join("deploy.sh");
        if let Err(e) = std::fs::write(&script, &step.script) {
            say(format!("cannot write {}: {e}", script.display()));
            return false;
        }
        say(format!(
            "running step `{DEPLOY}` of job `{DEPLOY}` with {}",
            step.shell.join(" ")
        ));
        let cwd = match &step.working_directory {
            Some(d) => workspace.join(d),
            None => workspace.clone(),
        };
        let is_tag = at.full.starts_with("refs/tags/");
        let github = [
            ("CI", "true".to_string()),
            ("GITHUB_ACTIONS", "true".to_string()),
            ("GITHUB_SHA", at.sha.clone()),
            ("GITHUB_REF", at.full.clone()),
            ("GITHUB_REF_NAME", at.name.clone()),
            (
                "GITHUB_REF_TYPE",
                if is_tag { "tag" } else { "branch" }.to_string(),
            ),
            ("GITHUB_WORKSPACE", workspace.display().to_string()),
            ("GITHUB_RUN_ID", id.to_string()),
            ("GITHUB_RUN_ATTEMPT", "1".to_string()),
            ("GITHUB_REPOSITORY", REPOSITORY.to_string()),
            ("GITHUB_EVENT_NAME", "workflow_dispatch".to_string()),
            ("GITHUB_WORKFLOW", wf.name.clone()),
            ("GITHUB_JOB", DEPLOY.to_string()),
            ("GITHUB_API_URL", self.api.clone()),
        ];
        let status = tokio::process::Command::new(&step.shell[0])
            .args(&step.shell[1..])
            .arg(&script)
            .current_dir(&cwd)
            .envs(self.run_env.iter().map(|(k, v)| (k, v)))
            .envs(step.env.iter().map(|(k, v)| (k, v)))
            .envs(github)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .status()
            .await;
        match status {
            Ok(s) => {
                say(format!("step `{DEPLOY}` exited: {s}"));
                s.success()
            }
            Err(e) => {
                say(format!("cannot start {}: {e}", step.shell[0]));
                false
            }
        }
    }
}

/// `per_page` (default 30, at most 100) and `page` (from 1), as GitHub pages lists.
fn page<T>(items: Vec<T>, q: &HashMap<String, String>) -> Vec<T> {
    let per = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let n = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    items.into_iter().skip((n - 1) * per).take(per).collect()
}

async fn list_workflows(State(lab): State<Arc<Lab>>, Query(q): Q) -> Response {
    let all = lab.workflows().await;
    let total = all.len();
    let workflows: Vec<Value> = page(all, &q).iter().map(|l| lab.workflow_json(l)).collect();
    Json(json!({"total_count": total, "workflows": workflows})).into_response()
}

async fn get_workflow(
    State(lab): State<Arc<Lab>>,
    Path((_, _, key)): Path<(String, String, String)>,
) -> Response {
    match lab.find(&key).await {
        Some(l) => Json(lab.workflow_json(&l)).into_response(),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn set_enabled(lab: &Lab, key: &str, enable: bool) -> Response {
    let Some(l) = lab.find(key).await else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut disabled = lab.disabled.lock().expect("disabled");
    if enable {
        disabled.remove(&l.id);
    } else {
        disabled.insert(l.id);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn disable(
    State(lab): State<Arc<Lab>>,
    Path((_, _, key)): Path<(String, String, String)>,
) -> Response {
    set_enabled(&lab, &key, false).await
}

async fn enable(
    State(lab): State<Arc<Lab>>,
    Path((_, _, key)): Path<(String, String, String)>,
) -> Response {
    set_enabled(&lab, &key, true).await
}

async fn dispatch(
    State(lab): State<Arc<Lab>>,
    Path((_, _, key)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let unprocessable = |m: &str| gh_error(StatusCode::UNPROCESSABLE_ENTITY, m);
    let Some(listed) = lab.find(&key).await else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(r) = body.get("ref").and_then(Value::as_str) else {
        return unprocessable("Invalid request.\n\n\"ref\" wasn't supplied.");
    };
    if lab.disabled.lock().expect("disabled").contains(&listed.id) {
        return unprocessable("Cannot trigger a 'workflow_dispatch' on a disabled workflow");
    }
    let Some(at) = lab.repo.resolve(r).await else {
        return unprocessable(&format!("No ref found for: {r}"));
    };
    // The workflow as the dispatched ref has it, as GitHub runs it.
    let path = listed.wf.path.clone();
    let Some(text) = lab.repo.show(&at.sha, &path).await else {
        return unprocessable("Workflow does not have 'workflow_dispatch' trigger");
    };
    let wf = Workflow::parse(&path, &text);
    let Some(declared) = wf.dispatch_inputs() else {
        return unprocessable("Workflow does not have 'workflow_dispatch' trigger");
    };
    let given = body
        .get("inputs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let unexpected: Vec<&String> = given
        .keys()
        .filter(|k| !declared.iter().any(|i| &i.name == *k))
        .collect();
    if !unexpected.is_empty() {
        return unprocessable(&format!("Unexpected inputs provided: {unexpected:?}"));
    }
    if let Some(i) = declared
        .iter()
        .find(|i| i.required && !i.has_default && !given.contains_key(&i.name))
    {
        return unprocessable(&format!("Required input '{}' not provided", i.name));
    }
    let id = lab.next_run.fetch_add(1, Ordering::SeqCst);
    let t = now();
    {
        let mut runs = lab.runs.lock().expect("runs");
        let run_number = runs.iter().filter(|x| x.workflow_id == listed.id).count() as u64 + 1;
        runs.push(Run {
            id,
            workflow_id: listed.id,
            name: wf.name.clone(),
            path,
            run_number,
            head_branch: at.name.clone(),
            head_sha: at.sha.clone(),
            status: "queued",
            conclusion: None,
            created_at: t.clone(),
            updated_at: t.clone(),
            run_started_at: t,
        });
    }
    tracing::info!(run = id, workflow = %wf.path, sha = %at.sha, "workflow dispatched");
    tokio::spawn(lab.clone().execute(id, wf, at));
    if body.get("return_run_details").and_then(Value::as_bool) == Some(true) {
        let url = format!("{}/repos/{REPOSITORY}/actions/runs/{id}", lab.api);
        let html = format!("{}/{REPOSITORY}/actions/runs/{id}", lab.api);
        return Json(json!({"workflow_run_id": id, "run_url": url, "html_url": html}))
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

fn runs_matching(lab: &Lab, workflow: Option<u64>, q: &HashMap<String, String>) -> Response {
    let runs: Vec<Run> = lab
        .runs
        .lock()
        .expect("runs")
        .iter()
        .rev()
        .filter(|r| workflow.is_none_or(|w| r.workflow_id == w))
        .filter(|r| q.get("head_sha").is_none_or(|s| &r.head_sha == s))
        .filter(|r| q.get("branch").is_none_or(|b| &r.head_branch == b))
        .filter(|_| q.get("event").is_none_or(|e| e == "workflow_dispatch"))
        // `status` matches a status or a conclusion.
        .filter(|r| {
            q.get("status")
                .is_none_or(|s| r.status == s || r.conclusion == Some(s.as_str()))
        })
        .cloned()
        .collect();
    let total = runs.len();
    let runs: Vec<Value> = page(runs, q).iter().map(|r| lab.run_json(r)).collect();
    Json(json!({"total_count": total, "workflow_runs": runs})).into_response()
}

async fn list_runs(State(lab): State<Arc<Lab>>, Query(q): Q) -> Response {
    runs_matching(&lab, None, &q)
}

async fn list_workflow_runs(
    State(lab): State<Arc<Lab>>,
    Path((_, _, key)): Path<(String, String, String)>,
    Query(q): Q,
) -> Response {
    match lab.find(&key).await {
        Some(l) => runs_matching(&lab, Some(l.id), &q),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn get_run(
    State(lab): State<Arc<Lab>>,
    Path((_, _, run_id)): Path<(String, String, String)>,
) -> Response {
    let found = run_id.parse::<u64>().ok().and_then(|id| {
        let runs = lab.runs.lock().expect("runs");
        runs.iter().find(|r| r.id == id).cloned()
    });
    match found {
        Some(r) => Json(lab.run_json(&r)).into_response(),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_ids_are_stable_nine_digit_numbers() {
        let a = workflow_id(".github/workflows/deploy.yml");
        assert_eq!(a, workflow_id(".github/workflows/deploy.yml"));
        assert_ne!(a, workflow_id(".github/workflows/ci.yml"));
        assert!((100_000_000..1_000_000_000).contains(&a));
    }

    #[test]
    fn pages_like_github() {
        let q = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(page((1..=40).collect(), &q(&[])).len(), 30);
        assert_eq!(
            page((1..=40).collect(), &q(&[("page", "2")])),
            (31..=40).collect::<Vec<_>>()
        );
        assert_eq!(
            page((1..=5).collect(), &q(&[("per_page", "2"), ("page", "3")])),
            vec![5]
        );
        assert_eq!(
            page((1..=500).collect::<Vec<_>>(), &q(&[("per_page", "1000")])).len(),
            100
        );
    }
}
