//! `drd status`: the stack, where `live` points and with which code, the Function URL, and the
//! probe tiers through that URL. The JSON form is a stable document (docs/status.md).

use crate::aws::Aws;
use crate::error::Result;
use crate::lambda::ops;
use crate::lambda::probe::{ProbeResult, Tier, UrlProber};
use crate::policy::Policy;
use serde::Serialize;

/// Version of the JSON document; bump on any incompatible change.
pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub schema: u32,
    pub region: String,
    pub stack: StackState,
    pub function: String,
    pub live: Option<LiveState>,
    /// `CodeSha256` of `$LATEST`, i.e. what the stack last deployed.
    pub latest_code_sha256: Option<String>,
    /// True when `live` serves other code than the stack's `$LATEST` (after a rollback, say).
    pub alias_drift: bool,
    pub function_url: Option<String>,
    /// With `[front_door]`: the service's name, the region its record sends users to, and this
    /// region's door. The probes then go through the name, as users' requests do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_door: Option<FrontDoorState>,
    pub probes: Vec<ProbeResult>,
    pub healthy: bool,
    /// What a recovery could use: pins and the newest recovery point (from the store).
    pub recovery: RecoveryState,
}

#[derive(Debug, Default, Serialize)]
pub struct FrontDoorState {
    /// `https://<service name>/`: what the probes call.
    pub url: String,
    /// The region the record's PRIMARY sends users to, and its SECONDARY's (a standby).
    pub serving_region: Option<String>,
    pub standby_region: Option<String>,
    /// This region's door as read back (`null` when it is not complete here).
    pub door: Option<crate::frontdoor::Door>,
    /// Why the record or the door could not be read (the probes still run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct RecoveryState {
    /// Versions pinned as known-good in this region, oldest first.
    pub pins: Vec<String>,
    /// Whether `live` is a pinned version.
    pub live_pinned: bool,
    pub newest_point: Option<PointState>,
    /// The commit `live` was deployed from, from the store's `commits/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_commit: Option<String>,
    /// Why the store could not be read (status still reports the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PointState {
    pub id: String,
    pub created_at: String,
    /// The recovery point objective as it stands: seconds since the newest point.
    pub age_seconds: u64,
}

/// `live`: the version and its CodeSha256.
async fn recovery(
    aws: &Aws,
    policy: &Policy,
    region: &str,
    live: Option<(&str, &str)>,
) -> RecoveryState {
    let read = async {
        let store = crate::store::open_store_read(aws, policy).await?;
        let (pins, newest, commits) = tokio::join!(
            crate::lambda::pins::load(&store, policy.function_name()),
            crate::backup::latest_manifest(&store),
            crate::lambda::commits::load(&store, policy.function_name())
        );
        // An unreadable commit record hides only the commit, not the pins or the newest point.
        Ok::<_, crate::Error>((pins?, newest?, commits.ok()))
    };
    match read.await {
        Ok((pins, newest, commits)) => {
            let live_commit = live
                .zip(commits.as_ref())
                .and_then(|((v, code), c)| c.for_live(region, v, code))
                .map(|r| r.commit.clone());
            let pins: Vec<String> = pins.in_region(region).map(|p| p.version.clone()).collect();
            let newest_point = newest.map(|m| {
                let age_seconds = humantime::parse_rfc3339(&m.created_at)
                    .ok()
                    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PointState {
                    id: m.id,
                    created_at: m.created_at,
                    age_seconds,
                }
            });
            RecoveryState {
                live_pinned: live.is_some_and(|(l, _)| pins.iter().any(|p| p == l)),
                pins,
                newest_point,
                live_commit,
                store_error: None,
            }
        }
        Err(e) => RecoveryState {
            store_error: Some(e.to_string()),
            ..Default::default()
        },
    }
}

#[derive(Debug, Serialize)]
pub struct StackState {
    pub name: String,
    pub status: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LiveState {
    pub version: String,
    pub code_sha256: String,
    /// The commit `live`'s version was deployed from (`drd deploy --commit`), when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

pub async fn status(aws: &Aws, policy: &Policy, region: &str, deep: bool) -> Result<StatusReport> {
    let cf = aws.cloudformation(region).await;
    let stack_status = crate::stack::describe_stack(&cf, policy.stack_name())
        .await?
        .and_then(|s| s.stack_status().map(|s| s.as_str().to_string()));
    let function = policy.function_name().to_string();
    let lambda = aws.lambda(region).await;
    let mut report = StatusReport {
        schema: STATUS_SCHEMA,
        region: region.to_string(),
        stack: StackState {
            name: policy.stack_name().to_string(),
            status: stack_status.clone(),
        },
        function: function.clone(),
        live: None,
        latest_code_sha256: None,
        alias_drift: false,
        function_url: None,
        front_door: None,
        probes: vec![],
        healthy: false,
        recovery: RecoveryState::default(),
    };
    if stack_status.is_none() {
        report.recovery = recovery(aws, policy, region, None).await;
        return Ok(report);
    }
    report.latest_code_sha256 = match ops::code_sha256(&lambda, &function, "$LATEST").await {
        Ok(s) => Some(s),
        Err(e) if e.aws_code() == Some("ResourceNotFoundException") => None,
        Err(e) => return Err(e),
    };
    if let Some(v) = ops::live_version(&lambda, &function).await? {
        let sha = ops::code_sha256(&lambda, &function, &v).await?;
        report.alias_drift = report.latest_code_sha256.as_deref() != Some(sha.as_str());
        report.live = Some(LiveState {
            version: v,
            code_sha256: sha,
            commit: None,
        });
    }
    report.function_url = ops::function_url(&lambda, &function).await?;
    report.front_door = front_door(aws, policy, region).await;
    let target = match &report.front_door {
        Some(f) => Some(f.url.clone()),
        None => report.function_url.clone(),
    };
    if let Some(url) = &target {
        let prober = UrlProber::signing(aws).await;
        for tier in Tier::upto(deep) {
            let mut r = prober.probe(url, tier).await;
            if report.front_door.is_some() {
                r.via = "front-door".into();
            }
            report.probes.push(r);
        }
    }
    report.healthy = !report.probes.is_empty() && report.probes.iter().all(|p| p.ok);
    report.recovery = recovery(
        aws,
        policy,
        region,
        report
            .live
            .as_ref()
            .map(|l| (l.version.as_str(), l.code_sha256.as_str())),
    )
    .await;
    if let Some(l) = report.live.as_mut() {
        l.commit = report.recovery.live_commit.clone();
    }
    Ok(report)
}

/// The front door as users meet it (`None` without `[front_door]`).
async fn front_door(aws: &Aws, policy: &Policy, region: &str) -> Option<FrontDoorState> {
    let (Some(_), Some(dns)) = (&policy.front_door, &policy.dns) else {
        return None;
    };
    let mut st = FrontDoorState {
        url: format!("https://{}/", dns.record.get_ref().trim_end_matches('.')),
        ..Default::default()
    };
    let read = async {
        st.door = crate::frontdoor::view(aws, policy, region).await?;
        let zone = crate::dns::require_zone(aws, policy).await?;
        let v = crate::dns::view(aws, policy, &zone).await?;
        st.serving_region = v.region();
        st.standby_region = v.secondary.as_deref().and_then(crate::dns::region_of_host);
        Ok::<(), crate::error::Error>(())
    };
    if let Err(e) = read.await {
        st.error = Some(e.to_string());
    }
    Some(st)
}
