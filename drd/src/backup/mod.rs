//! Backups: one recovery point per run, capturing the stack, the function, its code packages,
//! its log group and age-encrypted secrets into the store (`crate::store`).
//!
//! Order matters: blobs first (content-addressed, written once), the manifest last. A run that
//! dies halfway leaves no point. Unchanged inputs add no blob: templates, configuration and code
//! hash to the same address, and a secret version already backed up (by version id) is never
//! encrypted again.

pub mod crypto;
pub mod manifest;
pub mod prune;
pub mod retention;
pub mod verify;

use crate::aws::{aws_error, error_code, Aws};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::lease::Lease;
use crate::store::{BlobRef, Store, Written};
use crate::workload::package;
use crate::workload::template::Template;
use manifest::*;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Lease on the store held by every writing command.
pub const STORE_LEASE: &str = "store";
pub const LEASE_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, serde::Serialize)]
pub struct BackupReport {
    pub id: String,
    pub new_blobs: u64,
    pub new_bytes: u64,
    /// Objects this run wrote (new blobs + the manifest).
    pub objects_written: u64,
    /// Further buckets the point was copied to, with the objects copied to each.
    pub copies: Vec<CopyReport>,
    pub changed: Vec<String>,
    pub duration_ms: u64,
}

/// The policy's store, without asking S3 anything: the bucket may not exist yet.
async fn store_of(aws: &Aws, policy: &Policy) -> Store {
    let s3 = aws.s3(policy.backup.region.get_ref()).await;
    Store::new(s3, policy.backup.bucket.get_ref(), policy.stack_name())
}

/// Open the store of the policy's stack, creating the bucket in the backup region if needed.
pub async fn open_store(aws: &Aws, policy: &Policy) -> Result<Store> {
    let store = store_of(aws, policy).await;
    crate::store::ensure_store_bucket(
        &store.s3,
        &store.bucket,
        policy.backup.region.get_ref(),
        policy.backup.object_lock.as_ref(),
        &policy.path.display().to_string(),
    )
    .await?;
    Ok(store)
}

/// Open an existing store for reading; never creates anything.
pub async fn open_store_read(aws: &Aws, policy: &Policy) -> Result<Store> {
    let region = policy.backup.region.get_ref();
    let store = store_of(aws, policy).await;
    let bucket = &store.bucket;
    match store.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(store),
        Err(e) if crate::store::status_of(&e) == Some(404) => Err(Error::failed_hint(
            format!("the store bucket {bucket} does not exist in {region}: there is no recovery point yet"),
            "take one with drd backup",
        )),
        Err(e) => Err(aws_error("s3", "HeadBucket", e)),
    }
}

/// The newest point whose manifest parses, if any.
pub async fn latest_manifest(store: &Store) -> Result<Option<Manifest>> {
    for id in store.point_ids().await?.iter().rev() {
        if let Some(b) = store.get(&store.point_key(id)).await? {
            if let Ok(m) = serde_json::from_slice::<Manifest>(&b) {
                return Ok(Some(m));
            }
        }
    }
    Ok(None)
}

pub async fn read_manifest(store: &Store, id: &str) -> Result<Manifest> {
    let b = store.get(&store.point_key(id)).await?.ok_or_else(|| {
        Error::failed_hint(
            format!("recovery point {id} does not exist"),
            "list points with drd points list",
        )
    })?;
    serde_json::from_slice(&b).map_err(|e| {
        Error::failed(format!(
            "recovery point {id}: manifest {} is unreadable: {e}",
            store.point_key(id)
        ))
    })
}

/// A new point id: sortable time, then a random suffix.
pub fn new_point_id(now: SystemTime) -> String {
    let t = humantime::format_rfc3339_millis(now).to_string(); // 2026-11-27T04:15:00.123Z
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let seed = format!("{:?}{}{}", now, std::process::id(), t);
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    format!("{compact}-{}", &h[..8])
}

/// Writes blobs and counts what was new; shared by the concurrent capture tasks.
struct Writer<'a> {
    store: &'a Store,
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
    /// The bytes of every blob this run wrote, so copies need not read them back.
    fresh: std::sync::Mutex<BTreeMap<String, Vec<u8>>>,
    /// The blobs (hex digest -> size) the store held when the run took its lease, when one
    /// listing page held them all: a blob found there is neither looked up nor written again.
    /// `None`: each blob is looked up (or conditionally written) on its own.
    listed: Option<BTreeMap<String, u64>>,
}

impl Writer<'_> {
    /// The stored size of a blob, or `None` when the store does not hold it.
    async fn stored_size(&self, hex: &str) -> Result<Option<u64>> {
        match &self.listed {
            Some(l) => Ok(l.get(hex).copied()),
            None => self.store.head_size(&self.store.blob_key(hex)).await,
        }
    }

    async fn put(&self, bytes: &[u8]) -> Result<BlobRef> {
        let (r, w) = match &self.listed {
            Some(l) => {
                let r = BlobRef {
                    sha256: hex::encode(Sha256::digest(bytes)),
                    size: bytes.len() as u64,
                };
                // Listed: nothing to write. Not listed (or listed with another size, which
                // `drd verify` reports as damaged): a conditional write, without a lookup first.
                if l.get(&r.sha256) == Some(&r.size) {
                    return Ok(r);
                }
                let w = self
                    .store
                    .put_new(&self.store.blob_key(&r.sha256), bytes)
                    .await?;
                (r, w)
            }
            None => self.store.put_blob(bytes).await?,
        };
        if w == Written::New {
            self.new_blobs.fetch_add(1, Ordering::Relaxed);
            self.new_bytes.fetch_add(r.size, Ordering::Relaxed);
            self.fresh
                .lock()
                .expect("fresh blobs")
                .insert(r.sha256.clone(), bytes.to_vec());
        }
        Ok(r)
    }
}

/// The blobs the store holds (hex digest -> size), when one listing page holds them all.
async fn listed_blobs(store: &Store) -> Result<Option<BTreeMap<String, u64>>> {
    let prefix = store.objects_prefix();
    let (keys, more) = store.list_first_page(&prefix).await?;
    if more {
        return Ok(None);
    }
    Ok(Some(
        keys.into_iter()
            .filter_map(|(k, size)| Some((k.rsplit('/').next()?.to_string(), size)))
            .collect(),
    ))
}

/// The previous point as copies see it: its id and the blobs it names.
struct PrevPoint {
    id: String,
    blobs: BTreeSet<String>,
}

/// Take one recovery point.
pub async fn backup(
    aws: &Aws,
    policy: &Policy,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BackupReport> {
    backup_scheduled(aws, policy, progress, None).await
}

/// Take one recovery point; a scheduled run records its firing and fencing token in it.
pub async fn backup_scheduled(
    aws: &Aws,
    policy: &Policy,
    progress: &(dyn Fn(&str) + Sync),
    scheduled: Option<manifest::Scheduled>,
) -> Result<BackupReport> {
    let started = Instant::now();
    let recipients = crypto::recipients(
        &policy
            .backup
            .recipients
            .get_ref()
            .iter()
            .map(|r| r.get_ref().clone())
            .collect::<Vec<_>>(),
    )?;
    // A store with Object Lock is checked first (a lock is never weakened); one without is
    // used at once, and created only when the first write finds no bucket.
    let store = if policy.backup.object_lock.is_some() {
        open_store(aws, policy).await?
    } else {
        store_of(aws, policy).await
    };
    // The previous point is only a hint (which secret versions are already stored; every reuse
    // is checked against the store), so it is read while the lease is taken, as are the record
    // of the region the stack serves from and the list of stored blobs.
    let start = || async {
        tokio::join!(
            Lease::acquire(&store, STORE_LEASE, "drd backup", LEASE_TTL),
            latest_manifest(&store),
            crate::restore::read_active(&store),
            listed_blobs(&store)
        )
    };
    let (mut lease, mut prev, mut active, mut listed) = start().await;
    if matches!(&lease, Err(Error::Aws { code, .. }) if code == "NoSuchBucket") {
        open_store(aws, policy).await?;
        (lease, prev, active, listed) = start().await;
    }
    let lease = lease?;
    let mut prev_point = None;
    let mut prepared = vec![];
    let result = match (prev, active, listed) {
        (Ok(prev), Ok(active), Ok(listed)) => {
            prev_point = prev.as_ref().map(|m| PrevPoint {
                id: m.id.clone(),
                blobs: m
                    .blobs()
                    .into_iter()
                    .map(|(_, b)| b.sha256.clone())
                    .collect(),
            });
            // The stack is captured where it serves: the primary, or the region the last
            // `drd restore` recorded as active.
            let region = active
                .as_ref()
                .map(|a| a.region.as_str())
                .unwrap_or(policy.primary_region());
            // Copy buckets are made ready (and asked whether they hold the previous point)
            // while the capture runs; their failures are reported at the copy, after the point.
            let (r, p) = tokio::join!(
                capture(
                    aws,
                    policy,
                    &store,
                    region,
                    listed,
                    &recipients,
                    &lease,
                    prev,
                    scheduled,
                    progress,
                ),
                futures::future::join_all(policy.backup.copies.iter().map(|c| prepare_copy(
                    aws,
                    policy,
                    c,
                    prev_point.as_ref()
                )))
            );
            prepared = p;
            r
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
    };
    // The point is complete once its manifest exists: copy it to further buckets while the
    // store lease is given back.
    let (copies, release) = match &result {
        Ok((_, manifest, body, fresh)) => {
            let (c, r) = tokio::join!(
                copy_point(
                    &store,
                    manifest,
                    body,
                    prev_point.as_ref(),
                    fresh,
                    prepared,
                    progress
                ),
                lease.release()
            );
            (Some(c), r)
        }
        Err(_) => (None, lease.release().await),
    };
    let (mut report, _, _, _) = result?;
    report.copies = copies.transpose()?.unwrap_or_default();
    release?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

// The capture needs the run's whole context; a struct for it would only be unpacked here.
#[allow(clippy::too_many_arguments)]
async fn capture(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    region: &str,
    listed: Option<BTreeMap<String, u64>>,
    recipients: &[Box<dyn age::Recipient + Send + Sync>],
    lease: &Lease,
    prev: Option<Manifest>,
    scheduled: Option<manifest::Scheduled>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(BackupReport, Manifest, Vec<u8>, BTreeMap<String, Vec<u8>>)> {
    let w = Writer {
        store,
        new_blobs: AtomicU64::new(0),
        new_bytes: AtomicU64::new(0),
        fresh: Default::default(),
        listed,
    };
    let w = &w;
    let prev = &prev;

    // Four independent captures run concurrently: stack, function (with code), logs, secrets.
    let stack_task = async {
        // The stack.
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
        let no_echo: BTreeSet<String> = Template::parse(body.clone(), "captured template")
            .map(|t| t.no_echo.into_iter().collect())
            .unwrap_or_default();
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

        Ok::<_, Error>((stack, template, parameters, outputs, tags, resources))
    };
    let function_task = async {
        // The function: configuration per version, aliases, URL.
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
                let env: BTreeMap<String, String> = v
                    .environment()
                    .and_then(|e| e.variables())
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
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
                let zip =
                    fetch_code(artifacts, lambda, policy, region, function, &hex, &used_by)
                        .await?;
                let got = hex::encode(Sha256::digest(&zip));
                if got != hex {
                    return Err(Error::failed(format!(
                    "the code package of {function} ({}) hashes to {got}, not to its CodeSha256 {hex}: the point is not taken",
                    used_by.join(", ")
                )));
                }
                w.put(&zip).await?
            };
            Ok::<_, Error>(CodeCapture {
                code_sha256: sha,
                used_by,
                blob,
            })
        });
        let (configuration, code) =
            tokio::try_join!(configuration, futures::future::try_join_all(packages))?;
        progress("function configuration captured");
        progress(&format!("{} code package(s) captured", code.len()));

        Ok::<_, Error>((configuration, versions, aliases, url, code))
    };
    // The log group's retention.
    let logs_task = capture_log_group(aws, region, policy.function_name());
    let secrets_task = async {
        // Secrets: every staged version, encrypted once per version id.
        let known: BTreeMap<(String, String), SecretVersionCapture> = prev
            .iter()
            .flat_map(|m| m.secrets.iter())
            .flat_map(|s| {
                s.versions
                    .iter()
                    .map(move |v| ((s.name.clone(), v.version_id.clone()), v.clone()))
            })
            .collect();
        let sm = aws.secrets(region).await;
        let (sm, known) = (&sm, &known);
        // Secrets, and the versions of each, are captured concurrently.
        let one_secret = |name: String| async move {
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
            let name_ref = &name;
            let jobs = listed
                .versions()
                .iter()
                .filter(|v| v.version_id().is_some() && !v.version_stages().is_empty())
                .map(|v| async move {
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
                    let plain: SecretString = match (val.secret_string(), val.secret_binary()) {
                        (Some(s), _) => SecretString::from(s.to_string()),
                        (None, Some(b)) => {
                            SecretString::from(String::from_utf8_lossy(b.as_ref()).into_owned())
                        }
                        (None, None) => SecretString::from(String::new()),
                    };
                    drop(val);
                    let json = serde_json::from_str::<serde_json::Value>(plain.expose_secret())
                        .is_ok_and(|v| v.is_object() || v.is_array());
                    let cipher = crypto::encrypt(recipients, plain.expose_secret().as_bytes())?;
                    drop(plain);
                    let blob = w.put(&cipher).await?;
                    Ok(SecretVersionCapture {
                        version_id: id.to_string(),
                        stages,
                        created_date,
                        blob,
                        json,
                    })
                });
            let mut versions = futures::future::try_join_all(jobs).await?;
            versions.sort_by(|a, b| a.version_id.cmp(&b.version_id));
            Ok(SecretCapture { name, versions })
        };
        let secrets =
            futures::future::try_join_all(policy.secret_names().into_iter().map(one_secret))
                .await?;
        progress("secrets captured");
        Ok::<_, Error>(secrets)
    };
    let (
        (stack, template, parameters, outputs, tags, resources),
        (configuration, versions, aliases, url, code),
        log_group,
        secrets,
    ) = tokio::try_join!(stack_task, function_task, logs_task, secrets_task)?;
    let function = policy.function_name();
    let (new_blobs, new_bytes) = (
        w.new_blobs.load(Ordering::Relaxed),
        w.new_bytes.load(Ordering::Relaxed),
    );

    let now = SystemTime::now();
    let mut manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        id: new_point_id(now),
        created_at: humantime::format_rfc3339_millis(now).to_string(),
        holder: format!(
            "{}@{} pid {}",
            lease.record.holder, lease.record.host, lease.record.pid
        ),
        fencing_token: lease.record.token,
        scheduled,
        stack: StackCapture {
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
        },
        function: FunctionCapture {
            name: function.to_string(),
            configuration,
            versions,
            aliases,
            url,
        },
        code,
        log_group,
        secrets,
        changes: Changes::default(),
    };
    manifest.changes = Changes {
        new_blobs,
        new_bytes,
        items: diff(prev.as_ref(), &manifest),
    };
    let fresh = std::mem::take(&mut *w.fresh.lock().expect("fresh blobs"));
    let body = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    // Last: the point exists from here on.
    store.put_new(&store.point_key(&manifest.id), &body).await?;
    progress(&format!("manifest {} written", manifest.id));
    Ok((
        BackupReport {
            id: manifest.id.clone(),
            new_blobs,
            new_bytes,
            objects_written: new_blobs + 1,
            changed: manifest.changes.items.clone(),
            copies: vec![],
            duration_ms: 0,
        },
        manifest,
        body,
        fresh,
    ))
}

#[derive(Debug, serde::Serialize)]
pub struct CopyReport {
    pub bucket: String,
    pub region: String,
    pub objects_copied: u64,
}

/// A copy bucket made ready for this run's point: created (with the policy's Object Lock) if
/// missing, and asked whether it holds the previous point.
struct PreparedCopy {
    bucket: String,
    region: String,
    target: Result<(Store, bool)>,
}

async fn prepare_copy(
    aws: &Aws,
    policy: &Policy,
    c: &crate::policy::CopyPolicy,
    prev: Option<&PrevPoint>,
) -> PreparedCopy {
    let (bucket, region) = (c.bucket.get_ref().clone(), c.region.get_ref().clone());
    let target = async {
        let s3 = aws.s3(&region).await;
        let target = Store::new(s3.clone(), &bucket, policy.stack_name());
        let lock = policy.backup.object_lock.as_ref();
        // The common case costs one request: the bucket (without a lock to check) holds the
        // previous point. Anything else makes sure the bucket exists first.
        if let (Some(p), None) = (prev, lock) {
            if target.exists(&target.point_key(&p.id)).await? {
                return Ok((target, true));
            }
        }
        let file = policy.path.display().to_string();
        crate::store::ensure_store_bucket(&s3, &bucket, &region, lock, &file).await?;
        let prev_copied = match (prev, lock) {
            (Some(p), Some(_)) => target.exists(&target.point_key(&p.id)).await?,
            _ => false,
        };
        Ok((target, prev_copied))
    }
    .await;
    PreparedCopy {
        bucket,
        region,
        target,
    }
}

/// Copy a point to every further bucket (concurrently): missing blobs first, the manifest last.
///
/// A copy bucket that holds the previous point's manifest holds every blob it names (manifests
/// are written last), so only the blobs the previous point did not name are looked at; blobs
/// this run wrote are copied from memory, others read back from the store.
async fn copy_point(
    store: &Store,
    manifest: &Manifest,
    body: &[u8],
    prev: Option<&PrevPoint>,
    fresh: &BTreeMap<String, Vec<u8>>,
    prepared: Vec<PreparedCopy>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<CopyReport>> {
    let one = |p: PreparedCopy| async move {
        let PreparedCopy {
            bucket,
            region,
            target,
        } = p;
        let (target, prev_copied) = target?;
        let mut seen = BTreeSet::new();
        let jobs = manifest
            .blobs()
            .into_iter()
            .filter(|(_, b)| seen.insert(b.sha256.clone()))
            .filter(|(_, b)| !(prev_copied && prev.is_some_and(|p| p.blobs.contains(&b.sha256))))
            .map(|(_, b)| {
                let target = &target;
                async move {
                    let key = target.blob_key(&b.sha256);
                    if let Some(bytes) = fresh.get(&b.sha256) {
                        // Written by this run: a conditional PUT, no lookup, no read-back.
                        return Ok::<u64, Error>(u64::from(
                            target.put_new(&key, bytes).await? == Written::New,
                        ));
                    }
                    if target.exists(&key).await? {
                        return Ok(0);
                    }
                    // GET + conditional PUT rather than CopyObject: moto 5.2.1 refuses
                    // CopyObject into an Object Lock bucket without a checksum header the SDK
                    // does not send for copies.
                    let bytes = store.get_blob(&b.sha256).await?.ok_or_else(|| {
                        Error::failed(format!(
                            "blob {} vanished while copying point {}",
                            store.blob_key(&b.sha256),
                            manifest.id
                        ))
                    })?;
                    Ok(u64::from(
                        target.put_once(&key, &bytes).await? == Written::New,
                    ))
                }
            });
        let mut copied: u64 = futures::future::try_join_all(jobs).await?.into_iter().sum();
        if target
            .put_new(&target.point_key(&manifest.id), body)
            .await?
            == Written::New
        {
            copied += 1;
        }
        progress(&format!(
            "copied to s3://{bucket} ({region}): {copied} object(s)"
        ));
        Ok::<_, Error>(CopyReport {
            bucket,
            region,
            objects_copied: copied,
        })
    };
    futures::future::try_join_all(prepared.into_iter().map(one)).await
}

async fn fetch_code(
    artifacts: &aws_sdk_s3::Client,
    lambda: &aws_sdk_lambda::Client,
    policy: &Policy,
    region: &str,
    function: &str,
    hex: &str,
    used_by: &[String],
) -> Result<Vec<u8>> {
    let bucket = policy.artifact_bucket(region);
    match artifacts
        .get_object()
        .bucket(&bucket)
        .key(package::object_key(hex))
        .send()
        .await
    {
        Ok(o) => {
            return Ok(o
                .body
                .collect()
                .await
                .map_err(|e| Error::failed(format!("reading the code package from {bucket}: {e}")))?
                .into_bytes()
                .to_vec())
        }
        Err(e) if error_code(&e) == Some("NoSuchKey") || error_code(&e) == Some("NoSuchBucket") => {
        }
        Err(e) => return Err(aws_error("s3", "GetObject", e)),
    }
    // Not in the artifact bucket: on real AWS, Code.Location is a presigned URL.
    let qualifier = used_by
        .first()
        .and_then(|u| u.split(['(', ')']).nth(1))
        .unwrap_or("$LATEST")
        .to_string();
    let f = lambda
        .get_function()
        .function_name(function)
        .qualifier(qualifier)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetFunction", e))?;
    let location = f
        .code()
        .and_then(|c| c.location())
        .unwrap_or_default()
        .to_string();
    let r = reqwest::get(&location)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::failed_hint(
            format!("the code package {hex} is neither in {bucket} nor downloadable from Code.Location: {}", e.without_url()),
            "deploy with drd deploy so packages are stored content-addressed",
        ))?;
    Ok(r.bytes()
        .await
        .map_err(|e| Error::failed(e.without_url().to_string()))?
        .to_vec())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_echo_parameters_are_never_recorded_in_clear() {
        let no_echo: BTreeSet<String> = ["DbPassword".to_string()].into();
        let p = capture_parameters(
            [
                ("DbPassword", "hunter2-in-clear"),
                ("CodeKey", "objects/x"),
                ("Masked", "****"),
            ]
            .into_iter(),
            &no_echo,
        );
        assert_eq!(p[0].value, None);
        assert!(p[0].redacted);
        assert_eq!(p[1].value.as_deref(), Some("objects/x"));
        assert!(p[2].redacted);
        assert!(!serde_json::to_string(&p).unwrap().contains("hunter2"));
    }

    #[test]
    fn point_ids_sort_by_time() {
        let a = new_point_id(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let b = new_point_id(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_001));
        assert!(a < b, "{a} {b}");
        // Points taken within one second still sort in the order they were taken.
        let c = new_point_id(std::time::UNIX_EPOCH + Duration::from_millis(1_800_000_001_001));
        let d = new_point_id(std::time::UNIX_EPOCH + Duration::from_millis(1_800_000_001_999));
        assert!(b < c && c < d, "{b} {c} {d}");
        assert!(a.starts_with("20270115T"), "{a}");
    }
}
