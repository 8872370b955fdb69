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
