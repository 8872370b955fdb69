use super::*;
use crate::runbook::exec::{resolve, resolve_inputs};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runbooks-broken")
}

#[test]
fn shipped_runbooks_parse() {
    let all = load_all(None).unwrap();
    assert!(all.contains_key("lambda-rollback"));
    // The files in runbooks/ are the same ones (the directory overrides the built-ins).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
    let from_dir = load_all(Some(&dir)).unwrap();
    assert_eq!(from_dir.len(), all.len());
}

/// Every broken runbook in the corpus gives one line naming the file, the marked line, the
/// expected message and a fix.
#[test]
fn broken_runbooks_give_one_line_with_file_line_and_fix() {
    let files = runbook_files(&corpus_dir()).unwrap();
    assert!(files.len() >= 20, "the corpus is missing");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` header", path.display()));
        let line = text
            .lines()
            .position(|l| l.contains("# <- error"))
            .unwrap_or_else(|| panic!("{} marks no line", path.display()))
            + 1;
        let shown = path.display().to_string();
        let err = Runbook::parse(&text, &shown)
            .err()
            .unwrap_or_else(|| panic!("{shown} was accepted"));
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{shown}: more than one line: {msg}");
        assert!(
            msg.starts_with(&format!("{shown}:{line}:")),
            "{shown}: expected line {line}: {msg}"
        );
        assert!(
            msg.contains(expect),
            "{shown}: expected {expect:?} in {msg}"
        );
        assert!(msg.contains("(fix: "), "{shown}: no fix in {msg}");
        // And through the file loader, as `drd validate` sees it.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&path, dir.path().join("x.toml")).unwrap();
        assert!(load_all(Some(dir.path())).is_err(), "{shown}");
    }
}

#[test]
fn a_runbook_file_must_be_named_after_its_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let text = SHIPPED[0].1;
    std::fs::write(dir.path().join("other.toml"), text).unwrap();
    let e = load_all(Some(dir.path())).unwrap_err().to_string();
    assert!(e.contains("rename the file"), "{e}");
}

/// `runbooks/NAME.md` is the rendering of `runbooks/NAME.toml`. Regenerate with
/// `DRD_BLESS=1 cargo test -p drd runbook` after changing a runbook.
#[test]
fn rendered_on_call_docs_are_in_sync() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
    for (name, _) in SHIPPED {
        let rb = load(Some(&dir), name).unwrap();
        let want = render::markdown(&rb) + "\n";
        let path = dir.join(format!("{name}.md"));
        if std::env::var_os("DRD_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date: run `DRD_BLESS=1 cargo test -p drd rendered_on_call_docs` (or \
             `drd runbook show {name} --format md > {}`)",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn references_resolve_from_inputs_policy_and_earlier_outputs() {
    let inputs = BTreeMap::from([("to".to_string(), "2".to_string())]);
    let policy = BTreeMap::from([("function".to_string(), "f".to_string())]);
    let outputs = BTreeMap::from([(
        "observe".to_string(),
        BTreeMap::from([("live_version".to_string(), "3".to_string())]),
    )]);
    assert_eq!(
        resolve(
            "${policy.function}:${steps.observe.live_version}->${input.to}",
            &inputs,
            &policy,
            &outputs
        )
        .unwrap(),
        "f:3->2"
    );
    assert_eq!(
        resolve("${steps.choose.target}", &inputs, &policy, &outputs).unwrap_err(),
        "steps.choose.target"
    );
    assert!(parse_refs("${steps.x}").is_err());
    assert!(parse_refs("${input.a").is_err());
}

#[test]
fn inputs_are_checked_and_defaulted() {
    let rb = load(None, "lambda-rollback").unwrap();
    let r = resolve_inputs(&rb, &BTreeMap::new()).unwrap();
    assert_eq!(r["force"], "false");
    assert_eq!(r["to"], "");
    let e = resolve_inputs(&rb, &BTreeMap::from([("tо".into(), "1".into())])).unwrap_err();
    assert!(e.to_string().contains("has no input"), "{e}");
}

#[test]
fn the_plan_shows_observed_values_and_counts_writes() {
    let rb = load(None, "lambda-rollback").unwrap();
    let inputs = resolve_inputs(&rb, &BTreeMap::new()).unwrap();
    let policy = BTreeMap::new();
    let observed = BTreeMap::from([
        (
            "observe".to_string(),
            BTreeMap::from([("live_version".to_string(), "3".to_string())]),
        ),
        (
            "choose".to_string(),
            BTreeMap::from([
                ("target".to_string(), "2".to_string()),
                ("code_sha256".to_string(), "abc".to_string()),
            ]),
        ),
    ]);
    let p = plan::plan(
        &rb,
        "us-east-1",
        &inputs,
        &policy,
        &plan::Known {
            observed,
            ..Default::default()
        },
        None,
    );
    assert_eq!(p.writes, 1);
    let mv = p.steps.iter().find(|s| s.id == "move-alias").unwrap();
    assert_eq!(mv.args["version"], "2");
    assert_eq!(mv.description, "move alias live to version 2");
    let back = p.steps.iter().find(|s| s.id == "move-back").unwrap();
    assert_eq!(back.args["version"], "3");
    let text = render::plan_text(&p);
    assert!(
        text.contains("WRITE  [move-alias] move alias live to version 2"),
        "{text}"
    );
    assert!(text.contains("nothing was written"), "{text}");
    // Unobserved values stay visible as placeholders.
    let p = plan::plan(
        &rb,
        "us-east-1",
        &inputs,
        &policy,
        &plan::Known::default(),
        None,
    );
    let mv = p.steps.iter().find(|s| s.id == "move-alias").unwrap();
    assert_eq!(mv.args["version"], "<steps.choose.target>");
}
