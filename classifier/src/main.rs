//! Entry point: Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set, else `--listen ADDR`.

use std::sync::Arc;

const USAGE: &str = "usage: classifier --listen ADDR   (or run under the Lambda runtime)";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = classifier::Settings::from_env();
    let c = Arc::new(settings.classifier().await);

    match args.as_slice() {
        [] if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() => {
            match classifier::server::serve_lambda(c).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("classifier: lambda runtime failed: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        [flag, addr] if flag == "--listen" => {
            let listener = match tokio::net::TcpListener::bind(addr.as_str()).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("classifier: cannot listen on {addr}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            tracing::info!(addr = %addr, "classifier listening");
            match classifier::server::serve_http(listener, c).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("classifier: server failed: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        [flag] if flag == "--version" => {
            println!("classifier {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::ExitCode::from(2)
        }
    }
}
