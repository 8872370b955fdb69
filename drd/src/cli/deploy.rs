//! `drd deploy [--region R]`.

use super::Cli;
use crate::deploy::{DeployOptions, SecretInput};
use crate::error::Result;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  printf %s \"$KEY\" | drd deploy\n  drd deploy --bootstrap target/x86_64-unknown-linux-musl/release/classifier < /dev/null\n  drd deploy --commit \"$GITHUB_SHA\" --ci-provider github < /dev/null"
)]
pub struct Args {
    /// A prebuilt static bootstrap binary (default: build the workload with cargo).
    #[arg(long, env = "DRD_BOOTSTRAP")]
    pub bootstrap: Option<PathBuf>,
    /// Value of the API-key secret if it must be created (default: read from stdin).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The chat-completions base URL the function uses (the sandbox prints its stub's).
    #[arg(long, env = "DRD_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// The commit this deploy builds (the CI passes it): recorded against the published
    /// version in the store's `commits/`, shown by `drd status`. Example: --commit "$GITHUB_SHA".
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The CI provider running this deploy: it deploys only while that provider holds the CI
    /// epoch (`drd failover-ci` moves it), checked before any write under the lease ci-epoch,
    /// so a run queued before a CI failover cannot deploy after it. CI passes it; a deploy by
    /// hand leaves it out. Inside GitHub Actions (GITHUB_ACTIONS=true) or CodeBuild
    /// (CODEBUILD_BUILD_ID) it is inferred when not given. Example: --ci-provider github.
    #[arg(long, value_enum, env = "DRD_CI_PROVIDER")]
    pub ci_provider: Option<crate::store::ci_epoch::Provider>,
    /// Testing only: accept a bootstrap that is not a static ELF binary.
    #[arg(long, hide = true)]
    pub skip_static_check: bool,
}

/// The CI provider of a deploy that names none, from the runner's environment: an older
/// workflow or buildspec (a re-run of an old commit) is fenced all the same.
fn inferred_provider(progress: &(dyn Fn(&str) + Sync)) -> Option<crate::store::ci_epoch::Provider> {
    use crate::store::ci_epoch::Provider;
    let p = if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        Provider::Github
    } else if std::env::var("CODEBUILD_BUILD_ID").is_ok_and(|v| !v.is_empty()) {
        Provider::Codepipeline
    } else {
        return None;
    };
    progress(&format!(
        "--ci-provider {p} (inferred from the environment: {})",
        if p == Provider::Github {
            "GITHUB_ACTIONS"
        } else {
            "CODEBUILD_BUILD_ID"
        }
    ));
    Some(p)
}

async fn deploy_and_record(
    aws: &crate::aws::Aws,
    policy: &crate::policy::Policy,
    opts: &DeployOptions,
    commit: Option<String>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<crate::deploy::DeployReport> {
    let mut report = crate::deploy::deploy(aws, policy, opts, progress).await?;
    if let Some(c) = commit {
        let written = crate::deploy::record_commit(aws, policy, &report, &c).await?;
        progress(&format!(
            "commit {c} recorded for version {}{}",
            report.version,
            if written { "" } else { " (already)" }
        ));
        report.commit = Some(c);
        report.changed |= written;
    }
    Ok(report)
}

/// The fence's lease TTL: long, because a deploy may compile the function on a busy build host
/// (a renewal that cannot land in time stops the deploy), and a deploy that dies only delays a
/// CI switch by this much.
const FENCE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Run `work` only while `provider` holds the CI epoch: under the lease `ci-epoch` (which a
/// switch takes too), checked before `work` writes anything.
async fn fenced(
    aws: &crate::aws::Aws,
    policy: &crate::policy::Policy,
    provider: crate::store::ci_epoch::Provider,
    work: impl std::future::Future<Output = Result<crate::deploy::DeployReport>>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<crate::deploy::DeployReport> {
    use crate::store::{ci_epoch, lease::Lease};
    let store = crate::store::open_store(aws, policy).await?;
    let mut lease = Lease::acquire_waiting(
        &store,
        ci_epoch::LEASE,
        &format!("drd deploy --ci-provider {provider}"),
        FENCE_TTL,
        std::time::Duration::from_secs(1800),
        progress,
    )
    .await?;
    let epoch = match ci_epoch::require(&store, provider).await {
        Ok(e) => e,
        Err(e) => {
            let _ = lease.release().await;
            return Err(e);
        }
    };
    progress(&format!(
        "CI epoch {}: held by {provider}, deploying",
        epoch.epoch
    ));
    let r = match lease.guard(work).await {
        Ok(r) => r,
        Err(lost) => Err(crate::error::Error::failed_hint(
            format!(
                "the deploy stopped: the lease {} was lost ({})",
                lost.key, lost.why
            ),
            "run the same deploy again: every step converges",
        )),
    };
    let _ = lease.release().await;
    r
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let region = cli.region(&policy)?;
    let commit = args
        .commit
        .as_deref()
        .map(crate::lambda::commits::parse_commit)
        .transpose()?;
    let opts = DeployOptions {
        region,
        bootstrap: args.bootstrap.clone(),
        skip_static_check: args.skip_static_check,
        secret_input: match &args.secret_file {
            Some(p) => SecretInput::File(p.clone()),
            None => SecretInput::Stdin,
        },
        llm_base_url: args.llm_base_url.clone().filter(|s| !s.is_empty()),
    };
    // Off a terminal, the text output keeps each event line (CI logs read them).
    let shown = super::progress::Progress::start_echoing("deploy", !cli.json());
    let progress = |line: &str| shown.line(line);
    let aws = cli.aws_for(&policy);
    let work = deploy_and_record(&aws, &policy, &opts, commit, &progress);
    let report = match args.ci_provider.or_else(|| inferred_provider(&progress)) {
        None => work.await?,
        Some(p) => fenced(&aws, &policy, p, work, &progress).await?,
    };
    drop(shown); // the spinner is gone before the result is printed
    if cli.json() {
        super::print_json(&report);
        return Ok(());
    }
    if report.changed {
        println!(
            "deployed {} to {} in {:.1}s",
            report.stack,
            report.region,
            report.duration_ms as f64 / 1000.0
        );
    } else {
        println!(
            "no changes: {} in {} is already up to date",
            report.stack, report.region
        );
    }
    println!(
        "  stack        {} ({})",
        report.stack_action, report.stack_status
    );
    println!(
        "  code         {} {}",
        report.code_sha256,
        if report.code_uploaded {
            "uploaded"
        } else {
            "unchanged"
        }
    );
    println!(
        "  version      {} {}",
        report.version,
        if report.version_published {
            "published"
        } else {
            "unchanged"
        }
    );
    println!(
        "  alias live   -> {}{}",
        report.version,
        match (&report.alias_from, report.alias_changed) {
            (Some(f), true) => format!(" (was {f})"),
            (None, true) => " (created)".to_string(),
            _ => " (unchanged)".to_string(),
        }
    );
    println!("  function url {}", report.function_url);
    if let Some(c) = &report.commit {
        println!("  commit       {c}");
    }
    for p in &report.probes {
        println!(
            "  probe {:?}     {:4} {:>5} ms  via {}",
            p.tier,
            if p.ok { "ok" } else { "FAIL" },
            p.latency_ms,
            p.via
        );
    }
    Ok(())
}
