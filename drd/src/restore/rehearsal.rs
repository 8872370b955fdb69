//! Restore rehearsal: prove that the newest recovery point restores, without touching anything
//! users see, then remove everything it made and prove that nothing is left.
//!
//! The rehearsal restores into a scratch region under scratch names: the stack
//! `<stack>-drd-rehearsal`, the function `<function>-drd-rehearsal` and each secret as
//! `<name>-drd-rehearsal` (the template's `FunctionName` and `ApiKeySecretName` parameters are
//! rewritten to match, so the function reads its key from the scratch secret). It writes no
//! active-region record, no pin, no DNS change and no recovery point: the store is only read.
//! The suffix is reserved for rehearsals: what carries it in the scratch region is a rehearsal's
//! (an interrupted one's leftovers are removed before the next one starts, and reported).
//!
//! Teardown deletes the stack (and with it the function, its versions, its URL and its role),
//! the log group, the secrets with `ForceDeleteWithoutRecovery` (a secret in its recovery window
//! would block next week's rehearsal from recreating it) and the code package and artifact
//! bucket when the rehearsal made them; then every one of them is looked up again.

use super::plan::live_code;
use crate::aws::{aws_error, error_code, Aws};
use crate::backup::manifest::Manifest;
use crate::error::{ConfigError, Error, Result};
use crate::policy::Policy;
use crate::store::Store;
use serde::Serialize;
use std::time::{Duration, Instant};

/// The suffix of every scratch name.
pub const SUFFIX: &str = "-drd-rehearsal";

/// What a rehearsal made (or will make) in its scratch region: everything teardown removes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scratch {
    pub region: String,
    pub point: String,
    pub point_created_at: String,
    pub stack: String,
    pub function: String,
    pub secrets: Vec<String>,
    pub log_group: String,
    pub bucket: String,
    pub code_key: String,
    /// Whether the artifact bucket / the code object existed before the rehearsal (then it is
    /// left alone: a standby in that region may use them).
    pub bucket_existed: bool,
    pub object_existed: bool,
    /// The identity file's path (never its contents; not reported).
    #[serde(skip)]
    pub identity: String,
}

fn scratch_name(name: &str) -> String {
    format!("{name}{SUFFIX}")
}

/// The policy the rehearsal restores with: the same, under scratch stack and function names.
pub fn scratch_policy(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    p.stack.name = toml::Spanned::new(0..0, scratch_name(policy.stack_name()));
    p.stack.function_name = toml::Spanned::new(0..0, scratch_name(policy.function_name()));
    p
}

/// The point as the rehearsal restores it: secrets, function name and the parameters that name
/// them renamed to their scratch names (nothing else changes).
pub fn scratch_manifest(m: &Manifest) -> Manifest {
    let mut s = m.clone();
    let renamed: Vec<(String, String)> = m
        .secrets
        .iter()
        .map(|x| (x.name.clone(), scratch_name(&x.name)))
        .chain(std::iter::once((
            m.function.name.clone(),
            scratch_name(&m.function.name),
        )))
        .collect();
    for x in &mut s.secrets {
        x.name = scratch_name(&x.name);
    }
    s.function.name = scratch_name(&m.function.name);
    for p in &mut s.stack.parameters {
        if let Some(v) = &p.value {
            if let Some((_, to)) = renamed.iter().find(|(from, _)| from == v) {
                p.value = Some(to.clone());
            }
        }
    }
    s
}

/// Check the target and name what the rehearsal will make. No write.
pub async fn plan(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    region: &str,
    identity_path: &str,
) -> Result<(Manifest, Scratch)> {
    super::check_target(region)?;
    if region == policy.primary_region() {
        return Err(ConfigError::new(
            "region",
            format!("{region} is the stack's primary region: a rehearsal restores elsewhere"),
        )
        .hint("name another region with --input region=R (for example the backup store's)")
        .into());
    }
    let ids = super::identities(identity_path)?;
    let (m, _) = super::choose_point(store, "latest", &ids, identity_path).await?;
    let (_, _, hex) = live_code(&m)?;
    let sp = scratch_policy(policy);
    for (what, n) in [
        ("stack name", sp.stack_name()),
        ("function name", sp.function_name()),
    ] {
        if n.len() > 64 {
            return Err(Error::failed_hint(
                format!("the scratch {what} {n} is longer than 64 characters"),
                "a rehearsal needs a stack and function name of at most 50 characters",
            ));
        }
    }
    let bucket = policy.artifact_bucket(region);
    let code_key = crate::workload::package::object_key(&hex);
    let s3 = aws.s3(region).await;
    let bucket_existed = match s3.head_bucket().bucket(&bucket).send().await {
        Ok(_) => true,
        Err(e) if is_not_found(error_code(&e), &e) => false,
        Err(e) => return Err(aws_error("s3", "HeadBucket", e)),
    };
    let object_existed = bucket_existed
        && match s3.head_object().bucket(&bucket).key(&code_key).send().await {
            Ok(_) => true,
            Err(e) if is_not_found(error_code(&e), &e) => false,
            Err(e) => return Err(aws_error("s3", "HeadObject", e)),
        };
    let scratch = Scratch {
        region: region.to_string(),
        point: m.id.clone(),
        point_created_at: m.created_at.clone(),
        stack: sp.stack_name().to_string(),
        function: sp.function_name().to_string(),
        secrets: m.secrets.iter().map(|s| scratch_name(&s.name)).collect(),
        log_group: crate::lambda::logs::log_group_name(sp.function_name()),
        bucket,
        code_key,
        bucket_existed,
        object_existed,
        identity: identity_path.to_string(),
    };
    Ok((m, scratch))
}

fn is_not_found<E>(code: Option<&str>, e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    matches!(
        code,
        Some("NotFound" | "NoSuchBucket" | "NoSuchKey" | "404")
    ) || e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

/// Restore the point under the scratch names and serve it (T0/T1 by Invoke and by the Function
/// URL). `step` reports each finished step (its name). Returns the scratch Function URL.
pub async fn restore(
    aws: &Aws,
    policy: &Policy,
    store: &Store,
    m: &Manifest,
    s: &Scratch,
    progress: &(dyn Fn(&str) + Sync),
    step: &(dyn Fn(&str) + Sync),
) -> Result<String> {
    let sp = scratch_policy(policy);
    let sm = scratch_manifest(m);
    let done = super::restore_secrets(aws, store, &sm, &s.identity, &s.region).await?;
    progress(&format!(
        "{} secret(s) restored under scratch names in {}",
        done.len(),
        s.region
    ));
    step("secrets");
    super::restore_code(aws, &sp, store, &sm, &s.region).await?;
    step("code");
    super::restore_stack(aws, &sp, store, &sm, &s.region, progress).await?;
    step("stack");
    let up = super::serve(aws, &sp, &sm, &s.region, progress).await?;
    step("function");
    Ok(up.function_url)
}

/// Remove everything the rehearsal made (also what an interrupted one left). Idempotent;
/// returns what was done.
pub async fn teardown(
    aws: &Aws,
    s: &Scratch,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>> {
    let mut done = vec![];
    let cf = aws.cloudformation(&s.region).await;
    if crate::stack::describe_stack(&cf, &s.stack).await?.is_some() {
        cf.delete_stack()
            .stack_name(&s.stack)
            .send()
            .await
            .map_err(|e| aws_error("cloudformation", "DeleteStack", e))?;
        let start = Instant::now();
        loop {
            match crate::stack::describe_stack(&cf, &s.stack).await? {
                None => break,
                Some(st) => {
                    let status = st.stack_status().map(|x| x.as_str()).unwrap_or_default();
                    if status == "DELETE_FAILED" {
                        return Err(Error::failed_hint(
                            format!("deleting the scratch stack {} in {} failed", s.stack, s.region),
                            "inspect its events (aws cloudformation describe-stack-events) and run the rehearsal again: it removes its leftovers first",
                        ));
                    }
                    if start.elapsed() > Duration::from_secs(1800) {
                        return Err(Error::failed(format!(
                            "the scratch stack {} in {} is still {status} after 30 minutes",
                            s.stack, s.region
                        )));
                    }
                    progress(&format!("scratch stack {}: {status}", s.stack));
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        done.push(format!("stack {} deleted", s.stack));
    }
    // The function goes with its stack; one left behind (a stack deleted out of band) too.
    let lambda = aws.lambda(&s.region).await;
    match lambda
        .delete_function()
        .function_name(&s.function)
        .send()
        .await
    {
        Ok(_) => done.push(format!("function {} deleted", s.function)),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {}
        Err(e) => return Err(aws_error("lambda", "DeleteFunction", e)),
    }
    let logs = aws.logs(&s.region).await;
    match logs
        .delete_log_group()
        .log_group_name(&s.log_group)
        .send()
        .await
    {
        Ok(_) => done.push(format!("log group {} deleted", s.log_group)),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {}
        Err(e) => return Err(aws_error("logs", "DeleteLogGroup", e)),
    }
    let sm = aws.secrets(&s.region).await;
    for name in &s.secrets {
        match sm
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => done.push(format!("secret {name} deleted without a recovery window")),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(aws_error("secretsmanager", "DeleteSecret", e)),
        }
    }
    let s3 = aws.s3(&s.region).await;
    if !s.object_existed {
        match s3
            .delete_object()
            .bucket(&s.bucket)
            .key(&s.code_key)
            .send()
            .await
        {
            Ok(_) => done.push(format!(
                "code package s3://{}/{} deleted",
                s.bucket, s.code_key
            )),
            Err(e) if is_not_found(error_code(&e), &e) => {}
            Err(e) => return Err(aws_error("s3", "DeleteObject", e)),
        }
    }
    if !s.bucket_existed {
        match s3.delete_bucket().bucket(&s.bucket).send().await {
            Ok(_) => done.push(format!("artifact bucket {} deleted", s.bucket)),
            Err(e) if is_not_found(error_code(&e), &e) => {}
            // Something else was put there meanwhile: not the rehearsal's to delete.
            Err(e) if error_code(&e) == Some("BucketNotEmpty") => done.push(format!(
                "artifact bucket {} kept: it holds objects the rehearsal did not put there",
                s.bucket
            )),
            Err(e) => return Err(aws_error("s3", "DeleteBucket", e)),
        }
    }
    Ok(done)
}

/// Look up everything the rehearsal made: what is still there (empty: nothing is left).
pub async fn leftovers(aws: &Aws, s: &Scratch) -> Result<Vec<String>> {
    let mut left = vec![];
    let cf = aws.cloudformation(&s.region).await;
    if let Some(st) = crate::stack::describe_stack(&cf, &s.stack).await? {
        left.push(format!(
            "stack {} ({})",
            s.stack,
            st.stack_status().map(|x| x.as_str()).unwrap_or("?")
        ));
    }
    let lambda = aws.lambda(&s.region).await;
    match lambda
        .get_function_configuration()
        .function_name(&s.function)
        .send()
        .await
    {
        Ok(_) => left.push(format!("function {}", s.function)),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {}
        Err(e) => return Err(aws_error("lambda", "GetFunctionConfiguration", e)),
    }
    let logs = aws.logs(&s.region).await;
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix(&s.log_group)
        .send()
        .await
        .map_err(|e| aws_error("logs", "DescribeLogGroups", e))?;
    if groups
        .log_groups()
        .iter()
        .any(|g| g.log_group_name() == Some(s.log_group.as_str()))
    {
        left.push(format!("log group {}", s.log_group));
    }
    let sm = aws.secrets(&s.region).await;
    for name in &s.secrets {
        match sm.describe_secret().secret_id(name).send().await {
            Ok(d) => left.push(format!(
                "secret {name}{}",
                if d.deleted_date().is_some() {
                    " (scheduled for deletion: its name stays taken)"
                } else {
                    ""
                }
            )),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(aws_error("secretsmanager", "DescribeSecret", e)),
        }
    }
    let s3 = aws.s3(&s.region).await;
    if !s.object_existed {
        match s3
            .head_object()
            .bucket(&s.bucket)
            .key(&s.code_key)
            .send()
            .await
        {
            Ok(_) => left.push(format!("code package s3://{}/{}", s.bucket, s.code_key)),
            Err(e) if is_not_found(error_code(&e), &e) => {}
            Err(e) => return Err(aws_error("s3", "HeadObject", e)),
        }
    }
    Ok(left)
}
