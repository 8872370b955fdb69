//! The service's DNS name in Route 53: which region it sends users to, and moving it.
//!
//! Two layouts (policy `[dns] mode`):
//! Each record's value is a region's front door target (`d-….execute-api.<region>.amazonaws.com`,
//! crate::frontdoor): a Function URL serves no custom name, so a record pointing at one is
//! refused by policy validation.
//! - `failover` (default): two CNAME records of the same name with set identifiers
//!   `drd-primary` (failover PRIMARY, with an HTTPS health check on the front door's API
//!   endpoint) and
//!   `drd-secondary` (SECONDARY). Route 53's data plane moves users by itself when the primary's
//!   health check fails, which matters because the Route 53 *control plane* lives in us-east-1.
//!   `point_at(R)` makes R the PRIMARY and the former primary the SECONDARY.
//! - `swap`: one plain CNAME whose value is replaced.
//!
//! Every change is read back: `point_at` returns only once `ListResourceRecordSets` shows it.

use crate::aws::{aws_error, Aws};
use crate::error::{ConfigError, Error, Result};
use crate::policy::{fqdn, DnsMode, DnsPolicy, Policy};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HealthCheckConfig, HealthCheckType, ResourceRecord,
    ResourceRecordSet, ResourceRecordSetFailover, RrType,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub const PRIMARY_ID: &str = "drd-primary";
pub const SECONDARY_ID: &str = "drd-secondary";

/// The host of a Function URL (`https://abc.lambda-url.us-west-2.on.aws/` ->
/// `abc.lambda-url.us-west-2.on.aws`).
pub fn url_host(url: &str) -> String {
    url.trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The region a Function URL host or an API Gateway host (a regional domain target
/// `d-….execute-api.<region>.amazonaws.com` or an API endpoint) belongs to, if it is one.
pub fn region_of_host(host: &str) -> Option<String> {
    let mut parts = host.trim_end_matches('.').split('.');
    let (_id, kind, region) = (parts.next()?, parts.next()?, parts.next()?);
    matches!(kind, "lambda-url" | "execute-api").then(|| region.to_string())
}

/// Where the record sends users now.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DnsView {
    pub record: String,
    pub mode: DnsMode,
    /// The value users get while the primary is healthy (failover) or the only value (swap).
    pub primary: Option<String>,
    pub secondary: Option<String>,
    pub health_check_id: Option<String>,
}

impl DnsView {
    /// The region of the value users are sent to.
    pub fn region(&self) -> Option<String> {
        self.primary.as_deref().and_then(region_of_host)
    }
}

/// What `point_at` did.
#[derive(Debug, Clone, Serialize)]
pub struct DnsChange {
    pub zone_id: String,
    pub before: DnsView,
    pub after: DnsView,
    pub changed: bool,
    pub change_id: Option<String>,
}

pub struct Zone {
    pub id: String,
    pub name: String,
}

fn dns_policy(policy: &Policy) -> Result<&DnsPolicy> {
    policy.dns.as_ref().ok_or_else(|| {
        ConfigError::new(
            policy.path.display().to_string(),
            "the policy has no [dns] section",
        )
        .field("dns")
        .hint("add [dns] with zone and record (see policies/README.md)")
        .into()
    })
}

/// The policy's hosted zone, or `None` when Route 53 has no such zone.
pub async fn find_zone(aws: &Aws, dns: &DnsPolicy) -> Result<Option<Zone>> {
    let r53 = aws.route53().await;
    let wanted = dns.zone.get_ref().trim();
    let is_id = !wanted.contains('.');
    if is_id {
        return match r53.get_hosted_zone().id(wanted).send().await {
            Ok(o) => Ok(o.hosted_zone().map(|z| Zone {
                id: bare_id(z.id()),
                name: fqdn(z.name()),
            })),
            Err(e) if crate::aws::error_code(&e) == Some("NoSuchHostedZone") => Ok(None),
            Err(e) => Err(aws_error("route53", "GetHostedZone", e)),
        };
    }
    let name = fqdn(wanted);
    let out = r53
        .list_hosted_zones_by_name()
        .dns_name(&name)
        .send()
        .await
        .map_err(|e| aws_error("route53", "ListHostedZonesByName", e))?;
    Ok(out
        .hosted_zones()
        .iter()
        .find(|z| fqdn(z.name()) == name)
        .map(|z| Zone {
            id: bare_id(z.id()),
            name: fqdn(z.name()),
        }))
}

fn bare_id(id: &str) -> String {
    id.trim_start_matches("/hostedzone/").to_string()
}

/// The zone, or a clear error naming the policy field.
pub async fn require_zone(aws: &Aws, policy: &Policy) -> Result<Zone> {
    let dns = dns_policy(policy)?;
    find_zone(aws, dns).await?.ok_or_else(|| {
        ConfigError::new(
            policy.path.display().to_string(),
            format!("Route 53 has no hosted zone {:?}", dns.zone.get_ref()),
        )
        .field("dns.zone")
        .hint("create the zone (aws route53 create-hosted-zone) or fix dns.zone; drd never creates zones")
        .into()
    })
}

/// Read the record as drd manages it.
pub async fn view(aws: &Aws, policy: &Policy, zone: &Zone) -> Result<DnsView> {
    let dns = dns_policy(policy)?;
    let sets = record_sets(aws, &zone.id, &dns.record_fqdn()).await?;
    Ok(view_of(dns, &sets))
}

fn view_of(dns: &DnsPolicy, sets: &[ResourceRecordSet]) -> DnsView {
    let value = |s: &ResourceRecordSet| {
        s.resource_records()
            .first()
            .map(|r| r.value().trim_end_matches('.').to_ascii_lowercase())
    };
    let mut v = DnsView {
        record: dns.record_fqdn(),
        mode: dns.mode,
        ..Default::default()
    };
    for s in sets {
        match (dns.mode, s.set_identifier(), s.failover()) {
            (DnsMode::Failover, Some(_), Some(ResourceRecordSetFailover::Primary)) => {
                v.primary = value(s);
                v.health_check_id = s.health_check_id().map(str::to_string);
            }
            (DnsMode::Failover, Some(_), Some(ResourceRecordSetFailover::Secondary)) => {
                v.secondary = value(s);
            }
            (DnsMode::Swap, None, _) => v.primary = value(s),
            _ => {}
        }
    }
    v
}

async fn record_sets(aws: &Aws, zone_id: &str, name: &str) -> Result<Vec<ResourceRecordSet>> {
    let r53 = aws.route53().await;
    let out = r53
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .start_record_name(name)
        .start_record_type(RrType::Cname)
        .send()
        .await
        .map_err(|e| aws_error("route53", "ListResourceRecordSets", e))?;
    Ok(out
        .resource_record_sets()
        .iter()
        .filter(|s| fqdn(s.name()) == name && s.r#type() == &RrType::Cname)
        .cloned()
        .collect())
}

/// The HTTPS health check on `host` (found by its caller reference, created if absent). Route 53
/// sends it with SNI and `Host` = `host`, so it must be a name whose certificate is its own: the
/// front door's API endpoint, not the custom domain's regional target.
async fn ensure_health_check(aws: &Aws, dns: &DnsPolicy, host: &str) -> Result<String> {
    let r53 = aws.route53().await;
    let reference = format!(
        "drd-{}",
        &hex::encode(Sha256::digest(format!("{host}{}", dns.health_check_path)))[..24]
    );
    let mut marker = None;
    loop {
        let out = r53
            .list_health_checks()
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| aws_error("route53", "ListHealthChecks", e))?;
        for h in out.health_checks() {
            if h.caller_reference() == reference {
                return Ok(h.id().to_string());
            }
        }
        match out.next_marker() {
            Some(m) if out.is_truncated() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    let config = HealthCheckConfig::builder()
        .r#type(HealthCheckType::Https)
        .fully_qualified_domain_name(host)
        .port(443)
        .resource_path(&dns.health_check_path)
        .request_interval(10)
        .failure_threshold(3)
        .build()
        .map_err(|e| Error::failed(format!("health check config: {e}")))?;
    let out = r53
        .create_health_check()
        .caller_reference(&reference)
        .health_check_config(config)
        .send()
        .await
        .map_err(|e| aws_error("route53", "CreateHealthCheck", e))?;
    Ok(out
        .health_check()
        .map(|h| h.id().to_string())
        .unwrap_or_default())
}

fn cname(
    name: &str,
    ttl: i64,
    value: &str,
    failover: Option<(&str, ResourceRecordSetFailover, Option<&str>)>,
) -> Result<ResourceRecordSet> {
    let mut b = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::Cname)
        .ttl(ttl)
        .resource_records(
            ResourceRecord::builder()
                .value(value)
                .build()
                .map_err(|e| Error::failed(format!("record value: {e}")))?,
        );
    if let Some((id, role, hc)) = failover {
        b = b.set_identifier(id).failover(role);
        if let Some(hc) = hc {
            b = b.health_check_id(hc);
        }
    }
    b.build()
        .map_err(|e| Error::failed(format!("record set: {e}")))
}

/// Make the record send users to `host` (a front door's regional target, its health checked on
/// `health_host`) and read the change back. Needs Route 53's control plane (us-east-1).
pub async fn point_at(
    aws: &Aws,
    policy: &Policy,
    zone: &Zone,
    host: &str,
    health_host: &str,
) -> Result<DnsChange> {
    let dns = dns_policy(policy)?;
    let name = dns.record_fqdn();
    let ttl = *dns.ttl.get_ref();
    let before = view(aws, policy, zone).await?;
    let mut changes = vec![];
    match dns.mode {
        DnsMode::Swap => {
            if before.primary.as_deref() != Some(host) {
                changes.push(cname(&name, ttl, host, None)?);
            }
        }
        DnsMode::Failover => {
            let hc = ensure_health_check(aws, dns, health_host).await?;
            if before.primary.as_deref() != Some(host)
                || before.health_check_id.as_deref() != Some(hc.as_str())
            {
                changes.push(cname(
                    &name,
                    ttl,
                    host,
                    Some((PRIMARY_ID, ResourceRecordSetFailover::Primary, Some(&hc))),
                )?);
            }
            // The former primary becomes the standby (users reach it only if the new primary
            // fails its health check); a first record has no standby yet.
            // Not a Function URL host (the old mode: it serves no custom name and is AWS_IAM now).
            if let Some(old) = before
                .primary
                .as_deref()
                .filter(|o| *o != host && !o.contains(".lambda-url."))
            {
                if before.secondary.as_deref() != Some(old) {
                    changes.push(cname(
                        &name,
                        ttl,
                        old,
                        Some((SECONDARY_ID, ResourceRecordSetFailover::Secondary, None)),
                    )?);
                }
            }
        }
    }
    let mut change_id = None;
    if !changes.is_empty() {
        let batch = ChangeBatch::builder()
            .comment(format!("drd: {name} -> {host}"))
            .set_changes(Some(
                changes
                    .into_iter()
                    .map(|s| {
                        Change::builder()
                            .action(ChangeAction::Upsert)
                            .resource_record_set(s)
                            .build()
                            .map_err(|e| Error::failed(format!("change: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ))
            .build()
            .map_err(|e| Error::failed(format!("change batch: {e}")))?;
        let out = aws
            .route53()
            .await
            .change_resource_record_sets()
            .hosted_zone_id(&zone.id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| aws_error("route53", "ChangeResourceRecordSets", e))?;
        change_id = out.change_info().map(|c| c.id().to_string());
    }
    let after = view(aws, policy, zone).await?;
    if after.primary.as_deref() != Some(host) {
        return Err(Error::failed(format!(
            "read-back: {name} still sends users to {}, not {host}",
            after.primary.as_deref().unwrap_or("nothing")
        )));
    }
    Ok(DnsChange {
        zone_id: zone.id.clone(),
        changed: change_id.is_some(),
        before,
        after,
        change_id,
    })
}

/// A standby prepared ahead: make the SECONDARY failover record send users to `host` (another
/// region's front door) without touching the PRIMARY. Route 53's data plane then moves users
/// there by itself when the PRIMARY's health check fails; no control-plane call is needed during
/// the outage. Returns whether the record changed. Only in `failover` mode.
pub async fn set_secondary(aws: &Aws, policy: &Policy, zone: &Zone, host: &str) -> Result<bool> {
    let dns = dns_policy(policy)?;
    if dns.mode != DnsMode::Failover {
        return Ok(false);
    }
    let before = view(aws, policy, zone).await?;
    if before.secondary.as_deref() == Some(host) || before.primary.as_deref() == Some(host) {
        return Ok(false);
    }
    let set = cname(
        &dns.record_fqdn(),
        *dns.ttl.get_ref(),
        host,
        Some((SECONDARY_ID, ResourceRecordSetFailover::Secondary, None)),
    )?;
    change_one(
        aws,
        zone,
        ChangeAction::Upsert,
        set,
        format!("drd: standby {host}"),
    )
    .await?;
    let after = view(aws, policy, zone).await?;
    if after.secondary.as_deref() != Some(host) {
        return Err(Error::failed(format!(
            "read-back: the SECONDARY of {} is {}, not {host}",
            after.record,
            after.secondary.as_deref().unwrap_or("nothing")
        )));
    }
    Ok(true)
}

/// Remove the SECONDARY failover record when it sends users to `host` (a standby about to be
/// deleted: Route 53 must never fail over to it). Returns whether a record was removed.
pub async fn drop_secondary(aws: &Aws, policy: &Policy, zone: &Zone, host: &str) -> Result<bool> {
    let dns = dns_policy(policy)?;
    if dns.mode != DnsMode::Failover {
        return Ok(false);
    }
    let sets = record_sets(aws, &zone.id, &dns.record_fqdn()).await?;
    let Some(set) = sets.into_iter().find(|s| {
        s.failover() == Some(&ResourceRecordSetFailover::Secondary)
            && s.resource_records()
                .first()
                .is_some_and(|r| r.value().trim_end_matches('.').eq_ignore_ascii_case(host))
    }) else {
        return Ok(false);
    };
    let comment = format!("drd: retire the standby {host}");
    change_one(aws, zone, ChangeAction::Delete, set, comment).await?;
    Ok(true)
}

/// One record change, in a batch of its own.
async fn change_one(
    aws: &Aws,
    zone: &Zone,
    action: ChangeAction,
    set: ResourceRecordSet,
    comment: String,
) -> Result<()> {
    let change = Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .map_err(|e| Error::failed(format!("change: {e}")))?;
    let batch = ChangeBatch::builder()
        .comment(comment)
        .changes(change)
        .build()
        .map_err(|e| Error::failed(format!("change batch: {e}")))?;
    aws.route53()
        .await
        .change_resource_record_sets()
        .hosted_zone_id(&zone.id)
        .change_batch(batch)
        .send()
        .await
        .map_err(|e| aws_error("route53", "ChangeResourceRecordSets", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_regions_of_function_urls() {
        let h = url_host("https://abc123.lambda-url.us-west-2.on.aws/");
        assert_eq!(h, "abc123.lambda-url.us-west-2.on.aws");
        assert_eq!(region_of_host(&h).as_deref(), Some("us-west-2"));
        assert_eq!(region_of_host("www.example.com"), None);
        assert_eq!(
            region_of_host("d-abc123.execute-api.eu-west-1.amazonaws.com.").as_deref(),
            Some("eu-west-1")
        );
    }

    fn policy_dns(mode: DnsMode) -> DnsPolicy {
        DnsPolicy {
            zone: toml::Spanned::new(0..0, "example.com".into()),
            record: toml::Spanned::new(0..0, "Classifier.Example.com".into()),
            mode,
            ttl: toml::Spanned::new(0..0, 60),
            health_check_path: "/healthz".into(),
        }
    }

    #[test]
    fn a_view_reads_failover_and_plain_records() {
        let d = policy_dns(DnsMode::Failover);
        let sets = vec![
            cname(
                "classifier.example.com.",
                60,
                "a.lambda-url.us-east-1.on.aws",
                Some((PRIMARY_ID, ResourceRecordSetFailover::Primary, Some("hc1"))),
            )
            .unwrap(),
            cname(
                "classifier.example.com.",
                60,
                "b.lambda-url.us-west-2.on.aws.",
                Some((SECONDARY_ID, ResourceRecordSetFailover::Secondary, None)),
            )
            .unwrap(),
        ];
        let v = view_of(&d, &sets);
        assert_eq!(v.record, "classifier.example.com.");
        assert_eq!(v.primary.as_deref(), Some("a.lambda-url.us-east-1.on.aws"));
        assert_eq!(
            v.secondary.as_deref(),
            Some("b.lambda-url.us-west-2.on.aws")
        );
        assert_eq!(v.health_check_id.as_deref(), Some("hc1"));
        assert_eq!(v.region().as_deref(), Some("us-east-1"));
        // A plain record is not a failover record, and the reverse.
        assert_eq!(view_of(&policy_dns(DnsMode::Swap), &sets).primary, None);
        let plain = vec![cname("classifier.example.com.", 60, "c.example.net", None).unwrap()];
        assert_eq!(
            view_of(&policy_dns(DnsMode::Swap), &plain)
                .primary
                .as_deref(),
            Some("c.example.net")
        );
        assert_eq!(view_of(&d, &plain).primary, None);
    }
}
