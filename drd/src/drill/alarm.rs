//! The CloudWatch-alarm stop condition: an alarm that must not go off while the drill runs (a
//! blast-radius bound set by whoever owns the neighbouring system). In ALARM before the fault:
//! the gate fails; in ALARM during the drill: it stops and rolls back.

use crate::aws::{aws_error, Aws};
use crate::error::{Error, Result};

/// The alarm's state (`OK`, `ALARM`, `INSUFFICIENT_DATA`), read with `DescribeAlarms`; an alarm
/// that does not exist is an error naming the field to fix.
pub(super) async fn state(aws: &Aws, region: &str, name: &str) -> Result<String> {
    let out = aws
        .cloudwatch(region)
        .await
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|e| aws_error("cloudwatch", "DescribeAlarms", e))?;
    let found = out
        .metric_alarms()
        .iter()
        .find(|a| a.alarm_name() == Some(name))
        .and_then(|a| a.state_value().map(|s| s.as_str().to_string()))
        .or_else(|| {
            out.composite_alarms()
                .iter()
                .find(|a| a.alarm_name() == Some(name))
                .and_then(|a| a.state_value().map(|s| s.as_str().to_string()))
        });
    found.ok_or_else(|| {
        Error::failed_hint(
            format!("there is no CloudWatch alarm {name} in {region}"),
            "name an existing alarm in stop_conditions.alarm (aws cloudwatch describe-alarms)",
        )
    })
}
