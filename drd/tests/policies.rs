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
