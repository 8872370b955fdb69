//! `drd sandbox` lifecycle: idempotent up, stale state, status, env, down reaps everything.

use drd_e2e::{bootstrap, processes_mentioning, text, Sandbox};
use serde_json::Value;

fn state(sb: &Sandbox) -> Value {
    serde_json::from_slice(&std::fs::read(sb.sandbox_dir().join("sandbox.json")).unwrap()).unwrap()
}

fn alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread")]
async fn up_twice_is_harmless_stale_state_is_replaced_and_down_reaps_everything() {
    let sb = Sandbox::start();
    let first = state(&sb);

    // Starting twice is harmless: same processes, same environment.
    let out = sb.run(&["sandbox", "up", "--output", "json"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert_eq!(state(&sb), first);
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env["AWS_ENDPOINT_URL"], sb.var("AWS_ENDPOINT_URL"));

    // env and status agree with up.
    let out = sb.run(&["sandbox", "env"], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!(
        "export AWS_ENDPOINT_URL={}",
        sb.var("AWS_ENDPOINT_URL")
    )));
    let out = sb.run(&["sandbox", "status"], "");
    assert!(out.status.success(), "{}", text(&out));

    // Run a function so the host has a child process to reap.
    let key = "sk-sandbox-test-1";
    sb.allow_key(key);
    let policy = sb.policy("clf-s");
    let out = sb.run(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "deploy",
            "--bootstrap",
            bootstrap().to_str().unwrap(),
        ],
        key,
    );
    assert!(out.status.success(), "{}", text(&out));
    let code_dir = sb.sandbox_dir().join("code");
    let code_dir = code_dir.to_str().unwrap();
    assert!(
        !processes_mentioning(code_dir).is_empty(),
        "a function instance runs"
    );

    // Kill both processes behind the sandbox's back: the state is stale.
    let (moto, host) = (
        first["moto"]["pid"].as_i64().unwrap(),
        first["host"]["pid"].as_i64().unwrap(),
    );
    for pid in [moto, host] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .ok();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (alive(moto) || alive(host)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The host's children die with it (PDEATHSIG).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_mentioning(code_dir).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        processes_mentioning(code_dir).is_empty(),
        "function instances outlived the host"
    );
    let out = sb.run(&["sandbox", "status"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = sb.run(&["sandbox", "env"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sandbox up"));

    // up detects the stale state and starts fresh processes.
    let out = sb.run(&["sandbox", "up"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stale"),
        "{}",
        text(&out)
    );
    let second = state(&sb);
    assert_ne!(second["moto"]["pid"], first["moto"]["pid"]);
    let (moto2, host2) = (
        second["moto"]["pid"].as_i64().unwrap(),
        second["host"]["pid"].as_i64().unwrap(),
    );
    assert!(alive(moto2) && alive(host2));

    // down stops both, removes the state, and a second down is harmless.
    let out = sb.run(&["sandbox", "down"], "");
    assert!(out.status.success(), "{}", text(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (alive(moto2) || alive(host2)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(moto2) && !alive(host2));
    assert!(!sb.sandbox_dir().join("sandbox.json").exists());
    let out = sb.run(&["sandbox", "down"], "");
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_serves_invoke_with_a_qualifier_and_names_missing_functions() {
    let sb = Sandbox::start();
    let key = "sk-sandbox-test-2";
    sb.allow_key(key);
    let policy = sb.policy("clf-i");
    let out = sb.run(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "deploy",
            "--bootstrap",
            bootstrap().to_str().unwrap(),
        ],
        key,
    );
    assert!(out.status.success(), "{}", text(&out));

    // The SDK's own Invoke, pointed at the function host, runs version 1 directly.
    let conf = aws_sdk_lambda::config::Builder::from(&sb.sdk("us-east-1").await)
        .endpoint_url(sb.var("DRD_LAMBDA_DATA_ENDPOINT"))
        .build();
    let data = aws_sdk_lambda::Client::from_conf(conf);
    let out = data
        .invoke()
        .function_name("clf-i-fn")
        .qualifier("1")
        .payload(aws_smithy_types::Blob::new(
            r#"{"transcript":"Speaker 0: hi\nSpeaker 1: hello"}"#,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(out.executed_version(), Some("1"));
    assert!(out.function_error().is_none());
    let payload: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    assert_eq!(payload["statusCode"], 200);
    let body: Value = serde_json::from_str(payload["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["transcript"], "Agent: hi\nCustomer: hello");

    let err = data
        .invoke()
        .function_name("no-such-fn")
        .qualifier("1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_service_error()
            .map(|e| e.is_resource_not_found_exception()),
        Some(true),
        "{err:?}"
    );
}
