//! `drd unlock NAME [--force] [--watch D]`: break a lease whose holder has stopped renewing.

use super::Cli;
use crate::error::Result;
use crate::store::lease;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd unlock runbook-region-redeploy\n  drd unlock store --force"
)]
pub struct Args {
    /// The lease: `store`, `runbook-NAME`, `daemon-JOB` (the last part of the lock's key, as
    /// the "lock ... is held" message names it).
    pub name: String,
    /// Break it even while its holder renews it (that holder may still be writing).
    #[arg(long)]
    pub force: bool,
    /// How long to watch for a renewal before deciding the holder is gone (default: the
    /// lease's TTL and a quarter, at least 5s: a holder retries a failed renewal until its TTL
    /// runs out).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let aws = cli.aws_for(&policy);
    let store = crate::store::open_store_read(&aws, &policy).await?;
    let watch = match args.watch {
        Some(w) => w,
        None => {
            let key = lease::lease_key(&store, &args.name);
            let seen = lease::observe(&store, &key).await?;
            if seen.as_ref().is_some_and(|o| o.record.is_none()) && !args.force {
                // Its TTL is unknown, so no default watch can prove its holder gone.
                return Err(crate::error::ConfigError::new(
                    "--watch",
                    format!("s3://{}/{key} is unreadable: drd cannot know how often its holder renews it", store.bucket),
                )
                .hint("pass --watch D, longer than the holder's lease TTL (e.g. --watch 5m), or --force when you know no drd holds it")
                .into());
            }
            let ttl = seen
                .and_then(|o| o.record)
                .map(|r| r.ttl_secs)
                .filter(|t| *t > 0)
                .unwrap_or(60);
            Duration::from_secs((ttl + ttl / 4).max(5))
        }
    };
    let by = format!("{} on {}", whoami(), lease::host_id());
    let progress = |l: &str| eprintln!("{l}");
    let r = lease::unlock(&store, &args.name, &by, args.force, watch, &progress).await?;
    if cli.json() {
        super::print_json(&r);
    } else {
        match r.outcome.as_str() {
            "broken" => println!(
                "{}: broken (was held by {}, token {}); the next holder gets a higher token",
                r.lease,
                r.holder.as_deref().unwrap_or("an unreadable record"),
                r.token.unwrap_or(0)
            ),
            _ => println!("{}: not held; nothing to do", r.lease),
        }
    }
    Ok(())
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".into())
}
