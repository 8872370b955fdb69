//! The daemon's metrics: counted here, exposed with `prometheus-client` (OpenMetrics text, or
//! the Prometheus text format 0.0.4 for scrapers that do not ask for OpenMetrics).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the job duration histogram.
pub const BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Debug, Default, Clone)]
pub struct JobStats {
    pub succeeded: u64,
    pub failed: u64,
    /// Firings another daemon had already run (seen through the tick record).
    pub done_elsewhere: u64,
    /// Runs for firings missed while no daemon ran (after downtime or a long run).
    pub catch_ups: u64,
    pub lease_lost: u64,
    /// Failed runs retried within their firing's window.
    pub retries: u64,
    pub bucket_counts: Vec<u64>,
    pub duration_sum: f64,
    pub duration_count: u64,
    pub last_success: Option<f64>,
    pub bytes_written: u64,
    pub objects_written: u64,
    pub lease_held: bool,
}

/// (last fetch in unix seconds, commits behind when known, staleness threshold in seconds).
type MirrorGauge = (f64, Option<u64>, f64);

pub struct Metrics {
    /// Job durations (a histogram keeps its own buckets).
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    jobs: Mutex<BTreeMap<(String, String), JobStats>>,
    /// Stack -> creation time (unix seconds) of its newest recovery point.
    newest_point: Mutex<BTreeMap<String, f64>>,
    /// Stack -> the source mirror's last fetch (unix seconds), commits behind the remote when
    /// known, and the staleness threshold (seconds).
    mirror: Mutex<BTreeMap<String, MirrorGauge>>,
    /// Unix milliseconds of the scheduler's last heartbeat.
    pub heartbeat_ms: AtomicI64,
    pub reloads: Mutex<(u64, u64)>,
    /// (stack, event, sink, outcome) -> alerts.
    alerts: Mutex<BTreeMap<(String, String, String, String), u64>>,
    /// (stack, event, key) of the alerts this daemon raised or is raising: a condition that
    /// lasts is claimed in the store once, not at every check (kept across reloads).
    pub raised: Mutex<std::collections::BTreeSet<(String, String, String)>>,
    /// (stack, drill) -> (runs by outcome, the last measured RTO in seconds).
    drills: Mutex<BTreeMap<(String, String), DrillStats>>,
    /// Stacks whose store listing succeeded at the last refresh (no point there means none).
    pub listed: Mutex<std::collections::BTreeSet<String>>,
    /// Wakes the refresh of the store-read gauges (newest point, mirror fetch) early: when
    /// another daemon ran a firing, this one's gauges must still show its result.
    pub refresh: tokio::sync::Notify,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            durations: Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied())),
            jobs: Mutex::default(),
            newest_point: Mutex::default(),
            mirror: Mutex::default(),
            heartbeat_ms: AtomicI64::default(),
            reloads: Mutex::default(),
            alerts: Mutex::default(),
            raised: Mutex::default(),
            drills: Mutex::default(),
            listed: Mutex::default(),
            refresh: tokio::sync::Notify::new(),
        }
    }

    pub fn with<R>(&self, stack: &str, job: &str, f: impl FnOnce(&mut JobStats) -> R) -> R {
        let mut m = self.jobs.lock().expect("metrics");
        let e = m
            .entry((stack.to_string(), job.to_string()))
            .or_insert_with(|| JobStats {
                bucket_counts: vec![0; BUCKETS.len()],
                ..Default::default()
            });
        f(e)
    }

    pub fn observe_duration(&self, stack: &str, job: &str, secs: f64) {
        self.with(stack, job, |s| {
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    s.bucket_counts[i] += 1;
                }
            }
            s.duration_sum += secs;
            s.duration_count += 1;
        });
        self.durations
            .get_or_create(&vec![
                ("stack".to_string(), stack.to_string()),
                ("job".to_string(), job.to_string()),
            ])
            .observe(secs);
    }

    pub fn set_newest_point(&self, stack: &str, unix_secs: f64) {
        let mut m = self.newest_point.lock().expect("metrics");
        let e = m.entry(stack.to_string()).or_insert(unix_secs);
        if unix_secs > *e {
            *e = unix_secs;
        }
    }

    /// Record the mirror's freshness; `behind: None` keeps the last known count.
    pub fn set_mirror(&self, stack: &str, fetched: f64, behind: Option<u64>, max_age: f64) {
        let mut m = self.mirror.lock().expect("metrics");
        let e = m
            .entry(stack.to_string())
            .or_insert((fetched, behind, max_age));
        // A count describes its fetch: an older fetch's never replaces a newer one's.
        if fetched >= e.0 {
            e.0 = fetched;
            if behind.is_some() {
                e.1 = behind;
            }
        }
        e.2 = max_age;
    }

    pub fn newest_point(&self, stack: &str) -> Option<f64> {
        self.newest_point
            .lock()
            .expect("metrics")
            .get(stack)
            .copied()
    }

    /// The mirror's last fetch (unix seconds) and staleness threshold (seconds).
    pub fn mirror(&self, stack: &str) -> Option<(f64, f64)> {
        self.mirror
            .lock()
            .expect("metrics")
            .get(stack)
            .map(|(t, _, max)| (*t, *max))
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), JobStats> {
        self.jobs.lock().expect("metrics").clone()
    }

    pub fn count_alert(&self, stack: &str, event: &str, sink: &str, outcome: &str) {
        *self
            .alerts
            .lock()
            .expect("metrics")
            .entry((stack.into(), event.into(), sink.into(), outcome.into()))
            .or_default() += 1;
    }

    /// A scheduled drill's result.
    pub fn record_drill(&self, stack: &str, drill: &str, outcome: &str, rto: Option<f64>) {
        let mut m = self.drills.lock().expect("metrics");
        let e = m.entry((stack.into(), drill.into())).or_default();
        *e.0.entry(outcome.into()).or_default() += 1;
        if rto.is_some() {
            e.1 = rto;
        }
    }

    pub fn beat(&self, now_ms: i64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The exposition at `now` (unix seconds): OpenMetrics text (`openmetrics: true`), else the
    /// Prometheus text format 0.0.4 derived from it (see `classic_text`).
    pub fn render(&self, now: f64, stacks: &[String], openmetrics: bool) -> String {
        let reg = self.registry(now, stacks);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
        if openmetrics {
            out
        } else {
            classic_text(&out)
        }
    }

    /// A registry holding this moment's values (built per scrape from the daemon's counts).
    fn registry(&self, now: f64, stacks: &[String]) -> Registry {
        let jobs = self.snapshot();
        let mut reg = Registry::default();
        let job = |s: &str, j: &str| {
            vec![
                ("stack".to_string(), s.to_string()),
                ("job".to_string(), j.to_string()),
            ]
        };
        let counters =
            |reg: &mut Registry, name: &str, help: &str, f: &dyn Fn(&JobStats) -> u64| {
                let fam = Family::<Labels, Counter>::default();
                for ((s, j), st) in &jobs {
                    fam.get_or_create(&job(s, j)).inc_by(f(st));
                }
                reg.register(name, help, fam);
            };
        let runs = Family::<Labels, Counter>::default();
        for ((s, j), st) in &jobs {
            for (outcome, n) in [("succeeded", st.succeeded), ("failed", st.failed)] {
                let mut l = job(s, j);
                l.push(("outcome".into(), outcome.into()));
                runs.get_or_create(&l).inc_by(n);
            }
        }
        reg.register("drd_job_runs", "Job runs by this daemon, by outcome", runs);
        counters(&mut reg, "drd_job_failures", "Job runs that failed", &|s| {
            s.failed
        });
        counters(
            &mut reg,
            "drd_job_done_elsewhere",
            "Firings another daemon had already run",
            &|s| s.done_elsewhere,
        );
        counters(
            &mut reg,
            "drd_job_catch_ups",
            "Runs for firings missed while no daemon ran (one per gap, never a burst)",
            &|s| s.catch_ups,
        );
        counters(
            &mut reg,
            "drd_job_lease_lost",
            "Runs whose lease was lost before they finished (they were cancelled)",
            &|s| s.lease_lost,
        );
        counters(
            &mut reg,
            "drd_job_retries",
            "Failed runs retried within their firing's window",
            &|s| s.retries,
        );
        reg.register(
            "drd_job_duration_seconds",
            "Job run durations",
            self.durations.clone(),
        );
        let gauges = |reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, f64)>| {
            let fam = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            for (l, v) in rows {
                fam.get_or_create(&l).set(v);
            }
            reg.register(name, help, fam);
        };
        gauges(
            &mut reg,
            "drd_job_last_success_timestamp_seconds",
            "When the job last succeeded on this daemon (unix time)",
            jobs.iter()
                .filter_map(|((s, j), st)| st.last_success.map(|t| (job(s, j), t)))
                .collect(),
        );
        counters(
            &mut reg,
            "drd_bytes_written",
            "Bytes of new blobs written to the store by this daemon's jobs",
            &|s| s.bytes_written,
        );
        counters(
            &mut reg,
            "drd_objects_written",
            "Objects written to the store by this daemon's jobs",
            &|s| s.objects_written,
        );
        gauges(
            &mut reg,
            "drd_lease_held",
            "1 while this daemon holds the job's lease",
            jobs.iter()
                .map(|((s, j), st)| (job(s, j), f64::from(u8::from(st.lease_held))))
                .collect(),
        );
        let stack = |s: &str| vec![("stack".to_string(), s.to_string())];
        let points = self.newest_point.lock().expect("metrics").clone();
        gauges(
            &mut reg,
            "drd_rpo_age_seconds",
            "Age of the stack's newest recovery point (the recovery point objective in force)",
            stacks
                .iter()
                .filter_map(|s| points.get(s).map(|t| (stack(s), (now - t).max(0.0))))
                .collect(),
        );
        let (ok, rejected) = *self.reloads.lock().expect("metrics");
        let reloads = Family::<Labels, Counter>::default();
        reloads
            .get_or_create(&vec![("result".into(), "applied".into())])
            .inc_by(ok);
        reloads
            .get_or_create(&vec![("result".into(), "rejected".into())])
            .inc_by(rejected);
        reg.register("drd_policy_reloads", "SIGHUP reloads, by result", reloads);
        self.register_mirror_and_alerts(&mut reg, now);
        reg
    }

    /// The source mirror's freshness gauges and the alert counts.
    fn register_mirror_and_alerts(&self, reg: &mut Registry, now: f64) {
        let stack = |s: &str| vec![("stack".to_string(), s.to_string())];
        let gauges = |reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, f64)>| {
            let fam = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            for (l, v) in rows {
                fam.get_or_create(&l).set(v);
            }
            reg.register(name, help, fam);
        };
        let mirror = self.mirror.lock().expect("metrics").clone();
        gauges(
            reg,
            "drd_mirror_age_seconds",
            "Time since the source mirror's last successful fetch (the CI recovery point objective)",
            mirror.iter().map(|(s, (t, _, _))| (stack(s), (now - t).max(0.0))).collect(),
        );
        gauges(
            reg,
            "drd_mirror_commits_behind",
            "Commits the remote's deploy branch has that the mirror does not (0 right after a fetch)",
            mirror.iter().filter_map(|(s, (_, b, _))| b.map(|b| (stack(s), b as f64))).collect(),
        );
        gauges(
            reg,
            "drd_mirror_stale",
            "1 when the mirror's last fetch is older than [ci] mirror_max_age (alert on it)",
            mirror
                .iter()
                .map(|(s, (t, _, max))| (stack(s), f64::from(u8::from(now - t > *max))))
                .collect(),
        );
        let alerts = Family::<Labels, Counter>::default();
        for ((s, e, k, o), n) in self.alerts.lock().expect("metrics").iter() {
            let l = vec![
                ("stack".to_string(), s.clone()),
                ("event".to_string(), e.clone()),
                ("sink".to_string(), k.clone()),
                ("outcome".to_string(), o.clone()),
            ];
            alerts.get_or_create(&l).inc_by(*n);
        }
        let runs = Family::<Labels, Counter>::default();
        let rto = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for ((stack, drill), (outcomes, last)) in self.drills.lock().expect("metrics").iter() {
            let l = vec![
                ("stack".to_string(), stack.clone()),
                ("drill".to_string(), drill.clone()),
            ];
            for (o, n) in outcomes {
                let mut lo = l.clone();
                lo.push(("outcome".into(), o.clone()));
                runs.get_or_create(&lo).inc_by(*n);
            }
            if let Some(s) = last {
                rto.get_or_create(&l).set(*s);
            }
        }
        reg.register(
            "drd_drill_runs",
            "Scheduled drills run by this daemon, by outcome",
            runs,
        );
        reg.register(
            "drd_drill_rto_seconds",
            "The RTO measured by the drill's last scheduled run that healed",
            rto,
        );
        reg.register(
            "drd_alerts",
            "Alerts this daemon sent or failed to send, by event, sink and outcome",
            alerts,
        );
    }
}

/// A drill's scheduled runs by outcome, and the last RTO measured.
type DrillStats = (BTreeMap<String, u64>, Option<f64>);

/// Label pairs of one sample.
type Labels = Vec<(String, String)>;

/// The Prometheus text format 0.0.4 from OpenMetrics text, for scrapers that do not ask for
/// OpenMetrics. The one naming difference: OpenMetrics names a counter family without its
/// `_total` suffix (`# TYPE drd_job_runs counter`, samples `drd_job_runs_total`), the classic
/// format names the family as its samples (`# TYPE drd_job_runs_total counter`). Sample lines
/// are the same; the `# EOF` terminator is dropped.
pub fn classic_text(openmetrics: &str) -> String {
    let mut counters = std::collections::BTreeSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP ", "# UNIT "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let m = Metrics::new();
        m.with("s1", "backup", |s| {
            s.succeeded = 3;
            s.failed = 1;
        });
        m.observe_duration("s1", "backup", 0.7);
        m.set_newest_point("s1", 100.0);
        m.count_alert("s1", "job-failed", "webhook", "sent");
        m
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let t = sample().render(130.0, &["s1".into()], true);
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("# TYPE drd_job_runs counter\n"), "{t}");
        assert!(
            t.contains("drd_job_runs_total{stack=\"s1\",job=\"backup\",outcome=\"failed\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE drd_job_duration_seconds histogram\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "drd_job_duration_seconds_bucket{le=\"1.0\",stack=\"s1\",job=\"backup\"} 1\n"
            ) || t.contains(
                "drd_job_duration_seconds_bucket{stack=\"s1\",job=\"backup\",le=\"1.0\"} 1\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("drd_rpo_age_seconds{stack=\"s1\"} 30.0\n"),
            "{t}"
        );
        assert!(t.contains("drd_alerts_total{stack=\"s1\",event=\"job-failed\",sink=\"webhook\",outcome=\"sent\"} 1\n"), "{t}");
    }

    #[test]
    fn classic_text_names_counter_families_as_their_samples() {
        let t = sample().render(130.0, &["s1".into()], false);
        assert!(!t.contains("# EOF"), "{t}");
        assert!(t.contains("# TYPE drd_job_runs_total counter\n"), "{t}");
        assert!(t.contains("# HELP drd_job_runs_total Job runs"), "{t}");
        // Gauges and histograms keep their names.
        assert!(t.contains("# TYPE drd_rpo_age_seconds gauge\n"), "{t}");
        assert!(
            t.contains("# TYPE drd_job_duration_seconds histogram\n"),
            "{t}"
        );
        // Sample lines are the same in both formats.
        let om = sample().render(130.0, &["s1".into()], true);
        // (A family's samples come in its hash order: compared sorted.)
        let samples = |x: &str| -> Vec<String> {
            let mut v: Vec<String> = x
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            v.sort();
            v
        };
        assert_eq!(samples(&t), samples(&om));
    }
}
