//! Procedure 3 end to end: `drd rotate` against the sandbox's chat-completions stub (which knows
//! which keys are valid) and a local GitHub secrets API stub that really opens the sealed box.
//! End states are checked with second clients.

use drd::lambda::probe::T2_TRANSCRIPT;
use drd_e2e::{bootstrap, text, Sandbox};
use drd_sandbox::github::GitHubStub;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;

const KEY1: &str = "sk-rotation-first-000000000001";
const GH_TOKEN: &str = "ghp_e2eTokenForTheStub0000000001";
const REPO: &str = "acme/speaker-role-classifier";

struct World {
    sb: Sandbox,
    gh: GitHubStub,
    policy: String,
    name: String,
    url: String,
}

async fn world(name: &str) -> World {
    let sb = Sandbox::start();
    let gh = GitHubStub::start(REPO, GH_TOKEN).await;
    sb.allow_key(KEY1);
    let extra = format!(
        r#"
[github]
api_url = "{}"
repository = "{REPO}"

[github.secrets]
"openai-api-key" = "OPENAI_API_KEY"
"#,
        gh.url
    );
    let policy = sb
        .policy_with(
            name,
            "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k",
            &extra,
        )
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
        KEY1,
    );
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = r["function_url"].as_str().unwrap().to_string();
    // The CI token lives in Secrets Manager, as in the seed's security layer.
    sb.secrets("us-east-1")
        .await
        .create_secret()
        .name("github-token")
        .secret_string(GH_TOKEN)
        .send()
        .await
        .unwrap();
    World {
        sb,
        gh,
        policy,
        name: name.to_string(),
        url,
    }
}

impl World {
    fn rotate(&self, stdin: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut a = vec!["--policy", self.policy.as_str(), "rotate", "openai-api-key"];
        a.extend_from_slice(extra);
        self.sb.run_env(&a, stdin, env)
    }

    async fn current_key(&self) -> String {
        let v = self
            .sb
            .secrets("us-east-1")
            .await
            .get_secret_value()
            .secret_id("openai-api-key")
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap();
        let j: Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
        j["OPENAI_API_KEY"].as_str().unwrap().to_string()
    }

    /// version id -> stages
    async fn stages(&self) -> Vec<(String, Vec<String>)> {
        let out = self
            .sb
            .secrets("us-east-1")
            .await
            .list_secret_version_ids()
            .secret_id("openai-api-key")
            .send()
            .await
            .unwrap();
        out.versions()
            .iter()
            .map(|v| {
                (
                    v.version_id().unwrap().to_string(),
                    v.version_stages().to_vec(),
                )
            })
            .collect()
    }

    async fn t2(&self) -> (u16, Value) {
        self.sb
            .call_signed(&self.url, &json!({"transcript": T2_TRANSCRIPT}))
            .await
    }

    async fn live(&self) -> String {
        self.sb
            .lambda("us-east-1")
            .await
            .get_alias()
            .function_name(format!("{}-fn", self.name))
            .name("live")
            .send()
            .await
            .unwrap()
            .function_version()
            .unwrap()
            .to_string()
    }

    async fn latest_env_marked(&self) -> bool {
        let c = self
            .sb
            .lambda("us-east-1")
            .await
            .get_function_configuration()
            .function_name(format!("{}-fn", self.name))
            .send()
            .await
            .unwrap();
        c.environment()
            .and_then(|e| e.variables())
            .is_some_and(|v| v.contains_key("OPENAI_SECRET_STAGE"))
    }

    /// Every key of the store bucket.
    async fn store_keys(&self) -> Vec<String> {
        let s3 = self.sb.s3("us-west-2").await;
        let mut keys = vec![];
        let mut pages = s3
            .list_objects_v2()
            .bucket(format!("{}-points", self.name))
            .into_paginator()
            .send();
        while let Some(p) = pages.next().await {
            keys.extend(
                p.unwrap()
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys
    }

    /// Every object of the store bucket with its body.
    async fn store_objects(&self) -> Vec<(String, Vec<u8>)> {
        let s3 = self.sb.s3("us-west-2").await;
        let bucket = format!("{}-points", self.name);
        let list = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
        let mut out = vec![];
        for o in list.contents() {
            let k = o.key().unwrap().to_string();
            let b = s3
                .get_object()
                .bucket(&bucket)
                .key(&k)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
                .to_vec();
            out.push((k, b));
        }
        out
    }
}

fn is_relabelled(b: &Value) -> bool {
    b["transcript"]
        .as_str()
        .is_some_and(|t| !t.contains("Speaker 0") && t.contains("Agent"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_heals_a_revoked_key_and_a_bad_key_changes_nothing() {
    let w = world("rot-a").await;
    let (s, b) = w.t2().await;
    assert_eq!(s, 200, "{b}");
    assert!(is_relabelled(&b), "{b}");

    // The compromise: the provider revokes the key; deep probes fail.
    w.sb.revoke_key(KEY1);
    let (s, _) = w.t2().await;
    assert_ne!(s, 200);
    let live_before = w.live().await;
    let stages_before = w.stages().await;

    // A new key the provider does not know: stops before promotion, everything as it was.
    let bad = "sk-rotation-not-issued-0000000";
    let out = w.rotate(bad, &["--output", "json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "compensated", "{r}");
    assert!(
        r["revoke"].is_null(),
        "nothing to revoke after a failed rotation: {r}"
    );
    assert_eq!(w.current_key().await, KEY1);
    assert_eq!(w.live().await, live_before);
    assert!(!w.latest_env_marked().await);
    let stages_after = w.stages().await;
    assert!(
        stages_after
            .iter()
            .all(|(_, s)| !s.iter().any(|x| x == "AWSPENDING")),
        "{stages_after:?}"
    );
    let current = |v: &[(String, Vec<String>)]| {
        v.iter()
            .find(|(_, s)| s.iter().any(|x| x == "AWSCURRENT"))
            .map(|(id, _)| id.clone())
    };
    assert_eq!(current(&stages_after), current(&stages_before));
    assert!(w.gh.secret("OPENAI_API_KEY").is_none());
    assert!(!text(&out).contains(bad));

    // The real new key: T2 heals, AWSCURRENT holds it, GitHub has it, a point backs it up.
    let key2 = "sk-rotation-second-00000000002";
    w.sb.allow_key(key2);
    let out = w.rotate(key2, &["--output", "json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "succeeded", "{r}");
    assert_eq!(w.current_key().await, key2);
    let new_version = r["new_version"].as_str().unwrap().to_string();
    let old_version = r["old_version"].as_str().unwrap().to_string();
    // What is left to the operator: revoking the old key at the provider.
    assert_eq!(
        r["revoke"].as_str().unwrap(),
        format!("revoke the old key at the provider (the value of openai-api-key version {old_version}), then check with drd status --deep")
    );
    let st = w.stages().await;
    assert!(st
        .iter()
        .any(|(id, s)| id == &new_version && s.iter().any(|x| x == "AWSCURRENT")));
    assert!(st
        .iter()
        .any(|(id, s)| id == &old_version && s.iter().any(|x| x == "AWSPREVIOUS")));
    let (s, b) = w.t2().await;
    assert_eq!(s, 200, "{b}");
    assert!(is_relabelled(&b), "{b}");
    assert_eq!(w.live().await, live_before, "live never moved");
    assert!(!w.latest_env_marked().await);
    assert_eq!(w.gh.secret("OPENAI_API_KEY").as_deref(), Some(key2));

    // The recovery point names the new version.
    let point = r["point"].as_str().unwrap();
    let objects = w.store_objects().await;
    let manifest = objects
        .iter()
        .find(|(k, _)| k.ends_with(&format!("points/{point}.json")))
        .expect("the point's manifest");
    let m: Value = serde_json::from_slice(&manifest.1).unwrap();
    let versions: Vec<&str> = m["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "openai-api-key")
        .flat_map(|s| s["versions"].as_array().unwrap())
        .map(|v| v["version_id"].as_str().unwrap())
        .collect();
    assert!(versions.contains(&new_version.as_str()), "{versions:?}");

    // No key in any output, journal (store or local) or stored object, except age files.
    let out_text = text(&out);
    let mut text_out = String::from_utf8_lossy(&out.stdout).to_string();
    text_out.push_str(&out_text);
    let human = w.rotate("", &["--resume", r["run"]["run"].as_str().unwrap()], &[]);
    text_out.push_str(&text(&human));
    for key in [KEY1, key2, bad, GH_TOKEN] {
        assert!(!text_out.contains(key), "a key leaked into the output");
        for (k, body) in &objects {
            assert!(
                !String::from_utf8_lossy(body).contains(key),
                "a key leaked into {k}"
            );
        }
        for f in std::fs::read_dir(w.sb.dir.path().join("state/journal")).unwrap() {
            let body = std::fs::read_to_string(f.unwrap().path()).unwrap();
            assert!(!body.contains(key), "a key leaked into the local journal");
        }
    }
    let human = w.rotate(key2, &[], &[]);
    // Rotating to the value already current is refused before any write.
    assert_eq!(human.status.code(), Some(1), "{}", text(&human));
    assert!(
        text(&human).contains("equals its current value"),
        "{}",
        text(&human)
    );

    // --generate: refused for a provider-issued secret before anything is read or written ...
    let out = w.rotate("", &["--generate"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("issued by a provider"),
        "{}",
        text(&out)
    );
    // ... and for a secret the policy lets drd generate, a fresh random value goes through the
    // same runbook (nothing in the function reads it, so there is no candidate to prove).
    let sm = w.sb.secrets("us-east-1").await;
    sm.create_secret()
        .name("session-signing-key")
        .secret_string("initial-signing-key")
        .send()
        .await
        .unwrap();
    let p2 = w.sb.policy_with(
        &w.name,
        "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k",
        "\n[secrets]\nothers = [\"session-signing-key\"]\ngenerated = [\"session-signing-key\"]\n",
    );
    let out = w.sb.run(
        &[
            "--policy",
            p2.to_str().unwrap(),
            "rotate",
            "session-signing-key",
            "--generate",
            "--output",
            "json",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let v = sm
        .get_secret_value()
        .secret_id("session-signing-key")
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    let generated = v.secret_string().unwrap().to_string();
    assert_ne!(generated, "initial-signing-key");
    assert_eq!(generated.len(), 43, "32 bytes, base64url");
    assert!(!text(&out).contains(&generated));
}

/// SIGKILL after each step of secret-rotation (before and after its journal entry), then
/// `--resume` with the value piped again: the same end state as an uninterrupted rotation.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_killed_after_any_step_resumes_to_the_same_end_state() {
    drd_e2e::require_failpoints();
    let w = world("rot-crash").await;
    let steps = [
        "observe", "stage", "prove", "promote", "probe", "github", "backup",
    ];
    let mut i = 0;
    for step in steps {
        for when in ["after-action", "after-journal"] {
            i += 1;
            let key = format!("sk-rotation-crash-{i:012}");
            w.sb.allow_key(&key);
            let fp = format!("{step}:{when}");
            let out = w.rotate(&key, &[], &[("DRD_FAILPOINT", &fp)]);
            assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text(&out));
            let runs = w.store_keys().await;
            let mut ids: Vec<String> = runs
                .iter()
                .filter_map(|k| {
                    let mut p = k.split('/');
                    (p.nth(1) == Some("journal")).then(|| p.next().unwrap().to_string())
                })
                .collect();
            ids.sort();
            let run = ids.last().unwrap().clone();
            let out = w.rotate(&key, &["--resume", &run, "--output", "json"], &[]);
            assert!(out.status.success(), "{fp}: {}", text(&out));
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(r["run"]["outcome"], "succeeded", "{fp}: {r}");
            assert_eq!(w.current_key().await, key, "{fp}");
            assert!(!w.latest_env_marked().await, "{fp}");
            let (s, b) = w.t2().await;
            assert_eq!(s, 200, "{fp}: {b}");
            assert_eq!(w.gh.secret("OPENAI_API_KEY").as_deref(), Some(key.as_str()));
            let st = w.stages().await;
            assert!(
                st.iter().all(|(_, s)| !s.iter().any(|x| x == "AWSPENDING")),
                "{fp}: {st:?}"
            );
            let keys: Vec<String> = w
                .store_keys()
                .await
                .into_iter()
                .filter(|k| k.contains(&run))
                .collect();
            let count = |ev: &str, s: &str| {
                keys.iter()
                    .filter(|k| k.ends_with(&format!("-{ev}-{s}.json")))
                    .count()
            };
            for s in steps {
                assert_eq!(count("succeeded", s), 1, "{fp} {s}: {keys:?}");
            }
            let expected = if when == "after-journal" { 1 } else { 2 };
            assert_eq!(count("started", step), expected, "{fp}: {keys:?}");
        }
    }
}
