//! `drd mirror [push --from CLONE [--force]]`: the workload's source in the store.

use super::Cli;
use crate::error::{ConfigError, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd mirror\n  drd mirror push --from ~/src/classifier\n\n\
The repository is [ci] repository (DRD_CI_REPOSITORY overrides it); its token comes from\n\
[ci] token_secret or token_env, never from an argument."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<MirrorCommand>,
    /// The local bare cache of the repository (safe to delete; default: <state dir>/mirror).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Mirror the remote even when its deploy branch does not contain the mirrored head (a
    /// head taken with push --from that never reached the remote is then dropped).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum MirrorCommand {
    /// While the remote is down: a developer's clone becomes the mirrored source (its deploy
    /// branch; the other refs stay as mirrored). Refused when its history does not contain the
    /// mirrored head, unless --force.
    Push {
        /// The clone (a working copy or a bare repository).
        #[arg(long, value_name = "CLONE")]
        from: PathBuf,
        /// Replace the mirrored history even when the clone does not contain it.
        #[arg(long)]
        force: bool,
    },
}

/// Where the mirror caches the repository.
pub fn cache_root(cli: &Cli, flag: Option<&PathBuf>) -> Result<PathBuf> {
    match (flag, cli.state_dir()) {
        (Some(c), _) => Ok(c.clone()),
        (None, Some(s)) => Ok(s.join("mirror")),
        (None, None) => Err(
            ConfigError::new("--cache", "no directory for the mirror cache")
                .hint("pass --cache DIR or --state-dir DIR (or set HOME)")
                .into(),
        ),
    }
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    crate::ci::mirror::ci_policy(&policy)?;
    let root = cache_root(cli, args.cache.as_ref())?;
    let aws = cli.aws_for(&policy);
    // Off a terminal, the text output keeps each event line (CI logs read them).
    let shown = super::progress::Progress::start_echoing("mirror", !cli.json());
    let progress = |line: &str| shown.line(line);
    let r = match &args.command {
        None => crate::ci::run::mirror(&aws, &policy, &root, args.force, &progress).await?,
        Some(MirrorCommand::Push { from, force }) => {
            crate::ci::run::push_from(&aws, &policy, &root, from, *force, &progress).await?
        }
    };
    drop(shown); // the spinner is gone before the result is printed
    if cli.json() {
        super::print_json(&r);
        return Ok(());
    }
    if r.changed {
        println!(
            "mirrored {} ({} ref(s), {} at {}) in {:.1}s",
            r.manifest,
            r.refs,
            r.branch,
            r.head,
            r.duration_ms as f64 / 1000.0
        );
        if let (Some(b), Some(z)) = (&r.bundle, &r.zip) {
            println!("  bundle  {} ({} bytes)", b.sha256, b.size);
            println!("  zip     {} ({} bytes)", z.sha256, z.size);
        }
    } else {
        println!(
            "no ref moved: {} stays current ({} at {}); fetch time recorded",
            r.manifest, r.branch, r.head
        );
    }
    println!("  source  {}", r.source);
    println!("  objects written: {}", r.objects_written);
    Ok(())
}
