//! `drd prune [--dry-run] [--now TIME]`: apply the retention rules; manifests first, then blobs
//! that no kept manifest names.

use super::Cli;
use crate::backup::{self, retention, LEASE_TTL, STORE_LEASE};
use crate::error::{ConfigError, Result};
use crate::store::lease::Lease;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// List what would go and why; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Evaluate `keep_within` at this time (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,
}

#[derive(serde::Serialize)]
struct Report {
    dry_run: bool,
    decisions: Vec<retention::Decision>,
    blobs_deleted: Vec<String>,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let now = match &args.now {
        Some(t) => humantime::parse_rfc3339_weak(t).map_err(|e| {
            ConfigError::new("--now", format!("{t:?} is not a time: {e}"))
                .hint("use RFC 3339, e.g. 2026-11-27T10:00:00Z")
        })?,
        None => SystemTime::now(),
    };
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let store = backup::open_store_read(&cli.aws(), &policy).await?;
    let lease = if args.dry_run {
        None
    } else {
        Some(Lease::acquire(&store, STORE_LEASE, "drd prune", LEASE_TTL).await?)
    };
    let result = async {
        let mut points = vec![];
        let mut manifests = std::collections::BTreeMap::new();
        for id in store.point_ids().await? {
            if let Ok(m) = backup::read_manifest(&store, &id).await {
                let t = humantime::parse_rfc3339(&m.created_at)
                    .map(secs)
                    .unwrap_or(0);
                points.push((id.clone(), t));
                manifests.insert(id, m);
            }
        }
        let decisions = retention::apply(&policy.retention.rules(), &points, secs(now));
        let kept: Vec<BTreeSet<String>> = decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| {
                manifests[&d.id]
                    .blobs()
                    .into_iter()
                    .map(|(_, b)| b.sha256.clone())
                    .collect()
            })
            .collect();
        let prefix = store.objects_prefix();
        let all: Vec<String> = store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.rsplit('/').next().map(str::to_string))
            .collect();
        let gone = retention::unreferenced(all.iter(), &kept);
        if !args.dry_run {
            // Manifests first: a point disappears before any blob it names.
            for d in decisions.iter().filter(|d| !d.keep) {
                store.delete(&store.point_key(&d.id)).await?;
            }
            for b in &gone {
                store.delete(&store.blob_key(b)).await?;
            }
        }
        Ok::<_, crate::Error>(Report {
            dry_run: args.dry_run,
            decisions,
            blobs_deleted: gone,
        })
    }
    .await;
    if let Some(l) = lease {
        l.release().await?;
    }
    let report = result?;
    if cli.json() {
        super::print_json(&report);
    } else {
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for d in &report.decisions {
            if d.keep {
                println!("keep   {}  ({})", d.id, d.reasons.join(", "));
            } else {
                println!("{verb} {}  (no rule keeps it)", d.id);
            }
        }
        println!("{verb} {} unreferenced blob(s)", report.blobs_deleted.len());
    }
    Ok(())
}
