//! The scheduling rules with paused tokio time and an in-memory store: firing times, jitter
//! bounds, no overlap, catch-up after a gap, exactly once across daemons, takeover when the
//! holder dies, and renewal keeping a long run's lease.

use super::metrics::Metrics;
use super::scheduler::*;
use crate::error::Result;
use crate::schedule::Cron;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

#[derive(Debug, Clone)]
struct Run {
    who: String,
    tick: DateTime<Utc>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    token: u64,
}

#[derive(Default)]
struct Mem {
    leases: Mutex<HashMap<String, (String, Instant)>>,
    ticks: Mutex<HashMap<String, TickRecord>>,
    runs: Mutex<Vec<Run>>,
    run_time: Mutex<Duration>,
    /// The next this many runs fail (after their run time).
    fail_next: Mutex<u32>,
}

/// One daemon's view of the shared in-memory store.
struct View {
    mem: Arc<Mem>,
    who: String,
    clock: Arc<TokioClock>,
}

struct MemHeld {
    mem: Arc<Mem>,
    who: String,
    key: String,
}

impl Held for MemHeld {
    fn renew(&mut self, ttl: Duration) -> BoxFuture<'_, Result<bool>> {
        async move {
            let mut l = self.mem.leases.lock().unwrap();
            match l.get_mut(&self.key) {
                Some((w, exp)) if *w == self.who => {
                    *exp = Instant::now() + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        .boxed()
    }
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let mut l = self.mem.leases.lock().unwrap();
            if l.get(&self.key).is_some_and(|(w, _)| *w == self.who) {
                l.remove(&self.key);
            }
        }
        .boxed()
    }
}

impl Backend for View {
    fn acquire<'a>(
        &'a self,
        job: &'a JobSpec,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Held>>>> {
        async move {
            let mut l = self.mem.leases.lock().unwrap();
            let key = job.key();
            if let Some((w, exp)) = l.get(&key) {
                if *w != self.who && *exp > Instant::now() {
                    return Ok(None);
                }
            }
            l.insert(key.clone(), (self.who.clone(), Instant::now() + ttl));
            Ok(Some(Box::new(MemHeld {
                mem: self.mem.clone(),
                who: self.who.clone(),
                key,
            }) as Box<dyn Held>))
        }
        .boxed()
    }
    fn last_tick<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Option<TickRecord>>> {
        async move { Ok(self.mem.ticks.lock().unwrap().get(&job.key()).cloned()) }.boxed()
    }
    fn record_tick<'a>(
        &'a self,
        job: &'a JobSpec,
        rec: &'a TickRecord,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            // As the store's compare-and-swap: a higher token, or the same holder's own token.
            let mut t = self.mem.ticks.lock().unwrap();
            match t.get(&job.key()) {
                Some(c)
                    if c.token > rec.token || (c.token == rec.token && c.holder != rec.holder) =>
                {
                    Err(crate::error::Error::failed("fenced off"))
                }
                _ => {
                    t.insert(job.key(), rec.clone());
                    Ok(())
                }
            }
        }
        .boxed()
    }
    fn run<'a>(
        &'a self,
        _job: &'a JobSpec,
        tick: DateTime<Utc>,
        token: u64,
    ) -> BoxFuture<'a, Result<Outcome>> {
        async move {
            let idx = {
                let mut r = self.mem.runs.lock().unwrap();
                r.push(Run {
                    who: self.who.clone(),
                    tick,
                    start: self.clock.now(),
                    end: None,
                    token,
                });
                r.len() - 1
            };
            let d = *self.mem.run_time.lock().unwrap();
            tokio::time::sleep(d).await;
            self.mem.runs.lock().unwrap()[idx].end = Some(self.clock.now());
            let mut fail = self.mem.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(crate::error::Error::failed("injected failure"));
            }
            Ok(Outcome::default())
        }
        .boxed()
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn spec(cron: &str, jitter: Duration) -> JobSpec {
    JobSpec {
        stack: "s".into(),
        job: "backup".into(),
        cron: Cron::parse(cron, None).unwrap(),
        jitter,
    }
}

struct Daemon {
    handle: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

fn daemon(
    mem: &Arc<Mem>,
    who: &str,
    clock: &Arc<TokioClock>,
    job: JobSpec,
    ttl: Duration,
) -> Daemon {
    let (sched, tx, rx) = scheduler(mem, who, clock, ttl, 4);
    Daemon {
        handle: tokio::spawn(sched.job_loop(job, rx)),
        stop: tx,
    }
}

fn scheduler(
    mem: &Arc<Mem>,
    who: &str,
    clock: &Arc<TokioClock>,
    ttl: Duration,
    permits: usize,
) -> (Arc<Scheduler>, watch::Sender<bool>, watch::Receiver<bool>) {
    let sched = Arc::new(Scheduler {
        backend: Arc::new(View {
            mem: mem.clone(),
            who: who.into(),
            clock: clock.clone(),
        }),
        clock: clock.clone(),
        metrics: Arc::new(Metrics::default()),
        permits: Arc::new(Semaphore::new(permits)),
        ttl,
        holder: who.into(),
    });
    let (tx, rx) = watch::channel(false);
    (sched, tx, rx)
}

async fn stop(d: Daemon) {
    let _ = d.stop.send(true);
    let _ = d.handle.await;
}

fn runs(mem: &Mem) -> Vec<Run> {
    mem.runs.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn firings_happen_exactly_on_the_cron_times() {
    let mem = Arc::new(Mem::default());
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:05Z")));
    let d = daemon(
        &mem,
        "a",
        &clock,
        spec("*/10 * * * * *", Duration::ZERO),
        Duration::from_secs(6),
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    stop(d).await;
    let r = runs(&mem);
    let ticks: Vec<String> = r
        .iter()
        .map(|x| x.tick.format("%H:%M:%S").to_string())
        .collect();
    // First start with no record: the latest firing (10:00:00) is caught up at once.
    assert_eq!(
        ticks,
        ["10:00:00", "10:00:10", "10:00:20", "10:00:30", "10:00:40", "10:00:50", "10:01:00"]
    );
    assert_eq!(r[0].start, t("2026-11-27T10:00:05Z"));
    for x in &r[1..] {
        assert_eq!(x.start, x.tick, "{x:?}");
    }
    // Tokens increase by one per firing (fencing).
    let tokens: Vec<u64> = r.iter().map(|x| x.token).collect();
    assert_eq!(tokens, (1..=7).collect::<Vec<u64>>());
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_each_firing_within_its_bound() {
    let mem = Arc::new(Mem::default());
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00.500Z")));
    let jitter = Duration::from_secs(7);
    let d = daemon(
        &mem,
        "a",
        &clock,
        spec("*/10 * * * * *", jitter),
        Duration::from_secs(6),
    );
    tokio::time::sleep(Duration::from_secs(300)).await;
    stop(d).await;
    let r = runs(&mem);
    assert!(r.len() >= 29, "{}", r.len());
    let mut delays = std::collections::BTreeSet::new();
    for x in &r[1..] {
        let d = (x.start - x.tick).to_std().unwrap();
        assert!(d < jitter, "{x:?}");
        delays.insert(d.as_millis());
    }
    assert!(delays.len() > 10, "jitter varies per firing: {delays:?}");
}

#[tokio::test(start_paused = true)]
async fn a_run_longer_than_the_interval_never_overlaps_and_missed_firings_coalesce() {
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(25);
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:05Z")));
    let d = daemon(
        &mem,
        "a",
        &clock,
        spec("*/10 * * * * *", Duration::ZERO),
        Duration::from_secs(6),
    );
    tokio::time::sleep(Duration::from_secs(150)).await;
    stop(d).await;
    let r = runs(&mem);
    for w in r.windows(2) {
        assert!(w[0].end.unwrap() <= w[1].start, "overlap: {w:?}");
        assert!(w[0].tick < w[1].tick, "a firing ran twice: {w:?}");
    }
    // 150 s of 25 s runs: 6 runs, not one per missed firing (15).
    assert!((5..=7).contains(&r.len()), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn after_downtime_only_the_latest_missed_firing_runs_once() {
    let mem = Arc::new(Mem::default());
    mem.ticks.lock().unwrap().insert(
        "s/backup".into(),
        TickRecord {
            tick: "2026-11-27T09:00:00.000Z".into(),
            token: 41,
            outcome: "succeeded".into(),
            finished_at: "2026-11-27T09:00:01.000Z".into(),
            holder: "old".into(),
            catch_up: false,
            running: None,
        },
    );
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:35:00Z")));
    let d = daemon(
        &mem,
        "a",
        &clock,
        spec("0 */10 * * * *", Duration::ZERO),
        Duration::from_secs(6),
    );
    tokio::time::sleep(Duration::from_secs(6 * 60)).await;
    stop(d).await;
    let r = runs(&mem);
    let ticks: Vec<String> = r
        .iter()
        .map(|x| x.tick.format("%H:%M").to_string())
        .collect();
    // Nine firings were missed (09:10 .. 10:30): one catch-up run, then the schedule.
    assert_eq!(ticks, ["10:30", "10:40"]);
    assert_eq!(r[0].start, t("2026-11-27T10:35:00Z"));
    assert_eq!(r[0].token, 42);
    let rec = mem.ticks.lock().unwrap()["s/backup"].clone();
    assert_eq!(
        (rec.tick.as_str(), rec.token),
        ("2026-11-27T10:40:00.000Z", 43)
    );
}

#[tokio::test(start_paused = true)]
async fn two_daemons_run_every_firing_exactly_once() {
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_millis(1500);
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00.200Z")));
    let job = spec("*/5 * * * * *", Duration::from_secs(2));
    let a = daemon(&mem, "a", &clock, job.clone(), Duration::from_secs(6));
    let b = daemon(&mem, "b", &clock, job, Duration::from_secs(6));
    tokio::time::sleep(Duration::from_secs(200)).await;
    stop(a).await;
    stop(b).await;
    let r = runs(&mem);
    let mut ticks: Vec<DateTime<Utc>> = r.iter().map(|x| x.tick).collect();
    let n = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a firing ran twice: {r:?}");
    // Every firing from 10:00:00 through 10:03:15, none lost (10:03:20 may have started
    // just before the stop).
    let expected: Vec<DateTime<Utc>> = (0..=39)
        .map(|i| t("2026-11-27T10:00:00Z") + chrono::Duration::seconds(5 * i))
        .collect();
    assert!(ticks.len() <= 41, "{ticks:?}");
    assert_eq!(ticks[..40], expected[..]);
}

#[tokio::test(start_paused = true)]
async fn when_the_holder_dies_a_standby_takes_the_firing_over_within_the_ttl() {
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(8);
    let ttl = Duration::from_secs(6);
    // "a" starts first and takes the 10:00:00 firing; "b" stands by.
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00Z")));
    let job = spec("0 * * * * *", Duration::ZERO);
    let a = daemon(&mem, "a", &clock, job.clone(), ttl);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = daemon(&mem, "b", &clock, job, ttl);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SIGKILL-like: no release, no more renewals.
    a.handle.abort();
    let died = clock.now();
    tokio::time::sleep(Duration::from_secs(100)).await;
    stop(b).await;
    let r = runs(&mem);
    assert_eq!(r[0].who, "a");
    assert!(r[0].end.is_none(), "a was killed mid-run");
    let takeover = r
        .iter()
        .find(|x| x.who == "b" && x.tick == r[0].tick)
        .expect("b took it over");
    let waited = (takeover.start - died).to_std().unwrap();
    assert!(waited <= ttl + ttl / 3, "takeover after {waited:?}");
    assert!(takeover.token > r[0].token);
    // Then b runs the following firings; nothing ran twice.
    let mut ticks: Vec<DateTime<Utc>> = r
        .iter()
        .filter(|x| x.end.is_some())
        .map(|x| x.tick)
        .collect();
    let n = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), n);
    assert!(ticks.contains(&t("2026-11-27T10:01:00Z")));
}

#[tokio::test(start_paused = true)]
async fn renewal_keeps_a_long_run_from_being_taken_over() {
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(40);
    let ttl = Duration::from_secs(6);
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00Z")));
    let job = spec("0 0 * * * *", Duration::ZERO);
    let a = daemon(&mem, "a", &clock, job.clone(), ttl);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = daemon(&mem, "b", &clock, job, ttl);
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop(a).await;
    stop(b).await;
    let r = runs(&mem);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].who, "a");
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_across_stacks() {
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(3);
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00.500Z")));
    let sched = Arc::new(Scheduler {
        backend: Arc::new(View {
            mem: mem.clone(),
            who: "a".into(),
            clock: clock.clone(),
        }),
        clock: clock.clone(),
        metrics: Arc::new(Metrics::default()),
        permits: Arc::new(Semaphore::new(2)),
        ttl: Duration::from_secs(6),
        holder: "a".into(),
    });
    let (tx, rx) = watch::channel(false);
    let mut handles = vec![];
    for i in 0..5 {
        let mut j = spec("*/10 * * * * *", Duration::ZERO);
        j.stack = format!("stack-{i}");
        handles.push(tokio::spawn(sched.clone().job_loop(j, rx.clone())));
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let _ = tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let r = runs(&mem);
    assert!(r.len() >= 25, "{}", r.len());
    // At no moment were more than two runs in flight.
    let mut edges: Vec<(DateTime<Utc>, i32)> = vec![];
    for x in &r {
        edges.push((x.start, 1));
        edges.push((x.end.unwrap(), -1));
    }
    edges.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    assert_eq!(peak, 2, "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn a_firing_waiting_for_a_worker_is_never_run_twice() {
    // Daemon "a" has one worker, busy for 40 s with stack-1; stack-2's firing comes meanwhile.
    // Before, "a" took stack-2's lease and claimed the firing while queued for the worker, its
    // lease ran out unrenewed, standby "b" ran the firing, and "a" ran it again afterwards.
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(40);
    let ttl = Duration::from_secs(6);
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00.500Z")));
    let (a, a_tx, a_rx) = scheduler(&mem, "a", &clock, ttl, 1);
    let (b, b_tx, b_rx) = scheduler(&mem, "b", &clock, ttl, 4);
    let mut first = spec("0 * * * * *", Duration::ZERO);
    first.stack = "stack-1".into();
    let mut second = spec("5 * * * * *", Duration::ZERO);
    second.stack = "stack-2".into();
    let mut handles = vec![
        tokio::spawn(a.clone().job_loop(first.clone(), a_rx.clone())),
        tokio::spawn(a.clone().job_loop(second.clone(), a_rx)),
    ];
    tokio::time::sleep(Duration::from_millis(10)).await;
    handles.push(tokio::spawn(b.clone().job_loop(second, b_rx)));
    tokio::time::sleep(Duration::from_secs(150)).await;
    let _ = a_tx.send(true);
    let _ = b_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let r = runs(&mem);
    // stack-2's firings: each ran once, in firing order (none ran after a newer one had run,
    // which is what a claim left waiting in the queue past its TTL did).
    let second: Vec<&Run> = r
        .iter()
        .filter(|x| x.tick.format("%S").to_string() == "05")
        .collect();
    assert!(second.len() >= 2, "stack-2's firings ran: {r:?}");
    for w in second.windows(2) {
        assert!(
            w[0].tick < w[1].tick,
            "stack-2's firing {} ran after {} (or twice): {r:?}",
            w[1].tick,
            w[0].tick
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_lease_is_lost_is_cancelled_and_not_recorded() {
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(40);
    let ttl = Duration::from_secs(6);
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00.500Z")));
    let job = spec("0 0 * * * *", Duration::ZERO);
    // The start-up catch-up runs the 10:00 firing; ten seconds in, someone else takes the lease.
    let a = daemon(&mem, "a", &clock, job.clone(), ttl);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(runs(&mem).len(), 1);
    mem.leases.lock().unwrap().insert(
        job.key(),
        ("thief".into(), Instant::now() + Duration::from_secs(600)),
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    stop(a).await;
    let r = runs(&mem);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].end.is_none(), "the run was cancelled mid-way: {r:?}");
    let rec = mem.ticks.lock().unwrap().get(&job.key()).cloned().unwrap();
    assert_eq!(
        rec.running.as_deref(),
        Some("2026-11-27T10:00:00.000Z"),
        "claimed, never recorded as done: {rec:?}"
    );
    assert_eq!(rec.outcome, "");
}

#[tokio::test(start_paused = true)]
async fn a_failed_firing_is_retried_within_its_window_and_recorded_once() {
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(1);
    *mem.fail_next.lock().unwrap() = 2;
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00.500Z")));
    let job = spec("0 0 * * * *", Duration::ZERO);
    let a = daemon(&mem, "a", &clock, job.clone(), Duration::from_secs(6));
    // The start-up catch-up runs the 10:00 firing.
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop(a).await;
    let r = runs(&mem);
    let eleven: Vec<&Run> = r
        .iter()
        .filter(|x| x.tick == t("2026-11-27T10:00:00Z"))
        .collect();
    assert_eq!(eleven.len(), 3, "two failures, then a success: {r:?}");
    // Backoff: 10 s, then 20 s (each after the 1 s run).
    let gap = |i: usize| (eleven[i + 1].start - eleven[i].end.unwrap()).num_seconds();
    assert_eq!((gap(0), gap(1)), (10, 20));
    let rec = mem.ticks.lock().unwrap().get(&job.key()).cloned().unwrap();
    assert_eq!(rec.outcome, "succeeded");
    assert!(
        eleven.iter().all(|x| x.token == eleven[0].token),
        "one claim, one token"
    );
    // A firing whose retries would run into the next firing gives up: with a one-minute
    // schedule a failure is not retried past the next firing.
    let mem = Arc::new(Mem::default());
    *mem.run_time.lock().unwrap() = Duration::from_secs(1);
    *mem.fail_next.lock().unwrap() = 100;
    let clock = Arc::new(TokioClock::new(t("2026-11-27T10:00:00.500Z")));
    let job = spec("0 * * * * *", Duration::ZERO);
    let a = daemon(&mem, "a", &clock, job.clone(), Duration::from_secs(6));
    tokio::time::sleep(Duration::from_secs(200)).await;
    stop(a).await;
    let r = runs(&mem);
    for x in &r {
        assert!(
            x.start < x.tick + chrono::Duration::seconds(60),
            "a retry ran into the next firing: {x:?}"
        );
    }
    let rec = mem.ticks.lock().unwrap().get(&job.key()).cloned().unwrap();
    assert_eq!(rec.outcome, "failed");
}

#[test]
fn a_directory_of_policies_loads_sorted_and_refuses_a_stack_twice() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |name: &str| {
        format!(
            "[stack]\nname = \"{name}\"\nprimary_region = \"us-east-1\"\ntemplate = \"t.yaml\"\nfunction_name = \"f\"\n\
             [artifacts]\nbucket_prefix = \"a-{name}\"\n[backup]\nbucket = \"b-{name}\"\nregion = \"us-west-2\"\n\
             recipients = [\"age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k\"]\n\
             [[daemon.schedule]]\njob = \"backup\"\ncron = \"0 0 * * * *\"\n"
        )
    };
    std::fs::write(dir.path().join("b.toml"), policy("two")).unwrap();
    std::fs::write(dir.path().join("a.toml"), policy("one")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    let ps = super::load_policies(dir.path()).unwrap();
    let names: Vec<&str> = ps.iter().map(|p| p.stack_name()).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(super::jobs(&ps).unwrap().len(), 2);
    assert_eq!(
        super::listen_addr(&ps, None).unwrap().to_string(),
        crate::policy::DEFAULT_LISTEN
    );
    std::fs::write(dir.path().join("c.toml"), policy("one")).unwrap();
    let e = super::load_policies(dir.path()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("also protected by"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(super::load_policies(empty.path())
        .unwrap_err()
        .to_string()
        .contains("no *.toml"));
}
