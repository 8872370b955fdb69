//! `drd sandbox ...`: hands its arguments to the `drd-sandbox` binary (the local lab), found
//! beside `drd` or on `PATH`. The lab is a crate of its own so that the production binary and
//! the daemon image carry none of it.

use super::Cli;
use crate::error::{ConfigError, Error, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The lab's binary name.
pub const SANDBOX_BIN: &str = "drd-sandbox";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab's command and its flags (`up`, `down`, `status`, `env`, `llm allow|revoke`,
    /// `fail-region R`, `restore-region R`; `--help` for all).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<OsString>,
}

/// `drd-sandbox` beside this executable, else the first one on `path`.
pub fn locate(current_exe: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let beside = current_exe
        .and_then(Path::parent)
        .map(|d| d.join(SANDBOX_BIN))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::split_paths(path?)
            .map(|d| d.join(SANDBOX_BIN))
            .find(|p| p.is_file())
    })
}

pub fn run(cli: &Cli, args: &Args) -> Result<()> {
    let exe = std::env::current_exe().ok();
    let Some(bin) = locate(exe.as_deref(), std::env::var_os("PATH").as_deref()) else {
        return Err(ConfigError::new(
            "drd sandbox",
            format!(
                "the local lab ({SANDBOX_BIN}) is not installed: it is neither beside {} nor on PATH",
                exe.as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "drd".into())
            ),
        )
        .hint("build it with `cargo build -p drd-sandbox` (next to drd in target/), or install it with `cargo install --path sandbox`")
        .into());
    };
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(&args.args);
    if cli.json() {
        cmd.env("DRD_OUTPUT", "json");
    }
    // Replaces this process: signals, exit codes and standard streams are the lab's own.
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    Err(Error::io(format!("starting {}", bin.display()), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_lab_beside_drd_before_path() {
        let beside = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        std::fs::write(on_path.path().join(SANDBOX_BIN), "").unwrap();
        let drd = beside.path().join("drd");
        let path = std::env::join_paths([on_path.path()]).unwrap();
        // Not beside: found on PATH.
        assert_eq!(
            locate(Some(&drd), Some(&path)),
            Some(on_path.path().join(SANDBOX_BIN))
        );
        // Beside wins.
        std::fs::write(beside.path().join(SANDBOX_BIN), "").unwrap();
        assert_eq!(
            locate(Some(&drd), Some(&path)),
            Some(beside.path().join(SANDBOX_BIN))
        );
        // Neither.
        assert_eq!(locate(Some(&on_path.path().join("x/drd")), None), None);
    }
}
