//! Soak: two daemons with frequent schedules and a loop of manual `backup`, `prune` and `verify`
//! on one store, with 20% of the AWS requests failing (errors, throttling, dropped connections,
//! injected by the sandbox's gate) and retries on. Bounded in operations and time, loopback only.
//! Afterwards every manifest verifies, every secret backup decrypts with the real `age` CLI, no
//! blob a manifest names is missing, no firing made two points, and no process is left.
//! The figures it prints are kept in docs/reliability.md.

use drd_e2e::{age_keygen, processes_mentioning, text, Sandbox};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "sk-e2e-soak-0123456789";
const NAME: &str = "soak";
const MANUAL_OPS: usize = 170;
const BUDGET: Duration = Duration::from_secs(240);

fn daemon(sb: &Sandbox, policy: &str, tag: &str) -> (Child, std::path::PathBuf) {
    let log = sb.dir.path().join(format!("daemon-{tag}.log"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = sb.drd();
    c.args(["--policy", policy, "--log-format", "json", "daemon"])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lease-ttl",
            "10s",
        ])
        .env("DRD_MAX_ATTEMPTS", "4")
        .env("DRD_HOST_ID", format!("soak-{tag}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    (c.spawn().expect("start drd daemon"), log)
}

/// Why daemon runs failed: the error's first words, counted.
fn failure_reasons(log: &std::path::Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let f = std::fs::File::open(log).unwrap();
    for v in BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
    {
        let msg = v["fields"]["message"].as_str().unwrap_or("");
        if let Some(e) = v["fields"]["error"].as_str() {
            let short: String = e.chars().take(90).collect();
            *out.entry(format!("{msg}: {short}")).or_default() += 1;
        }
    }
    out
}

/// (job, firing) of every run a daemon's log says finished, with its outcome.
fn finished_firings(log: &std::path::Path) -> Vec<(String, String, String)> {
    let f = std::fs::File::open(log).unwrap();
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter_map(|v| {
            let msg = v["fields"]["message"].as_str()?.to_string();
            if msg != "succeeded" && msg != "failed" {
                return None;
            }
            Some((
                v["fields"]["job"].as_str()?.to_string(),
                v["fields"]["tick"].as_str()?.to_string(),
                msg,
            ))
        })
        .collect()
}

type Outcomes = BTreeMap<&'static str, BTreeMap<String, u32>>;

/// The manual commands, until `MANUAL_OPS` or `BUDGET`: (commands run, outcomes by command,
/// points the successful backups made).
async fn manual_loop(
    sb: &Sandbox,
    policy: &str,
    started: Instant,
) -> (usize, Outcomes, BTreeSet<String>) {
    let secrets = sb.secrets("us-east-1").await;
    let mut manual: Outcomes = BTreeMap::new();
    let mut manual_points = BTreeSet::new();
    let mut ops = 0;
    while ops < MANUAL_OPS && started.elapsed() < BUDGET {
        // Per ten: seven backups, two prunes, one verify.
        let op = match ops % 10 {
            9 => "verify",
            2 | 6 => "prune",
            _ => "backup",
        };
        // A secret rotation now and then, so points name new secret blobs and prune has
        // unreferenced ones to delete while backups run.
        if ops % 15 == 14 {
            let _ = secrets
                .put_secret_value()
                .secret_id("openai-api-key")
                .secret_string(format!("{{\"OPENAI_API_KEY\":\"{KEY}-{ops}\"}}"))
                .send()
                .await;
        }
        let out = sb.run_env(
            &["--policy", policy, "--output", "json", op],
            "",
            &[("DRD_MAX_ATTEMPTS", "4"), ("DRD_HOST_ID", "soak-manual")],
        );
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 1 | 3)),
            "{op}: a crash or a usage error: {}",
            text(&out)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{op}: {}",
            text(&out)
        );
        let outcome = match code {
            Some(0) => "ok",
            Some(3) => "lock held",
            _ => "failed",
        };
        *manual
            .entry(op)
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
        if op == "backup" && code == Some(0) {
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            manual_points.insert(r["id"].as_str().unwrap().to_string());
        }
        ops += 1;
        // A breath between operations, so the daemons' firings get the store lease too; longer
        // after finding it held, so a slow firing does not use up the loop's operations.
        let pause = if code == Some(3) { 1000 } else { 150 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    (ops, manual, manual_points)
}

/// The store as a second client sees it: every blob a manifest names is there, every secret
/// backup opens with the age CLI, and no firing has two points. Returns (points kept, secret
/// backups decrypted).
async fn check_store(sb: &Sandbox, identity: &std::path::Path) -> (usize, usize) {
    let bucket = format!("{NAME}-points");
    let keys: BTreeSet<String> = sb
        .list_keys("us-west-2", &bucket, &format!("{NAME}/"))
        .await
        .into_iter()
        .collect();
    let manifests: Vec<&String> = keys.iter().filter(|k| k.contains("/points/")).collect();
    assert!(!manifests.is_empty());
    let s3 = sb.s3("us-west-2").await;
    let mut per_firing: BTreeMap<String, u32> = BTreeMap::new();
    let mut decrypted = 0;
    for k in &manifests {
        let m = sb.get_json("us-west-2", &bucket, k).await;
        if let Some(t) = m["scheduled"]["tick"].as_str() {
            *per_firing.entry(t.to_string()).or_default() += 1;
        }
        let mut named = vec![];
        for c in m["code"].as_array().unwrap() {
            named.push(c["blob"]["sha256"].as_str().unwrap().to_string());
        }
        named.push(
            m["stack"]["template"]["sha256"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        for s in m["secrets"].as_array().unwrap() {
            for v in s["versions"].as_array().unwrap() {
                let hex = v["blob"]["sha256"].as_str().unwrap().to_string();
                let key = format!("{NAME}/objects/sha256/{}/{hex}", &hex[..2]);
                let body = s3
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{k} names {key}, which is missing: {e}"))
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes();
                let file = sb.dir.path().join("secret.age");
                std::fs::write(&file, &body).unwrap();
                let out = std::process::Command::new("age")
                    .arg("-d")
                    .arg("-i")
                    .arg(identity)
                    .arg(&file)
                    .output()
                    .expect("age CLI");
                assert!(
                    out.status.success(),
                    "age -d {key}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(!out.stdout.is_empty());
                decrypted += 1;
            }
        }
        for hex in named {
            let key = format!("{NAME}/objects/sha256/{}/{hex}", &hex[..2]);
            assert!(keys.contains(&key), "{k} names {key}, which is missing");
        }
    }
    let twice: Vec<_> = per_firing.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "firings with two points: {twice:?}");
    (manifests.len(), decrypted)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_and_manual_runs_under_injected_faults_lose_nothing() {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let (identity, recipient) = age_keygen(sb.dir.path());
    let policy = sb.policy_with(
        NAME,
        &recipient,
        r#"
[retention]
keep_last = 15

[[daemon.schedule]]
job = "backup"
cron = "*/2 * * * * *"

[[daemon.schedule]]
job = "verify"
cron = "*/7 * * * * *"

[[daemon.schedule]]
job = "prune"
cron = "*/11 * * * * *"
"#,
    );
    let policy = policy.to_str().unwrap().to_string();
    sb.deploy(&policy, KEY);
    // 20% of every AWS request from here on fails, reproducibly (seed 7).
    sb.faults(&[
        "--rate",
        "0.2",
        "--kinds",
        "500,503-slowdown,throttle,reset,lost-reply",
        "--seed",
        "7",
    ]);
    let (mut a, log_a) = daemon(&sb, &policy, "a");
    let (mut b, log_b) = daemon(&sb, &policy, "b");

    let started = Instant::now();
    let (ops, manual, manual_points) = manual_loop(&sb, &policy, started).await;

    // Faults off (their counters first), then the daemons stop (SIGTERM, within the grace).
    let faults = sb.faults(&[]);
    let injected: u64 = faults["injected"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    sb.faults(&["--rate", "0"]);
    for c in [&mut a, &mut b] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    for c in [&mut a, &mut b] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "a daemon did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Each firing finished once across both daemons.
    let mut firings: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut daemon_backups_ok = 0;
    for log in [&log_a, &log_b] {
        for (job, tick, outcome) in finished_firings(log) {
            if job.ends_with("/backup") && outcome == "succeeded" {
                daemon_backups_ok += 1;
            }
            *firings.entry((job, tick)).or_default() += 1;
        }
    }
    let duplicates: Vec<_> = firings.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "firings run twice: {duplicates:?}");

    // Every point left verifies, secrets decrypted (drd with the operator's identity).
    let out = sb.run(
        &[
            "--policy",
            &policy,
            "--output",
            "json",
            "verify",
            "--all",
            "--identity",
            identity.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "a point is broken: {}", text(&out));

    let (kept, decrypted) = check_store(&sb, &identity).await;

    // No process is left: the daemons exited and nothing mentions the policy.
    assert!(processes_mentioning(&policy).is_empty(), "processes left");

    let daemon_firings = firings.len();
    for log in [&log_a, &log_b] {
        println!(
            "soak: daemon failures in {}: {:#?}",
            log.display(),
            failure_reasons(log)
        );
    }
    let points_made = manual_points.len() + daemon_backups_ok;
    println!(
        "soak: operations {} (manual {ops}: {manual:?}; daemon firings {daemon_firings}), \
         faults injected {injected} of {} requests matched, points made {points_made} \
         ({} manual, {daemon_backups_ok} scheduled), points kept {}, secret backups decrypted \
         with age {decrypted}, broken points 0, duplicate firings 0, in {:?}",
        ops + daemon_firings,
        faults["matched"],
        manual_points.len(),
        kept,
        started.elapsed()
    );
    assert!(
        ops + daemon_firings >= 200,
        "{} operations",
        ops + daemon_firings
    );
    assert!(injected > 0, "no fault was injected");
    assert!(points_made >= 50, "{points_made} points made");
}
