//! Policy parsing and validation: each mistake names its field, line and fix.

use super::*;

const GOOD: &str = r#"
[stack]
name = "speaker-role-classifier"
primary_region = "us-east-1"
template = "../classifier/stack.yaml"
function_name = "speaker-role-classifier"

[artifacts]
bucket_prefix = "drd-artifacts"

[backup]
bucket = "drd-points"
region = "us-west-2"
recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
"#;

fn parse(t: &str) -> Result<Policy, ConfigError> {
    Policy::parse(t, Path::new("p.toml"))
}

#[test]
fn good_policy_parses_with_defaults() {
    let p = parse(GOOD).unwrap();
    assert_eq!(p.api_key_secret(), "openai-api-key");
    assert_eq!(p.artifact_bucket("us-east-1"), "drd-artifacts-us-east-1");
    assert_eq!(p.template_path(), Path::new("../classifier/stack.yaml"));
}

#[test]
fn unknown_key_names_line() {
    let t = GOOD.replace("[artifacts]", "[artifacts]\nbucket_prefx = \"x\"");
    let e = parse(&t).unwrap_err();
    assert!(e.message.contains("unknown field `bucket_prefx`"), "{e}");
    assert_eq!(e.line, Some(9));
    assert!(e.to_string().starts_with("p.toml:9:"), "{e}");
}

#[test]
fn daemon_and_dns_mistakes_name_field_and_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "[[daemon.schedule]]\njob = \"backup\"\ncron = \"0 * * * *\"\n",
            "daemon.schedule[0].cron",
            17,
            "6 or 7",
        ),
        (
            "[[daemon.schedule]]\njob = \"backups\"\ncron = \"0 * * * * *\"\n",
            "daemon.schedule[0].job",
            16,
            "not a job",
        ),
        (
            "[[daemon.schedule]]\njob = \"verify\"\ncron = \"0 0 4 * * *\"\ntimezone = \"Berlin\"\n",
            "daemon.schedule[0].cron",
            18,
            "time zone",
        ),
        (
            "[[daemon.schedule]]\njob = \"prune\"\ncron = \"0 0 4 * * *\"\n[[daemon.schedule]]\njob = \"prune\"\ncron = \"0 0 5 * * *\"\n",
            "daemon.schedule[1].job",
            19,
            "twice",
        ),
        (
            "[[daemon.schedule]]\njob = \"mirror\"\ncron = \"0 0 * * * *\"\n",
            "daemon.schedule[0].job",
            16,
            "needs the repository to mirror",
        ),
        ("[aws]\nattempt_timeout = \"soon\"\n", "aws.attempt_timeout", 16, "not a duration"),
        (
            "[aws]\noperation_timeout = \"30s\"\nattempt_timeout = \"2m\"\n",
            "aws.attempt_timeout",
            17,
            "longer than the whole call",
        ),
        ("[daemon]\nrpo = \"soon\"\n", "daemon.rpo", 16, "not a duration"),
        (
            "[alerts.webhook]\nurl = \"http://hooks.example.com/x\"\n",
            "alerts.webhook.url",
            16,
            "unencrypted",
        ),
        (
            "[alerts.webhook]\nurl_env = \"MY-URL\"\n",
            "alerts.webhook.url_env",
            16,
            "not an environment variable name",
        ),
        (
            "[alerts.sns]\ntopic_arn = \"arn:aws:sns:us-east-1:alerts\"\n",
            "alerts.sns.topic_arn",
            16,
            "not an SNS topic ARN",
        ),
        (
            "[alerts]\non = [\"job-failed\", \"backup-failed\"]\n",
            "alerts.on[1]",
            16,
            "not an alert event",
        ),
        ("[daemon]\nlisten = \"localhost\"\n", "daemon.listen", 16, "not an address"),
        (
            "[dns]\nzone = \"example.com.\"\nrecord = \"classifier.example.org\"\n",
            "dns.record",
            17,
            "not inside the zone",
        ),
        ("[dns]\nzone = \"com\"\nrecord = \"x.com\"\n", "dns.zone", 16, "neither"),
    ];
    for (extra, field, line, msg) in cases {
        let e = parse(&format!("{GOOD}{extra}")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(*field), "{extra}: {e}");
        assert_eq!(e.line, Some(*line), "{extra}: {e}");
        assert!(e.message.contains(msg), "{extra}: {e}");
        assert!(e.hint.is_some(), "{e}");
    }
    let ok = parse(&format!(
        "{GOOD}[dns]\nzone = \"Z0123456789ABC\"\nrecord = \"classifier.example.com\"\nmode = \"swap\"\n[front_door]\nkind = \"api-gateway\"\n\
         [daemon]\nrpo = \"45m\"\n[[daemon.schedule]]\njob = \"runbook:lambda-rollback\"\ncron = \"0 0 6 * * Mon\"\njitter = \"2m\"\n"
    ))
    .unwrap();
    assert_eq!(ok.daemon.rpo(), std::time::Duration::from_secs(45 * 60));
    assert_eq!(
        ok.daemon.schedule[0].jitter(),
        std::time::Duration::from_secs(120)
    );
    assert_eq!(ok.dns.unwrap().record_fqdn(), "classifier.example.com.");
}

#[test]
fn bad_region_names_field_and_line() {
    let t = GOOD.replace("us-west-2", "us-wst2");
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("backup.region"));
    assert_eq!(e.line, Some(13));
}

#[test]
fn backup_in_primary_region_is_refused() {
    let t = GOOD.replace("us-west-2", "us-east-1");
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("backup.region"));
    assert!(e.message.contains("primary region"));
}

#[test]
fn empty_recipients_refused() {
    let t = GOOD.replace(
        "[\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]",
        "[]",
    );
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("backup.recipients"));
    assert_eq!(e.line, Some(14));
}

#[test]
fn malformed_recipient_refused() {
    let t = GOOD.replace("age1ql3z7hjy54pw", "age1xx3z7hjy54pw");
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("backup.recipients[0]"));
    assert_eq!(e.line, Some(14));
}

#[test]
fn private_key_is_refused_without_being_echoed() {
    let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
    let t = GOOD.replace(
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        secret,
    );
    let e = parse(&t).unwrap_err();
    assert!(e.message.contains("private identity"));
    assert!(!e.to_string().contains(secret));
}

#[test]
fn ssh_recipient_accepted() {
    let t = GOOD.replace(
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust",
    );
    parse(&t).unwrap();
}

#[test]
fn copies_and_object_lock_are_checked() {
    let t = format!("{GOOD}\n[backup.object_lock]\nmode = \"compliance\"\ndays = 0\n");
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("backup.object_lock.days"));
    let t = format!("{GOOD}\n[backup.object_lock]\nmode = \"forever\"\ndays = 3\n");
    assert!(parse(&t).unwrap_err().message.contains("unknown variant"));
    let t = format!("{GOOD}\n[[backup.copies]]\nbucket = \"c\"\nregion = \"eu-west-1\"\n");
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("backup.copies[0].bucket"));
    let t = format!("{GOOD}\n[[backup.copies]]\nbucket = \"copy-b\"\nregion = \"us-east-1\"\n");
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("backup.copies[0].region"));
    assert_eq!(e.line, Some(18));
    let t = format!("{GOOD}\n[[backup.copies]]\nbucket = \"copy-b\"\nregion = \"eu-west-1\"\n\n[retention]\nkeep_within = \"soon\"\n");
    assert_eq!(
        parse(&t).unwrap_err().field.as_deref(),
        Some("retention.keep_within")
    );
}

#[test]
fn region_names() {
    for ok in [
        "us-east-1",
        "eu-central-2",
        "us-gov-west-1",
        "ap-southeast-3",
    ] {
        assert!(is_region_name(ok), "{ok}");
    }
    for bad in [
        "us-east",
        "useast1",
        "US-EAST-1",
        "us-east-1a",
        "",
        "u-east-1",
    ] {
        assert!(!is_region_name(bad), "{bad}");
    }
}

#[test]
fn the_drills_canary_is_backed_up_and_never_a_real_secret() {
    let p = parse(&format!(
        "{GOOD}\n[secrets]\nothers = [\"github-token\"]\ncanary = \"drd-drill-canary\"\n"
    ))
    .unwrap();
    assert_eq!(p.canary_secret(), Some("drd-drill-canary"));
    assert_eq!(
        p.secret_names(),
        ["openai-api-key", "github-token", "drd-drill-canary"]
    );
    for name in ["openai-api-key", "github-token"] {
        let t = format!("{GOOD}\n[secrets]\nothers = [\"github-token\"]\ncanary = \"{name}\"\n");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("secrets.canary"), "{e}");
        let line = t.lines().position(|l| l.starts_with("canary")).unwrap() + 1;
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("real secret"), "{e}");
    }
}
