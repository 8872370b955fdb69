//! `drd backup`: take a recovery point now.

use super::Cli;
use crate::error::Result;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd backup\n  drd --output json backup\n  drd --policy policies/classifier.toml backup"
)]
pub struct Args {}

pub async fn run(cli: &Cli, _args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let shown = super::progress::Progress::start("backup");
    let progress = |line: &str| shown.line(line);
    let r = crate::backup::backup(&cli.aws_for(&policy), &policy, &progress).await?;
    drop(shown); // the spinner is gone before the result is printed
    if cli.json() {
        super::print_json(&r);
    } else {
        println!("{}", r.id);
        println!(
            "  {} new blob(s), {} bytes, {} object(s) written in {:.2}s",
            r.new_blobs,
            r.new_bytes,
            r.objects_written,
            r.duration_ms as f64 / 1000.0
        );
        println!(
            "  changed: {}",
            if r.changed.is_empty() {
                "nothing".to_string()
            } else {
                r.changed.join(", ")
            }
        );
    }
    Ok(())
}
