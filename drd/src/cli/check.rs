//! `drd check`: reachability and permissions, one line per call.

use super::Cli;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd check\n  drd --output json check\n  AWS_PROFILE=dr-operator drd check"
)]
pub struct Args {}

pub async fn run(cli: &Cli, _args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let items = crate::check::check(&cli.aws_for(&policy), &policy).await;
    if cli.json() {
        super::print_json(&items);
    } else {
        for i in &items {
            println!(
                "{:4} {:10} {:32} {}",
                if i.ok { "ok" } else { "FAIL" },
                i.region,
                i.call,
                i.detail
            );
        }
    }
    let failed: Vec<String> = items
        .iter()
        .filter(|i| !i.ok)
        .map(|i| format!("{} ({})", i.call, i.code.as_deref().unwrap_or("error")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "{} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        )))
    }
}
