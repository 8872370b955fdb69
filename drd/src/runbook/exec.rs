//! The executor: runs a runbook's steps in order under a lease, journaling every transition.
//!
//! For each step: resolve its arguments, run the action (with the step's timeout, retried with
//! exponential backoff), then run its check; only when the check holds is the step `succeeded`.
//! On failure the step's `on_failure` decides: stop, continue, or run a compensation step.
//! `--resume RUN` folds the run's journal and continues at the first step without a `succeeded`
//! entry; since every action is idempotent, a step interrupted between its effect and its journal
//! entry simply converges again.

use super::journal::{self, Event, Journal, RunState};
pub use super::readback::{observe, report_from_state};
pub use super::resolve::{policy_vars, resolve, resolve_all, resolve_inputs};
use super::{OnFailure, Runbook, Step};
use crate::actions::{self, Ctx, Outputs};
use crate::error::{Error, Result};
use crate::store::lease::Lease;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct RunOptions {
    /// `--input NAME=VALUE` pairs given on the command line.
    pub inputs: BTreeMap<String, String>,
    pub resume: Option<String>,
    /// Where the local copy of the journal goes.
    pub state_dir: Option<PathBuf>,
    /// The run lease's TTL (default `RUN_LEASE_TTL`); renewed every third of it.
    pub lease_ttl: Option<Duration>,
    /// Crash-test hook (`DRD_FAILPOINT=STEP:after-action|after-journal`): SIGKILL this process
    /// there. Only in builds with the `failpoints` feature (scripts/test), never in a release.
    #[cfg(feature = "failpoints")]
    pub failpoint: Option<String>,
}

/// A runbook run's lease: short, renewed by a heartbeat while the run lives.
pub const RUN_LEASE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub title: String,
    /// `succeeded`, `done_earlier` (resumed past it), `failed`, `compensated`, `waiting`,
    /// `not_run`.
    pub status: String,
    pub attempts: u32,
    pub duration_ms: u64,
    pub outputs: Outputs,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: String,
    pub runbook: String,
    pub region: String,
    /// `succeeded`, `failed`, `compensated` or `waiting`.
    pub outcome: String,
    pub resumed: bool,
    pub steps: Vec<StepReport>,
    /// From the run's first start (across resumes) to its end.
    pub duration_ms: u64,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run stopped on bad input (exit 2): nothing after the failing check was written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub config_error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_local: Option<String>,
    pub journal_store: String,
    /// Milliseconds from the run's start to each step's success (for RTO-style reporting).
    pub succeeded_at_ms: BTreeMap<String, u64>,
}

impl RunReport {
    /// An output of a step of this run, if the step produced it.
    pub fn output(&self, step: &str, key: &str) -> Option<&str> {
        self.steps
            .iter()
            .find(|s| s.id == step)
            .and_then(|s| s.outputs.get(key))
            .map(String::as_str)
    }
}

/// The capabilities a run of `rb` needs: the runner's own and its steps' (actions/iam.rs).
pub fn iam_caps(rb: &Runbook) -> Vec<&'static crate::iam::caps::Cap> {
    let steps: Vec<(&str, Option<&str>)> = rb
        .steps
        .iter()
        .map(|s| (s.action.as_str(), s.check.as_deref()))
        .collect();
    crate::actions::iam::runbook_caps(&steps)
}

/// The lease serialising runs of one runbook on one stack. The two directions of CI failover
/// share one: a failover and a failback never run at once.
pub fn lease_name(runbook: &str) -> String {
    let name = if runbook == "ci-failback" {
        "ci-failover"
    } else {
        runbook
    };
    format!("runbook-{name}")
}

#[cfg(feature = "failpoints")]
fn failpoint(opts: &RunOptions, step: &str, when: &str) {
    if opts.failpoint.as_deref() == Some(&format!("{step}:{when}")) {
        eprintln!("failpoint {step}:{when}: killing this process (SIGKILL)");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_: &RunOptions, _: &str, _: &str) {}

/// How one step attempt loop ended.
enum StepEnd {
    /// Outputs, attempts, duration, and the time (ms since the epoch) the journal records for
    /// the success: what reports measure from, live or read back.
    Succeeded(Outputs, u32, u64, u64),
    Failed(String, u32, u64),
    Waiting(u32, u64),
}

struct Exec<'a> {
    ctx: &'a Ctx<'a>,
    opts: &'a RunOptions,
    journal: &'a Journal,
    inputs: BTreeMap<String, String>,
    policy: BTreeMap<String, String>,
    outputs: BTreeMap<String, Outputs>,
    /// Whether the last step that failed for good failed on bad input (a config error).
    config_failure: std::sync::atomic::AtomicBool,
}

impl Exec<'_> {
    async fn run_step(&self, step: &Step) -> Result<StepEnd> {
        let started = Instant::now();
        let args = match resolve_all(&step.args, &self.inputs, &self.policy, &self.outputs) {
            Ok(a) => a,
            Err(missing) => {
                let why = format!("argument refers to ${{{missing}}}, which has no value");
                let mut e = self.journal.entry(Event::Failed, Some(&step.id));
                e.detail = why.clone();
                e.outcome = Some("final".into());
                self.journal.write(e).await?;
                return Ok(StepEnd::Failed(why, 0, 0));
            }
        };
        let attempts = step.retries + 1;
        let mut backoff = step.backoff;
        for attempt in 1..=attempts {
            let mut e = self.journal.entry(Event::Started, Some(&step.id));
            e.attempt = attempt;
            self.journal.write(e).await?;
            (self.ctx.progress)(&format!(
                "[{}] {}{}",
                step.id,
                step.title,
                if attempt > 1 {
                    format!(" (attempt {attempt}/{attempts})")
                } else {
                    String::new()
                }
            ));
            let work = async {
                let out = Box::pin(actions::run(self.ctx, &step.id, &step.action, &args)).await?;
                if let Some(check) = &step.check {
                    let mut with_own = self.outputs.clone();
                    with_own.insert(step.id.clone(), out.clone());
                    let cargs =
                        resolve_all(&step.check_args, &self.inputs, &self.policy, &with_own)
                            .map_err(|m| {
                                Error::failed(format!("check argument ${{{m}}} has no value"))
                            })?;
                    Box::pin(actions::check(self.ctx, check, &cargs))
                        .await
                        .map_err(|e| Error::failed(format!("check {check} failed: {e}")))?;
                }
                Ok::<_, Error>(out)
            };
            let result = tokio::time::timeout(step.timeout, work).await;
            let ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(Ok(out)) => {
                    failpoint(self.opts, &step.id, "after-action");
                    let mut e = self.journal.entry(Event::Succeeded, Some(&step.id));
                    e.attempt = attempt;
                    e.outputs = out.clone();
                    e.duration_ms = Some(ms);
                    let at_ms = e.at_ms;
                    self.journal.write(e).await?;
                    failpoint(self.opts, &step.id, "after-journal");
                    return Ok(StepEnd::Succeeded(out, attempt, ms, at_ms));
                }
                Err(_) if step.action == "manual.approve" => {
                    let mut e = self.journal.entry(Event::Waiting, Some(&step.id));
                    e.attempt = attempt;
                    e.detail = format!(
                        "no approval within {}",
                        humantime::format_duration(step.timeout)
                    );
                    self.journal.write(e).await?;
                    return Ok(StepEnd::Waiting(attempt, ms));
                }
                other => {
                    // Bad input does not heal on a retry: it fails the step at once.
                    let config = matches!(other, Ok(Err(Error::Config(_))));
                    let why = match other {
                        Err(_) => format!(
                            "timed out after {}",
                            humantime::format_duration(step.timeout)
                        ),
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(_)) => unreachable!(),
                    };
                    let last = attempt == attempts || config;
                    self.config_failure
                        .store(config, std::sync::atomic::Ordering::Relaxed);
                    let mut e = self.journal.entry(Event::Failed, Some(&step.id));
                    e.attempt = attempt;
                    e.detail = why.clone();
                    e.duration_ms = Some(ms);
                    if last {
                        e.outcome = Some("final".into());
                    }
                    self.journal.write(e).await?;
                    if last {
                        return Ok(StepEnd::Failed(why, attempt, ms));
                    }
                    (self.ctx.progress)(&format!(
                        "[{}] failed: {why}; retrying in {}",
                        step.id,
                        humantime::format_duration(backoff)
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
        unreachable!("the attempt loop returns")
    }

    /// Run the compensation chain that starts at `first` after `step` failed for good: each
    /// compensation that fails hands over to its own `compensate:` target. Returns whether one
    /// succeeded, and the error to report when none did.
    async fn compensate(
        &self,
        rb: &Runbook,
        step: &Step,
        first: &str,
        why: &str,
        state: Option<&RunState>,
        reports: &mut Vec<StepReport>,
    ) -> Result<(bool, Option<String>)> {
        let mut error = None;
        let mut next = Some(first.to_string());
        let mut compensated = false;
        while let Some(cid) = next.take() {
            let c = rb.step(&cid).expect("validated");
            (self.ctx.progress)(&format!("[{}] failed; compensating with [{cid}]", step.id));
            let done = state.and_then(|s| s.completed.get(&cid)).cloned();
            let end = match done {
                Some(out) => StepEnd::Succeeded(out, 0, 0, 0),
                None => self.run_step(c).await?,
            };
            let (ok, attempts, ms, out, detail) = match end {
                StepEnd::Succeeded(out, a, ms, _) => (true, a, ms, out, String::new()),
                StepEnd::Failed(w, a, ms) => (false, a, ms, Outputs::new(), w),
                StepEnd::Waiting(a, ms) => {
                    (false, a, ms, Outputs::new(), "no approval".to_string())
                }
            };
            reports.push(StepReport {
                id: c.id.clone(),
                title: c.title.clone(),
                status: if ok { "succeeded" } else { "failed" }.into(),
                attempts,
                duration_ms: ms,
                outputs: out,
                detail: if ok {
                    format!("compensation for {}", step.id)
                } else {
                    detail.clone()
                },
            });
            if ok {
                compensated = true;
            } else {
                error = Some(format!(
                    "step {} failed: {why}; compensation {cid} failed too: {detail}",
                    step.id
                ));
                if let OnFailure::Compensate(n) = &c.on_failure {
                    next = Some(n.clone());
                }
            }
        }
        Ok((compensated, error))
    }
}

/// Run (or resume) a runbook.
pub async fn execute(ctx: &Ctx<'_>, rb: &Runbook, opts: &RunOptions) -> Result<RunReport> {
    // What this run may call: its steps' declarations (the audit refuses anything else).
    crate::iam::declare_more(crate::iam::caps::actions(&iam_caps(rb)));
    let policy = policy_vars(ctx.policy, &ctx.region);
    // Resume: the journal is the truth about inputs and finished steps.
    let (state, inputs) = match &opts.resume {
        Some(run) => {
            let (_, state) = journal::read_run(&ctx.store, run).await?;
            if state.runbook != rb.name {
                return Err(Error::failed_hint(
                    format!("run {run} is a run of {}, not {}", state.runbook, rb.name),
                    format!(
                        "resume it with drd runbook run {} --resume {run}",
                        state.runbook
                    ),
                ));
            }
            if let Some(r) = &state.region {
                if r != &ctx.region {
                    return Err(Error::failed_hint(
                        format!("run {run} acts on {r}, not {}", ctx.region),
                        format!("resume it with --region {r}"),
                    ));
                }
            }
            for (k, v) in &opts.inputs {
                if state.inputs.get(k) != Some(v) {
                    return Err(Error::failed_hint(
                        format!("run {run} was started with different inputs ({k})"),
                        "resume without --input, or start a new run",
                    ));
                }
            }
            let inputs = state.inputs.clone();
            (Some(state), inputs)
        }
        None => (None, resolve_inputs(rb, &opts.inputs)?),
    };
    if let Some(s) = &state {
        if let Some(outcome) = &s.outcome {
            // Finished: nothing to do; report what the journal says.
            return Ok(report_from_state(ctx, rb, s, outcome, true, None));
        }
    }
    let run_id = state
        .as_ref()
        .map(|s| s.run.clone())
        .unwrap_or_else(journal::new_run_id);
    // A short lease renewed while the run lives: a holder that dies anywhere is taken over
    // within one TTL, so a colleague can resume from another machine. A resume waits that long
    // for a holder that stopped renewing.
    let what = format!("drd runbook {} (run {run_id})", rb.name);
    let ttl = opts.lease_ttl.unwrap_or(RUN_LEASE_TTL);
    let mut lease = if state.is_some() {
        Lease::acquire_waiting(
            &ctx.store,
            &lease_name(&rb.name),
            &what,
            ttl,
            ttl + Duration::from_secs(5),
            ctx.progress,
        )
        .await?
    } else {
        Lease::acquire(&ctx.store, &lease_name(&rb.name), &what, ttl).await?
    };
    // Under the lease, read the journal again: another process may have moved the run on
    // between the first read and the lease.
    let state = match &state {
        Some(s) => {
            let fresh = journal::fold(&journal::read(&ctx.store, &s.run).await?);
            if let Some(outcome) = fresh.outcome.clone() {
                lease.release().await?;
                return Ok(report_from_state(ctx, rb, &fresh, &outcome, true, None));
            }
            Some(fresh)
        }
        None => None,
    };
    let ctx = Ctx {
        aws: ctx.aws,
        policy: ctx.policy,
        region: ctx.region.clone(),
        store: ctx.store.clone(),
        run_id: run_id.clone(),
        progress: ctx.progress,
        secret_value: ctx.secret_value,
    };
    let journal = Journal::new(
        ctx.store.clone(),
        &run_id,
        &rb.name,
        state.as_ref().map(|s| s.next_seq).unwrap_or(0),
        opts.state_dir.clone(),
    );
    // Boxed: the step futures are large (a backup is one) and debug builds run on small stacks.
    let result = lease
        .guard(Box::pin(run_steps(
            &ctx, rb, opts, &journal, state, inputs, policy,
        )))
        .await;
    let result = match result {
        Ok(r) => r,
        Err(lost) => {
            // The store's journal now belongs to whoever took the lease: the reason goes to the
            // local copy and the error, never to the store.
            journal.note_local(&format!("lease lost: {}", lost.why));
            return Err(Error::failed_hint(
                format!(
                    "run {run_id} stopped: the lease {} was lost ({})",
                    lost.key, lost.why
                ),
                format!("see who holds it with drd runbook status {run_id}; resume with --resume {run_id} once it is free"),
            ));
        }
    };
    let released = lease.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn run_steps(
    ctx: &Ctx<'_>,
    rb: &Runbook,
    opts: &RunOptions,
    journal: &Journal,
    state: Option<RunState>,
    inputs: BTreeMap<String, String>,
    policy: BTreeMap<String, String>,
) -> Result<RunReport> {
    let resumed = state.is_some();
    let (started_ms, started_at) = start_run(ctx, journal, state.as_ref(), &inputs).await?;
    let mut ex = Exec {
        ctx,
        opts,
        journal,
        inputs,
        policy,
        outputs: state
            .as_ref()
            .map(|s| s.completed.clone())
            .unwrap_or_default(),
        config_failure: Default::default(),
    };
    let mut reports: Vec<StepReport> = vec![];
    let mut outcome = "succeeded".to_string();
    let mut error = None;
    let mut config_error = false;
    let mut succeeded_at_ms = BTreeMap::new();
    if let Some(s) = &state {
        for (id, st) in &s.steps {
            if st.event == Event::Succeeded {
                succeeded_at_ms.insert(id.clone(), st.at_ms.saturating_sub(started_ms));
            }
        }
    }
    let mut stopped = false;
    for step in rb.steps.iter().filter(|s| !s.compensation) {
        if stopped {
            reports.push(not_run(step));
            continue;
        }
        if let Some(out) = state.as_ref().and_then(|s| s.completed.get(&step.id)) {
            reports.push(StepReport {
                id: step.id.clone(),
                title: step.title.clone(),
                status: "done_earlier".into(),
                attempts: 0,
                duration_ms: 0,
                outputs: out.clone(),
                detail: String::new(),
            });
            continue;
        }
        // A step that failed for good before the crash is not run again: its failure policy
        // (compensation included) picks up where the journal stops.
        let prior = state
            .as_ref()
            .and_then(|s| s.steps.get(&step.id))
            .filter(|st| st.final_failure || st.event == Event::Compensated)
            .map(|st| (st.detail.clone(), st.attempt));
        let end = match prior {
            Some((detail, attempts)) => StepEnd::Failed(detail, attempts, 0),
            None => ex.run_step(step).await?,
        };
        match end {
            StepEnd::Succeeded(out, attempts, ms, at_ms) => {
                succeeded_at_ms.insert(step.id.clone(), at_ms.saturating_sub(started_ms));
                ex.outputs.insert(step.id.clone(), out.clone());
                reports.push(StepReport {
                    id: step.id.clone(),
                    title: step.title.clone(),
                    status: "succeeded".into(),
                    attempts,
                    duration_ms: ms,
                    outputs: out,
                    detail: String::new(),
                });
            }
            StepEnd::Waiting(attempts, ms) => {
                reports.push(StepReport {
                    id: step.id.clone(),
                    title: step.title.clone(),
                    status: "waiting".into(),
                    attempts,
                    duration_ms: ms,
                    outputs: Outputs::new(),
                    detail: format!(
                        "approve with: drd runbook approve {} {}, then resume with: drd runbook run {} --resume {}",
                        journal.run, step.id, rb.name, journal.run
                    ),
                });
                outcome = "waiting".into();
                stopped = true;
            }
            StepEnd::Failed(why, attempts, ms) => {
                reports.push(StepReport {
                    id: step.id.clone(),
                    title: step.title.clone(),
                    status: "failed".into(),
                    attempts,
                    duration_ms: ms,
                    outputs: Outputs::new(),
                    detail: why.clone(),
                });
                match &step.on_failure {
                    OnFailure::Continue => {
                        (ctx.progress)(&format!("[{}] failed, continuing: {why}", step.id));
                        if outcome == "succeeded" {
                            outcome = "succeeded_with_failures".into();
                        }
                    }
                    OnFailure::Stop => {
                        error = Some(format!("step {} failed: {why}", step.id));
                        config_error = ex.config_failure.load(std::sync::atomic::Ordering::Relaxed);
                        outcome = "failed".into();
                        stopped = true;
                    }
                    OnFailure::Compensate(first) => {
                        error = Some(format!("step {} failed: {why}", step.id));
                        let (compensated, why_not) = ex
                            .compensate(rb, step, first, &why, state.as_ref(), &mut reports)
                            .await?;
                        if let Some(w) = why_not {
                            error = Some(w);
                        }
                        if compensated {
                            let mut e = journal.entry(Event::Compensated, Some(&step.id));
                            e.detail = format!("compensated by {first}");
                            journal.write(e).await?;
                            if let Some(r) = reports.iter_mut().rev().find(|r| r.id == step.id) {
                                r.status = "compensated".into();
                            }
                            outcome = "compensated".into();
                        } else {
                            outcome = "failed".into();
                        }
                        stopped = true;
                    }
                }
            }
        }
    }
    let end = RunEnd {
        outcome,
        error,
        config_error,
        started_ms,
        started_at,
        resumed,
        succeeded_at_ms,
    };
    finish(ctx, rb, journal, reports, end).await
}

/// Journal `run_resumed` (a resume) or `run_started` with the inputs and region; returns when the
/// run started (ms since the epoch, and as RFC 3339).
async fn start_run(
    ctx: &Ctx<'_>,
    journal: &Journal,
    state: Option<&RunState>,
    inputs: &BTreeMap<String, String>,
) -> Result<(u64, String)> {
    let started_ms = match state {
        Some(s) => {
            let mut e = journal.entry(Event::RunResumed, None);
            e.detail = format!("{} step(s) already done", s.completed.len());
            journal.write(e).await?;
            s.started_at_ms
        }
        None => {
            let mut e = journal.entry(Event::RunStarted, None);
            e.inputs = inputs.clone();
            e.region = Some(ctx.region.clone());
            journal.write(e).await?.at_ms
        }
    };
    let started_at =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(started_ms))
            .to_string();
    Ok((started_ms, started_at))
}

/// How a run's step loop ended, for its closing journal entry and report.
struct RunEnd {
    outcome: String,
    error: Option<String>,
    config_error: bool,
    started_ms: u64,
    started_at: String,
    resumed: bool,
    succeeded_at_ms: BTreeMap<String, u64>,
}

/// Journal `run_finished` (unless the run waits for an approval) and build the report.
async fn finish(
    ctx: &Ctx<'_>,
    rb: &Runbook,
    journal: &Journal,
    reports: Vec<StepReport>,
    end: RunEnd,
) -> Result<RunReport> {
    let started_ms = end.started_ms;
    if end.outcome != "waiting" {
        let mut e = journal.entry(Event::RunFinished, None);
        e.outcome = Some(end.outcome.clone());
        e.detail = end.error.clone().unwrap_or_default();
        e.duration_ms = Some(journal::now_ms().saturating_sub(started_ms));
        journal.write(e).await?;
    }
    Ok(RunReport {
        run: journal.run.clone(),
        runbook: rb.name.clone(),
        region: ctx.region.clone(),
        outcome: end.outcome,
        resumed: end.resumed,
        steps: reports,
        duration_ms: journal::now_ms().saturating_sub(started_ms),
        started_at: end.started_at,
        error: end.error,
        config_error: end.config_error,
        journal_local: journal.local_path().map(|p| p.display().to_string()),
        journal_store: format!(
            "s3://{}/{}",
            ctx.store.bucket,
            journal::journal_prefix(&ctx.store, &journal.run)
        ),
        succeeded_at_ms: end.succeeded_at_ms,
    })
}

pub(super) fn not_run(step: &Step) -> StepReport {
    StepReport {
        id: step.id.clone(),
        title: step.title.clone(),
        status: "not_run".into(),
        attempts: 0,
        duration_ms: 0,
        outputs: Outputs::new(),
        detail: String::new(),
    }
}
