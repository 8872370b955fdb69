//! Workflow files as the lab's GitHub Actions reads them (`.github/workflows/*.yml`): the name,
//! whether `workflow_dispatch` triggers it and with which inputs, and the one step the lab runs:
//! the step with `id: deploy` of job `deploy`. Setup steps (`uses:` steps and every other step)
//! are not run, the lab is their environment; expressions (`${{ ... }}`) are not evaluated, so
//! `env:` values that use them are left out and named in the run's log.

use yaml_serde::Value;

/// The job and step id the lab runs.
pub const DEPLOY: &str = "deploy";

/// One workflow file at one commit.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub path: String,
    /// `name:`, or the path when there is none (as GitHub shows it).
    pub name: String,
    doc: Result<Value, String>,
}

/// A `workflow_dispatch` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    pub required: bool,
    pub has_default: bool,
}

/// The step the lab runs, ready to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The `run:` script.
    pub script: String,
    /// The shell command the script file is appended to.
    pub shell: Vec<String>,
    /// Literal `env:` values of the workflow, then the job, then the step (later wins).
    pub env: Vec<(String, String)>,
    /// Why some `env:` entries were left out.
    pub skipped_env: Vec<String>,
    /// `working-directory`, relative to the checkout.
    pub working_directory: Option<String>,
    /// The job's steps the lab does not run (names, `uses:` or ids).
    pub not_run: Vec<String>,
}

impl Workflow {
    pub fn parse(path: &str, text: &str) -> Self {
        let doc = yaml_serde::from_str::<Value>(text).map_err(|e| e.to_string());
        let name = doc
            .as_ref()
            .ok()
            .and_then(|d| d.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| path.to_string());
        Self {
            path: path.to_string(),
            name,
            doc,
        }
    }

    /// The file name (`deploy.yml`), by which the REST API also finds a workflow.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The `workflow_dispatch` trigger's inputs; `None` when the workflow has no such trigger
    /// (or does not parse).
    pub fn dispatch_inputs(&self) -> Option<Vec<Input>> {
        let doc = self.doc.as_ref().ok()?;
        // YAML 1.1 readers turn the key `on` into `true`; accept both spellings.
        let on = doc
            .get("on")
            .or_else(|| doc.as_mapping()?.get(Value::Bool(true)))?;
        let trigger = match on {
            Value::String(s) => return (s == "workflow_dispatch").then(Vec::new),
            Value::Sequence(list) => {
                let has = list.iter().any(|v| v.as_str() == Some("workflow_dispatch"));
                return has.then(Vec::new);
            }
            Value::Mapping(m) => m.get("workflow_dispatch")?,
            _ => return None,
        };
        let inputs = trigger
            .get("inputs")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        Some(Input {
                            name: k.as_str()?.to_string(),
                            required: v.get("required").and_then(Value::as_bool) == Some(true),
                            has_default: v.get("default").is_some_and(|d| !d.is_null()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(inputs)
    }

    /// The step `deploy` of job `deploy`, or why there is none to run.
    pub fn deploy_step(&self) -> Result<Step, String> {
        let doc = self
            .doc
            .as_ref()
            .map_err(|e| format!("{} is not valid YAML: {e}", self.path))?;
        let job = doc
            .get("jobs")
            .and_then(|j| j.get(DEPLOY))
            .ok_or_else(|| {
                format!(
                    "{} has no job `{DEPLOY}`: the lab runs only the step with id `{DEPLOY}` of job `{DEPLOY}`",
                    self.path
                )
            })?;
        let steps = job
            .get("steps")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let step = steps
            .iter()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(DEPLOY))
            .ok_or_else(|| {
                format!(
                    "job `{DEPLOY}` of {} has no step with id `{DEPLOY}`: the lab runs only that step",
                    self.path
                )
            })?;
        let script = step
            .get("run")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                format!(
                    "step `{DEPLOY}` of {} has no `run:` script (a `uses:` step cannot run in the lab)",
                    self.path
                )
            })?
            .to_string();
        let default = |key: &str| -> Option<&Value> {
            [step.get(key)]
                .into_iter()
                .chain([job, doc].map(|d| {
                    d.get("defaults")
                        .and_then(|x| x.get("run"))
                        .and_then(|r| r.get(key))
                }))
                .flatten()
                .next()
        };
        let shell = match default("shell").map(|s| s.as_str().unwrap_or("?")) {
            None => vec!["bash".into(), "-e".into()],
            Some("bash") => ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
                .map(String::from)
                .to_vec(),
            Some("sh") => vec!["sh".into(), "-e".into()],
            Some(other) => {
                return Err(format!(
                    "step `{DEPLOY}` of {} asks for shell {other:?}: the lab runs bash or sh",
                    self.path
                ))
            }
        };
        let working_directory = match default("working-directory") {
            None => None,
            Some(Value::String(d)) if !d.contains("${{") && !d.starts_with('/') && !d.split('/').any(|p| p == "..") => {
                Some(d.clone())
            }
            Some(other) => {
                return Err(format!(
                    "step `{DEPLOY}` of {}: working-directory {other:?} is not a plain path inside the checkout",
                    self.path
                ))
            }
        };
        let mut env = vec![];
        let mut skipped_env = vec![];
        for (level, holder) in [("workflow", doc), ("job", job), ("step", step)] {
            let Some(map) = holder.get("env").and_then(Value::as_mapping) else {
                continue;
            };
            for (k, v) in map {
                let Some(k) = k.as_str() else { continue };
                let value = match v {
                    Value::String(s) if !s.contains("${{") => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                match value {
                    Some(value) => {
                        env.retain(|(n, _): &(String, String)| n != k);
                        env.push((k.to_string(), value));
                    }
                    None => skipped_env.push(format!(
                        "{level} env {k}: not a literal (the lab does not evaluate expressions)"
                    )),
                }
            }
        }
        let not_run = steps
            .iter()
            .filter(|s| s.get("id").and_then(Value::as_str) != Some(DEPLOY))
            .map(|s| {
                ["name", "uses", "id"]
                    .iter()
                    .find_map(|k| s.get(*k).and_then(Value::as_str))
                    .unwrap_or("(a step)")
                    .to_string()
            })
            .collect();
        Ok(Step {
            script,
            shell,
            env,
            skipped_env,
            working_directory,
            not_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name: Deploy
on:
  push:
    branches: [main]
  workflow_dispatch:
    inputs:
      region:
        required: true
      note:
        default: none
env:
  STAGE: lab
  RETRIES: 3
  TOKEN: ${{ secrets.TOKEN }}
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: cargo test
  deploy:
    runs-on: ubuntu-latest
    env:
      STAGE: prod
      DEBUG: false
    defaults:
      run:
        shell: bash
    steps:
      - uses: actions/checkout@v4
      - name: Install Rust
        uses: dtolnay/rust-toolchain@stable
      - id: deploy
        working-directory: app
        env:
          REF: ${{ github.ref }}
        run: |
          echo deployed "$GITHUB_SHA" > out.txt
"#;

    #[test]
    fn reads_the_deploy_step_with_literal_env_only() {
        let w = Workflow::parse(".github/workflows/deploy.yml", FULL);
        assert_eq!(w.name, "Deploy");
        assert_eq!(w.file_name(), "deploy.yml");
        let inputs = w.dispatch_inputs().unwrap();
        assert_eq!(inputs.len(), 2);
        assert!(inputs[0].required && !inputs[0].has_default);
        assert!(!inputs[1].required && inputs[1].has_default);
        let s = w.deploy_step().unwrap();
        assert_eq!(s.script, "echo deployed \"$GITHUB_SHA\" > out.txt\n");
        assert_eq!(
            s.shell,
            ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
        );
        assert_eq!(
            s.env,
            [("RETRIES", "3"), ("STAGE", "prod"), ("DEBUG", "false")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(s.skipped_env.len(), 2, "{:?}", s.skipped_env);
        assert!(s.skipped_env[0].contains("TOKEN"));
        assert_eq!(s.working_directory.as_deref(), Some("app"));
        assert_eq!(s.not_run, ["actions/checkout@v4", "Install Rust"]);
    }

    #[test]
    fn dispatch_triggers_in_every_spelling() {
        for (on, dispatchable) in [
            ("on: workflow_dispatch", true),
            ("on: [push, workflow_dispatch]", true),
            ("on:\n  workflow_dispatch:", true),
            ("on: push", false),
            ("on: [push]", false),
            ("on:\n  push:\n    branches: [main]", false),
            ("name: no trigger", false),
            ("on: [unclosed", false),
        ] {
            let w = Workflow::parse("w.yml", on);
            assert_eq!(w.dispatch_inputs().is_some(), dispatchable, "{on}");
        }
        assert_eq!(Workflow::parse("w.yml", "on: push").name, "w.yml");
    }

    #[test]
    fn a_workflow_without_the_deploy_step_says_why() {
        for (text, why) in [
            ("on: push\njobs:\n  build:\n    steps: []", "no job `deploy`"),
            ("jobs:\n  deploy:\n    steps:\n      - run: x", "no step with id `deploy`"),
            ("jobs:\n  deploy:\n    steps:\n      - id: deploy\n        uses: a/b@v1", "no `run:`"),
            ("jobs:\n  deploy:\n    steps:\n      - id: deploy\n        shell: pwsh\n        run: x", "shell"),
            ("jobs:\n  deploy:\n    steps:\n      - id: deploy\n        working-directory: ../x\n        run: x", "working-directory"),
            ("jobs: [", "not valid YAML"),
        ] {
            let e = Workflow::parse("w.yml", text).deploy_step().unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        let s = Workflow::parse(
            "w.yml",
            "jobs:\n  deploy:\n    steps:\n      - id: deploy\n        run: x",
        )
        .deploy_step()
        .unwrap();
        assert_eq!(s.shell, ["bash", "-e"]);
    }
}
