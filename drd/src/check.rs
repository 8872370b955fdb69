//! `drd check`: cheap read calls that prove the endpoints are reachable and the caller may use
//! them, in the primary and the backup region. Each failure names the AWS error code.

use crate::aws::{aws_error, error_code, Aws};
use crate::error::Error;
use crate::policy::Policy;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct CheckItem {
    pub region: String,
    pub call: &'static str,
    pub ok: bool,
    /// The AWS error code when the call failed.
    pub code: Option<String>,
    pub detail: String,
}

fn item(region: &str, call: &'static str, r: Result<String, Error>) -> CheckItem {
    match r {
        Ok(detail) => CheckItem {
            region: region.into(),
            call,
            ok: true,
            code: None,
            detail,
        },
        Err(e) => CheckItem {
            region: region.into(),
            call,
            ok: false,
            code: e.aws_code().map(str::to_string),
            detail: e.to_string(),
        },
    }
}

pub async fn check(aws: &Aws, policy: &Policy) -> Vec<CheckItem> {
    let mut items = vec![];
    let primary = policy.primary_region();
    let backup = policy.backup.region.get_ref().as_str();

    let sts = aws.sts(primary).await;
    items.push(item(
        primary,
        "sts:GetCallerIdentity",
        async {
            let o = sts
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| aws_error("sts", "GetCallerIdentity", e))?;
            Ok(format!("account {}", o.account().unwrap_or("?")))
        }
        .await,
    ));

    let cf = aws.cloudformation(primary).await;
    items.push(item(
        primary,
        "cloudformation:DescribeStacks",
        async {
            match cf
                .describe_stacks()
                .stack_name(policy.stack_name())
                .send()
                .await
            {
                Ok(o) => Ok(format!(
                    "stack {} is {}",
                    policy.stack_name(),
                    o.stacks()
                        .first()
                        .and_then(|s| s.stack_status())
                        .map(|s| s.as_str())
                        .unwrap_or("?")
                )),
                Err(e) if error_code(&e) == Some("ValidationError") => {
                    Ok(format!("stack {} does not exist yet", policy.stack_name()))
                }
                Err(e) => Err(aws_error("cloudformation", "DescribeStacks", e)),
            }
        }
        .await,
    ));

    let lambda = aws.lambda(primary).await;
    items.push(item(
        primary,
        "lambda:ListFunctions",
        async {
            let o = lambda
                .list_functions()
                .max_items(50)
                .send()
                .await
                .map_err(|e| aws_error("lambda", "ListFunctions", e))?;
            Ok(format!("{} function(s) visible", o.functions().len()))
        }
        .await,
    ));

    let sm = aws.secrets(primary).await;
    items.push(item(
        primary,
        "secretsmanager:DescribeSecret",
        async {
            match sm
                .describe_secret()
                .secret_id(policy.api_key_secret())
                .send()
                .await
            {
                Ok(_) => Ok(format!("secret {} exists", policy.api_key_secret())),
                Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(format!(
                    "secret {} does not exist yet (drd deploy creates it)",
                    policy.api_key_secret()
                )),
                Err(e) => Err(aws_error("secretsmanager", "DescribeSecret", e)),
            }
        }
        .await,
    ));

    for (region, bucket, what) in [
        (primary, policy.artifact_bucket(primary), "artifact"),
        (backup, policy.backup.bucket.get_ref().clone(), "backup"),
    ] {
        // The store in its own account is reached through its writer role, as every command
        // reaches it (this also proves the role can be assumed).
        let role = match what {
            "backup" => policy
                .backup
                .role_arn
                .as_ref()
                .map(|r| r.get_ref().as_str()),
            _ => None,
        };
        let s3 = aws.s3_as(region, role).await;
        items.push(item(
            region,
            "s3:HeadBucket",
            async {
                match s3.head_bucket().bucket(&bucket).send().await {
                    Ok(_) => Ok(format!("{what} bucket {bucket} is reachable")),
                    Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(
                        format!("{what} bucket {bucket} does not exist yet (drd creates it)"),
                    ),
                    Err(e) => Err(aws_error("s3", "HeadBucket", e)),
                }
            }
            .await,
        ));
    }
    items
}
