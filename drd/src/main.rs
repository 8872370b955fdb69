//! The drd binary: parse arguments, set up tracing, run the command, map errors to exit codes.

use clap::{CommandFactory, FromArgMatches};
use drd::cli::{Cli, LogFormat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Where --region came from (a global flag: the subcommand's matches hold it too).
    let env_source = |m: &clap::ArgMatches| {
        m.value_source("region") == Some(clap::parser::ValueSource::EnvVariable)
    };
    let chain = command_chain(&matches);
    drd::iam::declare(&chain, drd::cli::iam::declared_actions(&chain));
    cli.region_from_env =
        env_source(&matches) || matches.subcommand().is_some_and(|(_, m)| env_source(m));
    // drd's own events at the chosen level; the AWS SDK only with -vvv (it can log request details).
    let daemon = matches!(cli.command, drd::cli::Command::Daemon(_));
    let own = match cli.verbose {
        0 if daemon => "warn,drd=info",
        0 => "warn",
        1 => "warn,drd=info",
        2 => "warn,drd=debug",
        _ => "debug",
    };
    // The SDK's own lines (a credential chain's WARNs, say) only with -vvv: drd's error names
    // what failed in one line, and -v adds the whole chain.
    let sdk_quiet = ",aws_config=off,aws_smithy_runtime=off,aws_smithy_runtime_api=off,\
                     aws_smithy_http_client=off,aws_runtime=off,aws_sigv4=off,\
                     aws_credential_types=off,hyper_util=off";
    let filter = if cli.verbose >= 3 {
        own.to_string()
    } else {
        format!("{own}{sdk_quiet}")
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(&filter));
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

/// The subcommand path of this run (`points show`, `runbook run lambda-rollback`): what its IAM
/// declaration is looked up by.
fn command_chain(matches: &clap::ArgMatches) -> String {
    let mut words = vec![];
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        words.push(name.to_string());
        m = sub;
    }
    if words == ["runbook", "run"] {
        if let Ok(Some(n)) = m.try_get_one::<String>("name") {
            words.push(n.clone());
        }
    }
    words.join(" ")
}
