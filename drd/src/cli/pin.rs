//! `drd pin [--version N] [--deep]`: probe a published version and record it as known-good.

use super::Cli;
use crate::actions::Ctx;
use crate::error::{Error, Result};
use crate::lambda::ops;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  drd pin\n  drd pin --version 7 --deep")]
pub struct Args {
    /// The version to pin (default: the one `live` points to).
    #[arg(long)]
    pub version: Option<String>,
    /// Also probe T2 (one LLM call: proves the API key and the LLM endpoint).
    #[arg(long)]
    pub deep: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let aws = cli.aws_for(&policy);
    let region = cli.acting_region(&aws, &policy).await?;
    let version = match &args.version {
        Some(v) => v.clone(),
        None => {
            let lambda = aws.lambda(&region).await;
            ops::live_version(&lambda, policy.function_name())
                .await?
                .ok_or_else(|| {
                    Error::failed_hint(
                        format!("{} has no live alias in {region}", policy.function_name()),
                        "name the version with --version N",
                    )
                })?
        }
    };
    let store = crate::store::open_store(&aws, &policy).await?;
    let noop = |_: &str| {};
    let ctx = Ctx {
        aws: &aws,
        policy: &policy,
        region,
        store,
        run_id: format!("drd pin on {}", crate::store::lease::hostname()),
        progress: &noop,
        secret_value: None,
    };
    let out = crate::actions::pin_version(&ctx, &version, args.deep).await?;
    if cli.json() {
        super::print_json(&serde_json::json!({"pin": out.pin, "written": out.written}));
    } else {
        println!(
            "version {} pinned{} (CodeSha256 {}, probes {})",
            out.pin.version,
            if out.written {
                ""
            } else {
                " already, unchanged"
            },
            out.pin.code_sha256,
            out.pin
                .probes
                .iter()
                .map(|p| format!("{:?}", p.tier))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    Ok(())
}
