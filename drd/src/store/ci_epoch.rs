//! The CI epoch (`<stack>/ci/active.json`): which CI provider may deploy, and a number that
//! grows by one with every switch.
//!
//! Who writes it, and when:
//! * `drd failover-ci` only (the runbooks `ci-failover` and `ci-failback`): the switch, and the
//!   reconcile items a switch leaves for the other direction to finish.
//! * Every write is a compare-and-swap on the ETag read (`If-Match`; `If-None-Match: *` while
//!   the record does not exist), retried on a lost race, so two operators switching at once
//!   yield one switch: the loser reads the winner's record and finds the provider already there.
//! * A switch is made under the lease [`LEASE`]. `drd deploy --ci-provider P` holds that lease for
//!   its whole deploy and refuses, before any write, when P does not hold the epoch. So a
//!   switch waits for a deploy in flight, and a deploy that starts after it (a GitHub run queued
//!   during the outage) sees it and changes nothing.
//!
//! No record means GitHub Actions, the workload's primary CI, holds epoch 0.

use crate::error::{Error, Result};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// The lease a switch and every provider-checked deploy hold (not the store lease: a deploy
/// takes minutes and must not hold up backups).
pub const LEASE: &str = "ci-epoch";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// GitHub Actions (the deploy workflow).
    Github,
    /// The standby AWS CodePipeline.
    Codepipeline,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Codepipeline => "codepipeline",
        }
    }

    pub fn parse(s: &str) -> Result<Provider> {
        match s {
            "github" => Ok(Provider::Github),
            "codepipeline" => Ok(Provider::Codepipeline),
            other => Err(Error::failed_hint(
                format!("unknown CI provider {other:?}"),
                "use github or codepipeline",
            )),
        }
    }

    pub fn other(self) -> Provider {
        match self {
            Provider::Github => Provider::Codepipeline,
            Provider::Codepipeline => Provider::Github,
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Work a switch could not do (GitHub unreachable) and the switch back finishes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// e.g. `enable-workflow:deploy.yml`: what must be true once GitHub answers again.
    pub id: String,
    pub what: String,
    pub since: String,
    pub run: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CiEpoch {
    pub provider: Provider,
    pub epoch: u64,
    /// RFC 3339; empty for the implicit record.
    pub since: String,
    pub by: String,
    /// The failover-ci run that made the switch.
    #[serde(default)]
    pub run: String,
    #[serde(default)]
    pub reconcile: Vec<Reconcile>,
}

impl CiEpoch {
    /// What holds when no switch was ever made.
    pub fn initial() -> Self {
        CiEpoch {
            provider: Provider::Github,
            epoch: 0,
            since: String::new(),
            by: "nobody (no switch was ever made)".into(),
            run: String::new(),
            reconcile: vec![],
        }
    }
}

pub fn key(store: &Store) -> String {
    format!("{}ci/active.json", store.prefix)
}

fn parse(store: &Store, bytes: &[u8]) -> Result<CiEpoch> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::failed_hint(
            format!(
                "the CI epoch record s3://{}/{} is unreadable: {e}",
                store.bucket,
                key(store)
            ),
            "read it, fix it by hand (provider, epoch, since, by) and keep the epoch number growing; never delete it",
        )
    })
}

/// The record and its ETag (`None`: no record, GitHub holds epoch 0).
pub async fn read(store: &Store) -> Result<(CiEpoch, Option<String>)> {
    match store.get_versioned(&key(store)).await? {
        None => Ok((CiEpoch::initial(), None)),
        Some((b, etag)) => Ok((parse(store, &b)?, Some(etag))),
    }
}

/// Apply `change` by compare-and-swap until it lands or says there is nothing to change
/// (`false`). The record as stored afterwards and whether this call wrote it.
pub async fn update(
    store: &Store,
    mut change: impl FnMut(&mut CiEpoch) -> Result<bool>,
) -> Result<(CiEpoch, bool)> {
    for _ in 0..16 {
        let (mut rec, etag) = read(store).await?;
        if !change(&mut rec)? {
            return Ok((rec, false));
        }
        let body = serde_json::to_vec_pretty(&rec).expect("serializes");
        if store
            .put_if(&key(store), &body, etag.as_deref())
            .await?
            .is_some()
        {
            return Ok((rec, true));
        }
        // Another writer changed it between our read and our write: read again.
    }
    Err(Error::failed(format!(
        "could not update s3://{}/{}: it kept changing",
        store.bucket,
        key(store)
    )))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Give the epoch to `to` (the epoch grows by one). Already there: nothing is written.
pub async fn switch(store: &Store, to: Provider, run: &str, by: &str) -> Result<(CiEpoch, bool)> {
    update(store, |r| {
        if r.provider == to {
            return Ok(false);
        }
        r.provider = to;
        r.epoch += 1;
        r.since = now();
        r.by = by.to_string();
        r.run = run.to_string();
        Ok(true)
    })
    .await
}

/// Add a reconcile item (once per id).
pub async fn add_reconcile(store: &Store, item: Reconcile) -> Result<(CiEpoch, bool)> {
    update(store, |r| {
        if r.reconcile.iter().any(|x| x.id == item.id) {
            return Ok(false);
        }
        r.reconcile.push(item.clone());
        Ok(true)
    })
    .await
}

/// Close reconcile items by id; the ids that were open.
pub async fn close_reconcile(store: &Store, ids: &[String]) -> Result<(CiEpoch, bool)> {
    update(store, |r| {
        let before = r.reconcile.len();
        r.reconcile.retain(|x| !ids.contains(&x.id));
        Ok(r.reconcile.len() != before)
    })
    .await
}

/// Refuse unless `provider` holds the epoch (call under [`LEASE`]).
pub async fn require(store: &Store, provider: Provider) -> Result<CiEpoch> {
    let (rec, _) = read(store).await?;
    if rec.provider == provider {
        return Ok(rec);
    }
    Err(Error::failed_hint(
        format!(
            "refused: the CI provider {provider} does not hold the CI epoch; {} does (epoch {}, since {}, by {}). Nothing was written",
            rec.provider,
            rec.epoch,
            if rec.since.is_empty() { "the start" } else { &rec.since },
            rec.by
        ),
        format!(
            "this is a {provider} run that started after drd failover-ci switched CI to {}: deploy through {} instead, or switch back with drd failover-ci --to {provider}",
            rec.provider, rec.provider
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_rejects_unknown_fields() {
        let r = CiEpoch {
            provider: Provider::Codepipeline,
            epoch: 3,
            since: "2026-11-30T00:00:00Z".into(),
            by: "op".into(),
            run: "r1".into(),
            reconcile: vec![Reconcile {
                id: "enable-workflow:deploy.yml".into(),
                what: "x".into(),
                since: "t".into(),
                run: "r1".into(),
            }],
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"provider\":\"codepipeline\""), "{s}");
        assert_eq!(serde_json::from_str::<CiEpoch>(&s).unwrap(), r);
        assert!(serde_json::from_str::<CiEpoch>(
            r#"{"provider":"github","epoch":1,"since":"","by":"","extra":1}"#
        )
        .is_err());
        assert!(Provider::parse("gitlab").is_err());
        assert_eq!(
            Provider::parse("github").unwrap().other(),
            Provider::Codepipeline
        );
    }
}
