//! `drd verify [--point ID|--all] [--identity FILE]`.

use super::Cli;
use crate::backup::{crypto::Identities, verify};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The point to verify (default: the newest).
    #[arg(long, conflicts_with = "all")]
    pub point: Option<String>,
    /// Verify every point.
    #[arg(long)]
    pub all: bool,
    /// An age identity file (or SSH private key): also decrypt every secret backup.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Use the policy's copy bucket in REGION (backup.copies) as the store for this run: for
    /// the day the store's own region failed. Never chosen by itself.
    #[arg(long, value_name = "REGION")]
    pub from_copy: Option<String>,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let identities = match &args.identity {
        Some(p) => Some(Identities::from_file(p)?),
        None => None,
    };
    let store = crate::store::open_store_read(&cli.aws_for(&policy), &policy).await?;
    let ids = match (&args.point, args.all) {
        (Some(id), _) => vec![id.clone()],
        (None, true) => store.point_ids().await?,
        (None, false) => store
            .point_ids()
            .await?
            .into_iter()
            .last()
            .into_iter()
            .collect(),
    };
    if ids.is_empty() {
        return Err(Error::failed_hint(
            "there is no recovery point to verify",
            "take one with drd backup",
        ));
    }
    let mut cache = HashMap::new();
    let mut checks = vec![];
    for id in &ids {
        checks.push(verify::verify_point(&store, id, identities.as_ref(), &mut cache).await?);
    }
    if cli.json() {
        super::print_json(&checks);
    } else {
        for c in &checks {
            if c.ok {
                println!(
                    "ok   {} ({} blobs, {} secrets and {} environments decrypted)",
                    c.id, c.blobs_checked, c.secrets_decrypted, c.environments_decrypted
                );
            } else {
                println!("FAIL {}", c.id);
                for p in &c.problems {
                    println!("     {p}");
                }
            }
        }
    }
    let broken: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.id, c.problems.join("; ")))
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "{} broken point(s): {}",
            broken.len(),
            broken.join(" | ")
        )))
    }
}
