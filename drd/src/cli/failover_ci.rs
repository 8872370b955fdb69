//! `drd failover-ci --to codepipeline|github`: procedure 5, runbook `ci-failover` (to the
//! standby CodePipeline, from the mirror) or `ci-failback` (back to GitHub Actions).

use super::Cli;
use crate::error::{ConfigError, Result};
use crate::store::ci_epoch::Provider;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd failover-ci --to codepipeline --dry-run\n  drd failover-ci --to codepipeline\n  drd failover-ci --to codepipeline --commit 3f2c...e1 (a SHA that was a mirrored head)\n  drd mirror push --from ~/src/classifier && drd failover-ci --to codepipeline\n  drd failover-ci --to github (when GitHub answers again)"
)]
pub struct Args {
    /// Where CI goes: codepipeline (runbook ci-failover) or github (runbook ci-failback).
    #[arg(long, value_enum)]
    pub to: Provider,
    /// The commit CodePipeline deploys: latest (the mirrored head) or the SHA of a mirrored
    /// head. Only with --to codepipeline (failback deploys GitHub's branch head).
    #[arg(long, value_name = "SHA|latest")]
    pub commit: Option<String>,
    /// Print the plan (preflight included, with what it observed) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue an interrupted run.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
}

#[derive(Serialize)]
struct Summary<'a> {
    to: &'a str,
    commit: Option<&'a str>,
    /// The CI RTO: from the run's start to the check that `live` runs the commit, healthy.
    ci_rto_ms: Option<u64>,
    /// The CI RPO: how old the mirror was at the start (its last successful fetch).
    ci_rpo_s: Option<u64>,
    epoch: Option<&'a str>,
    /// The CodePipeline execution, or the GitHub run.
    execution: Option<&'a str>,
    run: &'a crate::runbook::exec::RunReport,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let runbook = match args.to {
        Provider::Codepipeline => "ci-failover",
        Provider::Github => "ci-failback",
    };
    let mut inputs = BTreeMap::new();
    if let Some(c) = &args.commit {
        if args.to == Provider::Github {
            return Err(ConfigError::new("--commit", "--commit applies only to --to codepipeline")
                .hint("failback deploys the deploy branch's head on GitHub after pushing the mirror to it")
                .into());
        }
        inputs.insert("commit".to_string(), c.clone());
    }
    let Some(r) = super::runbook::run_named(
        cli,
        runbook,
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
    let commit = match args.to {
        Provider::Codepipeline => out("preflight", "commit"),
        Provider::Github => out("push", "head"),
    };
    let s = Summary {
        to: args.to.as_str(),
        commit,
        ci_rto_ms: if r.outcome == "succeeded" {
            r.succeeded_at_ms.get("deploy").copied()
        } else {
            None
        },
        ci_rpo_s: out("preflight", "mirror_age_s").and_then(|a| a.parse().ok()),
        epoch: out("epoch", "epoch"),
        execution: out("deploy", "execution_id").or(out("deploy", "run_id")),
        run: &r,
    };
    if cli.json() {
        super::print_json(&s);
    } else {
        super::runbook::print_report(cli, &r);
        if let (Some(c), Some(ms)) = (s.commit, s.ci_rto_ms) {
            println!(
                "CI is on {} (epoch {}): live runs commit {c}, deployed by {} {}",
                s.to,
                s.epoch.unwrap_or("?"),
                if args.to == Provider::Codepipeline {
                    "execution"
                } else {
                    "GitHub run"
                },
                s.execution.unwrap_or("?")
            );
            println!(
                "  CI RTO {:.1}s (start to a healthy live at that commit)",
                ms as f64 / 1000.0
            );
        }
        if let Some(rpo) = s.ci_rpo_s {
            println!("  CI RPO {rpo}s (the mirror's age at the start)");
        }
    }
    super::runbook::finish(&r)
}
