//! `drd deploy` and `drd status` end to end on a sandbox, checked with second clients.

use drd::workload::package::{self, Package};
use drd_e2e::{bootstrap, text, Sandbox};
use serde_json::{json, Value};

const KEY: &str = "sk-e2e-0123456789abcdef";

fn code_sha256_of_bootstrap() -> String {
    Package::from_bootstrap(&std::fs::read(bootstrap()).unwrap())
        .unwrap()
        .code_sha256()
}

// One end-to-end story, told in the order an operator lives it; its steps share state.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn deploy_serves_all_tiers_and_a_second_deploy_changes_nothing() {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let policy = sb.policy("clf-a");
    let policy = policy.to_str().unwrap();
    let boot = bootstrap();
    let boot = boot.to_str().unwrap();

    let out = sb.run(
        &[
            "--policy",
            policy,
            "deploy",
            "--bootstrap",
            boot,
            "--output",
            "json",
        ],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["changed"], true);
    assert_eq!(report["stack_action"], "created");
    assert_eq!(report["secret_created"], true);
    let url = report["function_url"].as_str().unwrap().to_string();

    // Second clients: the stack, the alias, the code, the secret, the URL.
    let cf = sb.cloudformation("us-east-1").await;
    let stack = cf
        .describe_stacks()
        .stack_name("clf-a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stack.stacks()[0].stack_status().unwrap().as_str(),
        "CREATE_COMPLETE"
    );
    let lambda = sb.lambda("us-east-1").await;
    let alias = lambda
        .get_alias()
        .function_name("clf-a-fn")
        .name("live")
        .send()
        .await
        .unwrap();
    let version = alias.function_version().unwrap().to_string();
    let conf = lambda
        .get_function_configuration()
        .function_name("clf-a-fn")
        .qualifier(&version)
        .send()
        .await
        .unwrap();
    assert_eq!(conf.code_sha256().unwrap(), code_sha256_of_bootstrap());
    assert_eq!(conf.runtime().unwrap().as_str(), "provided.al2023");
    assert_eq!(conf.memory_size(), Some(512));
    assert_eq!(conf.timeout(), Some(60));
    let url_conf = lambda
        .get_function_url_config()
        .function_name("clf-a-fn")
        .qualifier("live")
        .send()
        .await
        .unwrap();
    assert_eq!(url_conf.function_url(), url);
    let secret = sb
        .secrets("us-east-1")
        .await
        .get_secret_value()
        .secret_id("openai-api-key")
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(secret.secret_string().unwrap()).unwrap();
    assert_eq!(stored, json!({"OPENAI_API_KEY": KEY}));
    // The package is stored content-addressed in the region's artifact bucket.
    let s3 = sb.s3("us-east-1").await;
    let hex = package::hex_of_code_sha256(&code_sha256_of_bootstrap()).unwrap();
    let obj = s3
        .get_object()
        .bucket("clf-a-artifacts-us-east-1")
        .key(package::object_key(&hex))
        .send()
        .await
        .unwrap();
    let zip = obj.body.collect().await.unwrap().into_bytes();
    assert_eq!(Package::from_zip(zip.to_vec()).sha256_hex, hex);

    // The Function URL is AWS_IAM: a plain client is refused, a signed caller gets T0-T2.
    let (s, b) = sb.call_url(&url, &json!({"transcript": "Agent: a"})).await;
    assert_eq!((s, b["Message"].as_str()), (403, Some("Forbidden")), "{b}");
    let conf = sb
        .lambda("us-east-1")
        .await
        .get_function_url_config()
        .function_name("clf-a-fn")
        .qualifier("live")
        .send()
        .await
        .unwrap();
    assert_eq!(conf.auth_type().as_str(), "AWS_IAM");
    let (s, b) = sb.call_signed(&url, &json!({})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("Missing required field: transcript"))
    );
    let t1 = "Agent: Hello\nCustomer: Hi";
    let (s, b) = sb.call_signed(&url, &json!({"transcript": t1})).await;
    assert_eq!((s, b["transcript"].as_str()), (200, Some(t1)));
    let (s, b) = sb
        .call_signed(
            &url,
            &json!({"transcript": "Speaker 0: Hello\nSpeaker 1: Hi\nSpeaker 0: Bye"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["transcript"], "Agent: Hello\nCustomer: Hi\nAgent: Bye");

    // status --deep: every tier passes, stable JSON.
    let out = sb.run(
        &["--policy", policy, "status", "--deep", "--output", "json"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["schema"], 1);
    assert_eq!(st["healthy"], true);
    assert_eq!(st["live"]["version"], version.as_str());
    assert_eq!(st["alias_drift"], false);
    let tiers: Vec<&str> = st["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["T0", "T1", "T2"]);
    // The deploy pinned the live version; no recovery point exists yet.
    assert_eq!(st["recovery"]["pins"], json!([version.as_str()]));
    assert_eq!(st["recovery"]["live_pinned"], true);
    assert_eq!(st["recovery"]["newest_point"], Value::Null);
    let out = sb.run(&["--policy", policy, "backup", "--output", "json"], "");
    assert!(out.status.success(), "{}", text(&out));
    let point = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].clone();
    let out = sb.run(&["--policy", policy, "status", "--output", "json"], "");
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["recovery"]["newest_point"]["id"], point);
    assert!(
        st["recovery"]["newest_point"]["age_seconds"]
            .as_u64()
            .unwrap()
            < 60
    );

    // Unchanged sources: nothing changes, and it says so; no new object in the artifact bucket.
    let objects_before = s3
        .list_objects_v2()
        .bucket("clf-a-artifacts-us-east-1")
        .send()
        .await
        .unwrap()
        .key_count();
    let out = sb.run(&["--policy", policy, "deploy", "--bootstrap", boot], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("no changes"),
        "{}",
        text(&out)
    );
    let objects_after = s3
        .list_objects_v2()
        .bucket("clf-a-artifacts-us-east-1")
        .send()
        .await
        .unwrap()
        .key_count();
    assert_eq!(objects_before, objects_after);
    let alias = lambda
        .get_alias()
        .function_name("clf-a-fn")
        .name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(alias.function_version().unwrap(), version);

    // A revoked key breaks T2 (and only T2): status exits 1.
    let out = sb.run(&["sandbox", "llm", "revoke"], KEY);
    assert!(out.status.success(), "{}", text(&out));
    let out = sb.run(&["--policy", policy, "status", "--deep"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("probe T2     FAIL"),
        "{}",
        text(&out)
    );

    // A new key in the secret reaches the warm function without a redeploy: on the stub's 401
    // it re-reads the secret (AWSCURRENT) and retries once.
    let rotated = "sk-e2e-rotated-42";
    sb.allow_key(rotated);
    sb.secrets("us-east-1")
        .await
        .put_secret_value()
        .secret_id("openai-api-key")
        .secret_string(json!({"OPENAI_API_KEY": rotated}).to_string())
        .send()
        .await
        .unwrap();
    let out = sb.run(&["--policy", policy, "status", "--deep"], "");
    assert!(out.status.success(), "{}", text(&out));
    let (s, b) = sb
        .call_signed(&url, &json!({"transcript": "Speaker 0: a\nSpeaker 1: b"}))
        .await;
    assert_eq!(
        (s, b["transcript"].as_str()),
        (200, Some("Agent: a\nCustomer: b")),
        "{b}"
    );
    let alias = lambda
        .get_alias()
        .function_name("clf-a-fn")
        .name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(
        alias.function_version().unwrap(),
        version,
        "no redeploy happened"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_that_will_not_start_never_goes_live_and_gives_502() {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let policy = sb.policy("clf-b");
    let policy = policy.to_str().unwrap();
    let boot = bootstrap();
    let out = sb.run(
        &[
            "--policy",
            policy,
            "deploy",
            "--bootstrap",
            boot.to_str().unwrap(),
        ],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let lambda = sb.lambda("us-east-1").await;
    let good = lambda
        .get_alias()
        .function_name("clf-b-fn")
        .name("live")
        .send()
        .await
        .unwrap();
    let good = good.function_version().unwrap().to_string();

    // A corrupted package: its bootstrap exits at once.
    let broken = sb.dir.path().join("broken-bootstrap");
    std::fs::write(&broken, "#!/bin/sh\necho corrupted package >&2\nexit 3\n").unwrap();
    let out = sb.run(
        &[
            "--policy",
            policy,
            "deploy",
            "--skip-static-check",
            "--bootstrap",
            broken.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed probe T0"), "{err}");
    assert!(
        err.contains(&format!("live still points to {good}")),
        "{err}"
    );
    let alias = lambda
        .get_alias()
        .function_name("clf-b-fn")
        .name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(alias.function_version().unwrap(), good);

    // The URL still serves the good version.
    let url = lambda
        .get_function_url_config()
        .function_name("clf-b-fn")
        .qualifier("live")
        .send()
        .await
        .unwrap()
        .function_url()
        .to_string();
    let (s, _) = sb
        .call_signed(&url, &json!({"transcript": "Agent: a\nCustomer: b"}))
        .await;
    assert_eq!(s, 200);

    // Forced onto the broken version (by a second client), the URL answers 502 with the reason.
    let versions = lambda
        .list_versions_by_function()
        .function_name("clf-b-fn")
        .send()
        .await
        .unwrap();
    let newest = versions
        .versions()
        .iter()
        .filter_map(|v| v.version().and_then(|n| n.parse::<u32>().ok()))
        .max()
        .unwrap();
    assert!(newest.to_string() != good);
    lambda
        .update_alias()
        .function_name("clf-b-fn")
        .name("live")
        .function_version(newest.to_string())
        .send()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (s, b) = sb
        .call_signed(&url, &json!({"transcript": "Agent: a\nCustomer: b"}))
        .await;
    assert_eq!(s, 502, "{b}");
    assert_eq!(b["error"], "Function failed to start");
    assert!(
        b["message"].as_str().unwrap().contains("corrupted package"),
        "{b}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let out = sb.run(&["--policy", policy, "status"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_exit_2_with_one_clear_line_and_deploy_nothing() {
    let sb = Sandbox::start();
    let boot = bootstrap();
    let boot = boot.to_str().unwrap();
    let good = std::fs::read_to_string(sb.policy("clf-c")).unwrap();

    // 1. A policy with an unknown key.
    let bad_policy = sb.dir.path().join("bad.toml");
    std::fs::write(
        &bad_policy,
        good.replace("[artifacts]\n", "[artifacts]\nbukcet = \"x\"\n"),
    )
    .unwrap();
    let out = sb.run(
        &[
            "--policy",
            bad_policy.to_str().unwrap(),
            "deploy",
            "--bootstrap",
            boot,
        ],
        KEY,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.toml:8:") && err.contains("unknown field `bukcet`"),
        "{err}"
    );

    // 2. A broken template.
    let bad_template = sb.dir.path().join("stack.yaml");
    std::fs::write(
        &bad_template,
        "Parameters:\n  CodeBucket: {Type: String}\nResources: {}\n",
    )
    .unwrap();
    let p2 = sb.dir.path().join("p2.toml");
    let tpl_line = good.lines().find(|l| l.starts_with("template")).unwrap();
    std::fs::write(
        &p2,
        good.replace(
            tpl_line,
            &format!("template = \"{}\"", bad_template.display()),
        ),
    )
    .unwrap();
    let out = sb.run(
        &[
            "--policy",
            p2.to_str().unwrap(),
            "deploy",
            "--bootstrap",
            boot,
        ],
        KEY,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("stack.yaml:1:1: Parameters:") && err.contains("FunctionName"),
        "{err}"
    );

    // 3. Bad secret inputs: empty, and JSON without the expected field.
    let policy = sb.dir.path().join("clf-c.toml");
    for input in ["", "{\"API_KEY\": \"sk-hidden-value\"}"] {
        let out = sb.run(
            &[
                "--policy",
                policy.to_str().unwrap(),
                "deploy",
                "--bootstrap",
                boot,
            ],
            input,
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("openai-api-key"), "{err}");
        assert!(!err.contains("sk-hidden-value"), "{err}");
    }

    // 4. A dynamically linked bootstrap (this test binary's neighbour, drd itself).
    let out = sb.run(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "deploy",
            "--bootstrap",
            drd_e2e::drd_bin().to_str().unwrap(),
        ],
        KEY,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dynamically linked"));

    // Nothing was written: no bucket, no stack, no secret, no function.
    let s3 = sb.s3("us-east-1").await;
    assert!(s3.list_buckets().send().await.unwrap().buckets().is_empty());
    let cf = sb.cloudformation("us-east-1").await;
    assert!(cf
        .list_stacks()
        .send()
        .await
        .unwrap()
        .stack_summaries()
        .is_empty());
    let sm = sb.secrets("us-east-1").await;
    assert!(sm
        .list_secrets()
        .send()
        .await
        .unwrap()
        .secret_list()
        .is_empty());
    let lambda = sb.lambda("us-east-1").await;
    assert!(lambda
        .list_functions()
        .send()
        .await
        .unwrap()
        .functions()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_never_appears_in_output_logs_or_arguments() {
    let sb = Sandbox::start();
    let key = "sk-leakcheck-5f2b9c1e7a";
    sb.allow_key(key);
    let policy = sb.policy("clf-d");
    let policy = policy.to_str().unwrap();
    let boot = bootstrap();
    let mut seen = String::new();
    for args in [
        vec![
            "--policy",
            policy,
            "-vv",
            "deploy",
            "--bootstrap",
            boot.to_str().unwrap(),
        ],
        vec![
            "--policy", policy, "-vv", "--output", "json", "status", "--deep",
        ],
        vec!["--policy", policy, "-vv", "--log-format", "json", "check"],
    ] {
        let out = sb.run(&args, key);
        assert!(out.status.success(), "{}", text(&out));
        seen.push_str(&text(&out));
        // No process (drd, moto, the host, the function) carries the key in its arguments.
        assert!(drd_e2e::processes_mentioning(key).is_empty());
    }
    assert!(seen.contains("healthy"), "the runs produced output: {seen}");
    assert!(!seen.contains(key), "the key leaked into drd's output");
    // Nor in any sandbox log (moto, host, function instances).
    for e in std::fs::read_dir(sb.sandbox_dir()).unwrap().flatten() {
        if e.path()
            .extension()
            .is_some_and(|x| x == "log" || x == "json")
        {
            let t = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(
                !t.contains(key),
                "the key leaked into {}",
                e.path().display()
            );
        }
    }
}
