//! Declarations rendered as IAM policy JSON, scoped to one deployment's resources, and as the
//! Markdown table of docs/permissions.md.

use super::caps::{Cap, Res};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The names a policy's resources have; every ARN drd renders is built from these.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The workload's account (`*` when not given).
    pub account: String,
    pub stack: String,
    pub function: String,
    /// The store bucket and its copies.
    pub store_buckets: Vec<String>,
    pub artifact_prefix: String,
    pub secrets: Vec<String>,
    pub api_key_secret: Option<String>,
    pub token_secrets: Vec<String>,
    pub pipelines: Vec<String>,
    pub topic: Option<String>,
    /// `backup.role_arn`, `backup.prune_role_arn`.
    pub store_roles: Vec<String>,
    /// The store is in its own account (`backup.role_arn`): the caller reaches it only through
    /// the store's roles, so its own policy holds nothing on the store's buckets.
    pub store_via_role: bool,
    /// Services whose resources the emulator cannot check get `*` (the lab's least-privilege
    /// users); S3, IAM and STS keep their ARNs.
    pub widen: bool,
}

impl Scope {
    /// The ARNs one kind of resource has in this deployment (empty: the grant does not apply).
    pub fn arns(&self, res: Res) -> Vec<String> {
        let a = &self.account;
        let (stack, func) = (&self.stack, &self.function);
        let secret = |n: &String| format!("arn:aws:secretsmanager:*:{a}:secret:{n}-??????");
        if self.store_via_role && matches!(res, Res::StoreBucket | Res::StoreObjects(_)) {
            return vec![];
        }
        let arns: Vec<String> = match res {
            Res::StoreBucket => self
                .store_buckets
                .iter()
                .map(|b| format!("arn:aws:s3:::{b}"))
                .collect(),
            Res::StoreObjects(sub) => {
                let tail = if sub.ends_with(".json") { "" } else { "*" };
                self.store_buckets
                    .iter()
                    .map(|b| format!("arn:aws:s3:::{b}/{stack}/{sub}{tail}"))
                    .collect()
            }
            Res::ArtifactBuckets => vec![format!("arn:aws:s3:::{}-*", self.artifact_prefix)],
            Res::ArtifactObjects => vec![format!("arn:aws:s3:::{}-*/*", self.artifact_prefix)],
            Res::Stack => vec![format!("arn:aws:cloudformation:*:{a}:stack/{stack}/*")],
            Res::CiStack => vec![format!("arn:aws:cloudformation:*:{a}:stack/{stack}-ci/*")],
            Res::Function => vec![
                format!("arn:aws:lambda:*:{a}:function:{func}"),
                format!("arn:aws:lambda:*:{a}:function:{func}:*"),
            ],
            Res::Secrets => self.secrets.iter().map(secret).collect(),
            Res::ApiKeySecret => self.api_key_secret.iter().map(secret).collect(),
            Res::TokenSecrets => self.token_secrets.iter().map(secret).collect(),
            Res::LogGroup => vec![
                format!("arn:aws:logs:*:{a}:log-group:/aws/lambda/{func}"),
                format!("arn:aws:logs:*:{a}:log-group:/aws/lambda/{func}:*"),
            ],
            Res::HostedZones => vec!["arn:aws:route53:::hostedzone/*".into()],
            Res::Apis => ["/apis", "/apis/*", "/domainnames", "/domainnames/*"]
                .iter()
                .map(|p| format!("arn:aws:apigateway:*::{p}"))
                .collect(),
            Res::Pipeline => self
                .pipelines
                .iter()
                .map(|p| format!("arn:aws:codepipeline:*:{a}:{p}"))
                .collect(),
            Res::BuildProjects => vec![format!("arn:aws:codebuild:*:{a}:project/{stack}-*")],
            Res::StackRoles => vec![format!("arn:aws:iam::{a}:role/{stack}-*")],
            Res::Rehearsal => {
                const R: &str = "-drd-rehearsal";
                let mut v = vec![
                    format!("arn:aws:cloudformation:*:{a}:stack/{stack}{R}/*"),
                    format!("arn:aws:lambda:*:{a}:function:{func}{R}"),
                    format!("arn:aws:lambda:*:{a}:function:{func}{R}:*"),
                    format!("arn:aws:logs:*:{a}:log-group:/aws/lambda/{func}{R}"),
                    format!("arn:aws:logs:*:{a}:log-group:/aws/lambda/{func}{R}:*"),
                    format!("arn:aws:iam::{a}:role/{stack}{R}-*"),
                ];
                v.extend(
                    self.secrets
                        .iter()
                        .map(|n| format!("arn:aws:secretsmanager:*:{a}:secret:{n}{R}-??????")),
                );
                v
            }
            Res::AlertTopic => self.topic.iter().cloned().collect(),
            Res::StoreRoles => self.store_roles.clone(),
            Res::Any => vec!["*".into()],
        };
        let scoped_by_emulator = matches!(
            res,
            Res::StoreBucket
                | Res::StoreObjects(_)
                | Res::ArtifactBuckets
                | Res::ArtifactObjects
                | Res::StackRoles
                | Res::StoreRoles
        );
        if self.widen && !scoped_by_emulator && !arns.is_empty() {
            return vec!["*".into()];
        }
        if self.widen && res == Res::StoreObjects("points/") {
            // moto authorizes DeleteObjects (prune's batch delete) as s3:DeleteObject on the
            // bucket, not on each key (docs/emulator-gaps.md#iam): only the prune role's grant
            // carries the bucket in the lab.
            let mut arns = arns;
            arns.extend(self.arns(Res::StoreBucket));
            return arns;
        }
        arns
    }
}

/// The names the lab's emulator authorizes an action under, besides IAM's own: moto names an
/// action after the request's signing name and SDK operation (`lambda:Invoke`,
/// `apigateway:CreateApi`, `monitoring:DescribeAlarms`, `s3:HeadBucket`), not after IAM's
/// table. Only for `--lab` policies (docs/emulator-gaps.md).
pub fn emulator_names(action: &str) -> Vec<String> {
    let (svc, op) = action.split_once(':').unwrap_or((action, ""));
    let mut v = vec![action.to_string()];
    match (svc, op) {
        ("lambda", "InvokeFunction") => v.push("lambda:Invoke".into()),
        ("apigateway", "GET") => v.push("apigateway:Get*".into()),
        ("apigateway", "POST") => v.push("apigateway:Create*".into()),
        ("apigateway", "PATCH") => v.push("apigateway:Update*".into()),
        ("apigateway", "DELETE") => v.push("apigateway:Delete*".into()),
        ("cloudwatch", op) => v.push(format!("monitoring:{op}")),
        ("s3", "ListBucket") => v.push("s3:HeadBucket".into()),
        _ => {}
    }
    v
}

/// A statement id from a resource kind (`StoreObjectsLocks`, `Function`, ...).
fn sid(res: Res) -> String {
    let raw = format!("{res:?}");
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .enumerate()
        .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// The identity policy for `caps`: one statement per resource set, actions sorted, statements
/// with no resource in this deployment left out.
pub fn policy(caps: &[&Cap], scope: &Scope) -> Value {
    let mut by_res: BTreeMap<Vec<String>, (String, BTreeSet<String>)> = BTreeMap::new();
    for c in caps {
        for g in c.grants {
            let arns = scope.arns(g.on);
            if arns.is_empty() {
                continue;
            }
            let e = by_res
                .entry(arns)
                .or_insert_with(|| (sid(g.on), BTreeSet::new()));
            for a in g.actions {
                if scope.widen {
                    e.1.extend(emulator_names(a));
                } else {
                    e.1.insert(a.to_string());
                }
            }
        }
    }
    let mut statements: Vec<(String, Value)> = by_res
        .into_iter()
        .map(|(arns, (sid, actions))| {
            let resource = if arns.len() == 1 {
                json!(arns[0])
            } else {
                json!(arns)
            };
            (
                sid.clone(),
                json!({"Sid": sid, "Effect": "Allow", "Action": actions.into_iter().collect::<Vec<_>>(), "Resource": resource}),
            )
        })
        .collect();
    statements.sort_by(|a, b| a.0.cmp(&b.0));
    // Two resource sets of one kind (widened to `*`) merge under the first's id.
    let mut merged: Vec<Value> = vec![];
    for (_, st) in statements {
        if let Some(prev) = merged.iter_mut().find(|p| p["Resource"] == st["Resource"]) {
            let mut acts: BTreeSet<String> =
                serde_json::from_value(prev["Action"].clone()).unwrap_or_default();
            acts.extend(
                serde_json::from_value::<Vec<String>>(st["Action"].clone()).unwrap_or_default(),
            );
            prev["Action"] = json!(acts);
        } else {
            merged.push(st);
        }
    }
    json!({"Version": "2012-10-17", "Statement": merged})
}

/// Every action of `caps` with the resources it is scoped to, for the docs: `(action, scope)`.
pub fn table_row(caps: &[&Cap]) -> String {
    let mut names: Vec<&str> = caps.iter().map(|c| c.name).collect();
    names.dedup();
    let actions = super::caps::actions(caps);
    format!(
        "{} | {}",
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
        actions
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether a policy document allows `action` on `resource` (IAM's `*` and `?` wildcards; an
/// explicit Deny wins). The scoping tests check each touched ARN with it.
pub fn allows(policy: &Value, action: &str, resource: &str) -> bool {
    let list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    };
    let mut allowed = false;
    for st in policy["Statement"].as_array().into_iter().flatten() {
        let hit = list(&st["Action"])
            .iter()
            .any(|a| glob(&a.to_lowercase(), &action.to_lowercase()))
            && list(&st["Resource"]).iter().any(|r| glob(r, resource));
        if !hit {
            continue;
        }
        if st["Effect"] == "Deny" {
            return false;
        }
        allowed = true;
    }
    allowed
}

/// IAM's wildcard match: `*` any run of characters, `?` one.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::caps;

    fn scope() -> Scope {
        Scope {
            account: "123456789012".into(),
            stack: "speaker".into(),
            function: "speaker-fn".into(),
            store_buckets: vec!["speaker-points".into()],
            artifact_prefix: "speaker-artifacts".into(),
            secrets: vec!["openai-api-key".into()],
            ..Default::default()
        }
    }

    #[test]
    fn statements_are_scoped_to_the_policys_names() {
        let p = policy(
            &[
                &caps::FUNCTION_READ,
                &caps::STORE_PRUNE,
                &caps::SECRETS_READ,
            ],
            &scope(),
        );
        let f = "arn:aws:lambda:us-west-2:123456789012:function:speaker-fn:live";
        assert!(allows(&p, "lambda:GetAlias", f));
        assert!(!allows(
            &p,
            "lambda:GetAlias",
            "arn:aws:lambda:us-west-2:123456789012:function:other-fn"
        ));
        assert!(
            !allows(&p, "lambda:UpdateAlias", f),
            "an action not declared"
        );
        assert!(allows(
            &p,
            "s3:DeleteObject",
            "arn:aws:s3:::speaker-points/speaker/points/2026-x.json"
        ));
        assert!(!allows(
            &p,
            "s3:DeleteObject",
            "arn:aws:s3:::speaker-points/other/points/2026-x.json"
        ));
        let s = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai-api-key-AbC123";
        assert!(allows(&p, "secretsmanager:GetSecretValue", s));
        assert!(!allows(
            &p,
            "secretsmanager:GetSecretValue",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai-api-key-prod-AbC123"
        ));
    }

    #[test]
    fn widening_keeps_what_the_emulator_checks() {
        let mut s = scope();
        s.widen = true;
        let p = policy(&[&caps::FUNCTION_READ, &caps::STORE_READ], &s);
        assert!(allows(
            &p,
            "lambda:GetAlias",
            "arn:aws:lambda:us-east-1:1:function:anything"
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::other-bucket/speaker/x"
        ));
    }

    #[test]
    fn a_grant_without_resources_here_is_left_out() {
        let p = policy(&[&caps::ALERTS], &scope());
        assert_eq!(p["Statement"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn glob_matches_like_iam() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(!glob("abc", "abcd"));
    }
}
