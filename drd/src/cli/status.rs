//! `drd status [--deep]`: exit 0 only when every probe passed.

use super::Cli;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  drd status\n  drd status --deep\n  drd --output json status")]
pub struct Args {
    /// Also probe T2 (one LLM call: proves the API key and the LLM endpoint).
    #[arg(long)]
    pub deep: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let aws = cli.aws_for(&policy);
    let region = cli.acting_region(&aws, &policy).await?;
    let r = crate::status::status(&aws, &policy, &region, args.deep).await?;
    // The source mirror's freshness, when the policy mirrors a repository (asked of the remote;
    // a remote that is down leaves commits_behind unknown, never fails status).
    let mirror = match &policy.ci {
        Some(_) => {
            let root = super::mirror::cache_root(cli, None).ok();
            match root {
                Some(root) => crate::ci::run::freshness(&aws, &policy, &root, true)
                    .await
                    .ok(),
                None => None,
            }
        }
        None => None,
    };
    // Which CI may deploy (drd failover-ci), when the policy has a CI section.
    let ci_epoch = match &policy.ci {
        Some(_) => match crate::store::open_store_read(&aws, &policy).await {
            Ok(store) => crate::store::ci_epoch::read(&store)
                .await
                .ok()
                .map(|(e, _)| e),
            Err(_) => None,
        },
        None => None,
    };
    if cli.json() {
        let mut v = serde_json::to_value(&r).expect("status serializes");
        if let Some(m) = &mirror {
            v["mirror"] = serde_json::to_value(m).expect("freshness serializes");
        }
        if let Some(e) = &ci_epoch {
            v["ci"] = serde_json::to_value(e).expect("the CI epoch serializes");
        }
        super::print_json(&v);
    } else {
        println!("region       {}", r.region);
        println!(
            "stack        {} {}",
            r.stack.name,
            r.stack.status.as_deref().unwrap_or("(absent)")
        );
        match &r.live {
            Some(l) => println!(
                "live         {}:{} code {}{}",
                r.function,
                l.version,
                l.code_sha256,
                if r.alias_drift {
                    " (differs from $LATEST)"
                } else {
                    ""
                }
            ),
            None => println!("live         (no alias)"),
        }
        if let Some(c) = r.live.as_ref().and_then(|l| l.commit.as_deref()) {
            println!("commit       {c} (deployed with drd deploy --commit)");
        }
        println!(
            "function url {}",
            r.function_url.as_deref().unwrap_or("(none)")
        );
        if let Some(f) = &r.front_door {
            print_front_door(f);
        }
        for p in &r.probes {
            println!(
                "probe {:?}     {:4} {:>5} ms  {}",
                p.tier,
                if p.ok { "ok" } else { "FAIL" },
                p.latency_ms,
                if p.ok {
                    String::new()
                } else {
                    p.detail.clone()
                }
            );
        }
        println!("healthy      {}", if r.healthy { "yes" } else { "no" });
        let rc = &r.recovery;
        match &rc.store_error {
            Some(e) => println!("recovery     store unreadable: {e}"),
            None => {
                println!(
                    "pins         {}{}",
                    if rc.pins.is_empty() {
                        "none".to_string()
                    } else {
                        rc.pins.join(", ")
                    },
                    if r.live.is_some() && !rc.live_pinned {
                        " (live is not pinned)"
                    } else {
                        ""
                    }
                );
                match &rc.newest_point {
                    Some(p) => println!(
                        "newest point {} ({} ago)",
                        p.id,
                        humantime::format_duration(std::time::Duration::from_secs(p.age_seconds))
                    ),
                    None => println!("newest point none (take one with drd backup)"),
                }
                if let Some(m) = &mirror {
                    print_mirror(m);
                }
                if let Some(e) = &ci_epoch {
                    print_ci(e);
                }
            }
        }
    }
    if r.healthy {
        Ok(())
    } else if r.stack.status.is_none() {
        Err(Error::failed_hint(
            format!("stack {} does not exist in {}", r.stack.name, r.region),
            "run drd deploy",
        ))
    } else {
        let failed: Vec<String> = r
            .probes
            .iter()
            .filter(|p| !p.ok)
            .map(|p| format!("{:?}", p.tier))
            .collect();
        Err(Error::failed(if failed.is_empty() {
            "no probe could run (no Function URL)".to_string()
        } else {
            format!("probe(s) failed: {}", failed.join(", "))
        }))
    }
}

fn print_ci(e: &crate::store::ci_epoch::CiEpoch) {
    let since = if e.since.is_empty() {
        String::new()
    } else {
        format!(" since {} by {}", e.since, e.by)
    };
    println!(
        "ci           {} deploys (epoch {}{since})",
        e.provider, e.epoch
    );
    for r in &e.reconcile {
        println!("  reconcile  {}: {}", r.id, r.what);
    }
}

fn print_mirror(m: &crate::ci::run::Freshness) {
    match (&m.manifest, m.age_seconds) {
        (Some(id), Some(age)) => println!(
            "mirror       {id} (head {}), fetched {} ago{}{}",
            m.head.as_deref().unwrap_or("?"),
            humantime::format_duration(std::time::Duration::from_secs(age)),
            match m.commits_behind {
                Some(0) => ", up to date".to_string(),
                Some(n) => format!(", {n} commit(s) behind the remote"),
                None => ", the remote could not be asked".to_string(),
            },
            if m.stale {
                format!(
                    " (STALE: older than {})",
                    humantime::format_duration(std::time::Duration::from_secs(m.max_age_seconds))
                )
            } else {
                String::new()
            }
        ),
        _ => println!("mirror       none (take one with drd mirror)"),
    }
}

fn print_front_door(f: &crate::status::FrontDoorState) {
    println!(
        "front door   {} -> users go to {}{}; here: {}",
        f.url,
        f.serving_region.as_deref().unwrap_or(if f.error.is_some() {
            "(not read)"
        } else {
            "(no record)"
        }),
        f.standby_region
            .as_deref()
            .map(|s| format!(", standby {s}"))
            .unwrap_or_default(),
        match &f.door {
            Some(d) => format!("API {} ({})", d.api_id, d.target),
            None => "no complete door in this region".into(),
        }
    );
    if let Some(e) = &f.error {
        println!("front door   not fully read: {e}");
    }
}
