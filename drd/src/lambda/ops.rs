//! Idempotent Lambda control-plane operations: each reads first and writes only on a difference,
//! returning what it changed.

use super::LIVE_ALIAS;
use crate::aws::{aws_error, error_code};
use crate::error::{Error, Result};
use aws_sdk_lambda::types::FunctionUrlAuthType;
use aws_sdk_lambda::Client;

/// A published version as drd sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    pub version: String,
    pub code_sha256: String,
}

/// Publish `$LATEST` as a version, reusing the newest published version when code and
/// configuration are unchanged (Lambda does the same). `expected_sha` guards against publishing
/// code other than the package just deployed.
pub async fn publish(
    lambda: &Client,
    function: &str,
    expected_sha: &str,
) -> Result<(VersionInfo, bool)> {
    let before = newest_version(lambda, function).await?;
    let out = lambda
        .publish_version()
        .function_name(function)
        .code_sha256(expected_sha)
        .description("published by drd deploy")
        .send()
        .await
        .map_err(|e| aws_error("lambda", "PublishVersion", e))?;
    let info = VersionInfo {
        version: out.version().unwrap_or_default().to_string(),
        code_sha256: out.code_sha256().unwrap_or_default().to_string(),
    };
    let new = before
        .as_ref()
        .map(|b| b.version != info.version)
        .unwrap_or(true);
    Ok((info, new))
}

/// The highest numbered published version, if any.
pub async fn newest_version(lambda: &Client, function: &str) -> Result<Option<VersionInfo>> {
    let mut newest: Option<(u64, VersionInfo)> = None;
    let mut pages = lambda
        .list_versions_by_function()
        .function_name(function)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("lambda", "ListVersionsByFunction", e))?;
        for v in page.versions() {
            let Some(n) = v.version().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if newest.as_ref().is_none_or(|(m, _)| n > *m) {
                newest = Some((
                    n,
                    VersionInfo {
                        version: n.to_string(),
                        code_sha256: v.code_sha256().unwrap_or_default().to_string(),
                    },
                ));
            }
        }
    }
    Ok(newest.map(|(_, v)| v))
}

/// `CodeSha256` of one version (or `$LATEST`).
pub async fn code_sha256(lambda: &Client, function: &str, qualifier: &str) -> Result<String> {
    let out = lambda
        .get_function_configuration()
        .function_name(function)
        .qualifier(qualifier)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetFunctionConfiguration", e))?;
    Ok(out.code_sha256().unwrap_or_default().to_string())
}

/// The version `live` points to, if the alias exists.
pub async fn live_version(lambda: &Client, function: &str) -> Result<Option<String>> {
    match lambda
        .get_alias()
        .function_name(function)
        .name(LIVE_ALIAS)
        .send()
        .await
    {
        Ok(a) => Ok(a.function_version().map(str::to_string)),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(aws_error("lambda", "GetAlias", e)),
    }
}

/// Point `live` at `version`; returns the previous target (None when the alias was created).
pub async fn point_live(lambda: &Client, function: &str, version: &str) -> Result<AliasChange> {
    match live_version(lambda, function).await? {
        Some(v) if v == version => Ok(AliasChange::Unchanged),
        Some(prev) => {
            lambda
                .update_alias()
                .function_name(function)
                .name(LIVE_ALIAS)
                .function_version(version)
                .send()
                .await
                .map_err(|e| aws_error("lambda", "UpdateAlias", e))?;
            Ok(AliasChange::Moved { from: prev })
        }
        None => {
            lambda
                .create_alias()
                .function_name(function)
                .name(LIVE_ALIAS)
                .function_version(version)
                .description("drd: the version serving the Function URL")
                .send()
                .await
                .map_err(|e| aws_error("lambda", "CreateAlias", e))?;
            Ok(AliasChange::Created)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasChange {
    Created,
    Moved { from: String },
    Unchanged,
}

/// The Function URL on `live`, if there is one.
pub async fn function_url(lambda: &Client, function: &str) -> Result<Option<String>> {
    match lambda
        .get_function_url_config()
        .function_name(function)
        .qualifier(LIVE_ALIAS)
        .send()
        .await
    {
        Ok(u) => Ok(Some(u.function_url().to_string())),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(aws_error("lambda", "GetFunctionUrlConfig", e)),
    }
}

/// The public permission statement an earlier drd (and the original workload) gave a Function
/// URL with `AuthType NONE`; removed when the URL becomes `AWS_IAM`.
pub const PUBLIC_URL_PERMISSION: &str = "drd-function-url-public";

/// The Function URL on `live` with `AuthType AWS_IAM`: created unless it exists, and an existing
/// public one (`NONE`, as the original workload made it) is switched to `AWS_IAM` in place, so
/// its host never changes, and loses its public permission. Only signed callers and the front
/// door (which invokes the alias, not the URL) reach the function. Returns the URL and whether
/// anything changed. Reading first matters: moto 5.2.1 creates a second URL with a new id when
/// asked twice.
pub async fn ensure_function_url(lambda: &Client, function: &str) -> Result<(String, bool)> {
    match lambda
        .get_function_url_config()
        .function_name(function)
        .qualifier(LIVE_ALIAS)
        .send()
        .await
    {
        Ok(u) if u.auth_type() == &FunctionUrlAuthType::AwsIam => {
            // Converges also after a run that switched the URL and died before the permission
            // went, and removes a public statement made by hand.
            let removed = remove_public_url_permissions(lambda, function).await?;
            return Ok((u.function_url().to_string(), removed));
        }
        Ok(u) => {
            lambda
                .update_function_url_config()
                .function_name(function)
                .qualifier(LIVE_ALIAS)
                .auth_type(FunctionUrlAuthType::AwsIam)
                .send()
                .await
                .map_err(|e| aws_error("lambda", "UpdateFunctionUrlConfig", e))?;
            remove_public_url_permissions(lambda, function).await?;
            return Ok((u.function_url().to_string(), true));
        }
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {}
        Err(e) => return Err(aws_error("lambda", "GetFunctionUrlConfig", e)),
    }
    let out = lambda
        .create_function_url_config()
        .function_name(function)
        .qualifier(LIVE_ALIAS)
        .auth_type(FunctionUrlAuthType::AwsIam)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "CreateFunctionUrlConfig", e))?;
    Ok((out.function_url().to_string(), true))
}

/// Remove every statement of `live`'s resource policy that lets anyone (`Principal: *`) call
/// its Function URL (`drd-function-url-public`, or one made by hand); whether any was removed.
pub async fn remove_public_url_permissions(lambda: &Client, function: &str) -> Result<bool> {
    let policy = match lambda
        .get_policy()
        .function_name(function)
        .qualifier(LIVE_ALIAS)
        .send()
        .await
    {
        Ok(p) => p.policy().unwrap_or("{}").to_string(),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(false),
        Err(e) => return Err(aws_error("lambda", "GetPolicy", e)),
    };
    let doc: serde_json::Value = serde_json::from_str(&policy).unwrap_or_default();
    let public: Vec<String> = doc["Statement"]
        .as_array()
        .map(|st| {
            st.iter()
                .filter(|s| {
                    let p = &s["Principal"];
                    let anyone = p == "*" || p["AWS"] == "*";
                    let action = s["Action"].as_str().unwrap_or_default();
                    anyone && (action == "lambda:InvokeFunctionUrl" || action == "lambda:*")
                })
                .filter_map(|s| s["Sid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for sid in &public {
        match lambda
            .remove_permission()
            .function_name(function)
            .qualifier(LIVE_ALIAS)
            .statement_id(sid)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(aws_error("lambda", "RemovePermission", e)),
        }
    }
    Ok(!public.is_empty())
}

/// Wait until `$LATEST`'s last update is applied (`LastUpdateStatus` no longer `InProgress`).
pub async fn wait_updated(lambda: &aws_sdk_lambda::Client, f: &str) -> Result<()> {
    use aws_sdk_lambda::types::LastUpdateStatus;
    for _ in 0..120 {
        let c = lambda
            .get_function_configuration()
            .function_name(f)
            .send()
            .await
            .map_err(|e| aws_error("lambda", "GetFunctionConfiguration", e))?;
        match c.last_update_status() {
            Some(LastUpdateStatus::InProgress) => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await
            }
            Some(LastUpdateStatus::Failed) => {
                return Err(Error::failed(format!(
                    "the update of {f} failed: {}",
                    c.last_update_status_reason().unwrap_or("no reason given")
                )))
            }
            _ => return Ok(()),
        }
    }
    Err(Error::failed(format!(
        "the update of {f} is still in progress after a minute"
    )))
}
