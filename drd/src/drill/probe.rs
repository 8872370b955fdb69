//! The drill's measurements: the steady-state check, the independent prober, the resolver of
//! the service's name, and when the service counts as healed.

use super::report::{GateProbe, Sample};
use super::Plan;
use crate::aws::Aws;
use crate::lambda::probe::UrlProber;
use crate::policy::Policy;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The CI tier (`"CI"` in `steady_state.tiers`): the CI that holds the epoch answers (GitHub:
/// its deploy workflow reads; CodePipeline: the standby pipeline reads), so a fix can ship. It
/// builds its clients from the settings: nothing shared with the recovery.
pub(super) struct CiCheck {
    aws: Aws,
    policy: Policy,
    region: String,
}

impl CiCheck {
    pub(super) fn new(aws: &Aws, policy: &Policy, region: &str) -> Self {
        Self {
            aws: Aws::new(aws.settings().clone()),
            policy: policy.clone(),
            region: region.to_string(),
        }
    }

    /// `(healthy, detail)` of one look.
    pub(super) async fn sample(&self) -> (bool, String) {
        let store = crate::store::store_of(&self.aws, &self.policy).await;
        let provider = match crate::store::ci_epoch::read(&store).await {
            Ok((e, _)) => e.provider,
            Err(e) => return (false, format!("the CI epoch cannot be read: {e}")),
        };
        let quiet = |_: &str| {};
        let ctx = crate::actions::Ctx {
            aws: &self.aws,
            policy: &self.policy,
            region: self.region.clone(),
            store,
            run_id: String::new(),
            progress: &quiet,
            secret_value: None,
        };
        match crate::actions::ci_holder_answers(&ctx, provider).await {
            Ok(()) => (
                true,
                format!("{} holds the CI epoch and answers", provider.as_str()),
            ),
            Err(e) => (
                false,
                format!(
                    "{} holds the CI epoch and does not answer: {e}",
                    provider.as_str()
                ),
            ),
        }
    }
}

/// Probe each tier once: the gate before the fault and the check after the rollback.
pub(super) async fn steady(
    prober: &UrlProber,
    url: &str,
    plan: &Plan,
    ci: Option<&CiCheck>,
) -> Vec<GateProbe> {
    let mut out = vec![];
    if let Some(c) = ci {
        let t = Instant::now();
        let (ok, detail) = c.sample().await;
        out.push(GateProbe {
            tier: "CI".into(),
            ok,
            latency_ms: t.elapsed().as_millis() as u64,
            detail,
        });
    }
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

/// The independent prober: samples every `interval` until stopped. `url` is what it probes
/// (`None`: nothing serves yet, as while a rehearsal restores; such a sample is unhealthy).
pub(super) fn start_prober(
    url: watch::Receiver<Option<String>>,
    prober: UrlProber,
    plan: Plan,
    t0: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    mut stop: watch::Receiver<bool>,
    ci: Option<Arc<CiCheck>>,
) -> tokio::task::JoinHandle<()> {
    let prober = prober.fresh();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(plan.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            let t_ms = t0.elapsed().as_millis() as u64;
            let Some(url) = url.borrow().clone() else {
                samples.lock().expect("samples").push(Sample {
                    t_ms,
                    ok: false,
                    latency_ms: 0,
                    detail: "nothing serves yet (the rehearsal is restoring)".into(),
                });
                continue;
            };
            let (mut ok, mut latency_ms, mut detail) = (true, 0u64, String::new());
            if let Some(c) = &ci {
                let bound = plan.max_latency + Duration::from_secs(1);
                let t = Instant::now();
                match tokio::time::timeout(bound, c.sample()).await {
                    Ok((true, _)) => {}
                    Ok((false, d)) => (ok, detail) = (false, format!("CI: {d}")),
                    Err(_) => (ok, detail) = (false, format!("CI: no answer within {bound:?}")),
                }
                latency_ms = t.elapsed().as_millis() as u64;
            }
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
