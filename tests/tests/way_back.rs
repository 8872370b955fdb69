//! Every way back, end to end on a sandbox and checked with second clients: prune fails closed
//! on manifests it cannot read (and keeps every blob they may name), binary secrets and
//! encrypted Lambda environments round-trip byte for byte, the primary is repaired in place,
//! a restore reads a copy when the store's region failed too, and failback returns the service
//! to the primary.

use drd_e2e::{age_keygen, bootstrap, text, Sandbox};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

const KEY: &str = "sk-e2e-way-back-0123456789";
const ZONE: &str = "drd-wb.example.";

struct World {
    sb: Sandbox,
    policy: String,
    name: String,
    identity: String,
    url: String,
    zone_id: String,
}

impl World {
    fn drd(&self, args: &[&str]) -> Output {
        let mut a = vec!["--policy", self.policy.as_str()];
        a.extend_from_slice(args);
        self.sb.run(&a, "")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.drd(args);
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.sb.sandbox_dir().join("moto.log")).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("drd {args:?}: {}\nmoto log:\n{tail}", text(&out));
        }
        out
    }

    fn bucket(&self) -> String {
        format!("{}-points", self.name)
    }

    /// Every object of a bucket with its ETag (the store's state, as a second client sees it).
    async fn objects(&self, region: &str, bucket: &str) -> BTreeMap<String, String> {
        let s3 = self.sb.s3(region).await;
        let mut out = BTreeMap::new();
        let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(p) = pages.next().await {
            for o in p.unwrap().contents() {
                out.insert(
                    o.key().unwrap().to_string(),
                    o.e_tag().unwrap_or("").to_string(),
                );
            }
        }
        out
    }

    /// The store without its lease records (a refused run may take and give back the lease).
    async fn store_state(&self) -> BTreeMap<String, String> {
        let mut m = self.objects("us-west-2", &self.bucket()).await;
        m.retain(|k, _| !k.contains("/locks/"));
        m
    }

    /// Runbook runs whose journal is in the store.
    async fn runs(&self) -> BTreeSet<String> {
        let prefix = format!("{}/journal/", self.name);
        let keys = self
            .sb
            .list_keys("us-west-2", &self.bucket(), &prefix)
            .await;
        keys.iter()
            .filter_map(|k| k.split('/').nth(2).map(str::to_string))
            .collect()
    }

    async fn points(&self) -> Vec<String> {
        let prefix = format!("{}/points/", self.name);
        self.sb
            .list_keys("us-west-2", &self.bucket(), &prefix)
            .await
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        self.sb
            .s3("us-west-2")
            .await
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }

    fn blob_key(&self, hex: &str) -> String {
        format!("{}/objects/sha256/{}/{hex}", self.name, &hex[..2])
    }

    async fn create_secret(&self, name: &str, value: &str) {
        self.sb
            .secrets("us-east-1")
            .await
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }

    async fn put_secret(&self, name: &str, value: &str) {
        self.sb
            .secrets("us-east-1")
            .await
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }

    /// The value of the service's DNS failover record marked primary.
    async fn dns_primary(&self) -> String {
        let out = self
            .sb
            .route53()
            .await
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .send()
            .await
            .unwrap();
        let record = format!("{}.{ZONE}", self.name);
        out.resource_record_sets()
            .iter()
            .find(|s| {
                s.name().trim_end_matches('.') == record.trim_end_matches('.')
                    && s.set_identifier().unwrap_or("drd-primary") == "drd-primary"
            })
            .map(|s| s.resource_records()[0].value().to_string())
            .unwrap_or_default()
    }

    /// The regional target of the front door's custom domain in `region` (second client).
    fn door_target(&self, region: &str) -> String {
        self.sb
            .door_target(region, &format!("{}.{ZONE}", self.name))
    }

    async fn stack_status(&self, region: &str) -> Option<String> {
        let cf = self.sb.cloudformation(region).await;
        match cf.describe_stacks().stack_name(&self.name).send().await {
            Ok(o) => o.stacks()[0].stack_status().map(|s| s.as_str().to_string()),
            Err(_) => None,
        }
    }

    /// T2: a real transcript classified through the Function URL.
    async fn serves_t2(&self, url: &str) {
        let (s, b) = self
            .sb
            .call_signed(
                url,
                &json!({"transcript": "Speaker 0: Thank you for calling, how can I help?\nSpeaker 1: My order is late."}),
            )
            .await;
        assert_eq!(s, 200, "{url}: {b}");
        let t = b.to_string();
        assert!(t.contains("Agent") && t.contains("Customer"), "{url}: {b}");
    }
}

/// A sandbox with a hosted zone, the policy (`extra` goes inside `[backup]` first), secrets
/// created as `setup` says, the classifier deployed to us-east-1 and one point taken.
async fn world(name: &str, copies: &str, others: &[&str]) -> World {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let keys = sb.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (identity, recipient) = age_keygen(&keys);
    let zone_id = sb.hosted_zone(ZONE, &format!("wb-{name}")).await;
    let others: Vec<String> = others.iter().map(|o| format!("{o:?}")).collect();
    let extra = format!(
        "{copies}\n[secrets]\nothers = [{}]\n\n[dns]\nzone = \"{ZONE}\"\nrecord = \"{name}.{ZONE}\"\n{}\n[retention]\nkeep_last = 1\n",
        others.join(", "),
        sb.front_door(&format!("{name}.{ZONE}"))
    );
    let policy = sb
        .policy_with(name, &recipient, &extra)
        .to_str()
        .unwrap()
        .to_string();
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
    World {
        url: r["function_url"].as_str().unwrap().to_string(),
        sb,
        policy,
        name: name.to_string(),
        identity: identity.to_str().unwrap().to_string(),
        zone_id,
    }
}

/// Set `$LATEST`'s environment, as someone with the console would.
async fn set_env(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    vars: std::collections::HashMap<String, String>,
) {
    lambda
        .update_function_configuration()
        .function_name(function)
        .environment(
            aws_sdk_lambda::types::Environment::builder()
                .set_variables(Some(vars))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Every `sha256` a manifest names.
fn named(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == "sha256" => {
                        out.insert(s.clone());
                    }
                    _ => out.extend(named(x)),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| out.extend(named(x))),
        _ => {}
    }
    out
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn prune_fails_closed_and_keeps_every_blob_an_unreadable_manifest_may_name() {
    let w = world("wb-prune", "", &["github-token"]).await;
    w.create_secret("github-token", "t-0").await;
    // Three points; two new secret versions before each, so every point names blobs only it
    // names (a secret version is stored once, by version id).
    for i in 1..=3 {
        w.put_secret("github-token", &format!("t-{i}a")).await;
        w.put_secret("github-token", &format!("t-{i}b")).await;
        w.ok(&["backup"]);
    }
    let points = w.points().await;
    assert_eq!(points.len(), 3, "{points:?}");
    let bucket = w.bucket();
    let bodies: Vec<Value> = futures::future::join_all(
        points
            .iter()
            .map(|k| w.sb.get_json("us-west-2", &bucket, k)),
    )
    .await;
    let only_mid: BTreeSet<String> = named(&bodies[1])
        .difference(
            &named(&bodies[0])
                .union(&named(&bodies[2]))
                .cloned()
                .collect(),
        )
        .cloned()
        .collect();
    assert!(
        !only_mid.is_empty(),
        "the middle point names no blob of its own"
    );

    // A manifest with a field this drd does not know (a newer drd's minor addition, or damage).
    let mut planted = bodies[0].clone();
    planted["added_by_someone_else"] = json!(true);
    w.put(&points[0], serde_json::to_vec(&planted).unwrap())
        .await;
    let before = w.store_state().await;
    let out = w.drd(&["prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&points[0]), "{}", text(&out));
    assert!(
        text(&out).contains("added_by_someone_else"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("--skip-unreadable"), "{}", text(&out));
    assert_eq!(
        w.store_state().await,
        before,
        "a refused prune changed the store"
    );

    // Passed over on request: kept, with every blob it names; the middle point goes.
    let out = w.ok(&["prune", "--skip-unreadable"]);
    assert!(text(&out).contains("passed over"), "{}", text(&out));
    let after = w.store_state().await;
    assert!(after.contains_key(&points[0]));
    assert!(!after.contains_key(&points[1]), "retention did not run");
    assert!(after.contains_key(&points[2]));
    for h in named(&bodies[0]) {
        assert!(
            after.contains_key(&w.blob_key(&h)),
            "blob {h} of the unreadable manifest went"
        );
    }
    for h in &only_mid {
        assert!(
            !after.contains_key(&w.blob_key(h)),
            "blob {h} only the pruned point named stayed"
        );
    }

    // A read error on one manifest: the prune stops; with --skip-unreadable no blob goes at all.
    w.put(&points[0], serde_json::to_vec(&bodies[0]).unwrap())
        .await;
    w.put_secret("github-token", "t-4a").await;
    w.put_secret("github-token", "t-4b").await;
    w.ok(&["backup"]);
    let fault = [
        "--rate",
        "1",
        "--kinds",
        "500",
        "--service",
        "s3",
        "--operation",
        "GetObject",
        "--path-contains",
        points[0].as_str(),
    ];
    w.sb.faults(&fault);
    let before = w.store_state().await;
    let out = w.drd(&["prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&points[0]), "{}", text(&out));
    assert_eq!(w.store_state().await, before);
    let out = w.ok(&["prune", "--skip-unreadable"]);
    assert!(text(&out).contains("every blob"), "{}", text(&out));
    let after = w.store_state().await;
    assert!(!after.contains_key(&points[2]), "retention did not run");
    let blobs = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.keys()
            .filter(|k| k.contains("/objects/"))
            .cloned()
            .collect()
    };
    assert_eq!(
        blobs(&after),
        blobs(&before),
        "a blob went while a manifest was unreadable"
    );
    w.sb.faults(&["--rate", "0"]);
    let out = w.ok(&["prune"]);
    assert!(
        !text(&out).contains("deleted 0 unreferenced"),
        "{}",
        text(&out)
    );

    // A manifest renamed aside still names blobs: prune stops on it, or keeps them.
    let points = w.points().await;
    let aside = format!("{}.bad", points[0]);
    let body = w.sb.get_json("us-west-2", &w.bucket(), &points[0]).await;
    w.put(&aside, serde_json::to_vec(&body).unwrap()).await;
    let s3 = w.sb.s3("us-west-2").await;
    s3.delete_object()
        .bucket(w.bucket())
        .key(&points[0])
        .send()
        .await
        .unwrap();
    let out = w.drd(&["prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&aside), "{}", text(&out));
    w.ok(&["prune", "--skip-unreadable"]);
    let after = w.store_state().await;
    for h in named(&body) {
        assert!(
            after.contains_key(&w.blob_key(&h)),
            "blob {h} of the renamed manifest went"
        );
    }
    s3.delete_object()
        .bucket(w.bucket())
        .key(&aside)
        .send()
        .await
        .unwrap();

    // A manifest in a newer format: nothing prunes or backs up beside it, even when asked to skip.
    let newer_key = format!("{}/points/29990101T000000000Z-0000newr.json", w.name);
    w.put(
        &newer_key,
        serde_json::to_vec(&json!({"schema": 99, "writer": "drd 9.9.9", "id": "x"})).unwrap(),
    )
    .await;
    // A newer drd following the protocol moved the newest-point pointer to it first.
    w.put(
        &format!("{}/latest-point.json", w.name),
        serde_json::to_vec(&json!({"id": "29990101T000000000Z-0000newr", "created_at": "2999-01-01T00:00:00Z", "fencing_token": 9})).unwrap(),
    )
    .await;
    let before = w.store_state().await;
    for args in [&["prune"][..], &["prune", "--skip-unreadable"], &["backup"]] {
        let out = w.drd(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("schema 99") && t.contains("drd 9.9.9"),
            "{args:?}: {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    }
    assert_eq!(w.store_state().await, before);
    // A restore of "latest" never falls back to an older point past it.
    let out = w.drd(&[
        "restore",
        "--region",
        "us-west-2",
        "--identity",
        &w.identity,
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("schema 99"), "{}", text(&out));
    assert_eq!(
        w.stack_status("us-west-2").await,
        None,
        "the restore wrote past its preflight"
    );
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn binary_secrets_and_environments_round_trip_and_failback_returns_to_the_primary() {
    let w = world("wb-bin", "", &["bin-secret"]).await;
    // 64 random bytes, most of them not UTF-8.
    let mut bytes = vec![0u8; 64];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    bytes[0] = 0xff;
    let sm = w.sb.secrets("us-east-1").await;
    sm.create_secret()
        .name("bin-secret")
        .secret_binary(aws_smithy_types::Blob::new(bytes.clone()))
        .send()
        .await
        .unwrap();
    // Someone put the API key in the function's environment and published it.
    let lambda = w.sb.lambda("us-east-1").await;
    let function = format!("{}-fn", w.name);
    let cfg = lambda
        .get_function_configuration()
        .function_name(&function)
        .send()
        .await
        .unwrap();
    let mut vars: std::collections::HashMap<String, String> = cfg
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    vars.insert("OPENAI_API_KEY".into(), KEY.into());
    vars.insert("DRD_TEST_MARK".into(), "1".into());
    set_env(&lambda, &function, vars).await;
    lambda
        .publish_version()
        .function_name(&function)
        .send()
        .await
        .unwrap();
    w.ok(&["backup"]);

    // No object of the store holds the key in clear; the environment is an age file the real
    // age CLI opens with the identity, and verify decrypts it.
    let s3 = w.sb.s3("us-west-2").await;
    let mut env_blobs = vec![];
    for k in w.objects("us-west-2", &w.bucket()).await.keys() {
        let o = s3
            .get_object()
            .bucket(w.bucket())
            .key(k)
            .send()
            .await
            .unwrap();
        let b = o.body.collect().await.unwrap().into_bytes();
        assert!(
            !String::from_utf8_lossy(&b).contains(KEY),
            "{k} holds the API key in clear"
        );
        if k.contains("/points/") {
            let m: Value = serde_json::from_slice(&b).unwrap();
            for e in m["function"]["environments"].as_array().unwrap() {
                env_blobs.push(e["blob"]["sha256"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(!env_blobs.is_empty(), "no environment was backed up");
    let o = s3
        .get_object()
        .bucket(w.bucket())
        .key(w.blob_key(&env_blobs[0]))
        .send()
        .await
        .unwrap();
    let cipher = w.sb.dir.path().join("env.age");
    std::fs::write(&cipher, o.body.collect().await.unwrap().into_bytes()).unwrap();
    let plain = std::process::Command::new("age")
        .args(["-d", "-i", &w.identity])
        .arg(&cipher)
        .output()
        .expect("the age CLI");
    assert!(plain.status.success(), "{}", text(&plain));
    let env: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(env.get("OPENAI_SECRET_NAME").is_some(), "{env}");
    let out = w.ok(&["verify", "--identity", &w.identity, "--output", "json"]);
    assert!(!text(&out).contains(KEY));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["environments_decrypted"].as_u64().unwrap() >= 1, "{v}");

    // Unchanged, the next point writes one object: its manifest.
    let out = w.ok(&["backup", "--output", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["objects_written"], 1, "{r}");

    // One value changes (same names): the next point holds a new environment backup.
    let mut vars = lambda
        .get_function_configuration()
        .function_name(&function)
        .send()
        .await
        .unwrap()
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap();
    vars.insert("DRD_TEST_MARK".into(), "2".into());
    set_env(&lambda, &function, vars).await;
    let out = w.ok(&["backup", "--output", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["changed"].to_string().contains("function environment"),
        "a changed environment value went unnoticed: {r}"
    );

    // The primary fails; the restore brings the secret back as the same bytes.
    w.ok(&["sandbox", "fail-region", "us-east-1"]);
    let out = w.ok(&[
        "restore",
        "--region",
        "us-west-2",
        "--identity",
        &w.identity,
        "--output",
        "json",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let standby_url = r["function_url"].as_str().unwrap().to_string();
    w.serves_t2(&standby_url).await;
    let got =
        w.sb.secrets("us-west-2")
            .await
            .get_secret_value()
            .secret_id("bin-secret")
            .send()
            .await
            .unwrap();
    assert!(
        got.secret_string().is_none(),
        "a binary secret came back as a string"
    );
    assert_eq!(got.secret_binary().unwrap().as_ref(), bytes.as_slice());
    assert_eq!(w.dns_primary().await, w.door_target("us-west-2"));

    // Failing back before the primary answers is refused before any write.
    let out = w.drd(&["failback", "--identity", &w.identity]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("us-east-1"), "{}", text(&out));

    // The primary is back: failback moves the name back, the primary serves T2, and the
    // standby is kept. Killed after the primary went live (the store already says so) and
    // before DNS moved, it resumes where it stopped.
    w.ok(&["sandbox", "restore-region", "us-east-1"]);
    drd_e2e::require_failpoints();
    let before = w.runs().await;
    let mut a = vec!["--policy", w.policy.as_str(), "failback", "--identity"];
    a.push(&w.identity);
    let out =
        w.sb.run_env(&a, "", &[("DRD_FAILPOINT", "function:after-action")]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{}",
        text(&out)
    );
    let run = w
        .runs()
        .await
        .difference(&before)
        .next()
        .cloned()
        .expect("the killed failback's run");
    let out = w.ok(&["failback", "--resume", &run]);
    let t = text(&out);
    assert!(t.contains("failed back to us-east-1"), "{t}");
    assert!(t.contains("kept"), "{t}");
    assert_eq!(w.dns_primary().await, w.door_target("us-east-1"));
    w.serves_t2(&w.url).await;
    assert_eq!(
        w.stack_status("us-west-2").await.as_deref(),
        Some("CREATE_COMPLETE"),
        "the standby was not kept"
    );
    let active =
        w.sb.get_json(
            "us-west-2",
            &w.bucket(),
            &format!("{}/active-region.json", w.name),
        )
        .await;
    assert_eq!(active["region"], "us-east-1", "{active}");
    let got =
        w.sb.secrets("us-east-1")
            .await
            .get_secret_value()
            .secret_id("bin-secret")
            .send()
            .await
            .unwrap();
    assert_eq!(got.secret_binary().unwrap().as_ref(), bytes.as_slice());

    // Nothing left to fail back.
    let out = w.drd(&["failback", "--identity", &w.identity]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("already runs in the primary"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_primary_is_repaired_in_place_and_a_deleted_secret_is_recovered_not_recreated() {
    let w = world("wb-fix", "", &["github-token"]).await;
    let sm = w.sb.secrets("us-east-1").await;
    w.create_secret("github-token", "ghp_before").await;
    w.ok(&["backup"]);
    let before = sm
        .describe_secret()
        .secret_id("github-token")
        .send()
        .await
        .unwrap();

    // Someone deletes the stack and the token (with a recovery window); the region is fine.
    let cf = w.sb.cloudformation("us-east-1").await;
    cf.delete_stack().stack_name(&w.name).send().await.unwrap();
    for _ in 0..60 {
        match w.stack_status("us-east-1").await.as_deref() {
            None | Some("DELETE_COMPLETE") => break,
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
    sm.delete_secret()
        .secret_id("github-token")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();

    let out = w.ok(&[
        "restore",
        "--region",
        "us-east-1",
        "--identity",
        &w.identity,
    ]);
    let t = text(&out);
    assert!(t.contains("repairs:"), "{t}");
    assert!(t.contains("github-token recovered"), "{t}");
    assert!(t.contains("stack created"), "{t}");
    assert_eq!(
        w.stack_status("us-east-1").await.as_deref(),
        Some("CREATE_COMPLETE")
    );
    let after = sm
        .describe_secret()
        .secret_id("github-token")
        .send()
        .await
        .unwrap();
    assert!(
        after.deleted_date().is_none(),
        "the secret is still scheduled for deletion"
    );
    assert_eq!(
        after.arn(),
        before.arn(),
        "the secret was recreated, not recovered"
    );
    assert_eq!(after.created_date(), before.created_date());
    let url =
        w.sb.lambda("us-east-1")
            .await
            .get_function_url_config()
            .function_name(format!("{}-fn", w.name))
            .qualifier("live")
            .send()
            .await
            .unwrap()
            .function_url()
            .to_string();
    w.serves_t2(&url).await;
    assert_eq!(w.dns_primary().await, w.door_target("us-east-1"));

    // A second repair finds everything intact and changes nothing.
    let out = w.ok(&[
        "restore",
        "--region",
        "us-east-1",
        "--identity",
        &w.identity,
    ]);
    assert!(
        text(&out).contains("none: everything was intact"),
        "{}",
        text(&out)
    );
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn restore_from_a_copy_when_the_store_region_fails_with_the_primary() {
    let copy = "[[backup.copies]]\nbucket = \"wb-copy-copy\"\nregion = \"eu-west-1\"\n";
    let w = world("wb-copy", copy, &[]).await;
    w.ok(&["backup"]);
    let copied = w.objects("eu-west-1", "wb-copy-copy").await;
    assert!(copied.keys().any(|k| k.contains("/points/")), "{copied:?}");

    // The primary and the store's region both fail.
    w.ok(&["sandbox", "fail-region", "us-east-1"]);
    w.ok(&["sandbox", "fail-region", "us-west-2"]);
    let out = w.ok(&["points", "list", "--from-copy", "eu-west-1"]);
    assert!(!text(&out).trim().is_empty());
    w.ok(&[
        "verify",
        "--from-copy",
        "eu-west-1",
        "--identity",
        &w.identity,
    ]);
    let out = w.drd(&["points", "list", "--from-copy", "ap-south-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("backup.copies"), "{}", text(&out));

    let out = w.ok(&[
        "restore",
        "--region",
        "eu-west-1",
        "--from-copy",
        "eu-west-1",
        "--identity",
        &w.identity,
    ]);
    let t = text(&out);
    assert!(t.contains("s3://wb-copy-copy (eu-west-1)"), "{t}");
    assert!(
        t.contains("s3://wb-copy-points (us-west-2) is not used"),
        "{t}"
    );
    // The run's lease, journal, active-region record and new point are in the copy.
    let now = w.objects("eu-west-1", "wb-copy-copy").await;
    assert!(now.contains_key("wb-copy/active-region.json"), "{now:?}");
    assert!(now.keys().any(|k| k.contains("/journal/")), "{now:?}");
    assert!(
        now.keys().filter(|k| k.contains("/points/")).count() > 1,
        "no new point in the copy"
    );
    assert_eq!(
        w.stack_status("eu-west-1").await.as_deref(),
        Some("CREATE_COMPLETE")
    );
    let url =
        w.sb.lambda("eu-west-1")
            .await
            .get_function_url_config()
            .function_name("wb-copy-fn")
            .qualifier("live")
            .send()
            .await
            .unwrap()
            .function_url()
            .to_string();
    w.serves_t2(&url).await;

    // Both regions return. The store's own record is stale now: commands say so, never guess.
    w.ok(&["sandbox", "restore-region", "us-east-1"]);
    w.ok(&["sandbox", "restore-region", "us-west-2"]);
    let out = w.drd(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--from-copy eu-west-1"),
        "{}",
        text(&out)
    );
    // Failback from the copy's newest point, retiring the standby.
    let out = w.ok(&[
        "failback",
        "--from-copy",
        "eu-west-1",
        "--identity",
        &w.identity,
        "--retire-standby",
    ]);
    assert!(text(&out).contains("deleted"), "{}", text(&out));
    let recs =
        w.sb.route53()
            .await
            .list_resource_record_sets()
            .hosted_zone_id(&w.zone_id)
            .send()
            .await
            .unwrap();
    assert!(
        !recs
            .resource_record_sets()
            .iter()
            .flat_map(|s| s.resource_records())
            .any(|r| r.value().contains("eu-west-1")),
        "a record still sends users to the retired standby"
    );
    assert!(
        matches!(
            w.stack_status("eu-west-1").await.as_deref(),
            None | Some("DELETE_COMPLETE")
        ),
        "the standby was not retired"
    );
    // Its front door went with it (a door without its function would answer 5xx).
    let left =
        w.sb.aws_cli(&["apigatewayv2", "get-domain-names", "--region", "eu-west-1"]);
    assert_eq!(left["Items"].as_array().map_or(0, Vec::len), 0, "{left}");
    assert_eq!(w.dns_primary().await, w.door_target("us-east-1"));
    w.serves_t2(&w.url).await;
}
