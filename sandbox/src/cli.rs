//! `drd-sandbox up|down|status|env|llm|fail-region|restore-region|faults|github` (run by users
//! as `drd sandbox ...`, which hands its arguments to this binary).

use crate::{self as sandbox, Up, UpOptions};
use drd::error::{ConfigError, Error, Result};
use std::path::PathBuf;

/// Output format, as `drd --output` (which `drd sandbox` passes on as `DRD_OUTPUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "drd sandbox",
    bin_name = "drd sandbox",
    version,
    about = "The local lab: moto server (AWS control plane) behind a region gate, the function \
             host (Lambda data plane), a chat-completions stub and a lab GitHub (git remote and \
             Actions workflows), on loopback ports",
    after_help = "Examples:\n  eval \"$(drd sandbox up)\"\n  drd sandbox fail-region us-east-1\n  drd sandbox github down\n  drd sandbox down"
)]
pub struct Args {
    /// Output format.
    #[arg(long, global = true, value_enum, env = "DRD_OUTPUT", default_value_t = Output::Text)]
    pub output: Output,
    /// Where the sandbox keeps its state, logs and unpacked packages.
    #[arg(
        long,
        global = true,
        env = "DRD_SANDBOX_DIR",
        default_value = ".drd/sandbox"
    )]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Start moto server, the function host, the LLM stub and the lab GitHub; print the
    /// environment.
    Up {
        /// The moto server command.
        #[arg(long, env = "DRD_MOTO_SERVER", default_value = "moto_server")]
        moto_server: String,
        /// The default region printed in the environment.
        #[arg(long, default_value = sandbox::DEFAULT_REGION)]
        sandbox_region: String,
        /// The directory whose files seed the lab repository speaker-role/classifier (one
        /// commit on main; `target/` and `.git` left out). Default: ./classifier when it exists.
        #[arg(long, value_name = "DIR")]
        seed_repo: Option<PathBuf>,
        /// Authorize every request with IAM: moto checks each caller's policies; the workload
        /// account's and the store account's (111111111111) administrators are in the printed
        /// environment (docs/emulator-gaps.md says what moto checks).
        #[arg(long)]
        iam: bool,
    },
    /// Stop everything `up` started.
    Down,
    /// What runs where.
    Status,
    /// Print the environment again (`eval "$(drd sandbox env)"`).
    Env,
    /// Tell the LLM stub which keys are valid. The key is read from stdin (or --key-file).
    Llm {
        #[command(subcommand)]
        action: LlmAction,
    },
    /// A sandbox started with `up --iam`: make principals holding exactly one policy (for
    /// least-privilege runs: `drd iam policy --lab` writes the policy).
    Iam {
        #[command(subcommand)]
        action: IamAction,
    },
    /// Take a region down: its AWS endpoints drop every connection and the function host stops
    /// serving its Function URLs (a region-loss drill; global services such as Route 53 stay up).
    ///
    /// `global` (or us-east-1 with `--control-planes`) fails the control planes AWS runs in
    /// us-east-1 for its global services (Route 53, CloudFront, IAM): their API calls drop while
    /// DNS answers and health checks keep working.
    FailRegion {
        /// The region to fail, e.g. us-east-1, or `global`.
        region: String,
        /// With us-east-1: the global control planes too.
        #[arg(long)]
        control_planes: bool,
    },
    /// Bring a failed region back.
    RestoreRegion {
        region: String,
        /// With us-east-1: the global control planes too.
        #[arg(long)]
        control_planes: bool,
    },
    /// Take the lab GitHub down (REST answers 503, the git remote refuses) or bring it back.
    Github {
        #[command(subcommand)]
        action: GithubAction,
    },
    /// The lab's pipeline executor: make the next runs of one action fail (a flaky build).
    ///
    /// Example: drd sandbox ci flaky --pipeline my-standby --action Test --times 1
    Ci {
        #[command(subcommand)]
        action: CiAction,
    },
    /// Inject faults into a seeded share of the AWS requests: errors in the service's wire
    /// format, throttling, dropped connections, latency. `--rate 0` stops; no flags shows the
    /// plan in force and what it injected.
    #[command(
        after_help = "Examples:\n  drd sandbox faults --rate 0.2 --kinds 500,503-slowdown,throttle,reset,latency=2s --seed 7\n  drd sandbox faults --rate 1 --kinds access-denied --service s3\n  drd sandbox faults --rate 1 --kinds reset --service s3 --operation PutObject\n  drd sandbox faults --rate 0"
    )]
    Faults {
        /// Share of the matching requests that fail, 0 to 1 (0 stops injecting).
        #[arg(long)]
        rate: Option<f64>,
        /// Comma-separated: 500, 503-slowdown, throttle, reset, latency=DURATION.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "500,503-slowdown,throttle,reset"
        )]
        kinds: Vec<String>,
        /// The seed: the same seed and requests give the same faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only requests to this service (SigV4 name, e.g. s3, secretsmanager, lambda).
        #[arg(long)]
        service: Option<String>,
        /// Only this operation (e.g. PutObject, GetSecretValue).
        #[arg(long)]
        operation: Option<String>,
        /// Only requests whose path contains this (e.g. one object's key).
        #[arg(long, value_name = "TEXT")]
        path_contains: Option<String>,
    },
    /// Internal: run the function host, the LLM stub and the region gate (started by `up`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        moto_url: String,
        #[arg(long)]
        host_port: u16,
        #[arg(long)]
        llm_port: u16,
        #[arg(long)]
        proxy_port: u16,
        #[arg(long)]
        github_port: u16,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CiAction {
    /// The next TIMES runs of ACTION in PIPELINE fail before their commands run (0 disarms).
    Flaky {
        #[arg(long)]
        pipeline: String,
        #[arg(long)]
        action: String,
        #[arg(long, default_value_t = 1)]
        times: u32,
    },
}

#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum GithubAction {
    /// Every REST call answers 503 and `git ls-remote` of the lab remote fails.
    Down,
    /// Serve REST and git again.
    Up,
}

#[derive(Debug, clap::Subcommand)]
pub enum LlmAction {
    Allow {
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    Revoke {
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

impl Args {
    fn json(&self) -> bool {
        self.output == Output::Json
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("reports serialize")
    );
}

fn print_env(args: &Args, state: &sandbox::State) {
    if args.json() {
        let map: serde_json::Map<String, serde_json::Value> = state
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
            .collect();
        print_json(&map);
    } else {
        for (k, v) in state.env() {
            println!("export {k}={}", shell_quote(&v));
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum IamAction {
    /// A user holding only the policy in FILE; prints its access key as JSON
    /// (`{"AccessKeyId": .., "SecretAccessKey": ..}`). Again with the same name: the policy is
    /// replaced and a new key made.
    User {
        name: String,
        #[arg(long, value_name = "FILE")]
        policy_file: PathBuf,
        /// The account (the workload's by default; the store's is 111111111111).
        #[arg(long, default_value = sandbox::iam::WORKLOAD_ACCOUNT)]
        account: String,
    },
    /// A role in --account that principals of --trust may assume, holding only the policy in
    /// FILE; prints its ARN.
    Role {
        name: String,
        #[arg(long, value_name = "FILE")]
        policy_file: PathBuf,
        #[arg(long, default_value = sandbox::iam::STORE_ACCOUNT)]
        account: String,
        /// The account whose principals may assume it.
        #[arg(long, default_value = sandbox::iam::WORKLOAD_ACCOUNT)]
        trust: String,
    },
}

async fn iam(args: &Args, action: &IamAction) -> Result<()> {
    let s = sandbox::running_state(&args.dir)?;
    let (account, file) = match action {
        IamAction::User {
            account,
            policy_file,
            ..
        }
        | IamAction::Role {
            account,
            policy_file,
            ..
        } => (account, policy_file),
    };
    let admin = s.accounts.get(account).ok_or_else(|| {
        Error::failed_hint(
            format!("the sandbox has no IAM administrator for account {account}"),
            "start it with `drd sandbox up --iam` (accounts 123456789012 and 111111111111)",
        )
    })?;
    let policy = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
    serde_json::from_str::<serde_json::Value>(&policy).map_err(|e| {
        ConfigError::new(
            file.display().to_string(),
            format!("not a policy document: {e}"),
        )
        .hint("write it with `drd iam policy ... > FILE`")
    })?;
    let moto = s.moto.url();
    match action {
        IamAction::User { name, .. } => {
            let k = sandbox::iam::user(&moto, Some(admin), account, name, &policy).await?;
            println!(
                "{}",
                serde_json::json!({"AccessKeyId": k.access_key_id, "SecretAccessKey": k.secret_access_key})
            );
        }
        IamAction::Role { name, trust, .. } => {
            println!(
                "{}",
                sandbox::iam::role(&moto, admin, account, name, trust, &policy).await?
            );
        }
    }
    Ok(())
}

/// A value as one shell word (`eval "$(drd sandbox up)"`): as is when it is safe, else in
/// single quotes.
fn shell_quote(v: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !v.is_empty() && v.chars().all(safe) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

pub async fn run(args: &Args) -> Result<()> {
    match &args.command {
        SandboxCommand::Up {
            moto_server,
            sandbox_region,
            seed_repo,
            iam,
        } => {
            let seed = seed_dir(seed_repo.as_ref())?;
            let up = sandbox::up(&UpOptions {
                dir: args.dir.clone(),
                moto_cmd: moto_server.clone(),
                region: sandbox_region.clone(),
                seed: seed.clone(),
                iam: *iam,
            })
            .await?;
            let state = match up {
                Up::Started(s) => {
                    eprintln!("sandbox started in {}", args.dir.display());
                    say_seed(&s, seed.as_deref());
                    s
                }
                Up::AlreadyRunning(s) => {
                    eprintln!("sandbox already running in {}", args.dir.display());
                    if seed_repo.is_some() {
                        eprintln!("the lab repository was not reseeded (it is seeded when the sandbox starts)");
                    }
                    s
                }
                Up::Restarted { state, stale } => {
                    eprintln!(
                        "found stale sandbox state (pids {} and {} are gone); started a new sandbox in {}",
                        stale.moto.pid,
                        stale.host.pid,
                        args.dir.display()
                    );
                    say_seed(&state, seed.as_deref());
                    state
                }
            };
            print_env(args, &state);
            Ok(())
        }
        SandboxCommand::Down => {
            if sandbox::down(&args.dir).await? {
                eprintln!("sandbox stopped");
            } else {
                eprintln!("no sandbox was running in {}", args.dir.display());
            }
            Ok(())
        }
        SandboxCommand::Status => status(args).await,
        SandboxCommand::Env => {
            let s = sandbox::running_state(&args.dir)?;
            print_env(args, &s);
            Ok(())
        }
        SandboxCommand::Iam { action } => iam(args, action).await,
        SandboxCommand::Llm { action } => {
            let s = sandbox::running_state(&args.dir)?;
            let (allow, file) = match action {
                LlmAction::Allow { key_file } => (true, key_file),
                LlmAction::Revoke { key_file } => (false, key_file),
            };
            let key = read_key(file.as_ref())?;
            let n = sandbox::llm_key(&s, &key, allow).await?;
            eprintln!(
                "llm stub: key {}; {n} key(s) valid",
                if allow { "allowed" } else { "revoked" }
            );
            Ok(())
        }
        SandboxCommand::Faults {
            rate,
            kinds,
            seed,
            service,
            operation,
            path_contains,
        } => {
            let plan = fault_plan(*rate, kinds, *seed, service, operation, path_contains)?;
            set_faults(args, plan).await
        }
        SandboxCommand::FailRegion {
            region,
            control_planes,
        } => set_region(args, region, *control_planes, true).await,
        SandboxCommand::RestoreRegion {
            region,
            control_planes,
        } => set_region(args, region, *control_planes, false).await,
        SandboxCommand::Github { action } => set_github(args, *action).await,
        SandboxCommand::Ci {
            action:
                CiAction::Flaky {
                    pipeline,
                    action,
                    times,
                },
        } => {
            let s = sandbox::running_state(&args.dir)?;
            let armed = sandbox::ci_flaky(&s, pipeline, action, *times).await?;
            if args.json() {
                print_json(&armed);
            } else {
                println!("pipeline executor: {armed}");
            }
            Ok(())
        }
        SandboxCommand::Serve {
            moto_url,
            host_port,
            llm_port,
            proxy_port,
            github_port,
        } => {
            sandbox::serve(
                args.dir.clone(),
                moto_url.clone(),
                *host_port,
                *llm_port,
                *proxy_port,
                *github_port,
            )
            .await
        }
    }
}

/// The seed directory: `--seed-repo` (which must exist), else `./classifier` when it exists.
fn seed_dir(flag: Option<&PathBuf>) -> Result<Option<PathBuf>> {
    match flag {
        Some(d) if d.is_dir() => Ok(Some(d.clone())),
        Some(d) => Err(ConfigError::new(
            "--seed-repo",
            format!("{} is not a directory", d.display()),
        )
        .hint("name the workload's source directory, e.g. --seed-repo classifier")
        .into()),
        None => Ok(Some(PathBuf::from("classifier")).filter(|d| d.is_dir())),
    }
}

/// What the lab repository was seeded with (never the token).
fn say_seed(state: &sandbox::State, seed: Option<&std::path::Path>) {
    let repo = crate::git::REPOSITORY;
    match (seed, &state.github_seed) {
        (Some(dir), Some(sha)) => {
            eprintln!(
                "lab GitHub: {repo} seeded from {} (main at {sha})",
                dir.display()
            )
        }
        _ => eprintln!(
            "lab GitHub: no --seed-repo and no ./classifier here: {repo} starts empty (push to it)"
        ),
    }
}

/// The plan `faults` flags describe (`None` without `--rate`: only show the one in force).
fn fault_plan(
    rate: Option<f64>,
    kinds: &[String],
    seed: u64,
    service: &Option<String>,
    operation: &Option<String>,
    path_contains: &Option<String>,
) -> Result<Option<crate::faults::Plan>> {
    Ok(match rate {
        None => None,
        Some(r) if !(0.0..=1.0).contains(&r) => {
            return Err(
                ConfigError::new("--rate", format!("{r} is not between 0 and 1"))
                    .hint("e.g. --rate 0.2 (one request in five), --rate 0 to stop")
                    .into(),
            )
        }
        Some(r) => Some(crate::faults::Plan {
            rate: r,
            kinds: kinds
                .iter()
                .map(|k| crate::faults::Kind::parse(k))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| ConfigError::new("--kinds", e))?,
            seed,
            service: service.clone(),
            operation: operation.clone(),
            path_contains: path_contains.clone(),
        }),
    })
}

/// `faults`: set the plan (or read it) and show what was injected.
async fn set_faults(args: &Args, plan: Option<crate::faults::Plan>) -> Result<()> {
    let s = sandbox::running_state(&args.dir)?;
    let f = sandbox::faults(&s, plan.as_ref()).await?;
    if args.json() {
        print_json(&f);
    } else {
        match &f.plan {
            None => println!("faults: off"),
            Some(p) => println!(
                "faults: rate {} of {}{} requests, kinds {}, seed {}",
                p.rate,
                p.service.as_deref().unwrap_or("all"),
                p.operation
                    .as_deref()
                    .map(|o| format!(" {o}"))
                    .unwrap_or_default(),
                p.kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(","),
                p.seed
            ),
        }
        println!(
            "matched {} request(s), injected {} fault(s){}",
            f.matched,
            f.total_injected(),
            if f.injected.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    f.injected
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    Ok(())
}

/// `status`: what runs where, and the region gate's counters.
async fn status(args: &Args) -> Result<()> {
    let state = sandbox::read_state(&args.dir);
    let Some(s) = state else {
        println!("no sandbox in {}", args.dir.display());
        return Err(Error::failed_hint(
            "the sandbox is not running",
            "run drd sandbox up",
        ));
    };
    let github_url = s
        .github_port
        .map(|p| format!("http://127.0.0.1:{p}"))
        .unwrap_or_else(|| "(not started: restart the sandbox)".into());
    let rows = [
        ("moto server", &s.moto, s.moto.url()),
        ("region gate", &s.host, s.endpoint_url()),
        ("function host", &s.host, s.host.url()),
        ("llm stub", &s.host, s.llm_base_url()),
        ("lab github", &s.host, github_url.clone()),
    ];
    let (failed, busy_ms, requests) = if s.running() {
        sandbox::gate_stats(&s).await.unwrap_or_default()
    } else {
        Default::default()
    };
    let github_up = match (s.running(), s.github_port) {
        (true, Some(_)) => crate::github::is_up(&s).await,
        _ => None,
    };
    if args.json() {
        print_json(&serde_json::json!({
            "dir": args.dir,
            "running": s.running(),
            "moto": {"pid": s.moto.pid, "url": s.moto.url(), "alive": s.moto.alive()},
            "host": {"pid": s.host.pid, "url": s.host.url(), "alive": s.host.alive()},
            "llm": {"url": s.llm_base_url()},
            "endpoint_url": s.endpoint_url(),
            "github": {
                "api": s.github_port.map(|_| github_url.clone()),
                "repository": crate::git::REPOSITORY,
                "seed": s.github_seed,
                "up": github_up,
            },
            "failed_regions": failed,
            // Wall time with at least one emulator request in flight (benchmarks).
            "emulator_busy_ms": busy_ms,
            "emulator_requests": requests,
            "started_at": s.started_at,
        }));
    } else {
        for (name, p, url) in rows {
            println!(
                "{name:14} pid {:>7} {:8} {url}",
                p.pid,
                if p.alive() { "running" } else { "stopped" }
            );
        }
        if !failed.is_empty() {
            println!("failed regions: {}", failed.join(", "));
        }
        match github_up {
            Some(true) => println!("github: up"),
            Some(false) => println!("github: down (drd sandbox github up)"),
            None => {}
        }
    }
    if s.running() {
        Ok(())
    } else {
        Err(Error::failed_hint(
            "the sandbox state is stale",
            "run drd sandbox up",
        ))
    }
}

/// `fail-region` / `restore-region` (`global`: the global services' control planes).
async fn set_region(args: &Args, region: &str, control_planes: bool, fail: bool) -> Result<()> {
    let global = region == crate::gate::GLOBAL;
    if !global && !drd::policy::is_region_name(region) {
        return Err(
            ConfigError::new("REGION", format!("{region:?} is not a region name"))
                .hint(
                    "use a region code such as us-east-1, or global for the global control planes",
                )
                .into(),
        );
    }
    if control_planes && region != "us-east-1" {
        return Err(ConfigError::new(
            "--control-planes",
            format!("the global control planes live in us-east-1, not {region}"),
        )
        .hint("use fail-region us-east-1 --control-planes, or fail-region global")
        .into());
    }
    let s = sandbox::running_state(&args.dir)?;
    if s.proxy_port.is_none() {
        return Err(Error::failed_hint(
            "this sandbox was started without the region gate",
            "restart it: drd sandbox down && drd sandbox up",
        ));
    }
    let (mut failed, mut changed) = sandbox::set_region(&s, region, fail).await?;
    if control_planes {
        let (f, c) = sandbox::set_region(&s, crate::gate::GLOBAL, fail).await?;
        (failed, changed) = (f, changed || c);
    }
    if args.json() {
        print_json(&serde_json::json!({
            "region": region, "failed": fail, "changed": changed, "failed_regions": failed,
        }));
    } else {
        let what = match (fail, changed) {
            (true, true) => "failed: its endpoints now drop connections",
            (true, false) => "was already failed",
            (false, true) => "restored",
            (false, false) => "was not failed",
        };
        println!("region {region} {what}");
        println!(
            "failed regions: {}",
            if failed.is_empty() {
                "none".to_string()
            } else {
                failed.join(", ")
            }
        );
    }
    Ok(())
}

/// `github down|up`.
async fn set_github(args: &Args, action: GithubAction) -> Result<()> {
    let s = sandbox::running_state(&args.dir)?;
    if s.github_port.is_none() {
        return Err(Error::failed_hint(
            "this sandbox was started without the lab GitHub",
            "restart it: drd sandbox down && drd sandbox up",
        ));
    }
    let (up, changed) = crate::github::switch(&s, matches!(action, GithubAction::Up)).await?;
    if args.json() {
        print_json(&serde_json::json!({"up": up, "changed": changed}));
    } else {
        let what = match (up, changed) {
            (false, true) => "is down: REST answers 503 and the git remote refuses",
            (false, false) => "was already down",
            (true, true) => "is up again",
            (true, false) => "was already up",
        };
        println!("github {what}");
    }
    Ok(())
}

fn read_key(file: Option<&PathBuf>) -> Result<secrecy::SecretString> {
    use std::io::Read;
    let raw = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            ConfigError::new(
                p.display().to_string(),
                format!("cannot read the key file: {e}"),
            )
        })?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("reading the key from stdin", e))?;
            s
        }
    };
    let source = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<stdin>".into());
    drd::deploy::parse_api_key(&raw, &source, "sandbox llm key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_values_survive_eval() {
        assert_eq!(
            shell_quote("http://127.0.0.1:80/v1"),
            "http://127.0.0.1:80/v1"
        );
        assert_eq!(
            shell_quote("/tmp/a b/github-token"),
            "'/tmp/a b/github-token'"
        );
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf x)"), "'$(rm -rf x)'");
    }
}
