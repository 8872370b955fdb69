//! The planner: runbook + inputs + observed state -> a plan that can be printed and tested.
//! It never calls AWS; observations (the outputs of read-only steps run beforehand, see
//! `exec::observe`) are handed in.

use super::exec::resolve;
use super::{OnFailure, Runbook};
use crate::actions::{self, Outputs};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub runbook: String,
    pub title: String,
    pub region: String,
    pub inputs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    pub steps: Vec<PlannedStep>,
    /// Steps of the main path that would change AWS or the store.
    pub writes: usize,
    /// Why the plan cannot go through as it stands (an observation failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub title: String,
    pub action: String,
    pub writes: bool,
    pub description: String,
    pub args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub check_args: BTreeMap<String, String>,
    pub timeout: String,
    pub retries: u32,
    pub on_failure: String,
    pub compensation: bool,
    /// `done` (an earlier attempt of a resumed run finished it), `observed` (a read-only step
    /// run for this plan), `pending`.
    pub state: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub observed: Outputs,
}

pub fn on_failure_text(f: &OnFailure) -> String {
    match f {
        OnFailure::Stop => "stop".into(),
        OnFailure::Continue => "continue".into(),
        OnFailure::Compensate(s) => format!("compensate:{s}"),
    }
}

/// Substitute what is known; unknown references stay visible as `<steps.ID.OUTPUT>`.
fn lenient(
    args: &BTreeMap<String, String>,
    inputs: &BTreeMap<String, String>,
    policy: &BTreeMap<String, String>,
    known: &BTreeMap<String, Outputs>,
) -> BTreeMap<String, String> {
    args.iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            // Resolve piecewise: substitute each resolvable reference, keep the others.
            if let Ok(parts) = super::parse_refs(&v) {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Ok(lit) => s.push_str(&lit),
                        Err(r) => {
                            let text = match &r {
                                super::Ref::Input(n) => format!("${{input.{n}}}"),
                                super::Ref::Policy(n) => format!("${{policy.{n}}}"),
                                super::Ref::Step(a, b) => format!("${{steps.{a}.{b}}}"),
                            };
                            match resolve(&text, inputs, policy, known) {
                                Ok(val) => s.push_str(&val),
                                Err(m) => s.push_str(&format!("<{m}>")),
                            }
                        }
                    }
                }
                v = s;
            }
            (k.clone(), v)
        })
        .collect()
}

/// What is known before a run: steps an earlier attempt finished (`done`), read-only steps run
/// for the plan (`observed`), and why the plan cannot go through (`blocked`).
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub done: BTreeMap<String, Outputs>,
    pub observed: BTreeMap<String, Outputs>,
    pub blocked: Option<String>,
}

pub fn plan(
    rb: &Runbook,
    region: &str,
    inputs: &BTreeMap<String, String>,
    policy: &BTreeMap<String, String>,
    state: &Known,
    resume: Option<String>,
) -> Plan {
    let (done, observed, blocked) = (&state.done, &state.observed, state.blocked.clone());
    let mut known = done.clone();
    known.extend(observed.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut steps = vec![];
    let mut writes = 0;
    for s in &rb.steps {
        let spec = actions::spec(&s.action).expect("validated");
        let args = lenient(&s.args, inputs, policy, &known);
        let check_args = lenient(&s.check_args, inputs, policy, &known);
        let state = if done.contains_key(&s.id) {
            "done"
        } else if observed.contains_key(&s.id) {
            "observed"
        } else {
            "pending"
        };
        if spec.writes && !s.compensation && state == "pending" {
            writes += 1;
        }
        steps.push(PlannedStep {
            id: s.id.clone(),
            title: s.title.clone(),
            action: s.action.clone(),
            writes: spec.writes,
            description: actions::describe(&s.action, &args),
            args,
            check: s.check.clone(),
            check_args,
            timeout: humantime::format_duration(s.timeout).to_string(),
            retries: s.retries,
            on_failure: on_failure_text(&s.on_failure),
            compensation: s.compensation,
            state: state.into(),
            observed: known.get(&s.id).cloned().unwrap_or_default(),
        });
    }
    Plan {
        runbook: rb.name.clone(),
        title: rb.title.clone(),
        region: region.to_string(),
        inputs: inputs.clone(),
        resume,
        steps,
        writes,
        blocked,
    }
}
