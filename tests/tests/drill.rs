//! `drd drill` end to end on the lab: the shipped corrupt-live drill heals through
//! lambda-rollback and its rollback leaves the function as it was (read with a second client);
//! a failing gate injects nothing; a recovery that never heals ends by its stop condition, rolls
//! back and exits 1; SIGINT mid-drill rolls back. The HTML report is checked in headless
//! Chromium against the JSON report.

use drd_e2e::browser::{chromium, field, screenshot_stats};
use drd_e2e::{text, Sandbox};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY: &str = "sk-e2e-drill-0123456789";

struct World {
    sb: Sandbox,
    name: String,
    policy: String,
    /// A runbook directory whose drills/ holds the test's own drill files.
    runbooks: PathBuf,
}

/// What the service is, read with the SDK (a second client): live's version, $LATEST's code,
/// the published versions.
async fn state(w: &World) -> (String, String, Vec<String>) {
    let l = w.sb.lambda("us-east-1").await;
    let f = format!("{}-fn", w.name);
    let live = l
        .get_alias()
        .function_name(&f)
        .name("live")
        .send()
        .await
        .unwrap();
    let latest = l
        .get_function_configuration()
        .function_name(&f)
        .send()
        .await
        .unwrap();
    let mut versions: Vec<String> = l
        .list_versions_by_function()
        .function_name(&f)
        .send()
        .await
        .unwrap()
        .versions()
        .iter()
        .filter_map(|v| v.version().map(str::to_string))
        .collect();
    versions.sort();
    (
        live.function_version().unwrap().to_string(),
        latest.code_sha256().unwrap().to_string(),
        versions,
    )
}

/// The drills' canary secret in these tests' policies.
const CANARY: &str = "drd-drill-canary";

async fn world(name: &str) -> World {
    world_with(
        name,
        "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k",
        &format!("[secrets]\ncanary = \"{CANARY}\"\n"),
    )
    .await
}

/// The canary `region` holds, read by a second client.
async fn canary(sb: &Sandbox, region: &str, name: &str) -> Value {
    let v = sb
        .secrets(region)
        .await
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    serde_json::from_str(v.secret_string().unwrap()).unwrap()
}

/// A canary as an earlier drill run would have left it (written now, in us-east-1).
async fn old_canary(sb: &Sandbox, run: &str) -> std::time::SystemTime {
    let at = std::time::SystemTime::now();
    let value = serde_json::json!({
        "drd_canary": 1,
        "run": run,
        "seq": 1,
        "written_at": humantime::format_rfc3339_millis(at).to_string(),
    });
    sb.secrets("us-east-1")
        .await
        .create_secret()
        .name(CANARY)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap();
    at
}

/// A deployed stack whose policy sends secret backups to `recipient`, with `extra` TOML.
async fn world_with(name: &str, recipient: &str, extra: &str) -> World {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let policy = sb.policy_with(name, recipient, extra);
    let policy = policy.to_str().unwrap().to_string();
    sb.deploy(&policy, KEY);
    let runbooks = sb.dir.path().join("runbooks");
    std::fs::create_dir_all(runbooks.join("drills")).unwrap();
    World {
        sb,
        name: name.into(),
        policy,
        runbooks,
    }
}

impl World {
    /// A drill of this test: the shipped corrupt-live with `edits` applied.
    fn drill(&self, name: &str, edits: &[(&str, &str)]) {
        let mut t =
            std::fs::read_to_string(drd_e2e::root().join("runbooks/drills/corrupt-live.toml"))
                .unwrap();
        t = t.replace("name = \"corrupt-live\"", &format!("name = \"{name}\""));
        for (from, to) in edits {
            assert!(t.contains(from), "{from}");
            t = t.replace(from, to);
        }
        std::fs::write(self.runbooks.join(format!("drills/{name}.toml")), t).unwrap();
    }

    fn args<'a>(&'a self, report: &'a Path, drill: &'a str) -> Vec<&'a str> {
        vec![
            "--policy",
            &self.policy,
            "--runbooks",
            self.runbooks.to_str().unwrap(),
            "--output",
            "json",
            "drill",
            "run",
            drill,
            "--report",
            report.to_str().unwrap(),
        ]
    }
}

/// Wait until the drill's event journal (flushed per event) records the fault.
fn wait_for_fault(report: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(report)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("fault injected")
        })
    {
        assert!(Instant::now() < deadline, "no fault injected");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_live_heals_through_rollback_and_the_drill_leaves_the_service_as_before() {
    let w = world("dl-heal").await;
    let before = state(&w).await;
    let report = w.sb.dir.path().join("reports");
    // The shipped drill (recovery starts 3 s after the fault, as on-call would).
    let out = w.sb.run(&w.args(&report, "corrupt-live"), "");
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "met", "{r:#}");
    let rto = r["measured"]["rto_seconds"].as_f64().unwrap();
    // The outage lasted at least start_after, and the prober saw it.
    assert!((3.0..60.0).contains(&rto), "{rto}");
    assert!(
        r["measured"]["unhealthy_samples"].as_u64().unwrap() >= 3,
        "{r:#}"
    );
    assert_eq!(r["recovery"]["runbook"], "lambda-rollback");
    assert_eq!(r["recovery"]["outcome"], "succeeded");
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    // RPO, measured: a rollback loses nothing, so the newest canary that survived is the last
    // one the drill wrote before the fault (read back by a second client too).
    let rpo = r["measured"]["rpo_seconds"].as_f64().unwrap();
    assert!((0.0..=3.0).contains(&rpo), "{r:#}");
    assert_eq!(r["measured"]["rpo_met"], true, "{r:#}");
    assert_eq!(r["measured"]["rpo_objective_seconds"].as_f64(), Some(60.0));
    let note = r["measured"]["rpo_note"].as_str().unwrap();
    assert!(note.contains("this drill's canary"), "{note}");
    let c = canary(&w.sb, "us-east-1", CANARY).await;
    assert_eq!(c["run"], r["run"], "{c}");
    assert!(
        note.contains(c["written_at"].as_str().unwrap()),
        "{note} {c}"
    );
    // The service is as before: same live version, same $LATEST code, the broken version gone.
    assert_eq!(state(&w).await, before);
    // The report files, and the report in the store (second client).
    let run = r["run"].as_str().unwrap();
    let base = report.join(format!("corrupt-live-{run}"));
    for ext in ["json", "md", "html", "junit.xml", "events.jsonl"] {
        assert!(base.with_extension(ext).exists(), "{ext}");
    }
    let junit = std::fs::read_to_string(base.with_extension("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"0\""), "{junit}");
    let stored =
        w.sb.get_json(
            "us-west-2",
            "dl-heal-points",
            &format!("dl-heal/drills/corrupt-live/{run}.json"),
        )
        .await;
    assert_eq!(stored["outcome"], "met");
    drd_e2e::schema::check("drill-report", &r.to_string()).expect("the report's schema");

    // The HTML report in a real browser: its figures are the JSON's, one mark per sample.
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", base.with_extension("html").display());
    let dom = String::from_utf8(chromium(profile.path(), &["--dump-dom", &url]).stdout).unwrap();
    assert_eq!(field(&dom, "rto-seconds"), format!("{rto:.1}"));
    assert_eq!(field(&dom, "rpo-seconds"), format!("{rpo:.1}"));
    assert_eq!(field(&dom, "rpo-met"), "met");
    assert_eq!(field(&dom, "outcome"), "met");
    assert_eq!(
        field(&dom, "samples"),
        r["samples"].as_array().unwrap().len().to_string()
    );
    assert_eq!(
        dom.matches("<circle class=\"sample\"").count(),
        r["samples"].as_array().unwrap().len()
    );
    assert_eq!(
        dom.matches("data-ok=\"false\"").count() as u64,
        r["measured"]["unhealthy_samples"].as_u64().unwrap()
    );
    let shot = profile.path().join("report.png");
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,900",
            &url,
        ],
    );
    let (_, _, colours, _) = screenshot_stats(&shot);
    assert!(colours > 20, "{colours} colours: blank");
    assert!(
        !dom.contains(KEY)
            && !std::fs::read_to_string(base.with_extension("json"))
                .unwrap()
                .contains(KEY)
    );
    // drd drill report compares the stored runs: one run, its RTO is the median and the worst.
    let html = w.sb.dir.path().join("drills.html");
    let out = w.sb.run(
        &[
            "--policy",
            &w.policy,
            "--output",
            "json",
            "drill",
            "report",
            "--last",
            "5",
            "--html",
            html.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h[0]["drill"], "corrupt-live", "{h:#}");
    assert_eq!(h[0]["runs"], 1);
    assert_eq!(h[0]["median_rto_seconds"].as_f64(), Some(rto));
    assert_eq!(h[0]["worst_rto_seconds"].as_f64(), Some(rto));
    assert_eq!(h[0]["outcomes"]["met"], 1);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<rect class=\"run\"").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_gate_injects_nothing() {
    let w = world("dl-gate").await;
    // T2 needs the LLM key, which the lab's LLM no longer accepts: the steady state fails.
    w.drill(
        "gate-t2",
        &[("tiers = [\"T0\", \"T1\"]", "tiers = [\"T0\", \"T2\"]")],
    );
    w.sb.revoke_key(KEY);
    let before = state(&w).await;
    let report = w.sb.dir.path().join("reports");
    let out = w.sb.run(&w.args(&report, "gate-t2"), "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "gate-failed", "{r:#}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("nothing was injected"),
        "{r:#}"
    );
    assert!(
        r["injected_at_ms"].is_null() && r["rollback"].is_null(),
        "{r:#}"
    );
    assert_eq!(state(&w).await, before, "nothing changed");
    drd_e2e::schema::check("drill-report", &r.to_string()).expect("schema");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovery_that_never_heals_stops_rolls_back_and_exits_1() {
    let w = world("dl-never").await;
    // Throttled (reserved concurrency 0, set through the real PutFunctionConcurrency), and
    // nothing heals it.
    w.drill(
        "never-heals",
        &[
            ("kind = \"corrupt-live\"", "kind = \"throttle\""),
            (
                "runbook = \"lambda-rollback\"\nstart_after = \"3s\"",
                "expect = \"automatic\"",
            ),
            ("max_duration = \"5m\"", "max_duration = \"3s\""),
        ],
    );
    // A real secret already has the canary's name: the drill never overwrites it.
    let real = "ghp_not_a_canary_but_a_real_token";
    w.sb.secrets("us-east-1")
        .await
        .create_secret()
        .name(CANARY)
        .secret_string(real)
        .send()
        .await
        .unwrap();
    let before = state(&w).await;
    let report = w.sb.dir.path().join("reports");
    let out = w.sb.run(&w.args(&report, "never-heals"), "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stop condition"),
        "the reason is in the output: {err}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "failed", "{r:#}");
    assert!(
        r["reason"].as_str().unwrap().contains("max_duration"),
        "{r:#}"
    );
    assert!(r["measured"]["rto_seconds"].is_null());
    assert_eq!(r["fault"]["kind"], "throttle", "{r:#}");
    assert!(r["fault"]["reserved_before"].is_null(), "{r:#}");
    // Users were throttled as Lambda throttles: 429 through the Function URL.
    let throttled = r["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["detail"].as_str().unwrap_or("").contains("429"))
        .count();
    assert!(throttled >= 3, "{r:#}");
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    assert_eq!(state(&w).await, before, "rolled back");
    let v =
        w.sb.secrets("us-east-1")
            .await
            .get_secret_value()
            .secret_id(CANARY)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap();
    assert_eq!(v.secret_string(), Some(real), "left alone");
    assert!(
        r["events"]
            .to_string()
            .contains("holds something other than a drill canary"),
        "{r:#}"
    );
    assert!(!text(&out).contains(real) && !r.to_string().contains(real));
    // The reservation is gone again (a second client).
    let c =
        w.sb.lambda("us-east-1")
            .await
            .get_function_concurrency()
            .function_name("dl-never-fn")
            .send()
            .await
            .unwrap();
    assert_eq!(c.reserved_concurrent_executions(), None);
}

/// A synthetic outage of known length (the lab's function host fails every request for 4 s,
/// then lifts the fault by itself) with nothing to recover: the measured RTO is the outage's
/// length, within one sampling interval.
#[tokio::test(flavor = "multi_thread")]
async fn a_fault_of_known_length_is_measured_within_one_interval() {
    let w = world("dl-known").await;
    w.drill(
        "known-length",
        &[
            (
                "kind = \"corrupt-live\"",
                "kind = \"errors\"\nduration = \"4s\"",
            ),
            (
                "runbook = \"lambda-rollback\"\nstart_after = \"3s\"",
                "expect = \"automatic\"",
            ),
        ],
    );
    let report = w.sb.dir.path().join("reports");
    let out = w.sb.run(&w.args(&report, "known-length"), "");
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "met", "{r:#}");
    let rto = r["measured"]["rto_seconds"].as_f64().unwrap();
    let interval = r["interval_ms"].as_f64().unwrap() / 1000.0;
    // The lab starts the clock when it receives the fault, a moment before drd notes it.
    assert!(
        rto >= 4.0 - 0.2 && rto <= 4.0 + interval + 0.2,
        "RTO {rto} for a 4 s outage sampled every {interval} s: {r:#}"
    );
    let failed: Vec<&Value> = r["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == false)
        .collect();
    assert!(failed.len() >= 6, "{r:#}");
    assert!(
        failed[0]["detail"].as_str().unwrap().contains("502"),
        "{r:#}"
    );
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    // Nothing is armed in the lab any more.
    let armed: Value = reqwest::get(format!(
        "{}/_sandbox/functions/faults",
        w.sb.var("DRD_LAMBDA_DATA_ENDPOINT")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(armed, serde_json::json!({}), "{armed}");
}

/// A probe threshold (`max_unhealthy_samples`) stops the drill while the recovery is still
/// waiting to start, long before max_duration: rolled back, exit 1, the reason in the report.
#[tokio::test(flavor = "multi_thread")]
async fn a_probe_threshold_stops_the_drill_mid_recovery() {
    let w = world("dl-thresh").await;
    w.drill(
        "threshold",
        &[
            ("start_after = \"3s\"", "start_after = \"60s\""),
            (
                "max_duration = \"5m\"",
                "max_duration = \"5m\"\nmax_unhealthy_samples = 4",
            ),
        ],
    );
    let before = state(&w).await;
    let report = w.sb.dir.path().join("reports");
    let t = Instant::now();
    let out = w.sb.run(&w.args(&report, "threshold"), "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "stopped by the threshold"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "failed", "{r:#}");
    let why = r["reason"].as_str().unwrap();
    assert!(why.contains("max_unhealthy_samples 4"), "{why}");
    // Five unhealthy samples (more than 4) ended it; the prober samples on through the rollback.
    let bad = r["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == false)
        .count();
    assert!(bad >= 5, "{r:#}");
    assert!(
        r["events"]
            .to_string()
            .contains("(max_unhealthy_samples 4)"),
        "{r:#}"
    );
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    assert_eq!(state(&w).await, before, "rolled back");
}

/// A CloudWatch alarm as a stop condition (read by drd's SDK client, which speaks RPC-v2 CBOR;
/// set here with the AWS CLI): it goes off mid-drill, the drill stops and rolls back; in ALARM
/// before the fault, the gate fails and nothing is injected; an alarm that does not exist is
/// refused before anything happens.
#[tokio::test(flavor = "multi_thread")]
async fn a_cloudwatch_alarm_stops_the_drill_and_gates_the_next() {
    let w = world("dl-alarm").await;
    w.sb.aws_cli(&[
        "cloudwatch",
        "put-metric-alarm",
        "--alarm-name",
        "payments-5xx",
        "--namespace",
        "Payments",
        "--metric-name",
        "Errors5xx",
        "--statistic",
        "Sum",
        "--period",
        "60",
        "--evaluation-periods",
        "1",
        "--threshold",
        "1",
        "--comparison-operator",
        "GreaterThanOrEqualToThreshold",
    ]);
    w.drill(
        "alarmed",
        &[
            ("start_after = \"3s\"", "start_after = \"60s\""),
            (
                "max_duration = \"5m\"",
                "max_duration = \"5m\"\nalarm = \"payments-5xx\"",
            ),
        ],
    );
    let before = state(&w).await;
    let report = w.sb.dir.path().join("reports");
    let mut c = w.sb.drd();
    let child = c
        .args(w.args(&report, "alarmed"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_fault(&report);
    w.sb.aws_cli(&[
        "cloudwatch",
        "set-alarm-state",
        "--alarm-name",
        "payments-5xx",
        "--state-value",
        "ALARM",
        "--state-reason",
        "the drill hurt a neighbour",
    ]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "failed", "{r:#}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("alarm payments-5xx went off"),
        "{r:#}"
    );
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    assert_eq!(state(&w).await, before, "rolled back");
    // Still in ALARM: the next run injects nothing.
    let out = w.sb.run(&w.args(&report, "alarmed"), "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "gate-failed", "{r:#}");
    assert!(r["injected_at_ms"].is_null(), "{r:#}");
    // An alarm that does not exist: refused, naming the field.
    w.drill(
        "no-alarm",
        &[(
            "max_duration = \"5m\"",
            "max_duration = \"5m\"\nalarm = \"no-such-alarm\"",
        )],
    );
    let out = w.sb.run(&w.args(&report, "no-alarm"), "");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("no CloudWatch alarm no-such-alarm"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("stop_conditions.alarm"),
        "{}",
        text(&out)
    );
    assert_eq!(state(&w).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_drill_rolls_back() {
    let w = world("dl-int").await;
    w.drill(
        "slow-recovery",
        &[("start_after = \"3s\"", "start_after = \"60s\"")],
    );
    let before = state(&w).await;
    let report = w.sb.dir.path().join("reports");
    let mut c = w.sb.drd();
    let child = c
        .args(w.args(&report, "slow-recovery"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_fault(&report);
    assert_ne!(state(&w).await.0, before.0, "the fault is in place");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "interrupted", "{r:#}");
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    assert_eq!(state(&w).await, before, "rolled back after the interrupt");
}

/// A scheduled drill (`drill:NAME`) that fails raises `drill-failed` alerts (never `job-failed`
/// as well), is counted in the daemon's metrics, and every run rolls back.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_drill_that_fails_raises_drill_failed_and_is_counted() {
    let extra = r#"
[daemon]
rpo = "1h"

[[daemon.schedule]]
job = "drill:never-heals"
cron = "*/10 * * * * *"

[alerts]
on = ["drill-failed", "job-failed"]

[alerts.webhook]
url_env = "DL_HOOK_URL"
"#;
    let recipient = "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k";
    let w = world_with("dl-sched", recipient, extra).await;
    w.drill(
        "never-heals",
        &[
            (
                "runbook = \"lambda-rollback\"\nstart_after = \"3s\"",
                "expect = \"automatic\"",
            ),
            ("max_duration = \"5m\"", "max_duration = \"2s\""),
        ],
    );
    let before = state(&w).await;
    let hooks =
        w.sb.env
            .iter()
            .find(|(k, _)| k == "DRD_SANDBOX_HOOKS")
            .map(|(_, v)| v.clone())
            .unwrap();
    let port = drd_e2e::daemon::free_port();
    let log = w.sb.dir.path().join("daemon.log");
    let mut c = w.sb.drd();
    let mut d = c
        .env("DL_HOOK_URL", format!("{hooks}/dl"))
        .args([
            "--policy",
            &w.policy,
            "--runbooks",
            w.runbooks.to_str().unwrap(),
        ])
        .args([
            "--log-format",
            "json",
            "daemon",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let calls = loop {
        let v: Value = reqwest::get(format!("{hooks}/dl"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let calls = v["calls"].as_array().cloned().unwrap_or_default();
        if !calls.is_empty() {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "no alert: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let s = drd_e2e::daemon::scrape(port).await;
    drd_e2e::daemon::signal(&d, nix::sys::signal::Signal::SIGTERM);
    assert!(drd_e2e::daemon::wait_exit(&mut d, Duration::from_secs(60)).success());
    let body = &calls[0]["json"];
    assert_eq!(body["event"], "drill-failed", "{body}");
    assert_eq!(body["job"], "drill:never-heals", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("max_duration"),
        "{body}"
    );
    let all: Vec<&Value> = calls.iter().map(|c| &c["json"]["event"]).collect();
    assert!(all.iter().all(|e| *e == "drill-failed"), "{all:?}");
    let failed = drd_e2e::daemon::counter(
        &s,
        "drd_drill_runs_total",
        &[("drill", "never-heals"), ("outcome", "failed")],
    );
    assert!(failed >= 1.0, "{failed}");
    // Every scheduled run rolled back.
    assert_eq!(state(&w).await, before);
}

/// While a drill runs, its marker labels the points taken (manifest `drill`, schema 4, read with
/// a second client), and `restore --point latest` skips them for the newest point taken before.
#[tokio::test(flavor = "multi_thread")]
async fn points_taken_during_a_drill_are_labelled_and_restore_latest_skips_them() {
    let keys = tempfile::tempdir().unwrap();
    let id = keys.path().join("identity.txt");
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .expect("age-keygen (scripts/setup installs age)");
    assert!(out.status.success(), "{}", text(&out));
    let recipient = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&id)
        .output()
        .unwrap()
        .stdout;
    let recipient = String::from_utf8(recipient).unwrap();
    let w = world_with("dl-mark", recipient.trim(), "").await;
    w.drill(
        "slow-recovery",
        &[("start_after = \"3s\"", "start_after = \"60s\"")],
    );
    let backup = || {
        let out =
            w.sb.run(&["--policy", &w.policy, "--output", "json", "backup"], "");
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = backup();
    let report = w.sb.dir.path().join("reports");
    let child =
        w.sb.drd()
            .args(w.args(&report, "slow-recovery"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    wait_for_fault(&report);
    let during = backup();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let m =
        w.sb.get_json(
            "us-west-2",
            "dl-mark-points",
            &format!("dl-mark/points/{during}.json"),
        )
        .await;
    assert_eq!(m["schema"], 5, "{m:#}");
    assert_eq!(m["drill"]["drill"], "slow-recovery", "{m:#}");
    let m0 =
        w.sb.get_json(
            "us-west-2",
            "dl-mark-points",
            &format!("dl-mark/points/{before}.json"),
        )
        .await;
    assert_eq!(m0["schema"], 5);
    assert!(m0.get("drill").is_none());
    // The marker is gone with the drill: the next point is ordinary.
    let after_keys =
        w.sb.list_keys("us-west-2", "dl-mark-points", "dl-mark/drills/active.json")
            .await;
    assert!(after_keys.is_empty(), "{after_keys:?}");
    // restore --point latest (dry run) chooses the point from before the drill.
    let out = w.sb.run(
        &[
            "--policy",
            &w.policy,
            "restore",
            "--region",
            "us-west-2",
            "--identity",
            id.to_str().unwrap(),
            "--dry-run",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let plan = text(&out);
    assert!(
        plan.contains(&format!("point={before}")),
        "the point from before the drill: {plan}"
    );
    assert!(plan.contains("skipped_points=1"), "{plan}");
    assert!(!plan.contains(&format!("point={during}")), "{plan}");
}

/// revoke-key (lab only): the lab's LLM stops accepting the key, T2 fails, secret-rotation
/// stages, proves and promotes a replacement the drill made; no key value reaches any output.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_is_healed_by_rotation_and_no_key_is_ever_printed() {
    let w = world("dl-key").await;
    let report = w.sb.dir.path().join("reports");
    let out = w.sb.run(&w.args(&report, "revoke-key"), "");
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "met", "{r:#}");
    assert!(
        r["measured"]["unhealthy_samples"].as_u64().unwrap() >= 2,
        "the prober saw the revoked key: {r:#}"
    );
    assert_eq!(r["recovery"]["runbook"], "secret-rotation");
    assert_eq!(r["recovery"]["outcome"], "succeeded", "{r:#}");
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    // The secret now holds another key (read with the SDK), and the service passes T2 with it.
    let conf = w.sb.sdk("us-east-1").await;
    let v = aws_sdk_secretsmanager::Client::new(&conf)
        .get_secret_value()
        .secret_id("openai-api-key")
        // moto can answer an unstaged read with the old value (docs/emulator-gaps.md).
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    let now = v.secret_string().unwrap().to_string();
    assert!(!now.contains(KEY), "rotated");
    let out2 = w.sb.run(&["--policy", &w.policy, "status", "--deep"], "");
    assert!(out2.status.success(), "{}", text(&out2));
    // No key value anywhere: outputs, reports, the event journal.
    let new_key: Value = serde_json::from_str(&now).unwrap();
    let new_key = new_key["OPENAI_API_KEY"].as_str().unwrap().to_string();
    let mut texts = vec![text(&out)];
    for e in std::fs::read_dir(&report).unwrap().flatten() {
        texts.push(std::fs::read_to_string(e.path()).unwrap());
    }
    for t in &texts {
        assert!(
            !t.contains(KEY) && !t.contains(&new_key),
            "a key value in the drill's output"
        );
    }
}

/// Everything a rehearsal could leave in `region` or change for users, read with second
/// clients: stacks, functions, secrets, log groups, buckets of the region; the service's DNS
/// records; the store's objects under points/ and the active-region record.
async fn footprint(sb: &Sandbox, region: &str, store: &str, zone: &str) -> Vec<String> {
    let mut out = vec![];
    let cf = sb.cloudformation(region).await;
    for s in cf.describe_stacks().send().await.unwrap().stacks() {
        if s.stack_status().map(|x| x.as_str()) != Some("DELETE_COMPLETE") {
            out.push(format!("stack {}", s.stack_name().unwrap_or("")));
        }
    }
    let l = sb.lambda(region).await;
    for f in l.list_functions().send().await.unwrap().functions() {
        out.push(format!("function {}", f.function_name().unwrap_or("")));
    }
    let sm = sb.secrets(region).await;
    for s in sm
        .list_secrets()
        .include_planned_deletion(true)
        .send()
        .await
        .unwrap()
        .secret_list()
    {
        out.push(format!("secret {}", s.name().unwrap_or("")));
    }
    let logs = sb.logs(region).await;
    for g in logs
        .describe_log_groups()
        .send()
        .await
        .unwrap()
        .log_groups()
    {
        out.push(format!("log group {}", g.log_group_name().unwrap_or("")));
    }
    let s3 = sb.s3(region).await;
    for b in s3.list_buckets().send().await.unwrap().buckets() {
        let name = b.name().unwrap_or("").to_string();
        if name == store {
            continue;
        }
        out.push(format!("bucket {name}"));
    }
    let store_s3 = sb.s3("us-west-2").await;
    let mut keys = vec![];
    let mut token = None;
    loop {
        let page = store_s3
            .list_objects_v2()
            .bucket(store)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        for o in page.contents() {
            let k = o.key().unwrap_or("").to_string();
            // The drill's own report and lease are the only writes a rehearsal makes.
            if !k.contains("/drills/") && !k.ends_with("/locks/drill") {
                keys.push(format!("store {k} {}", o.e_tag().unwrap_or("")));
            }
        }
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.extend(keys);
    let r53 = sb.route53().await;
    for r in r53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap()
        .resource_record_sets()
    {
        out.push(format!(
            "record {} {:?} {:?}",
            r.name(),
            r.set_identifier(),
            r.resource_records()
                .iter()
                .map(|x| x.value().to_string())
                .collect::<Vec<_>>()
        ));
    }
    out.sort();
    out
}

/// The restore rehearsal (shipped): the newest point restores into a scratch region under
/// scratch names and passes T2 there; then everything it made is gone, and nothing users see
/// changed: the scratch region, the DNS records and the store read back (second clients)
/// exactly as before. A second rehearsal runs the same way (the secret names are free again:
/// ForceDeleteWithoutRecovery).
#[tokio::test(flavor = "multi_thread")]
async fn the_restore_rehearsal_restores_probes_and_leaves_nothing_behind() {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let keys = sb.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (identity, recipient) = drd_e2e::age_keygen(&keys);
    let zone = "rehearsal.example.";
    let zone_id = sb.hosted_zone(zone, "e2e-dr-reh").await;
    let name = "dr-reh";
    let extra = format!(
        "[secrets]\nothers = [\"github-token\"]\ncanary = \"{CANARY}\"\n\n[dns]\nzone = \"{zone}\"\nrecord = \"svc.{zone}\"\n{}",
        sb.front_door(&format!("svc.{zone}"))
    );
    let policy = sb.policy_with(name, &recipient, &extra);
    let policy = policy.to_str().unwrap().to_string();
    sb.secrets("us-east-1")
        .await
        .create_secret()
        .name("github-token")
        .secret_string("ghp_rehearsal_token_value")
        .send()
        .await
        .unwrap();
    sb.deploy(&policy, KEY);
    old_canary(&sb, "before-backup").await;
    let out = sb.run(&["--policy", &policy, "backup"], "");
    assert!(out.status.success(), "{}", text(&out));
    let store = format!("{name}-points");
    let before = footprint(&sb, "us-west-2", &store, &zone_id).await;
    assert!(
        before.iter().any(|l| l.starts_with("record svc.")),
        "{before:?}"
    );
    let report = sb.dir.path().join("reports");
    {
        let round = 1;
        let out = sb.run(
            &[
                "--policy",
                &policy,
                "--output",
                "json",
                "drill",
                "run",
                "restore-rehearsal",
                "--input",
                "region=us-west-2",
                "--identity",
                identity.to_str().unwrap(),
                "--report",
                report.to_str().unwrap(),
            ],
            "",
        );
        assert!(out.status.success(), "round {round}: {}", text(&out));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["outcome"], "met", "{r:#}");
        assert_eq!(
            r["fault"]["scratch"]["stack"],
            format!("{name}-drd-rehearsal")
        );
        assert_eq!(
            r["fault"]["scratch"]["secrets"],
            serde_json::json!([
                "openai-api-key-drd-rehearsal",
                "github-token-drd-rehearsal",
                "drd-drill-canary-drd-rehearsal"
            ])
        );
        let steps: Vec<&str> = r["recovery"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["secrets", "code", "stack", "function"], "{r:#}");
        // T2 passed through the scratch Function URL (the restored key reached the lab's LLM).
        assert!(r["probed_via"].as_str().unwrap().contains("us-west-2"));
        let healthy = r["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["ok"] == true)
            .count();
        assert!(healthy >= 2, "{r:#}");
        let rto = r["measured"]["rto_seconds"].as_f64().unwrap();
        assert!(rto > 0.0, "{r:#}");
        // The restored data's age, measured by the canary the point carried into the scratch.
        assert!(
            r["measured"]["rpo_seconds"].as_f64().unwrap() > 0.0,
            "{r:#}"
        );
        let note = r["measured"]["rpo_note"].as_str().unwrap();
        assert!(note.contains("run before-backup"), "{note}");
        assert_eq!(r["rollback"]["ok"], true, "{r:#}");
        let done = r["rollback"]["done"].to_string();
        assert!(done.contains("deleted without a recovery window"), "{done}");
        assert!(done.contains("nothing is left"), "{done}");
        // Nothing left, nothing changed: the same footprint as before the rehearsal.
        let after = footprint(&sb, "us-west-2", &store, &zone_id).await;
        assert_eq!(before, after, "round {round}");
    }
    // The weekly rehearsal, as the daemon runs it (here every 20 s): the same restore with the
    // schedule's region and the daemon's identity, its outcome and RTO as metrics; again it
    // leaves nothing behind (the secret names are free again: ForceDeleteWithoutRecovery).
    let scheduled = format!(
        "{extra}\n[daemon]\nrpo = \"1h\"\nidentity = \"{}\"\n\n[[daemon.schedule]]\njob = \"drill:restore-rehearsal\"\ncron = \"*/20 * * * * *\"\ninputs = {{ region = \"us-west-2\" }}\n",
        identity.display()
    );
    let policy = sb.policy_with(name, &recipient, &scheduled);
    let policy = policy.to_str().unwrap().to_string();
    let s = daemon_until_met(&sb, &policy, "restore-rehearsal").await;
    let rto = drd_e2e::daemon::gauge(&s, "drd_drill_rto_seconds", ("drill", "restore-rehearsal"))
        .expect("the rehearsal's RTO is a metric");
    assert!(rto > 0.0, "{rto}");
    // Its report is in the store, beside round 1's (a second client).
    let reports = sb
        .s3("us-west-2")
        .await
        .list_objects_v2()
        .bucket(&store)
        .prefix(format!("{name}/drills/restore-rehearsal/"))
        .send()
        .await
        .unwrap();
    let jsons = reports
        .contents()
        .iter()
        .filter(|o| o.key().unwrap().ends_with(".json"))
        .count();
    assert!(jsons >= 2, "{jsons} reports");
    // The same footprint but for the daemon's own job record and job lock.
    let now = footprint(&sb, "us-west-2", &store, &zone_id).await;
    let after: Vec<String> = now
        .iter()
        .filter(|l| {
            !l.starts_with(&format!("store {name}/daemon/"))
                && !l.starts_with(&format!("store {name}/locks/daemon-"))
        })
        .cloned()
        .collect();
    assert_eq!(before, after, "after the scheduled rehearsal");
    let before = now;
    // Without a scratch region: refused before anything is made.
    let out = sb.run(
        &[
            "--policy",
            &policy,
            "drill",
            "run",
            "restore-rehearsal",
            "--identity",
            identity.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--input region="), "{}", text(&out));
    assert_eq!(before, footprint(&sb, "us-west-2", &store, &zone_id).await);
}

/// Run the daemon with `policy` until a scheduled run of `drill` has met its objective (its
/// metrics), then stop it (SIGTERM, clean exit); the last scrape.
async fn daemon_until_met(sb: &Sandbox, policy: &str, drill: &str) -> prometheus_parse::Scrape {
    let port = drd_e2e::daemon::free_port();
    let log = sb.dir.path().join("daemon.log");
    let mut d = sb
        .drd()
        .args(["--policy", policy, "--log-format", "json", "daemon"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let s = loop {
        if let Some(s) = drd_e2e::daemon::try_scrape(port).await {
            let met = drd_e2e::daemon::counter(
                &s,
                "drd_drill_runs_total",
                &[("drill", drill), ("outcome", "met")],
            );
            if met >= 1.0 {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled {drill} met: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    drd_e2e::daemon::signal(&d, nix::sys::signal::Signal::SIGTERM);
    assert!(drd_e2e::daemon::wait_exit(&mut d, Duration::from_secs(90)).success());
    s
}

/// The service's DNS records (set identifier, value) for `record`, read with Route 53.
async fn records(sb: &Sandbox, zone_id: &str, record: &str) -> Vec<(String, String)> {
    sb.records(zone_id, record).await
}

/// The shipped region-loss drill on the lab: the primary region goes dark, region-redeploy
/// restores the service in the standby, and the prober (through the service's name) sees it
/// healthy again; the rollback brings the region back and fails back. Read with second clients:
/// the DNS record, live's code in the primary and the service's answers are as before, and the
/// standby's stack is retired.
#[tokio::test(flavor = "multi_thread")]
async fn region_loss_heals_through_a_restore_and_the_drill_fails_back() {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let keys = sb.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (identity, recipient) = drd_e2e::age_keygen(&keys);
    let zone = "regionloss.example.";
    let zone_id = sb.hosted_zone(zone, "e2e-dr-rl").await;
    let name = "dr-rl";
    let record = format!("svc.{zone}");
    let extra = format!(
        "[secrets]\ncanary = \"{CANARY}\"\n\n[dns]\nzone = \"{zone}\"\nrecord = \"{record}\"\n{}",
        sb.front_door(&record)
    );
    let policy = sb.policy_with(name, &recipient, &extra);
    let policy = policy.to_str().unwrap().to_string();
    sb.deploy(&policy, KEY);
    // An earlier run's canary, captured by the point the restore will use.
    let backed_up = old_canary(&sb, "before-backup").await;
    let out = sb.run(&["--policy", &policy, "backup"], "");
    assert!(out.status.success(), "{}", text(&out));
    let before = records(&sb, &zone_id, &record).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].1.contains(".us-east-1."), "{before:?}");
    let lambda = sb.lambda("us-east-1").await;
    let f = format!("{name}-fn");
    let code = |l: aws_sdk_lambda::Client| {
        let f = f.clone();
        async move {
            let live = l
                .get_alias()
                .function_name(&f)
                .name("live")
                .send()
                .await
                .unwrap();
            l.get_function_configuration()
                .function_name(&f)
                .qualifier(live.function_version().unwrap())
                .send()
                .await
                .unwrap()
                .code_sha256()
                .unwrap()
                .to_string()
        }
    };
    let code_before = code(lambda.clone()).await;

    // Without the standby and the identity the drill refuses before the gate (exit 2).
    let out = sb.run(&["--policy", &policy, "drill", "run", "region-loss"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("input region"), "{}", text(&out));
    assert!(text(&out).contains("input identity"), "{}", text(&out));

    let report = sb.dir.path().join("reports");
    let out = sb.run(
        &[
            "--policy",
            &policy,
            "--output",
            "json",
            "drill",
            "run",
            "region-loss",
            "--input",
            "region=us-west-2",
            "--identity",
            identity.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "met", "{r:#}");
    assert!(r["probed_via"]
        .as_str()
        .unwrap()
        .starts_with("service-name"));
    assert_eq!(r["recovery"]["runbook"], "region-redeploy");
    assert_eq!(r["recovery"]["outcome"], "succeeded", "{r:#}");
    // The outage was seen through the name, and the RTO counts the 5 s on-call took to act.
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.iter().any(|s| s["ok"] == false), "{r:#}");
    assert!(
        r["measured"]["rto_seconds"].as_f64().unwrap() >= 5.0,
        "{r:#}"
    );
    // RPO, measured: the canaries the drill wrote before the fault were in no point; the one
    // that survived in the standby is the one the point captured, so RPO = fault - its time.
    let rpo = r["measured"]["rpo_seconds"].as_f64().unwrap();
    let note = r["measured"]["rpo_note"].as_str().unwrap();
    assert!(note.contains("run before-backup"), "{note}");
    assert!(note.contains("us-west-2"), "{note}");
    let started = humantime::parse_rfc3339(r["started_at"].as_str().unwrap()).unwrap();
    let fault = started + Duration::from_millis(r["injected_at_ms"].as_u64().unwrap());
    let expected = fault.duration_since(backed_up).unwrap().as_secs_f64();
    assert!(
        (rpo - expected).abs() < 2.0,
        "RPO {rpo} against {expected}: {r:#}"
    );
    assert_eq!(r["measured"]["rpo_met"], Value::Null, "no objective: {r:#}");
    assert_eq!(
        canary(&sb, "us-west-2", CANARY).await["run"],
        "before-backup"
    );
    assert_eq!(r["rollback"]["ok"], true, "{r:#}");
    assert!(
        r["rollback"]["done"].to_string().contains("failback (run"),
        "{r:#}"
    );
    // As before: the record, live's code in the primary; the region answers again.
    assert_eq!(records(&sb, &zone_id, &record).await, before);
    assert_eq!(code(lambda).await, code_before);
    let standby = sb.cloudformation("us-west-2").await;
    let left: Vec<String> = standby
        .describe_stacks()
        .send()
        .await
        .unwrap()
        .stacks()
        .iter()
        .filter(|s| s.stack_status().map(|x| x.as_str()) != Some("DELETE_COMPLETE"))
        .filter_map(|s| s.stack_name().map(str::to_string))
        .collect();
    assert!(left.is_empty(), "the standby stack is retired: {left:?}");
    let out = sb.run(&["--policy", &policy, "status", "--deep"], "");
    assert!(out.status.success(), "{}", text(&out));
}
