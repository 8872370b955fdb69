//! `drd drill list|validate|run`: game-day drills (`runbooks/drills/*.toml`).

use super::Cli;
use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd drill list\n  drd drill validate\n  drd drill run corrupt-live --report ./drill-reports\n  drd drill run corrupt-live --stack classifier-staging (on AWS)\n  drd drill run restore-rehearsal --input region=us-west-2 --identity recovery.txt\n  drd --output json drill run corrupt-live\n  drd drill report --last 5 --html drills.html"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: DrillCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DrillCommand {
    /// The drills: shipped ones and `<runbooks>/drills/*.toml`.
    List,
    /// Check every drill file (or one): exit 2 with file, line, field and a fix on a mistake.
    Validate {
        /// One drill; all when omitted.
        name: Option<String>,
    },
    /// Run a drill: gate, fault, recovery, measured RTO, rollback, report. Exit 0 when the
    /// objective was met and the rollback succeeded, 1 otherwise, 3 when a drill already runs.
    /// Ctrl-C stops the drill and rolls back; a second Ctrl-C skips the rollback.
    Run {
        name: String,
        /// Where the report goes (JSON, Markdown, HTML, JUnit XML and the event journal).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// The stack to drill, named explicitly (required on AWS; it must be the policy's).
        #[arg(long, value_name = "NAME")]
        stack: Option<String>,
        /// Drill a stack the policy marks as production (`stack.production`, the default).
        /// A rehearsal changes nothing users see and does not need it.
        #[arg(long)]
        i_mean_production: bool,
        /// An input of the recovery (over the drill's `recovery.inputs`), e.g. `region=us-west-2`
        /// for the scratch region of `restore-rehearsal`. Repeatable.
        #[arg(long = "input", value_name = "K=V")]
        inputs: Vec<String>,
        /// The age identity that decrypts the secret backups (input `identity`; restores need
        /// it). The path is passed on, never the key.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Compare the stored runs of every drill: median and worst RTO, outcomes.
    Report {
        /// The last N runs of each drill.
        #[arg(long, default_value_t = 10)]
        last: usize,
        /// Also write the comparison as one self-contained HTML page.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

fn drills_dir(cli: &Cli) -> PathBuf {
    cli.runbooks.join("drills")
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    match &args.command {
        DrillCommand::List => {
            let all = crate::drill::load_all(Some(&drills_dir(cli)))?;
            if cli.json() {
                let rows: Vec<_> = all
                    .values()
                    .map(|d| serde_json::json!({"name": d.name(), "title": d.title, "fault": d.fault.kind.get_ref(), "source": d.source}))
                    .collect();
                super::print_json(&rows);
            } else {
                for d in all.values() {
                    println!(
                        "{:<16} {:<14} {}",
                        d.name(),
                        d.fault.kind.get_ref(),
                        d.title
                    );
                }
            }
            Ok(())
        }
        DrillCommand::Validate { name } => {
            let all = crate::drill::load_all(Some(&drills_dir(cli)))?;
            if let Some(n) = name {
                crate::drill::load(Some(&drills_dir(cli)), n)?;
            }
            if cli.json() {
                super::print_json(
                    &serde_json::json!({"ok": true, "drills": all.keys().collect::<Vec<_>>()}),
                );
            } else {
                println!(
                    "{} drill(s) valid: {}",
                    all.len(),
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            Ok(())
        }
        DrillCommand::Run {
            name,
            report,
            stack,
            i_mean_production,
            inputs,
            identity,
        } => {
            let policy = cli.load_policy()?;
            let mut given = std::collections::BTreeMap::new();
            for kv in inputs {
                let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                    return Err(crate::error::ConfigError::new(
                        "--input",
                        format!("{kv:?} is not K=V"),
                    )
                    .hint("write --input region=us-west-2")
                    .into());
                };
                given.insert(k.to_string(), v.to_string());
            }
            if let Some(f) = identity {
                given.insert("identity".into(), f.display().to_string());
            }
            // Before any AWS call: on AWS a drill needs an explicit target, and production
            // needs an explicit yes.
            // The lab overrides both the control plane and the Lambda data plane (its function
            // host); anything else is treated as AWS.
            let aws = cli.aws_for(&policy);
            let s = aws.settings();
            let on_aws = s.endpoint_url.is_none() || s.data_endpoint.is_none();
            let drill = crate::drill::load(Some(&drills_dir(cli)), name)?;
            crate::drill::target_guard(
                &policy,
                on_aws,
                stack.as_deref(),
                *i_mean_production || drill.recovery.rehearsal.is_some(),
            )?;
            let lab_only = crate::drill::FAULTS
                .iter()
                .any(|(k, w)| k == drill.fault.kind.get_ref() && *w == "lab only");
            if on_aws && lab_only {
                return Err(crate::error::ConfigError::new(
                    drill.source.clone(),
                    format!("fault {} runs only in the lab", drill.fault.kind.get_ref()),
                )
                .field("fault.kind")
                .hint(match drill.fault.kind.get_ref().as_str() {
                    "region-loss" => "an AWS region cannot be failed safely: rehearse the restore with drd drill run restore-rehearsal --input region=R",
                    "github-outage" => "GitHub is GitHub's: rehearse procedure 5 with drd failover-ci --to codepipeline --dry-run",
                    "latency" | "errors" => "the lab's function host injects it and AWS has no switch for it: drill the same outage with fault.kind = \"throttle\"",
                    _ => "on AWS the API key is the LLM provider's: rehearse a rotation with drd rotate instead",
                })
                .into());
            }
            // The lab's LLM (for lab-only faults), as the lab exports it.
            let lab_llm = if on_aws {
                None
            } else {
                std::env::var("DRD_LLM_BASE_URL")
                    .ok()
                    .filter(|v| !v.is_empty())
            };
            run_drill(cli, name, report.clone(), lab_llm, given).await
        }
        DrillCommand::Report { last, html } => {
            let policy = cli.load_policy()?;
            let aws = cli.aws_for(&policy);
            let store = crate::store::open_store_read(&aws, &policy).await?;
            let hs = crate::drill::report::history(&store, *last).await?;
            if let Some(f) = html {
                std::fs::write(f, crate::drill::report::history_html(&hs))
                    .map_err(|e| Error::io(format!("writing {}", f.display()), e))?;
            }
            if cli.json() {
                super::print_json(&hs);
            } else if hs.is_empty() {
                println!("no drill has run yet");
            } else {
                let s = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}s"));
                println!(
                    "{:<16} {:>4} {:>10} {:>10} {:>10}  outcomes",
                    "drill", "runs", "median RTO", "worst RTO", "objective"
                );
                for h in &hs {
                    println!(
                        "{:<16} {:>4} {:>10} {:>10} {:>10}  {}",
                        h.drill,
                        h.runs,
                        s(h.median_rto_seconds),
                        s(h.worst_rto_seconds),
                        s(h.rto_objective_seconds),
                        h.outcomes
                            .iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Ok(())
        }
    }
}

async fn run_drill(
    cli: &Cli,
    name: &str,
    report_dir: Option<PathBuf>,
    lab_llm: Option<String>,
    inputs: std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let drill = crate::drill::load(Some(&drills_dir(cli)), name)?;
    let policy = cli.load_policy()?;
    let aws = cli.aws_for(&policy);
    let region = cli.acting_region(&aws, &policy).await?;
    // SIGINT/SIGTERM counted: the first stops the drill (rollback follows), the second skips
    // the rollback.
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    let shown = super::progress::Progress::start_echoing(&format!("drill {name}"), !cli.json());
    let progress = |l: &str| shown.line(l);
    let opts = crate::drill::run::Options {
        run: crate::runbook::journal::new_run_id(),
        report_dir: report_dir.clone(),
        runbooks: Some(cli.runbooks.clone()),
        state_dir: cli.state_dir(),
        progress: &progress,
        lab_llm,
        interrupts: rx,
        inputs,
    };
    let r = crate::drill::run::run(&aws, &policy, &drill, &region, opts).await;
    signals.abort();
    drop(shown);
    let r = r?;
    if cli.json() {
        super::print_json(&r);
    } else {
        println!("drill {} run {}: {}", r.drill, r.run, r.outcome);
        match r.measured.rto_seconds {
            Some(rto) => println!(
                "  RTO {rto:.1} s (objective {:.1} s)",
                r.rto_objective_seconds
            ),
            None => println!("  RTO not measured"),
        }
        println!("  RPO {}", r.measured.rpo_note);
        if let Some(rb) = &r.rollback {
            println!(
                "  rollback {}",
                if rb.skipped {
                    "SKIPPED (second interrupt): the fault is still in place".to_string()
                } else if rb.ok {
                    format!("ok ({})", rb.done.join("; "))
                } else {
                    format!("FAILED: {}", rb.error.as_deref().unwrap_or(""))
                }
            );
        }
        if let Some(d) = &report_dir {
            println!(
                "  report {}",
                d.join(format!("{}-{}.html", r.drill, r.run)).display()
            );
        }
    }
    if r.exit_ok() {
        Ok(())
    } else {
        let rollback = match &r.rollback {
            Some(rb) if !rb.ok => format!(
                "; rollback {}",
                if rb.skipped { "skipped" } else { "FAILED" }
            ),
            _ => String::new(),
        };
        Err(Error::failed(format!(
            "drill {} {}: {}{rollback}",
            r.drill,
            r.outcome,
            r.reason.as_deref().unwrap_or("see the report")
        )))
    }
}
