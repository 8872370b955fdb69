//! The store bucket's own policy, for a store in its own account (docs/store-account.md): the
//! writer role (`backup.role_arn`) adds and reads objects; only the prune role
//! (`backup.prune_role_arn`) deletes points and blobs; nobody overwrites one (a write to a point
//! or a blob must be conditional, `If-None-Match: *`, which drd's always are); no principal of
//! another account (the workload's) writes or deletes anything.
//!
//! Who writes the bucket policy: the store account's administrator, once, with
//! `drd iam policy --store-bucket`; drd itself never calls PutBucketPolicy.

use crate::error::{ConfigError, Result};
use crate::policy::Policy;
use serde_json::{json, Value};

/// The account of a role ARN (`arn:aws:iam::ACCOUNT:role/NAME`).
pub fn account_of(role_arn: &str) -> Option<&str> {
    role_arn
        .strip_prefix("arn:aws:iam::")?
        .split(':')
        .next()
        .filter(|a| a.len() == 12)
}

/// Keys under the stack's prefix that hold recovery points: never deleted but by the prune
/// role, never overwritten.
pub const PROTECTED: &[&str] = &["points/", "objects/"];

/// The bucket policy of every store bucket of `policy` (the store and its copies).
pub fn bucket_policy(policy: &Policy) -> Result<Value> {
    let file = policy.path.display().to_string();
    let Some(writer) = policy.backup.role_arn.as_ref().map(|r| r.get_ref().clone()) else {
        return Err(ConfigError::new(
            &file,
            "the store has no account of its own: a bucket policy needs backup.role_arn",
        )
        .field("backup.role_arn")
        .hint("set backup.role_arn (and backup.prune_role_arn) to roles in the store's account")
        .into());
    };
    let account = account_of(&writer).unwrap_or("*").to_string();
    let stack = policy.stack_name();
    let mut buckets = vec![policy.backup.bucket.get_ref().clone()];
    buckets.extend(
        policy
            .backup
            .copies
            .iter()
            .map(|c| c.bucket.get_ref().clone()),
    );
    let arns = |f: &dyn Fn(&str) -> Vec<String>| -> Vec<String> {
        buckets.iter().flat_map(|b| f(b)).collect()
    };
    let bucket_arns = arns(&|b| vec![format!("arn:aws:s3:::{b}")]);
    let all_objects = arns(&|b| vec![format!("arn:aws:s3:::{b}/*")]);
    let protected = arns(&|b| {
        PROTECTED
            .iter()
            .map(|p| format!("arn:aws:s3:::{b}/{stack}/{p}*"))
            .collect()
    });
    let mut principals = vec![writer.clone()];
    let prune = policy
        .backup
        .prune_role_arn
        .as_ref()
        .map(|r| r.get_ref().clone());
    principals.extend(prune.clone());
    let mut statements = vec![
        json!({
            "Sid": "DrdRolesReadAndAdd",
            "Effect": "Allow",
            "Principal": {"AWS": principals},
            "Action": ["s3:ListBucket", "s3:GetBucketObjectLockConfiguration"],
            "Resource": bucket_arns,
        }),
        json!({
            "Sid": "DrdRolesObjects",
            "Effect": "Allow",
            "Principal": {"AWS": principals},
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": all_objects,
        }),
    ];
    // Deletes of points and blobs: the prune role alone (no one when there is none).
    let mut deny_delete = json!({
        "Sid": "OnlyPruneDeletesPoints",
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
        "Resource": protected,
    });
    if let Some(p) = &prune {
        deny_delete["Condition"] = json!({"ArnNotEquals": {"aws:PrincipalArn": p}});
    }
    statements.push(deny_delete);
    statements.push(json!({
        "Sid": "NoPointIsOverwritten",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": protected,
        "Condition": {"Null": {"s3:if-none-match": "true"}},
    }));
    let everything: Vec<String> = [bucket_arns.clone(), all_objects.clone()].concat();
    statements.push(json!({
        "Sid": "NoOtherAccountWritesOrDeletes",
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutBucketPolicy", "s3:DeleteBucket", "s3:PutLifecycleConfiguration", "s3:PutBucketObjectLockConfiguration"],
        "Resource": everything,
        "Condition": {"StringNotEquals": {"aws:PrincipalAccount": account}},
    }));
    Ok(json!({"Version": "2012-10-17", "Statement": statements}))
}
