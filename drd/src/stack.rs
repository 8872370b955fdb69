//! The CloudFormation stack: read it, create or update it, wait for it. Shared by deploy (the
//! primary), restore (another region) and status, none of which reaches into another.

use crate::aws::{aws_error, error_code};
use crate::error::{Error, Result};
use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Create or update the stack and wait for it; returns (action, final status).
pub async fn ensure_stack(
    cf: &aws_sdk_cloudformation::Client,
    name: &str,
    body: &str,
    params: &BTreeMap<&str, String>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(String, String)> {
    let parameters: Vec<Parameter> = params
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(*k)
                .parameter_value(v)
                .build()
        })
        .collect();
    let existing = describe_stack(cf, name).await?;
    let action = match existing {
        None => {
            cf.create_stack()
                .stack_name(name)
                .template_body(body)
                .set_parameters(Some(parameters))
                .capabilities(Capability::CapabilityIam)
                .capabilities(Capability::CapabilityNamedIam)
                .send()
                .await
                .map_err(|e| aws_error("cloudformation", "CreateStack", e))?;
            "created"
        }
        Some(stack) => {
            let status = stack
                .stack_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if status == StackStatus::RollbackComplete.as_str() || status.ends_with("_FAILED") {
                return Err(Error::failed_hint(
                    format!("stack {name} is in {status} and cannot be updated"),
                    format!("inspect its events, delete it (aws cloudformation delete-stack --stack-name {name}) and deploy again"),
                ));
            }
            let current: BTreeMap<String, String> = stack
                .parameters()
                .iter()
                .map(|p| {
                    (
                        p.parameter_key().unwrap_or_default().to_string(),
                        p.parameter_value().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let wanted: BTreeMap<String, String> = params
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let same_params = wanted.iter().all(|(k, v)| current.get(k) == Some(v));
            let tpl = cf
                .get_template()
                .stack_name(name)
                .send()
                .await
                .map_err(|e| aws_error("cloudformation", "GetTemplate", e))?;
            if same_params && tpl.template_body() == Some(body) {
                progress(&format!("stack {name}: unchanged ({status})"));
                return Ok(("unchanged".into(), status));
            }
            cf.update_stack()
                .stack_name(name)
                .template_body(body)
                .set_parameters(Some(parameters))
                .capabilities(Capability::CapabilityIam)
                .capabilities(Capability::CapabilityNamedIam)
                .send()
                .await
                .map_err(|e| aws_error("cloudformation", "UpdateStack", e))?;
            "updated"
        }
    };
    let status = wait_stack(cf, name, progress).await?;
    Ok((action.into(), status))
}

/// The stack, or `None` when it does not exist (CloudFormation answers `ValidationError`; a
/// deleted stack, which some endpoints still list as `DELETE_COMPLETE`, counts as none).
pub async fn describe_stack(
    cf: &aws_sdk_cloudformation::Client,
    name: &str,
) -> Result<Option<aws_sdk_cloudformation::types::Stack>> {
    match cf.describe_stacks().stack_name(name).send().await {
        Ok(out) => Ok(out
            .stacks()
            .iter()
            .find(|s| {
                s.stack_status()
                    != Some(&aws_sdk_cloudformation::types::StackStatus::DeleteComplete)
            })
            .cloned()),
        Err(e) if error_code(&e) == Some("ValidationError") => Ok(None),
        Err(e) => Err(aws_error("cloudformation", "DescribeStacks", e)),
    }
}

/// The failure reasons of the stack's current operation only (events come newest first; the
/// operation began at the stack's own CREATE/UPDATE/DELETE/IMPORT_IN_PROGRESS event), at most
/// five: an old failure from an earlier update must not be blamed for this one.
pub fn current_failures(
    events: &[aws_sdk_cloudformation::types::StackEvent],
    name: &str,
) -> Vec<String> {
    let began = |e: &aws_sdk_cloudformation::types::StackEvent| {
        e.logical_resource_id() == Some(name)
            && e.resource_status().is_some_and(|s| {
                matches!(
                    s.as_str(),
                    "CREATE_IN_PROGRESS"
                        | "UPDATE_IN_PROGRESS"
                        | "DELETE_IN_PROGRESS"
                        | "IMPORT_IN_PROGRESS"
                )
            })
    };
    let mut out = vec![];
    for e in events {
        if e.resource_status()
            .is_some_and(|s| s.as_str().ends_with("_FAILED"))
            && out.len() < 5
        {
            out.push(format!(
                "{}: {}",
                e.logical_resource_id().unwrap_or("?"),
                e.resource_status_reason().unwrap_or("")
            ));
        }
        if began(e) {
            break;
        }
    }
    out
}

/// Poll until the stack leaves `*_IN_PROGRESS`; fail with the current operation's failures.
pub async fn wait_stack(
    cf: &aws_sdk_cloudformation::Client,
    name: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String> {
    let start = Instant::now();
    let mut last = String::new();
    // The newest resource event shown, and when events were last read (at most every 2 s).
    let mut last_event = String::new();
    let mut events_read: Option<Instant> = None;
    loop {
        let stack = describe_stack(cf, name)
            .await?
            .ok_or_else(|| Error::failed(format!("stack {name} disappeared while waiting")))?;
        let status = stack
            .stack_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status != last {
            progress(&format!(
                "stack {name}: {status} ({}s)",
                start.elapsed().as_secs()
            ));
            last = status.clone();
        }
        if status.ends_with("_IN_PROGRESS")
            && events_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
        {
            events_read = Some(Instant::now());
            // What the operation is doing now: its newest resource event (best effort).
            if let Ok(o) = cf.describe_stack_events().stack_name(name).send().await {
                if let Some(e) = o.stack_events().first() {
                    let id = e.event_id().unwrap_or_default().to_string();
                    if id != last_event && e.logical_resource_id() != Some(name) {
                        progress(&format!(
                            "stack {name}: {} {}{}",
                            e.logical_resource_id().unwrap_or("?"),
                            e.resource_status().map(|s| s.as_str()).unwrap_or("?"),
                            e.resource_status_reason()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ));
                    }
                    last_event = id;
                }
            }
        }
        if !status.ends_with("_IN_PROGRESS") {
            if status == "CREATE_COMPLETE" || status == "UPDATE_COMPLETE" {
                return Ok(status);
            }
            let events = cf
                .describe_stack_events()
                .stack_name(name)
                .send()
                .await
                .map(|o| current_failures(o.stack_events(), name).join("; "))
                .unwrap_or_default();
            return Err(Error::failed_hint(
                format!("stack {name} ended in {status}: {events}"),
                "fix the template or parameters; the previous version keeps serving",
            ));
        }
        if start.elapsed() > Duration::from_secs(1800) {
            return Err(Error::failed(format!(
                "stack {name} still {status} after 30 minutes"
            )));
        }
        tokio::time::sleep(Duration::from_millis(
            if start.elapsed() < Duration::from_secs(10) {
                250
            } else {
                5000
            },
        ))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudformation::types::{ResourceStatus, StackEvent};

    fn ev(logical: &str, status: ResourceStatus, reason: &str) -> StackEvent {
        StackEvent::builder()
            .stack_id("arn:aws:cloudformation:us-east-1:123456789012:stack/s/1")
            .event_id(format!("{logical}-{}", status.as_str()))
            .stack_name("s")
            .logical_resource_id(logical)
            .resource_status(status)
            .resource_status_reason(reason)
            .timestamp(aws_smithy_types::DateTime::from_secs(0))
            .build()
    }

    #[test]
    fn only_the_current_operations_failures_are_reported() {
        // Newest first: this update failed on Function; an older update failed on Role.
        let events = vec![
            ev("s", ResourceStatus::UpdateRollbackComplete, ""),
            ev(
                "Function",
                ResourceStatus::UpdateFailed,
                "MemorySize out of range",
            ),
            ev("s", ResourceStatus::UpdateInProgress, "User Initiated"),
            ev("s", ResourceStatus::UpdateRollbackComplete, ""),
            ev("Role", ResourceStatus::UpdateFailed, "an old failure"),
            ev("s", ResourceStatus::UpdateInProgress, "User Initiated"),
        ];
        assert_eq!(
            current_failures(&events, "s"),
            vec!["Function: MemorySize out of range".to_string()]
        );
        assert!(current_failures(&events[3..4], "s").is_empty());
    }
}
