//! `drd verify [--point ID|--all] [--identity FILE]`.

use super::Cli;
use crate::backup::{crypto::Identities, verify};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd verify\n  drd verify --all --identity ~/.config/drd/identity.txt\n  drd verify --index\n  drd verify --mirror"
)]
pub struct Args {
    /// The point to verify (default, or `latest`: the newest).
    #[arg(long, conflicts_with = "all")]
    pub point: Option<String>,
    /// Verify every point.
    #[arg(long)]
    pub all: bool,
    /// Check that the points index lists exactly the points whose manifests exist (fix with
    /// drd points reindex).
    #[arg(long, conflicts_with_all = ["point", "all"])]
    pub index: bool,
    /// Re-hash the newest source mirror's bundle and zip (drd mirror).
    #[arg(long, conflicts_with_all = ["point", "all", "index"])]
    pub mirror: bool,
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
    if args.index {
        return verify_index(cli, &store).await;
    }
    if args.mirror {
        return verify_mirror(cli, &store).await;
    }
    let ids = match (&args.point, args.all) {
        (Some(id), _) if id != "latest" => vec![id.clone()],
        (_, true) => store.point_ids().await?,
        // The newest, through the pointer: no full listing.
        (_, false) => crate::store::latest::newest_first(&store)
            .await?
            .into_iter()
            .take(1)
            .collect(),
    };
    if ids.is_empty() {
        return Err(Error::failed_hint(
            "there is no recovery point to verify",
            "take one with drd backup",
        ));
    }
    let current = policy.backup.recipient_names();
    let mut cache = HashMap::new();
    let mut checks = vec![];
    for id in &ids {
        let mut c = verify::verify_point(&store, id, identities.as_ref(), &mut cache).await?;
        verify::require_current(&mut c, &current);
        checks.push(c);
    }
    if cli.json() {
        super::print_json(&checks);
    } else {
        for c in &checks {
            let to = if c.recipients.is_empty() {
                "recipients not recorded".to_string()
            } else {
                format!("encrypted to {}", c.recipients.join(", "))
            };
            if c.ok && c.opens == Some(false) {
                println!(
                    "ok   {} ({} blobs sound; this identity cannot open it: {to})",
                    c.id, c.blobs_checked
                );
            } else if c.ok {
                println!(
                    "ok   {} ({} blobs, {} secrets and {} environments decrypted; {to})",
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
    let closed: Vec<&str> = checks
        .iter()
        .filter(|c| c.ok && c.opens == Some(false))
        .map(|c| c.id.as_str())
        .collect();
    if !closed.is_empty() {
        // Sound points made for other recipients (before a recipient change): restoring their
        // secrets takes the identity they were made for.
        eprintln!(
            "{} point(s) this identity cannot open (encrypted to other recipients): {}",
            closed.len(),
            closed.join(", ")
        );
    }
    let with_secrets = checks.iter().filter(|c| c.opens.is_some()).count();
    if with_secrets > 0 && closed.len() == with_secrets {
        let mut to: Vec<&str> = checks
            .iter()
            .flat_map(|c| c.recipients.iter().map(String::as_str))
            .collect();
        to.sort_unstable();
        to.dedup();
        return Err(Error::failed_hint(
            format!(
                "the identity opens none of the {with_secrets} point(s) checked ({}): they are encrypted to {}",
                closed.join(", "),
                if to.is_empty() { "recipients not recorded".to_string() } else { to.join(", ") }
            ),
            "is --identity the key for the policy's recipients? (points keep the recipients they were made with: drd points show ID)",
        ));
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

/// The newest mirror manifest's blobs, re-hashed.
async fn verify_mirror(cli: &Cli, store: &crate::store::Store) -> Result<()> {
    let Some((m, problems)) = crate::ci::run::verify(store).await? else {
        return Err(Error::failed_hint(
            "there is no source mirror to verify",
            "take one with drd mirror",
        ));
    };
    if cli.json() {
        super::print_json(&serde_json::json!({
            "manifest": m.id, "ok": problems.is_empty(), "problems": problems,
        }));
    } else if problems.is_empty() {
        println!(
            "ok   mirror {} (bundle {} bytes, zip {} bytes; {} at {})",
            m.id, m.bundle.size, m.zip.size, m.branch, m.head
        );
    } else {
        println!("FAIL mirror {}", m.id);
        for p in &problems {
            println!("     {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "mirror {}: {}",
            m.id,
            problems.join("; ")
        )))
    }
}

/// The index against the listing: every manifest listed once, nothing else.
async fn verify_index(cli: &Cli, store: &crate::store::Store) -> Result<()> {
    let listed: std::collections::BTreeSet<String> = store.point_ids().await?.into_iter().collect();
    let head = crate::store::latest::read(store).await?;
    let Some(index) = head.as_ref().and_then(|h| h.index.as_ref()) else {
        return Err(Error::failed_hint(
            format!(
                "{} has no points index",
                crate::store::latest::latest_key(store)
            ),
            "build it with drd points reindex (the next backup builds it too)",
        ));
    };
    let mut indexed = std::collections::BTreeSet::new();
    let mut twice = vec![];
    for e in crate::store::latest::rows(store, index, None).await? {
        if !indexed.insert(e.id.clone()) {
            twice.push(e.id);
        }
    }
    // The newest entry may name the point of a run that died before its manifest.
    if let Some(h) = &head {
        if !listed.contains(&h.id) {
            indexed.remove(&h.id);
        }
    }
    let missing: Vec<&String> = listed.difference(&indexed).collect();
    let extra: Vec<&String> = indexed.difference(&listed).collect();
    if cli.json() {
        super::print_json(&serde_json::json!({
            "points": listed.len(), "indexed": indexed.len(),
            "missing": missing, "extra": extra, "twice": twice,
        }));
    }
    if missing.is_empty() && extra.is_empty() && twice.is_empty() {
        if !cli.json() {
            println!(
                "ok   the index lists the {} point(s) the store holds",
                listed.len()
            );
        }
        return Ok(());
    }
    Err(Error::failed_hint(
        format!(
            "the points index disagrees with the manifests: {} missing ({}), {} extra ({}), {} twice",
            missing.len(),
            missing.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            extra.len(),
            extra.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            twice.len()
        ),
        "rebuild it with drd points reindex",
    ))
}
