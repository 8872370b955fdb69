//! The lab's pipeline executor: CodePipeline executions, which moto does not run.
//!
//! moto keeps pipeline definitions (CreatePipeline, GetPipeline, ...) but serves no executions.
//! The region gate hands these operations to this executor instead of moto, in the service's
//! JSON wire format (`awsJson1_1`, `X-Amz-Target: CodePipeline_20150709.<Op>`):
//! StartPipelineExecution (with `sourceRevisions` and `variables`), GetPipelineExecution,
//! ListPipelineExecutions, GetPipelineState, RetryStageExecution and StopPipelineExecution.
//!
//! An execution reads its pipeline's definition from moto when it starts, then runs stage by
//! stage: an S3 source action fetches the exact object version from moto's S3; a CodeBuild
//! action reads its project from moto's CodeBuild and runs the buildspec from the source
//! (`buildspec.rs`). A failed action fails its stage and the execution, which can then be
//! retried (`RetryStageExecution`) as on AWS. Executions of one pipeline run one at a time in
//! start order (`QUEUED`). State lives in the lab process; logs under `<dir>/ci/<execution>/`.

use crate::buildspec;
use axum::body::Bytes;
use drd::aws::Aws;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The operations this executor answers (the rest go to moto).
pub const OPERATIONS: &[&str] = &[
    "StartPipelineExecution",
    "GetPipelineExecution",
    "ListPipelineExecutions",
    "GetPipelineState",
    "RetryStageExecution",
    "StopPipelineExecution",
];

/// URLs of the lab a build talks to (as a user of the lab would).
#[derive(Clone, Debug, Default)]
pub struct LabUrls {
    pub gate: String,
    pub host: String,
    pub llm: String,
}

pub struct Executor {
    aws: Aws,
    dir: PathBuf,
    urls: LabUrls,
    runs: Mutex<Vec<Execution>>,
    /// One queue per pipeline (QUEUED execution mode).
    queues: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `pipeline/action` -> failures still to inject (`drd sandbox ci flaky`).
    flaky: Mutex<BTreeMap<String, u32>>,
    seq: Mutex<u64>,
}

#[derive(Clone, Debug)]
struct ActionRun {
    name: String,
    status: String,
    summary: Option<String>,
    error: Option<(String, String)>,
    external_id: Option<String>,
    action_execution_id: String,
    last_change: f64,
    attempts: u32,
}

#[derive(Clone, Debug)]
struct StageRun {
    name: String,
    status: Option<String>,
    actions: Vec<ActionRun>,
}

#[derive(Clone, Debug)]
struct Execution {
    id: String,
    /// `clientRequestToken` of the StartPipelineExecution that made it.
    request_token: Option<String>,
    pipeline: String,
    region: String,
    version: i64,
    status: String,
    summary: Option<String>,
    start: f64,
    updated: f64,
    variables: Vec<(String, String)>,
    source_revisions: Vec<(String, String, String)>,
    trigger: (String, String),
    definition: aws_sdk_codepipeline::types::PipelineDeclaration,
    stages: Vec<StageRun>,
    /// Output artifact name -> (zip path, revision id, summary).
    artifacts: BTreeMap<String, (PathBuf, String, String)>,
    /// Some(abandon) once a stop was asked for.
    stop: Option<bool>,
    pgid: Arc<Mutex<Option<i32>>>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The answer for an execution this pipeline (in this region) does not have.
fn not_found(id: &str, pipeline: &str) -> Answer {
    error(
        "PipelineExecutionNotFoundException",
        format!("Pipeline execution {id} not found for pipeline {pipeline}"),
    )
}

/// An error in the service's wire format.
pub fn error(code: &str, message: impl Into<String>) -> (u16, Value) {
    (400, json!({"__type": code, "message": message.into()}))
}

type Answer = (u16, Value);

impl Executor {
    pub fn new(moto_url: String, dir: PathBuf, urls: LabUrls) -> Arc<Self> {
        Arc::new(Self {
            aws: Aws::new(drd::aws::AwsSettings {
                endpoint_url: Some(moto_url),
                max_attempts: Some(1),
                ..Default::default()
            }),
            dir,
            urls,
            runs: Mutex::new(vec![]),
            queues: Mutex::new(BTreeMap::new()),
            flaky: Mutex::new(BTreeMap::new()),
            seq: Mutex::new(0),
        })
    }

    /// Make the next `times` runs of `action` in `pipeline` fail before their commands run.
    pub fn set_flaky(&self, pipeline: &str, action: &str, times: u32) {
        let mut f = self.flaky.lock().expect("flaky");
        if times == 0 {
            f.remove(&format!("{pipeline}/{action}"));
        } else {
            f.insert(format!("{pipeline}/{action}"), times);
        }
    }

    pub fn flaky(&self) -> BTreeMap<String, u32> {
        self.flaky.lock().expect("flaky").clone()
    }

    fn new_id(&self) -> String {
        let mut s = self.seq.lock().expect("seq");
        *s += 1;
        let h = drd_hash(&format!("{}-{}-{}", std::process::id(), now(), *s));
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// Answer one operation: (HTTP status, JSON body).
    pub async fn handle(self: &Arc<Self>, op: &str, region: &str, body: &Bytes) -> Answer {
        let req: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error("SerializationException", format!("bad JSON: {e}")),
        };
        let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match op {
            "StartPipelineExecution" => self.start(region, &req).await,
            "GetPipelineExecution" => {
                self.with(region, &s("pipelineName"), &s("pipelineExecutionId"), |e| {
                    (200, json!({"pipelineExecution": execution_json(e)}))
                })
            }
            "ListPipelineExecutions" => self.list(region, &s("pipelineName"), &req).await,
            "GetPipelineState" => self.state(region, &s("name")).await,
            "RetryStageExecution" => self.retry(region, &req),
            "StopPipelineExecution" => self.stop(region, &req),
            _ => error("UnknownOperationException", op.to_string()),
        }
    }

    fn with(
        &self,
        region: &str,
        pipeline: &str,
        id: &str,
        f: impl FnOnce(&Execution) -> Answer,
    ) -> Answer {
        let runs = self.runs.lock().expect("runs");
        match runs
            .iter()
            .find(|e| e.id == id && e.pipeline == pipeline && e.region == region)
        {
            Some(e) => f(e),
            None => not_found(id, pipeline),
        }
    }

    async fn definition(
        &self,
        region: &str,
        name: &str,
    ) -> Result<(aws_sdk_codepipeline::types::PipelineDeclaration, i64), Answer> {
        let cp = self.aws.codepipeline(region).await;
        match cp.get_pipeline().name(name).send().await {
            Ok(o) => {
                let d = o.pipeline().cloned().ok_or_else(|| {
                    error(
                        "PipelineNotFoundException",
                        format!("{name}: no declaration"),
                    )
                })?;
                let v = d.version().unwrap_or(1) as i64;
                Ok((d, v))
            }
            Err(e) => {
                let code = drd::aws::error_code(&e).unwrap_or("PipelineNotFoundException");
                Err(error(
                    code,
                    format!("Account does not have a pipeline with name '{name}'"),
                ))
            }
        }
    }

    async fn start(self: &Arc<Self>, region: &str, req: &Value) -> Answer {
        let name = req.get("name").and_then(Value::as_str).unwrap_or("");
        let (definition, version) = match self.definition(region, name).await {
            Ok(d) => d,
            Err(a) => return a,
        };
        // Variables: declared ones only, defaults filled in (as AWS validates them).
        let declared: BTreeMap<String, Option<String>> = definition
            .variables()
            .iter()
            .map(|v| (v.name().to_string(), v.default_value().map(str::to_string)))
            .collect();
        let mut vars = BTreeMap::new();
        for v in req
            .get("variables")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let n = v.get("name").and_then(Value::as_str).unwrap_or("");
            if !declared.contains_key(n) {
                return error(
                    "ValidationException",
                    format!("Variable {n} is not declared in pipeline {name}"),
                );
            }
            let val = v.get("value").and_then(Value::as_str).unwrap_or("");
            vars.insert(n.to_string(), val.to_string());
        }
        for (n, d) in &declared {
            if !vars.contains_key(n) {
                match d {
                    Some(d) => {
                        vars.insert(n.clone(), d.clone());
                    }
                    None => {
                        return error(
                            "ValidationException",
                            format!("Variable {n} has no default value and was not given"),
                        )
                    }
                }
            }
        }
        let mut revisions = vec![];
        for r in req
            .get("sourceRevisions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let g = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            revisions.push((g("actionName"), g("revisionType"), g("revisionValue")));
        }
        let token = req
            .get("clientRequestToken")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = self.new_id();
        let stages = definition
            .stages()
            .iter()
            .map(|s| StageRun {
                name: s.name().to_string(),
                status: None,
                actions: vec![],
            })
            .collect();
        let e = Execution {
            id: id.clone(),
            request_token: token.clone(),
            pipeline: name.to_string(),
            region: region.to_string(),
            version,
            status: "InProgress".into(),
            summary: None,
            start: now(),
            updated: now(),
            variables: vars.into_iter().collect(),
            source_revisions: revisions,
            trigger: ("StartPipelineExecution".into(), "lab".into()),
            definition,
            stages,
            artifacts: BTreeMap::new(),
            stop: None,
            pgid: Arc::new(Mutex::new(None)),
        };
        {
            // A repeated request token (a client retrying a start whose answer it lost) gets
            // the execution it started, as an idempotency token does on AWS.
            let mut runs = self.runs.lock().expect("runs");
            if let Some(same) = runs.iter().find(|x| {
                token.is_some()
                    && x.request_token == token
                    && x.pipeline == name
                    && x.region == region
            }) {
                return (200, json!({"pipelineExecutionId": same.id}));
            }
            runs.push(e);
        }
        let me = self.clone();
        let run_id = id.clone();
        tokio::spawn(async move { me.run(run_id, 0, None).await });
        (200, json!({"pipelineExecutionId": id}))
    }

    async fn list(&self, region: &str, name: &str, req: &Value) -> Answer {
        if let Err(a) = self.definition(region, name).await {
            return a;
        }
        let max = req
            .get("maxResults")
            .and_then(Value::as_u64)
            .unwrap_or(100)
            .clamp(1, 100) as usize;
        let skip: usize = req
            .get("nextToken")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let runs = self.runs.lock().expect("runs");
        let mine: Vec<&Execution> = runs
            .iter()
            .rev()
            .filter(|e| e.pipeline == name && e.region == region)
            .collect();
        let page: Vec<Value> = mine
            .iter()
            .skip(skip)
            .take(max)
            .map(|e| summary_json(e))
            .collect();
        let mut out = json!({"pipelineExecutionSummaries": page});
        if skip + max < mine.len() {
            out["nextToken"] = json!((skip + max).to_string());
        }
        (200, out)
    }

    async fn state(&self, region: &str, name: &str) -> Answer {
        let (definition, version) = match self.definition(region, name).await {
            Ok(d) => d,
            Err(a) => return a,
        };
        let runs = self.runs.lock().expect("runs");
        let stages: Vec<Value> = definition
            .stages()
            .iter()
            .map(|s| {
                // The newest execution that reached this stage.
                let latest = runs
                    .iter()
                    .rev()
                    .filter(|e| e.pipeline == name && e.region == region)
                    .find_map(|e| {
                        e.stages
                            .iter()
                            .find(|x| x.name == s.name() && x.status.is_some())
                            .map(|x| (e, x))
                    });
                let actions: Vec<Value> = s
                    .actions()
                    .iter()
                    .map(|a| {
                        let mut v = json!({"actionName": a.name()});
                        if let Some(r) =
                            latest.and_then(|(_, x)| x.actions.iter().find(|r| r.name == a.name()))
                        {
                            v["latestExecution"] = action_json(r);
                        }
                        v
                    })
                    .collect();
                let mut v = json!({
                    "stageName": s.name(),
                    "inboundTransitionState": {"enabled": true},
                    "actionStates": actions,
                });
                if let Some((e, x)) = latest {
                    v["latestExecution"] = json!({
                        "pipelineExecutionId": e.id,
                        "status": x.status,
                    });
                }
                v
            })
            .collect();
        (
            200,
            json!({"pipelineName": name, "pipelineVersion": version, "stageStates": stages}),
        )
    }

    fn retry(self: &Arc<Self>, region: &str, req: &Value) -> Answer {
        let g = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (name, stage, id, mode) = (
            g("pipelineName"),
            g("stageName"),
            g("pipelineExecutionId"),
            g("retryMode"),
        );
        if mode != "FAILED_ACTIONS" && mode != "ALL_ACTIONS" {
            return error(
                "ValidationException",
                format!("retryMode {mode:?} must be FAILED_ACTIONS or ALL_ACTIONS"),
            );
        }
        let idx = {
            let mut runs = self.runs.lock().expect("runs");
            let newest_reaching = runs
                .iter()
                .rev()
                .filter(|e| e.pipeline == name && e.region == region)
                .find(|e| {
                    e.stages
                        .iter()
                        .any(|x| x.name == stage && x.status.is_some())
                })
                .map(|e| e.id.clone());
            let Some(e) = runs
                .iter_mut()
                .find(|e| e.id == id && e.pipeline == name && e.region == region)
            else {
                return not_found(&id, &name);
            };
            let Some(i) = e.stages.iter().position(|x| x.name == stage) else {
                return error("StageNotFoundException", format!("Stage {stage} not found"));
            };
            if newest_reaching.as_deref() != Some(id.as_str()) {
                return error(
                    "NotLatestPipelineExecutionException",
                    format!("Execution {id} is not the latest execution of stage {stage}"),
                );
            }
            if e.stages[i].status.as_deref() != Some("Failed") || e.status != "Failed" {
                return error(
                    "StageNotRetryableException",
                    format!("Stage {stage} of execution {id} has not failed"),
                );
            }
            e.status = "InProgress".into();
            e.summary = None;
            e.updated = now();
            i
        };
        let me = self.clone();
        let run_id = id.clone();
        tokio::spawn(async move { me.run(run_id, idx, Some(mode)).await });
        (200, json!({"pipelineExecutionId": id}))
    }

    fn stop(&self, region: &str, req: &Value) -> Answer {
        let g = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (name, id) = (g("pipelineName"), g("pipelineExecutionId"));
        let abandon = req.get("abandon").and_then(Value::as_bool).unwrap_or(false);
        let mut runs = self.runs.lock().expect("runs");
        let Some(e) = runs
            .iter_mut()
            .find(|e| e.id == id && e.pipeline == name && e.region == region)
        else {
            return not_found(&id, &name);
        };
        if e.status != "InProgress" && !(e.status == "Stopping" && abandon) {
            return error(
                "PipelineExecutionNotStoppableException",
                format!("Execution {id} is {} and cannot be stopped", e.status),
            );
        }
        e.status = "Stopping".into();
        e.stop = Some(abandon);
        e.summary = g("reason").into();
        e.updated = now();
        if abandon {
            let pg = *e.pgid.lock().expect("pgid");
            buildspec::kill_group(pg.map(|p| p as u32));
        }
        (200, json!({"pipelineExecutionId": id}))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Execution)) {
        let mut runs = self.runs.lock().expect("runs");
        if let Some(e) = runs.iter_mut().find(|e| e.id == id) {
            f(e);
            e.updated = now();
        }
    }

    fn snapshot(&self, id: &str) -> Option<Execution> {
        self.runs
            .lock()
            .expect("runs")
            .iter()
            .find(|e| e.id == id)
            .cloned()
    }

    /// Run an execution from stage `from` (0 for a new one; a retried stage otherwise).
    async fn run(self: Arc<Self>, id: String, from: usize, retry: Option<String>) {
        let Some(e) = self.snapshot(&id) else { return };
        let queue = self
            .queues
            .lock()
            .expect("queues")
            .entry(format!("{}/{}", e.region, e.pipeline))
            .or_default()
            .clone();
        let _turn = queue.lock().await;
        let work = self.dir.join("ci").join(&id);
        let _ = std::fs::create_dir_all(&work);
        for (i, stage) in e.definition.stages().iter().enumerate().skip(from) {
            let keep_succeeded = i == from && retry.as_deref() == Some("FAILED_ACTIONS");
            self.update(&id, |x| {
                let st = &mut x.stages[i];
                st.status = Some("InProgress".into());
                if !keep_succeeded {
                    st.actions.clear();
                }
            });
            let mut actions: Vec<_> = stage.actions().iter().collect();
            actions.sort_by_key(|a| a.run_order().unwrap_or(1));
            let mut failed = false;
            for a in actions {
                let Some(cur) = self.snapshot(&id) else {
                    return;
                };
                if let Some(abandon) = cur.stop {
                    self.finish_stopped(&id, i, abandon);
                    return;
                }
                let done = cur.stages[i]
                    .actions
                    .iter()
                    .any(|r| r.name == a.name() && r.status == "Succeeded");
                if keep_succeeded && done {
                    continue;
                }
                let attempts = cur.stages[i]
                    .actions
                    .iter()
                    .find(|r| r.name == a.name())
                    .map(|r| r.attempts)
                    .unwrap_or(0)
                    + 1;
                let run = ActionRun {
                    name: a.name().to_string(),
                    status: "InProgress".into(),
                    summary: None,
                    error: None,
                    external_id: None,
                    action_execution_id: self.new_id(),
                    last_change: now(),
                    attempts,
                };
                self.update(&id, |x| {
                    let acts = &mut x.stages[i].actions;
                    acts.retain(|r| r.name != run.name);
                    acts.push(run.clone());
                });
                let result = self
                    .run_action(&cur, stage.name(), a, &work, attempts)
                    .await;
                let ok = result.is_ok();
                self.update(&id, |x| {
                    if let Some(r) = x.stages[i].actions.iter_mut().find(|r| r.name == a.name()) {
                        r.last_change = now();
                        match &result {
                            Ok((summary, ext)) => {
                                r.status = "Succeeded".into();
                                r.summary = Some(summary.clone());
                                r.external_id = ext.clone();
                            }
                            Err((code, msg, ext)) => {
                                r.status = if x.stop == Some(true) {
                                    "Abandoned".into()
                                } else {
                                    "Failed".into()
                                };
                                r.error = Some((code.clone(), msg.clone()));
                                r.external_id = ext.clone();
                            }
                        }
                    }
                });
                if !ok {
                    failed = true;
                    break;
                }
            }
            if let Some(cur) = self.snapshot(&id) {
                if let Some(abandon) = cur.stop {
                    self.finish_stopped(&id, i, abandon);
                    return;
                }
            }
            if failed {
                self.update(&id, |x| {
                    x.stages[i].status = Some("Failed".into());
                    x.status = "Failed".into();
                    x.summary = Some(format!("Stage {} failed", stage.name()));
                });
                return;
            }
            self.update(&id, |x| x.stages[i].status = Some("Succeeded".into()));
        }
        self.update(&id, |x| x.status = "Succeeded".into());
    }

    fn finish_stopped(&self, id: &str, stage: usize, abandon: bool) {
        self.update(id, |x| {
            // A stop without abandon lets the running action finish; both end Stopped.
            let _ = abandon;
            x.stages[stage].status = Some("Stopped".into());
            x.status = "Stopped".into();
        });
    }

    /// Run one action: Ok(summary, external id) or Err(code, message, external id).
    async fn run_action(
        &self,
        e: &Execution,
        stage: &str,
        a: &aws_sdk_codepipeline::types::ActionDeclaration,
        work: &std::path::Path,
        attempt: u32,
    ) -> Result<(String, Option<String>), (String, String, Option<String>)> {
        let key = format!("{}/{}", e.pipeline, a.name());
        {
            let mut f = self.flaky.lock().expect("flaky");
            if let Some(n) = f.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    f.remove(&key);
                }
                return Err((
                    "JobFailed".into(),
                    "injected failure: a flaky build (drd sandbox ci flaky)".into(),
                    None,
                ));
            }
        }
        let t = a.action_type_id();
        let (category, owner, provider) = match t {
            Some(t) => (t.category().as_str(), t.owner().as_str(), t.provider()),
            None => ("", "", ""),
        };
        let config = a.configuration().cloned().unwrap_or_default();
        match (category, owner, provider) {
            ("Source", "AWS", "S3") => self.source(e, a, &config, work).await,
            ("Build" | "Test", "AWS", "CodeBuild") => {
                crate::pipeline_build::build(
                    self,
                    &e.id,
                    &e.pipeline,
                    &e.region,
                    &e.variables,
                    stage,
                    a,
                    &config,
                    work,
                    attempt,
                )
                .await
            }
            _ => Err((
                "JobFailed".into(),
                format!(
                    "the lab's pipeline executor runs S3 source and CodeBuild actions only, not {category}/{owner}/{provider} (docs/emulator-gaps.md)"
                ),
                None,
            )),
        }
    }

    async fn source(
        &self,
        e: &Execution,
        a: &aws_sdk_codepipeline::types::ActionDeclaration,
        config: &std::collections::HashMap<String, String>,
        work: &std::path::Path,
    ) -> Result<(String, Option<String>), (String, String, Option<String>)> {
        let fail = |m: String| ("JobFailed".to_string(), m, None);
        let bucket = config.get("S3Bucket").cloned().unwrap_or_default();
        let key = config.get("S3ObjectKey").cloned().unwrap_or_default();
        let version = e
            .source_revisions
            .iter()
            .find(|(n, _, _)| n == a.name())
            .map(|(_, t, v)| (t.clone(), v.clone()));
        let s3 = self.aws.s3(&e.region).await;
        let mut req = s3.get_object().bucket(&bucket).key(&key);
        if let Some((t, v)) = &version {
            if t != "S3_OBJECT_VERSION_ID" {
                return Err(fail(format!(
                    "source revision type {t} does not apply to an S3 source (use S3_OBJECT_VERSION_ID)"
                )));
            }
            req = req.version_id(v);
        }
        let o = req.send().await.map_err(|err| {
            fail(format!(
                "could not fetch s3://{bucket}/{key}{}: {}",
                version
                    .as_ref()
                    .map(|(_, v)| format!(" version {v}"))
                    .unwrap_or_default(),
                drd::aws::error_code(&err).unwrap_or("error")
            ))
        })?;
        let version_id = o.version_id().unwrap_or("null").to_string();
        let bytes = o
            .body
            .collect()
            .await
            .map_err(|err| fail(format!("reading s3://{bucket}/{key}: {err}")))?
            .into_bytes();
        for out in a.output_artifacts() {
            let path = work.join(format!("{}.zip", out.name()));
            std::fs::write(&path, &bytes).map_err(|err| fail(format!("{err}")))?;
            self.update(&e.id, |x| {
                x.artifacts.insert(
                    out.name().to_string(),
                    (path.clone(), version_id.clone(), key.clone()),
                );
            });
        }
        Ok((
            format!("s3://{bucket}/{key} version {version_id}"),
            Some(version_id),
        ))
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub(crate) fn lab_urls(&self) -> &LabUrls {
        &self.urls
    }

    pub(crate) fn aws(&self) -> &Aws {
        &self.aws
    }

    pub(crate) fn set_pgid(&self, id: &str) -> Arc<Mutex<Option<i32>>> {
        self.snapshot(id)
            .map(|e| e.pgid.clone())
            .unwrap_or_else(|| Arc::new(Mutex::new(None)))
    }

    pub(crate) fn artifact(&self, id: &str, name: &str) -> Option<(PathBuf, String, String)> {
        self.snapshot(id)
            .and_then(|e| e.artifacts.get(name).cloned())
    }
}

fn drd_hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn action_json(r: &ActionRun) -> Value {
    let mut v = json!({
        "actionExecutionId": r.action_execution_id,
        "status": r.status,
        "lastStatusChange": r.last_change,
    });
    if let Some(s) = &r.summary {
        v["summary"] = json!(s);
    }
    if let Some(x) = &r.external_id {
        v["externalExecutionId"] = json!(x);
    }
    if let Some((code, message)) = &r.error {
        v["errorDetails"] = json!({"code": code, "message": message});
    }
    v
}

fn revisions_json(e: &Execution) -> Vec<Value> {
    e.artifacts
        .iter()
        .map(|(name, (_, rev, summary))| {
            json!({"name": name, "revisionId": rev, "revisionSummary": summary, "created": e.start})
        })
        .collect()
}

fn execution_json(e: &Execution) -> Value {
    let mut v = json!({
        "pipelineName": e.pipeline,
        "pipelineVersion": e.version,
        "pipelineExecutionId": e.id,
        "status": e.status,
        "artifactRevisions": revisions_json(e),
        "variables": e.variables.iter().map(|(n, v)| json!({"name": n, "resolvedValue": v})).collect::<Vec<_>>(),
        "trigger": {"triggerType": e.trigger.0, "triggerDetail": e.trigger.1},
        "executionMode": "QUEUED",
        "executionType": "STANDARD",
    });
    if let Some(s) = &e.summary {
        v["statusSummary"] = json!(s);
    }
    v
}

/// The action that produced output artifact `artifact`.
fn source_action(e: &Execution, artifact: &str) -> String {
    e.definition
        .stages()
        .iter()
        .flat_map(|s| s.actions())
        .find(|a| a.output_artifacts().iter().any(|o| o.name() == artifact))
        .map(|a| a.name().to_string())
        .unwrap_or_else(|| artifact.to_string())
}

fn summary_json(e: &Execution) -> Value {
    let mut v = json!({
        "pipelineExecutionId": e.id,
        "status": e.status,
        "startTime": e.start,
        "lastUpdateTime": e.updated,
        "sourceRevisions": e.artifacts.iter().map(|(n, (_, rev, s))| json!({"actionName": source_action(e, n), "revisionId": rev, "revisionSummary": s})).collect::<Vec<_>>(),
        "trigger": {"triggerType": e.trigger.0, "triggerDetail": e.trigger.1},
        "executionMode": "QUEUED",
        "executionType": "STANDARD",
    });
    if let Some(s) = &e.summary {
        v["statusSummary"] = json!(s);
    }
    if e.stop.is_some() {
        v["stopTrigger"] = json!({"reason": e.summary.clone().unwrap_or_default()});
    }
    v
}

/// The lab's control routes for the executor: `POST /_sandbox/ci/flaky` with
/// `{pipeline, action, times}` makes the next `times` runs of that action fail before their
/// commands run (procedure 1's flaky build); `GET` lists what is armed.
pub fn control(ex: Arc<Executor>) -> axum::Router {
    use axum::routing::get;
    use axum::Json;
    axum::Router::new().route(
        "/_sandbox/ci/flaky",
        get({
            let ex = ex.clone();
            move || async move { Json(json!({"flaky": ex.flaky()})) }
        })
        .post(move |Json(v): Json<Value>| async move {
            let g = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (p, a) = (g("pipeline"), g("action"));
            if p.is_empty() || a.is_empty() {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(json!({"error": "pipeline and action are required"})),
                );
            }
            let times = v.get("times").and_then(Value::as_u64).unwrap_or(1) as u32;
            ex.set_flaky(&p, &a, times);
            (
                axum::http::StatusCode::OK,
                Json(json!({"flaky": ex.flaky()})),
            )
        }),
    )
}
