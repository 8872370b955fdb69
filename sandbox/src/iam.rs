//! The lab with IAM on (`drd sandbox up --iam`): moto evaluates every request's identity
//! policies, so a least-privilege test runs drd as a user holding only what `drd iam policy`
//! generates.
//!
//! Start-up: moto starts with authentication off; the lab makes, in the workload's account and
//! in a second one (the store's, `STORE_ACCOUNT`), a `lab-admin` user allowed everything with
//! an access key (requests without authentication, each in its account through moto's
//! `x-moto-account-id` header), then turns authentication on (`POST /moto-api/reset-auth 0`).
//! From then on an unknown key is refused (`InvalidClientTokenId`) and every request is
//! authorized against its user's or role's policies. The lab itself (the function host, the
//! workflow runner, the pipeline executor) acts as the workload account's `lab-admin`.
//!
//! One thing is turned off: moto's own signature comparison. moto recomputes each request's
//! SigV4 signature from what its web framework parsed, and gets it wrong for requests the SDK
//! signs correctly (bodiless Lambda, API Gateway and Route 53 calls, `%3A` in a path, encoded
//! query values such as `Prefix=stack%2Fpoints%2F`), so every such call would fail with
//! `SignatureDoesNotMatch` on the emulator and succeed on AWS. The lab starts moto through a
//! launcher that replaces that comparison with nothing; the access key is still looked up (an
//! unknown or deleted key is refused) and the action still authorized. Signing itself is the
//! SDK's, exercised against AWS by its own tests (docs/emulator-gaps.md).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The workload's account (moto's default).
pub const WORKLOAD_ACCOUNT: &str = "123456789012";
/// The account a protected store lives in, in the lab.
pub const STORE_ACCOUNT: &str = "111111111111";

/// The Python moto is started with in IAM mode: moto's server, with the signature comparison
/// (only) switched off. Run as `python -c LAUNCHER -H HOST -p PORT`.
pub const LAUNCHER: &str = "import sys\n\
from moto.iam.access_control import IAMRequestBase\n\
IAMRequestBase.check_signature = lambda self: None\n\
from moto.server import main\n\
sys.exit(main(sys.argv[1:]))\n";

/// An access key of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The Python interpreter beside a `moto_server` script (the venv's), else `python3`.
pub fn python_for(moto_program: &str) -> String {
    let p = std::path::Path::new(moto_program);
    if p.file_name().is_some_and(|f| f == "moto_server") {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            let py = dir.join("python");
            if py.exists() {
                return py.display().to_string();
            }
        }
    }
    "python3".into()
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = s.find(open)? + open.len();
    let j = s[i..].find(close)? + i;
    Some(&s[i..j])
}

/// Make each account's `lab-admin` and its key, then turn authentication on.
pub async fn bootstrap(moto_url: &str, accounts: &[&str]) -> Result<BTreeMap<String, Keys>> {
    let http = reqwest::Client::new();
    let admin =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let mut out = BTreeMap::new();
    for account in accounts {
        let keys = user(moto_url, None, account, "lab-admin", admin).await?;
        out.insert(account.to_string(), keys);
    }
    let r = http
        .post(format!("{moto_url}/moto-api/reset-auth"))
        .body("0")
        .send()
        .await
        .map_err(|e| Error::failed(format!("turning moto's IAM on: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::failed(format!(
            "turning moto's IAM on: {}",
            r.status()
        )));
    }
    Ok(out)
}

/// The key the lab's own processes use: the workload account's admin in IAM mode (the host was
/// started with it), else the emulator's `testing`.
pub fn lab_keys() -> Keys {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Keys {
        access_key_id: get("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "testing".into()),
        secret_access_key: get("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "testing".into()),
    }
}

/// One IAM query-API call in `account`, as `key` (`None` while authentication is still off:
/// the credential scope then only routes the request to moto's IAM). The signature is a
/// placeholder: the lab's moto does not compare signatures (above); the key is checked and the
/// action authorized as for any caller.
async fn admin_call(
    moto_url: &str,
    key: Option<&Keys>,
    account: &str,
    params: &[(&str, &str)],
) -> Result<String> {
    let mut form: Vec<(&str, &str)> = vec![("Version", "2010-05-08")];
    form.extend_from_slice(params);
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20261201/us-east-1/iam/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=0",
        key.map_or("bootstrap", |k| k.access_key_id.as_str())
    );
    let r = reqwest::Client::new()
        .post(format!("{moto_url}/"))
        .header("authorization", auth)
        .header("x-amz-date", "20261201T000000Z")
        .header("x-moto-account-id", account)
        .form(&form)
        .send()
        .await
        .map_err(|e| Error::failed(format!("lab IAM: {e}")))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Error::failed(format!(
            "lab IAM: {} answered {status}: {body}",
            params[0].1
        )));
    }
    Ok(body)
}

/// A user in `account` whose only permissions are `policy` (an identity policy document),
/// and its access key. Called again with the same name, the user's policy is replaced and a new
/// key made.
pub async fn user(
    moto_url: &str,
    admin: Option<&Keys>,
    account: &str,
    name: &str,
    policy: &str,
) -> Result<Keys> {
    let exists = admin_call(
        moto_url,
        admin,
        account,
        &[("Action", "GetUser"), ("UserName", name)],
    )
    .await
    .is_ok();
    if exists {
        // A user holds at most two keys (as on AWS): the new key replaces the old ones.
        let list = admin_call(
            moto_url,
            admin,
            account,
            &[("Action", "ListAccessKeys"), ("UserName", name)],
        )
        .await?;
        let mut rest = list.as_str();
        while let Some(id) = between(rest, "<AccessKeyId>", "</AccessKeyId>") {
            let id = id.to_string();
            rest = &rest[rest.find("</AccessKeyId>").unwrap_or(0) + "</AccessKeyId>".len()..];
            admin_call(
                moto_url,
                admin,
                account,
                &[
                    ("Action", "DeleteAccessKey"),
                    ("UserName", name),
                    ("AccessKeyId", &id),
                ],
            )
            .await?;
        }
    } else {
        admin_call(
            moto_url,
            admin,
            account,
            &[("Action", "CreateUser"), ("UserName", name)],
        )
        .await?;
    }
    admin_call(
        moto_url,
        admin,
        account,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "drd"),
            ("PolicyDocument", policy),
        ],
    )
    .await?;
    let body = admin_call(
        moto_url,
        admin,
        account,
        &[("Action", "CreateAccessKey"), ("UserName", name)],
    )
    .await?;
    match (
        between(&body, "<AccessKeyId>", "</AccessKeyId>"),
        between(&body, "<SecretAccessKey>", "</SecretAccessKey>"),
    ) {
        (Some(a), Some(s)) => Ok(Keys {
            access_key_id: a.to_string(),
            secret_access_key: s.to_string(),
        }),
        _ => Err(Error::failed(
            "lab IAM: CreateAccessKey answered without a key",
        )),
    }
}

/// A role in `account` that principals of `trusted` (an account id) may assume, whose only
/// permissions are `policy`; its ARN. Called again, the role's policy is replaced.
pub async fn role(
    moto_url: &str,
    admin: &Keys,
    account: &str,
    name: &str,
    trusted: &str,
    policy: &str,
) -> Result<String> {
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{trusted}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let exists = admin_call(
        moto_url,
        Some(admin),
        account,
        &[("Action", "GetRole"), ("RoleName", name)],
    )
    .await
    .is_ok();
    if !exists {
        admin_call(
            moto_url,
            Some(admin),
            account,
            &[
                ("Action", "CreateRole"),
                ("RoleName", name),
                ("AssumeRolePolicyDocument", &trust),
            ],
        )
        .await?;
    }
    admin_call(
        moto_url,
        Some(admin),
        account,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", name),
            ("PolicyName", "drd"),
            ("PolicyDocument", policy),
        ],
    )
    .await?;
    Ok(format!("arn:aws:iam::{account}:role/{name}"))
}
