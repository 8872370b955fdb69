//! `drd ci install [--region R]`: the standby CI (CodePipeline + CodeBuild) from the workload's
//! pipeline template.

use super::Cli;
use crate::error::Result;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  drd ci install\n  drd ci install --region us-west-2")]
pub struct Args {
    #[command(subcommand)]
    pub command: CiCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CiCommand {
    /// Create or update the standby pipeline and its CodeBuild projects from `[pipeline]
    /// template` (a CloudFormation stack `<stack>-ci` in the acting region).
    ///
    /// Example: drd ci install --region us-west-2
    Install,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    match args.command {
        CiCommand::Install => install(cli).await,
    }
}

async fn install(cli: &Cli) -> Result<()> {
    let policy = cli.load_policy()?;
    let region = cli.region(&policy)?;
    // Off a terminal, the text output keeps each event line (CI logs read them).
    let shown = super::progress::Progress::start_echoing("ci install", !cli.json());
    let progress = |line: &str| shown.line(line);
    let r = crate::ci::install(&cli.aws_for(&policy), &policy, &region, &progress).await?;
    drop(shown); // the spinner is gone before the result is printed
    if cli.json() {
        super::print_json(&r);
        return Ok(());
    }
    println!(
        "standby CI {} in {} ({:.1}s)",
        r.pipeline,
        r.region,
        r.duration_ms as f64 / 1000.0
    );
    println!(
        "  stack          {} {} ({})",
        r.stack, r.stack_action, r.stack_status
    );
    println!("  pipeline       {}", r.pipeline);
    println!("  projects       {}", r.projects.join(", "));
    println!(
        "  source bucket  {} (versioned; upload the source zip here)",
        r.source_bucket
    );
    println!("  artifacts      {}", r.artifact_bucket);
    println!(
        "  created by     {}",
        if r.created_through == "cloudformation" {
            "CloudFormation".to_string()
        } else {
            "CloudFormation, then the CodePipeline and CodeBuild APIs from the template's properties (the emulator's CloudFormation skips those types); checked against the template".to_string()
        }
    );
    Ok(())
}
