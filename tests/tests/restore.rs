//! Procedure 4 end to end on a sandbox: deploy to us-east-1 (points in us-west-2), fail
//! us-east-1 for real (its endpoints drop connections, the function host stops serving it),
//! `drd restore --region us-west-2`, and check the end state with second clients: the stack
//! from the same template, the secrets with the same values and version ids, `live` on the
//! backed-up code, T1 through the function host, the Route 53 record, the report. Also: a
//! second restore converges without duplicates, bad inputs stop before the first write, and
//! SIGKILL after every step resumes to the same end state.

use drd_e2e::{age_keygen, bootstrap, text, Sandbox};
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;

const KEY: &str = "sk-e2e-restore-0123456789";
const ZONE: &str = "drd-e2e.example.";
/// A transcript the classifier relabels with one LLM call.
const T2: &str = drd::lambda::probe::T2_TRANSCRIPT;

/// Every `Speaker N:` line came back as a role.
fn relabelled(body: &Value) -> bool {
    let t = body["transcript"].as_str().unwrap_or_default();
    !t.contains("Speaker") && t.contains("Agent: ") && t.contains("Customer: ")
}

struct World {
    sb: Sandbox,
    policy: String,
    name: String,
    identity: String,
    url: String,
}

impl World {
    fn drd(&self, args: &[&str]) -> std::process::Output {
        self.drd_env(args, &[])
    }

    fn drd_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut a = vec!["--policy", self.policy.as_str()];
        a.extend_from_slice(args);
        self.sb.run_env(&a, "", env)
    }

    fn restore(&self, region: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut a = vec![
            "restore",
            "--region",
            region,
            "--identity",
            self.identity.as_str(),
            "--output",
            "json",
        ];
        a.extend_from_slice(extra);
        self.drd_env(&a, env)
    }

    fn function(&self) -> String {
        format!("{}-fn", self.name)
    }

    fn record(&self) -> String {
        format!("{}.{}", self.name, ZONE.trim_end_matches('.'))
    }

    async fn secret(&self, region: &str, name: &str, stage: &str) -> (String, String) {
        let v = self
            .sb
            .secrets(region)
            .await
            .get_secret_value()
            .secret_id(name)
            .version_stage(stage)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name} {stage} in {region}: {e:?}"));
        (
            v.version_id().unwrap().to_string(),
            v.secret_string().unwrap().to_string(),
        )
    }

    /// The failover records of the service name: (set identifier, value) sorted.
    async fn records(&self, zone_id: &str) -> Vec<(String, String)> {
        self.sb.records(zone_id, &self.record()).await
    }

    /// The front door in `region`, read with a second client: (the integration's target, the
    /// custom domain's regional target).
    async fn front_door(&self, region: &str) -> (String, String) {
        let target = self.sb.door_target(region, &self.record());
        let maps = self.sb.aws_cli(&[
            "apigatewayv2",
            "get-api-mappings",
            "--region",
            region,
            "--domain-name",
            &self.record(),
        ]);
        let api = maps["Items"][0]["ApiId"]
            .as_str()
            .unwrap_or_else(|| panic!("{maps}"));
        let ints = self.sb.aws_cli(&[
            "apigatewayv2",
            "get-integrations",
            "--region",
            region,
            "--api-id",
            api,
        ]);
        let uri = ints["Items"][0]["IntegrationUri"]
            .as_str()
            .unwrap_or_default();
        (uri.to_string(), target)
    }

    /// The live version's CodeSha256 in a region.
    async fn live_code(&self, region: &str) -> String {
        let lambda = self.sb.lambda(region).await;
        let live = lambda
            .get_alias()
            .function_name(self.function())
            .name("live")
            .send()
            .await
            .unwrap()
            .function_version()
            .unwrap()
            .to_string();
        lambda
            .get_function_configuration()
            .function_name(self.function())
            .qualifier(&live)
            .send()
            .await
            .unwrap()
            .code_sha256()
            .unwrap()
            .to_string()
    }

    async fn journal_keys(&self, run: &str) -> Vec<String> {
        let bucket = format!("{}-points", self.name);
        let prefix = format!("{}/journal/{run}/", self.name);
        self.sb.list_keys("us-west-2", &bucket, &prefix).await
    }

    async fn runs(&self) -> Vec<String> {
        let bucket = format!("{}-points", self.name);
        let prefix = format!("{}/journal/", self.name);
        let mut r: Vec<String> = self
            .sb
            .list_keys("us-west-2", &bucket, &prefix)
            .await
            .iter()
            .filter_map(|k| k.split('/').nth(2).map(str::to_string))
            .collect();
        r.dedup();
        r
    }

    /// What a restore must not have created in a region before its first write.
    async fn untouched(&self, region: &str) {
        let cf = self.sb.cloudformation(region).await;
        assert!(
            cf.describe_stacks()
                .stack_name(&self.name)
                .send()
                .await
                .is_err(),
            "a stack exists in {region}"
        );
        for s in ["openai-api-key", "github-token"] {
            assert!(
                self.sb
                    .secrets(region)
                    .await
                    .describe_secret()
                    .secret_id(s)
                    .send()
                    .await
                    .is_err(),
                "secret {s} exists in {region}"
            );
        }
        let buckets = self
            .sb
            .s3(region)
            .await
            .list_buckets()
            .send()
            .await
            .unwrap();
        let artifacts = format!("{}-artifacts-{region}", self.name);
        assert!(
            !buckets
                .buckets()
                .iter()
                .any(|b| b.name() == Some(artifacts.as_str())),
            "{artifacts} exists"
        );
    }
}

/// Create the hosted zone, deploy to us-east-1 (which creates the DNS record), give the
/// `github-token` secret two versions (AWSCURRENT and AWSPREVIOUS), and take a point.
async fn world(name: &str, zone: &str) -> (World, String) {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let keys = sb.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (identity, recipient) = age_keygen(&keys);
    let zone_id = sb.hosted_zone(ZONE, &format!("e2e-{name}")).await;
    let extra = format!(
        "[secrets]\nothers = [\"github-token\", \"never-created\"]\n\n[dns]\nzone = \"{zone}\"\nrecord = \"{name}.{ZONE}\"\n{}",
        sb.front_door(&format!("{name}.{ZONE}"))
    );
    let policy = sb
        .policy_with(name, &recipient, &extra)
        .to_str()
        .unwrap()
        .to_string();
    let sm = sb.secrets("us-east-1").await;
    sm.create_secret()
        .name("github-token")
        .secret_string("ghp_first_token_value")
        .send()
        .await
        .unwrap();
    sm.put_secret_value()
        .secret_id("github-token")
        .secret_string("ghp_second_token_value")
        .send()
        .await
        .unwrap();
    let out = sb.run(
        &[
            "--policy",
            &policy,
            "deploy",
            "--bootstrap",
            bootstrap().to_str().unwrap(),
            "--output",
            "json",
        ],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = r["function_url"].as_str().unwrap().to_string();
    assert!(r["dns"].as_str().unwrap_or("").contains("(created)"), "{r}");
    let w = World {
        sb,
        policy,
        name: name.to_string(),
        identity: identity.to_str().unwrap().to_string(),
        url,
    };
    let out = w.drd(&["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    (w, zone_id)
}

// One end-to-end story, told in the order an operator lives it; its steps share state.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn restore_into_another_region_after_the_primary_fails() {
    let (w, zone_id) = world("rs-a", ZONE).await;
    // The name points at us-east-1's front door (its regional domain target), never at a URL.
    let old_host = w.front_door("us-east-1").await.1;
    assert!(
        old_host.starts_with("d-") && old_host.ends_with(".execute-api.us-east-1.amazonaws.com"),
        "{old_host}"
    );
    assert_eq!(
        w.records(&zone_id).await,
        [("drd-primary".to_string(), old_host.clone())]
    );
    // Users reach the service by its name; the Function URL refuses a direct request.
    let name_url = format!("https://{}/", w.record());
    let (status, body) = w.sb.call_url(&name_url, &json!({"transcript": T2})).await;
    assert!(status == 200 && relabelled(&body), "{status} {body}");
    let (status, _) = w.sb.call_url(&w.url, &json!({"transcript": T2})).await;
    assert_eq!(status, 403, "a direct POST to the Function URL");

    // What the primary held, read with a second client before it goes.
    let cf = w.sb.cloudformation("us-east-1").await;
    let template = cf
        .get_template()
        .stack_name(&w.name)
        .send()
        .await
        .unwrap()
        .template_body()
        .unwrap()
        .to_string();
    let key_current = w.secret("us-east-1", "openai-api-key", "AWSCURRENT").await;
    let gh_current = w.secret("us-east-1", "github-token", "AWSCURRENT").await;
    let gh_previous = w.secret("us-east-1", "github-token", "AWSPREVIOUS").await;
    let code = w.live_code("us-east-1").await;
    let (status, _) =
        w.sb.call_signed(&w.url, &json!({"transcript": "Agent: a\nCustomer: b"}))
            .await;
    assert_eq!(status, 200);

    // The region loss is real: its endpoints drop connections, its URL stops answering.
    let out = w.drd(&["sandbox", "fail-region", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let err =
        w.sb.lambda("us-east-1")
            .await
            .get_function_configuration()
            .function_name(w.function())
            .send()
            .await
            .unwrap_err();
    assert!(
        matches!(err, aws_sdk_lambda::error::SdkError::DispatchFailure(_)),
        "a failed region must give connection errors: {err:?}"
    );
    let (status, _) =
        w.sb.call_signed(&w.url, &json!({"transcript": "Agent: a"}))
            .await;
    assert_eq!(status, 503);
    // No standby was prepared: the name has nowhere to go until the restore.
    let (status, _) =
        w.sb.call_url(&name_url, &json!({"transcript": "Agent: a"}))
            .await;
    assert_eq!(status, 503);
    // Anything that still depends on the primary fails, quickly, and writes no point.
    let out = w.drd(&["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Unreachable"), "{}", text(&out));

    let started = std::time::Instant::now();
    let out = w.restore("us-west-2", &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let wall = started.elapsed();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "succeeded", "{r}");
    let steps: Vec<(&str, &str)> = r["run"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("preflight", "succeeded"),
            ("secrets", "succeeded"),
            ("code", "succeeded"),
            ("stack", "succeeded"),
            ("function", "succeeded"),
            ("front-door", "succeeded"),
            ("dns", "succeeded"),
            ("backup", "succeeded"),
        ]
    );
    for s in r["run"]["steps"].as_array().unwrap() {
        assert!(s["duration_ms"].as_u64().is_some(), "{s}");
    }
    // RTO: positive and within the wall time; RPO: the point's age.
    let rto = r["rto_ms"].as_u64().unwrap();
    assert!(rto > 0 && rto <= wall.as_millis() as u64, "{r}");
    assert!(r["rpo_seconds"].as_u64().is_some(), "{r}");
    assert!(
        r["primary"].as_str().unwrap().contains("unreachable"),
        "the primary's state is reported: {r}"
    );

    // The stack in us-west-2: the same template byte for byte (it names no region-bound
    // value), the code bucket rewritten and reported.
    let cf = w.sb.cloudformation("us-west-2").await;
    let body = cf
        .get_template()
        .stack_name(&w.name)
        .send()
        .await
        .unwrap()
        .template_body()
        .unwrap()
        .to_string();
    assert_eq!(body, template);
    let rewrites = r["run"]["steps"][0]["outputs"]["rewrites"]
        .as_str()
        .unwrap();
    assert_eq!(
        rewrites,
        format!(
            "parameter CodeBucket: {0}-artifacts-us-east-1 -> {0}-artifacts-us-west-2",
            w.name
        )
    );
    let stack = cf
        .describe_stacks()
        .stack_name(&w.name)
        .send()
        .await
        .unwrap();
    let params: Vec<(String, String)> = stack.stacks()[0]
        .parameters()
        .iter()
        .map(|p| {
            (
                p.parameter_key().unwrap().to_string(),
                p.parameter_value().unwrap().to_string(),
            )
        })
        .collect();
    assert!(params.contains(&(
        "CodeBucket".into(),
        format!("{}-artifacts-us-west-2", w.name)
    )));

    // The secrets: same values, same version ids, same stages.
    assert_eq!(
        w.secret("us-west-2", "openai-api-key", "AWSCURRENT").await,
        key_current
    );
    assert_eq!(
        w.secret("us-west-2", "github-token", "AWSCURRENT").await,
        gh_current
    );
    assert_eq!(
        w.secret("us-west-2", "github-token", "AWSPREVIOUS").await,
        gh_previous
    );

    // A secret the policy names but that did not exist at backup time stays absent.
    assert!(w
        .sb
        .secrets("us-west-2")
        .await
        .describe_secret()
        .secret_id("never-created")
        .send()
        .await
        .is_err());

    // live runs the backed-up code, and answers T1 through the function host.
    assert_eq!(w.live_code("us-west-2").await, code);
    let new_url = r["function_url"].as_str().unwrap();
    assert!(new_url.contains(".lambda-url.us-west-2."), "{new_url}");
    let (status, body) =
        w.sb.call_signed(new_url, &json!({"transcript": "Agent: a\nCustomer: b"}))
            .await;
    assert_eq!(
        (status, body["transcript"].as_str()),
        (200, Some("Agent: a\nCustomer: b"))
    );

    let (status, _) =
        w.sb.call_url(new_url, &json!({"transcript": "Agent: a"}))
            .await;
    assert_eq!(status, 403, "a direct POST to the restored Function URL");

    // Route 53: the new region's front door is the primary, the old one the standby; read back
    // with a second client, the door in us-west-2 maps the name to an API on live there.
    let (door, new_host) = w.front_door("us-west-2").await;
    assert!(
        new_host.ends_with(".execute-api.us-west-2.amazonaws.com"),
        "{new_host}"
    );
    assert_eq!(
        w.records(&zone_id).await,
        [
            ("drd-primary".to_string(), new_host.clone()),
            ("drd-secondary".to_string(), old_host.clone())
        ]
    );
    assert!(door.ends_with(":function:rs-a-fn:live"), "{door}");
    // And users, by the name, reach the restored region.
    let (status, body) = w.sb.call_url(&name_url, &json!({"transcript": T2})).await;
    assert!(status == 200 && relabelled(&body), "{status} {body}");

    // A fresh point of the restored stack, and the store knows where the stack serves.
    let new_point = r["new_point"].as_str().unwrap();
    let m =
        w.sb.get_json(
            "us-west-2",
            "rs-a-points",
            &format!("rs-a/points/{new_point}.json"),
        )
        .await;
    assert_eq!(m["stack"]["region"], "us-west-2");
    let active =
        w.sb.get_json("us-west-2", "rs-a-points", "rs-a/active-region.json")
            .await;
    assert_eq!(active["region"], "us-west-2");
    // Later commands follow it: status and backup act on us-west-2 without --region.
    let out = w.drd(&["status", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["region"], "us-west-2", "{st}");

    // A second restore into the same region converges: nothing new anywhere.
    let lambda = w.sb.lambda("us-west-2").await;
    let versions = |l: aws_sdk_lambda::Client| {
        let f = w.function();
        async move {
            l.list_versions_by_function()
                .function_name(f)
                .send()
                .await
                .unwrap()
                .versions()
                .len()
        }
    };
    let before_versions = versions(lambda.clone()).await;
    let sm = w.sb.secrets("us-west-2").await;
    let gh_versions = |sm: aws_sdk_secretsmanager::Client| async move {
        sm.list_secret_version_ids()
            .secret_id("github-token")
            .send()
            .await
            .unwrap()
            .versions()
            .len()
    };
    let before_secret_versions = gh_versions(sm.clone()).await;
    let out = w.restore("us-west-2", &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let r2: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outs = |id: &str| -> Value {
        r2["run"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["outputs"]
            .clone()
    };
    assert_eq!(outs("secrets")["versions_put"], "0", "{r2}");
    assert_eq!(outs("code")["uploaded"], "false", "{r2}");
    assert_eq!(outs("stack")["action"], "unchanged", "{r2}");
    assert_eq!(outs("function")["published"], "false", "{r2}");
    assert_eq!(outs("function")["function_url"], new_url, "{r2}");
    assert_eq!(outs("dns")["changed"], "false", "{r2}");
    assert_eq!(versions(lambda).await, before_versions);
    assert_eq!(gh_versions(sm).await, before_secret_versions);
    assert_eq!(w.records(&zone_id).await.len(), 2);
    let hcs =
        w.sb.route53()
            .await
            .list_health_checks()
            .send()
            .await
            .unwrap();
    assert_eq!(
        hcs.health_checks().len(),
        2,
        "one health check per Function URL host"
    );

    // No secret value ever reached the output or the journal.
    let all = format!("{}{}", text(&out), r);
    for v in [KEY, "ghp_first_token_value", "ghp_second_token_value"] {
        assert!(!all.contains(v), "{v} leaked");
    }
    let run = r["run"]["run"].as_str().unwrap();
    for k in w.journal_keys(run).await {
        let o =
            w.sb.s3("us-west-2")
                .await
                .get_object()
                .bucket("rs-a-points")
                .key(&k)
                .send()
                .await
                .unwrap();
        let b = o.body.collect().await.unwrap().into_bytes();
        let s = String::from_utf8_lossy(&b);
        for v in [
            KEY,
            "ghp_first_token_value",
            "ghp_second_token_value",
            "AGE-SECRET-KEY",
        ] {
            assert!(!s.contains(v), "{v} in {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_stop_the_restore_before_the_first_write() {
    let (w, _) = world("rs-bad", ZONE).await;
    let out = w.drd(&["sandbox", "fail-region", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out));

    // A wrong identity: a fresh key that is not a recipient.
    let other = w.sb.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (wrong, _) = age_keygen(&other);
    let out = w.drd(&[
        "restore",
        "--region",
        "us-west-2",
        "--identity",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot decrypt the secret backups"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("--identity"), "{}", text(&out));
    w.untouched("us-west-2").await;

    // The target is the failed primary.
    let out = w.restore("us-east-1", &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("primary region"), "{}", text(&out));

    // A point that fails verify (one byte of its template flipped), named explicitly.
    let s3 = w.sb.s3("us-west-2").await;
    let points = s3
        .list_objects_v2()
        .bucket("rs-bad-points")
        .prefix("rs-bad/points/")
        .send()
        .await
        .unwrap();
    let pkey = points.contents()[0].key().unwrap().to_string();
    let point = pkey
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".json")
        .to_string();
    let m = w.sb.get_json("us-west-2", "rs-bad-points", &pkey).await;
    let tkey = format!(
        "rs-bad/objects/sha256/{}/{}",
        &m["stack"]["template"]["sha256"].as_str().unwrap()[..2],
        m["stack"]["template"]["sha256"].as_str().unwrap()
    );
    let o = s3
        .get_object()
        .bucket("rs-bad-points")
        .key(&tkey)
        .send()
        .await
        .unwrap();
    let mut b = o.body.collect().await.unwrap().into_bytes().to_vec();
    b[0] ^= 1;
    s3.put_object()
        .bucket("rs-bad-points")
        .key(&tkey)
        .body(b.into())
        .send()
        .await
        .unwrap();
    let out = w.restore("us-west-2", &["--point", &point], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("fails verify"), "{}", text(&out));
    assert!(
        text(&out).contains(&tkey),
        "names the broken object: {}",
        text(&out)
    );
    // `latest` skips it too, and then has no sound point left.
    let out = w.restore("us-west-2", &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no recovery point passes verify"),
        "{}",
        text(&out)
    );
    w.untouched("us-west-2").await;

    // A hosted zone that does not exist.
    let text_policy = std::fs::read_to_string(&w.policy)
        .unwrap()
        .replace(&format!("zone = \"{ZONE}\""), "zone = \"missing.example.\"")
        .replace(
            &format!("record = \"rs-bad.{ZONE}\""),
            "record = \"rs-bad.missing.example.\"",
        );
    let missing = w.sb.dir.path().join("missing-zone.toml");
    std::fs::write(&missing, text_policy).unwrap();
    let out = w.sb.run(
        &[
            "--policy",
            missing.to_str().unwrap(),
            "restore",
            "--region",
            "us-west-2",
            "--identity",
            &w.identity,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("dns.zone"), "{}", text(&out));
    assert!(text(&out).contains("no hosted zone"), "{}", text(&out));
    w.untouched("us-west-2").await;
}

/// A dry run prints the whole plan, with the preflight's findings, and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_plans_the_restore_and_writes_nothing() {
    let (w, _) = world("rs-dry", ZONE).await;
    let out = w.drd(&["sandbox", "fail-region", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = w.restore("us-west-2", &["--dry-run"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = plan.to_string();
    assert!(
        s.contains("artifacts-us-west-2"),
        "the rewrite is in the plan: {s}"
    );
    let writes = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["writes"] == true)
        .count();
    assert_eq!(writes, 7, "{s}");
    w.untouched("us-west-2").await;
    let out = w.restore("us-west-2", &["--dry-run"], &[]);
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!t.contains(KEY));
}

/// SIGKILL after every step of region-redeploy (after the effect but before its journal
/// entry, then after the entry), each time resuming the same run: the end state is that of an
/// uninterrupted restore, and a step whose success was journaled never runs again. The second
/// chain runs on host `laptop-a` and is finished from host `laptop-b` with its own state
/// directory: the resume waits out laptop-a's lease (one TTL) instead of failing.
#[tokio::test(flavor = "multi_thread")]
async fn restore_killed_after_every_step_resumes_to_the_same_end_state() {
    drd_e2e::require_failpoints();
    let (w, zone_id) = world("rs-crash", ZONE).await;
    let code = w.live_code("us-east-1").await;
    let key = w.secret("us-east-1", "openai-api-key", "AWSCURRENT").await;
    let out = w.drd(&["sandbox", "fail-region", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let steps = [
        "preflight",
        "secrets",
        "code",
        "stack",
        "function",
        "front-door",
        "dns",
        "backup",
    ];
    // One chain per failpoint kind, each into a region of its own.
    for (when, region) in [
        ("after-action", "us-west-2"),
        ("after-journal", "eu-west-1"),
    ] {
        let before = w.runs().await;
        let fp = format!("{}:{when}", steps[0]);
        let other_host = when == "after-journal";
        let host_a: &[(&str, &str)] = if other_host {
            &[("DRD_HOST_ID", "laptop-a"), ("DRD_LOCK_TTL", "6s")]
        } else {
            &[]
        };
        // Killed at `fp` (as laptop-a in the second chain).
        let killed = |fp: &str, extra: &[&str]| {
            let mut e: Vec<(&str, &str)> = vec![("DRD_FAILPOINT", fp)];
            e.extend_from_slice(host_a);
            w.restore(region, extra, &e)
        };
        let out = killed(&fp, &[]);
        assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text(&out));
        let run = w
            .runs()
            .await
            .into_iter()
            .find(|r| !before.contains(r))
            .unwrap_or_else(|| panic!("{fp}: no new run"));
        for step in &steps[1..] {
            let fp = format!("{step}:{when}");
            let out = killed(&fp, &["--resume", &run]);
            assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text(&out));
        }
        let state_b = w.sb.dir.path().join("state-laptop-b");
        let state_b = state_b.to_str().unwrap();
        let from_b: &[(&str, &str)] = if other_host {
            &[
                ("DRD_HOST_ID", "laptop-b"),
                ("DRD_STATE_DIR", state_b),
                ("DRD_LOCK_TTL", "6s"),
            ]
        } else {
            &[]
        };
        let out = w.restore(region, &["--resume", &run], from_b);
        assert!(out.status.success(), "{when}: {}", text(&out));
        if other_host {
            assert!(
                text(&out).contains("waiting for the lease"),
                "laptop-b waited for laptop-a's lease: {}",
                text(&out)
            );
        }
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["run"]["outcome"], "succeeded", "{when}: {r}");
        assert_eq!(r["run"]["resumed"], true);
        assert!(r["rto_ms"].as_u64().unwrap() > 0);

        // The same end state as an uninterrupted restore.
        assert_eq!(w.live_code(region).await, code, "{when}");
        assert_eq!(w.secret(region, "openai-api-key", "AWSCURRENT").await, key);
        let url = r["function_url"].as_str().unwrap();
        assert!(url.contains(&format!(".lambda-url.{region}.")), "{url}");
        let (status, _) =
            w.sb.call_signed(url, &json!({"transcript": "Agent: a"}))
                .await;
        assert_eq!(status, 200, "{when}");
        let host = w.front_door(region).await.1;
        let recs = w.records(&zone_id).await;
        assert_eq!(recs[0], ("drd-primary".to_string(), host), "{when}");
        let lambda = w.sb.lambda(region).await;
        let n = lambda
            .list_versions_by_function()
            .function_name(w.function())
            .send()
            .await
            .unwrap()
            .versions()
            .len();
        assert_eq!(n, 2, "{when}: $LATEST and one published version, never two");

        let keys = w.journal_keys(&run).await;
        let count = |ev: &str, s: &str| {
            keys.iter()
                .filter(|k| k.ends_with(&format!("-{ev}-{s}.json")))
                .count()
        };
        for s in steps {
            assert_eq!(count("succeeded", s), 1, "{when} {s}: {keys:?}");
            // Killed after its journal entry: never started again. Killed before it: run
            // again (idempotently) exactly once more.
            let expected = if when == "after-journal" { 1 } else { 2 };
            assert_eq!(count("started", s), expected, "{when} {s}: {keys:?}");
        }
    }
}
