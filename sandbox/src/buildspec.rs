//! A local executor of CodeBuild buildspec commands, for the lab's pipeline executor.
//!
//! It runs a buildspec (version 0.2) the way CodeBuild does for a `CODEPIPELINE` source, on this
//! machine instead of in a container: the phases `install`, `pre_build`, `build`, `post_build`
//! in order, each phase's commands in one bash shell that stops at the first failing command,
//! `post_build` also after a failed `build` (CodeBuild's default), the environment from the
//! project, the buildspec's `env.variables` and the action's overrides (highest), plus the
//! `CODEBUILD_*` variables. What it does not do is refused by name, never skipped: any other
//! buildspec key (`artifacts`, `reports`, `cache`, `env.secrets-manager`, ...) fails the action.
//! The differences from CodeBuild are listed in docs/emulator-gaps.md.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub const PHASES: &[&str] = &["install", "pre_build", "build", "post_build"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buildspec {
    pub version: yaml_serde::Value,
    #[serde(default)]
    pub env: Option<Env>,
    #[serde(default)]
    pub phases: BTreeMap<String, Phase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Env {
    #[serde(default)]
    pub variables: BTreeMap<String, yaml_serde::Value>,
    #[serde(default)]
    pub shell: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default, rename = "runtime-versions")]
    pub runtime_versions: Option<yaml_serde::Value>,
}

/// Parse a buildspec; the error names the file and what the lab does not run.
pub fn parse(name: &str, text: &str) -> Result<Buildspec, String> {
    let b: Buildspec = yaml_serde::from_str(text).map_err(|e| {
        format!(
            "{name}: {e} (the lab's executor runs `version`, `env.variables`, `env.shell` and \
             `phases.<install|pre_build|build|post_build>.commands`; see docs/emulator-gaps.md)"
        )
    })?;
    let version = match &b.version {
        yaml_serde::Value::String(s) => s.clone(),
        yaml_serde::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if version != "0.2" {
        return Err(format!(
            "{name}: version {version:?}: the lab runs buildspec version 0.2"
        ));
    }
    if let Some(p) = b.phases.keys().find(|p| !PHASES.contains(&p.as_str())) {
        return Err(format!(
            "{name}: unknown phase {p:?} (phases are {})",
            PHASES.join(", ")
        ));
    }
    if let Some(s) = b.env.as_ref().and_then(|e| e.shell.as_deref()) {
        if s != "bash" {
            return Err(format!("{name}: env.shell {s:?}: the lab runs bash"));
        }
    }
    Ok(b)
}

fn scalar(v: &yaml_serde::Value) -> String {
    match v {
        yaml_serde::Value::String(s) => s.clone(),
        yaml_serde::Value::Number(n) => n.to_string(),
        yaml_serde::Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

impl Buildspec {
    pub fn variables(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .flat_map(|e| e.variables.iter())
            .map(|(k, v)| (k.clone(), scalar(v)))
            .collect()
    }
}

/// What a run ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The phase that failed and the log's last lines.
    Failed {
        phase: String,
        message: String,
    },
    TimedOut,
    Killed,
}

/// The bash script of one phase: each command announced as CodeBuild does, the first failure
/// named in the log.
fn phase_script(phase: &str, commands: &[String]) -> String {
    let mut s = String::from(
        "set -e\ntrap 'echo \"[Container] Command did not exit successfully: exit status $?\"' ERR\n",
    );
    s.push_str(&format!("echo '[Container] Entering phase {phase}'\n"));
    for c in commands {
        let shown = c.replace('\'', "'\\''");
        s.push_str(&format!(
            "echo '[Container] Running command {shown}'\n{c}\n"
        ));
    }
    s
}

/// Run `spec` in `workdir` with `env` (the whole environment: nothing else is inherited),
/// appending to `log`. `pgid` receives the process group of the running phase (for stops).
pub async fn run(
    spec: &Buildspec,
    workdir: &Path,
    env: &[(String, String)],
    log: &Path,
    timeout: Duration,
    pgid: &std::sync::Mutex<Option<i32>>,
) -> std::io::Result<Outcome> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut failed: Option<String> = None;
    for phase in PHASES {
        let Some(p) = spec.phases.get(*phase) else {
            continue;
        };
        // After a failure only post_build runs, and only when build was the phase that failed.
        if let Some(f) = &failed {
            if !(*phase == "post_build" && f == "build") {
                continue;
            }
        }
        let script = phase_script(phase, &p.commands);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .current_dir(workdir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        *pgid.lock().expect("pgid") = child.id().map(|p| p as i32);
        let status = tokio::select! {
            s = child.wait() => s?,
            _ = tokio::time::sleep_until(deadline) => {
                kill_group(child.id());
                let _ = child.wait().await;
                *pgid.lock().expect("pgid") = None;
                append(log, "[Container] Build timed out\n").await;
                return Ok(Outcome::TimedOut);
            }
        };
        *pgid.lock().expect("pgid") = None;
        use std::os::unix::process::ExitStatusExt;
        if status.signal().is_some() {
            append(log, "[Container] Build was stopped\n").await;
            return Ok(Outcome::Killed);
        }
        if status.success() {
            append(
                log,
                &format!("[Container] Phase complete: {phase} State: SUCCEEDED\n"),
            )
            .await;
        } else {
            append(
                log,
                &format!("[Container] Phase complete: {phase} State: FAILED\n"),
            )
            .await;
            if failed.is_none() {
                failed = Some(phase.to_string());
            }
        }
    }
    Ok(match failed {
        None => Outcome::Succeeded,
        Some(phase) => Outcome::Failed {
            message: format!(
                "Error while executing the {phase} phase: {}",
                tail(log, 5).join(" | ")
            ),
            phase,
        },
    })
}

pub fn kill_group(pid: Option<u32>) {
    if let Some(p) = pid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

async fn append(log: &Path, line: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
    {
        let _ = f.write_all(line.as_bytes()).await;
    }
}

/// The last `n` non-empty lines of a log.
pub fn tail(log: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(str::to_string)
        .collect();
    lines.reverse();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_keys_are_refused_by_name() {
        let e = parse("b.yml", "version: 0.2\nartifacts:\n  files: ['**/*']\n").unwrap_err();
        assert!(e.contains("b.yml") && e.contains("artifacts"), "{e}");
        let e = parse("b.yml", "version: 0.1\nphases: {}\n").unwrap_err();
        assert!(e.contains("0.2"), "{e}");
        let e = parse(
            "b.yml",
            "version: 0.2\nphases:\n  test:\n    commands: [x]\n",
        )
        .unwrap_err();
        assert!(e.contains("\"test\""), "{e}");
        let b = parse(
            "b.yml",
            "version: 0.2\nenv:\n  variables:\n    A: 1\n    B: x\nphases:\n  build:\n    commands: [echo hi]\n",
        )
        .unwrap();
        assert_eq!(
            b.variables(),
            vec![("A".into(), "1".into()), ("B".into(), "x".into())]
        );
    }

    async fn run_text(text: &str) -> (Outcome, String) {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let spec = parse("b.yml", text).unwrap();
        let env = vec![
            ("PATH".to_string(), std::env::var("PATH").unwrap()),
            ("GREETING".to_string(), "hello".to_string()),
        ];
        let pg = std::sync::Mutex::new(None);
        let o = run(&spec, d.path(), &env, &log, Duration::from_secs(30), &pg)
            .await
            .unwrap();
        (o, std::fs::read_to_string(&log).unwrap())
    }

    #[tokio::test]
    async fn phases_run_in_order_and_stop_at_the_first_failure() {
        let (o, log) = run_text(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"$GREETING from build\"\n      - 'false'\n      - echo never\n  install:\n    commands: [echo install]\n  post_build:\n    commands: [echo post]\n",
        )
        .await;
        assert!(
            matches!(&o, Outcome::Failed { phase, .. } if phase == "build"),
            "{o:?}"
        );
        let i = log.find("install\n").unwrap();
        let b = log.find("hello from build").unwrap();
        assert!(i < b, "{log}");
        assert!(!log.contains("never"), "{log}");
        assert!(
            log.contains("post\n"),
            "post_build runs after a failed build: {log}"
        );
        assert!(log.contains("did not exit successfully"), "{log}");
    }

    #[tokio::test]
    async fn a_failed_install_skips_everything_after_it() {
        let (o, log) = run_text(
            "version: 0.2\nphases:\n  install:\n    commands: ['exit 3']\n  build:\n    commands: [echo built]\n  post_build:\n    commands: [echo post]\n",
        )
        .await;
        assert!(
            matches!(&o, Outcome::Failed { phase, .. } if phase == "install"),
            "{o:?}"
        );
        assert!(!log.contains("built") && !log.contains("post\n"), "{log}");
        let (o, _) = run_text("version: 0.2\nphases:\n  build:\n    commands: [true]\n").await;
        assert_eq!(o, Outcome::Succeeded);
    }
}
