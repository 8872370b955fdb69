//! The plan's rewrites and the target checks, without AWS.

use super::*;
use crate::backup::manifest::*;
use crate::store::BlobRef;
use crate::workload::package;

fn policy() -> Policy {
    let text = r#"
[stack]
name = "s"
primary_region = "us-east-1"
template = "t.yaml"
function_name = "f"
[artifacts]
bucket_prefix = "drd-artifacts"
[backup]
bucket = "points"
region = "us-west-2"
recipients = ["age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k"]
"#;
    Policy::parse(text, Path::new("p.toml")).unwrap()
}

fn blob(h: &str) -> BlobRef {
    BlobRef {
        sha256: h.repeat(64 / h.len()),
        size: 1,
    }
}

fn manifest(params: &[(&str, Option<&str>)]) -> Manifest {
    let code_hex = "ab".repeat(32);
    let code_b64 = package::code_sha256_of_hex(&code_hex);
    Manifest {
        schema: MANIFEST_SCHEMA,
        writer: None,
        id: "p1".into(),
        created_at: "2026-11-27T00:00:00Z".into(),
        holder: "t".into(),
        fencing_token: 1,
        scheduled: None,
        stack: StackCapture {
            name: "s".into(),
            region: "us-east-1".into(),
            status: "CREATE_COMPLETE".into(),
            template: blob("1"),
            parameters: params
                .iter()
                .map(|(k, v)| ParameterCapture {
                    key: k.to_string(),
                    value: v.map(str::to_string),
                    redacted: v.is_none(),
                })
                .collect(),
            outputs: Default::default(),
            tags: Default::default(),
            resources: vec![],
        },
        function: FunctionCapture {
            name: "f".into(),
            configuration: blob("2"),
            versions: vec![VersionCapture {
                version: "3".into(),
                code_sha256: code_b64.clone(),
            }],
            aliases: [("live".to_string(), "3".to_string())].into(),
            url: None,
            environments: vec![],
        },
        code: vec![CodeCapture {
            code_sha256: code_b64,
            used_by: vec!["3".into()],
            blob: BlobRef {
                sha256: code_hex,
                size: 10,
            },
        }],
        log_group: None,
        secrets: vec![],
        source: None,
        changes: Default::default(),
        recipients: vec![],
        drill: None,
    }
}

#[test]
fn only_region_bound_values_are_rewritten_and_each_is_reported() {
    let key = package::object_key(&"ab".repeat(32));
    let m = manifest(&[
        ("CodeBucket", Some("drd-artifacts-us-east-1")),
        ("CodeKey", Some(&key)),
        ("ApiKeySecretName", Some("openai-api-key")),
        ("Topic", Some("arn:aws:sns:us-east-1:123456789012:alerts")),
        ("LlmBaseUrl", Some("https://api.openai.com/v1")),
    ]);
    let tpl = "Resources:\n  X:\n    Properties:\n      Bucket: drd-artifacts-us-east-1\n      Arn: !Sub arn:${AWS::Partition}:secretsmanager:${AWS::Region}:x\n      Q: arn:aws:sqs:us-east-1:1:q\n";
    let plan = plan_stack(&m, tpl, &policy(), "us-west-2").unwrap();
    assert_eq!(plan.parameters["CodeBucket"], "drd-artifacts-us-west-2");
    assert_eq!(plan.parameters["CodeKey"], key, "the same content address");
    assert_eq!(plan.parameters["ApiKeySecretName"], "openai-api-key");
    assert_eq!(
        plan.parameters["Topic"],
        "arn:aws:sns:us-west-2:123456789012:alerts"
    );
    assert_eq!(plan.parameters["LlmBaseUrl"], "https://api.openai.com/v1");
    let places: Vec<&str> = plan.rewrites.iter().map(|r| r.place.as_str()).collect();
    assert_eq!(
        places,
        [
            "parameter CodeBucket",
            "parameter Topic",
            "template line 4",
            "template line 6"
        ]
    );
    // Apart from the reported lines, the template is byte for byte the same.
    let changed: Vec<usize> = vec![4, 6];
    for (i, (a, b)) in tpl.lines().zip(plan.body.lines()).enumerate() {
        assert_eq!(a == b, !changed.contains(&(i + 1)), "line {}", i + 1);
    }
    assert_eq!(plan.body.len(), tpl.len(), "same length: region names are");
    // Into the point's own region: nothing changes.
    let same = plan_stack(&m, tpl, &policy(), "us-east-1").unwrap();
    assert!(same.rewrites.is_empty());
    assert_eq!(same.body, tpl);
}

#[test]
fn the_code_key_follows_what_live_ran_and_no_echo_stops_the_plan() {
    let m = manifest(&[("CodeKey", Some("objects/sha256/cd/old"))]);
    let plan = plan_stack(&m, "", &policy(), "us-west-2").unwrap();
    assert_eq!(
        plan.parameters["CodeKey"],
        package::object_key(&"ab".repeat(32))
    );
    assert!(
        plan.rewrites[0].why.contains("version 3"),
        "{:?}",
        plan.rewrites
    );
    let e = plan_stack(
        &manifest(&[("DbPassword", None)]),
        "",
        &policy(),
        "us-west-2",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("DbPassword") && e.contains("NoEcho"), "{e}");
}

#[test]
fn non_regions_are_rejected_as_targets_and_the_primary_is_a_repair() {
    assert!(check_target("us-east-1").is_ok());
    assert_eq!(check_target("mars-1").unwrap_err().exit_code(), 2);
    assert!(check_target("us-west-2").is_ok());
}

/// A rehearsal restores under scratch names: the secrets, the function and exactly the
/// parameters that name them change; the plan then points the stack at the scratch names.
#[test]
fn a_rehearsal_renames_secrets_function_and_the_parameters_that_name_them() {
    let mut m = manifest(&[
        ("FunctionName", Some("f")),
        ("ApiKeySecretName", Some("openai-api-key")),
        ("CodeBucket", Some("drd-artifacts-us-east-1")),
        ("LlmModel", Some("gpt-4o-mini")),
    ]);
    m.secrets = vec![SecretCapture {
        name: "openai-api-key".into(),
        versions: vec![],
    }];
    let s = rehearsal::scratch_manifest(&m);
    assert_eq!(s.function.name, "f-drd-rehearsal");
    assert_eq!(s.secrets[0].name, "openai-api-key-drd-rehearsal");
    let p: std::collections::BTreeMap<&str, Option<&str>> = s
        .stack
        .parameters
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_deref()))
        .collect();
    assert_eq!(p["FunctionName"], Some("f-drd-rehearsal"));
    assert_eq!(p["ApiKeySecretName"], Some("openai-api-key-drd-rehearsal"));
    assert_eq!(p["CodeBucket"], Some("drd-artifacts-us-east-1"));
    assert_eq!(p["LlmModel"], Some("gpt-4o-mini"));
    // The original is untouched, and the scratch policy names the scratch stack and function.
    assert_eq!(m.secrets[0].name, "openai-api-key");
    let sp = rehearsal::scratch_policy(&policy());
    assert_eq!(sp.stack_name(), "s-drd-rehearsal");
    assert_eq!(sp.function_name(), "f-drd-rehearsal");
    let plan = plan_stack(&s, "Resources: {}\n", &sp, "us-west-2").unwrap();
    assert_eq!(plan.parameters["FunctionName"], "f-drd-rehearsal");
    assert_eq!(plan.parameters["CodeBucket"], "drd-artifacts-us-west-2");
}
