//! `drd daemon` end to end: real daemon processes against a sandbox store. Two daemons take
//! every scheduled backup exactly once (manifests counted by their recorded firing) and hand
//! over when one is killed; SIGTERM during a backup exits within the grace period, leaves a
//! store that verifies, and the next start takes the missed backup; `/metrics` parses as
//! Prometheus text and its RPO gauge rises between backups and drops after one; SIGHUP reloads
//! a valid policy and rejects an invalid one while the old one keeps running.

use drd_e2e::daemon::*;
use drd_e2e::text;
use std::time::{Duration, Instant};

const EVERY_2S: &str = r#"
[[daemon.schedule]]
job = "backup"
cron = "*/2 * * * * *"
jitter = "500ms"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_take_every_backup_exactly_once_and_hand_over_when_one_dies() {
    let w = World::new("dm-ha", EVERY_2S).await;
    let (pa, pb) = (free_port(), free_port());
    let started = chrono::Utc::now();
    let (mut a, _) = w.start("a", pa, &["--lease-ttl", "4s"]);
    let (mut b, log_b) = w.start("b", pb, &["--lease-ttl", "4s"]);
    tokio::time::sleep(Duration::from_secs(9)).await;
    // Kill one daemon without warning (maybe in the middle of a backup).
    a.kill().unwrap();
    let _ = a.wait();
    tokio::time::sleep(Duration::from_secs(9)).await;
    signal(&b, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut b, Duration::from_secs(30)).success());
    wait_for_log(&log_b, "drd daemon stopped", Duration::from_secs(1));

    let points = w.points().await;
    let mut ticks: Vec<String> = points.iter().filter_map(|(_, t)| t.clone()).collect();
    assert_eq!(
        ticks.len(),
        points.len(),
        "every point was taken on schedule"
    );
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a firing was backed up twice: {points:?}");
    // Every firing between the first and the last is there: none lost at the handover (the
    // documented bound is one firing, when the next one comes before the lease expires).
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp();
    let (first, last) = (parse(&ticks[0]), parse(ticks.last().unwrap()));
    let expected = ((last - first) / 2 + 1) as usize;
    assert!(
        ticks.len() + 1 >= expected,
        "{} of {expected} firings backed up: {ticks:?}",
        ticks.len()
    );
    assert!(first >= started.timestamp() - 2, "{ticks:?}");
    assert!(ticks.len() >= 7, "{ticks:?}");
    // The store verifies after the kill.
    let out = w.sb.run(
        &["--policy", w.policy.to_str().unwrap(), "verify", "--all"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_backup_exits_in_grace_and_the_next_start_takes_the_missed_backup() {
    let every_minute = r#"
[[daemon.schedule]]
job = "backup"
cron = "0 * * * * *"
"#;
    let w = World::new("dm-term", every_minute).await;
    let port = free_port();
    // First start: the latest firing is caught up at once; stop it mid-backup.
    let (mut d, log) = w.start("1", port, &["--grace", "0s"]);
    let running = wait_for_log(&log, "\"message\":\"running\"", Duration::from_secs(30));
    let tick = running["fields"]["tick"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut d, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    wait_for_log(&log, "grace period over", Duration::from_secs(1));
    // Nothing half-written counts as a point, and the store verifies.
    assert!(
        w.points().await.is_empty(),
        "the aborted backup left a point"
    );
    let out = w.sb.run(
        &["--policy", w.policy.to_str().unwrap(), "verify", "--all"],
        "",
    );
    assert!(
        text(&out).contains("there is no recovery point to verify"),
        "{}",
        text(&out)
    );
    // The next start takes the missed backup: the same firing, caught up.
    let (mut d, log) = w.start("2", port, &[]);
    wait_for_log(&log, "succeeded", Duration::from_secs(30));
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut d, Duration::from_secs(30)).success());
    let points = w.points().await;
    assert_eq!(points.len(), 1, "{points:?}");
    let want = chrono::DateTime::parse_from_rfc3339(&tick.replace(" UTC", "Z").replace(' ', "T"))
        .map(|t| t.timestamp())
        .ok();
    let got = chrono::DateTime::parse_from_rfc3339(points[0].1.as_deref().unwrap())
        .unwrap()
        .timestamp();
    assert!(want.is_none_or(|w| w <= got), "{tick} then {points:?}");
    let out = w.sb.run(
        &["--policy", w.policy.to_str().unwrap(), "verify", "--all"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_the_rpo_gauge_rises_between_backups_and_drops_after_one() {
    let every_4s = r#"
[daemon]
rpo = "1h"

[[daemon.schedule]]
job = "backup"
cron = "*/4 * * * * *"
"#;
    let w = World::new("dm-metrics", every_4s).await;
    let port = free_port();
    let (mut d, _) = w.start("m", port, &[]);
    wait_for_log(
        &w.sb.dir.path().join("daemon-m.log"),
        "succeeded",
        Duration::from_secs(30),
    );
    let mut series = vec![];
    for _ in 0..24 {
        let s = scrape(port).await;
        if let Some(v) = gauge(&s, "drd_rpo_age_seconds", ("stack", "dm-metrics")) {
            series.push(v);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rises = series.windows(2).filter(|p| p[1] > p[0]).count();
    let drops = series.windows(2).filter(|p| p[1] < p[0]).count();
    assert!(rises >= 4 && drops >= 1, "{series:?}");
    assert!(series.iter().all(|v| *v < 10.0), "{series:?}");
    let s = scrape(port).await;
    let ok = counter(
        &s,
        "drd_job_runs_total",
        &[("job", "backup"), ("outcome", "succeeded")],
    );
    assert!(ok >= 3.0, "{ok}");
    assert!(counter(&s, "drd_objects_written_total", &[("job", "backup")]) >= ok);
    assert!(
        gauge(
            &s,
            "drd_job_last_success_timestamp_seconds",
            ("job", "backup")
        )
        .unwrap()
            > 1.7e9
    );
    let hist = s
        .samples
        .iter()
        .find(|x| x.metric == "drd_job_duration_seconds")
        .expect("the duration histogram");
    assert!(
        matches!(hist.value, prometheus_parse::Value::Histogram(_)),
        "{hist:?}"
    );
    // What Prometheus asks for by default: OpenMetrics, with the same samples.
    let om = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{:?}",
        om.headers()
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE drd_job_runs counter\n"), "{om}");
    assert!(
        om.contains(
            "drd_job_runs_total{stack=\"dm-metrics\",job=\"backup\",outcome=\"succeeded\"}"
        ),
        "{om}"
    );
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut d, Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_a_valid_policy_and_rejects_an_invalid_one() {
    let w = World::new("dm-hup", EVERY_2S).await;
    let port = free_port();
    let (mut d, log) = w.start("h", port, &[]);
    wait_for_log(&log, "succeeded", Duration::from_secs(30));
    let good = std::fs::read_to_string(&w.policy).unwrap();

    // An invalid policy: rejected with a log line naming the problem; the old one runs on.
    std::fs::write(&w.policy, good.replace("*/2 * * * * *", "*/2 * * * *")).unwrap();
    signal(&d, nix::sys::signal::Signal::SIGHUP);
    let line = wait_for_log(&log, "reload rejected", Duration::from_secs(10));
    assert!(line.to_string().contains("6 or 7"), "{line}");
    let before = counter(
        &scrape(port).await,
        "drd_job_runs_total",
        &[("job", "backup"), ("outcome", "succeeded")],
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = scrape(port).await;
    let after = counter(
        &s,
        "drd_job_runs_total",
        &[("job", "backup"), ("outcome", "succeeded")],
    );
    assert!(
        after > before,
        "the old schedule keeps running: {before} -> {after}"
    );
    assert_eq!(
        counter(&s, "drd_policy_reloads_total", &[("result", "rejected")]),
        1.0
    );

    // A valid change: applied (a verify job appears and runs).
    std::fs::write(
        &w.policy,
        format!("{good}\n[[daemon.schedule]]\njob = \"verify\"\ncron = \"*/3 * * * * *\"\n"),
    )
    .unwrap();
    signal(&d, nix::sys::signal::Signal::SIGHUP);
    wait_for_log(&log, "policies reloaded", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(port).await;
        if counter(
            &s,
            "drd_job_runs_total",
            &[("job", "verify"), ("outcome", "succeeded")],
        ) >= 1.0
        {
            assert_eq!(
                counter(&s, "drd_policy_reloads_total", &[("result", "applied")]),
                1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "verify never ran after the reload"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut d, Duration::from_secs(30)).success());
}
