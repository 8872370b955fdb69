//! `drd completions SHELL` and `drd man [--out DIR]`: generated from the clap definition, so
//! they never drift from the commands.

use super::Cli;
use crate::error::{Error, Result};
use clap::CommandFactory;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  source <(drd completions bash)\n  drd completions zsh > \"${fpath[1]}/_drd\"\n  drd completions fish > ~/.config/fish/completions/drd.fish"
)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd man | man -l -\n  drd man --out /usr/local/share/man/man1"
)]
pub struct ManArgs {
    /// Write drd.1 and drd-COMMAND.1 for every command into this directory (default: drd.1 on
    /// stdout).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "drd", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: &ManArgs) -> Result<()> {
    let cmd = Cli::command();
    match &args.out {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| Error::io("writing the man page", e)),
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| Error::io(dir.display().to_string(), e))?;
            println!("man pages written to {}", dir.display());
            Ok(())
        }
    }
}
