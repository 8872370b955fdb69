//! The `drd-sandbox` binary (the local lab): parse arguments, run, map errors to exit codes.
//! Users reach it as `drd sandbox ...`; it is never part of the production `drd` binary.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = drd_sandbox::cli::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(drd_sandbox::cli::run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
