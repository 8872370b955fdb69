//! `drd daemon` and `drd schedule`.

use super::Cli;
use crate::daemon;
use crate::error::{ConfigError, Result};
use crate::schedule;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd daemon --listen 127.0.0.1:9464\n  drd --policy /etc/drd/policies daemon --max-concurrent 4\n  curl -s 127.0.0.1:9464/metrics"
)]
pub struct Args {
    /// Listener for the status page, /healthz, /readyz, /metrics (default: the policy's daemon.listen, else
    /// 127.0.0.1:9464).
    #[arg(long, env = "DRD_LISTEN")]
    pub listen: Option<String>,
    /// Jobs running at once, across every stack.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent: usize,
    /// How long a job lease lives without renewal (renewed every third of it); a standby
    /// daemon takes a firing over within this time after its holder dies.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// On SIGTERM/SIGINT, how long running jobs may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    if args.lease_ttl < Duration::from_secs(3) {
        return Err(ConfigError::new(
            "--lease-ttl",
            "a lease TTL under 3 s cannot be renewed reliably",
        )
        .hint("use 3s or more (default 30s)")
        .into());
    }
    // The daemon loads (and reports on) its policies itself; here they only set the timeouts.
    let policies = daemon::load_policies(&cli.policy).unwrap_or_default();
    daemon::run(
        Arc::new(cli.aws_for_all(&policies)),
        daemon::Options {
            policy: cli.policy.clone(),
            listen: args.listen.clone(),
            max_concurrent: args.max_concurrent,
            lease_ttl: args.lease_ttl,
            grace: args.grace,
            runbooks: Some(cli.runbooks.clone()),
            state_dir: cli.state_dir(),
        },
    )
    .await
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd schedule\n  drd schedule --next 5\n  drd schedule --at 2026-12-01T00:00:00Z"
)]
pub struct ScheduleArgs {
    /// Preview from this time (RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Firings per job.
    #[arg(long, default_value_t = 5)]
    pub next: usize,
}

pub async fn schedule(cli: &Cli, args: &ScheduleArgs) -> Result<()> {
    let policies = daemon::load_policies(&cli.policy)?;
    let jobs = daemon::jobs(&policies)?;
    let at: DateTime<Utc> = match &args.at {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| {
                ConfigError::new("--at", format!("{t:?} is not an RFC 3339 time: {e}"))
                    .hint("e.g. --at 2026-11-27T10:00:00Z")
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let mut rows = vec![];
    for j in &jobs {
        let mut cursor = at;
        for _ in 0..args.next {
            let Some(tick) = j.cron.next_after(cursor) else {
                break;
            };
            let jit = schedule::jitter(j.jitter, &j.stack, &j.job, tick);
            rows.push(serde_json::json!({
                "stack": j.stack,
                "job": j.job,
                "cron": j.cron.expr,
                "timezone": j.cron.tz.name(),
                "tick": tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "local": tick.with_timezone(&j.cron.tz).format("%Y-%m-%d %H:%M:%S %Z").to_string(),
                "jitter_ms": jit.as_millis() as u64,
                "fires_at": schedule::add(tick, jit).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }));
            cursor = tick;
        }
    }
    if cli.json() {
        super::print_json(&rows);
    } else if rows.is_empty() {
        println!("no schedules: add [[daemon.schedule]] entries to the policy");
    } else {
        println!(
            "{:<28} {:<22} {:<21} {:<27} {:>9}",
            "stack", "job", "firing (UTC)", "local time", "jitter"
        );
        for r in &rows {
            println!(
                "{:<28} {:<22} {:<21} {:<27} {:>7}ms",
                r["stack"].as_str().unwrap_or(""),
                r["job"].as_str().unwrap_or(""),
                r["tick"].as_str().unwrap_or(""),
                r["local"].as_str().unwrap_or(""),
                r["jitter_ms"]
            );
        }
    }
    Ok(())
}
