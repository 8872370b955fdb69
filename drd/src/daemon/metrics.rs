//! The daemon's metrics, rendered in the Prometheus text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
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

#[derive(Default)]
pub struct Metrics {
    jobs: Mutex<BTreeMap<(String, String), JobStats>>,
    /// Stack -> creation time (unix seconds) of its newest recovery point.
    newest_point: Mutex<BTreeMap<String, f64>>,
    /// Stack -> the source mirror's last fetch (unix seconds), commits behind the remote when
    /// known, and the staleness threshold (seconds).
    mirror: Mutex<BTreeMap<String, MirrorGauge>>,
    /// Unix milliseconds of the scheduler's last heartbeat.
    pub heartbeat_ms: AtomicI64,
    pub reloads: Mutex<(u64, u64)>,
    /// Wakes the refresh of the store-read gauges (newest point, mirror fetch) early: when
    /// another daemon ran a firing, this one's gauges must still show its result.
    pub refresh: tokio::sync::Notify,
}

impl Metrics {
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

    pub fn snapshot(&self) -> BTreeMap<(String, String), JobStats> {
        self.jobs.lock().expect("metrics").clone()
    }

    pub fn beat(&self, now_ms: i64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The exposition text at `now` (unix seconds).
    pub fn render(&self, now: f64, stacks: &[String]) -> String {
        let jobs = self.snapshot();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            write_family(&mut out, name, kind, help, rows)
        };
        let l =
            |stack: &str, job: &str| format!("{{stack=\"{}\",job=\"{}\"}}", esc(stack), esc(job));
        let per = |f: &dyn Fn(&JobStats) -> String| -> Vec<(String, String)> {
            jobs.iter().map(|((s, j), st)| (l(s, j), f(st))).collect()
        };
        let mut runs = vec![];
        for ((s, j), st) in &jobs {
            for (outcome, n) in [("succeeded", st.succeeded), ("failed", st.failed)] {
                runs.push((
                    format!(
                        "{{stack=\"{}\",job=\"{}\",outcome=\"{outcome}\"}}",
                        esc(s),
                        esc(j)
                    ),
                    n.to_string(),
                ));
            }
        }
        family(
            "drd_job_runs_total",
            "counter",
            "Job runs by this daemon, by outcome.",
            runs,
        );
        family(
            "drd_job_failures_total",
            "counter",
            "Job runs that failed.",
            per(&|s| s.failed.to_string()),
        );
        family(
            "drd_job_done_elsewhere_total",
            "counter",
            "Firings another daemon had already run.",
            per(&|s| s.done_elsewhere.to_string()),
        );
        family(
            "drd_job_catch_ups_total",
            "counter",
            "Runs for firings missed while no daemon ran (one per gap, never a burst).",
            per(&|s| s.catch_ups.to_string()),
        );
        family(
            "drd_job_lease_lost_total",
            "counter",
            "Runs whose lease was lost before they finished (they were cancelled).",
            per(&|s| s.lease_lost.to_string()),
        );
        family(
            "drd_job_retries_total",
            "counter",
            "Failed runs retried within their firing's window.",
            per(&|s| s.retries.to_string()),
        );
        write_histogram(&mut out, &jobs);
        let mut out2 = String::new();
        let mut family2 = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            write_family(&mut out2, name, kind, help, rows)
        };
        family2(
            "drd_job_last_success_timestamp_seconds",
            "gauge",
            "When the job last succeeded on this daemon (unix time).",
            jobs.iter()
                .filter_map(|((s, j), st)| st.last_success.map(|t| (l(s, j), format!("{t:.3}"))))
                .collect(),
        );
        family2(
            "drd_bytes_written_total",
            "counter",
            "Bytes of new blobs written to the store by this daemon's jobs.",
            jobs.iter()
                .map(|((s, j), st)| (l(s, j), st.bytes_written.to_string()))
                .collect(),
        );
        family2(
            "drd_objects_written_total",
            "counter",
            "Objects written to the store by this daemon's jobs.",
            jobs.iter()
                .map(|((s, j), st)| (l(s, j), st.objects_written.to_string()))
                .collect(),
        );
        family2(
            "drd_lease_held",
            "gauge",
            "1 while this daemon holds the job's lease.",
            jobs.iter()
                .map(|((s, j), st)| (l(s, j), u8::from(st.lease_held).to_string()))
                .collect(),
        );
        let points = self.newest_point.lock().expect("metrics").clone();
        family2(
            "drd_rpo_age_seconds",
            "gauge",
            "Age of the stack's newest recovery point (the recovery point objective in force).",
            stacks
                .iter()
                .filter_map(|s| {
                    points.get(s).map(|t| {
                        (
                            format!("{{stack=\"{}\"}}", esc(s)),
                            format!("{:.3}", (now - t).max(0.0)),
                        )
                    })
                })
                .collect(),
        );
        let (ok, rejected) = *self.reloads.lock().expect("metrics");
        family2(
            "drd_policy_reloads_total",
            "counter",
            "SIGHUP reloads, by result.",
            vec![
                ("{result=\"applied\"}".into(), ok.to_string()),
                ("{result=\"rejected\"}".into(), rejected.to_string()),
            ],
        );
        out + &out2 + &self.render_mirror(now)
    }

    /// The source mirror's freshness gauges.
    fn render_mirror(&self, now: f64) -> String {
        let mut out2 = String::new();
        let mut family2 = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            write_family(&mut out2, name, kind, help, rows)
        };
        let mirror = self.mirror.lock().expect("metrics").clone();
        let label = |s: &str| format!("{{stack=\"{}\"}}", esc(s));
        family2(
            "drd_mirror_age_seconds",
            "gauge",
            "Time since the source mirror's last successful fetch (the CI recovery point objective).",
            mirror
                .iter()
                .map(|(s, (t, _, _))| (label(s), format!("{:.3}", (now - t).max(0.0))))
                .collect(),
        );
        family2(
            "drd_mirror_commits_behind",
            "gauge",
            "Commits the remote's deploy branch has that the mirror does not (0 right after a fetch).",
            mirror
                .iter()
                .filter_map(|(s, (_, b, _))| b.map(|b| (label(s), b.to_string())))
                .collect(),
        );
        family2(
            "drd_mirror_stale",
            "gauge",
            "1 when the mirror's last fetch is older than [ci] mirror_max_age (alert on it).",
            mirror
                .iter()
                .map(|(s, (t, _, max))| (label(s), u8::from(now - t > *max).to_string()))
                .collect(),
        );
        out2
    }
}

/// One metric family: its HELP and TYPE lines, then one sample per row (labels, value).
fn write_family(out: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// `drd_job_duration_seconds` as a Prometheus histogram (buckets, sum, count) per job.
fn write_histogram(out: &mut String, jobs: &BTreeMap<(String, String), JobStats>) {
    let l = |stack: &str, job: &str| format!("{{stack=\"{}\",job=\"{}\"}}", esc(stack), esc(job));
    let _ = writeln!(out, "# HELP drd_job_duration_seconds Job run durations.");
    let _ = writeln!(out, "# TYPE drd_job_duration_seconds histogram");
    for ((s, j), st) in jobs {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "drd_job_duration_seconds_bucket{{stack=\"{}\",job=\"{}\",le=\"{b}\"}} {}",
                esc(s),
                esc(j),
                st.bucket_counts[i]
            );
        }
        let _ = writeln!(
            out,
            "drd_job_duration_seconds_bucket{{stack=\"{}\",job=\"{}\",le=\"+Inf\"}} {}",
            esc(s),
            esc(j),
            st.duration_count
        );
        let _ = writeln!(
            out,
            "drd_job_duration_seconds_sum{} {}",
            l(s, j),
            st.duration_sum
        );
        let _ = writeln!(
            out,
            "drd_job_duration_seconds_count{} {}",
            l(s, j),
            st.duration_count
        );
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
