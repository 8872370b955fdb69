//! Runbooks: the recovery procedures as data (`runbooks/*.toml`).
//!
//! A runbook is an ordered list of steps. Each step names a built-in action (`crate::actions`)
//! with arguments, a check that proves the action's effect, a timeout, retries with backoff and
//! what to do on failure (`stop`, `continue`, or `compensate:<step>` which runs a compensation
//! step). Arguments are strings that may refer to `${input.NAME}`, `${policy.KEY}` and the
//! outputs of earlier steps, `${steps.ID.OUTPUT}`.
//!
//! Parsing is strict and every mistake is reported as one line with file, line, field and a fix:
//! unknown actions, checks or arguments, missing arguments, references to later steps (a cycle),
//! compensation chains that loop, and compensation steps nothing can reach.
//!
//! The planner (`plan`) turns a runbook, inputs and observed state into a printable plan without
//! calling AWS; the executor (`exec`) runs it with a journal (`journal`) so a crashed run resumes.

pub mod exec;
pub mod journal;
pub mod plan;
mod readback;
pub mod render;
mod resolve;
mod validate;

use crate::actions::{self, ActionSpec};
use crate::error::ConfigError;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The runbooks shipped with drd, embedded so the binary works from any directory. A file of the
/// same name in the runbook directory (`--runbooks`) takes precedence.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "lambda-rollback",
        include_str!("../../../runbooks/lambda-rollback.toml"),
    ),
    (
        "secret-rotation",
        include_str!("../../../runbooks/secret-rotation.toml"),
    ),
    (
        "region-redeploy",
        include_str!("../../../runbooks/region-redeploy.toml"),
    ),
    (
        "pipeline-failure",
        include_str!("../../../runbooks/pipeline-failure.toml"),
    ),
    ("failback", include_str!("../../../runbooks/failback.toml")),
    (
        "ci-failover",
        include_str!("../../../runbooks/ci-failover.toml"),
    ),
    (
        "ci-failback",
        include_str!("../../../runbooks/ci-failback.toml"),
    ),
];

/// Keys `${policy.KEY}` may name.
pub const POLICY_KEYS: &[&str] = &[
    "stack",
    "function",
    "region",
    "primary_region",
    "api_key_secret",
    "pipeline",
    "pipeline_max_retries",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    name: Spanned<String>,
    title: String,
    /// The seed's procedure number, when the runbook implements one.
    #[serde(default)]
    procedure: Option<u32>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<RawInput>>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    description: String,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    title: String,
    action: Spanned<String>,
    #[serde(default)]
    args: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    check: Option<Spanned<String>>,
    #[serde(default)]
    check_args: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    retries: Option<Spanned<u32>>,
    #[serde(default)]
    backoff: Option<Spanned<String>>,
    #[serde(default)]
    on_failure: Option<Spanned<String>>,
    /// Runs only as another step's compensation.
    #[serde(default)]
    compensation: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Runbook {
    pub name: String,
    pub title: String,
    pub procedure: Option<u32>,
    pub summary: String,
    pub inputs: BTreeMap<String, Input>,
    pub steps: Vec<Step>,
    /// Where it was read from (a path, or `built-in`).
    pub source: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Input {
    pub description: String,
    pub default: Option<String>,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "step")]
pub enum OnFailure {
    Stop,
    Continue,
    Compensate(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub id: String,
    pub title: String,
    pub action: String,
    pub args: BTreeMap<String, String>,
    pub check: Option<String>,
    pub check_args: BTreeMap<String, String>,
    #[serde(with = "humantime_serde_ms")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "humantime_serde_ms")]
    pub backoff: Duration,
    pub on_failure: OnFailure,
    pub compensation: bool,
}

mod humantime_serde_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_RETRIES: u32 = 10;
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A `${...}` reference inside an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Input(String),
    Policy(String),
    Step(String, String),
}

/// Split an argument into literal text and references. `Err` describes a malformed reference.
pub fn parse_refs(value: &str) -> Result<Vec<Result<String, Ref>>, String> {
    let mut out = vec![];
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        if i > 0 {
            out.push(Ok(rest[..i].to_string()));
        }
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed reference in {value:?}"));
        };
        let inner = &after[..end];
        let parts: Vec<&str> = inner.split('.').collect();
        let r = match parts.as_slice() {
            ["input", name] if !name.is_empty() => Ref::Input(name.to_string()),
            ["policy", key] if !key.is_empty() => Ref::Policy(key.to_string()),
            ["steps", step, output] if !step.is_empty() && !output.is_empty() => {
                Ref::Step(step.to_string(), output.to_string())
            }
            _ => {
                return Err(format!(
                    "\"${{{inner}}}\" is not a reference: use ${{input.NAME}}, ${{policy.KEY}} or ${{steps.ID.OUTPUT}}"
                ))
            }
        };
        out.push(Err(r));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Ok(rest.to_string()));
    }
    Ok(out)
}

impl Runbook {
    /// Parse and validate a runbook. `file` is how errors name it.
    pub fn parse(text: &str, file: &str) -> Result<Runbook, ConfigError> {
        validate::parse(text, file)
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Every runbook: the shipped ones, overridden or extended by `*.toml` files in `dir`.
pub fn load_all(dir: Option<&Path>) -> Result<BTreeMap<String, Runbook>, ConfigError> {
    let mut all = BTreeMap::new();
    for (name, text) in SHIPPED {
        let rb = Runbook::parse(text, &format!("runbooks/{name}.toml (built-in)"))?;
        all.insert(rb.name.clone(), rb);
    }
    if let Some(dir) = dir {
        for path in runbook_files(dir)? {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(&shown, format!("cannot read the runbook: {e}")))?;
            let rb = Runbook::parse(&text, &shown)?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem != rb.name {
                return Err(ConfigError::new(
                    &shown,
                    format!(
                        "the runbook is named {:?} but its file is {stem:?}.toml",
                        rb.name
                    ),
                )
                .field("name")
                .hint(format!(
                    "rename the file to {}.toml or the runbook to {stem:?}",
                    rb.name
                )));
            }
            all.insert(rb.name.clone(), rb);
        }
    }
    Ok(all)
}

/// The `*.toml` files of a runbook directory (none if it does not exist).
pub fn runbook_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// One runbook by name.
pub fn load(dir: Option<&Path>, name: &str) -> Result<Runbook, ConfigError> {
    let mut all = load_all(dir)?;
    let known: Vec<String> = all.keys().cloned().collect();
    all.remove(name).ok_or_else(|| {
        ConfigError::new("--runbook", format!("there is no runbook {name:?}"))
            .hint(format!("use one of: {}", known.join(", ")))
    })
}

#[cfg(test)]
mod tests;
