//! Least privilege, enforced: the lab with IAM on (`sandbox up --iam`, moto evaluating every
//! request's policies) runs deploy, backup, verify, rollback, rotate and restore end to end, each
//! as a user holding only what `drd iam policy --command C --lab` generates; removing one action
//! moto checks makes the command fail naming it; and a store in a second account, written
//! through an assumed role, that the workload's credentials cannot delete or overwrite.
//! (What moto does not check, and so what these tests cannot show: docs/emulator-gaps.md.)

use drd_e2e::{age_keygen, bootstrap, text, variant, Sandbox};
use serde_json::Value;
use std::process::Output;

const KEY: &str = "sk-e2e-least-0123456789";
const KEY2: &str = "sk-e2e-least-rotated-987654";
const ACCOUNT: &str = "123456789012";
const STORE_ACCOUNT: &str = "111111111111";

struct Lab {
    sb: Sandbox,
    policy: String,
    name: String,
}

impl Lab {
    fn start(name: &str, extra: &str) -> (Self, String) {
        let sb = Sandbox::start_iam();
        sb.allow_key(KEY);
        let keys = sb.dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (identity, recipient) = age_keygen(&keys);
        let policy = sb
            .policy_with(name, &recipient, extra)
            .to_str()
            .unwrap()
            .to_string();
        let lab = Self {
            sb,
            policy,
            name: name.to_string(),
        };
        (lab, identity.to_str().unwrap().to_string())
    }

    /// `drd iam policy WHAT --lab --account ACCOUNT` for this lab's policy.
    fn generated(&self, what: &[&str]) -> Value {
        let mut a = vec!["--policy", self.policy.as_str(), "iam", "policy"];
        a.extend_from_slice(what);
        a.extend_from_slice(&["--lab", "--account", ACCOUNT]);
        let out = self.sb.run(&a, "");
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A principal holding exactly `doc`: a user (`account`) or a role (its ARN).
    fn principal(&self, kind: &str, name: &str, doc: &Value, extra: &[&str]) -> String {
        let f = self.sb.dir.path().join(format!("{kind}-{name}.json"));
        std::fs::write(&f, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        let mut a = vec![
            "sandbox",
            "iam",
            kind,
            name,
            "--policy-file",
            f.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        let out = self.sb.run(&a, "");
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A user holding exactly `doc`; its key as environment.
    fn user(&self, name: &str, doc: &Value) -> Vec<(&'static str, String)> {
        let k: Value = serde_json::from_str(&self.principal("user", name, doc, &[])).unwrap();
        vec![
            (
                "AWS_ACCESS_KEY_ID",
                k["AccessKeyId"].as_str().unwrap().to_string(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                k["SecretAccessKey"].as_str().unwrap().to_string(),
            ),
        ]
    }

    /// `drd --policy P ARGS` as `user`.
    fn drd_as(&self, user: &[(&'static str, String)], args: &[&str], stdin: &str) -> Output {
        let mut a = vec!["--policy", self.policy.as_str()];
        a.extend_from_slice(args);
        let env: Vec<(&str, &str)> = user.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sb.run_env(&a, stdin, &env)
    }

    /// `drd ARGS` as a fresh user holding only what `drd iam policy --command COMMAND`
    /// generates; asserts success.
    fn least(&self, command: &str, args: &[&str], stdin: &str) -> Output {
        let doc = self.generated(&["--command", command]);
        let user = self.user(&command.replace(' ', "-"), &doc);
        let out = self.drd_as(&user, args, stdin);
        assert!(
            out.status.success(),
            "`drd {}` as a user holding only its generated policy:\n{}\npolicy: {doc:#}",
            args.join(" "),
            text(&out)
        );
        out
    }
}

// One story: each procedure in turn, each as its own least-privilege user.
#[tokio::test(flavor = "multi_thread")]
async fn every_procedure_runs_with_only_its_generated_permissions() {
    let (lab, identity) = Lab::start("lp-a", "");
    // IAM is on: the emulator's default key is refused, and a user without a policy is denied.
    let out = lab.sb.run_env(
        &["--policy", &lab.policy, "backup"],
        "",
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("InvalidAccessKeyId") || text(&out).contains("InvalidClientTokenId"),
        "{}",
        text(&out)
    );

    let boot = bootstrap().display().to_string();
    lab.least("deploy", &["deploy", "--bootstrap", &boot], KEY);
    let v2 = variant(&lab.sb, "v2").display().to_string();
    lab.least("deploy", &["deploy", "--bootstrap", &v2], KEY);
    lab.least("backup", &["backup"], "");
    let out = lab.least("verify", &["verify", "--identity", &identity], "");
    assert!(text(&out).contains("ok"), "{}", text(&out));
    let out = lab.least(
        "rollback",
        &["rollback", "--to", "1", "--output", "json"],
        "",
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "succeeded", "{r:#}");
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some("2"), Some("1")),
        "{r:#}"
    );
    lab.sb.allow_key(KEY2);
    lab.least("rotate", &["rotate", "openai-api-key"], KEY2);
    lab.least("backup", &["backup"], "");
    let out = lab.sb.run(&["sandbox", "fail-region", "us-east-1"], "");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.least(
        "restore",
        &[
            "restore",
            "--region",
            "us-west-2",
            "--identity",
            &identity,
            "--output",
            "json",
        ],
        "",
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["run"]["outcome"], "succeeded", "{r:#}");
    // What the restore made is the workload, serving with the rotated key.
    let url = r["function_url"]
        .as_str()
        .or(r["run"]["steps"].as_array().and_then(|s| {
            s.iter()
                .find_map(|st| st["outputs"]["function_url"].as_str())
        }))
        .unwrap_or_else(|| panic!("the restored Function URL: {r:#}"))
        .to_string();
    let (status, body) = lab
        .sb
        .call_signed(
            &url,
            &serde_json::json!({"transcript": "Speaker 0: hello\nSpeaker 1: hi"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let _ = &lab.name;
}

/// Take one action out of a command's generated policy: the command fails, and its error names
/// the action. Every action moto checks that a steady-state `backup` and `verify` use, one at a
/// time (docs/emulator-gaps.md#iam lists what moto does not check).
#[tokio::test(flavor = "multi_thread")]
async fn removing_any_checked_action_fails_the_command_naming_it() {
    let (lab, identity) = Lab::start("lp-b", "");
    lab.sb.deploy(&lab.policy, KEY);
    // A first point: the runs below are steady-state backups (unchanged secrets are not read
    // again), so the reference is one too.
    lab.least("backup", &["backup"], "");
    let mut tried = 0;
    for (command, args) in [
        ("backup", vec!["backup"]),
        ("verify", vec!["verify", "--identity", identity.as_str()]),
    ] {
        tried += each_action_is_needed(&lab, command, &args);
    }
    eprintln!("{tried} one-action-removed runs, each refused naming its action");
    assert!(tried >= 8, "{tried}");
}

/// The actions a reference run of `command` uses that moto authorizes, each removed in turn;
/// how many.
fn each_action_is_needed(lab: &Lab, command: &str, args: &[&str]) -> usize {
    let full = lab.generated(&["--command", command]);
    // What the command calls, recorded by drd itself.
    let record = lab.sb.dir.path().join(format!("calls-{command}.tsv"));
    let user = lab.user(&format!("{command}-full"), &full);
    let mut env: Vec<(&str, &str)> = user.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("DRD_IAM_RECORD", record.to_str().unwrap()));
    let mut a = vec!["--policy", lab.policy.as_str()];
    a.extend_from_slice(args);
    let out = lab.sb.run_env(&a, "", &env);
    assert!(out.status.success(), "{}", text(&out));
    let calls = std::fs::read_to_string(&record).unwrap();
    // Calls moto does not authorize: Invoke is served by the lab's function host, and moto
    // 5.2.1 serves ListObjectsV2 without an IAM check. An action only those need cannot be shown
    // missing here.
    let unchecked = ["lambda:Invoke", "s3:ListObjectsV2"];
    let mut used: Vec<String> = calls
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (!unchecked.contains(f.get(2).unwrap_or(&"")))
                .then(|| f.get(1).map(|s| s.to_string()))?
        })
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() >= 2, "{command}: {used:?}");
    for action in &used {
        let mut doc = full.clone();
        let names = drd::iam::render::emulator_names(action);
        for st in doc["Statement"].as_array_mut().unwrap() {
            let acts: Vec<Value> = st["Action"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| names.iter().all(|n| a.as_str() != Some(n.as_str())))
                .cloned()
                .collect();
            st["Action"] = Value::from(acts);
        }
        doc["Statement"]
            .as_array_mut()
            .unwrap()
            .retain(|st| !st["Action"].as_array().unwrap().is_empty());
        let user = lab.user(&format!("{command}-no-{}", action.replace(':', "-")), &doc);
        let out = lab.drd_as(&user, args, "");
        let calls_of: Vec<&str> = calls
            .lines()
            .filter(|l| l.contains(action.as_str()))
            .collect();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{command} without {action} must fail: {}\ncalls: {calls_of:?}",
            text(&out)
        );
        assert!(
            text(&out).contains(action.as_str()) && text(&out).contains("AccessDenied"),
            "{command} without {action}: the error must name it:\n{}",
            text(&out)
        );
    }
    used.len()
}

/// The store in its own account: drd writes points through `backup.role_arn`; the workload's
/// credentials (and the writer role itself) cannot delete or overwrite a point; prune works only
/// as `backup.prune_role_arn`.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_in_another_account_survives_the_workloads_credentials() {
    let writer = format!("arn:aws:iam::{STORE_ACCOUNT}:role/drd-store-writer");
    let pruner = format!("arn:aws:iam::{STORE_ACCOUNT}:role/drd-store-prune");
    let extra = format!(
        "role_arn = \"{writer}\"\nprune_role_arn = \"{pruner}\"\n\n[retention]\nkeep_last = 1\n"
    );
    let (lab, identity) = Lab::start("lp-c", &extra);
    // The store account's roles, from the generated policies.
    let store_admin = lab.sb.var("DRD_SANDBOX_STORE_ADMIN");
    for (role, what) in [("drd-store-writer", "writer"), ("drd-store-prune", "prune")] {
        let doc = lab.generated(&["--store-role", what]);
        let arn = lab.principal("role", role, &doc, &[]);
        assert_eq!(arn, format!("arn:aws:iam::{STORE_ACCOUNT}:role/{role}"));
    }
    lab.sb.deploy(&lab.policy, KEY);
    // Without sts:AssumeRole the caller reaches nothing in the store, and is told why.
    let mut doc = lab.generated(&["--command", "backup"]);
    doc["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|st| st["Sid"] != "StoreRoles");
    let user = lab.user("backup-no-assume", &doc);
    let out = lab.drd_as(&user, &["backup"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("AssumeRoleFailed") && text(&out).contains("backup.role_arn"),
        "{}",
        text(&out)
    );
    lab.least("backup", &["backup"], "");
    lab.least("verify", &["verify", "--identity", &identity], "");

    // The store's keys, listed as the store account's own administrator: the bucket is there.
    let (ak, sk) = store_admin.split_once(':').unwrap();
    let store = store_s3(&lab.sb, ak, sk).await;
    let bucket = format!("{}-points", lab.name);
    let keys = list(&store, &bucket).await;
    let manifest = keys
        .iter()
        .find(|k| k.contains("/points/"))
        .unwrap_or_else(|| panic!("a point in the store: {keys:?}"))
        .clone();
    let blob = keys
        .iter()
        .find(|k| k.contains("/objects/"))
        .unwrap()
        .clone();

    // The workload account's administrator (whoever can break the workload) can neither delete
    // nor overwrite a point or a blob in the store's account.
    let workload = lab.sb.s3("us-west-2").await;
    for key in [&manifest, &blob] {
        let e = workload
            .delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect_err("the workload's credentials deleted a point");
        assert!(format!("{e:?}").contains("AccessDenied"), "{e:?}");
        let e = workload
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(b"overwritten".to_vec().into())
            .send()
            .await
            .expect_err("the workload's credentials overwrote a point");
        assert!(format!("{e:?}").contains("AccessDenied"), "{e:?}");
    }
    assert_eq!(
        list(&store, &bucket).await,
        keys,
        "nothing changed in the store"
    );

    // A second point, so that keep_last = 1 expires the first.
    lab.sb.deploy(&lab.policy, KEY);
    let v2 = variant(&lab.sb, "v2").display().to_string();
    let out = lab.sb.run(
        &["--policy", &lab.policy, "deploy", "--bootstrap", &v2],
        KEY,
    );
    assert!(out.status.success(), "{}", text(&out));
    lab.least("backup", &["backup"], "");
    let points = |keys: &[String]| keys.iter().filter(|k| k.contains("/points/")).count();
    let before = list(&store, &bucket).await;
    assert_eq!(points(&before), 2, "{before:?}");

    // Prune acting as the writer role (a policy that names it as the prune role): the store
    // refuses the delete, the error names the action, and every point is still there.
    let as_writer = lab.sb.dir.path().join("lp-c-writer.toml");
    let text_policy = std::fs::read_to_string(&lab.policy).unwrap();
    std::fs::write(
        &as_writer,
        text_policy.replace(
            &format!("prune_role_arn = \"{pruner}\""),
            &format!("prune_role_arn = \"{writer}\""),
        ),
    )
    .unwrap();
    let out = lab
        .sb
        .run(&["--policy", as_writer.to_str().unwrap(), "prune"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("AccessDenied") && text(&out).contains("s3:DeleteObject"),
        "{}",
        text(&out)
    );
    assert_eq!(points(&list(&store, &bucket).await), 2);

    // As the prune role: the expired point goes, the newest stays and still verifies.
    lab.least("prune", &["prune"], "");
    let after = list(&store, &bucket).await;
    assert_eq!(points(&after), 1, "{after:?}");
    lab.least("verify", &["verify", "--identity", &identity], "");
}

async fn store_s3(sb: &Sandbox, ak: &str, sk: &str) -> aws_sdk_s3::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-west-2"))
        .endpoint_url(sb.var("AWS_ENDPOINT_URL"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ak, sk, None, None, "t",
        ))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    )
}

async fn list(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}
