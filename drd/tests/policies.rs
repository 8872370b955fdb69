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
