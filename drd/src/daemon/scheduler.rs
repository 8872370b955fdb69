//! The scheduling core, independent of AWS: one loop per (stack, job) that sleeps until the
//! next firing (plus its jitter), then competes for the job's lease and runs the job once for
//! that firing.
//!
//! Rules:
//! - **Exactly once per firing** across any number of daemons: the job's lease decides who
//!   runs, and the store's tick record (`daemon/<job>.json`: the last firing run, with its
//!   fencing token) tells a daemon that got the lease later that the firing is already done.
//! - **Takeover**: a daemon that finds the lease held waits as a standby, retrying every third
//!   of the TTL; if the holder dies, its lease expires (or, on the same host, is seen dead at
//!   once) and the standby runs the firing. The firing is lost only if a newer firing arrives
//!   first, which then supersedes it.
//! - **No overlap**: each loop is sequential, and the lease keeps daemons apart.
//! - **Catch-up, not a burst**: after downtime (or a run longer than the interval) only the
//!   latest missed firing runs, once.
//! - **Bounded concurrency**: a semaphore shared by every stack and job, taken *before* the
//!   lease, so a claimed firing never waits in a queue while its lease runs out.
//! - **Cancel on loss**: a run whose lease renewal fails is dropped at its next await and its
//!   firing is not recorded; the new holder decides it.
//! - **Retries**: a failed run is retried with doubling backoff while the retry still starts
//!   before the next firing (at most `MAX_RUN_ATTEMPTS` runs); the outcome is recorded once.
//! - **Fencing**: each run takes the token after the tick record's, and what it writes carries
//!   it; the tick record changes only by compare-and-swap (`If-Match`), to a higher token or to
//!   the same holder's outcome, so two daemons can never claim one token. The claim is made
//!   within a third of the TTL of taking the lease, before which nobody can take it over.

use super::metrics::Metrics;
use crate::error::Result;
use crate::schedule::{self, Cron};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// A failed firing is retried after this (then doubling), inside its window.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// Runs of one firing at most (the first and its retries).
pub const MAX_RUN_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub stack: String,
    /// `backup`, `verify`, `prune`, `runbook:NAME`.
    pub job: String,
    pub cron: Cron,
    pub jitter: Duration,
}

impl JobSpec {
    pub fn key(&self) -> String {
        format!("{}/{}", self.stack, self.job)
    }

    /// The moment firing `tick` runs.
    pub fn fire_at(&self, tick: DateTime<Utc>) -> DateTime<Utc> {
        schedule::add(
            tick,
            schedule::jitter(self.jitter, &self.stack, &self.job, tick),
        )
    }
}

/// A job's record in the store: the last firing that ran to the end (whatever its outcome),
/// the highest fencing token ever issued, and the firing being run now, if any.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TickRecord {
    /// RFC 3339 of the last finished firing (the scheduled time, not the jittered start).
    pub tick: String,
    /// The highest fencing token issued for this job; a run takes this plus one and claims it
    /// here before it starts, so a takeover always holds a higher token than a dead holder.
    pub token: u64,
    pub outcome: String,
    pub finished_at: String,
    pub holder: String,
    pub catch_up: bool,
    /// The firing a holder has claimed and not finished (a crash leaves it here; the next
    /// start runs it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}

impl TickRecord {
    pub fn tick_time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.tick)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What a job run reports.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub detail: String,
    pub bytes: u64,
    pub objects: u64,
    /// Creation time (unix seconds) of a recovery point the run made or found.
    pub newest_point: Option<f64>,
    /// A mirror run: its fetch time (unix seconds) and the staleness threshold (seconds).
    pub mirror: Option<(f64, f64)>,
}

/// A held job lease.
pub trait Held: Send {
    /// Extend it; `Ok(false)` when it was lost.
    fn renew(&mut self, ttl: Duration) -> BoxFuture<'_, Result<bool>>;
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Where leases, tick records and job runs come from (the store and AWS, or a test double).
pub trait Backend: Send + Sync + 'static {
    /// Take the job's lease; `Ok(None)` when another daemon holds it.
    fn acquire<'a>(
        &'a self,
        job: &'a JobSpec,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Held>>>>;
    fn last_tick<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Option<TickRecord>>>;
    /// Write the record unless the stored one has a higher token.
    fn record_tick<'a>(
        &'a self,
        job: &'a JobSpec,
        rec: &'a TickRecord,
    ) -> BoxFuture<'a, Result<()>>;
    fn run<'a>(
        &'a self,
        job: &'a JobSpec,
        tick: DateTime<Utc>,
        token: u64,
    ) -> BoxFuture<'a, Result<Outcome>>;
    /// A firing this daemon ran failed after its retries (the real backend raises an alert).
    fn job_failed(&self, _job: &JobSpec, _tick: DateTime<Utc>, _error: &crate::error::Error) {}
}

/// Wall time for the scheduler: real UTC in production, a tokio-driven clock in tests (so
/// paused time moves it).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// `base` plus the tokio time elapsed since creation.
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(base: DateTime<Utc>) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        schedule::add(self.base, self.start.elapsed())
    }
}

/// Sleep until `t` on `clock`, in steps of at most a minute (so a wall clock that jumps is
/// followed); `false` when `stop` turned true first.
pub async fn sleep_until(
    clock: &dyn Clock,
    t: DateTime<Utc>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        let now = clock.now();
        if now >= t {
            return true;
        }
        let d = (t - now)
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
    }
}

pub struct Scheduler {
    pub backend: Arc<dyn Backend>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub permits: Arc<Semaphore>,
    pub ttl: Duration,
    pub holder: String,
}

impl Scheduler {
    /// Run one job's schedule until `stop`.
    pub async fn job_loop(self: Arc<Self>, job: JobSpec, mut stop: watch::Receiver<bool>) {
        let now = self.clock.now();
        // Catch-up at start: the latest firing since the last one recorded (or within the
        // look-back when there is no record), once.
        let last = match self.backend.last_tick(&job).await {
            Ok(r) => r.and_then(|r| r.tick_time()),
            Err(e) => {
                tracing::warn!(job = %job.key(), error = %e, "cannot read the tick record");
                None
            }
        };
        let from =
            last.unwrap_or(now - chrono::Duration::days(schedule::FIRST_START_LOOKBACK_DAYS));
        let mut cursor = now;
        if let Some(missed) = job.cron.latest_in(from, now) {
            tracing::info!(job = %job.key(), tick = %missed, "catching up on a missed firing");
            self.attempt(&job, missed, true, &mut stop).await;
        }
        loop {
            let Some(tick) = job.cron.next_after(cursor) else {
                tracing::info!(job = %job.key(), "the schedule never fires again");
                return;
            };
            if !sleep_until(self.clock.as_ref(), job.fire_at(tick), &mut stop).await {
                return;
            }
            self.attempt(&job, tick, false, &mut stop).await;
            cursor = tick;
            // Firings that passed while this one ran: the latest of them runs once.
            let now = self.clock.now();
            if let Some(missed) = job.cron.latest_in(cursor, now) {
                if *stop.borrow() {
                    return;
                }
                self.attempt(&job, missed, true, &mut stop).await;
                cursor = missed;
            }
        }
    }

    /// Another daemon runs `tick`: stand by until it is done, it dies (its lease expires), or
    /// the next firing supersedes this one. True when the firing is still to compete for.
    async fn stand_by(
        &self,
        job: &JobSpec,
        tick: DateTime<Utc>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let next = job.cron.next_after(tick).map(|n| job.fire_at(n));
        let wake = schedule::add(self.clock.now(), self.ttl / 3);
        if next.is_some_and(|n| n <= wake) {
            return false;
        }
        if !sleep_until(self.clock.as_ref(), wake, stop).await {
            return false;
        }
        match self.backend.last_tick(job).await {
            Ok(Some(r)) if r.tick_time().is_some_and(|t| t >= tick) => {
                self.metrics
                    .with(&job.stack, &job.job, |s| s.done_elsewhere += 1);
                self.metrics.refresh.notify_one();
                false
            }
            _ => true,
        }
    }

    /// Compete for firing `tick` and run it if nobody has.
    pub async fn attempt(
        &self,
        job: &JobSpec,
        tick: DateTime<Utc>,
        catch_up: bool,
        stop: &mut watch::Receiver<bool>,
    ) {
        let (stack, name) = (job.stack.as_str(), job.job.as_str());
        loop {
            if *stop.borrow() {
                return;
            }
            // A worker slot first: a firing is claimed only when it can start at once, so a
            // claim never waits in a queue while its lease runs out.
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore");
            let held = match self.backend.acquire(job, self.ttl).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(job = %job.key(), error = %e, "cannot take the job lease");
                    self.metrics.with(stack, name, |s| s.failed += 1);
                    return;
                }
            };
            let Some(held) = held else {
                drop(permit);
                if self.stand_by(job, tick, stop).await {
                    continue;
                }
                return;
            };
            self.claim_and_run(job, tick, catch_up, held, stop).await;
            return;
        }
    }

    /// Holding the lease: check the firing is still to run, claim it with the next token, run
    /// it (retried with backoff inside its window) while renewing the lease, and record it.
    async fn claim_and_run(
        &self,
        job: &JobSpec,
        tick: DateTime<Utc>,
        catch_up: bool,
        mut held: Box<dyn Held>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let (stack, name) = (job.stack.as_str(), job.job.as_str());
        // Until the renewer starts, the lease is only as good as its first write: reading the
        // record and claiming the firing must finish well inside the TTL (the claim itself is a
        // compare-and-swap that refuses a token already claimed).
        let last = match tokio::time::timeout(self.ttl / 3, self.backend.last_tick(job)).await {
            Ok(Ok(r)) => r,
            Err(_) => {
                tracing::warn!(job = %job.key(), "reading the tick record took too long; not claiming");
                held.release().await;
                self.metrics.with(stack, name, |s| s.failed += 1);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(job = %job.key(), error = %e, "cannot read the tick record");
                held.release().await;
                self.metrics.with(stack, name, |s| s.failed += 1);
                return;
            }
        };
        if last
            .as_ref()
            .and_then(|r| r.tick_time())
            .is_some_and(|t| t >= tick)
        {
            held.release().await;
            self.metrics.with(stack, name, |s| s.done_elsewhere += 1);
            self.metrics.refresh.notify_one();
            return;
        }
        let token = last.as_ref().map(|r| r.token).unwrap_or(0) + 1;
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Claim the firing (and the token) before running it.
        let claim = TickRecord {
            tick: last.as_ref().map(|r| r.tick.clone()).unwrap_or_default(),
            token,
            outcome: last.as_ref().map(|r| r.outcome.clone()).unwrap_or_default(),
            finished_at: last
                .as_ref()
                .map(|r| r.finished_at.clone())
                .unwrap_or_default(),
            holder: self.holder.clone(),
            catch_up,
            running: Some(fmt(tick)),
        };
        let claimed =
            tokio::time::timeout(self.ttl / 3, self.backend.record_tick(job, &claim)).await;
        if let Err(e) = claimed.unwrap_or_else(|_| Err(crate::error::Error::failed("timed out"))) {
            tracing::warn!(job = %job.key(), error = %e, "cannot claim the firing");
            held.release().await;
            self.metrics.with(stack, name, |s| s.failed += 1);
            return;
        }
        self.metrics.with(stack, name, |s| s.lease_held = true);
        tracing::info!(job = %job.key(), tick = %tick, token, catch_up, "running");
        let started = tokio::time::Instant::now();
        let ttl = self.ttl;
        // Renew every third of the TTL while the job runs. A lease found taken ends the run; a
        // renewal that fails (the store did not answer) is tried again at the next beat, until
        // the lease would have expired.
        let renewer = async {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(ttl / 3).await;
                match tokio::time::timeout(ttl / 3, held.renew(ttl)).await {
                    Ok(Ok(true)) => renewed = tokio::time::Instant::now(),
                    Ok(Ok(false)) => return "the lease was taken over".to_string(),
                    Ok(Err(e)) if renewed.elapsed() >= ttl => {
                        return format!("the lease could not be renewed before it expired: {e}")
                    }
                    Err(_) if renewed.elapsed() >= ttl => {
                        return "the lease could not be renewed before it expired (timeout)".into()
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(job = %job.key(), error = %e, "lease renewal failed; retrying")
                    }
                    Err(_) => tracing::warn!(job = %job.key(), "lease renewal timed out; retrying"),
                }
            }
        };
        let ended = tokio::select! {
            r = self.run_with_retries(job, tick, token, stop) => Ok(r),
            why = renewer => Err(why),
        };
        let secs = started.elapsed().as_secs_f64();
        self.metrics.observe_duration(stack, name, secs);
        let result = match ended {
            Ok(r) => r,
            Err(why) => {
                // Cancelled (dropped at its next await): whoever holds the lease now decides
                // the firing; nothing is recorded from here.
                tracing::warn!(job = %job.key(), tick = %tick, %why, "lease lost: the run was cancelled and the firing is not recorded");
                self.metrics.with(stack, name, |s| {
                    s.lease_lost += 1;
                    s.lease_held = false;
                });
                held.release().await;
                return;
            }
        };
        // A run cut short by shutdown or a reload is not an outage to page anyone about.
        let alert = !*stop.borrow();
        self.count_outcome(job, tick, catch_up, secs, &result, alert);
        let rec = TickRecord {
            tick: fmt(tick),
            token,
            outcome: if result.is_ok() {
                "succeeded"
            } else {
                "failed"
            }
            .into(),
            finished_at: fmt(self.clock.now()),
            holder: self.holder.clone(),
            catch_up,
            running: None,
        };
        // The tick record is what tells the other daemons this firing is done: a transient
        // failure to write it (a throttled or dropped request) is retried before the lease goes,
        // or another daemon would run the firing again.
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=6 {
            match self.backend.record_tick(job, &rec).await {
                Ok(()) => break,
                Err(e) if attempt < 6 && e.retry() == crate::error::Retry::Transient => {
                    tracing::warn!(job = %job.key(), attempt, error = %e, "cannot write the tick record; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(job = %job.key(), error = %e, "cannot write the tick record");
                    break;
                }
            }
        }
        held.release().await;
        self.metrics.with(stack, name, |s| s.lease_held = false);
    }

    /// Run the firing; a failure is retried after `RETRY_BACKOFF` (doubling), up to
    /// `MAX_RUN_ATTEMPTS` runs, while the retry still starts before the job's next firing.
    async fn run_with_retries(
        &self,
        job: &JobSpec,
        tick: DateTime<Utc>,
        token: u64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Outcome> {
        let next_firing = job.cron.next_after(tick).map(|n| job.fire_at(n));
        let mut backoff = RETRY_BACKOFF;
        for attempt in 1.. {
            let r = self.backend.run(job, tick, token).await;
            let Err(e) = &r else { return r };
            let retry_at = schedule::add(self.clock.now(), backoff);
            if attempt >= MAX_RUN_ATTEMPTS || next_firing.is_some_and(|n| retry_at >= n) {
                return r;
            }
            tracing::warn!(job = %job.key(), tick = %tick, attempt, error = %e, retry_in = ?backoff, "failed; retrying");
            self.metrics.with(&job.stack, &job.job, |s| s.retries += 1);
            if !sleep_until(self.clock.as_ref(), retry_at, stop).await {
                return r;
            }
            backoff *= 2;
        }
        unreachable!("the loop returns")
    }

    fn count_outcome(
        &self,
        job: &JobSpec,
        tick: DateTime<Utc>,
        catch_up: bool,
        secs: f64,
        result: &Result<Outcome>,
        alert: bool,
    ) {
        let (stack, name) = (job.stack.as_str(), job.job.as_str());
        match result {
            Ok(o) => {
                tracing::info!(job = %job.key(), tick = %tick, secs, detail = %o.detail, "succeeded");
                let now = self.clock.now().timestamp_millis() as f64 / 1000.0;
                self.metrics.with(stack, name, |s| {
                    s.succeeded += 1;
                    s.last_success = Some(now);
                    s.bytes_written += o.bytes;
                    s.objects_written += o.objects;
                    if catch_up {
                        s.catch_ups += 1;
                    }
                });
                if let Some(p) = o.newest_point {
                    self.metrics.set_newest_point(stack, p);
                }
                if let Some((fetched, max_age)) = o.mirror {
                    // Just fetched: nothing behind the remote.
                    self.metrics.set_mirror(stack, fetched, Some(0), max_age);
                }
            }
            Err(e) => {
                tracing::warn!(job = %job.key(), tick = %tick, error = %e, "failed");
                self.metrics.with(stack, name, |s| s.failed += 1);
                if alert {
                    self.backend.job_failed(job, tick, e);
                }
            }
        }
    }
}
