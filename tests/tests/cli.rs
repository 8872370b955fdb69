//! CLI behaviour that needs no sandbox: validation errors and unreachable endpoints.

use drd_e2e::{drd_bin, root, text};

#[test]
fn validate_accepts_the_shipped_policy_and_names_a_bad_region() {
    let out = std::process::Command::new(drd_bin())
        .args(["validate", "--policy"])
        .arg(root().join("policies/classifier.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(root().join("policies/classifier.toml")).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        good.replace("region = \"us-west-2\"", "region = \"us-west2\""),
    )
    .unwrap();
    let out = std::process::Command::new(drd_bin())
        .args(["validate", "--policy"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:") && err.contains("backup.region") && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn check_names_each_failure_with_its_code_and_exits_1() {
    let out = std::process::Command::new(drd_bin())
        .args(["check", "--output", "json", "--policy"])
        .arg(root().join("policies/classifier.toml"))
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 6);
    for i in items {
        assert_eq!(i["ok"], false);
        assert_eq!(i["code"], "Unreachable", "{i}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 check(s) failed"));
}

#[test]
fn usage_errors_exit_2() {
    let out = std::process::Command::new(drd_bin())
        .args(["deploy", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(drd_bin())
        .args(["status", "--region", "mars-1", "--policy"])
        .arg(root().join("policies/classifier.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// `drd runbook list` names the shipped runbooks, and `drd runbook show NAME --format md`
/// prints exactly the on-call document checked in beside each (from the built-in copy: the test
/// runs where no `runbooks/` directory is).
#[test]
fn runbook_list_and_show_render_the_shipped_runbooks() {
    let empty = tempfile::tempdir().unwrap();
    let drd = |args: &[&str]| {
        std::process::Command::new(drd_bin())
            .args(args)
            .current_dir(empty.path())
            .env_remove("DRD_RUNBOOKS")
            .output()
            .unwrap()
    };
    let out = drd(&["runbook", "list", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ci-failback",
            "ci-failover",
            "failback",
            "lambda-rollback",
            "pipeline-failure",
            "region-redeploy",
            "secret-rotation"
        ]
    );
    for name in names {
        let out = drd(&["runbook", "show", name, "--format", "md"]);
        assert!(out.status.success(), "{}", text(&out));
        let want = std::fs::read_to_string(root().join(format!("runbooks/{name}.md"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            want.trim_end(),
            "{name}"
        );
    }
    let out = drd(&["runbook", "show", "no-such-runbook"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("no-such-runbook"), "{}", text(&out));
}

/// An endpoint that accepts the connection and never answers (a hung read): the attempt timeout
/// ends the call, so a command fails in bounded time instead of stalling (while, in a daemon, it
/// would keep renewing its lease).
#[test]
fn a_hung_endpoint_fails_within_the_attempt_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold every connection without a byte of answer.
    let held = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let keep = held.clone();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            keep.lock().unwrap().push(c);
        }
    });
    // The attempt timeout from the command line, then from the policy's [aws] section.
    let dir = tempfile::tempdir().unwrap();
    let with_aws = dir.path().join("with-aws.toml");
    let shipped = std::fs::read_to_string(root().join("policies/classifier.toml")).unwrap();
    std::fs::write(
        &with_aws,
        format!(
            "{}\n[aws]\nattempt_timeout = \"2s\"\n",
            shipped.replace(
                "template = \"../classifier/stack.yaml\"",
                &format!(
                    "template = {:?}",
                    root().join("classifier/stack.yaml").display().to_string()
                )
            )
        ),
    )
    .unwrap();
    let runs: [(&[&str], std::path::PathBuf); 2] = [
        (
            &["--attempt-timeout", "2s"],
            root().join("policies/classifier.toml"),
        ),
        (&[], with_aws),
    ];
    let mut out = None;
    for (flags, policy) in runs {
        let started = std::time::Instant::now();
        let o = std::process::Command::new(drd_bin())
            .args(["points", "list"])
            .args(flags)
            .arg("--policy")
            .arg(&policy)
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env_remove("DRD_ATTEMPT_TIMEOUT")
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {}", text(&o));
        assert!(
            took < std::time::Duration::from_secs(15),
            "{flags:?}: took {took:?}: the hung read was not cut off"
        );
        out = Some(o);
    }
    let out = out.unwrap();
    assert!(
        !held.lock().unwrap().is_empty(),
        "drd reached the hung endpoint"
    );
    assert!(
        text(&out).to_lowercase().contains("timeout")
            || text(&out).to_lowercase().contains("timed out"),
        "{}",
        text(&out)
    );
}
