//! `drd rollback [--to N] [--force]`: runbook `lambda-rollback` (procedure 2).

use super::Cli;
use crate::error::Result;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd rollback --dry-run\n  drd rollback\n  drd rollback --to 5\n  drd rollback --resume RUN"
)]
pub struct Args {
    /// Roll back to this version (must be pinned unless --force).
    #[arg(long)]
    pub to: Option<String>,
    /// Allow a version that is not pinned.
    #[arg(long)]
    pub force: bool,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue an interrupted rollback run.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
}

#[derive(Serialize)]
struct Summary<'a> {
    from: Option<&'a str>,
    to: Option<&'a str>,
    /// Start of the run to the first healthy probe through the Function URL.
    healthy_after_ms: Option<u64>,
    run: &'a crate::runbook::exec::RunReport,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    // On resume, what is given must match the run's inputs (the executor checks).
    let mut inputs = BTreeMap::new();
    if let Some(to) = &args.to {
        inputs.insert("to".to_string(), to.clone());
    }
    if args.force || args.resume.is_none() {
        inputs.insert("force".to_string(), args.force.to_string());
    }
    let Some(r) = super::runbook::run_named(
        cli,
        "lambda-rollback",
        inputs,
        args.dry_run,
        args.resume.clone(),
        None,
    )
    .await?
    else {
        return Ok(());
    };
    let out = |step: &str, k: &str| r.output(step, k);
    let healthy = if r.outcome == "succeeded" {
        r.succeeded_at_ms.get("probe").copied()
    } else {
        None
    };
    let s = Summary {
        from: out("observe", "live_version"),
        to: out("choose", "target"),
        healthy_after_ms: healthy,
        run: &r,
    };
    if cli.json() {
        super::print_json(&s);
    } else {
        super::runbook::print_report(cli, &r);
        if let (Some(from), Some(to), Some(ms)) = (s.from, s.to, healthy) {
            println!(
                "rolled back live from version {from} to {to}: healthy through the Function URL {:.2}s after the start",
                ms as f64 / 1000.0
            );
        }
    }
    super::runbook::finish(&r)
}
