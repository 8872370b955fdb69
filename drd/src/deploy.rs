//! `drd deploy`: build and upload the code package, make sure the API-key secret exists, create or
//! update the stack, publish a version, probe it, and only then point `live` at it.
//!
//! Every input is checked before the first write (policy, template, package, secret input), so a
//! bad input leaves nothing half-deployed. Every step reads first and writes only on a
//! difference, so a second deploy of unchanged sources changes nothing and says so.

use crate::aws::{aws_error, error_code, Aws};
use crate::error::{ConfigError, Error, Result};
use crate::lambda::ops::{self, AliasChange};
use crate::lambda::probe::{self, ProbeResult, Tier, UrlProber};
use crate::policy::Policy;
use crate::workload::package::{self, Package};
use crate::workload::template::Template;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Where the value of a missing API-key secret comes from. Never a command-line argument.
pub enum SecretInput {
    Stdin,
    File(PathBuf),
}

pub struct DeployOptions {
    pub region: String,
    /// A prebuilt bootstrap binary; otherwise drd builds the workload with cargo.
    pub bootstrap: Option<PathBuf>,
    /// For tests that deploy deliberately broken packages (a script instead of a binary).
    pub skip_static_check: bool,
    pub secret_input: SecretInput,
    /// Overrides the policy's `workload.llm_base_url` (the sandbox points it at its stub).
    pub llm_base_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub region: String,
    pub stack: String,
    pub stack_action: String,
    pub stack_status: String,
    pub code_bucket: String,
    pub code_key: String,
    pub code_sha256: String,
    pub code_uploaded: bool,
    pub code_bytes: usize,
    pub secret: String,
    pub secret_created: bool,
    pub version: String,
    pub version_published: bool,
    pub alias_from: Option<String>,
    pub alias_changed: bool,
    pub function_url: String,
    /// Created, or switched from a public `NONE` to `AWS_IAM` (its host unchanged).
    pub function_url_created: bool,
    /// The region's front door (with `[front_door]`), as read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_door: Option<crate::frontdoor::Door>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub front_door_changes: Vec<String>,
    pub probes: Vec<ProbeResult>,
    /// Recorded as known-good in the store's `pins/`.
    pub pinned: bool,
    pub pin_written: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_error: Option<String>,
    /// What happened to the policy's DNS record (absent without `[dns]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// The commit recorded for `version` (`--commit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub changed: bool,
    pub duration_ms: u64,
}

/// Read a secret value and check its layout (a bare key or `{"OPENAI_API_KEY": "..."}`).
/// The value is never echoed in an error.
pub fn read_secret_value(input: &SecretInput, secret_name: &str) -> Result<SecretString> {
    use std::io::{IsTerminal, Read};
    let (raw, source) = match input {
        SecretInput::File(p) => (
            std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new(
                    p.display().to_string(),
                    format!("cannot read the secret file: {e}"),
                )
                .field("--secret-file")
                .hint("pass a readable file holding only the key")
            })?,
            p.display().to_string(),
        ),
        SecretInput::Stdin => {
            if std::io::stdin().is_terminal() {
                return Err(ConfigError::new(
                    "<stdin>",
                    format!("the secret {secret_name:?} does not exist yet and no value was given"),
                )
                .hint("pipe the key on stdin (drd deploy < keyfile) or pass --secret-file FILE")
                .into());
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("reading the secret from stdin", e))?;
            (s, "<stdin>".to_string())
        }
    };
    parse_api_key(&raw, &source, secret_name)
}

/// Check an API key's layout: a bare key or `{"OPENAI_API_KEY": "..."}`. Errors never echo it.
pub fn parse_api_key(raw: &str, source: &str, secret_name: &str) -> Result<SecretString> {
    let source = source.to_string();
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::new(
            source,
            format!("the value for secret {secret_name:?} is empty"),
        )
        .hint("give the OpenAI API key, bare or as {\"OPENAI_API_KEY\": \"...\"}")
        .into());
    }
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
            ConfigError::new(&source, format!("the value for secret {secret_name:?} starts with '{{' but is not JSON (line {}, column {})", e.line(), e.column()))
                .hint("give a bare key or {\"OPENAI_API_KEY\": \"...\"}")
        })?;
        let key = v
            .get("OPENAI_API_KEY")
            .and_then(|k| k.as_str())
            .map(str::trim);
        return match key {
            Some(k) if !k.is_empty() => Ok(SecretString::from(k.to_string())),
            _ => Err(ConfigError::new(&source, format!("the JSON for secret {secret_name:?} has no non-empty string field OPENAI_API_KEY"))
                .field("OPENAI_API_KEY")
                .hint("use the layout {\"OPENAI_API_KEY\": \"sk-...\"}")
                .into()),
        };
    }
    if trimmed.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            &source,
            format!(
                "the value for secret {secret_name:?} contains whitespace; an API key is one word"
            ),
        )
        .hint("give only the key, on one line")
        .into());
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// Check every input, then converge the deployment. `progress` receives one line per step.
/// The parameters drd sets: the code's place, and the optional ones the template declares.
fn stack_parameters<'a>(
    policy: &'a Policy,
    opts: &DeployOptions,
    template: &Template,
    bucket: &str,
    key: &str,
) -> BTreeMap<&'a str, String> {
    let mut params = BTreeMap::new();
    params.insert("FunctionName", policy.function_name().to_string());
    params.insert("CodeBucket", bucket.to_string());
    params.insert("CodeKey", key.to_string());
    let llm_base = opts
        .llm_base_url
        .clone()
        .unwrap_or_else(|| policy.workload.llm_base_url.clone());
    for (name, value) in [
        ("ApiKeySecretName", policy.api_key_secret().to_string()),
        ("LlmBaseUrl", llm_base),
        ("LlmModel", policy.workload.llm_model.clone()),
    ] {
        if template.declares(name) {
            params.insert(name, value);
        }
    }
    params
}

pub async fn deploy(
    aws: &Aws,
    policy: &Policy,
    opts: &DeployOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DeployReport> {
    let started = Instant::now();
    let region = opts.region.as_str();
    let template = Template::load(&policy.template_path())?;

    // 1. The package (built or given), checked before any write.
    let pkg = load_package(policy, opts, progress)?;

    // 2. The secret: read its value now if it must be created, before any write.
    let secrets = aws.secrets(region).await;
    let secret_name = policy.api_key_secret();
    let new_secret = secret_to_create(&secrets, secret_name, &opts.secret_input).await?;

    // 3. Writes begin: the package, content-addressed, in this region's artifact bucket.
    let bucket = policy.artifact_bucket(region);
    // The artifact bucket uses the store's content-address layout without a stack prefix.
    let s3 = aws.s3(region).await;
    crate::store::ensure_store_bucket(&s3, &bucket, region, None, "").await?;
    let artifacts = crate::store::Store::with_prefix(s3, &bucket, "");
    let key = pkg.key();
    debug_assert_eq!(key, artifacts.blob_key(&pkg.sha256_hex));
    let code_uploaded = artifacts.put_once(&key, &pkg.zip).await? == crate::store::Written::New;
    progress(&format!(
        "code package {} ({} bytes): {}",
        &pkg.sha256_hex[..12],
        pkg.zip.len(),
        if code_uploaded {
            "uploaded"
        } else {
            "already stored"
        }
    ));

    if let Some(value) = &new_secret {
        let body = serde_json::json!({"OPENAI_API_KEY": value.expose_secret()}).to_string();
        secrets
            .create_secret()
            .name(secret_name)
            .description("OpenAI API key of the speaker-role classifier (managed by drd)")
            .secret_string(body)
            .send()
            .await
            .map_err(|e| aws_error("secretsmanager", "CreateSecret", e))?;
        progress(&format!("secret {secret_name}: created"));
    }

    // 4. The log group (drd's, outside the stack), then the stack.
    let params = stack_parameters(policy, opts, &template, &bucket, &key);
    let days = crate::lambda::logs::RETENTION_DAYS;
    crate::lambda::logs::prepare(aws, region, policy.function_name(), days, progress).await?;
    let cf = aws.cloudformation(region).await;
    let (stack_action, stack_status) =
        crate::stack::ensure_stack(&cf, policy.stack_name(), &template.body, &params, progress)
            .await?;

    // 5. Publish, probe the new version, and only then move `live`.
    let lambda = aws.lambda(region).await;
    let function = policy.function_name();
    let latest = ops::code_sha256(&lambda, function, "$LATEST").await?;
    if latest != pkg.code_sha256() {
        return Err(Error::failed_hint(
            format!("after the stack update, {function} runs code {latest}, not the package just uploaded ({})", pkg.code_sha256()),
            "check the stack's CodeBucket/CodeKey parameters and its events",
        ));
    }
    let (version, version_published) = ops::publish(&lambda, function, &pkg.code_sha256()).await?;
    progress(&format!(
        "version {}: {}",
        version.version,
        if version_published {
            "published"
        } else {
            "unchanged"
        }
    ));
    let mut probes = probe_version(aws, &lambda, region, function, &version.version).await?;
    let alias = ops::point_live(&lambda, function, &version.version).await?;
    let (alias_from, alias_changed) = match &alias {
        AliasChange::Created => (None, true),
        AliasChange::Moved { from } => (Some(from.clone()), true),
        AliasChange::Unchanged => (Some(version.version.clone()), false),
    };
    progress(&format!(
        "alias live -> {}: {}",
        version.version,
        match &alias {
            AliasChange::Created => "created".to_string(),
            AliasChange::Moved { from } => format!("moved from {from}"),
            AliasChange::Unchanged => "unchanged".to_string(),
        }
    ));
    let (url, url_created) = ops::ensure_function_url(&lambda, function).await?;

    // 6. Prove the URL answers (a signed request: it is AWS_IAM), then the front door users
    // take, which invokes `live` itself.
    probes.extend(probe_url(aws, &url).await?);
    let (door, door_changes) = match &policy.front_door {
        None => (None, vec![]),
        Some(_) => {
            let (d, c, p) = ensure_front_door(aws, policy, region, progress).await?;
            probes.extend(p);
            (Some(d), c)
        }
    };
    // 7. The version passed its probes: record it as known-good (a rollback target). A store
    // that cannot be reached does not undo a healthy deploy; it is reported instead.
    let invoke_probes: Vec<ProbeResult> =
        probes.iter().filter(|p| p.via != "url").cloned().collect();
    let (pinned, pin_written, pin_error) = pin_or_warn(
        aws,
        policy,
        &lambda,
        region,
        &version.version,
        invoke_probes,
        progress,
    )
    .await;
    // 8. The service's DNS name: created when there is none yet (a first deploy). An existing
    // record is never moved by a deploy: `drd restore` decides where users go.
    let dns = match (&policy.dns, &door) {
        (Some(_), Some(door)) => {
            let d = initial_dns(aws, policy, door).await;
            progress(&format!("dns: {d}"));
            Some(d)
        }
        _ => None,
    };
    let changed = code_uploaded
        || pin_written
        || new_secret.is_some()
        || stack_action != "unchanged"
        || version_published
        || alias_changed
        || url_created
        || !door_changes.is_empty();
    Ok(DeployReport {
        region: region.to_string(),
        stack: policy.stack_name().to_string(),
        stack_action,
        stack_status,
        code_bucket: bucket,
        code_key: key,
        code_sha256: pkg.code_sha256(),
        code_uploaded,
        code_bytes: pkg.zip.len(),
        secret: secret_name.to_string(),
        secret_created: new_secret.is_some(),
        version: version.version,
        version_published,
        alias_from,
        alias_changed,
        function_url: url,
        function_url_created: url_created,
        front_door: door,
        front_door_changes: door_changes,
        probes,
        pinned,
        pin_written,
        pin_error,
        dns,
        commit: None,
        changed,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Record that `report`'s version was deployed from `commit` (after its probes passed). Unlike a
/// pin this is not best effort: the CI that asked for it reads it back to know what `live`
/// runs, so a store that cannot be written fails the deploy (running it again records it).
pub async fn record_commit(
    aws: &Aws,
    policy: &Policy,
    report: &DeployReport,
    commit: &str,
) -> Result<bool> {
    let store = crate::store::open_store(aws, policy).await?;
    let rec = crate::lambda::commits::CommitRecord {
        commit: commit.to_string(),
        region: report.region.clone(),
        version: report.version.clone(),
        code_sha256: report.code_sha256.clone(),
        deployed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        by: format!("drd deploy on {}", crate::store::lease::hostname()),
    };
    crate::lambda::commits::record(&store, policy.function_name(), rec)
        .await
        .map_err(|e| {
            Error::failed_hint(
                format!(
                    "version {} is deployed and live, but commit {commit} could not be recorded: {e}",
                    report.version
                ),
                "run the same drd deploy --commit again: it changes nothing and records the commit",
            )
        })
}

/// The API key's value when its secret does not exist yet (read from stdin or the file now,
/// before any write); `None` when it exists.
async fn secret_to_create(
    secrets: &aws_sdk_secretsmanager::Client,
    secret_name: &str,
    input: &SecretInput,
) -> Result<Option<SecretString>> {
    let secret_exists = match secrets
        .describe_secret()
        .secret_id(secret_name)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => false,
        Err(e) => return Err(aws_error("secretsmanager", "DescribeSecret", e)),
    };
    Ok(if secret_exists {
        None
    } else {
        Some(read_secret_value(input, secret_name)?)
    })
}

/// The bootstrap (built, or given with --bootstrap), checked to be a static Linux executable,
/// and packaged reproducibly.
fn load_package(
    policy: &Policy,
    opts: &DeployOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Package> {
    let bootstrap_path = match &opts.bootstrap {
        Some(p) => p.clone(),
        None => {
            progress("building the function (cargo, musl)");
            package::cargo_build(&policy.source_path())?
        }
    };
    let shown = bootstrap_path.display().to_string();
    let bin = std::fs::read(&bootstrap_path).map_err(|e| {
        ConfigError::new(&shown, format!("cannot read the bootstrap binary: {e}"))
            .field("--bootstrap")
            .hint("build it with scripts/build-function or omit --bootstrap to let drd build it")
    })?;
    if !opts.skip_static_check {
        match package::is_static_elf(&bin) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ConfigError::new(
                    &shown,
                    "the bootstrap is dynamically linked; it would not start on provided.al2023",
                )
                .field("--bootstrap")
                .hint(format!("build with --target {}", package::LAMBDA_TARGET))
                .into())
            }
            Err(why) => {
                return Err(ConfigError::new(
                    &shown,
                    format!("the bootstrap is not a Linux executable: {why}"),
                )
                .field("--bootstrap")
                .into())
            }
        }
    }
    Package::from_bootstrap(&bin)
}

/// Probe a published version by invoking it (T0, T1) before `live` may point to it.
async fn probe_version(
    aws: &Aws,
    lambda: &aws_sdk_lambda::Client,
    region: &str,
    function: &str,
    version: &str,
) -> Result<Vec<ProbeResult>> {
    let data = aws.lambda_data(region).await;
    let mut probes = vec![];
    for tier in [Tier::T0, Tier::T1] {
        let r = probe::probe_invoke(&data, function, version, tier).await;
        if !r.ok {
            let live = ops::live_version(lambda, function)
                .await?
                .unwrap_or_else(|| "nothing".into());
            return Err(Error::failed_hint(
                format!(
                    "version {} failed probe {:?}: {}; live still points to {live}",
                    version, tier, r.detail
                ),
                "fix the code and deploy again, or roll back with drd rollback",
            ));
        }
        probes.push(r);
    }
    Ok(probes)
}

/// Make the region's front door (crate::frontdoor) and prove it answers (T0, T1).
async fn ensure_front_door(
    aws: &Aws,
    policy: &Policy,
    region: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(crate::frontdoor::Door, Vec<String>, Vec<ProbeResult>)> {
    let (d, c) = crate::frontdoor::ensure(aws, policy, region).await?;
    progress(&format!(
        "front door {} -> API {} in {region}{}",
        d.domain,
        d.api_id,
        if c.is_empty() {
            " (unchanged)".to_string()
        } else {
            format!(": {}", c.join(", "))
        }
    ));
    let probes = probe_url(aws, &format!("{}/", d.endpoint)).await?;
    Ok((d, c, probes))
}

/// Prove the Function URL answers (T0, T1).
async fn probe_url(aws: &Aws, url: &str) -> Result<Vec<ProbeResult>> {
    let mut probes = vec![];
    let prober = UrlProber::signing(aws).await;
    for tier in [Tier::T0, Tier::T1] {
        let r = prober.probe(url, tier).await;
        if !r.ok {
            return Err(Error::failed_hint(
                format!(
                    "the Function URL {url} failed probe {:?}: {}",
                    tier, r.detail
                ),
                "run drd status for details",
            ));
        }
        probes.push(r);
    }
    Ok(probes)
}

/// Pin the deployed version; a store that cannot be reached does not undo a healthy deploy.
/// Returns (pinned, written, error).
async fn pin_or_warn(
    aws: &Aws,
    policy: &Policy,
    lambda: &aws_sdk_lambda::Client,
    region: &str,
    version: &str,
    invoke_probes: Vec<ProbeResult>,
    progress: &(dyn Fn(&str) + Sync),
) -> (bool, bool, Option<String>) {
    match pin_deployed(aws, policy, lambda, region, version, invoke_probes).await {
        Ok(w) => {
            progress(&format!(
                "version {} pinned as known-good{}",
                version,
                if w { "" } else { " (already)" }
            ));
            (true, w, None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not pin the deployed version");
            progress(&format!("warning: version {} not pinned: {e}", version));
            (false, false, Some(e.to_string()))
        }
    }
}

async fn pin_deployed(
    aws: &Aws,
    policy: &Policy,
    lambda: &aws_sdk_lambda::Client,
    region: &str,
    version: &str,
    probes: Vec<ProbeResult>,
) -> Result<bool> {
    let store = crate::store::open_store(aws, policy).await?;
    let by = format!("drd deploy on {}", crate::store::lease::hostname());
    let (_, written) = crate::lambda::pins::record(
        &store,
        lambda,
        region,
        policy.function_name(),
        version,
        probes,
        &by,
    )
    .await?;
    Ok(written)
}

/// Point the policy's DNS record at this deployment's front door if it points nowhere yet; when
/// it sends users to another region, make this one the SECONDARY (a standby prepared ahead:
/// Route 53's data plane fails over to it without any control-plane call). Describes what it
/// did. Problems are reported, not fatal: the service itself is healthy.
async fn initial_dns(aws: &Aws, policy: &Policy, door: &crate::frontdoor::Door) -> String {
    let host = door.target.as_str();
    let r = async {
        let Some(zone) = crate::dns::find_zone(aws, policy.dns.as_ref().expect("dns")).await?
        else {
            return Ok::<String, Error>(
                "warning: the hosted zone of [dns] does not exist; no record made".into(),
            );
        };
        let v = crate::dns::view(aws, policy, &zone).await?;
        Ok(match v.primary {
            Some(p) if p == host => format!("{} -> {host} (unchanged)", v.record),
            Some(p) if v.mode == crate::policy::DnsMode::Swap => {
                format!(
                    "{} sends users to {p}; left alone (drd restore moves it)",
                    v.record
                )
            }
            Some(p) => {
                let set = crate::dns::set_secondary(aws, policy, &zone, host).await?;
                format!(
                    "{} sends users to {p} (left alone: drd restore moves it); {host} {} its SECONDARY, the standby Route 53 fails over to",
                    v.record,
                    if set { "is now" } else { "is already" }
                )
            }
            None => {
                let c = crate::dns::point_at(aws, policy, &zone, host, &door.health_host()).await?;
                format!("{} -> {host} (created)", c.after.record)
            }
        })
    };
    match r.await {
        Ok(s) => s,
        Err(e) => format!("warning: the DNS record was not checked: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn from_file(text: &str) -> Result<SecretString> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        read_secret_value(&SecretInput::File(f.path().to_path_buf()), "openai-api-key")
    }

    #[test]
    fn secret_layouts() {
        assert_eq!(from_file("sk-abc\n").unwrap().expose_secret(), "sk-abc");
        assert_eq!(
            from_file("{\"OPENAI_API_KEY\": \"sk-j\"}")
                .unwrap()
                .expose_secret(),
            "sk-j"
        );
    }

    #[test]
    fn bad_secret_inputs_are_config_errors_that_never_echo_the_value() {
        for bad in [
            "",
            "  \n",
            "{\"OPENAI_API_KEY\": \"\"}",
            "{\"KEY\": \"sk-hidden1\"}",
            "{sk-hidden2",
            "sk-hidden3 and more",
        ] {
            let e = from_file(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
            assert!(!e.to_string().contains("sk-hidden"), "{e}");
        }
    }
}
