//! Known-good Lambda versions (`pins/<function>.json` in the store).
//!
//! A pin records a published version that passed its probes, with the CodeSha256 and a digest of
//! its configuration at that moment. A rollback only moves `live` to a pinned version whose code
//! still hashes to what was pinned, so a version whose code or configuration has since changed
//! (or a version that was never healthy) is never chosen by accident.

use super::probe::{self, ProbeResult, Tier};
use crate::aws::aws_error;
use crate::error::{Error, Result};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinFile {
    pub function: String,
    pub pins: Vec<Pin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pin {
    pub version: String,
    pub region: String,
    pub code_sha256: String,
    /// SHA-256 of the version's configuration (runtime, handler, role, memory, timeout,
    /// architectures, environment, layers) as drd canonicalises it.
    pub config_digest: String,
    /// RFC 3339.
    pub pinned_at: String,
    pub by: String,
    pub probes: Vec<ProbeResult>,
}

pub fn pins_key(store: &Store, function: &str) -> String {
    format!("{}pins/{function}.json", store.prefix)
}

/// The pins of `function` (empty when none were recorded).
pub async fn load(store: &Store, function: &str) -> Result<PinFile> {
    let key = pins_key(store, function);
    match store.get(&key).await? {
        None => Ok(PinFile {
            function: function.to_string(),
            pins: vec![],
        }),
        Some(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::failed_hint(
                format!(
                    "the pin file s3://{}/{key} is unreadable: {e}",
                    store.bucket
                ),
                "re-pin the known-good versions with drd pin --version N",
            )
        }),
    }
}

/// Version numbers are per region (a restore into another region starts again at 1), so a pin is
/// named by region and version.
impl PinFile {
    pub fn get(&self, region: &str, version: &str) -> Option<&Pin> {
        self.pins
            .iter()
            .find(|p| p.region == region && p.version == version)
    }

    /// Insert or replace the pin of a version, keeping (region, version) in order.
    pub fn upsert(&mut self, pin: Pin) {
        self.pins
            .retain(|p| !(p.version == pin.version && p.region == pin.region));
        self.pins.push(pin);
        self.pins.sort_by(|a, b| {
            (&a.region, a.version.parse::<u64>().unwrap_or(u64::MAX))
                .cmp(&(&b.region, b.version.parse::<u64>().unwrap_or(u64::MAX)))
        });
    }

    /// The newest version pinned in `region` strictly older than `current`.
    pub fn newest_before(&self, region: &str, current: &str) -> Option<&Pin> {
        let cur = current.parse::<u64>().ok()?;
        self.pins
            .iter()
            .filter(|p| p.region == region)
            .filter(|p| p.version.parse::<u64>().is_ok_and(|v| v < cur))
            .max_by_key(|p| p.version.parse::<u64>().unwrap_or(0))
    }

    /// The pins of one region.
    pub fn in_region<'a>(&'a self, region: &'a str) -> impl Iterator<Item = &'a Pin> + 'a {
        self.pins.iter().filter(move |p| p.region == region)
    }
}

pub async fn save(store: &Store, file: &PinFile) -> Result<()> {
    let body = serde_json::to_vec_pretty(file).expect("pins serialize");
    store.put(&pins_key(store, &file.function), &body).await
}

/// The lease name serialising writes to the pin file.
pub const PIN_LEASE: &str = "pins";

/// Record `version` as known-good with the probes it just passed. Re-pinning an unchanged,
/// already pinned version writes nothing (`false`).
pub async fn record(
    store: &Store,
    lambda: &aws_sdk_lambda::Client,
    region: &str,
    function: &str,
    version: &str,
    probes: Vec<ProbeResult>,
    by: &str,
) -> Result<(Pin, bool)> {
    let (code_sha256, config_digest) = version_identity(lambda, function, version).await?;
    let lease = crate::store::lease::Lease::acquire(
        store,
        PIN_LEASE,
        by,
        std::time::Duration::from_secs(60),
    )
    .await?;
    let result = async {
        let mut file = load(store, function).await?;
        if let Some(p) = file.get(region, version) {
            let covered = probes
                .iter()
                .all(|n| p.probes.iter().any(|o| o.tier == n.tier));
            if p.code_sha256 == code_sha256 && p.config_digest == config_digest && covered {
                return Ok((p.clone(), false));
            }
        }
        let pin = Pin {
            version: version.to_string(),
            region: region.to_string(),
            code_sha256,
            config_digest,
            pinned_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            by: by.to_string(),
            probes,
        };
        file.upsert(pin.clone());
        save(store, &file).await?;
        Ok((pin, true))
    }
    .await;
    lease.release().await?;
    result
}

/// Code hash and configuration digest of one published version.
pub async fn version_identity(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    version: &str,
) -> Result<(String, String)> {
    let c = lambda
        .get_function_configuration()
        .function_name(function)
        .qualifier(version)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetFunctionConfiguration", e))?;
    let env: BTreeMap<String, String> = c
        .environment()
        .and_then(|e| e.variables())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let canonical = serde_json::json!({
        "runtime": c.runtime().map(|r| r.as_str().to_string()),
        "handler": c.handler(),
        "role": c.role(),
        "memory": c.memory_size(),
        "timeout": c.timeout(),
        "architectures": c.architectures().iter().map(|a| a.as_str().to_string()).collect::<Vec<_>>(),
        "environment": env,
        "layers": c.layers().iter().filter_map(|l| l.arn().map(str::to_string)).collect::<Vec<_>>(),
    });
    let digest = hex::encode(Sha256::digest(canonical.to_string().as_bytes()));
    Ok((c.code_sha256().unwrap_or_default().to_string(), digest))
}

/// Probe `version` by invoking it (T0, T1, and T2 when `deep`); `Ok` only when all pass.
pub async fn probe_version(
    lambda_data: &aws_sdk_lambda::Client,
    function: &str,
    version: &str,
    deep: bool,
) -> std::result::Result<Vec<ProbeResult>, (Vec<ProbeResult>, String)> {
    let mut results = vec![];
    for tier in Tier::upto(deep) {
        let r = probe::probe_invoke(lambda_data, function, version, tier).await;
        let ok = r.ok;
        let detail = r.detail.clone();
        results.push(r);
        if !ok {
            return Err((
                results,
                format!("version {version} failed probe {tier:?}: {detail}"),
            ));
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(v: &str) -> Pin {
        Pin {
            version: v.into(),
            region: "us-east-1".into(),
            code_sha256: format!("sha-{v}"),
            config_digest: "d".into(),
            pinned_at: "2026-11-27T00:00:00Z".into(),
            by: "test".into(),
            probes: vec![],
        }
    }

    #[test]
    fn newest_before_picks_the_highest_older_pin_numerically() {
        let mut f = PinFile {
            function: "f".into(),
            pins: vec![],
        };
        for v in ["2", "10", "9", "1"] {
            f.upsert(pin(v));
        }
        assert_eq!(
            f.pins
                .iter()
                .map(|p| p.version.as_str())
                .collect::<Vec<_>>(),
            ["1", "2", "9", "10"]
        );
        assert_eq!(f.newest_before("us-east-1", "10").unwrap().version, "9");
        assert_eq!(f.newest_before("us-east-1", "11").unwrap().version, "10");
        assert_eq!(f.newest_before("us-east-1", "3").unwrap().version, "2");
        assert!(f.newest_before("us-east-1", "1").is_none());
        assert!(f.newest_before("us-east-1", "$LATEST").is_none());
        // Re-pinning replaces, never duplicates.
        f.upsert(pin("9"));
        assert_eq!(f.pins.len(), 4);
        // Another region's version 20 is not a target in us-east-1, nor is its 9 the same pin.
        let mut west = pin("20");
        west.region = "us-west-2".into();
        f.upsert(west.clone());
        west.version = "9".into();
        f.upsert(west);
        assert_eq!(f.pins.len(), 6);
        assert_eq!(f.newest_before("us-east-1", "30").unwrap().version, "10");
        assert_eq!(f.newest_before("us-west-2", "30").unwrap().version, "20");
        assert_eq!(f.get("us-west-2", "9").unwrap().region, "us-west-2");
        assert!(f.get("us-west-2", "10").is_none());
    }
}
