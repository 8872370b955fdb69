//! A run as its journal tells it (for `status` and finished runs), and the dry run's look at the
//! read-only steps before the first write.

use super::exec::{not_run, policy_vars, resolve_all};
use super::exec::{RunReport, StepReport};
use super::journal::{self, Event, RunState};
use super::Runbook;
use crate::actions::{self, Ctx, Outputs};
use std::collections::BTreeMap;

/// A report of a run as its journal tells it (for `status` and finished runs).
pub fn report_from_state(
    ctx: &Ctx<'_>,
    rb: &Runbook,
    s: &RunState,
    outcome: &str,
    resumed: bool,
    local: Option<String>,
) -> RunReport {
    let mut steps = vec![];
    let mut succeeded_at_ms = BTreeMap::new();
    let mut last_ms = s.started_at_ms;
    for step in &rb.steps {
        let Some(st) = s.steps.get(&step.id) else {
            if !step.compensation {
                steps.push(not_run(step));
            }
            continue;
        };
        last_ms = last_ms.max(st.at_ms);
        if st.event == Event::Succeeded {
            succeeded_at_ms.insert(step.id.clone(), st.at_ms.saturating_sub(s.started_at_ms));
        }
        steps.push(StepReport {
            id: step.id.clone(),
            title: step.title.clone(),
            status: st.event.as_str().to_string(),
            attempts: st.attempt,
            duration_ms: st.duration_ms.unwrap_or(0),
            outputs: s.completed.get(&step.id).cloned().unwrap_or_default(),
            detail: st.detail.clone(),
        });
    }
    RunReport {
        run: s.run.clone(),
        runbook: s.runbook.clone(),
        region: s.region.clone().unwrap_or_else(|| ctx.region.clone()),
        outcome: outcome.to_string(),
        resumed,
        steps,
        duration_ms: last_ms.saturating_sub(s.started_at_ms),
        started_at: s.started_at.clone().unwrap_or_default(),
        error: None,
        config_error: false,
        journal_local: local,
        journal_store: format!(
            "s3://{}/{}",
            ctx.store.bucket,
            journal::journal_prefix(&ctx.store, &s.run)
        ),
        succeeded_at_ms,
    }
}

/// For a dry run: run the read-only steps up to the first step that writes (or waits), so the
/// plan can show real values. Nothing is written, no lease is taken, nothing is journaled.
pub async fn observe(
    ctx: &Ctx<'_>,
    rb: &Runbook,
    inputs: &BTreeMap<String, String>,
    done: &BTreeMap<String, Outputs>,
) -> (BTreeMap<String, Outputs>, Option<String>) {
    let policy = policy_vars(ctx.policy, &ctx.region);
    let mut known = done.clone();
    let mut observed = BTreeMap::new();
    for step in rb.steps.iter().filter(|s| !s.compensation) {
        if done.contains_key(&step.id) {
            continue;
        }
        let spec = actions::spec(&step.action).expect("validated");
        if spec.writes || step.action == "manual.approve" {
            break;
        }
        let Ok(args) = resolve_all(&step.args, &inputs.clone(), &policy, &known) else {
            break;
        };
        match tokio::time::timeout(
            step.timeout,
            actions::run(ctx, &step.id, &step.action, &args),
        )
        .await
        {
            Ok(Ok(out)) => {
                known.insert(step.id.clone(), out.clone());
                observed.insert(step.id.clone(), out);
            }
            Ok(Err(e)) => return (observed, Some(format!("step {}: {e}", step.id))),
            Err(_) => return (observed, Some(format!("step {}: timed out", step.id))),
        }
    }
    (observed, None)
}
