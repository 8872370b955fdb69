//! `drd points list|show ID`.

use super::Cli;
use crate::backup::{self, manifest::Manifest};
use crate::error::Result;
use std::time::SystemTime;

#[derive(Debug, clap::Args)]
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
    /// Every recovery point, oldest first.
    List,
    /// One point's manifest.
    Show { id: String },
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
    humantime::parse_rfc3339(&m.created_at)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let store = crate::store::open_store_read(&cli.aws_for(&policy), &policy).await?;
    match &args.command {
        PointsCommand::List => {
            let mut rows = vec![];
            for id in store.point_ids().await? {
                // A manifest that does not parse is reported by verify, not listed as a point.
                if let Ok(m) = backup::read_manifest(&store, &id).await {
                    rows.push(Row {
                        age_seconds: age_of(&m),
                        bytes: m.total_bytes(),
                        new_blobs: m.changes.new_blobs,
                        changed: m.changes.items.clone(),
                        created_at: m.created_at,
                        id,
                    });
                }
            }
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
