//! `drd failback --identity FILE [--retire-standby]`: runbook `failback`,
//! the way back to the primary after `drd restore --region R` moved the service away.

use super::Cli;
use crate::error::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd failback --identity ~/.config/drd/identity.txt --dry-run\n  drd failback --identity ~/.config/drd/identity.txt\n  drd failback --identity ~/.config/drd/identity.txt --retire-standby"
)]
pub struct Args {
    /// The age identity file that decrypts the secret backups.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Delete the standby stack once the primary serves (kept otherwise).
    #[arg(long)]
    pub retire_standby: bool,
    /// Print the plan (preflight included) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue an interrupted failback.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Use the policy's copy bucket in REGION (backup.copies) as the store for this run.
    #[arg(long, value_name = "REGION")]
    pub from_copy: Option<String>,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let mut inputs = BTreeMap::new();
    if let Some(id) =
        super::restore::identity_input(args.identity.as_deref(), args.resume.is_some(), "failback")?
    {
        inputs.insert("identity".to_string(), id);
    }
    if args.resume.is_none() {
        inputs.insert(
            "retire_standby".to_string(),
            args.retire_standby.to_string(),
        );
    }
    let Some(r) = super::runbook::run_named(
        cli,
        "failback",
        inputs,
        args.dry_run,
        args.resume.clone(),
        None,
    )
    .await?
    else {
        return Ok(());
    };
    let primary = r
        .output("preflight", "region")
        .unwrap_or("the primary")
        .to_string();
    super::restore::print_summary(cli, &primary, &r, "failed back to");
    if !cli.json() {
        if let (Some(s), Some(d)) = (
            r.output("preflight", "standby"),
            r.output("retire", "detail"),
        ) {
            println!("  standby {s}: {d}");
        }
    }
    super::runbook::finish(&r)
}
