//! The capture of one recovery point: the stack, the function (configuration of every version,
//! aliases, URL, and the live and pinned code packages), the log group and every staged secret
//! version, captured concurrently into content-addressed blobs; then the manifest, last.

use super::crypto;
use super::manifest::*;
use super::writer::{Fresh, Writer};
use super::{new_point_id, scheduled_point_id, BackupReport};
use crate::aws::{aws_error, error_code, Aws};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::lease::LeaseRecord;
use crate::store::{BlobRef, Store, Written};
use crate::workload::package;
use secrecy::{ExposeSecret, SecretSlice};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// What a capture hands back: the report, the manifest, its bytes and this run's fresh blobs.
pub(super) type Captured = (BackupReport, Manifest, Vec<u8>, BTreeMap<String, Fresh>);

/// Everything one capture reads from and writes to.
pub(super) struct Capture<'a> {
    pub aws: &'a Aws,
    pub policy: &'a Policy,
    pub store: &'a Store,
    /// Where the stack serves: the primary, or the region the last restore made active.
    pub region: &'a str,
    pub w: Writer<'a>,
    pub recipients: &'a [Box<dyn age::Recipient + Send + Sync>],
    /// The recipients as the policy writes them (recorded in the manifest).
    pub recipient_names: &'a [String],
    /// The previous point: which secret versions are stored already (checked, never trusted).
    pub prev: Option<Manifest>,
    /// The newest source mirror, named by the point.
    pub source: Option<SourceMirror>,
    /// The drill running while the point is taken (the point is labelled with it).
    pub drill: Option<super::manifest::DrillMark>,
    pub progress: &'a (dyn Fn(&str) + Sync),
}

type SecretsClient = aws_sdk_secretsmanager::Client;
type KnownVersions = BTreeMap<(String, String), SecretVersionCapture>;

impl Capture<'_> {
    /// The previous point, when its encrypted blobs may be reused: it was encrypted to the same
    /// recipients (after a recipient change every secret is encrypted again, so a new point
    /// needs only the new identities).
    fn reusable(&self) -> Option<&Manifest> {
        let mut now: Vec<&String> = self.recipient_names.iter().collect();
        now.sort();
        self.prev.as_ref().filter(|m| {
            let mut then: Vec<&String> = m.recipients.iter().collect();
            then.sort();
            then == now
        })
    }

    /// Capture the four parts concurrently, then write the manifest (the point exists from then).
    pub(super) async fn run(
        self,
        lease: &LeaseRecord,
        scheduled: Option<Scheduled>,
    ) -> Result<Captured> {
        let (stack, (function, code), log_group, secrets) = tokio::try_join!(
            self.stack(),
            self.function(),
            capture_log_group(self.aws, self.region, self.policy.function_name()),
            self.secrets(),
        )?;
        let (store, w, progress) = (self.store, &self.w, self.progress);
        let (new_blobs, new_bytes) = (
            w.new_blobs.load(Ordering::Relaxed),
            w.new_bytes.load(Ordering::Relaxed),
        );
        let now = SystemTime::now();
        let mut manifest = Manifest {
            // Schema 4 only for a drill-labelled point: older drds keep reading the others.
            // Schema 5 records the recipients every point is encrypted to.
            schema: MANIFEST_SCHEMA,
            recipients: self.recipient_names.to_vec(),
            writer: Some(format!("drd {}", env!("CARGO_PKG_VERSION"))),
            id: scheduled
                .as_ref()
                .and_then(|s| scheduled_point_id(self.policy.stack_name(), s))
                .unwrap_or_else(|| new_point_id(now)),
            created_at: humantime::format_rfc3339_millis(now).to_string(),
            holder: format!("{}@{} pid {}", lease.holder, lease.host, lease.pid),
            fencing_token: lease.token,
            scheduled,
            stack,
            function,
            code,
            log_group,
            secrets,
            source: self.source.clone(),
            changes: Changes::default(),
            drill: self.drill.clone(),
        };
        manifest.changes = Changes {
            new_blobs,
            new_bytes,
            items: diff(self.prev.as_ref(), &manifest),
        };
        let fresh = std::mem::take(&mut *w.fresh.lock().expect("fresh blobs"));
        let body = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        // The newest-point pointer first, then the manifest: a run that dies between the two
        // leaves the pointer naming a point that does not exist, which readers notice (and
        // list instead); never a pointer behind the newest point.
        super::advance_pointer(store, &manifest).await?;
        // Last: the point exists from here on.
        if store.put_new(&store.point_key(&manifest.id), &body).await? == Written::Existed {
            // A retry of the same firing: its first attempt stored the point (and the reply
            // was lost). That point stands; this run adds no second one.
            // Copies get the stored manifest, not this attempt's.
            progress(&format!(
                "point {} exists already (a retried firing)",
                manifest.id
            ));
            let key = store.point_key(&manifest.id);
            let stored = store.get(&key).await?.unwrap_or(body);
            let kept: Manifest = serde_json::from_slice(&stored)
                .map_err(|e| crate::error::Error::failed(format!("{key} is unreadable: {e}")))?;
            let mut report = report_of(&kept, new_blobs, new_bytes);
            report.objects_written = new_blobs;
            return Ok((report, kept, stored, fresh));
        }
        progress(&format!("manifest {} written", manifest.id));
        Ok((
            report_of(&manifest, new_blobs, new_bytes),
            manifest,
            body,
            fresh,
        ))
    }

    /// The stack: template body as returned, parameters (NoEcho redacted), outputs, tags,
    /// resources.
    async fn stack(&self) -> Result<StackCapture> {
        let (aws, policy, region, w, progress) =
            (self.aws, self.policy, self.region, &self.w, self.progress);
        let cf = aws.cloudformation(region).await;
        let (stack, body, resources_out) = tokio::try_join!(
            async {
                cf.describe_stacks()
                    .stack_name(policy.stack_name())
                    .send()
                    .await
                    .map_err(|e| aws_error("cloudformation", "DescribeStacks", e))?
                    .stacks()
                    .first()
                    .cloned()
                    .ok_or_else(|| {
                        Error::failed(format!(
                            "stack {} not found in {region}",
                            policy.stack_name()
                        ))
                    })
            },
            async {
                Ok::<_, Error>(
                    cf.get_template()
                        .stack_name(policy.stack_name())
                        .send()
                        .await
                        .map_err(|e| aws_error("cloudformation", "GetTemplate", e))?
                        .template_body()
                        .unwrap_or_default()
                        .to_string(),
                )
            },
            async {
                cf.describe_stack_resources()
                    .stack_name(policy.stack_name())
                    .send()
                    .await
                    .map_err(|e| aws_error("cloudformation", "DescribeStackResources", e))
            },
        )?;
        // NoEcho parameters are never stored in clear, even where the API returns them (moto does).
        let shown = format!("the template of stack {} in {region}", policy.stack_name());
        let no_echo: BTreeSet<String> =
            crate::workload::template::no_echo_parameters(&body, &shown)?;
        let template = w.put(body.as_bytes()).await?;
        progress("template captured");
        let parameters = capture_parameters(
            stack.parameters().iter().map(|p| {
                (
                    p.parameter_key().unwrap_or_default(),
                    p.parameter_value().unwrap_or_default(),
                )
            }),
            &no_echo,
        );
        let outputs = stack
            .outputs()
            .iter()
            .map(|o| {
                (
                    o.output_key().unwrap_or_default().to_string(),
                    o.output_value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let tags = stack
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let resources = resources_out
            .stack_resources()
            .iter()
            .map(|r| ResourceCapture {
                logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                physical_id: r.physical_resource_id().unwrap_or_default().to_string(),
                resource_type: r.resource_type().unwrap_or_default().to_string(),
                status: r
                    .resource_status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(StackCapture {
            name: policy.stack_name().to_string(),
            region: region.to_string(),
            status: stack
                .stack_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            template,
            parameters,
            outputs,
            tags,
            resources,
        })
    }

    /// The function: configuration per version (one document), aliases, URL, and the code
    /// packages of the live and pinned versions.
    async fn function(&self) -> Result<(FunctionCapture, Vec<CodeCapture>)> {
        let (aws, policy, store, region, w, progress) = (
            self.aws,
            self.policy,
            self.store,
            self.region,
            &self.w,
            self.progress,
        );
        let _lambda = aws.lambda(region).await;
        let lambda = aws.lambda(region).await;
        let function = policy.function_name();
        // The pin file (rollback targets, whose packages are captured too) is read meanwhile.
        let (listed, out, url, pinned) = tokio::try_join!(
            async {
                let mut all = vec![];
                let mut pages = lambda
                    .list_versions_by_function()
                    .function_name(function)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page =
                        page.map_err(|e| aws_error("lambda", "ListVersionsByFunction", e))?;
                    all.extend(page.versions().iter().cloned());
                }
                Ok::<_, Error>(all)
            },
            async {
                lambda
                    .list_aliases()
                    .function_name(function)
                    .send()
                    .await
                    .map_err(|e| aws_error("lambda", "ListAliases", e))
            },
            async {
                match lambda
                    .get_function_url_config()
                    .function_name(function)
                    .qualifier(crate::lambda::LIVE_ALIAS)
                    .send()
                    .await
                {
                    Ok(u) => Ok(Some(UrlCapture {
                        url: u.function_url().to_string(),
                        qualifier: crate::lambda::LIVE_ALIAS.into(),
                        auth_type: u.auth_type().as_str().to_string(),
                    })),
                    Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
                    Err(e) => Err(aws_error("lambda", "GetFunctionUrlConfig", e)),
                }
            },
            crate::lambda::pins::load(store, function),
        )?;
        let mut configs = BTreeMap::new();
        let mut versions = vec![];
        {
            for v in listed.iter() {
                let version = v.version().unwrap_or_default().to_string();
                // Names only: the values are in the encrypted environment backups.
                let env: Vec<&String> = v
                    .environment()
                    .and_then(|e| e.variables())
                    .map(|m| m.keys().collect::<BTreeSet<_>>().into_iter().collect())
                    .unwrap_or_default();
                configs.insert(
                version.clone(),
                serde_json::json!({
                    "code_sha256": v.code_sha256(),
                    "runtime": v.runtime().map(|r| r.as_str()),
                    "handler": v.handler(),
                    "memory_size": v.memory_size(),
                    "timeout": v.timeout(),
                    "role": v.role(),
                    "description": v.description(),
                    "architectures": v.architectures().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                    "environment": env,
                }),
            );
                versions.push(VersionCapture {
                    version,
                    code_sha256: v.code_sha256().unwrap_or_default().to_string(),
                });
            }
        }
        let configs = serde_json::to_vec_pretty(&configs).expect("serializes");
        let configuration = w.put(&configs);
        let mut aliases = BTreeMap::new();
        for a in out.aliases() {
            aliases.insert(
                a.name().unwrap_or_default().to_string(),
                a.function_version().unwrap_or_default().to_string(),
            );
        }
        // The configuration blob is written while the packages are looked up and captured.
        let (configuration, code, environments) = tokio::try_join!(
            configuration,
            self.code_packages(&lambda, &versions, &aliases, &pinned),
            super::env::environments(&self.w, self.recipients, self.reusable(), &listed)
        )?;
        progress("function configuration captured");
        progress(&format!("{} code package(s) captured", code.len()));
        let function = FunctionCapture {
            name: function.to_string(),
            configuration,
            versions,
            aliases,
            url,
            environments,
        };
        Ok((function, code))
    }

    /// Code packages of the live (and pinned) versions, fetched by content address and
    /// re-hashed against their CodeSha256; a package the store holds is not fetched.
    async fn code_packages(
        &self,
        lambda: &aws_sdk_lambda::Client,
        versions: &[VersionCapture],
        aliases: &BTreeMap<String, String>,
        pinned: &crate::lambda::pins::PinFile,
    ) -> Result<Vec<CodeCapture>> {
        let (aws, policy, region, w) = (self.aws, self.policy, self.region, &self.w);
        let function = policy.function_name();
        // Code packages of the live (and, with pins, pinned) versions, re-hashed.
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(v) = aliases.get(crate::lambda::LIVE_ALIAS) {
            if let Some(vc) = versions.iter().find(|x| &x.version == v) {
                wanted
                    .entry(vc.code_sha256.clone())
                    .or_default()
                    .push(format!("live ({v})"));
            }
        }
        // Pinned versions are rollback targets: their packages must survive a region loss too.
        for p in pinned.in_region(region) {
            if let Some(vc) = versions.iter().find(|x| x.version == p.version) {
                wanted
                    .entry(vc.code_sha256.clone())
                    .or_default()
                    .push(format!("pinned ({})", p.version));
            }
        }
        let artifacts = aws.s3(region).await;
        let (artifacts, lambda) = (&artifacts, &lambda);
        // The configuration blob is written while the packages are looked up; packages
        // concurrently.
        let packages = wanted.into_iter().map(|(sha, used_by)| async move {
            let hex = package::hex_of_code_sha256(&sha)
                .ok_or_else(|| Error::failed(format!("CodeSha256 {sha:?} is not a SHA-256")))?;
            let blob = if let Some(size) = w.stored_size(&hex).await? {
                BlobRef {
                    sha256: hex.clone(),
                    size,
                }
            } else {
                let spooled =
                    super::code::fetch(artifacts, lambda, policy, region, &hex, &used_by).await?;
                if spooled.sha256 != hex {
                    return Err(Error::failed(format!(
                        "the code package of {function} ({}) hashes to {}, not to its CodeSha256 {hex}: the point is not taken",
                        used_by.join(", "),
                        spooled.sha256
                    )));
                }
                w.put_spooled(spooled).await?
            };
            Ok::<_, Error>(CodeCapture {
                code_sha256: sha,
                used_by,
                blob,
            })
        });
        futures::future::try_join_all(packages).await
    }

    /// Secrets: every staged version, encrypted once per version id.
    async fn secrets(&self) -> Result<Vec<SecretCapture>> {
        let (aws, region, prev) = (self.aws, self.region, self.reusable());
        // Schema 1 stored binary values through a lossy string: those are read again.
        let known: BTreeMap<(String, String), SecretVersionCapture> = prev
            .into_iter()
            .filter(|m| m.schema >= 2)
            .flat_map(|m| m.secrets.iter())
            .flat_map(|s| {
                s.versions
                    .iter()
                    .map(move |v| ((s.name.clone(), v.version_id.clone()), v.clone()))
            })
            .collect();
        let sm = aws.secrets(region).await;
        // Secrets, and the versions of each, are captured concurrently.
        let secrets = futures::future::try_join_all(
            self.policy
                .secret_names()
                .into_iter()
                .map(|name| self.secret(&sm, &known, name)),
        )
        .await?;
        (self.progress)("secrets captured");
        Ok(secrets)
    }

    async fn secret(
        &self,
        sm: &SecretsClient,
        known: &KnownVersions,
        name: String,
    ) -> Result<SecretCapture> {
        // The listing answers for a secret that exists; only when it fails is the secret
        // described, to tell "absent" (moto 5.2.1 answers ListSecretVersionIds on a missing
        // secret with a 500, not ResourceNotFoundException) from a real error.
        let listed = match sm.list_secret_version_ids().secret_id(&name).send().await {
            Ok(l) => l,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
                return Ok(SecretCapture {
                    name,
                    versions: vec![],
                });
            }
            Err(list_err) => {
                return match sm.describe_secret().secret_id(&name).send().await {
                    Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
                        Ok(SecretCapture {
                            name,
                            versions: vec![],
                        })
                    }
                    Err(e) => Err(aws_error("secretsmanager", "DescribeSecret", e)),
                    Ok(_) => Err(aws_error(
                        "secretsmanager",
                        "ListSecretVersionIds",
                        list_err,
                    )),
                };
            }
        };
        let jobs = listed
            .versions()
            .iter()
            .filter(|v| v.version_id().is_some() && !v.version_stages().is_empty())
            .map(|v| self.secret_version(sm, known, &name, v));
        let mut versions = futures::future::try_join_all(jobs).await?;
        versions.sort_by(|a, b| a.version_id.cmp(&b.version_id));
        Ok(SecretCapture { name, versions })
    }

    /// One staged version: reused when the store holds it under the same version id, else read,
    /// encrypted to the recipients and dropped from memory.
    async fn secret_version(
        &self,
        sm: &SecretsClient,
        known: &KnownVersions,
        name_ref: &String,
        v: &aws_sdk_secretsmanager::types::SecretVersionsListEntry,
    ) -> Result<SecretVersionCapture> {
        let (w, recipients) = (&self.w, self.recipients);
        let stages: Vec<String> = v.version_stages().to_vec();
        let id = v.version_id().unwrap_or_default();
        let created_date = v.created_date().map(|d| d.to_string());
        if let Some(k) = known.get(&(name_ref.clone(), id.to_string())) {
            if w.stored_size(&k.blob.sha256).await?.is_some() {
                return Ok::<_, Error>(SecretVersionCapture {
                    stages,
                    created_date,
                    ..k.clone()
                });
            }
        }
        let val = sm
            .get_secret_value()
            .secret_id(name_ref)
            .version_id(id)
            .send()
            .await
            .map_err(|e| aws_error("secretsmanager", "GetSecretValue", e))?;
        // SecretBinary stays bytes, exactly as read: never through a lossy string.
        let binary = val.secret_string().is_none() && val.secret_binary().is_some();
        let plain: SecretSlice<u8> = match (val.secret_string(), val.secret_binary()) {
            (Some(s), _) => SecretSlice::from(s.as_bytes().to_vec()),
            (None, Some(b)) => SecretSlice::from(b.as_ref().to_vec()),
            (None, None) => SecretSlice::from(Vec::new()),
        };
        drop(val);
        let json = !binary
            && serde_json::from_slice::<serde_json::Value>(plain.expose_secret())
                .is_ok_and(|v| v.is_object() || v.is_array());
        let cipher = crypto::encrypt(recipients, plain.expose_secret())?;
        drop(plain);
        let blob = w.put(&cipher).await?;
        Ok(SecretVersionCapture {
            version_id: id.to_string(),
            stages,
            created_date,
            blob,
            json,
            binary,
        })
    }
}

fn report_of(manifest: &Manifest, new_blobs: u64, new_bytes: u64) -> BackupReport {
    BackupReport {
        id: manifest.id.clone(),
        new_blobs,
        new_bytes,
        objects_written: new_blobs + 1,
        changed: manifest.changes.items.clone(),
        copies: vec![],
        duration_ms: 0,
    }
}

async fn capture_log_group(
    aws: &Aws,
    region: &str,
    function: &str,
) -> Result<Option<LogGroupCapture>> {
    let logs = aws.logs(region).await;
    let name = format!("/aws/lambda/{function}");
    let out = logs
        .describe_log_groups()
        .log_group_name_prefix(&name)
        .send()
        .await
        .map_err(|e| aws_error("logs", "DescribeLogGroups", e))?;
    Ok(out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name.as_str()))
        .map(|g| LogGroupCapture {
            name: name.clone(),
            retention_days: g.retention_in_days(),
        }))
}

/// Parameters as recorded: a NoEcho parameter (or one the API masks) keeps its key, never its
/// value, even where the API returns it in clear.
pub fn capture_parameters<'a>(
    params: impl Iterator<Item = (&'a str, &'a str)>,
    no_echo: &BTreeSet<String>,
) -> Vec<ParameterCapture> {
    params
        .map(|(key, value)| {
            let redacted = no_echo.contains(key) || value == "****";
            ParameterCapture {
                key: key.to_string(),
                value: (!redacted).then(|| value.to_string()),
                redacted,
            }
        })
        .collect()
}

/// What changed since the previous point.
fn diff(prev: Option<&Manifest>, m: &Manifest) -> Vec<String> {
    let Some(p) = prev else {
        return vec!["first recovery point".into()];
    };
    let mut out = vec![];
    if p.stack.template != m.stack.template {
        out.push("template".into());
    }
    if p.stack.parameters != m.stack.parameters {
        out.push("parameters".into());
    }
    if p.function.configuration != m.function.configuration {
        out.push("function configuration".into());
    }
    let env_blobs = |f: &FunctionCapture| -> Vec<(String, String)> {
        f.environments
            .iter()
            .map(|e| (e.version.clone(), e.blob.sha256.clone()))
            .collect()
    };
    if env_blobs(&p.function) != env_blobs(&m.function) {
        out.push("function environment".into());
    }
    if p.function.aliases != m.function.aliases {
        out.push("aliases".into());
    }
    let codes = |x: &Manifest| {
        x.code
            .iter()
            .map(|c| c.code_sha256.clone())
            .collect::<BTreeSet<_>>()
    };
    if codes(p) != codes(m) {
        out.push("code packages".into());
    }
    for s in &m.secrets {
        let before: BTreeSet<_> = p
            .secrets
            .iter()
            .filter(|x| x.name == s.name)
            .flat_map(|x| {
                x.versions
                    .iter()
                    .map(|v| (v.version_id.clone(), v.stages.clone()))
            })
            .collect();
        let after: BTreeSet<_> = s
            .versions
            .iter()
            .map(|v| (v.version_id.clone(), v.stages.clone()))
            .collect();
        if before != after {
            out.push(format!("secret {}", s.name));
        }
    }
    if p.log_group != m.log_group {
        out.push("log group".into());
    }
    out
}
