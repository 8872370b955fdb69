//! The function's log group, `/aws/lambda/<function>`, kept by drd outside the stack: created
//! before the stack (so the function never auto-creates it without retention) and given the
//! retention the recovery plan names. A stack that owned it would have to retain it on delete,
//! and a retained log group blocks creating the stack again (AlreadyExists).

use crate::aws::{aws_error, error_code};
use crate::error::Result;

/// Days of logs the recovery plan keeps (CloudWatch, 7 days).
pub const RETENTION_DAYS: i32 = 7;

pub fn log_group_name(function: &str) -> String {
    format!("/aws/lambda/{function}")
}

/// `ensure_log_group` in `region`, saying so when it changed anything.
pub async fn prepare(
    aws: &crate::aws::Aws,
    region: &str,
    function: &str,
    days: i32,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    if ensure_log_group(&aws.logs(region).await, function, days).await? {
        progress(&format!(
            "log group {} in {region}: {days} days",
            log_group_name(function)
        ));
    }
    Ok(())
}

/// Make sure the log group exists with `days` of retention; returns whether anything changed.
pub async fn ensure_log_group(
    logs: &aws_sdk_cloudwatchlogs::Client,
    function: &str,
    days: i32,
) -> Result<bool> {
    let name = log_group_name(function);
    let found = logs
        .describe_log_groups()
        .log_group_name_prefix(&name)
        .send()
        .await
        .map_err(|e| aws_error("logs", "DescribeLogGroups", e))?
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name.as_str()))
        .map(|g| g.retention_in_days());
    let mut changed = false;
    if found.is_none() {
        match logs.create_log_group().log_group_name(&name).send().await {
            Ok(_) => changed = true,
            Err(e) if error_code(&e) == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(aws_error("logs", "CreateLogGroup", e)),
        }
    }
    if found.flatten() != Some(days) {
        logs.put_retention_policy()
            .log_group_name(&name)
            .retention_in_days(days)
            .send()
            .await
            .map_err(|e| aws_error("logs", "PutRetentionPolicy", e))?;
        changed = true;
    }
    Ok(changed)
}
