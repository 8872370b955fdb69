//! Every shipped policy parses and validates, and the template it names passes the offline checks.

use drd::policy::Policy;
use drd::workload::template::Template;
use std::path::Path;

#[test]
fn every_shipped_policy_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let policy = Policy::load(&p).unwrap_or_else(|e| panic!("{e}"));
            Template::load(&policy.template_path()).unwrap_or_else(|e| panic!("{e}"));
            assert!(policy.source_path().join("Cargo.toml").exists());
            n += 1;
        }
    }
    assert!(n >= 1, "no policy found in {}", dir.display());
}

/// The classifier's own CI policy (`drd --policy ci/drd.toml deploy` from its repository root)
/// names the same stack, function and store as the shipped example, with paths relative to it.
#[test]
fn the_classifier_ci_policy_is_valid_and_matches_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ci = Policy::load(&root.join("classifier/ci/drd.toml")).unwrap_or_else(|e| panic!("{e}"));
    Template::load(&ci.template_path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(ci.source_path().join("Cargo.toml").exists());
    let example =
        Policy::load(&root.join("policies/classifier.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ci.stack.name.get_ref(), example.stack.name.get_ref());
    assert_eq!(
        ci.stack.function_name.get_ref(),
        example.stack.function_name.get_ref()
    );
    assert_eq!(ci.backup.bucket.get_ref(), example.backup.bucket.get_ref());
    assert_eq!(
        ci.artifacts.bucket_prefix.get_ref(),
        example.artifacts.bucket_prefix.get_ref()
    );
}

/// The classifier's own `Cargo.lock` (its repository's view, used by its CI) pins every package
/// at the version drd's workspace builds and tests: the two locks never drift apart.
#[test]
fn the_classifier_lock_agrees_with_the_workspace_lock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let packages = |p: &Path| -> std::collections::BTreeSet<(String, String)> {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let doc: toml::Value = toml::from_str(&text).unwrap();
        doc["package"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["version"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let own = packages(&root.join("classifier/Cargo.lock"));
    let workspace = packages(&root.join("Cargo.lock"));
    let drifted: Vec<_> = own.difference(&workspace).collect();
    assert!(own.len() > 100, "{} packages", own.len());
    assert!(
        drifted.is_empty(),
        "classifier/Cargo.lock pins versions the workspace does not build: {drifted:?} \
         (regenerate it: copy Cargo.lock into a copy of classifier/ and run cargo metadata --offline there)"
    );
}

/// Both CI definitions deploy through the epoch fence: the GitHub workflow's deploy step passes
/// `--ci-provider github`, the CodePipeline deploy buildspec `--ci-provider codepipeline`, so a
/// run of the provider that does not hold the CI epoch changes nothing (`drd failover-ci`).
#[test]
fn both_ci_definitions_name_their_provider_to_drd_deploy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| -> yaml_serde::Value {
        let text = std::fs::read_to_string(root.join(p)).unwrap();
        yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let wf = read("classifier/.github/workflows/deploy.yml");
    let steps = wf["jobs"]["deploy"]["steps"].as_sequence().expect("steps");
    let deploy = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("deploy"))
        .expect("a step with id deploy");
    let run = deploy["run"].as_str().unwrap();
    assert!(run.contains("deploy --commit \"$GITHUB_SHA\""), "{run}");
    assert!(run.contains("--ci-provider github"), "{run}");

    let bs = read("classifier/ci/buildspec-deploy.yml");
    let cmds = bs["phases"]["build"]["commands"].as_sequence().unwrap();
    let deploys: Vec<&str> = cmds
        .iter()
        .filter_map(|c| c.as_str())
        .filter(|c| c.contains(" deploy "))
        .collect();
    assert_eq!(deploys.len(), 1, "{cmds:?}");
    assert!(
        deploys[0].contains("--ci-provider codepipeline"),
        "{}",
        deploys[0]
    );
    assert!(
        deploys[0].contains("--commit \"$COMMIT_SHA\""),
        "{}",
        deploys[0]
    );
}
