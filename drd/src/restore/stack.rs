//! The stack in the target region: created (or converged) from the plan, and checked.

use super::plan::{load_template, plan_stack, StackPlan};
use crate::aws::{aws_error, Aws};
use crate::backup::manifest::Manifest;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::Store;
use std::collections::BTreeMap;

/// Create (or converge) the stack in `target` from the point; returns (action, status, plan).
pub async fn restore_stack(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    target: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(String, String, StackPlan)> {
    let template = load_template(store, m).await?;
    let plan = plan_stack(m, &template, policy, target)?;
    for r in &plan.rewrites {
        progress(&format!(
            "rewrite {}: {} -> {} ({})",
            r.place, r.from, r.to, r.why
        ));
    }
    let params: BTreeMap<&str, String> = plan
        .parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    // The log group lives outside the stack: made ready first, with the point's retention.
    let days = m
        .log_group
        .as_ref()
        .and_then(|l| l.retention_days)
        .unwrap_or(crate::lambda::logs::RETENTION_DAYS);
    crate::lambda::logs::prepare(aws, target, policy.function_name(), days, progress).await?;
    let cf = aws.cloudformation(target).await;
    let (action, status) =
        crate::stack::ensure_stack(&cf, policy.stack_name(), &plan.body, &params, progress).await?;
    Ok((action, status, plan))
}

/// Check: the stack in `target` is complete, with the planned template and parameters.
pub async fn stack_matches(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    target: &str,
) -> Result<()> {
    let template = load_template(store, m).await?;
    let plan = plan_stack(m, &template, policy, target)?;
    let cf = aws.cloudformation(target).await;
    let name = policy.stack_name();
    let stack = crate::stack::describe_stack(&cf, name)
        .await?
        .ok_or_else(|| Error::failed(format!("stack {name} does not exist in {target}")))?;
    let status = stack
        .stack_status()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    if status != "CREATE_COMPLETE" && status != "UPDATE_COMPLETE" {
        return Err(Error::failed(format!(
            "stack {name} in {target} is {status}"
        )));
    }
    let body = cf
        .get_template()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| aws_error("cloudformation", "GetTemplate", e))?;
    if body.template_body() != Some(plan.body.as_str()) {
        return Err(Error::failed(format!(
            "stack {name} in {target} runs another template than the point's"
        )));
    }
    for p in stack.parameters() {
        let k = p.parameter_key().unwrap_or_default();
        if let Some(want) = plan.parameters.get(k) {
            if p.parameter_value().unwrap_or_default() != want {
                return Err(Error::failed(format!(
                    "stack {name} in {target}: parameter {k} is {:?}, expected {want:?}",
                    p.parameter_value().unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}
