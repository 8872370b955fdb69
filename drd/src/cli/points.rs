//! `drd points list [--last N]|show ID|reindex`.

use super::Cli;
use crate::backup::{self, manifest::Manifest};
use crate::error::Result;
use crate::store::latest::{self, Entry};
use crate::store::Store;
use std::time::SystemTime;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd points list --last 10\n  drd points show 20261130T220815112Z-7c1f89e8\n  drd points reindex"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: PointsCommand,
    /// Use the policy's copy bucket in REGION (backup.copies) as the store for this run: for
    /// the day the store's own region failed. Never chosen by itself.
    #[arg(long, global = true, value_name = "REGION")]
    pub from_copy: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum PointsCommand {
    /// Every recovery point, oldest first (from the points index: no manifest is read).
    List {
        /// Only the newest N.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// One point's manifest.
    Show { id: String },
    /// Rebuild the points index from the manifests (under the store lease), e.g. after
    /// `drd verify --index` found it disagreeing with them.
    Reindex,
}

#[derive(serde::Serialize)]
struct Row {
    id: String,
    created_at: String,
    age_seconds: u64,
    bytes: u64,
    new_blobs: u64,
    changed: Vec<String>,
}

fn age_of(m: &Manifest) -> u64 {
    age_at(&m.created_at)
}

fn age_at(created_at: &str) -> u64 {
    humantime::parse_rfc3339(created_at)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let store = crate::store::open_store_read(&cli.aws_for(&policy), &policy).await?;
    match &args.command {
        PointsCommand::List { last } => {
            let rows: Vec<Row> = list_entries(&store, *last)
                .await?
                .into_iter()
                .map(|e| Row {
                    age_seconds: age_at(&e.created_at),
                    bytes: e.bytes,
                    new_blobs: e.new_blobs,
                    changed: e.changed,
                    created_at: e.created_at,
                    id: e.id,
                })
                .collect();
            if cli.json() {
                super::print_json(&rows);
            } else {
                println!(
                    "{:<30} {:>10} {:>12} {:>5}  changed",
                    "point", "age", "bytes", "new"
                );
                for r in rows {
                    println!(
                        "{:<30} {:>10} {:>12} {:>5}  {}",
                        r.id,
                        humantime::format_duration(std::time::Duration::from_secs(r.age_seconds))
                            .to_string()
                            .split(' ')
                            .take(2)
                            .collect::<Vec<_>>()
                            .join(" "),
                        r.bytes,
                        r.new_blobs,
                        r.changed.join(", ")
                    );
                }
            }
        }
        PointsCommand::Reindex => {
            let r = reindex(&store).await?;
            if cli.json() {
                super::print_json(&r);
            } else {
                println!(
                    "indexed {} point(s) in {} segment(s) and {} recent entries; {} stale segment(s) deleted",
                    r.points, r.segments, r.recent, r.deleted
                );
            }
        }
        PointsCommand::Show { id } => {
            let m = backup::read_manifest(&store, id).await?;
            if cli.json() {
                super::print_json(&m);
            } else {
                println!(
                    "point      {} ({} ago)",
                    m.id,
                    humantime::format_duration(std::time::Duration::from_secs(age_of(&m)))
                );
                println!(
                    "stack      {} in {} ({})",
                    m.stack.name, m.stack.region, m.stack.status
                );
                println!(
                    "template   {} ({} bytes)",
                    m.stack.template.sha256, m.stack.template.size
                );
                for a in &m.function.aliases {
                    println!("alias      {} -> {}", a.0, a.1);
                }
                for c in &m.code {
                    println!(
                        "code       {} {} bytes, {}",
                        c.code_sha256,
                        c.blob.size,
                        c.used_by.join(", ")
                    );
                }
                for s in &m.secrets {
                    for v in &s.versions {
                        println!(
                            "secret     {} {} [{}]",
                            s.name,
                            v.version_id,
                            v.stages.join(",")
                        );
                    }
                }
                if !m.secrets.is_empty() || !m.function.environments.is_empty() {
                    // What opens this point's secrets: the recipients it was encrypted to.
                    if m.recipients.is_empty() {
                        println!("recipients not recorded (a point from before drd recorded them; try verify --identity)");
                    }
                    for r in &m.recipients {
                        println!("recipient  {r}");
                    }
                }
                if let Some(l) = &m.log_group {
                    println!(
                        "log group  {} retention {:?} days",
                        l.name, l.retention_days
                    );
                }
                println!("changed    {}", m.changes.items.join(", "));
            }
        }
    }
    Ok(())
}

/// The listing's rows: from the index when the pointer is current (the newest `last` read from
/// the segments they are in), else from every manifest (a store from before the index; the next
/// backup or `drd points reindex` builds it).
async fn list_entries(store: &Store, last: Option<usize>) -> Result<Vec<Entry>> {
    if let Some((head, newer)) = latest::newer_than_pointer(store).await? {
        if let (Some(index), true) = (&head.index, newer.is_empty()) {
            let mut e = latest::rows(store, index, last.map(|n| n + 1)).await?;
            // Only the newest entry can name a point whose run died before its manifest.
            if e.last().is_some_and(|x| x.id == head.id)
                && !store.exists(&store.point_key(&head.id)).await?
            {
                e.pop();
            }
            if let Some(n) = last {
                e = e.split_off(e.len().saturating_sub(n));
            }
            return Ok(e);
        }
    }
    let mut ids = store.point_ids().await?;
    if let Some(n) = last {
        ids = ids.split_off(ids.len().saturating_sub(n));
    }
    let mut out = vec![];
    for id in ids {
        // A manifest that does not parse is reported by verify, not listed as a point.
        if let Ok(m) = backup::read_manifest(store, &id).await {
            out.push(backup::entry_of(&m));
        }
    }
    Ok(out)
}

#[derive(serde::Serialize)]
struct Reindexed {
    points: usize,
    segments: usize,
    recent: usize,
    deleted: usize,
}

/// Rebuild the index and the pointer from the manifests, then delete segments nothing names.
async fn reindex(store: &Store) -> Result<Reindexed> {
    use crate::store::lease::Lease;
    let mut lease = Lease::acquire(
        store,
        backup::STORE_LEASE,
        "drd points reindex",
        backup::LEASE_TTL,
    )
    .await?;
    let token = lease.record.token;
    let work = async {
        let index = backup::build_index(store, None).await?;
        let all = index.entries(store).await?;
        let head = all.last().map(|e| latest::Latest {
            id: e.id.clone(),
            created_at: e.created_at.clone(),
            fencing_token: token,
            index: Some(index.clone()),
        });
        latest::reset(store, head.as_ref()).await?;
        let prefix = format!("{}index/", store.prefix);
        let named: std::collections::BTreeSet<String> = index
            .segments
            .iter()
            .map(|s| latest::segment_key(store, s))
            .collect();
        let stale: Vec<String> = store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !named.contains(k))
            .collect();
        store.delete_many(&stale).await?;
        Ok::<_, crate::Error>(Reindexed {
            points: all.len(),
            segments: index.segments.len(),
            recent: index.recent.len(),
            deleted: stale.len(),
        })
    };
    // Renewed while it reads every manifest; losing it stops the rebuild.
    let r = match lease.guard(work).await {
        Ok(r) => r,
        Err(lost) => Err(crate::Error::failed(format!(
            "reindex stopped: the store lease {} was lost ({})",
            lost.key, lost.why
        ))),
    };
    lease.release().await?;
    r
}
