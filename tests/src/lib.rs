//! End-to-end test harness: each test starts its own sandbox (moto server + function host + LLM
//! stub) on free loopback ports with `drd sandbox up`, drives the real `drd` binary, and checks
//! the end state with second clients built here from the AWS SDK, never through drd's own code.
//! The GitHub REST stub some tests start lives in the lab crate (`drd_sandbox::github`).

pub mod browser;
pub mod daemon;
pub mod schema;

use std::path::{Path, PathBuf};
use std::process::Output;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `drd` binary of this build (scripts/test builds it before the tests).
pub fn drd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    // target/debug/deps/<test> -> target/debug/drd
    let p = exe.parent().unwrap().parent().unwrap().join("drd");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, as scripts/test does)",
        p.display()
    );
    p
}

/// Crash tests set `DRD_FAILPOINT`, which only a drd built with the `failpoints` feature obeys
/// (scripts/test builds it so); fail with the way out instead of a confusing signal assertion.
pub fn require_failpoints() {
    let out = std::process::Command::new(drd_bin())
        .arg("--version")
        .output()
        .expect("run drd --version");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(failpoints)"),
        "{} was built without the `failpoints` feature: run ./scripts/test, or build with \
         `cargo build --workspace --bins --features drd/failpoints`",
        drd_bin().display()
    );
}

/// The static classifier binary (scripts/test sets DRD_TEST_BOOTSTRAP).
pub fn bootstrap() -> PathBuf {
    let p = std::env::var_os("DRD_TEST_BOOTSTRAP")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/x86_64-unknown-linux-musl/release/classifier"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-function (scripts/test does)",
        p.display()
    );
    p
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Sandbox {
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// A sandbox whose moto authorizes every request with IAM (`sandbox up --iam`); its
    /// environment holds the workload account's administrator.
    pub fn start_iam() -> Self {
        Self::start_with(&["--iam"], &[])
    }

    /// A sandbox started with extra `sandbox up` arguments and environment (the lab process
    /// inherits it, e.g. `DRD_SANDBOX_CI_BOOTSTRAP` for its pipeline executor).
    pub fn start_with(args: &[&str], env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(drd_bin())
            .args(["sandbox", "up", "--output", "json", "--dir"])
            .arg(dir.path().join("sandbox"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("run drd sandbox up");
        assert!(
            out.status.success(),
            "drd sandbox up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("sandbox env is JSON");
        let env = env
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
            .collect();
        Self { dir, env }
    }

    /// A sandbox whose lab runs the workload's CI: the lab repository seeded from classifier/,
    /// builds given the prebuilt function, and the CodeBuild cargo cache shared across
    /// sandboxes (`DRD_SANDBOX_CI_CACHE`, default target/lab-ci-cache).
    pub fn start_ci_lab() -> Self {
        let cache = std::env::var("DRD_SANDBOX_CI_CACHE")
            .unwrap_or_else(|_| root().join("target/lab-ci-cache").display().to_string());
        Self::start_with(
            &["--seed-repo", root().join("classifier").to_str().unwrap()],
            &[
                (
                    "DRD_SANDBOX_CI_BOOTSTRAP",
                    bootstrap().display().to_string(),
                ),
                ("DRD_SANDBOX_CI_CACHE", cache),
            ],
        )
    }

    pub fn sandbox_dir(&self) -> PathBuf {
        self.dir.path().join("sandbox")
    }

    pub fn var(&self, k: &str) -> String {
        self.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("sandbox env has no {k}"))
    }

    /// A `drd` command with the sandbox's environment and nothing inherited that could point
    /// it elsewhere.
    pub fn drd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(drd_bin());
        for k in [
            "AWS_PROFILE",
            "DRD_POLICY",
            "DRD_REGION",
            "DRD_OUTPUT",
            "DRD_BOOTSTRAP",
            "DRD_RUNBOOKS",
            "DRD_FAILPOINT",
            "DRD_CI_PROVIDER",
            // A suite run inside a CI job must not look like the workload's CI to drd deploy.
            "GITHUB_ACTIONS",
            "CODEBUILD_BUILD_ID",
        ] {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c.env("DRD_SANDBOX_DIR", self.sandbox_dir());
        // Every drd a test runs refuses an AWS call its command did not declare (drd/src/iam):
        // the whole suite is the drift test of the generated permissions. DRD_IAM_AUDIT=0 (with
        // DRD_IAM_RECORD=FILE) records instead, to list what is missing in one run.
        c.env(
            "DRD_IAM_AUDIT",
            std::env::var("DRD_IAM_AUDIT").unwrap_or_else(|_| "1".into()),
        );
        c.env("DRD_STATE_DIR", self.dir.path().join("state"));
        c
    }

    /// Run drd with `stdin` piped in; returns the output.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        self.run_env(args, stdin, &[])
    }

    /// Like `run`, with extra environment variables.
    pub fn run_env(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        use std::io::Write;
        let mut c = self.drd();
        c.envs(env.iter().copied());
        c.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("spawn drd");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().expect("drd output");
        schema::assert_output(args, env, &out);
        out
    }

    /// Write a policy with fresh resource names into the test's folder.
    pub fn policy(&self, name: &str) -> PathBuf {
        self.policy_with(
            name,
            "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k",
            "",
        )
    }

    /// A policy whose secret backups go to `recipient`, with `extra` TOML appended.
    pub fn policy_with(&self, name: &str, recipient: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"[stack]
name = "{name}"
primary_region = "us-east-1"
template = "{template}"
function_name = "{name}-fn"

[artifacts]
bucket_prefix = "{name}-artifacts"

[backup]
bucket = "{name}-points"
region = "us-west-2"
recipients = ["{recipient}"]
{extra}
"#,
            template = root().join("classifier/stack.yaml").display()
        );
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `drd deploy` of the test's bootstrap with `policy`, the API key on stdin; asserts success.
    pub fn deploy(&self, policy: &str, key: &str) {
        let out = self.run(
            &[
                "--policy",
                policy,
                "deploy",
                "--bootstrap",
                bootstrap().to_str().unwrap(),
            ],
            key,
        );
        assert!(out.status.success(), "deploy: {}", text(&out));
    }

    /// `drd sandbox faults ARGS --output json` (no ARGS: read the plan in force); asserts
    /// success and returns the injector's state.
    pub fn faults(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["sandbox", "faults", "--output", "json"];
        a.extend_from_slice(args);
        let out = self.run(&a, "");
        assert!(out.status.success(), "sandbox faults: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("faults state is JSON")
    }

    /// Revoke a key in the LLM stub (through drd, key on stdin).
    pub fn revoke_key(&self, key: &str) {
        let out = self.run(&["sandbox", "llm", "revoke"], key);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The AWS CLI (from .venv) against the sandbox, in us-east-1 unless `--region` is given;
    /// its JSON output (`Null` when it printed nothing). Panics when it fails.
    pub fn aws_cli(&self, args: &[&str]) -> serde_json::Value {
        let mut c = std::process::Command::new("aws");
        for k in [
            "AWS_PROFILE",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        ] {
            c.env_remove(k);
        }
        let out = c
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .args(args)
            .args(["--output", "json"])
            .output()
            .expect("the AWS CLI (scripts/setup installs it into .venv)");
        assert!(out.status.success(), "aws {args:?}: {}", text(&out));
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out.stdout).expect("aws prints JSON")
    }

    /// A recovery-point store for `stack` in `bucket` (us-west-2), the bucket made if absent.
    pub async fn store(&self, bucket: &str, stack: &str) -> drd::store::Store {
        let s3 = self.s3("us-west-2").await;
        let made = s3
            .create_bucket()
            .bucket(bucket)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = made {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).unwrap_or_default();
            assert!(
                code == "BucketAlreadyOwnedByYou",
                "create bucket {bucket}: {e:?}"
            );
        }
        drd::store::Store::new(s3, bucket, stack)
    }

    /// Allow a key in the LLM stub (through drd, key on stdin).
    pub fn allow_key(&self, key: &str) {
        let out = self.run(&["sandbox", "llm", "allow"], key);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn sdk(&self, region: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(self.var("AWS_ENDPOINT_URL"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "test",
            ))
            .load()
            .await
    }

    pub async fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let c = aws_sdk_s3::config::Builder::from(&self.sdk(region).await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(c)
    }

    pub async fn lambda(&self, region: &str) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&self.sdk(region).await)
    }

    pub async fn cloudformation(&self, region: &str) -> aws_sdk_cloudformation::Client {
        aws_sdk_cloudformation::Client::new(&self.sdk(region).await)
    }

    pub async fn secrets(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk(region).await)
    }

    pub async fn logs(&self, region: &str) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&self.sdk(region).await)
    }

    pub async fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(&self.sdk("us-east-1").await)
    }

    /// Create a public hosted zone `name`; returns its id without the `/hostedzone/` prefix.
    pub async fn hosted_zone(&self, name: &str, caller: &str) -> String {
        self.route53()
            .await
            .create_hosted_zone()
            .name(name)
            .caller_reference(caller)
            .send()
            .await
            .unwrap()
            .hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/")
            .to_string()
    }

    /// Every key under `prefix` in a bucket, read with the second client.
    pub async fn list_keys(&self, region: &str, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = vec![];
        let mut pages = self
            .s3(region)
            .await
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("s3://{bucket}/{prefix}: {e:?}"));
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys
    }

    /// A JSON object from a bucket, read with the second client.
    pub async fn get_json(&self, region: &str, bucket: &str, key: &str) -> serde_json::Value {
        let o = self
            .s3(region)
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("s3://{bucket}/{key}: {e:?}"));
        let b = o.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice(&b).unwrap_or_else(|e| panic!("s3://{bucket}/{key}: {e}"))
    }

    /// POST JSON to a Function URL as an IAM caller would (SigV4-signed with the lab's
    /// credentials, by drd's own prober): what `AWS_IAM` lets through.
    pub async fn call_signed(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        drd::lambda::probe::UrlProber::signing_as(
            Some(self.var("DRD_LAMBDA_DATA_ENDPOINT")),
            &self.var("AWS_ACCESS_KEY_ID"),
            &self.var("AWS_SECRET_ACCESS_KEY"),
        )
        .post(url, body)
        .await
        .expect("the function host answers")
    }

    /// An ISSUED ACM certificate for `name` in `region` (the lab issues a requested one at
    /// once); the front door's custom domain needs one in each region it serves.
    pub fn certificate(&self, region: &str, name: &str) -> String {
        let v = self.aws_cli(&[
            "acm",
            "request-certificate",
            "--region",
            region,
            "--domain-name",
            name,
            "--validation-method",
            "DNS",
        ]);
        v["CertificateArn"]
            .as_str()
            .expect("a certificate ARN")
            .to_string()
    }

    /// The policy's `[front_door]` section for the service name `record`, with a certificate for
    /// it in each region the tests serve from (us-east-1, us-west-2, eu-west-1).
    pub fn front_door(&self, record: &str) -> String {
        let name = record.trim_end_matches('.');
        for region in ["us-east-1", "us-west-2", "eu-west-1"] {
            self.certificate(region, name);
        }
        "\n[front_door]\nkind = \"api-gateway\"\n".into()
    }

    /// The service's DNS records (set identifier, value) named `record`, read with Route 53
    /// (a second client), sorted.
    pub async fn records(&self, zone_id: &str, record: &str) -> Vec<(String, String)> {
        let out = self
            .route53()
            .await
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .send()
            .await
            .unwrap();
        let mut v: Vec<(String, String)> = out
            .resource_record_sets()
            .iter()
            .filter(|s| s.name().trim_end_matches('.') == record.trim_end_matches('.'))
            .map(|s| {
                (
                    s.set_identifier().unwrap_or("").to_string(),
                    s.resource_records()[0].value().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The regional target of the front door's custom domain `domain` in `region`, read with
    /// the AWS CLI (a second client).
    pub fn door_target(&self, region: &str, domain: &str) -> String {
        let v = self.aws_cli(&[
            "apigatewayv2",
            "get-domain-name",
            "--region",
            region,
            "--domain-name",
            domain.trim_end_matches('.'),
        ]);
        v["DomainNameConfigurations"][0]["ApiGatewayDomainName"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_string()
    }

    /// POST JSON to a Function URL or the service's name through the function host, as a plain
    /// HTTP client would (unsigned: an `AWS_IAM` Function URL refuses it with 403).
    pub async fn call_url(&self, url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let host = reqwest::Url::parse(url)
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        let r = reqwest::Client::new()
            .post(format!("{}/", self.var("DRD_LAMBDA_DATA_ENDPOINT")))
            .header("host", host)
            .json(body)
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .expect("function host answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::process::Command::new(drd_bin())
            .args(["sandbox", "down", "--dir"])
            .arg(self.sandbox_dir())
            .output();
    }
}

/// A fresh age identity made by the real `age-keygen`; returns (identity file, recipient).
pub fn age_keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join(format!("identity-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&key);
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (apt install age)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    (
        key,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// stdout and stderr of a run, for assertion messages.
/// The git CLI in `dir`; its trimmed stdout. Panics when it fails.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every process whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A copy of the test function with `tag` appended after its end: same behaviour, another
/// CodeSha256 (a new version to deploy).
pub fn variant(sb: &Sandbox, tag: &str) -> PathBuf {
    let mut b = std::fs::read(bootstrap()).unwrap();
    b.extend_from_slice(format!("\0drd-e2e-variant-{tag}").as_bytes());
    let p = sb.dir.path().join(format!("bootstrap-{tag}"));
    std::fs::write(&p, b).unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&p, perm).unwrap();
    p
}
