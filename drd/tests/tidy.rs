//! Tidy: tests that keep the house true (after rust-analyzer's `xtask/src/tidy.rs`).
//!
//! - The layering stated once, in ARCHITECTURE.md's `layers` block, holds: a module of
//!   `drd/src` uses (`crate::x`, `super::...::x`) only modules on lower lines, never one on its
//!   own line or above, so no circle can form; every module has a line.
//! - No `.rs` file under `drd/src` is longer than 700 lines (functions over 150 lines are
//!   caught by clippy's `too_many_lines`, configured in `clippy.toml`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 700;

/// Layers from the top (index 0) down, as ARCHITECTURE.md's ```` ```layers ```` block states.
fn parse_layers(doc: &str) -> Result<Vec<Vec<String>>, String> {
    let start = doc
        .find("```layers\n")
        .ok_or("ARCHITECTURE.md has no ```layers block")?
        + "```layers\n".len();
    let end = doc[start..]
        .find("```")
        .ok_or("the ```layers block is not closed")?;
    let layers: Vec<Vec<String>> = doc[start..start + end]
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect();
    if layers.is_empty() {
        return Err("the ```layers block is empty".into());
    }
    Ok(layers)
}

/// Drop comments (line and block) and string literals, which may mention `crate::x` in prose.
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n' (lifetimes have no closing quote).
            let from = if b[i + 1] == b'\\' { i + 3 } else { i + 2 };
            let close = b[from..].iter().position(|&c| c == b'\'').map(|p| from + p);
            i = close.map(|c| c + 1).unwrap_or(i + 1);
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The top-level modules a file uses. `module` is the file's module path from the crate root
/// (e.g. `["backup", "verify"]`), so `super::` chains can be resolved.
fn uses(module: &[String], src: &str) -> BTreeSet<String> {
    let code = code_only(src);
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(p) = rest.find("crate::") {
        let before = rest[..p].chars().last();
        let after = &rest[p + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `drd_crate::`
        }
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        if let Some(id) = ident_at(&group[i..]) {
                            found.insert(id.to_string());
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else if let Some(id) = ident_at(after) {
            found.insert(id.to_string());
        }
    }
    // `super::super::x` from a nested file reaches the crate root's `x`.
    let mut rest = code.as_str();
    while let Some(p) = rest.find("super::") {
        let before = rest[..p].chars().last();
        rest = &rest[p..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            rest = &rest["super::".len()..];
            continue;
        }
        let mut depth = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            depth += 1;
            rest = r;
        }
        // A file's own module is `module`; its parent is one `super` up.
        if depth >= module.len() {
            if let Some(id) = ident_at(rest) {
                found.insert(id.to_string());
            }
        }
    }
    found.retain(|m| m != "self" && m != "super");
    found
}

#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    from: String,
    to: String,
    why: String,
}

/// Check every file against the layers: `files` maps a path under `src/` to its source.
fn check(layers: &[Vec<String>], files: &BTreeMap<String, String>) -> Vec<Violation> {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut out = vec![];
    for (path, src) in files {
        let module = module_path(path);
        let Some(top) = module.first().cloned() else {
            continue; // lib.rs and main.rs declare and call; they are the crate root
        };
        let Some(&from) = rank.get(top.as_str()) else {
            out.push(Violation {
                file: path.clone(),
                from: top.clone(),
                to: String::new(),
                why: format!(
                    "module `{top}` has no line in ARCHITECTURE.md's layers block: add it there"
                ),
            });
            continue;
        };
        for used in uses(&module, src) {
            if used == top {
                continue;
            }
            match rank.get(used.as_str()) {
                // Not a module of ours (e.g. `crate::Result`, re-exported at the root).
                None => {}
                Some(&to) if to > from => {}
                Some(&to) => out.push(Violation {
                    file: path.clone(),
                    from: top.clone(),
                    to: used.clone(),
                    why: if to == from {
                        format!("`{top}` and `{used}` share a layer and may not use each other")
                    } else {
                        format!("`{top}` uses `{used}`, which is a layer above it")
                    },
                }),
            }
        }
    }
    out
}

/// `backup/verify.rs` -> ["backup", "verify"]; `backup/mod.rs` -> ["backup"]; `lib.rs` -> [].
fn module_path(path: &str) -> Vec<String> {
    let p = path.trim_end_matches(".rs");
    let mut parts: Vec<String> = p.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

fn src_files(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn drd_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn architecture() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the workspace root")
}

#[test]
fn the_layering_in_architecture_md_holds() {
    let layers = parse_layers(&architecture()).unwrap();
    let files = src_files(&drd_src());
    // Every top-level module of the crate has a line (so a new one must be placed).
    let lib = &files["lib.rs"];
    for line in code_only(lib).lines() {
        if let Some(m) = line.trim().strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                layers.iter().flatten().any(|l| l == m),
                "module `{m}` (lib.rs) has no line in ARCHITECTURE.md's layers block"
            );
        }
    }
    let v = check(&layers, &files);
    assert!(
        v.is_empty(),
        "layering violations (see ARCHITECTURE.md, `layers`):\n{}",
        v.iter()
            .map(|v| format!("  drd/src/{}: {}", v.file, v.why))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn no_source_file_is_over_700_lines() {
    let long: Vec<String> = src_files(&drd_src())
        .into_iter()
        .filter(|(_, s)| s.lines().count() > MAX_FILE_LINES)
        .map(|(p, s)| format!("drd/src/{p}: {} lines", s.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines (split them along their steps):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn clippy_caps_function_length_at_150_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let clippy = std::fs::read_to_string(root.join("clippy.toml")).expect("clippy.toml");
    assert!(
        clippy.contains("too-many-lines-threshold = 150"),
        "{clippy}"
    );
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains("too_many_lines = \"warn\""),
        "the workspace lints must enable clippy::too_many_lines (CI runs clippy with -D warnings)"
    );
}

// The checker's own tests: it must fail on what it exists to catch.

fn layers(spec: &[&str]) -> Vec<Vec<String>> {
    spec.iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn files(spec: &[(&str, &str)]) -> BTreeMap<String, String> {
    spec.iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

#[test]
fn checker_rejects_a_deliberate_upward_import() {
    let l = layers(&["cli", "actions", "store", "error"]);
    // Downward imports pass.
    let ok = files(&[
        (
            "cli/mod.rs",
            "use crate::actions::run;\nuse crate::{store::Store, error};",
        ),
        ("store/mod.rs", "use crate::error::Error;"),
    ]);
    assert_eq!(check(&l, &ok), vec![]);
    // `store` reaching up to `actions` is caught, in every spelling.
    for src in [
        "use crate::actions::Outputs;",
        "use crate::{error::Error, actions::Outputs};",
        "fn f() { crate::actions::run(); }",
        "use crate::{error::{self, Error}, actions};",
    ] {
        let v = check(&l, &files(&[("store/mod.rs", src)]));
        assert_eq!(v.len(), 1, "{src}: {v:?}");
        assert_eq!((v[0].from.as_str(), v[0].to.as_str()), ("store", "actions"));
    }
    // From a nested file, `super::super::x` is the crate's `x`.
    let v = check(
        &l,
        &files(&[("store/lease/inner.rs", "use super::super::super::cli::Cli;")]),
    );
    assert_eq!(v.len(), 1, "{v:?}");
    let v = check(
        &l,
        &files(&[("store/lease.rs", "use super::super::cli::Cli;")]),
    );
    assert_eq!(v.len(), 1, "{v:?}");
    // `super::x` from `store/lease.rs` is the store's own `x`: fine.
    assert_eq!(
        check(&l, &files(&[("store/lease.rs", "use super::Store;")])),
        vec![]
    );
}

#[test]
fn checker_rejects_a_circle_within_a_layer_and_an_unplaced_module() {
    let l = layers(&["cli", "deploy restore", "error"]);
    let v = check(&l, &files(&[("restore.rs", "use crate::deploy::x;")]));
    assert_eq!(v.len(), 1);
    assert!(v[0].why.contains("share a layer"), "{}", v[0].why);
    let v = check(&l, &files(&[("drill/mod.rs", "use crate::error::Error;")]));
    assert_eq!(v.len(), 1);
    assert!(v[0].why.contains("has no line"), "{}", v[0].why);
}

#[test]
fn checker_ignores_prose_and_strings() {
    let l = layers(&["cli", "store"]);
    let src = "//! wraps `crate::cli`\n/* crate::cli */\nfn f() { let s = \"crate::cli::x\"; let c = '\"'; }";
    assert_eq!(check(&l, &files(&[("store/mod.rs", src)])), vec![]);
}

#[test]
fn the_layers_block_parses_with_comments() {
    let l =
        parse_layers("x\n```layers\ncli        # the top\ndeploy restore\n\nerror\n```\n").unwrap();
    assert_eq!(l, layers(&["cli", "deploy restore", "error"]));
    assert!(parse_layers("no block").is_err());
}
