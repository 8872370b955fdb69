//! Argument resolution: `${input.NAME}`, `${policy.KEY}` and `${steps.ID.OUTPUT}` to values,
//! shared by the executor, the dry run and the planner.

use super::{Ref, Runbook};
use crate::actions::Outputs;
use crate::error::{ConfigError, Result};
use std::collections::BTreeMap;

/// Values `${policy.KEY}` resolves to.
pub fn policy_vars(policy: &crate::policy::Policy, region: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("stack".to_string(), policy.stack_name().to_string()),
        ("function".to_string(), policy.function_name().to_string()),
        ("region".to_string(), region.to_string()),
        (
            "primary_region".to_string(),
            policy.primary_region().to_string(),
        ),
        (
            "api_key_secret".to_string(),
            policy.api_key_secret().to_string(),
        ),
        (
            "pipeline".to_string(),
            policy
                .pipeline
                .as_ref()
                .map(|p| p.name.get_ref().clone())
                .unwrap_or_default(),
        ),
        (
            "pipeline_max_retries".to_string(),
            policy
                .pipeline
                .as_ref()
                .map(|p| p.max_retries)
                .unwrap_or(2)
                .to_string(),
        ),
    ])
}

/// Check the given inputs against the runbook's declarations and fill in defaults.
pub fn resolve_inputs(
    rb: &Runbook,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    for k in given.keys() {
        if !rb.inputs.contains_key(k) {
            return Err(ConfigError::new(
                "--input",
                format!("runbook {} has no input {k:?}", rb.name),
            )
            .hint(format!(
                "its inputs are: {}",
                if rb.inputs.is_empty() {
                    "none".to_string()
                } else {
                    rb.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )));
        }
    }
    let mut out = BTreeMap::new();
    for (k, i) in &rb.inputs {
        match given.get(k).or(i.default.as_ref()) {
            Some(v) => {
                out.insert(k.clone(), v.clone());
            }
            None if i.required => {
                return Err(ConfigError::new(
                    "--input",
                    format!(
                        "runbook {} needs the input {k:?} ({})",
                        rb.name, i.description
                    ),
                )
                .hint(format!("pass --input {k}=VALUE")))
            }
            None => {
                out.insert(k.clone(), String::new());
            }
        }
    }
    Ok(out)
}

/// Substitute references; `Err` names the first one that has no value yet.
pub fn resolve(
    value: &str,
    inputs: &BTreeMap<String, String>,
    policy: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, Outputs>,
) -> std::result::Result<String, String> {
    let parts = super::parse_refs(value)?;
    let mut s = String::new();
    for p in parts {
        match p {
            Ok(lit) => s.push_str(&lit),
            Err(Ref::Input(n)) => s.push_str(inputs.get(&n).ok_or(format!("input.{n}"))?),
            Err(Ref::Policy(k)) => s.push_str(policy.get(&k).ok_or(format!("policy.{k}"))?),
            Err(Ref::Step(st, o)) => s.push_str(
                outputs
                    .get(&st)
                    .and_then(|m| m.get(&o))
                    .ok_or(format!("steps.{st}.{o}"))?,
            ),
        }
    }
    Ok(s)
}

pub fn resolve_all(
    args: &BTreeMap<String, String>,
    inputs: &BTreeMap<String, String>,
    policy: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, Outputs>,
) -> std::result::Result<BTreeMap<String, String>, String> {
    args.iter()
        .map(|(k, v)| resolve(v, inputs, policy, outputs).map(|r| (k.clone(), r)))
        .collect()
}
