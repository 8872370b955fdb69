//! Recovery points end to end: round trip against the live stack with second clients and the
//! real `age` CLI, no-change backups, verify on damage, SIGKILL safety, leases, no leaks.

use drd_e2e::{age_keygen, bootstrap, text, Sandbox};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const KEY: &str = "sk-backup-test-7c1d";
const GH: &str = "ghp_backuptest0000000000000000000000";

struct Setup {
    sb: Sandbox,
    policy: PathBuf,
    identity: PathBuf,
    recipient: String,
    stack: String,
    bucket: String,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let sb = Sandbox::start();
        let (identity, recipient) = age_keygen(sb.dir.path());
        let policy = sb.policy_with(
            name,
            &recipient,
            "\n[secrets]\nothers = [\"github-token\"]\n",
        );
        sb.allow_key(KEY);
        let out = sb.run(
            &[
                "--policy",
                policy.to_str().unwrap(),
                "deploy",
                "--bootstrap",
                bootstrap().to_str().unwrap(),
            ],
            KEY,
        );
        assert!(out.status.success(), "{}", text(&out));
        // A JSON secret with two staged versions (AWSCURRENT and AWSPREVIOUS).
        let sm = sb.secrets("us-east-1").await;
        sm.create_secret()
            .name("github-token")
            .secret_string(json!({"token": "ghp_old"}).to_string())
            .send()
            .await
            .unwrap();
        sm.put_secret_value()
            .secret_id("github-token")
            .secret_string(json!({"token": GH}).to_string())
            .send()
            .await
            .unwrap();
        Setup {
            sb,
            policy,
            identity,
            recipient,
            stack: name.to_string(),
            bucket: format!("{name}-points"),
        }
    }

    fn drd(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["--policy", self.policy.to_str().unwrap()];
        a.extend_from_slice(args);
        self.sb.run(&a, "")
    }

    fn backup(&self) -> Value {
        let out = self.drd(&["backup", "--output", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn objects(&self) -> Vec<String> {
        let s3 = self.sb.s3("us-west-2").await;
        let out = s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .map(|o| o.key().unwrap().to_string())
            .collect()
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        let s3 = self.sb.s3("us-west-2").await;
        let o = s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        o.body.collect().await.unwrap().into_bytes().to_vec()
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        let s3 = self.sb.s3("us-west-2").await;
        s3.put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }

    fn blob_key(&self, hex: &str) -> String {
        format!("{}/objects/sha256/{}/{}", self.stack, &hex[..2], hex)
    }

    async fn manifest(&self, id: &str) -> Value {
        serde_json::from_slice(&self.get(&format!("{}/points/{id}.json", self.stack)).await)
            .unwrap()
    }
}

/// The hex digests of a manifest's blobs: template, configuration, the first code package, and
/// every secret version's age file.
fn blob_hexes(m: &Value) -> Vec<String> {
    let mut blobs: Vec<String> = vec![
        m["stack"]["template"]["sha256"].as_str().unwrap().into(),
        m["function"]["configuration"]["sha256"]
            .as_str()
            .unwrap()
            .into(),
        m["code"][0]["blob"]["sha256"].as_str().unwrap().into(),
    ];
    for sct in m["secrets"].as_array().unwrap() {
        for v in sct["versions"].as_array().unwrap() {
            blobs.push(v["blob"]["sha256"].as_str().unwrap().into());
        }
    }
    blobs
}

fn age_decrypt(identity: &Path, cipher: &[u8], dir: &Path) -> Vec<u8> {
    let f = dir.join("cipher.age");
    std::fs::write(&f, cipher).unwrap();
    let out = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_against_the_live_stack_with_the_age_cli() {
    let s = Setup::new("bk-a").await;
    let r = s.backup();
    let id = r["id"].as_str().unwrap().to_string();
    let m = s.manifest(&id).await;

    // The template, byte for byte as CloudFormation returns it.
    let cf = s.sb.cloudformation("us-east-1").await;
    let body = cf
        .get_template()
        .stack_name("bk-a")
        .send()
        .await
        .unwrap()
        .template_body()
        .unwrap()
        .to_string();
    let tpl = s
        .get(&s.blob_key(m["stack"]["template"]["sha256"].as_str().unwrap()))
        .await;
    assert_eq!(String::from_utf8(tpl).unwrap(), body);
    let params: Vec<(&str, &str)> = m["stack"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap(),
                p["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(params.contains(&("FunctionName", "bk-a-fn")), "{params:?}");
    // The role and the function (the log group is drd's, outside the stack).
    assert_eq!(m["stack"]["resources"].as_array().unwrap().len(), 2);
    assert_eq!(m["log_group"]["retention_days"], 7);

    // The live version's code package, whose hash is its CodeSha256.
    let lambda = s.sb.lambda("us-east-1").await;
    let live = lambda
        .get_alias()
        .function_name("bk-a-fn")
        .name("live")
        .send()
        .await
        .unwrap();
    let conf = lambda
        .get_function_configuration()
        .function_name("bk-a-fn")
        .qualifier(live.function_version().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        m["function"]["aliases"]["live"],
        live.function_version().unwrap()
    );
    let code = &m["code"][0];
    assert_eq!(code["code_sha256"], conf.code_sha256().unwrap());
    let zip = s
        .get(&s.blob_key(code["blob"]["sha256"].as_str().unwrap()))
        .await;
    assert_eq!(
        drd::workload::package::Package::from_zip(zip).code_sha256(),
        conf.code_sha256().unwrap()
    );
    assert_eq!(
        m["function"]["url"]["url"],
        lambda
            .get_function_url_config()
            .function_name("bk-a-fn")
            .qualifier("live")
            .send()
            .await
            .unwrap()
            .function_url()
    );

    // Every staged secret version decrypts with the real age CLI to the exact value.
    let sm = s.sb.secrets("us-east-1").await;
    let mut decrypted = 0;
    for secret in m["secrets"].as_array().unwrap() {
        let name = secret["name"].as_str().unwrap();
        for v in secret["versions"].as_array().unwrap() {
            let want = sm
                .get_secret_value()
                .secret_id(name)
                .version_id(v["version_id"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            let cipher = s
                .get(&s.blob_key(v["blob"]["sha256"].as_str().unwrap()))
                .await;
            assert!(cipher.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
            let plain = age_decrypt(&s.identity, &cipher, s.sb.dir.path());
            assert_eq!(
                String::from_utf8(plain).unwrap(),
                want.secret_string().unwrap()
            );
            decrypted += 1;
        }
    }
    assert_eq!(
        decrypted, 3,
        "openai-api-key (1 version) + github-token (AWSCURRENT, AWSPREVIOUS)"
    );
    let gh = m["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "github-token")
        .unwrap();
    let stages: Vec<String> = gh["versions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            v["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        stages.contains(&"AWSCURRENT".into()) && stages.contains(&"AWSPREVIOUS".into()),
        "{stages:?}"
    );

    // The reverse: a file encrypted by the age CLI reads the same through drd's decryptor.
    let plain_file = s.sb.dir.path().join("plain.txt");
    std::fs::write(&plain_file, "{\"OPENAI_API_KEY\": \"sk-from-the-cli\"}").unwrap();
    let out = std::process::Command::new("age")
        .args(["-a", "-r", &s.recipient])
        .arg(&plain_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let ids = drd::backup::crypto::Identities::from_file(&s.identity).unwrap();
    let got = ids.decrypt(&out.stdout).unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(
        got.expose_secret(),
        std::fs::read(&plain_file).unwrap().as_slice()
    );

    // verify with the identity decrypts all three.
    let out = s.drd(&[
        "verify",
        "--identity",
        s.identity.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["secrets_decrypted"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_backup_writes_only_its_manifest() {
    let s = Setup::new("bk-b").await;
    s.backup();
    let before = s.objects().await;
    let r = s.backup();
    let after = s.objects().await;
    assert_eq!(after.len(), before.len() + 1, "exactly one new object");
    let new: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(new.len(), 1);
    assert!(new[0].starts_with("bk-b/points/"), "{new:?}");
    assert_eq!(r["new_blobs"], 0);
    assert_eq!(r["objects_written"], 1);

    // A change (a new secret version) adds exactly that blob and says what changed.
    s.sb.secrets("us-east-1")
        .await
        .put_secret_value()
        .secret_id("github-token")
        .secret_string("{\"token\":\"ghp_newer\"}")
        .send()
        .await
        .unwrap();
    let r = s.backup();
    assert_eq!(r["new_blobs"], 1, "{r}");
    assert!(
        r["changed"]
            .as_array()
            .unwrap()
            .contains(&json!("secret github-token")),
        "{r}"
    );

    let out = s.drd(&["points", "list", "--output", "json"]);
    assert!(out.status.success());
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
}

/// Reuse is checked against the store, never taken from the previous manifest alone: blobs
/// deleted behind drd's back are written again by the next backup.
#[tokio::test(flavor = "multi_thread")]
async fn blobs_missing_from_the_store_are_written_again_by_the_next_backup() {
    let s = Setup::new("bk-g").await;
    let id = s.backup()["id"].as_str().unwrap().to_string();
    let m = s.manifest(&id).await;
    let blobs = blob_hexes(&m);
    assert_eq!(
        blobs.len(),
        6,
        "template, configuration, code, 3 secret versions"
    );
    let s3 = s.sb.s3("us-west-2").await;
    for hex in &blobs {
        s3.delete_object()
            .bucket(&s.bucket)
            .key(s.blob_key(hex))
            .send()
            .await
            .unwrap();
    }
    let r = s.backup();
    assert_eq!(r["new_blobs"], 6, "every missing blob written again: {r}");
    let new_id = r["id"].as_str().unwrap().to_string();
    let ident = s.identity.to_str().unwrap().to_string();
    let out = s.drd(&["verify", "--point", &new_id, "--identity", &ident]);
    assert!(out.status.success(), "{}", text(&out));
    // Template, configuration and code hash to the same addresses, so the first point is whole
    // again except for its secret backups (age ciphertexts differ on every encryption).
    let out = s.drd(&["verify", "--point", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = String::from_utf8_lossy(&out.stdout);
    assert_eq!(o.matches("secret backup").count(), 3, "{o}");
    assert_eq!(o.matches(" is missing").count(), 3, "{o}");
    let r = s.backup();
    assert_eq!(r["new_blobs"], 0, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_point_and_object_for_every_kind_of_damage() {
    let s = Setup::new("bk-c").await;
    let id = s.backup()["id"].as_str().unwrap().to_string();
    let m = s.manifest(&id).await;
    let ident = s.identity.to_str().unwrap().to_string();
    let out = s.drd(&["verify", "--identity", &ident]);
    assert!(out.status.success(), "{}", text(&out));

    // A wrong identity.
    let wdir = s.sb.dir.path().join("w");
    std::fs::create_dir_all(&wdir).unwrap();
    let (wrong, _) = age_keygen(&wdir);
    let out = s.drd(&["verify", "--identity", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = text(&out);
    assert!(
        o.contains(&id) && o.contains("cannot open it") && o.contains("--identity"),
        "{o}"
    );

    // One corrupted byte in each blob, then each blob deleted.
    let blobs = blob_hexes(&m);
    for hex in &blobs {
        let key = s.blob_key(hex);
        let original = s.get(&key).await;
        let mut bad = original.clone();
        let i = bad.len() / 2;
        bad[i] ^= 0x01;
        s.put(&key, bad).await;
        let out = s.drd(&["verify"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let o = text(&out);
        assert!(
            o.contains(&id) && o.contains(&key) && o.contains("corrupted"),
            "{o}"
        );

        s.sb.s3("us-west-2")
            .await
            .delete_object()
            .bucket(&s.bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let out = s.drd(&["verify"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let o = text(&out);
        assert!(
            o.contains(&id) && o.contains(&key) && o.contains("missing"),
            "{o}"
        );
        s.put(&key, original).await;
    }
    let out = s.drd(&["verify", "--identity", &ident]);
    assert!(out.status.success(), "restored: {}", text(&out));

    // A truncated manifest.
    let mkey = format!("bk-c/points/{id}.json");
    let full = s.get(&mkey).await;
    s.put(&mkey, full[..full.len() / 2].to_vec()).await;
    let out = s.drd(&["verify", "--point", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = text(&out);
    assert!(
        o.contains(&id) && o.contains(&mkey) && o.contains("unreadable"),
        "{o}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_any_moment_never_leaves_a_broken_point_and_leases_are_exclusive() {
    let s = Setup::new("bk-d").await;
    s.backup();
    // A second-client change before each killed run, so each run has blobs to write.
    for round in 0..6u64 {
        s.sb.secrets("us-east-1")
            .await
            .put_secret_value()
            .secret_id("github-token")
            .secret_string(format!("{{\"token\":\"ghp_round{round}\"}}"))
            .send()
            .await
            .unwrap();
        let mut c = s.sb.drd();
        c.args(["--policy", s.policy.to_str().unwrap(), "backup"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        // Kill points spread over the run: 0 ms up to ~250 ms.
        std::thread::sleep(std::time::Duration::from_millis((round * 53) % 260));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        // Every point that exists verifies; the killed run's lease is taken over (its pid is dead).
        let out = s.drd(&[
            "verify",
            "--all",
            "--identity",
            s.identity.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "round {round}: {}", text(&out));
    }
    let before = s.drd(&["points", "list", "--output", "json"]);
    let n_before = serde_json::from_slice::<Value>(&before.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    s.backup();
    let out = s.drd(&[
        "verify",
        "--all",
        "--identity",
        s.identity.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let after = s.drd(&["points", "list", "--output", "json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&after.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        n_before + 1
    );

    // A live lease held by another host: exit 3 naming the holder; nothing written.
    let lock = json!({"holder": "drd backup", "host": "other-host", "pid": 4242, "token": 9, "expires_at": 4_102_444_800u64});
    s.put("bk-d/locks/store", lock.to_string().into_bytes())
        .await;
    let objects = s.objects().await;
    let out = s.drd(&["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pid 4242 on other-host"),
        "{}",
        text(&out)
    );
    assert_eq!(s.objects().await, objects);
    let out = s.drd(&["prune"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_value_appears_in_outputs_or_stored_objects() {
    let s = Setup::new("bk-e").await;
    let mut seen = String::new();
    for args in [
        vec!["-vv", "backup"],
        vec!["-vv", "backup", "--output", "json"],
        vec!["points", "list", "--output", "json"],
        vec![
            "verify",
            "--all",
            "--output",
            "json",
            "--identity",
            s.identity.to_str().unwrap(),
        ],
        vec!["prune", "--dry-run", "--output", "json"],
    ] {
        let out = s.drd(&args);
        assert!(out.status.success(), "{}", text(&out));
        seen.push_str(&text(&out));
    }
    let id =
        serde_json::from_slice::<Value>(&s.drd(&["points", "list", "--output", "json"]).stdout)
            .unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let out = s.drd(&["points", "show", &id, "--output", "json"]);
    seen.push_str(&text(&out));
    for secret in [KEY, GH, "ghp_old"] {
        assert!(!seen.contains(secret), "{secret} leaked into drd's output");
        for key in s.objects().await {
            let body = s.get(&key).await;
            assert!(
                !String::from_utf8_lossy(&body).contains(secret),
                "{secret} leaked into {key}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_deletes_manifests_then_unreferenced_blobs_and_keeps_what_rules_keep() {
    let s = Setup::new("bk-f").await;
    let policy = std::fs::read_to_string(&s.policy).unwrap() + "\n[retention]\nkeep_last = 1\n";
    std::fs::write(&s.policy, policy).unwrap();
    s.backup();
    s.sb.secrets("us-east-1")
        .await
        .put_secret_value()
        .secret_id("github-token")
        .secret_string("{\"token\":\"ghp_x\"}")
        .send()
        .await
        .unwrap();
    let newest = s.backup()["id"].as_str().unwrap().to_string();
    let out = s.drd(&["prune", "--dry-run", "--output", "json"]);
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        dry["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["keep"] == false)
            .count(),
        1
    );
    assert_eq!(
        s.objects()
            .await
            .iter()
            .filter(|k| k.contains("/points/"))
            .count(),
        2,
        "dry run deletes nothing"
    );
    let out = s.drd(&["prune"]);
    assert!(out.status.success(), "{}", text(&out));
    let points: Vec<String> = s
        .objects()
        .await
        .into_iter()
        .filter(|k| k.contains("/points/"))
        .collect();
    assert_eq!(points, vec![format!("bk-f/points/{newest}.json")]);
    // The AWSPREVIOUS ghp_old version dropped out of staging: its age file is unreferenced now.
    let out = s.drd(&[
        "verify",
        "--all",
        "--identity",
        s.identity.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn object_lock_makes_points_immutable_copies_follow_and_a_lock_is_never_weakened() {
    let sb = Sandbox::start();
    let (_identity, recipient) = age_keygen(sb.dir.path());
    let extra = "[[backup.copies]]\nbucket = \"bk-g-copy\"\nregion = \"eu-west-1\"\n\n[backup.object_lock]\nmode = \"governance\"\ndays = 2\n";
    let policy = sb.policy_with("bk-g", &recipient, extra);
    sb.allow_key(KEY);
    let p = policy.to_str().unwrap();
    let out = sb.run(
        &[
            "--policy",
            p,
            "deploy",
            "--bootstrap",
            bootstrap().to_str().unwrap(),
        ],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = sb.run(&["--policy", p, "backup", "--output", "json"], "");
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["copies"][0]["bucket"], "bk-g-copy");

    // Both buckets are locked, and hold the same objects (the copy has no lease object).
    for (bucket, region) in [("bk-g-points", "us-west-2"), ("bk-g-copy", "eu-west-1")] {
        let s3 = sb.s3(region).await;
        let lock = s3
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        let rule = lock
            .object_lock_configuration()
            .unwrap()
            .rule()
            .unwrap()
            .default_retention()
            .unwrap();
        assert_eq!(rule.mode().unwrap().as_str(), "GOVERNANCE");
        assert_eq!(rule.days(), Some(2));
    }
    let keys = |region: &'static str, bucket: &'static str| {
        let sb = &sb;
        async move {
            let s3 = sb.s3(region).await;
            let mut k: Vec<String> = s3
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .unwrap()
                .contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                // What a point is made of (pins/ and locks/ are the primary store's own state).
                .filter(|k| k.contains("/objects/") || k.contains("/points/"))
                .collect();
            k.sort();
            k
        }
    };
    let primary = keys("us-west-2", "bk-g-points").await;
    assert_eq!(primary, keys("eu-west-1", "bk-g-copy").await);
    assert!(primary.iter().any(|k| k.contains("/points/")));

    // A stored blob cannot be destroyed while locked.
    let s3 = sb.s3("us-west-2").await;
    let blob = primary.iter().find(|k| k.contains("/objects/")).unwrap();
    let head = s3
        .head_object()
        .bucket("bk-g-points")
        .key(blob)
        .send()
        .await
        .unwrap();
    let err = s3
        .delete_object()
        .bucket("bk-g-points")
        .key(blob)
        .version_id(head.version_id().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_service_error()
            .and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(e)),
        Some("AccessDenied")
    );

    // A policy asking for a weaker lock is refused before any write.
    std::fs::write(
        &policy,
        std::fs::read_to_string(&policy)
            .unwrap()
            .replace("days = 2", "days = 1"),
    )
    .unwrap();
    let out = sb.run(&["--policy", p, "backup"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("never weakens a lock"),
        "{}",
        text(&out)
    );
    assert_eq!(keys("us-west-2", "bk-g-points").await, primary);

    // So is a lock on a bucket that exists without one.
    let p2 = sb.policy_with(
        "bk-g2",
        &recipient,
        "[backup.object_lock]\nmode = \"compliance\"\ndays = 1\n",
    );
    sb.s3("us-west-2")
        .await
        .create_bucket()
        .bucket("bk-g2-points")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint("us-west-2".into())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let out = sb.run(&["--policy", p2.to_str().unwrap(), "backup"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without Object Lock"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_code_package_that_does_not_match_its_code_sha256_fails_the_point() {
    let s = Setup::new("bk-h").await;
    // Tamper with the stored package behind Lambda's back.
    let lambda = s.sb.lambda("us-east-1").await;
    let conf = lambda
        .get_function_configuration()
        .function_name("bk-h-fn")
        .qualifier("live")
        .send()
        .await
        .unwrap();
    let hex = drd::workload::package::hex_of_code_sha256(conf.code_sha256().unwrap()).unwrap();
    let s3 = s.sb.s3("us-east-1").await;
    s3.put_object()
        .bucket("bk-h-artifacts-us-east-1")
        .key(drd::workload::package::object_key(&hex))
        .body(b"not the package".to_vec().into())
        .send()
        .await
        .unwrap();
    let out = s.drd(&["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not to its CodeSha256"),
        "{}",
        text(&out)
    );
    assert!(
        !s.objects().await.iter().any(|k| k.contains("/points/")),
        "no point was written"
    );
    let out = s.drd(&["points", "list", "--output", "json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_recipients_round_trip_with_the_age_cli_and_verify() {
    let sb = Sandbox::start();
    let key = sb.dir.path().join("id_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-C", "recovery@drd", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (apt install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recipient = std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    let policy = sb.policy_with("bk-s", &recipient, "");
    sb.allow_key(KEY);
    let p = policy.to_str().unwrap();
    let out = sb.run(
        &[
            "--policy",
            p,
            "deploy",
            "--bootstrap",
            bootstrap().to_str().unwrap(),
        ],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = sb.run(&["--policy", p, "backup", "--output", "json"], "");
    assert!(out.status.success(), "{}", text(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let s3 = sb.s3("us-west-2").await;
    let m = s3
        .get_object()
        .bucket("bk-s-points")
        .key(format!("bk-s/points/{id}.json"))
        .send()
        .await
        .unwrap();
    let m: Value = serde_json::from_slice(&m.body.collect().await.unwrap().into_bytes()).unwrap();
    let v = &m["secrets"][0]["versions"][0];
    let hex = v["blob"]["sha256"].as_str().unwrap();
    let cipher = s3
        .get_object()
        .bucket("bk-s-points")
        .key(format!("bk-s/objects/sha256/{}/{hex}", &hex[..2]))
        .send()
        .await
        .unwrap();
    let cipher = cipher.body.collect().await.unwrap().into_bytes().to_vec();
    let plain = age_decrypt(&key, &cipher, sb.dir.path());
    assert_eq!(
        String::from_utf8(plain).unwrap(),
        json!({"OPENAI_API_KEY": KEY}).to_string()
    );

    let out = sb.run(
        &[
            "--policy",
            p,
            "verify",
            "--output",
            "json",
            "--identity",
            key.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()[0]["secrets_decrypted"],
        1
    );
}

/// Recipient rotation: the policy names a new age recipient; the next point is encrypted to it
/// (the unchanged secrets re-encrypted, not reused); the older point keeps its recipient and
/// still verifies with the old identity; each identity is told which point it cannot open.
#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_change_keeps_old_points_openable_by_their_own_identity() {
    let s = Setup::new("bk-rr").await;
    let old_id = s.backup()["id"].as_str().unwrap().to_string();
    let ndir = s.sb.dir.path().join("new-key");
    std::fs::create_dir_all(&ndir).unwrap();
    let (new_identity, new_recipient) = age_keygen(&ndir);
    let text_policy = std::fs::read_to_string(&s.policy).unwrap();
    std::fs::write(&s.policy, text_policy.replace(&s.recipient, &new_recipient)).unwrap();
    let r = s.backup();
    let new_id = r["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert!(
        r["new_blobs"].as_u64().unwrap() >= 3,
        "secrets re-encrypted: {r}"
    );

    let show = |id: &str| text(&s.drd(&["points", "show", id]));
    assert!(
        show(&old_id).contains(&format!("recipient  {}", s.recipient)),
        "{}",
        show(&old_id)
    );
    assert!(
        show(&new_id).contains(&format!("recipient  {new_recipient}")),
        "{}",
        show(&new_id)
    );
    assert!(!show(&new_id).contains(&s.recipient));

    let verify = |identity: &std::path::Path, all_ok: bool| {
        let out = s.drd(&[
            "verify",
            "--all",
            "--identity",
            identity.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert_eq!(out.status.success(), all_ok, "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let by_id = |id: &str| {
            v.as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .unwrap()
                .clone()
        };
        (by_id(&old_id), by_id(&new_id), text(&out))
    };
    // The new identity opens the new point, and is told it cannot open the old one (sound, made
    // for the old recipients).
    let (old, new, out) = verify(&new_identity, true);
    assert_eq!(
        (old["ok"].clone(), old["opens"].clone()),
        (json!(true), json!(false)),
        "{out}"
    );
    assert_eq!(old["recipients"], json!([s.recipient]));
    assert_eq!(new["opens"], true, "{out}");
    assert_eq!(new["recipients"], json!([new_recipient]));
    assert!(
        out.contains(&format!(
            "cannot open (encrypted to other recipients): {old_id}"
        )),
        "{out}"
    );
    // The old identity still opens the old point; the new point, made for the policy's current
    // recipients, it cannot: that is a failure (a stale daemon identity must not pass).
    let (old, new, out) = verify(&s.identity, false);
    assert_eq!(
        (old["ok"].clone(), old["opens"].clone()),
        (json!(true), json!(true)),
        "{out}"
    );
    assert!(old["secrets_decrypted"].as_u64().unwrap() >= 3, "{old}");
    assert_eq!(
        (new["ok"].clone(), new["opens"].clone()),
        (json!(false), json!(false)),
        "{out}"
    );
    assert!(
        out.contains("current recipients") && out.contains(&new_id),
        "{out}"
    );
    let out = s.drd(&[
        "verify",
        "--point",
        &old_id,
        "--identity",
        s.identity.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // In text, the point the new key cannot open says who it is for.
    let out = s.drd(&[
        "verify",
        "--point",
        &old_id,
        "--identity",
        new_identity.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an identity that opens nothing checked: {}",
        text(&out)
    );
    assert!(text(&out).contains(&s.recipient), "{}", text(&out));
}
