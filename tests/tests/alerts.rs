//! Daemon alerts end to end: a scheduled backup that fails (its stack's region is down) makes
//! exactly one webhook call, read back from the lab's receiver, and one SNS message, read back
//! from an SQS queue subscribed to the topic (a second client); the body names the stack, the
//! job and the firing and holds no secret; the store records the alert once; the next,
//! successful firings raise nothing.

use drd_e2e::daemon::*;
use drd_e2e::Sandbox;
use serde_json::Value;
use std::time::{Duration, Instant};

fn env_of(sb: &Sandbox, key: &str) -> String {
    sb.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("the sandbox exports {key}"))
}

/// The AWS CLI as a second client. Its SQS commands ignore AWS_ENDPOINT_URL (awscli v1 keeps
/// SQS's legacy endpoint): the endpoint is passed to every call.
struct Cli<'a> {
    sb: &'a Sandbox,
    endpoint: String,
}

impl<'a> Cli<'a> {
    fn new(sb: &'a Sandbox) -> Self {
        Self {
            sb,
            endpoint: env_of(sb, "AWS_ENDPOINT_URL"),
        }
    }

    fn aws(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--endpoint-url", self.endpoint.as_str()]);
        self.sb.aws_cli(&a)
    }

    /// The topic, and a queue subscribed to it; the queue's URL.
    fn subscribed_queue(&self, topic: &str) -> String {
        let name = topic.rsplit(':').next().unwrap();
        self.aws(&[
            "sns",
            "create-topic",
            "--region",
            "us-west-2",
            "--name",
            name,
        ]);
        let q = self.aws(&[
            "sqs",
            "create-queue",
            "--region",
            "us-west-2",
            "--queue-name",
            "al-q",
        ]);
        let q_url = q["QueueUrl"].as_str().unwrap().to_string();
        let q_arn = self.aws(&[
            "sqs",
            "get-queue-attributes",
            "--region",
            "us-west-2",
            "--queue-url",
            &q_url,
            "--attribute-names",
            "QueueArn",
        ])["Attributes"]["QueueArn"]
            .as_str()
            .unwrap()
            .to_string();
        self.aws(&[
            "sns",
            "subscribe",
            "--region",
            "us-west-2",
            "--topic-arn",
            topic,
            "--protocol",
            "sqs",
            "--notification-endpoint",
            &q_arn,
        ]);
        q_url
    }
}

async fn hook_calls(sb: &Sandbox, name: &str) -> Vec<Value> {
    let base = env_of(sb, "DRD_SANDBOX_HOOKS");
    let v: Value = reqwest::get(format!("{base}/{name}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["calls"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_scheduled_backup_makes_one_webhook_call_and_one_sns_message() {
    let topic = "arn:aws:sns:us-west-2:123456789012:al-alerts";
    let daemon = format!(
        r#"
[daemon]
rpo = "1h"

[[daemon.schedule]]
job = "backup"
cron = "*/6 * * * * *"

[alerts.webhook]
url_env = "AL_HOOK_URL"

[alerts.sns]
topic_arn = "{topic}"
"#
    );
    let w = World::new("al-hook", &daemon).await;
    let base =
        w.sb.env
            .iter()
            .find(|(k, _)| k == "DRD_SANDBOX_HOOKS")
            .map(|(_, v)| v.clone())
            .unwrap();
    let cli = Cli::new(&w.sb);
    let q_url = cli.subscribed_queue(topic);

    // The stack's region goes down: its next scheduled backup fails.
    let out = w.sb.run(&["sandbox", "fail-region", "us-east-1"], "");
    assert!(out.status.success(), "{}", drd_e2e::text(&out));
    let port = free_port();
    let log = w.sb.dir.path().join("daemon-al.log");
    let mut c = w.sb.drd();
    c.env("AL_HOOK_URL", format!("{base}/al"))
        .args([
            "--policy",
            w.policy.to_str().unwrap(),
            "--log-format",
            "json",
            "daemon",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut d = c.spawn().unwrap();
    // The first failed firing's alert arrives; the region comes back before the next firing.
    let deadline = Instant::now() + Duration::from_secs(40);
    let first = loop {
        let calls = hook_calls(&w.sb, "al").await;
        if let Some(c) = calls.first() {
            break c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no webhook call: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = w.sb.run(&["sandbox", "restore-region", "us-east-1"], "");
    assert!(out.status.success(), "{}", drd_e2e::text(&out));
    // Two successful backups after it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.points().await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no backups after the region came back"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = scrape(port).await;
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut d, Duration::from_secs(30)).success());

    // Exactly one call, the alert document, no secret.
    let calls = hook_calls(&w.sb, "al").await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let body = &first["json"];
    assert_eq!(first["content_type"], "application/json");
    drd_e2e::schema::check("alert", &body.to_string()).expect("the alert document's schema");
    assert_eq!(body["drd_alert"], 1);
    assert_eq!(body["event"], "job-failed");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["stack"], "al-hook");
    assert_eq!(body["job"], "backup");
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .contains("scheduled backup"),
        "{body}"
    );
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{body}");
    assert!(!first["body"].as_str().unwrap().contains(KEY));
    assert!(
        !first["body"].as_str().unwrap().contains("/_sandbox/hooks"),
        "the URL is not in the body"
    );
    // The failure counted once, the delivery counted once.
    assert_eq!(
        counter(
            &s,
            "drd_job_runs_total",
            &[("job", "backup"), ("outcome", "failed")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &s,
            "drd_alerts_total",
            &[
                ("event", "job-failed"),
                ("sink", "webhook"),
                ("outcome", "sent")
            ]
        ),
        1.0
    );
    // The store holds the alert's claim, once (a second client lists it).
    let keys =
        w.sb.list_keys("us-west-2", "al-hook-points", "al-hook/alerts/")
            .await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("al-hook/alerts/job-failed/backup-"),
        "{keys:?}"
    );

    // One SNS message with the same document.
    let msgs = cli.aws(&[
        "sqs",
        "receive-message",
        "--region",
        "us-west-2",
        "--queue-url",
        &q_url,
        "--max-number-of-messages",
        "10",
        "--wait-time-seconds",
        "1",
    ]);
    let msgs = msgs["Messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    let envelope: Value = serde_json::from_str(msgs[0]["Body"].as_str().unwrap()).unwrap();
    let doc: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(doc["key"], body["key"]);
    assert_eq!(doc["event"], "job-failed");
    assert!(!envelope.to_string().contains(KEY));
}
