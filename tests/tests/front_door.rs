//! The front door (docs/front-door.md): users reach the service by its name through an API
//! Gateway custom domain in each region; the Function URLs refuse direct requests; a standby
//! prepared ahead takes users by Route 53's data plane alone, even with us-east-1 and the global
//! control planes down, while a restore from backups says which step needs the control plane.

use drd_e2e::{age_keygen, text, Sandbox};
use serde_json::{json, Value};

const KEY: &str = "sk-e2e-front-door-0123456789";
const ZONE: &str = "front.example.";
const NAME: &str = "fd-a";
const T2: &str = drd::lambda::probe::T2_TRANSCRIPT;

fn record() -> String {
    format!("{NAME}.{}", ZONE.trim_end_matches('.'))
}

/// Every `Speaker N:` line came back as a role.
fn relabelled(body: &Value) -> bool {
    let t = body["transcript"].as_str().unwrap_or_default();
    !t.contains("Speaker") && t.contains("Agent: ") && t.contains("Customer: ")
}

/// The failover records of the service's name, read with a second client: (set id, value).
async fn records(sb: &Sandbox, zone_id: &str) -> Vec<(String, String)> {
    sb.records(zone_id, &record()).await
}

/// The regional target of the custom domain in `region`, read with the AWS CLI.
fn target(sb: &Sandbox, region: &str) -> String {
    sb.door_target(region, &record())
}

fn deploy(sb: &Sandbox, policy: &str, region: &str) -> Value {
    let out = sb.run(
        &[
            "--policy",
            policy,
            "deploy",
            "--region",
            region,
            "--bootstrap",
            drd_e2e::bootstrap().to_str().unwrap(),
            "--output",
            "json",
        ],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

// One story: both regions prepared, us-east-1 and the global control planes lost, users moved by
// the data plane; then a restore that needs the control plane, and back.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_prepared_ahead_survives_us_east_1_and_its_control_planes() {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let keys = sb.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (identity, recipient) = age_keygen(&keys);
    let identity = identity.to_str().unwrap().to_string();
    let zone_id = sb.hosted_zone(ZONE, "e2e-fd").await;
    let extra = format!(
        "[dns]\nzone = \"{ZONE}\"\nrecord = \"{}\"\n{}",
        record(),
        sb.front_door(&record())
    );
    let policy = sb.policy_with(NAME, &recipient, &extra);
    let policy = policy.to_str().unwrap().to_string();
    let drd = |args: &[&str]| {
        let mut a = vec!["--policy", policy.as_str()];
        a.extend_from_slice(args);
        sb.run(&a, "")
    };

    // The primary, then the standby prepared ahead: its front door becomes the SECONDARY.
    let east = deploy(&sb, &policy, "us-east-1");
    assert!(
        east["dns"].as_str().unwrap().contains("(created)"),
        "{east}"
    );
    let west = deploy(&sb, &policy, "us-west-2");
    assert!(
        west["dns"].as_str().unwrap().contains("SECONDARY"),
        "{west}"
    );
    let (t_east, t_west) = (target(&sb, "us-east-1"), target(&sb, "us-west-2"));
    assert_eq!(
        records(&sb, &zone_id).await,
        [
            ("drd-primary".to_string(), t_east.clone()),
            ("drd-secondary".to_string(), t_west.clone())
        ]
    );
    // A second deploy changes nothing of the front door.
    let again = deploy(&sb, &policy, "us-east-1");
    assert_eq!(again["changed"], false, "{again}");
    assert!(again.get("front_door_changes").is_none(), "{again}");

    // A URL made public again by hand (as the original workload had it) is switched back to
    // AWS_IAM in place by the next deploy, and the public statement goes.
    let url = east["function_url"].as_str().unwrap().to_string();
    sb.aws_cli(&[
        "lambda",
        "update-function-url-config",
        "--region",
        "us-east-1",
        "--function-name",
        "fd-a-fn",
        "--qualifier",
        "live",
        "--auth-type",
        "NONE",
    ]);
    sb.aws_cli(&[
        "lambda",
        "add-permission",
        "--region",
        "us-east-1",
        "--function-name",
        "fd-a-fn",
        "--qualifier",
        "live",
        "--statement-id",
        "by-hand",
        "--action",
        "lambda:InvokeFunctionUrl",
        "--principal",
        "*",
        "--function-url-auth-type",
        "NONE",
    ]);
    let (status, _) = sb.call_url(&url, &json!({"transcript": "Agent: a"})).await;
    assert_eq!(status, 200, "public by hand");
    let fixed = deploy(&sb, &policy, "us-east-1");
    assert_eq!(
        fixed["function_url"],
        url.as_str(),
        "the host never changes"
    );
    assert_eq!(fixed["function_url_created"], true, "{fixed}");
    let (status, _) = sb.call_url(&url, &json!({"transcript": "Agent: a"})).await;
    assert_eq!(status, 403);
    let pol = sb.aws_cli(&[
        "lambda",
        "get-policy",
        "--region",
        "us-east-1",
        "--function-name",
        "fd-a-fn",
        "--qualifier",
        "live",
    ]);
    let pol = pol["Policy"].as_str().unwrap();
    assert!(
        !pol.contains("by-hand") && pol.contains("drd-front-door"),
        "{pol}"
    );

    // Users: the name relabels a transcript; neither Function URL takes a direct request.
    let name_url = format!("https://{}/", record());
    let (status, body) = sb.call_url(&name_url, &json!({"transcript": T2})).await;
    assert!(status == 200 && relabelled(&body), "{status} {body}");
    for r in [&east, &west] {
        let url = r["function_url"].as_str().unwrap();
        let (status, body) = sb.call_url(url, &json!({"transcript": T2})).await;
        assert_eq!(
            (status, body["Message"].as_str()),
            (403, Some("Forbidden")),
            "{url}"
        );
    }
    let out = drd(&["backup"]);
    assert!(out.status.success(), "{}", text(&out));

    // us-east-1 goes, and with it the control planes of Route 53, IAM and CloudFront.
    let out = drd(&["sandbox", "fail-region", "us-east-1", "--control-planes"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = sb
        .route53()
        .await
        .list_hosted_zones()
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, aws_sdk_route53::error::SdkError::DispatchFailure(_)),
        "Route 53's API is down: {err:?}"
    );
    // The data plane still answers: the PRIMARY's health check fails, the name goes to the
    // SECONDARY, and users are served with no call to any control plane.
    let (status, body) = sb.call_url(&name_url, &json!({"transcript": T2})).await;
    assert!(status == 200 && relabelled(&body), "{status} {body}");
    let out = drd(&["status", "--region", "us-west-2", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["front_door"]["url"], name_url.as_str(), "{st}");
    let probes = st["probes"].as_array().unwrap();
    assert!(!probes.is_empty(), "{st}");
    assert!(
        probes
            .iter()
            .all(|p| p["via"] == "front-door" && p["ok"] == true),
        "{st}"
    );
    assert!(
        st["front_door"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("route53"),
        "the record could not be read, and status says so: {st}"
    );

    // A restore from backups makes the region serve but cannot move the name: the dns step
    // needs Route 53's control plane, and the run says exactly that.
    let out = drd(&["restore", "--region", "us-west-2", "--identity", &identity]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    for line in [
        "dns_now=unknown: Route 53's control plane does not answer",
        "succeeded    front-door",
        "failed       dns",
        "route53 ListHostedZonesByName failed in us-east-1",
        "route53's control plane (it runs in us-east-1) does not answer, and this step needs it",
        "run the command again when it answers",
        "not_run      backup",
    ] {
        assert!(t.contains(line), "{line:?} in {t}");
    }

    // The control planes come back: the restore, run again, converges (the region is ready) and
    // moves the name; read back with a second client, the records send users to us-west-2.
    let out = drd(&["sandbox", "restore-region", "global"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = drd(&["restore", "--region", "us-west-2", "--identity", &identity]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        records(&sb, &zone_id).await,
        [
            ("drd-primary".to_string(), t_west.clone()),
            ("drd-secondary".to_string(), t_east.clone())
        ]
    );
    let (status, body) = sb.call_url(&name_url, &json!({"transcript": T2})).await;
    assert!(status == 200 && relabelled(&body), "{status} {body}");

    // us-east-1 is back: failback moves the name to the primary, the standby stays prepared.
    let out = drd(&["sandbox", "restore-region", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = drd(&["failback", "--identity", &identity]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        records(&sb, &zone_id).await,
        [
            ("drd-primary".to_string(), t_east.clone()),
            ("drd-secondary".to_string(), t_west.clone())
        ]
    );
    let (status, body) = sb.call_url(&name_url, &json!({"transcript": T2})).await;
    assert!(status == 200 && relabelled(&body), "{status} {body}");
}
