//! The drd binary: parse arguments, set up tracing, run the command, map errors to exit codes.

use clap::Parser;
use drd::cli::{Cli, LogFormat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // drd's own events at the chosen level; the AWS SDK only with -vvv (it can log request details).
    let daemon = matches!(cli.command, drd::cli::Command::Daemon(_));
    let filter = match cli.verbose {
        0 if daemon => "warn,drd=info",
        0 => "warn",
        1 => "warn,drd=info",
        2 => "warn,drd=debug",
        _ => "debug",
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter));
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    // Larger worker stacks than tokio's 2 MiB: a backup's future is deep, and unoptimised builds
    // (the test suite's) need more stack for it than release builds.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(drd::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
