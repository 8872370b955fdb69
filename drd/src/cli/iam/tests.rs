//! The declarations checked against the CLI, the template, the docs and policy simulation.

use super::*;
use clap::CommandFactory;

/// Every way to run drd: each subcommand path, and a parent that runs without one.
fn chains(c: &clap::Command, prefix: &str, out: &mut Vec<String>) {
    let subs: Vec<&clap::Command> = c
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if !prefix.is_empty() && (subs.is_empty() || !c.is_subcommand_required_set()) {
        out.push(prefix.to_string());
    }
    for s in subs {
        let p = if prefix.is_empty() {
            s.get_name().to_string()
        } else {
            format!("{prefix} {}", s.get_name())
        };
        chains(s, &p, out);
    }
}

#[test]
fn every_command_is_declared_or_known_to_call_nothing() {
    let mut all = vec![];
    chains(&Cli::command(), "", &mut all);
    let undeclared: Vec<&String> = all
        .iter()
        .filter(|c| {
            command_caps(c).is_none()
                && !NO_AWS
                    .iter()
                    .any(|n| *c == n || c.starts_with(&format!("{n} ")))
        })
        .collect();
    assert!(
        undeclared.is_empty(),
        "commands without a declaration in cli/iam.rs COMMANDS: {undeclared:?}"
    );
    assert!(all.iter().any(|c| c == "points show") && all.iter().any(|c| c == "deploy"));
}

#[test]
fn the_templates_function_role_grants_exactly_what_the_classifier_declares() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../classifier/stack.yaml");
    let doc: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let role = &doc["Resources"]["FunctionRole"]["Properties"];
    let mut granted = BTreeSet::new();
    for p in role["Policies"].as_sequence().expect("inline policies") {
        for st in p["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            assert_eq!(st["Effect"].as_str(), Some("Allow"));
            match &st["Action"] {
                yaml_serde::Value::String(a) => {
                    granted.insert(a.clone());
                }
                yaml_serde::Value::Sequence(v) => {
                    granted.extend(v.iter().filter_map(|a| a.as_str().map(str::to_string)));
                }
                other => panic!("an Action that is neither a string nor a list: {other:?}"),
            }
            // Scoped to the API-key secret, as the generated role is.
            let res = yaml_serde::to_string(&st["Resource"]).unwrap();
            assert!(res.contains(":secret:${ApiKeySecretName}-"), "{res}");
        }
    }
    assert_eq!(
        granted,
        caps::actions(FUNCTION_ROLE),
        "classifier/stack.yaml FunctionRole"
    );
    let managed = yaml_serde::to_string(&role["ManagedPolicyArns"]).unwrap();
    assert_eq!(managed.matches("arn:").count(), 1, "{managed}");
    assert!(
        managed.contains("service-role/AWSLambdaBasicExecutionRole"),
        "{managed}"
    );
    // The generated role, for the same names, allows the key and nothing else.
    let policy = Policy::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/classifier.toml"
    )))
    .unwrap();
    let scope = scope_of(&policy, Some("123456789012"), false);
    let doc = render::policy(FUNCTION_ROLE, &scope);
    let key = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf",
        policy.api_key_secret()
    );
    assert!(render::allows(&doc, "secretsmanager:GetSecretValue", &key));
    assert!(!render::allows(
        &doc,
        "secretsmanager:GetSecretValue",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:github-token-AbCdEf"
    ));
}

/// Policy simulation: each command's generated policy allows the ARNs it touches in this
/// deployment and not their neighbours (another stack's, another bucket's, a point's delete
/// outside prune). moto authorizes most services against `*`, so this is where scoping is
/// checked (docs/emulator-gaps.md#iam).
#[test]
fn each_command_is_scoped_to_its_own_resources() {
    let policy = Policy::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/classifier.toml"
    )))
    .unwrap();
    let acct = "123456789012";
    let (stack, func) = (policy.stack_name(), policy.function_name());
    let bucket = policy.backup.bucket.get_ref().clone();
    let key = policy.api_key_secret().to_string();
    let fun = |f: &str| format!("arn:aws:lambda:us-west-2:{acct}:function:{f}");
    let obj = |b: &str, k: &str| format!("arn:aws:s3:::{b}/{k}");
    let cfn = |s: &str| format!("arn:aws:cloudformation:us-east-1:{acct}:stack/{s}/0c1d-22");
    let sec = |n: &str| format!("arn:aws:secretsmanager:us-east-1:{acct}:secret:{n}-AbCdEf");
    let role = |r: &str| format!("arn:aws:iam::{acct}:role/{r}");
    // (command, action, allowed ARN, refused ARN)
    let cases: Vec<(&str, &str, String, String)> = vec![
        (
            "backup",
            "s3:PutObject",
            obj(&bucket, &format!("{stack}/points/p.json")),
            obj(&bucket, "other/points/p.json"),
        ),
        (
            "backup",
            "s3:PutObject",
            obj(&bucket, &format!("{stack}/objects/sha256/ab")),
            obj(
                "someone-elses-bucket",
                &format!("{stack}/objects/sha256/ab"),
            ),
        ),
        (
            "backup",
            "s3:DeleteObject",
            obj(&bucket, &format!("{stack}/locks/store")),
            obj(&bucket, &format!("{stack}/points/p.json")),
        ),
        (
            "backup",
            "s3:DeleteObject",
            obj(&bucket, &format!("{stack}/index/seg-1.json")),
            obj(&bucket, &format!("{stack}/objects/sha256/ab")),
        ),
        (
            "backup",
            "secretsmanager:GetSecretValue",
            sec(&key),
            sec("payroll-db-password"),
        ),
        (
            "backup",
            "cloudformation:GetTemplate",
            cfn(stack),
            cfn("payroll"),
        ),
        (
            "backup",
            "lambda:ListVersionsByFunction",
            fun(func),
            fun("payroll-fn"),
        ),
        (
            "rollback",
            "lambda:UpdateAlias",
            format!("{}:live", fun(func)),
            format!("{}:live", fun("payroll-fn")),
        ),
        (
            "deploy",
            "cloudformation:UpdateStack",
            cfn(stack),
            cfn("payroll"),
        ),
        (
            "deploy",
            "iam:PassRole",
            role(&format!("{stack}-FunctionRole-1AB")),
            role("OrganizationAccountAccessRole"),
        ),
        ("deploy", "lambda:CreateAlias", fun(func), fun("payroll-fn")),
        (
            "restore",
            "secretsmanager:CreateSecret",
            sec(&key),
            sec("payroll-db-password"),
        ),
        (
            "restore",
            "cloudformation:CreateStack",
            cfn(stack),
            cfn("payroll"),
        ),
        (
            "rotate",
            "secretsmanager:PutSecretValue",
            sec(&key),
            sec("payroll-db-password"),
        ),
        (
            "prune",
            "s3:DeleteObject",
            obj(&bucket, &format!("{stack}/points/p.json")),
            obj(&bucket, "other/points/p.json"),
        ),
    ];
    let scope = scope_of(&policy, Some(acct), false);
    for (cmd, action, yes, no) in &cases {
        let doc = render::policy(&command_caps(cmd).unwrap(), &scope);
        assert!(
            render::allows(&doc, action, yes),
            "{cmd}: {action} on {yes}\n{doc:#}"
        );
        assert!(
            !render::allows(&doc, action, no),
            "{cmd}: {action} on {no} must be refused"
        );
    }
    // No command but prune deletes a point or a blob.
    for (c, _, _) in COMMANDS.iter().filter(|(c, _, _)| *c != "prune") {
        let doc = render::policy(&command_caps(c).unwrap(), &scope);
        for k in ["points/p.json", "objects/sha256/ab"] {
            let arn = obj(&bucket, &format!("{stack}/{k}"));
            assert!(
                !render::allows(&doc, "s3:DeleteObject", &arn),
                "{c} may delete {arn}"
            );
        }
    }
}

#[test]
fn the_docs_table_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/permissions.md");
    let text = std::fs::read_to_string(path).unwrap();
    let (begin, end) = (
        "<!-- drd iam table: begin -->\n",
        "<!-- drd iam table: end -->",
    );
    let i = text
        .find(begin)
        .expect("docs/permissions.md has the generated table's markers")
        + begin.len();
    let j = text.find(end).unwrap();
    assert!(
        text[i..j] == table(),
        "docs/permissions.md is not what the declarations generate: run `./scripts/permissions-table` (or paste `drd iam table` between the markers)"
    );
}
