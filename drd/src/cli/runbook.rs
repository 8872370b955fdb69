//! `drd runbook list|show|run|status|approve`: the recovery procedures as data.

use super::Cli;
use crate::actions::Ctx;
use crate::error::{ConfigError, Error, Result};
use crate::runbook::exec::{self, RunOptions, RunReport};
use crate::runbook::{self, journal, plan, render, Runbook};
use clap::{Subcommand, ValueEnum};
use std::collections::BTreeMap;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd runbook list\n  drd runbook show region-redeploy --format md\n  drd runbook run pipeline-failure --dry-run\n  drd runbook status RUN\n  drd runbook approve RUN STEP"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Md,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// The runbooks drd knows (built-in and from --runbooks).
    List,
    /// One runbook; `--format md` renders the on-call document.
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run a runbook (or print its plan with --dry-run, or continue a run with --resume).
    Run(RunArgs),
    /// A run's journal (or every run when no RUN is given).
    Status { run: Option<String> },
    /// Approve a manual step of a run.
    Approve { run: String, step: String },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    pub name: String,
    /// An input, NAME=VALUE (repeatable). Never pass secrets here: they would show in `ps`.
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// Print the plan (after read-only observations) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue a run that was interrupted.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    match &args.command {
        Sub::List => {
            let all = runbook::load_all(Some(&cli.runbooks))?;
            if cli.json() {
                let v: Vec<_> = all
                    .values()
                    .map(|r| {
                        serde_json::json!({"name": r.name, "title": r.title,
                            "procedure": r.procedure, "steps": r.steps.len(), "source": r.source})
                    })
                    .collect();
                super::print_json(&v);
            } else {
                for r in all.values() {
                    println!("{:<20} {}", r.name, r.title);
                }
            }
            Ok(())
        }
        Sub::Show { name, format } => {
            let rb = runbook::load(Some(&cli.runbooks), name)?;
            match (format, cli.json()) {
                (Format::Md, _) => println!("{}", render::markdown(&rb)),
                (Format::Json, _) | (_, true) => super::print_json(&rb),
                (Format::Text, false) => {
                    let policy = BTreeMap::new();
                    let inputs: BTreeMap<String, String> = rb
                        .inputs
                        .iter()
                        .map(|(k, i)| (k.clone(), i.default.clone().unwrap_or_default()))
                        .collect();
                    let p = plan::plan(
                        &rb,
                        "(region)",
                        &inputs,
                        &policy,
                        &plan::Known::default(),
                        None,
                    );
                    print!(
                        "{}",
                        render::plan_text(&p)
                            .lines()
                            .filter(|l| !l.contains("nothing was written"))
                            .map(|l| format!("{l}\n"))
                            .collect::<String>()
                    );
                }
            }
            Ok(())
        }
        Sub::Run(a) => {
            let mut inputs = BTreeMap::new();
            for kv in &a.inputs {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(
                        ConfigError::new("--input", format!("{kv:?} is not NAME=VALUE"))
                            .hint("write e.g. --input to=2")
                            .into(),
                    );
                };
                inputs.insert(k.to_string(), v.to_string());
            }
            let outcome =
                run_named(cli, &a.name, inputs, a.dry_run, a.resume.clone(), None).await?;
            if let Some(r) = outcome {
                print_report(cli, &r);
                finish(&r)?;
            }
            Ok(())
        }
        Sub::Status { run } => status(cli, run.as_deref()).await,
        Sub::Approve { run, step } => approve(cli, run, step).await,
    }
}

/// Load, plan or execute a runbook by name. `None` after a dry run (the plan was printed).
/// The region a run acts on: `--region`; for a resumed run, the region it started in (the run
/// itself may have moved the active-region record since, as a failback does); else where the
/// stack serves now.
async fn resume_region(
    cli: &Cli,
    aws: &crate::aws::Aws,
    policy: &crate::policy::Policy,
    resume: Option<&str>,
) -> Result<String> {
    if let (Some(run), None) = (resume, &cli.region) {
        if let Ok(store) = crate::store::open_store_read(aws, policy).await {
            if let Ok((_, state)) = journal::read_run(&store, run).await {
                if let Some(r) = state.region {
                    return Ok(r);
                }
            }
        }
    }
    cli.acting_region(aws, policy).await
}

pub async fn run_named(
    cli: &Cli,
    name: &str,
    inputs: BTreeMap<String, String>,
    dry_run: bool,
    resume: Option<String>,
    secret: Option<&secrecy::SecretString>,
) -> Result<Option<RunReport>> {
    let rb = runbook::load(Some(&cli.runbooks), name)?;
    let policy = cli.load_policy()?;
    let aws = cli.aws_for(&policy);
    let region = resume_region(cli, &aws, &policy, resume.as_deref()).await?;
    let shown = super::progress::Progress::start(name);
    let progress = |line: &str| shown.line(line);
    if dry_run {
        let store = crate::store::open_store_read(&aws, &policy).await;
        let (state, store) = match (store, &resume) {
            (Ok(s), Some(run)) => {
                let st = journal::fold(&journal::read(&s, run).await?);
                if st.runbook != rb.name {
                    return Err(Error::failed(format!(
                        "run {run} is a run of {:?}, not {}",
                        st.runbook, rb.name
                    )));
                }
                (Some(st), Ok(s))
            }
            (s, _) => (None, s),
        };
        let inputs = match &state {
            Some(s) => s.inputs.clone(),
            None => exec::resolve_inputs(&rb, &inputs)?,
        };
        let done = state.map(|s| s.completed).unwrap_or_default();
        let (observed, blocked) = match store {
            Ok(store) => {
                let ctx = Ctx {
                    aws: &aws,
                    policy: &policy,
                    region: region.clone(),
                    store,
                    run_id: "dry-run".into(),
                    progress: &progress,
                    secret_value: None,
                };
                exec::observe(&ctx, &rb, &inputs, &done).await
            }
            Err(e) => (BTreeMap::new(), Some(e.to_string())),
        };
        let p = plan::plan(
            &rb,
            &region,
            &inputs,
            &exec::policy_vars(&policy, &region),
            &plan::Known {
                done,
                observed,
                blocked,
            },
            resume,
        );
        drop(shown); // the spinner is gone before the plan is printed
        if cli.json() {
            super::print_json(&p);
        } else {
            print!("{}", render::plan_text(&p));
        }
        return Ok(None);
    }
    let store = crate::store::open_store(&aws, &policy).await?;
    let ctx = Ctx {
        aws: &aws,
        policy: &policy,
        region,
        store,
        run_id: String::new(),
        progress: &progress,
        secret_value: secret,
    };
    let opts = RunOptions {
        inputs,
        resume,
        state_dir: cli.state_dir(),
        lease_ttl: cli.lock_ttl,
        #[cfg(feature = "failpoints")]
        failpoint: std::env::var("DRD_FAILPOINT")
            .ok()
            .filter(|s| !s.is_empty()),
    };
    if !cli.json() {
        shown.say(&format!("runbook {}: {}", rb.name, rb.title));
    }
    let report = exec::execute(&ctx, &rb, &opts).await;
    drop(ctx);
    drop(shown); // the spinner is gone before the report is printed
    Ok(Some(report?))
}

pub fn print_report(cli: &Cli, r: &RunReport) {
    if cli.json() {
        super::print_json(r);
        return;
    }
    println!(
        "run {} ({}) in {}: {}{} in {:.2}s",
        r.run,
        r.runbook,
        r.region,
        r.outcome,
        if r.resumed { " (resumed)" } else { "" },
        r.duration_ms as f64 / 1000.0
    );
    for s in &r.steps {
        let outs: Vec<String> = s
            .outputs
            .iter()
            .filter(|(k, _)| k.as_str() != "function_url")
            .map(|(k, v)| format!("{k}={}", short(v)))
            .collect();
        println!(
            "  {:<12} {:<14} {:>6} ms  {}{}",
            s.status,
            s.id,
            s.duration_ms,
            outs.join(" "),
            if s.detail.is_empty() {
                String::new()
            } else {
                format!("  {}", s.detail)
            }
        );
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    println!("  journal: {}", r.journal_store);
    if let Some(l) = &r.journal_local {
        println!("  local journal: {l}");
    }
}

fn short(v: &str) -> String {
    if v.len() > 16
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')
    {
        format!("{}…", &v[..12])
    } else {
        v.to_string()
    }
}

/// The exit status a report stands for.
pub fn finish(r: &RunReport) -> Result<()> {
    match r.outcome.as_str() {
        "succeeded" => Ok(()),
        "succeeded_with_failures" => {
            eprintln!(
                "warning: run {} finished, but steps allowed to fail did (see the report)",
                r.run
            );
            Ok(())
        }
        "waiting" => Err(Error::failed_hint(
            format!("run {} is waiting for a manual approval", r.run),
            format!(
                "approve the step with drd runbook approve {} STEP, then resume with drd runbook run {} --resume {}",
                r.run, r.runbook, r.run
            ),
        )),
        "failed" if r.config_error => Err(ConfigError::new(
            format!("run {}", r.run),
            r.error.clone().unwrap_or_else(|| "bad input".into()),
        )
        .hint("nothing was written after the check that failed; fix the input and run again")
        .into()),
        other => Err(Error::failed_hint(
            format!(
                "run {} {other}: {}",
                r.run,
                r.error.clone().unwrap_or_else(|| "see the steps above".into())
            ),
            format!("see drd runbook status {}", r.run),
        )),
    }
}

async fn status(cli: &Cli, run: Option<&str>) -> Result<()> {
    let policy = cli.load_policy()?;
    let aws = cli.aws_for(&policy);
    let store = crate::store::open_store_read(&aws, &policy).await?;
    let Some(run) = run else {
        let mut rows = vec![];
        for id in journal::run_ids(&store).await? {
            let s = journal::fold(&journal::read(&store, &id).await?);
            rows.push(serde_json::json!({"run": id, "runbook": s.runbook,
                "outcome": s.outcome.clone().unwrap_or_else(|| "unfinished".into()),
                "started_at": s.started_at}));
        }
        if cli.json() {
            super::print_json(&rows);
        } else if rows.is_empty() {
            println!("no runbook runs yet");
        } else {
            for r in rows {
                println!(
                    "{}  {:<18} {}",
                    r["run"].as_str().unwrap_or(""),
                    r["runbook"].as_str().unwrap_or(""),
                    r["outcome"].as_str().unwrap_or("")
                );
            }
        }
        return Ok(());
    };
    let (entries, s) = journal::read_run(&store, run).await?;
    let rb = runbook::load(Some(&cli.runbooks), &s.runbook)?;
    let region = s
        .region
        .clone()
        .unwrap_or_else(|| policy.primary_region().to_string());
    let noop = |_: &str| {};
    let ctx = Ctx {
        aws: &aws,
        policy: &policy,
        region,
        store: store.clone(),
        run_id: run.to_string(),
        progress: &noop,
        secret_value: None,
    };
    let outcome = s.outcome.clone().unwrap_or_else(|| "unfinished".into());
    let r = exec::report_from_state(&ctx, &rb, &s, &outcome, false, None);
    if cli.json() {
        super::print_json(&serde_json::json!({"run": r, "entries": entries}));
    } else {
        print_report(cli, &r);
        println!("  transitions:");
        for e in &entries {
            println!(
                "    {:>3} {} {:<13} {}{}",
                e.seq,
                e.at,
                e.event.as_str(),
                e.step.clone().unwrap_or_default(),
                if e.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.detail)
                }
            );
        }
    }
    Ok(())
}

async fn approve(cli: &Cli, run: &str, step: &str) -> Result<()> {
    let policy = cli.load_policy()?;
    let aws = cli.aws_for(&policy);
    let store = crate::store::open_store_read(&aws, &policy).await?;
    let (_, s) = journal::read_run(&store, run).await?;
    if let Some(o) = &s.outcome {
        return Err(Error::failed(format!(
            "run {run} has finished ({o}); there is nothing to approve"
        )));
    }
    let rb: Runbook = runbook::load(Some(&cli.runbooks), &s.runbook)?;
    match rb.step(step) {
        Some(st) if st.action == "manual.approve" => {}
        Some(_) => {
            return Err(Error::failed(format!(
                "step {step} of {} is not a manual approval step",
                rb.name
            )))
        }
        None => {
            return Err(Error::failed(format!(
                "runbook {} has no step {step}",
                rb.name
            )))
        }
    }
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into()),
        crate::store::lease::hostname()
    );
    let body = serde_json::json!({"run": run, "step": step, "by": by,
        "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()});
    let written = store
        .put_new(&store.approval_key(run, step), body.to_string().as_bytes())
        .await?;
    let already = written == crate::store::Written::Existed;
    if cli.json() {
        // The approval record as stored (an earlier approval's is kept and not re-read).
        super::print_json(&serde_json::json!({
            "run": run, "step": step, "already_approved": already,
            "by": if already { None } else { Some(&by) },
        }));
    } else if already {
        println!("step {step} of run {run} was already approved");
    } else {
        println!("approved step {step} of run {run} as {by}");
    }
    Ok(())
}
