//! The CloudWatch-alarm stop condition: an alarm that must not go off while the drill runs (a
//! blast-radius bound set by whoever owns the neighbouring system). In ALARM before the fault:
//! the gate fails; in ALARM during the drill: it stops and rolls back.

use crate::aws::{aws_error, Aws};
use crate::error::{Error, Result};
use std::time::Duration;

/// Failed reads in a row after which the drill stops: a stop condition that cannot be read is
/// not watching.
pub(super) const READ_FAILURES: u32 = 3;

/// Read right before the fault is injected: why the drill must not inject (the alarm went off
/// since the gate, or cannot be read), or `None`.
pub(super) async fn before_fault(aws: &Aws, region: &str, alarm: Option<&str>) -> Option<String> {
    let a = alarm?;
    match state(aws, region, a).await.as_deref() {
        Ok("ALARM") => Some(format!(
            "alarm {a} went off after the gate (stop_conditions.alarm); nothing was injected"
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "alarm {a} could not be read right before the fault ({e}); nothing was injected"
        )),
    }
}

/// Beside the recovery: polls every max(interval, 2 s) and returns why the drill must stop
/// (ALARM, or READ_FAILURES failed reads in a row, each journaled); never returns without one.
/// `region_lost`: the drill itself took the alarm's region down (region-loss), so failed reads
/// are expected and only journaled; an ALARM read still stops it.
pub(super) async fn watch(
    aws: &Aws,
    region: &str,
    alarm: Option<&str>,
    interval: Duration,
    region_lost: bool,
    rec: &super::journal::Recorder<'_>,
) -> String {
    let Some(name) = alarm else {
        return std::future::pending::<String>().await;
    };
    let mut failures = 0;
    loop {
        tokio::time::sleep(interval.max(Duration::from_secs(2))).await;
        match state(aws, region, name).await {
            Ok(s) if s == "ALARM" => {
                return format!("stop condition: alarm {name} went off (ALARM)");
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                rec.note(format!(
                    "stop condition: alarm {name} could not be read ({failures} in a row): {e}"
                ));
                if failures >= READ_FAILURES && !region_lost {
                    return format!(
                        "stop condition: alarm {name} could not be read {failures} times in a row; the drill stops rather than run unwatched"
                    );
                }
            }
        }
    }
}

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
