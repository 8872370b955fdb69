//! Failback: after a regional failover, service returns to the primary. The restore machinery
//! does the work (the primary is refreshed from the newest point, which the standby took); this
//! adds the checks before it and the standby's retirement after it, which happens only when
//! asked for.

use crate::aws::{aws_error, Aws};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::active::{read_active, ActiveRegion};
use crate::store::Store;

/// The standby the service runs in now: the store's active-region record must name a region
/// other than the primary, else there is nothing to fail back.
pub async fn standby_of(policy: &Policy, store: &Store) -> Result<ActiveRegion> {
    let primary = policy.primary_region();
    match read_active(store).await? {
        Some(a) if a.region != primary => Ok(a),
        Some(_) | None => Err(Error::failed_hint(
            format!(
                "the service already runs in the primary {primary}: the store ({}) records no failover to another region",
                crate::store::active::active_key(store)
            ),
            format!("nothing to fail back; to repair the primary from a point, run drd restore --region {primary}"),
        )),
    }
}

/// Delete the standby's stack and wait until it is gone; returns what happened.
pub async fn retire_standby(
    aws: &Aws,
    policy: &Policy,
    standby: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String> {
    if standby == policy.primary_region() {
        return Err(Error::failed(format!(
            "refusing to retire {standby}: it is the primary region"
        )));
    }
    // Route 53 must never fail over to a host about to go: the SECONDARY record is removed first.
    if policy.dns.is_some() {
        let zone = crate::dns::require_zone(aws, policy).await?;
        let v = crate::dns::view(aws, policy, &zone).await?;
        if v.region().as_deref() == Some(standby) {
            return Err(Error::failed_hint(
                format!("refusing to retire {standby}: the PRIMARY record still sends users there"),
                "fail back first (drd failback), then retire",
            ));
        }
        // Whatever SECONDARY points into the standby region (a complete door or not).
        if let Some(host) = v
            .secondary
            .filter(|h| crate::dns::region_of_host(h).as_deref() == Some(standby))
        {
            if crate::dns::drop_secondary(aws, policy, &zone, &host).await? {
                progress(&format!(
                    "removed the SECONDARY record that sent users to {host}"
                ));
            }
        }
        // The standby's front door goes with its function (it would answer 5xx without it).
        for gone in crate::frontdoor::remove(aws, policy, standby).await? {
            progress(&format!("{standby}: {gone}"));
        }
    }
    let cf = aws.cloudformation(standby).await;
    let name = policy.stack_name();
    if crate::stack::describe_stack(&cf, name).await?.is_none() {
        return Ok(format!("stack {name} in {standby} was already gone"));
    }
    cf.delete_stack()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| aws_error("cloudformation", "DeleteStack", e))?;
    let start = std::time::Instant::now();
    loop {
        match crate::stack::describe_stack(&cf, name).await? {
            None => break,
            Some(s) => {
                let status = s.stack_status().map(|x| x.as_str()).unwrap_or_default();
                if status == "DELETE_COMPLETE" {
                    break;
                }
                if status == "DELETE_FAILED" {
                    return Err(Error::failed_hint(
                        format!("deleting stack {name} in {standby} failed"),
                        "inspect its events (aws cloudformation describe-stack-events) and run again with --resume",
                    ));
                }
                progress(&format!(
                    "stack {name} in {standby}: {status} ({}s)",
                    start.elapsed().as_secs()
                ));
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    Ok(format!(
        "stack {name} in {standby} deleted; its secrets and artifact bucket are kept (delete them by hand once no longer wanted)"
    ))
}

/// Check: the standby holds no stack.
pub async fn standby_gone(aws: &Aws, policy: &Policy, standby: &str) -> Result<()> {
    let cf = aws.cloudformation(standby).await;
    match crate::stack::describe_stack(&cf, policy.stack_name()).await? {
        Some(s) if s.stack_status().map(|x| x.as_str()) != Some("DELETE_COMPLETE") => {
            Err(Error::failed(format!(
                "stack {} still exists in {standby}",
                policy.stack_name()
            )))
        }
        _ => Ok(()),
    }
}
