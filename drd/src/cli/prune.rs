//! `drd prune [--dry-run] [--now TIME]`: apply the retention rules; manifests first, then blobs
//! that no kept manifest names.

use super::Cli;
use crate::backup;
use crate::error::{ConfigError, Result};
use std::time::SystemTime;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  drd prune --dry-run\n  drd prune")]
pub struct Args {
    /// List what would go and why; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Evaluate `keep_within` at this time (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,
    /// Pass over manifests that cannot be read or understood instead of stopping; each is kept,
    /// with every blob it may name (all blobs when it could not be fetched at all).
    #[arg(long)]
    pub skip_unreadable: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let mut policy = cli.load_policy()?;
    // A store in its own account lets only the prune role delete points: prune acts as it.
    if let Some(prune) = policy.backup.prune_role_arn.clone() {
        policy.backup.role_arn = Some(prune);
    }
    let now = match &args.now {
        Some(t) => humantime::parse_rfc3339_weak(t).map_err(|e| {
            ConfigError::new("--now", format!("{t:?} is not a time: {e}"))
                .hint("use RFC 3339, e.g. 2026-11-27T10:00:00Z")
        })?,
        None => SystemTime::now(),
    };
    let mode = if args.skip_unreadable {
        backup::prune::Unreadables::Skip
    } else {
        backup::prune::Unreadables::Stop
    };
    let report =
        backup::prune::prune(&cli.aws_for(&policy), &policy, now, args.dry_run, mode).await?;
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
        for u in &report.unreadable {
            println!("passed over {} ({}): kept, with {}", u.key, u.why, u.kept);
        }
        println!("{verb} {} unreferenced blob(s)", report.blobs_deleted.len());
    }
    Ok(())
}
