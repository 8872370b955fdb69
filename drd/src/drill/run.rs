//! Running a drill: gate, independent prober, injection, recovery, measurement, rollback.
//!
//! The prober is its own task with its own HTTP client: it samples the service at a fixed
//! interval whatever the recovery is doing, so a recovery that reports success while users still
//! fail is measured as failing. The fault's undo always runs: after the objective is met, after
//! a failure, after a stop condition and after an interrupt (a second interrupt skips it and the
//! report says so).

use super::fault::{self, Injected};
use super::journal::{finish, now_rfc3339, Recorder};
use super::probe::{healed_at, start_prober, steady};
use super::recovery::{
    check_inputs, ci_fail_back, fail_back, mirror_rpo, recover, rehearse, rpo_of_point,
};
use super::report::{DrillReport, Measured, Recovery, RecoveryStep, Rollback};
use super::Drill;
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::lambda::probe::UrlProber;
use crate::policy::Policy;
use crate::store::lease::Lease;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The drill lease's TTL (renewed while the drill runs): one drill per stack at a time.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

pub struct Options<'a> {
    pub run: String,
    /// Where the report files go (and the event journal, written as events happen).
    pub report_dir: Option<PathBuf>,
    /// The runbook directory (`--runbooks`).
    pub runbooks: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub progress: &'a (dyn Fn(&str) + Sync),
    /// The lab LLM's base URL (`DRD_LLM_BASE_URL`), for lab-only faults; `None` outside the lab.
    pub lab_llm: Option<String>,
    /// Counts SIGINT/SIGTERM: 1 stops the drill (then the rollback runs), 2 skips the rollback.
    pub interrupts: watch::Receiver<u32>,
    /// Inputs given with the run (`--input K=V`, `--identity`): over the drill's own
    /// `recovery.inputs`.
    pub inputs: std::collections::BTreeMap<String, String>,
}

/// How the main phase ended.
enum Ended {
    Healed { at: u64, seen: bool },
    NotHealed(String),
    Interrupted,
    Failed(String),
}

/// Run `drill` against the stack in `region`.
#[allow(clippy::too_many_lines)]
pub async fn run(
    aws: &Aws,
    policy: &Policy,
    drill: &Drill,
    region: &str,
    opts: Options<'_>,
) -> Result<DrillReport> {
    let plan = drill.plan();
    let rehearsal = drill.recovery.rehearsal.is_some();
    let mut inputs = drill.recovery.inputs.clone();
    inputs.extend(opts.inputs.clone());
    let region_loss = drill.fault.kind.get_ref() == "region-loss";
    if region_loss && policy.dns.is_none() {
        return Err(crate::error::ConfigError::new(
            policy.path.display().to_string(),
            format!("drill {} measures through the service's name, but the policy has no [dns]", drill.name()),
        )
        .field("dns")
        .hint("describe the name users reach the service by ([dns] zone and record): after a region loss the old Function URL never heals")
        .into());
    }
    check_inputs(drill, &inputs, opts.runbooks.as_deref())?;
    // The alarm stop condition must name an alarm that exists (read before anything else).
    let alarm_before = match &plan.alarm {
        Some(a) => Some(super::alarm::state(aws, region, a).await?),
        None => None,
    };
    let t0 = Instant::now();
    let started_at = now_rfc3339();
    let file = match &opts.report_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            let p = d.join(format!("{}-{}.events.jsonl", drill.name(), opts.run));
            Some(
                std::fs::File::create(&p)
                    .map_err(|e| Error::io(format!("creating {}", p.display()), e))?,
            )
        }
        None => None,
    };
    let rec = Recorder {
        t0,
        events: Mutex::new(vec![]),
        file: Mutex::new(file),
        progress: opts.progress,
    };
    let store = crate::store::open_store(aws, policy).await?;
    let what = format!("drill {} ({})", drill.name(), opts.run);
    let mut lease = Lease::acquire(&store, "drill", &what, LEASE_TTL).await?;
    rec.note(format!(
        "drill {} started (run {}) against {} in {region}",
        drill.name(),
        opts.run,
        policy.stack_name()
    ));
    let lambda = aws.lambda(region).await;
    let function_url = crate::lambda::ops::function_url(&lambda, policy.function_name())
        .await?
        .ok_or_else(|| {
            Error::failed_hint(
                format!("{} has no Function URL in {region}", policy.function_name()),
                "deploy first (drd deploy)",
            )
        })?;
    // Users' way in: the service's name through the front door when the policy has one (it
    // resolves as users' resolvers answer, so it follows a failover), else the signed URL.
    let url = match (&policy.front_door, &policy.dns) {
        (Some(_), Some(d)) => format!("https://{}/", d.record.get_ref().trim_end_matches('.')),
        _ => function_url,
    };
    let gate_prober = UrlProber::signing(aws).await;
    let ci = plan
        .ci
        .then(|| Arc::new(super::probe::CiCheck::new(aws, policy, region)));
    let mut report = DrillReport {
        schema: 1,
        drill: drill.name().to_string(),
        title: drill.title.clone(),
        run: opts.run.clone(),
        stack: policy.stack_name().to_string(),
        region: region.to_string(),
        probed_via: match (rehearsal, inputs.get("region")) {
            (true, Some(r)) => format!("function-url (the rehearsal's, in {r})"),
            _ if url.contains(".lambda-url.") => "function-url (signed)".into(),
            _ => {
                "service-name (through the front door, resolved as users' resolvers answer)".into()
            }
        },
        started_at,
        finished_at: String::new(),
        outcome: String::new(),
        reason: None,
        rto_objective_seconds: plan.rto.as_secs_f64(),
        interval_ms: plan.interval.as_millis() as u64,
        healthy_after: plan.healthy_after,
        gate: steady(&gate_prober, &url, &plan, ci.as_deref()).await,
        injected_at_ms: None,
        fault: None,
        recovery: None,
        healed_at_ms: None,
        measured: Measured {
            rto_seconds: None,
            rto_met: None,
            rpo_seconds: None,
            rpo_note: if policy.canary_secret().is_some() {
                "not measured".into()
            } else {
                "not measured: the policy names no canary secret (secrets.canary)".into()
            },
            rpo_objective_seconds: plan.rpo.map(|d| d.as_secs_f64()),
            rpo_met: None,
            samples: 0,
            unhealthy_samples: 0,
        },
        rollback: None,
        samples: vec![],
        events: vec![],
    };
    // The gate: a service that is not healthy now gets no fault.
    if let (Some(a), Some("ALARM")) = (&plan.alarm, alarm_before.as_deref()) {
        let why = format!(
            "alarm {a} is in ALARM before the fault (stop_conditions.alarm); nothing was injected"
        );
        rec.note(format!("gate failed: {why}"));
        report.outcome = "gate-failed".into();
        report.reason = Some(why);
        return finish(report, &rec, &store, &opts, lease).await;
    }
    if let Some(bad) = report.gate.iter().find(|g| !g.ok) {
        let why = format!(
            "the steady state does not hold before the fault ({}: {}); nothing was injected",
            bad.tier, bad.detail
        );
        rec.note(format!("gate failed: {why}"));
        report.outcome = "gate-failed".into();
        report.reason = Some(why);
        return finish(report, &rec, &store, &opts, lease).await;
    }
    rec.note("gate passed: steady state holds");
    // The marker: points taken from now until the drill ends are labelled with it (a
    // rehearsal breaks nothing and writes no point: it needs none).
    let now = crate::store::drill_marker::now_secs();
    let slack = plan.max_duration + plan.start_after + Duration::from_secs(600);
    if !rehearsal {
        crate::store::drill_marker::set(
            &store,
            &crate::store::drill_marker::DrillMarker {
                drill: drill.name().to_string(),
                run: opts.run.clone(),
                since: now,
                until: now + slack.as_secs(),
            },
        )
        .await?;
    }
    let samples = Arc::new(Mutex::new(vec![]));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (url_tx, url_rx) = watch::channel((!rehearsal).then(|| url.clone()));
    let prober = start_prober(
        url_rx,
        gate_prober.clone(),
        plan.clone(),
        t0,
        samples.clone(),
        stop_rx,
        ci.clone(),
    );
    // A few samples of the steady state before the fault, and the canary written meanwhile
    // (not by a rehearsal, which breaks nothing, nor by a CI drill, whose RPO is the mirror's).
    let canary_interval = plan.interval.max(Duration::from_secs(1));
    let writer = match policy.canary_secret() {
        Some(c) if !rehearsal && !plan.ci => {
            Some(super::canary::Writer::start(aws, region, c, &opts.run, canary_interval).await)
        }
        _ => None,
    };
    tokio::time::sleep(if writer.is_some() {
        (plan.interval * 2).max(canary_interval * 3)
    } else {
        plan.interval * 2
    })
    .await;
    let written = match writer {
        Some(w) => {
            let w = w.stop().await;
            rec.note(match (&w.error, w.canaries.last()) {
                (None, Some(l)) => format!(
                    "canary: {} values written to {}, the last at {}",
                    w.canaries.len(),
                    policy.canary_secret().unwrap_or_default(),
                    l.written_at
                ),
                (Some(e), _) => format!("canary: writing failed ({e}): the RPO is not measured"),
                (None, None) => "canary: nothing written".into(),
            });
            w.error.is_none().then_some(w.canaries)
        }
        None => None,
    };
    let mut interrupts = opts.interrupts.clone();
    // An interrupt during the gate or the canary's writes: nothing is injected.
    if *interrupts.borrow() >= 1 {
        let _ = stop_tx.send(true);
        let _ = prober.await;
        report.samples = samples.lock().expect("samples").clone();
        rec.note("interrupted before the fault: nothing was injected");
        report.outcome = "interrupted".into();
        report.reason =
            Some("interrupted by a signal before the fault; nothing was injected".into());
        return finish(report, &rec, &store, &opts, lease).await;
    }
    // The alarm read again right before the fault: one that went off since the gate stops it.
    if let Some(why) = super::alarm::before_fault(aws, region, plan.alarm.as_deref()).await {
        let _ = stop_tx.send(true);
        let _ = prober.await;
        report.samples = samples.lock().expect("samples").clone();
        rec.note(format!("gate failed: {why}"));
        report.outcome = "gate-failed".into();
        report.reason = Some(why);
        return finish(report, &rec, &store, &opts, lease).await;
    }
    // Whether the policy's stack already stands in the standby (a region-loss drill's restore
    // builds one there; the rollback must know whether it was the drill's).
    let standby_existed = match (region_loss, inputs.get("region")) {
        (true, Some(r)) => {
            let cf = aws.cloudformation(r).await;
            crate::stack::describe_stack(&cf, policy.stack_name())
                .await
                .map_or(true, |s| s.is_some())
        }
        _ => true,
    };
    // The fault's time for the RPO: what was written before the injection began.
    let fault_wall = std::time::SystemTime::now();
    // Renewed throughout, never cut short: a half-made injection could not be undone.
    let (injection, lost_early) = lease.keep_while(async { match drill.fault.kind.get_ref().as_str() {
        "corrupt-live" => fault::inject_corrupt_live(aws, policy, region)
            .await
            .map(Injected::CorruptLive),
        "revoke-key" => match &opts.lab_llm {
            Some(llm) => fault::inject_revoke_key(aws, policy, region, llm)
                .await
                .map(Injected::RevokeKey),
            None => Err(Error::failed_hint(
                "revoke-key runs only in the lab: on AWS the API key is the LLM provider's",
                "run it against the lab (eval \"$(drd sandbox up)\")",
            )),
        },
        "region-loss" => match &aws.settings().data_endpoint {
            Some(lab) if opts.lab_llm.is_some() => fault::inject_region_loss(policy, lab)
                .await
                .map(Injected::RegionLoss),
            _ => Err(Error::failed_hint(
                "region-loss runs only in the lab: an AWS region cannot be failed safely",
                "rehearse the restore instead: drd drill run restore-rehearsal --input region=R",
            )),
        },
        "github-outage" => match &aws.settings().data_endpoint {
            Some(lab) if opts.lab_llm.is_some() => fault::inject_github_outage(lab)
                .await
                .map(Injected::GithubOutage),
            _ => Err(Error::failed_hint(
                "github-outage runs only in the lab: GitHub is GitHub's",
                "rehearse procedure 5 with drd failover-ci --dry-run",
            )),
        },
        "throttle" => super::fault_fn::inject_throttle(aws, policy, region)
            .await
            .map(Injected::Throttle),
        kind @ ("latency" | "errors") => match &aws.settings().data_endpoint {
            Some(lab) if opts.lab_llm.is_some() => {
                super::fault_fn::inject_host_fault(lab, policy, region, kind, &plan.fault)
                    .await
                    .map(Injected::HostFault)
            }
            _ => Err(Error::failed_hint(
                format!("{kind} runs only in the lab: its function host injects it, AWS has no switch for it"),
                "drill the same outage on AWS with throttle, or run it against the lab (eval \"$(drd sandbox up)\")",
            )),
        },
        "none" => fault::prepare_rehearsal(aws, policy, &store, &inputs, opts.progress)
            .await
            .map(Injected::Rehearsal),
        other => Err(Error::failed(format!("fault {other} is not available"))),
    }}).await;
    let injected: Injected = match injection {
        Ok(i) => i,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = prober.await;
            report.samples = samples.lock().expect("samples").clone();
            rec.note(format!("injection failed: {e}"));
            report.outcome = "failed".into();
            report.reason = Some(format!("the fault could not be injected: {e}"));
            return finish(report, &rec, &store, &opts, lease).await;
        }
    };
    let inj_ms = rec.note(format!("fault injected: {}", injected.summary()));
    let inj_wall = fault_wall;
    let point_taken: Mutex<Option<String>> = Mutex::new(None);
    report.injected_at_ms = Some(inj_ms);
    report.fault = Some(serde_json::to_value(&injected).expect("serializes"));
    if let Injected::GithubOutage(_) = &injected {
        mirror_rpo(&mut report, &store, inj_wall).await;
    }
    if let Injected::Rehearsal(r) = &injected {
        for l in &r.leftovers_removed {
            rec.note(format!("an earlier rehearsal's leftover: {l}"));
        }
        rpo_of_point(&mut report, &r.scratch);
    }
    let deadline = t0 + Duration::from_millis(inj_ms) + plan.max_duration;
    // The main phase: recovery, then waiting for the prober to see the service healthy.
    let main = async {
        let recovery = match (&drill.recovery.runbook, &injected) {
            (_, Injected::Rehearsal(r)) => {
                Some(rehearse(aws, policy, &store, r, &rec, &url_tx, &opts).await)
            }
            (Some(name), _) => {
                if !plan.start_after.is_zero() {
                    rec.note(format!(
                        "recovery starts in {} (recovery.start_after: the time to notice)",
                        humantime::format_duration(plan.start_after)
                    ));
                    tokio::time::sleep(plan.start_after).await;
                }
                let rb_start = rec.ms();
                rec.note(format!("recovery: runbook {} started", name.get_ref()));
                let r = recover(
                    injected.replacement(),
                    aws,
                    policy,
                    region,
                    (name.get_ref(), &inputs),
                    &opts,
                    &store,
                )
                .await;
                match r {
                    Ok(rr) => {
                        rec.note(format!(
                            "recovery: runbook {} {} (run {})",
                            rr.runbook, rr.outcome, rr.run
                        ));
                        if let Some(c) = rr.output("preflight", "created_at") {
                            *point_taken.lock().expect("point") = Some(c.to_string());
                        }
                        Some(Recovery {
                            runbook: rr.runbook.clone(),
                            run: Some(rr.run.clone()),
                            outcome: rr.outcome.clone(),
                            steps: rr
                                .steps
                                .iter()
                                .map(|s| RecoveryStep {
                                    id: s.id.clone(),
                                    status: s.status.clone(),
                                    t_ms: rr.succeeded_at_ms.get(&s.id).map(|t| rb_start + t),
                                })
                                .collect(),
                        })
                    }
                    Err(e) => {
                        rec.note(format!("recovery: runbook {} failed: {e}", name.get_ref()));
                        Some(Recovery {
                            runbook: name.get_ref().clone(),
                            run: None,
                            outcome: format!("failed: {e}"),
                            steps: vec![],
                        })
                    }
                }
            }
            (None, _) => {
                rec.note("recovery: automatic (nothing is run)");
                None
            }
        };
        // A rehearsal whose restore failed: nothing will ever serve, no need to wait.
        if let (Injected::Rehearsal(_), Some(r)) = (&injected, &recovery) {
            if r.outcome != "succeeded" {
                let why = format!("the rehearsal's restore {}", r.outcome);
                return (recovery, Ended::Failed(why));
            }
        }
        loop {
            let snapshot = samples.lock().expect("samples").clone();
            if let Some((at, seen)) = healed_at(&snapshot, inj_ms, plan.healthy_after) {
                return (recovery, Ended::Healed { at, seen });
            }
            if Instant::now() >= deadline {
                return (
                    recovery,
                    Ended::NotHealed(format!(
                        "stop condition: not healthy within max_duration {}",
                        humantime::format_duration(plan.max_duration)
                    )),
                );
            }
            tokio::time::sleep(plan.interval / 2).await;
        }
    };
    // The probe threshold, watched beside the recovery (which it stops, as an interrupt does).
    let threshold = async {
        let Some(max) = plan.max_unhealthy else {
            return std::future::pending::<String>().await;
        };
        loop {
            tokio::time::sleep(plan.interval / 2).await;
            let bad = samples
                .lock()
                .expect("samples")
                .iter()
                .filter(|s| s.t_ms >= inj_ms && !s.ok)
                .count();
            if bad > max as usize {
                return format!(
                    "stop condition: {bad} unhealthy samples since the fault (max_unhealthy_samples {max})"
                );
            }
        }
    };
    let alarm = super::alarm::watch(
        aws,
        region,
        plan.alarm.as_deref(),
        plan.interval,
        region_loss,
        &rec,
    );
    let guarded = async {
        tokio::select! {
            why = threshold => (None, Ended::NotHealed(why)),
            why = alarm => (None, Ended::NotHealed(why)),
            r = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline + plan.interval * (plan.healthy_after + 2)), main) => match r {
                Ok(x) => x,
                Err(_) => (None, Ended::NotHealed(format!(
                    "stop condition: the recovery was still running after max_duration {}",
                    humantime::format_duration(plan.max_duration)
                ))),
            },
            _ = interrupts.wait_for(|n| *n >= 1) => (None, Ended::Interrupted),
        }
    };
    let guarded_or_lost = match lost_early {
        None => lease.guard(guarded).await,
        Some(lost) => Err(lost),
    };
    let (recovery, ended) = match guarded_or_lost {
        Ok(x) => x,
        Err(lost) => (
            None,
            Ended::Failed(format!(
                "the drill lease {} was lost: {}",
                lost.key, lost.why
            )),
        ),
    };
    report.recovery = recovery;
    if let Some(c) = point_taken.lock().expect("point").clone() {
        if let Ok(at) = humantime::parse_rfc3339(&c) {
            let lost = inj_wall
                .duration_since(at)
                .unwrap_or_default()
                .as_secs_f64();
            report.measured.rpo_seconds = Some((lost * 10.0).round() / 10.0);
            report.measured.rpo_note = format!(
                "the restore came from the point taken {c}: what changed between it and the fault is lost"
            );
        }
    }
    // The RPO: the newest canary that survived, where the service now runs.
    if let (Ended::Healed { .. }, Some(c)) = (&ended, policy.canary_secret()) {
        let standby = inputs.get("region").map(String::as_str).unwrap_or(region);
        let at = match &injected {
            Injected::Rehearsal(_) => {
                Some((standby, format!("{c}{}", crate::restore::rehearsal::SUFFIX)))
            }
            _ if written.is_none() => None,
            Injected::RegionLoss(_) => Some((standby, c.to_string())),
            _ => Some((region, c.to_string())),
        };
        if let Some((r, name)) = at {
            let w = written.as_deref().unwrap_or_default();
            super::canary::measure(aws, &mut report, inj_wall, (r, &name), w).await;
        }
    }
    report.measured.rpo_met = match (plan.rpo, report.measured.rpo_seconds) {
        (Some(o), Some(m)) => Some(m <= o.as_secs_f64()),
        // An objective the drill set out to measure (a canary, a mirror) but could not: not met.
        (Some(_), None)
            if matches!(ended, Ended::Healed { .. })
                && (plan.ci || (policy.canary_secret().is_some() && !rehearsal)) =>
        {
            Some(false)
        }
        _ => None,
    };
    match ended {
        Ended::Healed { at, seen } => {
            report.healed_at_ms = Some(at);
            let rto = (at - inj_ms) as f64 / 1000.0;
            report.measured.rto_seconds = Some(rto);
            let met = rto <= plan.rto.as_secs_f64();
            report.measured.rto_met = Some(met);
            rec.note(format!(
                "healthy again: {} consecutive healthy samples from {:.1} s (RTO {rto:.1} s{})",
                plan.healthy_after,
                at as f64 / 1000.0,
                if seen {
                    ""
                } else {
                    "; the prober never saw the fault"
                }
            ));
            let rpo_met = report.measured.rpo_met != Some(false);
            report.outcome = if met && rpo_met { "met" } else { "breached" }.into();
            if !met {
                report.reason = Some(format!(
                    "RTO {rto:.1} s is over the objective {:.1} s",
                    plan.rto.as_secs_f64()
                ));
            } else if !rpo_met {
                report.reason = Some(match report.measured.rpo_seconds {
                    Some(m) => format!(
                        "RPO {m:.1} s is over the objective {:.1} s",
                        plan.rpo.unwrap_or_default().as_secs_f64()
                    ),
                    None => format!(
                        "the RPO objective could not be judged: {}",
                        report.measured.rpo_note
                    ),
                });
            }
        }
        Ended::NotHealed(why) | Ended::Failed(why) => {
            rec.note(why.clone());
            report.outcome = "failed".into();
            report.reason = Some(why);
        }
        Ended::Interrupted => {
            rec.note("interrupted: rolling back (interrupt again to skip the rollback)");
            report.outcome = "interrupted".into();
            report.reason = Some("interrupted by a signal".into());
        }
    }
    // The rollback: always, to its end (the lease renewed meanwhile, never cutting it short).
    let (rollback, lost_late) = lease
        .keep_while(async {
            let mut interrupts = opts.interrupts.clone();
            let undo = tokio::select! {
                r = fault::undo(aws, policy, &injected) => Some(r),
                _ = interrupts.wait_for(|n| *n >= 2) => None,
            };
            match undo {
                None => {
                    rec.note("rollback SKIPPED by a second interrupt: the fault is still in place");
                    Rollback {
                        ok: false,
                        skipped: true,
                        done: vec![],
                        error: Some(
                            "skipped by a second interrupt; undo by hand: see the fault record"
                                .into(),
                        ),
                        steady_after: vec![],
                    }
                }
                Some(Ok(mut done)) => {
                    let back = match &injected {
                        // The region is back: return the service to it, as after a real outage.
                        Injected::RegionLoss(_) => {
                            fail_back(aws, policy, &store, (&inputs, standby_existed), &opts).await
                        }
                        // GitHub answers again: deploys go back to it (the mirror's commits pushed).
                        Injected::GithubOutage(_) => {
                            ci_fail_back(aws, policy, region, &store, &opts).await
                        }
                        _ => Ok(None),
                    };
                    match back {
                        Ok(Some(l)) => done.push(l),
                        Ok(None) => {}
                        Err(e) => done.push(format!("failback FAILED: {e}")),
                    }
                    rec.note(format!("rollback: {}", done.join("; ")));
                    let after = steady(&gate_prober, &url, &plan, ci.as_deref()).await;
                    let ok =
                        after.iter().all(|g| g.ok) && !done.iter().any(|d| d.contains("FAILED"));
                    rec.note(if ok {
                        "steady state holds after the rollback".to_string()
                    } else {
                        "the steady state does NOT hold after the rollback".to_string()
                    });
                    Rollback {
                        ok,
                        skipped: false,
                        done,
                        error: (!ok).then(|| {
                            "the steady state does not hold after the rollback".to_string()
                        }),
                        steady_after: after,
                    }
                }
                Some(Err(e)) => {
                    rec.note(format!("rollback FAILED: {e}"));
                    Rollback {
                        ok: false,
                        skipped: false,
                        done: vec![],
                        error: Some(e.to_string()),
                        steady_after: vec![],
                    }
                }
            }
        })
        .await;
    if let Some(lost) = lost_late {
        let why = format!(
            "the drill lease {} was lost during the rollback ({}): another drill may have run meanwhile",
            lost.key, lost.why
        );
        rec.note(why.clone());
        if report.outcome == "met" || report.outcome == "breached" {
            report.outcome = "failed".into();
            report.reason = Some(why);
        }
    }
    report.rollback = Some(rollback);
    let _ = stop_tx.send(true);
    let _ = prober.await;
    report.samples = samples.lock().expect("samples").clone();
    finish(report, &rec, &store, &opts, lease).await
}
