//! Procedure 2 end to end on a sandbox: pins, a corrupted version forced live, `drd rollback`,
//! compensation, SIGKILL after every step with `--resume`, the run lease, and manual approval.
//! End states are checked with second clients.

use drd_e2e::{bootstrap, text, variant, Sandbox};
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;

const KEY: &str = "sk-e2e-rollback-0123456789";

/// A second good build: the real bootstrap with bytes appended (a different CodeSha256; the
/// ELF loader ignores trailing data).
struct World {
    sb: Sandbox,
    policy: String,
    name: String,
    url: String,
}

impl World {
    fn drd(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["--policy", self.policy.as_str()];
        a.extend_from_slice(args);
        self.sb.run(&a, "")
    }

    fn drd_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut a = vec!["--policy", self.policy.as_str()];
        a.extend_from_slice(args);
        self.sb.run_env(&a, "", env)
    }

    fn function(&self) -> String {
        format!("{}-fn", self.name)
    }

    async fn live(&self) -> String {
        self.sb
            .lambda("us-east-1")
            .await
            .get_alias()
            .function_name(self.function())
            .name("live")
            .send()
            .await
            .unwrap()
            .function_version()
            .unwrap()
            .to_string()
    }

    async fn force_live(&self, v: &str) {
        self.sb
            .lambda("us-east-1")
            .await
            .update_alias()
            .function_name(self.function())
            .name("live")
            .function_version(v)
            .send()
            .await
            .unwrap();
    }

    async fn url_status(&self) -> u16 {
        self.sb
            .call_signed(&self.url, &json!({"transcript": "Agent: a\nCustomer: b"}))
            .await
            .0
    }

    /// Every journal key of the store, by run.
    async fn journal_keys(&self) -> Vec<String> {
        let s3 = self.sb.s3("us-west-2").await;
        let out = s3
            .list_objects_v2()
            .bucket(format!("{}-points", self.name))
            .prefix(format!("{}/journal/", self.name))
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// The run that is not among `before`.
    async fn new_run(&self, before: &[String]) -> String {
        self.runs()
            .await
            .into_iter()
            .find(|r| !before.contains(r))
            .expect("a new run")
    }

    async fn runs(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .journal_keys()
            .await
            .iter()
            .filter_map(|k| k.split('/').nth(2).map(str::to_string))
            .collect();
        r.dedup();
        r
    }
}

/// Deploy v1 and v2 (good, pinned by deploy) and a corrupted v3 (its bootstrap exits), which the
/// deploy refuses to make live.
async fn world(name: &str) -> World {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let policy = sb.policy(name).to_str().unwrap().to_string();
    let mut url = String::new();
    for (i, boot) in [bootstrap(), variant(&sb, "v2")].iter().enumerate() {
        let out = sb.run(
            &[
                "--policy",
                &policy,
                "deploy",
                "--bootstrap",
                boot.to_str().unwrap(),
                "--output",
                "json",
            ],
            KEY,
        );
        assert!(out.status.success(), "{}", text(&out));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["version"], (i + 1).to_string());
        assert_eq!(r["pinned"], true, "{r}");
        url = r["function_url"].as_str().unwrap().to_string();
    }
    let broken = sb.dir.path().join("broken-bootstrap");
    std::fs::write(&broken, "#!/bin/sh\necho corrupted package >&2\nexit 3\n").unwrap();
    let out = sb.run(
        &[
            "--policy",
            &policy,
            "deploy",
            "--skip-static-check",
            "--bootstrap",
            broken.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    World {
        sb,
        policy,
        name: name.to_string(),
        url,
    }
}

// One end-to-end story, told in the order an operator lives it; its steps share state.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn rollback_heals_a_corrupted_version_through_the_unchanged_url() {
    drd_e2e::require_failpoints();
    let w = world("rb-a").await;
    assert_eq!(w.live().await, "2");

    // The pins, read with a second client: versions 1 and 2 with their real CodeSha256.
    let lambda = w.sb.lambda("us-east-1").await;
    let pins: Value =
        w.sb.get_json("us-west-2", "rb-a-points", "rb-a/pins/rb-a-fn.json")
            .await;
    let pinned: Vec<&str> = pins["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(pinned, ["1", "2"]);
    for p in pins["pins"].as_array().unwrap() {
        let c = lambda
            .get_function_configuration()
            .function_name("rb-a-fn")
            .qualifier(p["version"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(p["code_sha256"].as_str(), c.code_sha256());
        assert_eq!(p["probes"].as_array().unwrap().len(), 2);
    }
    // `drd pin` on an already pinned, unchanged version writes nothing.
    let out = w.drd(&["pin", "--version", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already, unchanged"), "{}", text(&out));
    // The broken version 3 cannot be pinned.
    let out = w.drd(&["pin", "--version", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("failed probe T0"), "{}", text(&out));

    // The corruption: v3 forced live (as a deploy that skipped probes would); the URL fails.
    w.force_live("3").await;
    assert_eq!(w.url_status().await, 502);

    // Dry run: the plan names the move, nothing changes, nothing is journaled.
    let out = w.drd(&["rollback", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("WRITE  [move-alias] move alias live to version 2"),
        "{plan}"
    );
    assert!(plan.contains("live_version=3"), "{plan}");
    assert_eq!(w.live().await, "3");
    assert!(w.journal_keys().await.is_empty());
    let out = w.drd(&["rollback", "--dry-run", "--output", "json"]);
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["writes"], 1);

    // A pin whose CodeSha256 no longer matches its version (the pin file says version 2 holds
    // version 1's code): the rollback stops at verify-code and live stays where it was.
    let pins_key = "rb-a/pins/rb-a-fn.json";
    let s3 = w.sb.s3("us-west-2").await;
    let mut tampered = pins.clone();
    tampered["pins"][1]["code_sha256"] = pins["pins"][0]["code_sha256"].clone();
    let put = |body: &Value| {
        s3.put_object()
            .bucket("rb-a-points")
            .key(pins_key)
            .body(serde_json::to_vec(body).unwrap().into())
            .send()
    };
    put(&tampered).await.unwrap();
    let out = w.drd(&["rollback"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("version 2 has CodeSha256")
            && text(&out).contains(&format!(
                "not the pinned {}",
                pins["pins"][0]["code_sha256"].as_str().unwrap()
            )),
        "{}",
        text(&out)
    );
    assert_eq!(w.live().await, "3");
    put(&pins).await.unwrap();

    // The rollback.
    let out = w.drd(&["rollback", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["from"], "3");
    assert_eq!(r["to"], "2");
    let healthy = r["healthy_after_ms"].as_u64().unwrap();
    assert!(healthy > 0 && healthy < 30_000, "{r}");
    eprintln!("rollback: healthy after {healthy} ms");
    assert_eq!(r["run"]["outcome"], "succeeded");

    // Second client: live on 2, the same URL, which answers again.
    assert_eq!(w.live().await, "2");
    let url_now = lambda
        .get_function_url_config()
        .function_name("rb-a-fn")
        .qualifier("live")
        .send()
        .await
        .unwrap()
        .function_url()
        .to_string();
    assert_eq!(url_now, w.url);
    assert_eq!(w.url_status().await, 200);

    // The journal in the store: every step started and succeeded once, then the run finished.
    let run = r["run"]["run"].as_str().unwrap();
    let keys = w.journal_keys().await;
    for step in ["observe", "choose", "verify-code", "move-alias", "probe"] {
        for ev in ["started", "succeeded"] {
            let n = keys
                .iter()
                .filter(|k| k.contains(run) && k.ends_with(&format!("-{ev}-{step}.json")))
                .count();
            assert_eq!(n, 1, "{ev} {step}: {keys:?}");
        }
    }
    assert!(keys.iter().any(|k| k.ends_with("-run_finished.json")));
    let out = w.drd(&["runbook", "status", run, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["run"]["outcome"], "succeeded");
    // A local copy of the journal, one JSON line per transition.
    let local = w.sb.dir.path().join(format!("state/journal/{run}.jsonl"));
    let lines = std::fs::read_to_string(&local).unwrap();
    assert_eq!(
        lines.lines().count(),
        keys.iter().filter(|k| k.contains(run)).count()
    );
    // Resuming a finished run does nothing, and reports the run's own measure again.
    let out = w.drd(&["rollback", "--resume", run]);
    assert!(out.status.success(), "{}", text(&out));
    let line = format!(
        "rolled back live from version 3 to 2: healthy through the Function URL {:.2}s after the start",
        healthy as f64 / 1000.0
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&line),
        "{line}\n{}",
        text(&out)
    );
    assert_eq!(
        w.journal_keys()
            .await
            .iter()
            .filter(|k| k.contains(run))
            .count(),
        keys.iter().filter(|k| k.contains(run)).count()
    );

    // `drd pin --deep` (live's version by default) adds T2, one LLM call, to version 2's pin;
    // with the key revoked at the provider T2 fails and version 1's pin is left as it was.
    let out = w.drd(&["pin", "--deep"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("version 2 pinned (CodeSha256")
            && text(&out).contains("probes T0,T1,T2"),
        "{}",
        text(&out)
    );
    w.sb.revoke_key(KEY);
    let out = w.drd(&["pin", "--deep", "--version", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("T2"), "{}", text(&out));
    w.sb.allow_key(KEY);
    let pins: Value = w.sb.get_json("us-west-2", "rb-a-points", pins_key).await;
    let tiers = |v: &str| {
        pins["pins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["version"] == v)
            .unwrap()["probes"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((tiers("1"), tiers("2")), (2, 3), "{pins}");

    // An unpinned target is refused without --force; nothing moves.
    let out = w.drd(&["rollback", "--to", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("version 3 is not pinned"),
        "{}",
        text(&out)
    );
    assert_eq!(w.live().await, "2");

    // Forced onto the broken version, the probe fails and live is moved back (compensation).
    let out = w.drd(&["rollback", "--to", "3", "--force", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "compensated", "{r}");
    let back = r["run"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "move-back")
        .unwrap();
    assert_eq!(back["status"], "succeeded");
    assert_eq!(w.live().await, "2");
    assert_eq!(w.url_status().await, 200);

    // Killed right after the compensation, resumed: the failed probe is not run again (it could
    // pass by chance and report a rollback that was undone); the run ends compensated.
    let before = w.runs().await;
    let out = w.drd_env(
        &["rollback", "--to", "3", "--force"],
        &[("DRD_FAILPOINT", "move-back:after-journal")],
    );
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    let run = w.new_run(&before).await;
    let started_probe = |keys: &[String]| {
        keys.iter()
            .filter(|k| k.contains(&run) && k.ends_with("-started-probe.json"))
            .count()
    };
    let probes_before = started_probe(&w.journal_keys().await);
    // Inputs given on resume must match the run's: a different target is refused.
    let out = w.drd(&["rollback", "--resume", &run, "--to", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("different inputs"), "{}", text(&out));
    let out = w.drd(&["rollback", "--resume", &run, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "compensated", "{r}");
    assert_eq!(started_probe(&w.journal_keys().await), probes_before);
    assert_eq!(w.live().await, "2");

    // A recovery point carries the packages of every pinned version (rollback targets), not
    // the broken, unpinned one.
    let out = w.drd(&["backup", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m: Value =
        w.sb.get_json(
            "us-west-2",
            "rb-a-points",
            &format!("rb-a/points/{id}.json"),
        )
        .await;
    let mut used: Vec<String> = m["code"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["used_by"].as_array().unwrap().clone())
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    used.sort();
    assert_eq!(used, ["live (2)", "pinned (1)", "pinned (2)"], "{m}");
    assert_eq!(m["code"].as_array().unwrap().len(), 2);
}

/// SIGKILL after each step of lambda-rollback (after its effect but before its journal entry,
/// and after the entry), then `--resume`: always the same end state as an uninterrupted run, and
/// a step whose success was journaled never runs again.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_killed_after_any_step_resumes_to_the_same_end_state() {
    drd_e2e::require_failpoints();
    let w = world("rb-crash").await;
    for step in ["observe", "choose", "verify-code", "move-alias", "probe"] {
        for when in ["after-action", "after-journal"] {
            w.force_live("3").await;
            let before = w.runs().await;
            let fp = format!("{step}:{when}");
            let out = w.drd_env(&["rollback"], &[("DRD_FAILPOINT", &fp)]);
            assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text(&out));
            let run = w
                .runs()
                .await
                .into_iter()
                .find(|r| !before.contains(r))
                .unwrap_or_else(|| panic!("{fp}: no new run"));
            let out = w.drd(&["rollback", "--resume", &run, "--output", "json"]);
            assert!(out.status.success(), "{fp}: {}", text(&out));
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(r["run"]["outcome"], "succeeded", "{fp}: {r}");
            assert_eq!(r["run"]["resumed"], true);
            assert_eq!(r["to"], "2", "{fp}: {r}");
            assert_eq!(w.live().await, "2", "{fp}");
            assert_eq!(w.url_status().await, 200, "{fp}");
            let keys: Vec<String> = w
                .journal_keys()
                .await
                .into_iter()
                .filter(|k| k.contains(&run))
                .collect();
            let count = |ev: &str, s: &str| {
                keys.iter()
                    .filter(|k| k.ends_with(&format!("-{ev}-{s}.json")))
                    .count()
            };
            for s in ["observe", "choose", "verify-code", "move-alias", "probe"] {
                assert_eq!(count("succeeded", s), 1, "{fp} {s}: {keys:?}");
            }
            // Journaled before the kill: never started again. Killed before its entry: ran
            // again (idempotently) exactly once more.
            let expected = if when == "after-journal" { 1 } else { 2 };
            assert_eq!(count("started", step), expected, "{fp}: {keys:?}");
        }
    }
}

/// The machine running a rollback dies (SIGKILL, host id `laptop-a`); a colleague on another
/// machine (`laptop-b`, its own state directory) resumes the run within one lease TTL: the
/// resume waits for the dead holder's lease (another host cannot see that its PID is gone)
/// instead of failing, then finishes the run.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_on_one_host_is_resumed_from_another_within_one_ttl() {
    drd_e2e::require_failpoints();
    let w = world("rb-host").await;
    w.force_live("3").await;
    let before = w.runs().await;
    let out = w.drd_env(
        &["rollback"],
        &[
            ("DRD_FAILPOINT", "move-alias:after-action"),
            ("DRD_HOST_ID", "laptop-a"),
            ("DRD_LOCK_TTL", "6s"),
        ],
    );
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    let run = w.new_run(&before).await;
    let state_b = w.sb.dir.path().join("state-laptop-b");
    let started = std::time::Instant::now();
    let out = w.drd_env(
        &["rollback", "--resume", &run, "--output", "json"],
        &[
            ("DRD_HOST_ID", "laptop-b"),
            ("DRD_STATE_DIR", state_b.to_str().unwrap()),
            ("DRD_LOCK_TTL", "6s"),
        ],
    );
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("waiting for the lease"),
        "the resume waited for laptop-a's lease: {}",
        text(&out)
    );
    assert!(
        took < std::time::Duration::from_secs(6 + 10),
        "resumed {took:?} after the kill: more than one TTL (6 s) plus the run"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "succeeded", "{r}");
    assert_eq!(r["run"]["resumed"], true);
    assert_eq!(w.live().await, "2");
    // The lease's record names laptop-b's run, released, with a token above laptop-a's.
    let lease =
        w.sb.get_json(
            "us-west-2",
            "rb-host-points",
            "rb-host/locks/runbook-lambda-rollback",
        )
        .await;
    assert_eq!(lease["host"], "laptop-b", "{lease}");
    assert!(lease["released_by"].is_string(), "{lease}");
    assert!(lease["token"].as_u64().unwrap() >= 2, "{lease}");
    assert!(
        std::fs::read_dir(&state_b).is_ok(),
        "laptop-b kept its own journal copy"
    );
}

const GATED: &str = r#"
name = "gated-pin"
title = "Pin the live version after an operator agrees"

[[step]]
id = "observe"
title = "Read live"
action = "lambda.observe"

[[step]]
id = "approve"
title = "Operator approval"
action = "manual.approve"
args = { message = "pin version ${steps.observe.live_version} of ${policy.function}?" }
timeout = "2s"

[[step]]
id = "pin"
title = "Pin it"
action = "lambda.pin"
args = { version = "${steps.observe.live_version}" }
check = "pin.exists"
check_args = { version = "${steps.observe.live_version}" }
"#;

/// A custom runbook with a manual approval: the run pauses, a second run is refused while the
/// first holds the lease (exit 3), approval plus `--resume` finishes it; `validate` rejects a
/// broken runbook file with its line.
#[tokio::test(flavor = "multi_thread")]
async fn approval_pauses_a_run_and_resume_finishes_it() {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let policy = sb.policy("rb-gate").to_str().unwrap().to_string();
    let out = sb.run(
        &[
            "--policy",
            &policy,
            "deploy",
            "--bootstrap",
            bootstrap().to_str().unwrap(),
        ],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let dir = sb.dir.path().join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gated-pin.toml"), GATED).unwrap();
    let rbdir = dir.to_str().unwrap().to_string();
    let drd = |args: &[&str]| {
        let mut a = vec!["--policy", policy.as_str(), "--runbooks", rbdir.as_str()];
        a.extend_from_slice(args);
        sb.run(&a, "")
    };
    let out = drd(&["validate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("runbook  gated-pin: ok (3 steps"),
        "{}",
        text(&out)
    );

    // Remove the deploy's pin so this run's pin is a real write.
    let s3 = sb.s3("us-west-2").await;
    s3.delete_object()
        .bucket("rb-gate-points")
        .key("rb-gate/pins/rb-gate-fn.json")
        .send()
        .await
        .unwrap();

    // No approval within 2 s: the run pauses (exit 1, outcome waiting, not finished).
    let out = drd(&["runbook", "run", "gated-pin", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "waiting");
    let run = r["run"].as_str().unwrap().to_string();
    assert!(text(&out).contains(&format!("drd runbook approve {run}")));

    // While a run holds the lease, another is refused with exit 3 naming the holder.
    let mut slow = sb.drd();
    slow.args([
        "--policy",
        &policy,
        "--runbooks",
        &rbdir,
        "runbook",
        "run",
        "gated-pin",
        "--resume",
        &run,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = slow.spawn().unwrap();
    // Once the resumed run has journaled its resumption, it holds the lease.
    let mut resumed = false;
    for _ in 0..100 {
        let keys = s3
            .list_objects_v2()
            .bucket("rb-gate-points")
            .prefix(format!("rb-gate/journal/{run}/"))
            .send()
            .await
            .unwrap();
        if keys
            .contents()
            .iter()
            .any(|o| o.key().unwrap_or("").ends_with("-run_resumed.json"))
        {
            resumed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(resumed, "the resumed run never started");
    let out = drd(&["runbook", "run", "gated-pin"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("drd runbook gated-pin"),
        "{}",
        text(&out)
    );
    let _ = child.wait();

    // Approve (only manual steps can be approved), then resume: the pin is written.
    let out = drd(&["runbook", "approve", &run, "pin"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = drd(&["runbook", "approve", &run, "approve", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["already_approved"], false, "{a}");
    let out = drd(&["runbook", "approve", &run, "approve", "--output", "json"]);
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["already_approved"], true, "{a}");
    let out = drd(&[
        "runbook",
        "run",
        "gated-pin",
        "--resume",
        &run,
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "succeeded", "{r}");
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps[0]["status"], "done_earlier");
    assert_eq!(steps[2]["status"], "succeeded");
    let pins: Value = sb
        .get_json(
            "us-west-2",
            "rb-gate-points",
            "rb-gate/pins/rb-gate-fn.json",
        )
        .await;
    assert_eq!(pins["pins"][0]["version"], "1");

    // A broken runbook file: validate exits 2 with its file and line.
    std::fs::write(
        dir.join("gated-pin.toml"),
        GATED.replace("action = \"lambda.pin\"", "action = \"lambda.pinn\""),
    )
    .unwrap();
    let out = drd(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gated-pin.toml:20:") && err.contains("unknown action \"lambda.pinn\""),
        "{err}"
    );
}
