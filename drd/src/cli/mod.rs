//! The command line: global flags and one file per subcommand. Each subcommand turns its flags
//! into library calls and renders the result as text or JSON.

mod backup;
mod check;
mod ci;
mod completions;
mod daemon;
mod deploy;
mod drill;
mod failback;
mod failover_ci;
pub mod iam;
mod mirror;
mod pin;
mod points;
pub mod progress;
mod prune;
mod restore;
mod rollback;
mod rotate;
mod runbook;
mod sandbox;
mod status;
mod unlock;
mod validate;
mod verify;

use crate::aws::{Aws, AwsSettings};
use crate::error::{ConfigError, Result};
use crate::policy::Policy;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `drd --version`; a crash-test build says so (the end-to-end harness checks it).
#[cfg(not(feature = "failpoints"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "failpoints")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (failpoints)");

#[derive(Debug, Parser)]
#[command(
    name = "drd",
    version = VERSION,
    about = "Disaster recovery and multi-region failover for the speaker-role classifier"
)]
pub struct Cli {
    /// The DR policy file.
    #[arg(
        long,
        global = true,
        env = "DRD_POLICY",
        default_value = "policies/classifier.toml"
    )]
    pub policy: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, env = "DRD_OUTPUT", default_value_t = Output::Text)]
    pub output: Output,
    /// More logging (-v info, -vv debug, -vvv includes the AWS SDK).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, env = "DRD_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Region to act on (default: where the stack serves now: the primary, or the region the
    /// last `drd restore` made active).
    #[arg(long, global = true, env = "DRD_REGION")]
    pub region: Option<String>,
    /// Whether `--region` came from `DRD_REGION` rather than the command line (set by main:
    /// a restore writes to its region, so it never takes it from the environment).
    #[arg(skip)]
    pub region_from_env: bool,
    /// AWS profile (standard credential chain otherwise).
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// AWS endpoint override (an emulator such as the sandbox's moto server).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Lambda data-plane override for Function URLs and Invoke (the sandbox's function host).
    #[arg(long, global = true, env = "DRD_LAMBDA_DATA_ENDPOINT")]
    pub lambda_data_endpoint: Option<String>,
    /// Extra runbooks (`*.toml`); files here override the built-in ones of the same name.
    #[arg(long, global = true, env = "DRD_RUNBOOKS", default_value = "runbooks")]
    pub runbooks: PathBuf,
    /// Where runbook journals are mirrored locally (default $XDG_STATE_HOME/drd or
    /// ~/.local/state/drd).
    #[arg(long, global = true, env = "DRD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// TTL of a runbook run's lease (default 60s); renewed every third of it while the run
    /// lives, so a run whose machine died is taken over (`--resume`) within one TTL.
    #[arg(long, global = true, env = "DRD_LOCK_TTL", value_parser = parse_ttl)]
    pub lock_ttl: Option<std::time::Duration>,
    /// Longest one AWS call may take, retries included (default 5m).
    #[arg(long, global = true, env = "DRD_OPERATION_TIMEOUT", value_parser = humantime::parse_duration)]
    pub operation_timeout: Option<std::time::Duration>,
    /// Longest one attempt of an AWS call may take (default 90s).
    #[arg(long, global = true, env = "DRD_ATTEMPT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub attempt_timeout: Option<std::time::Duration>,
    /// Attempts per AWS call (default 3, or 1 with an endpoint override).
    #[arg(long, global = true, env = "DRD_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offline: check the policy and the template.
    Validate(validate::Args),
    /// Online: prove reachability and permissions with cheap read calls.
    Check(check::Args),
    /// Build, upload, create/update the stack, publish, probe, and point `live`.
    Deploy(deploy::Args),
    /// Stack, alias, code, Function URL and probe tiers.
    Status(status::Args),
    /// Take a recovery point now.
    Backup(backup::Args),
    /// The workload's standby CI (CodePipeline + CodeBuild): install.
    Ci(ci::Args),
    /// Mirror the workload's repository into the store (a git bundle, a deployable zip), or
    /// take a developer's clone while the remote is down.
    Mirror(mirror::Args),
    /// Recovery points: list, show.
    Points(points::Args),
    /// Re-hash every blob of a point (and decrypt secret backups with --identity).
    Verify(verify::Args),
    /// Apply the retention rules.
    Prune(prune::Args),
    /// Probe a published version and record it as known-good.
    Pin(pin::Args),
    /// Move live back to a known-good version (runbook lambda-rollback).
    Rollback(rollback::Args),
    /// Rotate a secret (runbook secret-rotation); the new value comes on stdin.
    Rotate(rotate::Args),
    /// Redeploy from a recovery point into another region and fail DNS over (runbook
    /// region-redeploy).
    Restore(restore::Args),
    /// After a regional failover, return the service to the primary (runbook failback); the
    /// standby stack is kept unless --retire-standby.
    Failback(failback::Args),
    /// Procedure 5: move CI to the standby CodePipeline, deploying from the mirror (runbook
    /// ci-failover), or back to GitHub Actions (runbook ci-failback).
    FailoverCi(failover_ci::Args),
    /// Shell completions (bash, zsh, fish, powershell, elvish) on stdout, generated from the
    /// command definition. Example: source <(drd completions bash)
    Completions(completions::Args),
    /// Man pages: drd(1) on stdout, or drd(1) and drd-COMMAND(1) for every command into --out DIR.
    /// Example: drd man | man -l -
    Man(completions::ManArgs),
    /// Runbooks: list, show, run, status, approve.
    Runbook(runbook::Args),
    /// IAM policies generated from the calls drd makes (per command, runbook, the daemon, the
    /// store bucket, the function's role).
    Iam(iam::Args),
    /// Game-day drills: inject a fault, recover, measure RTO from outside, roll back, report.
    Drill(drill::Args),
    /// Break a lease whose holder stopped renewing (a run whose machine died).
    Unlock(unlock::Args),
    /// Scheduled protection: backups, verification, retention and runbooks on cron schedules,
    /// with leases across daemons, /healthz, /readyz and /metrics.
    Daemon(daemon::Args),
    /// Preview the next firings of the policy's schedules.
    Schedule(daemon::ScheduleArgs),
    /// The local lab (moto server + region gate + function host + LLM stub), served by the
    /// separate `drd-sandbox` binary; run `drd sandbox --help` for its commands.
    #[command(disable_help_flag = true)]
    Sandbox(sandbox::Args),
}

/// Run one command. Errors carry their exit code (`Error::exit_code`).
pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Validate(a) => validate::run(&cli, a).await,
        Command::Check(a) => check::run(&cli, a).await,
        Command::Deploy(a) => deploy::run(&cli, a).await,
        Command::Status(a) => status::run(&cli, a).await,
        Command::Backup(a) => backup::run(&cli, a).await,
        Command::Ci(a) => ci::run(&cli, a).await,
        Command::Mirror(a) => mirror::run(&cli, a).await,
        Command::Points(a) => points::run(&cli, a).await,
        Command::Verify(a) => verify::run(&cli, a).await,
        Command::Prune(a) => prune::run(&cli, a).await,
        Command::Pin(a) => pin::run(&cli, a).await,
        Command::Rollback(a) => rollback::run(&cli, a).await,
        Command::Rotate(a) => rotate::run(&cli, a).await,
        Command::Restore(a) => restore::run(&cli, a).await,
        Command::Failback(a) => failback::run(&cli, a).await,
        Command::FailoverCi(a) => failover_ci::run(&cli, a).await,
        Command::Runbook(a) => runbook::run(&cli, a).await,
        Command::Iam(a) => iam::run(&cli, a).await,
        Command::Drill(a) => drill::run(&cli, a).await,
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => completions::man(a),
        Command::Sandbox(a) => sandbox::run(&cli, a),
        Command::Unlock(a) => unlock::run(&cli, a).await,
        Command::Daemon(a) => daemon::run(&cli, a).await,
        Command::Schedule(a) => daemon::schedule(&cli, a).await,
    }
}

impl Cli {
    pub fn load_policy(&self) -> Result<Policy> {
        let mut p = Policy::load(&self.policy)?;
        if let Some(region) = self.copy_region() {
            p.use_copy(region)?;
        }
        Ok(p)
    }

    /// `--from-copy REGION` of the commands that take it (restore, failback, points, verify).
    fn copy_region(&self) -> Option<&str> {
        match &self.command {
            Command::Restore(a) => a.from_copy.as_deref(),
            Command::Failback(a) => a.from_copy.as_deref(),
            Command::Points(a) => a.from_copy.as_deref(),
            Command::Verify(a) => a.from_copy.as_deref(),
            _ => None,
        }
    }

    /// AWS clients for `policy`'s commands: the timeouts of its `[aws]` section unless the
    /// command line (or environment) names them.
    pub fn aws_for(&self, policy: &Policy) -> Aws {
        self.aws_for_all(std::slice::from_ref(policy))
    }

    /// AWS clients shared by several policies (the daemon): the command line's timeouts, else
    /// the shortest any of them asks for.
    pub fn aws_for_all(&self, policies: &[Policy]) -> Aws {
        let mut s = self.aws_settings();
        let shortest =
            |f: fn(&Policy) -> Option<std::time::Duration>| policies.iter().filter_map(f).min();
        s.operation_timeout = s
            .operation_timeout
            .or(shortest(|p| p.aws.operation_timeout()));
        s.attempt_timeout = s.attempt_timeout.or(shortest(|p| p.aws.attempt_timeout()));
        Aws::new(s)
    }

    /// AWS clients from the command line alone (commands that read no policy).
    pub fn aws(&self) -> Aws {
        Aws::new(self.aws_settings())
    }

    fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone().filter(|s| !s.is_empty()),
            data_endpoint: self.lambda_data_endpoint.clone().filter(|s| !s.is_empty()),
            max_attempts: self.max_attempts,
            operation_timeout: self.operation_timeout,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// `--region`, checked, or the policy's primary region.
    pub fn region(&self, policy: &Policy) -> Result<String> {
        match &self.region {
            Some(r) if crate::policy::is_region_name(r) => Ok(r.clone()),
            Some(r) => Err(ConfigError::new(
                "--region",
                format!("{r:?} is not an AWS region name"),
            )
            .hint("use a region code such as us-west-2")
            .into()),
            None => Ok(policy.primary_region().to_string()),
        }
    }

    /// The region commands act on: `--region`, else where the stack serves now (the region
    /// the last `drd restore` made active, recorded in the store), else the primary.
    pub async fn acting_region(&self, aws: &Aws, policy: &Policy) -> Result<String> {
        match &self.region {
            Some(_) => self.region(policy),
            None => crate::store::active::active_region(aws, policy).await,
        }
    }

    /// The local state directory (journals), if one can be found.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.state_dir
            .clone()
            .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("drd")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/drd")))
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

fn parse_ttl(s: &str) -> std::result::Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}"))?;
    if d < std::time::Duration::from_secs(3) {
        return Err("a lease TTL under 3s cannot be renewed in time; use 3s or more".into());
    }
    Ok(d)
}

/// Print a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("reports serialize")
    );
}
