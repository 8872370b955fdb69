//! `drd restore --region R --identity FILE [--point ID|latest]`: runbook `region-redeploy`
//! (procedure 4), with the RTO/RPO report.

use super::Cli;
use crate::error::{ConfigError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd restore --region us-west-2 --identity ~/.config/drd/identity.txt --dry-run\n  drd restore --region us-west-2 --identity ~/.config/drd/identity.txt\n  drd restore --region us-west-2 --identity ~/.config/drd/identity.txt --from-copy eu-west-1\n  drd restore --region us-west-2 --resume RUN"
)]
pub struct Args {
    /// The recovery point (`latest`: the newest that passes verify with the identity).
    #[arg(long, value_name = "ID|latest")]
    pub point: Option<String>,
    /// The age identity file that decrypts the secret backups.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Print the plan (preflight included) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue an interrupted restore.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Use the policy's copy bucket in REGION (backup.copies) as the store for this run: for
    /// the day the store's own region failed. Never chosen by itself.
    #[arg(long, value_name = "REGION")]
    pub from_copy: Option<String>,
}

/// The `--identity` input of restore and failback: its absolute path (so a resume from another
/// directory reads the same file; the path is journaled, the key never is). Required unless the
/// run is resumed (the journal has it).
pub(super) fn identity_input(
    identity: Option<&std::path::Path>,
    resuming: bool,
    command: &str,
) -> Result<Option<String>> {
    match identity {
        Some(p) => {
            let abs = std::fs::canonicalize(p).map_err(|e| {
                ConfigError::new(p.display().to_string(), format!("cannot read the identity file: {e}"))
                    .field("--identity")
                    .hint("pass the age identity file (age-keygen output) whose public key is in backup.recipients")
            })?;
            Ok(Some(abs.display().to_string()))
        }
        None if !resuming => Err(ConfigError::new(
            "--identity",
            format!("drd {command} needs the identity that decrypts the secret backups"),
        )
        .hint("pass --identity FILE (the age identity whose public key is in backup.recipients)")
        .into()),
        None => Ok(None),
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    region: &'a str,
    point: Option<&'a str>,
    /// Age of the point when the restore started.
    rpo_seconds: Option<u64>,
    /// From the run's start to the first healthy probe through the Function URL in the region.
    rto_ms: Option<u64>,
    function_url: Option<&'a str>,
    version: Option<&'a str>,
    dns_record: Option<&'a str>,
    dns_before: Option<&'a str>,
    primary: Option<&'a str>,
    new_point: Option<&'a str>,
    /// `repair` (the primary, in place) or `failover`.
    mode: Option<&'a str>,
    /// What a repair in place changed (empty: everything was intact).
    repairs: Vec<String>,
    run: &'a crate::runbook::exec::RunReport,
}

/// What the run changed, step by step, from its journaled outputs.
fn repairs(r: &crate::runbook::exec::RunReport) -> Vec<String> {
    let out = |step: &str, k: &str| r.output(step, k).filter(|v| !v.is_empty());
    let mut v = vec![];
    if let Some(s) = out("secrets", "repairs") {
        v.push(format!("secrets: {s}"));
    }
    if out("code", "uploaded") == Some("true") {
        v.push("code package copied into the artifact bucket".into());
    }
    if let Some(a) = out("stack", "action").filter(|a| *a != "unchanged") {
        v.push(format!("stack {a}"));
    }
    if out("function", "published") == Some("true") {
        v.push(format!(
            "version {} published",
            out("function", "version").unwrap_or("?")
        ));
    }
    if out("dns", "changed") == Some("true") {
        v.push("DNS moved".into());
    }
    v
}

/// The restore's (or failback's) report: RTO, RPO, where it serves, what changed.
pub(super) fn print_summary(
    cli: &Cli,
    region: &str,
    r: &crate::runbook::exec::RunReport,
    verb: &str,
) {
    let out = |step: &str, k: &str| r.output(step, k);
    let rto_ms = out("function", "healthy_at")
        .and_then(|h| humantime::parse_rfc3339_weak(h).ok())
        .zip(humantime::parse_rfc3339_weak(&r.started_at).ok())
        .and_then(|(h, s)| h.duration_since(s).ok())
        .map(|d| d.as_millis() as u64);
    let s = Summary {
        region,
        // A failback restores from the point it takes of the standby.
        point: out("standby", "point").or(out("preflight", "point")),
        rpo_seconds: out("preflight", "rpo_seconds").and_then(|v| v.parse().ok()),
        rto_ms,
        function_url: out("function", "function_url"),
        version: out("function", "version"),
        dns_record: out("dns", "record").filter(|v| !v.is_empty() && !v.starts_with("skipped")),
        dns_before: out("dns", "before").filter(|v| !v.is_empty()),
        primary: out("preflight", "primary"),
        new_point: out("backup", "point"),
        mode: out("preflight", "mode"),
        repairs: repairs(r),
        run: r,
    };
    if cli.json() {
        super::print_json(&s);
    } else {
        if let Some(st) = out("preflight", "store") {
            println!("  store {st}");
        }
        super::runbook::print_report(cli, r);
        if let (Some(p), "succeeded") = (s.point, r.outcome.as_str()) {
            println!("{verb} {region} from point {p}");
        }
        if let Some(rpo) = s.rpo_seconds {
            println!("  RPO  {rpo} s (age of the point at the start)");
        }
        if let Some(ms) = rto_ms {
            println!(
                "  RTO  {:.2} s (start to the first healthy probe in {region})",
                ms as f64 / 1000.0
            );
        }
        if let (Some(url), Some(v)) = (s.function_url, s.version) {
            println!("  live version {v} at {url}");
        }
        match (
            s.dns_record,
            out("front-door", "target").filter(|t| !t.is_empty()),
        ) {
            (Some(rec), Some(host)) => println!(
                "  DNS  {rec} -> {host} (was {})",
                s.dns_before.unwrap_or("nothing")
            ),
            (None, _) if out("dns", "skipped") == Some("true") => {
                println!("  DNS  skipped: the policy has no [dns] section")
            }
            _ => {}
        }
        if let Some(p) = s.primary {
            println!("  primary: {p}");
        }
        if let Some(p) = s.new_point {
            println!("  new recovery point {p}");
        }
        if out("preflight", "mode") == Some("repair") {
            let repairs = repairs(r);
            println!(
                "  repairs: {}",
                if repairs.is_empty() {
                    "none: everything was intact".to_string()
                } else {
                    repairs.join("; ")
                }
            );
        }
    }
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    if cli.region_from_env {
        return Err(ConfigError::new(
            "DRD_REGION",
            format!(
                "drd restore takes the region it writes to from --region on the command line only, not from DRD_REGION (set to {:?} here)",
                cli.region.as_deref().unwrap_or("")
            ),
        )
        .hint("pass --region R explicitly; a stray environment variable must never choose where a restore writes")
        .into());
    }
    let Some(region) = cli.region.clone() else {
        return Err(
            ConfigError::new("--region", "drd restore needs the region to restore into")
                .hint("pass --region R, a region other than the failed primary (e.g. us-west-2)")
                .into(),
        );
    };
    let mut inputs = BTreeMap::new();
    inputs.insert("region".to_string(), region.clone());
    if let Some(id) = identity_input(args.identity.as_deref(), args.resume.is_some(), "restore")? {
        inputs.insert("identity".to_string(), id);
    }
    if let Some(p) = &args.point {
        inputs.insert("point".to_string(), p.clone());
    }
    let Some(r) = super::runbook::run_named(
        cli,
        "region-redeploy",
        inputs,
        args.dry_run,
        args.resume.clone(),
        None,
    )
    .await?
    else {
        return Ok(());
    };
    print_summary(cli, &region, &r, "restored into");
    super::runbook::finish(&r)
}
