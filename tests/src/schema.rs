//! Every JSON document a test gets from `drd --output json` is checked against its schema in
//! `docs/schemas/` with a real JSON Schema validator (Python's `jsonschema`, draft 2020-12,
//! installed into `.venv` by `scripts/setup`).

use std::io::Write;
use std::path::PathBuf;

const GROUPS: &[(&str, &[&str])] = &[
    ("ci", &["install"]),
    ("mirror", &["push"]),
    ("drill", &["list", "validate", "run"]),
    ("points", &["list", "show", "reindex"]),
    ("runbook", &["list", "show", "run", "status", "approve"]),
    (
        "sandbox",
        &[
            "up",
            "env",
            "status",
            "fail-region",
            "restore-region",
            "github",
            "faults",
            "ci",
        ],
    ),
];

const SINGLE: &[&str] = &[
    "validate",
    "check",
    "deploy",
    "status",
    "backup",
    "prune",
    "pin",
    "unlock",
    "schedule",
    "verify",
    "rollback",
    "rotate",
    "restore",
    "failback",
    "failover-ci",
    "mirror",
];

/// Whether these arguments (and environment) ask for JSON output.
pub fn wants_json(args: &[&str], env: &[(&str, &str)]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.contains(&"--output=json")
        || env.iter().any(|(k, v)| *k == "DRD_OUTPUT" && *v == "json")
}

/// The schema (file stem in docs/schemas) of the document these arguments print, if known.
pub fn schema_for(args: &[&str]) -> Option<&'static str> {
    let has = |f: &str| args.contains(&f);
    let dry = has("--dry-run");
    let pos = args
        .iter()
        .position(|a| SINGLE.contains(a) || GROUPS.iter().any(|(g, _)| g == a))?;
    let top = args[pos];
    let rest = &args[pos + 1..];
    let sub = GROUPS
        .iter()
        .find(|(g, _)| *g == top)
        .and_then(|(_, subs)| rest.iter().find(|a| subs.contains(a)).copied());
    Some(match (top, sub) {
        ("ci", Some("install")) => "ci-install",
        ("mirror", _) => "mirror",
        ("points", Some("list")) => "points-list",
        ("points", Some("show")) => "points-show",
        ("points", Some("reindex")) => "points-reindex",
        ("drill", Some("run")) => "drill-report",
        ("drill", Some("list")) => "drill-list",
        ("drill", Some("validate")) => "drill-validate",
        ("runbook", Some("list")) => "runbook-list",
        ("runbook", Some("show")) => "runbook-show",
        ("runbook", Some("approve")) => "runbook-approve",
        ("runbook", Some("run")) if dry => "runbook-plan",
        ("runbook", Some("run")) => "runbook-run",
        ("runbook", Some("status")) => {
            let after = rest.iter().skip_while(|a| **a != "status").skip(1);
            let mut skip_value = false;
            let mut run = false;
            for a in after {
                if skip_value {
                    skip_value = false;
                } else if a.starts_with('-') {
                    skip_value = !a.contains('=') && *a != "-v";
                } else {
                    run = true;
                }
            }
            if run {
                "runbook-status"
            } else {
                "runbook-status-list"
            }
        }
        ("sandbox", Some("up" | "env")) => "sandbox-env",
        ("sandbox", Some("status")) => "sandbox-status",
        ("sandbox", Some("fail-region" | "restore-region")) => "sandbox-region",
        ("sandbox", Some("github")) => "sandbox-github",
        ("sandbox", Some("faults")) => "sandbox-faults",
        ("sandbox", Some("ci")) => "sandbox-ci-flaky",
        ("rollback" | "rotate" | "restore" | "failback" | "failover-ci", _) if dry => {
            "runbook-plan"
        }
        ("failback", _) => "restore",
        ("verify", _) if has("--index") => "verify-index",
        ("verify", _) if has("--mirror") => "verify-mirror",
        (t, None) if SINGLE.contains(&t) => SINGLE.iter().find(|s| **s == t).copied()?,
        _ => return None,
    })
}

fn schema_path(name: &str) -> PathBuf {
    crate::root().join(format!("docs/schemas/{name}.schema.json"))
}

// Exit 1: the document does not match; 3: the schema itself (or the validator) is broken.
const VALIDATE: &str = r#"
import json, sys
try:
    from jsonschema import Draft202012Validator
    schema = json.load(open(sys.argv[1]))
    Draft202012Validator.check_schema(schema)
except Exception as e:
    print("the schema or the validator is broken:", e)
    sys.exit(3)
doc = json.load(sys.stdin)
errs = sorted(Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
for e in errs[:8]:
    print("/".join(map(str, e.absolute_path)) or "(root)", ":", e.message[:300])
sys.exit(1 if errs else 0)
"#;

/// Validate `doc` against `docs/schemas/NAME.schema.json`; the validator's findings on failure.
pub fn check(name: &str, doc: &str) -> Result<(), String> {
    let path = schema_path(name);
    if !path.exists() {
        return Err(format!("no schema {} for this document", path.display()));
    }
    let mut c = std::process::Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with jsonschema (scripts/setup installs it into .venv)");
    c.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// After a drd run: when it printed a JSON document, it must match its schema.
pub fn assert_output(args: &[&str], env: &[(&str, &str)], out: &std::process::Output) {
    if !wants_json(args, env) {
        return;
    }
    let Some(name) = schema_for(args) else { return };
    let text = String::from_utf8_lossy(&out.stdout);
    if serde_json::from_str::<serde_json::Value>(&text).is_err() {
        // An error before any result prints no document; a success must print one, alone.
        assert!(
            !out.status.success(),
            "drd {args:?} succeeded with --output json but stdout is not one JSON document: {text}"
        );
        return;
    }
    if let Err(e) = check(name, &text) {
        panic!("drd {args:?} printed JSON that does not match docs/schemas/{name}.schema.json:\n{e}\ndocument: {}", text.chars().take(3000).collect::<String>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_their_schemas() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--policy", "p.toml", "--output", "json", "status"],
                "status",
            ),
            (
                &["--output", "json", "points", "list", "--last", "3"],
                "points-list",
            ),
            (
                &["--output", "json", "runbook", "status"],
                "runbook-status-list",
            ),
            (
                &["--output", "json", "runbook", "status", "r-1"],
                "runbook-status",
            ),
            (
                &[
                    "--policy",
                    "x",
                    "runbook",
                    "run",
                    "lambda-rollback",
                    "--dry-run",
                ],
                "runbook-plan",
            ),
            (
                &["restore", "--region", "us-west-2", "--dry-run"],
                "runbook-plan",
            ),
            (&["failback", "--identity", "k"], "restore"),
            (&["verify", "--index"], "verify-index"),
            (&["sandbox", "fail-region", "us-east-1"], "sandbox-region"),
            (&["mirror", "push", "--from", "dir"], "mirror"),
        ];
        for (args, want) in cases {
            assert_eq!(schema_for(args), Some(*want), "{args:?}");
        }
        assert!(wants_json(&["--output", "json", "status"], &[]));
        assert!(!wants_json(&["status"], &[]));
    }

    /// Every schema is itself a valid draft 2020-12 schema, and the index lists it.
    #[test]
    fn every_schema_is_valid_and_indexed() {
        let dir = crate::root().join("docs/schemas");
        let index = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let Some(stem) = p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .strip_suffix(".schema.json")
            else {
                continue;
            };
            n += 1;
            assert!(
                index.contains(&format!("({stem}.schema.json)")),
                "{stem} is not in docs/schemas/README.md"
            );
            // A document that is valid JSON but surely not this one must be refused (the
            // schema constrains something).
            assert!(
                check(stem, "\"not a document\"").is_err(),
                "{stem} accepts anything"
            );
        }
        assert!(n >= 30, "{n} schemas");
    }
}
