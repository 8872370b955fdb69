//! The real backend: leases and tick records in each stack's store, jobs run with the library.

use super::alerts::{Alert, Alerter};
use super::metrics::Metrics;
use super::scheduler::{Backend, Held, JobSpec, Outcome, TickRecord};
use crate::aws::Aws;
use crate::backup::crypto::Identities;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::lease::Lease;
use crate::store::Store;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct StackCtx {
    pub policy: Policy,
    pub store: Store,
}

pub struct StoreBackend {
    pub aws: Arc<Aws>,
    pub stacks: BTreeMap<String, StackCtx>,
    pub holder: String,
    pub runbooks: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// Lease keys this daemon holds (bucket, key), released at shutdown.
    held: Arc<Mutex<BTreeSet<(String, String)>>>,
    /// Sends the stacks' alerts (none in tests that build a backend without one).
    alerter: Option<Alerter>,
    /// Where drill results are counted (the alerter's metrics).
    metrics: Option<Arc<Metrics>>,
}

impl StoreBackend {
    pub fn new(
        aws: Arc<Aws>,
        stacks: BTreeMap<String, StackCtx>,
        holder: String,
        runbooks: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            aws,
            stacks,
            holder,
            runbooks,
            state_dir,
            held: Default::default(),
            alerter: None,
            metrics: None,
        }
    }

    pub fn with_alerter(mut self, alerter: Alerter) -> Self {
        self.metrics = Some(alerter.metrics());
        self.alerter = Some(alerter);
        self
    }

    /// A scheduled drill (`drill:NAME`): run it like `drd drill run`, reports under the state
    /// directory and in the store; its outcome and RTO are metrics. A drill that does not meet
    /// its objective (or whose rollback fails) fails the job, which raises `drill-failed`.
    async fn drill_job(
        &self,
        job: &JobSpec,
        policy: &Policy,
        name: &str,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome> {
        let dir = self.runbooks.as_ref().map(|r| r.join("drills"));
        let drill = crate::drill::load(dir.as_deref(), name)?;
        let region = crate::store::active::active_region(&self.aws, policy).await?;
        // No signal reaches a scheduled drill: the daemon's shutdown grace covers its rollback.
        let (_never, interrupts) = tokio::sync::watch::channel(0u32);
        let opts = crate::drill::run::Options {
            run: crate::runbook::journal::new_run_id(),
            report_dir: self.state_dir.as_ref().map(|d| d.join("drills")),
            runbooks: self.runbooks.clone(),
            state_dir: self.state_dir.clone(),
            progress,
            // Lab-only faults are not scheduled: a scheduled revoke-key fails and says why.
            lab_llm: None,
            interrupts,
            // The daemon's identity (a rehearsal decrypts the secret backups with it), then the
            // schedule's own inputs over it (a rehearsal's scratch `region`).
            inputs: policy
                .daemon
                .identity
                .iter()
                .map(|i| ("identity".to_string(), i.clone()))
                .chain(
                    policy
                        .daemon
                        .schedule
                        .iter()
                        .find(|s| s.job.get_ref() == &job.job)
                        .map(|s| s.inputs.clone())
                        .unwrap_or_default(),
                )
                .collect(),
        };
        let r = Box::pin(crate::drill::run::run(
            &self.aws, policy, &drill, &region, opts,
        ))
        .await?;
        if let Some(m) = &self.metrics {
            m.record_drill(&job.stack, name, &r.outcome, r.measured.rto_seconds);
        }
        let rto = r
            .measured
            .rto_seconds
            .map(|s| format!(", RTO {s:.1} s"))
            .unwrap_or_default();
        if r.exit_ok() {
            Ok(Outcome {
                detail: format!("drill run {} {}{rto}", r.run, r.outcome),
                ..Default::default()
            })
        } else {
            Err(Error::failed(format!(
                "drill run {} {}{rto}: {}{}",
                r.run,
                r.outcome,
                r.reason.as_deref().unwrap_or("see the report"),
                match &r.rollback {
                    Some(rb) if !rb.ok => "; the rollback FAILED",
                    _ => "",
                }
            )))
        }
    }

    /// Raise `rpo-breached` and `mirror-stale` for the conditions the gauges show at `now` (unix
    /// seconds). Without any point, the RPO counts from `started` (the daemon's start).
    pub fn check_conditions(&self, metrics: &Metrics, now: f64, started: f64) {
        let Some(alerter) = &self.alerter else { return };
        for (name, ctx) in &self.stacks {
            let rpo = ctx.policy.daemon.rpo().as_secs_f64();
            let newest = metrics.newest_point(name);
            let listed = metrics.listed.lock().expect("metrics").contains(name);
            let since = newest.unwrap_or(started);
            // "No point" is said only of a store that could be listed: an unreadable store
            // fails its jobs (job-failed), it is not evidence that no point exists.
            if now - since > rpo && (newest.is_some() || listed) {
                let (summary, key) = match newest {
                    Some(t) => (
                        format!(
                            "the newest recovery point is {} old, past the RPO of {}",
                            human_secs(now - t),
                            human_secs(rpo)
                        ),
                        format!("point-{}", t as i64),
                    ),
                    None => (
                        format!(
                            "no recovery point exists, {} after the daemon started (RPO {})",
                            human_secs(now - started),
                            human_secs(rpo)
                        ),
                        format!("no-point-since-{}", started as i64),
                    ),
                };
                let detail = "check the backup job's last runs (drd_job_failures_total, the daemon's log) or run drd backup";
                let a = Alert::new("rpo-breached", name, summary, detail, key, &self.holder);
                alerter.raise(&ctx.policy.alerts, &ctx.store, a);
            }
            if let Some((fetched, max)) = metrics.mirror(name).filter(|_| ctx.policy.ci.is_some()) {
                if now - fetched > max {
                    let summary = format!(
                        "the source mirror was last fetched {} ago, past ci.mirror_max_age {}",
                        human_secs(now - fetched),
                        human_secs(max)
                    );
                    let detail = "check the mirror job (drd mirror status) and the repository's reachability";
                    let key = format!("fetch-{}", fetched as i64);
                    let a = Alert::new("mirror-stale", name, summary, detail, key, &self.holder);
                    alerter.raise(&ctx.policy.alerts, &ctx.store, a);
                }
            }
        }
    }

    fn stack(&self, job: &JobSpec) -> Result<&StackCtx> {
        self.stacks
            .get(&job.stack)
            .ok_or_else(|| Error::failed(format!("no policy for stack {}", job.stack)))
    }

    fn lease_name(job: &JobSpec) -> String {
        format!("daemon-{}", job.job.replace(':', "-"))
    }

    fn tick_key(store: &Store, job: &JobSpec) -> String {
        format!("{}daemon/{}.json", store.prefix, job.job.replace(':', "-"))
    }

    /// Delete every lease this daemon still holds (at shutdown, after aborted jobs).
    pub async fn release_all(&self) {
        let keys: Vec<(String, String)> = self.held.lock().expect("held").iter().cloned().collect();
        for (bucket, key) in keys {
            let Some(ctx) = self.stacks.values().find(|c| c.store.bucket == bucket) else {
                continue;
            };
            if let Ok(true) = crate::store::lease::release_if_ours(&ctx.store, &key).await {
                tracing::info!(lease = %key, "released at shutdown");
            }
        }
    }

    /// Each mirrored stack's last mirror fetch (unix seconds), staleness threshold and commits
    /// behind the remote as of that fetch, from the store (so fetches by other daemons count):
    /// 0 when the newest manifest came from the remote (a successful fetch leaves nothing
    /// behind), unknown when it came from `push --from`.
    pub async fn mirror_fetches(&self) -> Vec<(String, f64, f64, Option<u64>)> {
        let mut out = vec![];
        for (name, ctx) in &self.stacks {
            let Some(ci) = &ctx.policy.ci else { continue };
            if let Ok(Some((p, m, _))) = crate::ci::mirror::newest(&ctx.store).await {
                if let Ok(t) = humantime::parse_rfc3339_weak(&p.fetched_at) {
                    let secs = t
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    let behind = m.source.starts_with("remote ").then_some(0);
                    out.push((name.clone(), secs, ci.max_age().as_secs_f64(), behind));
                }
            }
        }
        out
    }

    /// The `mirror` job: fetch and store what changed; its fetch time feeds the gauges.
    async fn mirror_job(
        &self,
        policy: &Policy,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome> {
        let root = self
            .state_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join("mirror");
        let r = crate::ci::run::mirror(self.aws.as_ref(), policy, &root, false, progress).await?;
        let fetched = humantime::parse_rfc3339_weak(&r.fetched_at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let max_age = policy
            .ci
            .as_ref()
            .map(|c| c.max_age().as_secs_f64())
            .unwrap_or(7200.0);
        Ok(Outcome {
            detail: if r.changed {
                format!("mirror {} ({} at {})", r.manifest, r.branch, r.head)
            } else {
                format!("mirror {} unchanged", r.manifest)
            },
            objects: r.objects_written,
            mirror: Some((fetched, max_age)),
            ..Default::default()
        })
    }

    /// Creation time (unix seconds) of each stack's newest point.
    /// Each stack whose store could be listed, with its newest point's time (`None`: no point).
    pub async fn newest_points(&self) -> Vec<(String, Option<f64>)> {
        let mut out = vec![];
        for (name, ctx) in &self.stacks {
            if let Ok(ids) = ctx.store.point_ids().await {
                out.push((name.clone(), ids.last().and_then(|id| point_time(id))));
            }
        }
        out
    }
}

/// The creation time encoded in a point id (`20261127T095330311Z-xxxxxxxx`).
pub fn point_time(id: &str) -> Option<f64> {
    let stamp = id.split('-').next()?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3fZ").ok()?;
    Some(t.and_utc().timestamp_millis() as f64 / 1000.0)
}

struct StoreHeld {
    lease: Option<Lease>,
    registry: Arc<Mutex<BTreeSet<(String, String)>>>,
    id: (String, String),
}

impl Held for StoreHeld {
    fn renew(&mut self, ttl: Duration) -> BoxFuture<'_, Result<bool>> {
        async move {
            match self.lease.as_mut() {
                Some(l) => l.renew(ttl).await,
                None => Ok(false),
            }
        }
        .boxed()
    }

    fn release(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        let lease = self.lease.take();
        let registry = self.registry.clone();
        let id = self.id.clone();
        async move {
            if let Some(l) = lease {
                if let Err(e) = l.release().await {
                    tracing::warn!(error = %e, "cannot release a job lease");
                }
            }
            registry.lock().expect("held").remove(&id);
        }
        .boxed()
    }
}

impl Backend for StoreBackend {
    fn job_failed(&self, job: &JobSpec, tick: DateTime<Utc>, error: &Error) {
        let (Some(alerter), Some(ctx)) = (&self.alerter, self.stacks.get(&job.stack)) else {
            return;
        };
        let tick = tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // A scheduled drill's failure is its own event (and only that one).
        let event = if job.job.starts_with("drill:") {
            "drill-failed"
        } else {
            "job-failed"
        };
        let mut a = Alert::new(
            event,
            &job.stack,
            format!("the scheduled {} of {tick} failed", job.job),
            &error.to_string(),
            format!("{}-{tick}", job.job),
            &self.holder,
        );
        a.job = Some(job.job.clone());
        alerter.raise(&ctx.policy.alerts, &ctx.store, a);
    }

    fn acquire<'a>(
        &'a self,
        job: &'a JobSpec,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Held>>>> {
        async move {
            let ctx = self.stack(job)?;
            let what = format!("drd daemon {} ({})", job.job, self.holder);
            match Lease::acquire(&ctx.store, &Self::lease_name(job), &what, ttl).await {
                Ok(lease) => {
                    let id = (ctx.store.bucket.clone(), lease.key().to_string());
                    self.held.lock().expect("held").insert(id.clone());
                    Ok(Some(Box::new(StoreHeld {
                        lease: Some(lease),
                        registry: self.held.clone(),
                        id,
                    }) as Box<dyn Held>))
                }
                Err(Error::LockHeld { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }

    fn last_tick<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Option<TickRecord>>> {
        async move {
            let ctx = self.stack(job)?;
            match ctx.store.get(&Self::tick_key(&ctx.store, job)).await? {
                None => Ok(None),
                Some(b) => Ok(serde_json::from_slice(&b).ok()),
            }
        }
        .boxed()
    }

    fn record_tick<'a>(
        &'a self,
        job: &'a JobSpec,
        rec: &'a TickRecord,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            let ctx = self.stack(job)?;
            let key = Self::tick_key(&ctx.store, job);
            let body = serde_json::to_vec_pretty(rec).expect("serializes");
            // Compare-and-swap: a record is replaced only by a higher token, or by its own
            // holder with the same token (a claim, then its outcome); never by a second claim
            // of the same token.
            for _ in 0..8 {
                let seen = ctx.store.get_versioned(&key).await?;
                if let Some((b, _)) = &seen {
                    if let Ok(cur) = serde_json::from_slice::<TickRecord>(b) {
                        let own = cur.token == rec.token && cur.holder == rec.holder;
                        if cur.token > rec.token || (cur.token == rec.token && !own) {
                            return Err(Error::failed(format!(
                                "{key}: {} holds token {} (ours {}): this run is fenced off",
                                cur.holder, cur.token, rec.token
                            )));
                        }
                    }
                }
                let etag = seen.as_ref().map(|(_, e)| e.as_str());
                if ctx.store.put_if(&key, &body, etag).await?.is_some() {
                    return Ok(());
                }
            }
            Err(Error::failed(format!("{key} kept changing")))
        }
        .boxed()
    }

    fn run<'a>(
        &'a self,
        job: &'a JobSpec,
        tick: DateTime<Utc>,
        token: u64,
    ) -> BoxFuture<'a, Result<Outcome>> {
        async move {
            let ctx = self.stack(job)?;
            let policy = &ctx.policy;
            let aws = self.aws.as_ref();
            let progress = |line: &str| tracing::debug!(stack = %policy.stack_name(), "{line}");
            match job.job.as_str() {
                "backup" => {
                    let scheduled = crate::backup::manifest::Scheduled {
                        job: job.job.clone(),
                        tick: tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        token,
                        daemon: self.holder.clone(),
                    };
                    let r = Box::pin(crate::backup::backup_scheduled(
                        aws,
                        policy,
                        &progress,
                        Some(scheduled),
                    ))
                    .await?;
                    Ok(Outcome {
                        detail: format!("point {} ({} new blob(s))", r.id, r.new_blobs),
                        bytes: r.new_bytes,
                        objects: r.objects_written,
                        newest_point: point_time(&r.id),
                        ..Default::default()
                    })
                }
                "verify" => {
                    let ids = match &policy.daemon.identity {
                        Some(p) => Some(Identities::from_file(std::path::Path::new(p))?),
                        None => None,
                    };
                    let mut cache = std::collections::HashMap::new();
                    let mut broken = vec![];
                    let points = ctx.store.point_ids().await?;
                    let current = policy.backup.recipient_names();
                    for id in &points {
                        let mut c = crate::backup::verify::verify_point(
                            &ctx.store,
                            id,
                            ids.as_ref(),
                            &mut cache,
                        )
                        .await?;
                        // A stale daemon identity fails the job (it used to, as a decryption
                        // problem); points made for older recipients do not.
                        crate::backup::verify::require_current(&mut c, &current);
                        if !c.ok {
                            broken.push(format!("{id}: {}", c.problems.join("; ")));
                        }
                    }
                    if broken.is_empty() {
                        Ok(Outcome {
                            detail: format!(
                                "{} point(s) verified{}",
                                points.len(),
                                if ids.is_some() {
                                    " (secrets decrypted)"
                                } else {
                                    " (structural)"
                                }
                            ),
                            ..Default::default()
                        })
                    } else {
                        Err(Error::failed(format!("verify: {}", broken.join(" | "))))
                    }
                }
                "mirror" => self.mirror_job(policy, &progress).await,
                "prune" => {
                    let r = crate::backup::prune::prune(
                        aws,
                        policy,
                        std::time::SystemTime::now(),
                        false,
                        // Fail closed: the job fails (and alerts) rather than guess.
                        crate::backup::prune::Unreadables::Stop,
                    )
                    .await?;
                    let gone = r.decisions.iter().filter(|d| !d.keep).count();
                    Ok(Outcome {
                        detail: format!(
                            "{gone} point(s) and {} blob(s) deleted",
                            r.blobs_deleted.len()
                        ),
                        ..Default::default()
                    })
                }
                other if other.starts_with("drill:") => {
                    let name = other.trim_start_matches("drill:");
                    self.drill_job(job, policy, name, &progress).await
                }
                other => {
                    let Some(name) = other.strip_prefix("runbook:") else {
                        return Err(Error::failed(format!("unknown job {other}")));
                    };
                    let rb = crate::runbook::load(self.runbooks.as_deref(), name)?;
                    let region = crate::store::active::active_region(aws, policy).await?;
                    let inputs = policy
                        .daemon
                        .schedule
                        .iter()
                        .find(|s| s.job.get_ref() == other)
                        .map(|s| s.inputs.clone())
                        .unwrap_or_default();
                    let actx = crate::actions::Ctx {
                        aws,
                        policy,
                        region,
                        store: ctx.store.clone(),
                        run_id: String::new(),
                        progress: &progress,
                        secret_value: None,
                    };
                    let opts = crate::runbook::exec::RunOptions {
                        inputs,
                        state_dir: self.state_dir.clone(),
                        ..Default::default()
                    };
                    let r = Box::pin(crate::runbook::exec::execute(&actx, &rb, &opts)).await?;
                    if r.outcome == "succeeded" {
                        Ok(Outcome {
                            detail: format!("run {} succeeded", r.run),
                            ..Default::default()
                        })
                    } else {
                        Err(Error::failed(format!(
                            "run {} {}: {}",
                            r.run,
                            r.outcome,
                            r.error.unwrap_or_default()
                        )))
                    }
                }
            }
        }
        .boxed()
    }
}

/// `3h 2m`, `45s`: an age in alerts.
fn human_secs(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0.0) as u64)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn point_ids_carry_their_time() {
        let t = super::point_time("20261127T095330311Z-10bc7c61").unwrap();
        assert_eq!(t, 1_795_773_210.311);
        assert_eq!(super::point_time("garbage"), None);
    }
}
