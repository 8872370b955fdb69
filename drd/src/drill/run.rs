//! Running a drill: gate, independent prober, injection, recovery, measurement, rollback.
//!
//! The prober is its own task with its own HTTP client: it samples the service at a fixed
//! interval whatever the recovery is doing, so a recovery that reports success while users still
//! fail is measured as failing. The fault's undo always runs: after the objective is met, after
//! a failure, after a stop condition and after an interrupt (a second interrupt skips it and the
//! report says so).

use super::fault::{self, Injected};
use super::report::{
    self, DrillReport, Event, GateProbe, Measured, Recovery, RecoveryStep, Rollback, Sample,
};
use super::{Drill, Plan};
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::lambda::probe::UrlProber;
use crate::policy::Policy;
use crate::store::lease::Lease;
use std::io::Write;
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
}

/// The event journal: kept in memory for the report, appended to `<run>.events.jsonl` and
/// flushed per event (a crash still leaves a record), and shown as progress.
struct Recorder<'a> {
    t0: Instant,
    events: Mutex<Vec<Event>>,
    file: Mutex<Option<std::fs::File>>,
    progress: &'a (dyn Fn(&str) + Sync),
}

impl Recorder<'_> {
    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn note(&self, what: impl Into<String>) -> u64 {
        let e = Event {
            t_ms: self.ms(),
            what: what.into(),
        };
        (self.progress)(&e.what);
        if let Some(f) = self.file.lock().expect("journal").as_mut() {
            let _ = writeln!(f, "{}", serde_json::to_string(&e).expect("serializes"));
            let _ = f.flush();
        }
        let t = e.t_ms;
        self.events.lock().expect("journal").push(e);
        t
    }
}

/// Probe each tier once: the gate before the fault and the check after the rollback.
async fn steady(prober: &UrlProber, url: &str, plan: &Plan) -> Vec<GateProbe> {
    let mut out = vec![];
    for tier in &plan.tiers {
        let r = prober.probe(url, *tier).await;
        let slow = r.latency_ms > plan.max_latency.as_millis() as u64;
        out.push(GateProbe {
            tier: format!("{tier:?}"),
            ok: r.ok && !slow,
            latency_ms: r.latency_ms,
            detail: if slow && r.ok {
                format!("slower than {:?}", plan.max_latency)
            } else {
                r.detail
            },
        });
    }
    out
}

/// The independent prober: samples every `interval` until stopped.
fn start_prober(
    url: String,
    data_endpoint: Option<String>,
    plan: Plan,
    t0: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let prober = UrlProber::new(data_endpoint);
        let mut every = tokio::time::interval(plan.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            let t_ms = t0.elapsed().as_millis() as u64;
            let (mut ok, mut latency_ms, mut detail) = (true, 0u64, String::new());
            for tier in &plan.tiers {
                let bound = plan.max_latency + Duration::from_secs(1);
                match tokio::time::timeout(bound, prober.probe(&url, *tier)).await {
                    Ok(r) => {
                        latency_ms = latency_ms.max(r.latency_ms);
                        if !r.ok && ok {
                            (ok, detail) = (false, format!("{tier:?}: {}", r.detail));
                        } else if r.latency_ms > plan.max_latency.as_millis() as u64 && ok {
                            (ok, detail) = (false, format!("{tier:?}: {} ms", r.latency_ms));
                        }
                    }
                    Err(_) => {
                        latency_ms = latency_ms.max(bound.as_millis() as u64);
                        if ok {
                            (ok, detail) = (false, format!("{tier:?}: no answer within {bound:?}"));
                        }
                    }
                }
            }
            let detail: String = detail.chars().take(200).collect();
            samples.lock().expect("samples").push(Sample {
                t_ms,
                ok,
                latency_ms,
                detail,
            });
        }
    })
}

/// When the service was healthy again: the time of the first of `k` consecutive healthy samples
/// taken after the fault was seen (a sample failing after the injection), or after the
/// injection when no sample ever failed. `(time, the fault was seen)`.
pub fn healed_at(samples: &[Sample], injected_ms: u64, k: u32) -> Option<(u64, bool)> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_ms >= injected_ms).collect();
    let first_bad = after.iter().position(|s| !s.ok);
    let from = first_bad.unwrap_or(0);
    let k = k as usize;
    let mut run = 0;
    for (i, s) in after.iter().enumerate().skip(from) {
        if s.ok {
            run += 1;
            if run == k {
                return Some((after[i + 1 - k].t_ms, first_bad.is_some()));
            }
        } else {
            run = 0;
        }
    }
    None
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
    let url = crate::lambda::ops::function_url(&lambda, policy.function_name())
        .await?
        .ok_or_else(|| {
            Error::failed_hint(
                format!("{} has no Function URL in {region}", policy.function_name()),
                "deploy first (drd deploy)",
            )
        })?;
    let data_endpoint = aws.settings().data_endpoint.clone();
    let gate_prober = UrlProber::new(data_endpoint.clone());
    let mut report = DrillReport {
        schema: 1,
        drill: drill.name().to_string(),
        title: drill.title.clone(),
        run: opts.run.clone(),
        stack: policy.stack_name().to_string(),
        region: region.to_string(),
        probed_via: "function-url".into(),
        started_at,
        finished_at: String::new(),
        outcome: String::new(),
        reason: None,
        rto_objective_seconds: plan.rto.as_secs_f64(),
        interval_ms: plan.interval.as_millis() as u64,
        healthy_after: plan.healthy_after,
        gate: steady(&gate_prober, &url, &plan).await,
        injected_at_ms: None,
        fault: None,
        recovery: None,
        healed_at_ms: None,
        measured: Measured {
            rto_seconds: None,
            rto_met: None,
            rpo_seconds: None,
            rpo_note: "not measured: this drill writes no canary (its fault loses no data)".into(),
            samples: 0,
            unhealthy_samples: 0,
        },
        rollback: None,
        samples: vec![],
        events: vec![],
    };
    // The gate: a service that is not healthy now gets no fault.
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
    // The marker: points taken from now until the drill ends are labelled with it.
    let now = crate::store::drill_marker::now_secs();
    let slack = plan.max_duration + plan.start_after + Duration::from_secs(600);
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
    let samples = Arc::new(Mutex::new(vec![]));
    let (stop_tx, stop_rx) = watch::channel(false);
    let prober = start_prober(
        url.clone(),
        data_endpoint,
        plan.clone(),
        t0,
        samples.clone(),
        stop_rx,
    );
    // A few samples of the steady state before the fault.
    tokio::time::sleep(plan.interval * 2).await;
    let mut interrupts = opts.interrupts.clone();
    let injection = match drill.fault.kind.get_ref().as_str() {
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
        other => Err(Error::failed(format!("fault {other} is not available"))),
    };
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
    report.injected_at_ms = Some(inj_ms);
    report.fault = Some(serde_json::to_value(&injected).expect("serializes"));
    let deadline = t0 + Duration::from_millis(inj_ms) + plan.max_duration;
    // The main phase: recovery, then waiting for the prober to see the service healthy.
    let main = async {
        let recovery = match &drill.recovery.runbook {
            Some(name) => {
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
                    (name.get_ref(), &drill.recovery.inputs),
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
            None => {
                rec.note("recovery: automatic (nothing is run)");
                None
            }
        };
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
    let guarded = async {
        tokio::select! {
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
    let (recovery, ended) = match lease.guard(guarded).await {
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
            report.outcome = if met { "met" } else { "breached" }.into();
            if !met {
                report.reason = Some(format!(
                    "RTO {rto:.1} s is over the objective {:.1} s",
                    plan.rto.as_secs_f64()
                ));
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
    // The rollback: always.
    let mut interrupts = opts.interrupts.clone();
    let undo = tokio::select! {
        r = fault::undo(aws, policy, &injected) => Some(r),
        _ = interrupts.wait_for(|n| *n >= 2) => None,
    };
    let rollback = match undo {
        None => {
            rec.note("rollback SKIPPED by a second interrupt: the fault is still in place");
            Rollback {
                ok: false,
                skipped: true,
                done: vec![],
                error: Some(
                    "skipped by a second interrupt; undo by hand: see the fault record".into(),
                ),
                steady_after: vec![],
            }
        }
        Some(Ok(done)) => {
            rec.note(format!("rollback: {}", done.join("; ")));
            let after = steady(&gate_prober, &url, &plan).await;
            let ok = after.iter().all(|g| g.ok);
            rec.note(if ok {
                "steady state holds after the rollback".to_string()
            } else {
                "the steady state does NOT hold after the rollback".to_string()
            });
            Rollback {
                ok,
                skipped: false,
                done,
                error: (!ok)
                    .then(|| "the steady state does not hold after the rollback".to_string()),
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
    };
    report.rollback = Some(rollback);
    let _ = stop_tx.send(true);
    let _ = prober.await;
    report.samples = samples.lock().expect("samples").clone();
    finish(report, &rec, &store, &opts, lease).await
}

/// Run the recovery runbook in this process (journaled like any run).
/// `runbook` is the runbook's name and inputs.
async fn recover(
    secret_value: Option<&secrecy::SecretString>,
    aws: &Aws,
    policy: &Policy,
    region: &str,
    runbook: (&str, &std::collections::BTreeMap<String, String>),
    opts: &Options<'_>,
    store: &crate::store::Store,
) -> Result<crate::runbook::exec::RunReport> {
    let (name, inputs) = runbook;
    let rb = crate::runbook::load(opts.runbooks.as_deref(), name)?;
    let ctx = crate::actions::Ctx {
        aws,
        policy,
        region: region.to_string(),
        store: store.clone(),
        run_id: String::new(),
        progress: opts.progress,
        secret_value,
    };
    let ro = crate::runbook::exec::RunOptions {
        inputs: inputs.clone(),
        resume: None,
        state_dir: opts.state_dir.clone(),
        lease_ttl: None,
        #[cfg(feature = "failpoints")]
        failpoint: None,
    };
    crate::runbook::exec::execute(&ctx, &rb, &ro).await
}

/// Totals, the report files (local and in the store), the lease released.
async fn finish(
    mut report: DrillReport,
    rec: &Recorder<'_>,
    store: &crate::store::Store,
    opts: &Options<'_>,
    lease: Lease,
) -> Result<DrillReport> {
    report.finished_at = now_rfc3339();
    report.measured.samples = report.samples.len();
    report.measured.unhealthy_samples = report.samples.iter().filter(|s| !s.ok).count();
    rec.note(format!("drill {}: {}", report.drill, report.outcome));
    report.events = rec.events.lock().expect("journal").clone();
    if report.injected_at_ms.is_some() || report.outcome != "gate-failed" {
        crate::store::drill_marker::clear(store, &report.run).await?;
    }
    let json = serde_json::to_vec_pretty(&report).expect("serializes");
    let html = report::html(&report);
    if let Some(d) = &opts.report_dir {
        let base = d.join(format!("{}-{}", report.drill, report.run));
        for (ext, body) in [
            ("json", json.clone()),
            ("md", report::markdown(&report).into_bytes()),
            ("html", html.clone().into_bytes()),
            ("junit.xml", report::junit(&report).into_bytes()),
        ] {
            let p = base.with_extension(ext);
            std::fs::write(&p, body)
                .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
    }
    let key = format!("{}drills/{}/{}", store.prefix, report.drill, report.run);
    store.put(&format!("{key}.json"), &json).await?;
    store.put(&format!("{key}.html"), html.as_bytes()).await?;
    let _ = lease.release().await;
    Ok(report)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: u64, ok: bool) -> Sample {
        Sample {
            t_ms,
            ok,
            latency_ms: 10,
            detail: String::new(),
        }
    }

    #[test]
    fn healing_is_the_first_of_k_healthy_samples_after_the_fault_was_seen() {
        // Healthy before the fault, unhealthy from 1000, a blip at 1500, healthy from 2000.
        let v = vec![
            s(0, true),
            s(500, true),
            s(1000, false),
            s(1250, false),
            s(1500, true),
            s(1750, false),
            s(2000, true),
            s(2250, true),
            s(2500, true),
        ];
        assert_eq!(healed_at(&v, 900, 3), Some((2000, true)));
        assert_eq!(healed_at(&v, 900, 4), None);
        // Samples taken before the injection never count.
        assert_eq!(healed_at(&v[..2], 900, 1), None);
        // A fault nobody saw: healthy from the injection.
        let quiet = vec![s(1000, true), s(1250, true)];
        assert_eq!(healed_at(&quiet, 900, 2), Some((1000, false)));
    }

    /// A synthetic outage of known length: the measured RTO is within one sampling interval of
    /// it, for any phase of the sampling clock.
    #[test]
    fn a_synthetic_outage_is_measured_within_one_interval() {
        let interval = 250u64;
        let (inject, outage) = (1_000u64, 3_000u64);
        for phase in (0..interval).step_by(17) {
            let v: Vec<Sample> = (0..40)
                .map(|i| {
                    let t = phase + i * interval;
                    s(t, !(inject..inject + outage).contains(&t))
                })
                .collect();
            let (at, seen) = healed_at(&v, inject, 3).unwrap();
            assert!(seen);
            let rto = at - inject;
            assert!(
                rto >= outage && rto < outage + interval,
                "phase {phase}: rto {rto}"
            );
        }
    }
}
