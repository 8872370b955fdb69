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

/// Poll until the stack leaves `*_IN_PROGRESS`; fail with the events' reasons.
pub async fn wait_stack(
    cf: &aws_sdk_cloudformation::Client,
    name: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String> {
    let start = Instant::now();
    let mut last = String::new();
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
        if !status.ends_with("_IN_PROGRESS") {
            if status == "CREATE_COMPLETE" || status == "UPDATE_COMPLETE" {
                return Ok(status);
            }
            let events = cf
                .describe_stack_events()
                .stack_name(name)
                .send()
                .await
                .map(|o| {
                    o.stack_events()
                        .iter()
                        .filter(|e| {
                            e.resource_status()
                                .is_some_and(|s| s.as_str().ends_with("_FAILED"))
                        })
                        .take(3)
                        .map(|e| {
                            format!(
                                "{}: {}",
                                e.logical_resource_id().unwrap_or("?"),
                                e.resource_status_reason().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
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
