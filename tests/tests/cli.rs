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

/// A request that gets no answer fails in one line naming the service, the operation, what
/// happened and what to do, never an SDK dump and never the SDK's own log lines (those need
/// -vvv; -v adds the whole error chain).
#[test]
fn aws_failures_are_one_line_each_with_a_hint() {
    let home = tempfile::tempdir().unwrap();
    let none = home.path().join("none");
    let policy = root().join("policies/classifier.toml");
    let run = |endpoint: &str, creds: bool, verbose: bool| {
        let mut c = std::process::Command::new(drd_bin());
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "DRD_SANDBOX_DIR",
        ] {
            c.env_remove(k);
        }
        c.env("HOME", home.path())
            .env("AWS_CONFIG_FILE", &none)
            .env("AWS_SHARED_CREDENTIALS_FILE", &none)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("DRD_STATE_DIR", home.path().join("state"))
            .args(["--policy", policy.to_str().unwrap(), "--max-attempts", "1"]);
        if creds {
            c.env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing");
        }
        if verbose {
            c.arg("-v");
        }
        c.arg("status").output().unwrap()
    };
    for (endpoint, creds, code, hint) in [
        ("http://127.0.0.1:9", false, "NoCredentials", "AWS_PROFILE"),
        ("http://127.0.0.1:9", true, "Unreachable", "refused"),
        (
            "http://drd-no-such-host.invalid",
            true,
            "DnsFailure",
            "does not resolve",
        ),
    ] {
        let out = run(endpoint, creds, false);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{code}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{code}: one line, not {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        assert!(
            lines[0].contains(code) && lines[0].contains(hint),
            "{code}/{hint}: {err}"
        );
        assert!(
            lines[0].contains("s3 GetObject"),
            "names service and operation: {err}"
        );
        for noise in ["WARN", "DispatchFailure", "ProviderError", "ConnectorError"] {
            assert!(!err.contains(noise), "{noise} in {err}");
        }
        assert!(err.len() < 700, "{} characters: {err}", err.len());
        // -v adds the whole chain.
        let v = run(endpoint, creds, true);
        assert!(
            String::from_utf8_lossy(&v.stderr).contains("the full error"),
            "{}",
            text(&v)
        );
    }
}

/// `drd completions bash` loads in bash and registers drd; `drd man` pages render with man.
#[test]
fn completions_load_in_bash_and_the_man_pages_render() {
    let script = format!(
        "source <('{}' completions bash) && complete -p drd",
        drd_bin().display()
    );
    let out = std::process::Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" drd"),
        "{}",
        text(&out)
    );
    for shell in ["zsh", "fish", "powershell"] {
        let out = std::process::Command::new(drd_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(drd_bin())
        .args(["man", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for page in ["drd.1", "drd-failover-ci.1", "drd-restore.1"] {
        let path = dir.path().join(page);
        assert!(path.exists(), "{page}");
        let out = std::process::Command::new("man")
            .args(["-P", "cat", "-l", path.to_str().unwrap()])
            .env("MANWIDTH", "100")
            .output()
            .expect("man (scripts/setup installs man-db)");
        assert!(out.status.success(), "{page}: {}", text(&out));
        let page_text = String::from_utf8_lossy(&out.stdout);
        assert!(
            page_text.contains("NAME") && page_text.contains("drd"),
            "{page_text}"
        );
    }
}

/// The region a restore writes to comes from the command line only: DRD_REGION (fine for
/// commands that read) is refused, before anything is read or written.
#[test]
fn restore_never_takes_its_target_region_from_the_environment() {
    let out = std::process::Command::new(drd_bin())
        .args(["restore", "--identity", "/nonexistent"])
        .env("DRD_REGION", "eu-west-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DRD_REGION") && err.contains("--region"),
        "{err}"
    );
}

/// Every command's `--help` describes its own flags and ends with examples (read through the
/// real binary, for every subcommand the definition has; `sandbox` hands its help to the lab).
#[test]
fn every_command_help_has_examples() {
    use clap::CommandFactory;
    let cmd = drd::cli::Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "sandbox")
        .collect();
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        let out = std::process::Command::new(drd_bin())
            .args([name.as_str(), "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        let examples = help.split("Examples:\n").nth(1).unwrap_or("");
        assert!(
            examples.contains(&format!("drd {name}")),
            "drd {name} --help has no examples of drd {name}:\n{help}"
        );
    }
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

/// Throttling, access denied, a failed region and a TLS failure, each caused in the lab (the
/// gate answers as AWS does), print one line naming the service, operation, region and
/// endpoint, with a hint.
#[test]
fn lab_failures_are_one_line_naming_region_and_endpoint() {
    let sb = drd_e2e::Sandbox::start();
    let policy = sb.policy("fx-lines");
    let policy = policy.to_str().unwrap();
    let endpoint = sb
        .env
        .iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    let line = |env: &[(&str, &str)]| {
        let out = sb.run_env(
            &["--policy", policy, "--max-attempts", "1", "status"],
            "",
            env,
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        let lines: Vec<String> = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), 1, "one line, not {err}");
        assert!(err.len() < 700, "{err}");
        lines[0].clone()
    };
    let faults = |args: &[&str]| {
        let mut a = vec!["sandbox", "faults"];
        a.extend(args);
        let out = sb.run(&a, "");
        assert!(out.status.success(), "{}", text(&out));
    };
    let at = format!("in us-west-2 at {endpoint}");
    faults(&["--rate", "1", "--kinds", "throttle", "--service", "s3"]);
    let l = line(&[]);
    assert!(l.contains("s3 GetObject failed") && l.contains(&at), "{l}");
    assert!(
        l.contains("SlowDown") && l.contains("hint: AWS is throttling"),
        "{l}"
    );
    faults(&["--rate", "1", "--kinds", "access-denied", "--service", "s3"]);
    let l = line(&[]);
    assert!(l.contains(&at) && l.contains("AccessDenied"), "{l}");
    // The hint names the action the denied operation needs and the command's generated policy.
    assert!(
        l.contains("the caller lacks s3:GetObject")
            && l.contains("drd iam policy --command 'status'"),
        "{l}"
    );
    faults(&["--rate", "0"]);
    let out = sb.run(&["sandbox", "fail-region", "us-west-2"], "");
    assert!(out.status.success(), "{}", text(&out));
    let l = line(&[]);
    assert!(l.contains(&at) && l.contains("Unreachable"), "{l}");
    assert!(l.contains("drd restore --region"), "{l}");
    let out = sb.run(&["sandbox", "restore-region", "us-west-2"], "");
    assert!(out.status.success(), "{}", text(&out));
    // TLS spoken to a plain-HTTP port.
    let https = endpoint.replace("http://", "https://");
    let l = line(&[("AWS_ENDPOINT_URL", https.as_str())]);
    assert!(
        l.contains("TlsFailure") && l.contains(&format!("at {https}")),
        "{l}"
    );
}

/// Off a terminal, long work reports a one-line status at a steady interval on stderr, and the
/// `--output json` document on stdout stays whole.
#[test]
fn progress_off_a_terminal_is_a_status_line_at_an_interval() {
    let sb = drd_e2e::Sandbox::start();
    let key = "sk-e2e-progress-0123456789";
    sb.allow_key(key);
    let policy = sb.policy("pg-lines");
    let out = sb.run_env(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--output",
            "json",
            "deploy",
            "--bootstrap",
            drd_e2e::bootstrap().to_str().unwrap(),
        ],
        key,
        &[("DRD_PROGRESS_INTERVAL", "200ms")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert!(doc.is_object(), "{doc}");
    let err = String::from_utf8_lossy(&out.stderr);
    let status: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("drd deploy: "))
        .collect();
    assert!(status.len() >= 2, "status lines: {err}");
    assert!(status.iter().all(|l| l.contains(" elapsed; ")), "{err}");
    // The lines name what was happening (the last event), not only the time.
    assert!(status.iter().any(|l| !l.ends_with("; starting")), "{err}");
    assert!(!err.contains(key), "the key is never in the output");
    // DRD_PROGRESS=off silences them.
    let out = sb.run_env(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--output",
            "json",
            "status",
        ],
        "",
        &[("DRD_PROGRESS_INTERVAL", "100ms"), ("DRD_PROGRESS", "off")],
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("elapsed;"),
        "{}",
        text(&out)
    );
}

/// On a terminal (a pty from util-linux `script`), long work shows an indicatif spinner with
/// the command, the elapsed time and the latest event, events printed above it, and the spinner
/// is cleared before the result is printed.
#[test]
fn progress_on_a_terminal_is_a_spinner_cleared_before_the_result() {
    let sb = drd_e2e::Sandbox::start();
    let key = "sk-e2e-spinner-0123456789";
    sb.allow_key(key);
    let policy = sb.policy("pg-tty");
    sb.deploy(policy.to_str().unwrap(), key);
    let typescript = sb.dir.path().join("typescript");
    let mut c = std::process::Command::new("script");
    for (k, v) in &sb.env {
        c.env(k, v);
    }
    let out = c
        .env(
            "PATH",
            format!(
                "{}:{}",
                drd_bin().parent().unwrap().display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .args(["-qec", &format!("drd --policy {} backup", policy.display())])
        .arg(&typescript)
        .output()
        .expect("util-linux script");
    assert!(out.status.success(), "{}", text(&out));
    let tty = std::fs::read_to_string(&typescript).unwrap();
    assert!(tty.contains("drd backup [0s]"), "a spinner line: {tty}");
    assert!(
        tty.contains("  template captured"),
        "events above it: {tty}"
    );
    // The result (the point id, read back with points list) is printed after the spinner
    // line was cleared: nothing but the clear sequence precedes it on its line.
    let out = sb.run(
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--output",
            "json",
            "points",
            "list",
        ],
        "",
    );
    let points: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = points[0]["id"].as_str().unwrap();
    let at = tty.rfind(id).expect("the point id is printed");
    let before = &tty[tty[..at].rfind('\n').map_or(0, |n| n + 1)..at];
    assert!(
        before.is_empty() || before.ends_with("\x1b[2K"),
        "the id shares its line with {before:?}"
    );
    assert!(
        !tty[at..].lines().next().unwrap().contains("drd backup"),
        "{tty:?}"
    );
}

/// On AWS (no lab endpoints) `drd drill run` refuses, before any AWS call, a target that is not
/// named and a production stack without --i-mean-production (exit 2, naming the flag).
#[test]
fn drills_on_aws_need_a_named_target_and_an_explicit_yes_for_production() {
    let home = tempfile::tempdir().unwrap();
    let policy = root().join("policies/classifier.toml");
    let run = |drill: &str, extra: &[&str]| {
        let mut c = std::process::Command::new(drd_bin());
        for k in [
            "AWS_ENDPOINT_URL",
            "DRD_LAMBDA_DATA_ENDPOINT",
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
        ] {
            c.env_remove(k);
        }
        c.env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--policy", policy.to_str().unwrap(), "drill", "run", drill])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run("corrupt-live", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--stack speaker-role-classifier"),
        "{}",
        text(&out)
    );
    let out = run("corrupt-live", &["--stack", "speaker-role-classifier"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--i-mean-production"), "{}", text(&out));
    assert!(
        !text(&out).contains("NoCredentials"),
        "refused before any AWS call"
    );
    // A lab-only fault is refused on AWS whatever the flags.
    let out = run(
        "revoke-key",
        &["--stack", "speaker-role-classifier", "--i-mean-production"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("runs only in the lab"),
        "{}",
        text(&out)
    );
}
