//! A CodeBuild action of a lab pipeline execution: the project from moto's CodeBuild, the source
//! artifact unpacked into a scratch directory, the buildspec run by `buildspec.rs` with the
//! environment CodeBuild would give it (and the lab's endpoints, as a user of the lab has them).

use crate::buildspec::{self, Outcome};
use crate::pipeline::Executor;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

type ActionResult = Result<(String, Option<String>), (String, String, Option<String>)>;

/// The only host variables a build inherits (the "image": a shell, a home, the toolchain);
/// everything else, tokens and cloud credentials included, stays out.
fn inherited(k: &str) -> bool {
    matches!(
        k,
        "PATH"
            | "HOME"
            | "LANG"
            | "LC_ALL"
            | "TMPDIR"
            | "USER"
            | "CARGO_HOME"
            | "RUSTUP_HOME"
            | "RUSTUP_TOOLCHAIN"
    )
}

/// Resolve `#{variables.NAME}` and `#{codepipeline.PipelineExecutionId}` in an action's value.
pub fn resolve(
    value: &str,
    variables: &[(String, String)],
    execution: &str,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("#{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            return Err(format!("unterminated variable reference in {value:?}"));
        };
        let name = &after[..j];
        let v = if let Some(n) = name.strip_prefix("variables.") {
            variables
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("pipeline variable {n} is not declared"))?
        } else if name == "codepipeline.PipelineExecutionId" {
            execution.to_string()
        } else {
            return Err(format!(
                "the lab resolves #{{variables.NAME}} and #{{codepipeline.PipelineExecutionId}}, not #{{{name}}}"
            ));
        };
        out.push_str(&v);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn unzip(zip: &Path, into: &Path) -> Result<(), String> {
    let f = std::fs::File::open(zip).map_err(|e| format!("{}: {e}", zip.display()))?;
    let mut a =
        zip::ZipArchive::new(f).map_err(|e| format!("the source artifact is not a zip: {e}"))?;
    a.extract(into)
        .map_err(|e| format!("unpacking the source artifact: {e}"))
}

/// What the lab's "build image" gives every build: the lab's endpoints (as a user of the lab
/// has them), drd on PATH, the prebuilt function and the cargo cache.
fn lab_env(ex: &Executor, region: &str, base: &Path, project_name: &str) -> Vec<(String, String)> {
    let urls = ex.lab_urls();
    let mut env: Vec<(String, String)> = vec![];
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    set("AWS_ENDPOINT_URL", urls.gate.clone());
    let keys = crate::iam::lab_keys();
    set("AWS_ACCESS_KEY_ID", keys.access_key_id);
    set("AWS_SECRET_ACCESS_KEY", keys.secret_access_key);
    set("AWS_REGION", region.to_string());
    set("AWS_DEFAULT_REGION", region.to_string());
    set("DRD_LAMBDA_DATA_ENDPOINT", urls.host.clone());
    set("DRD_LLM_BASE_URL", urls.llm.clone());
    set("DRD_STATE_DIR", base.join("state").display().to_string());
    // The build image has drd: the one beside this lab binary comes first on PATH.
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Ok(p) =
            std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        {
            set("PATH", p.to_string_lossy().into_owned());
        }
    }
    // The lab's one shortcut (docs/emulator-gaps.md): a prebuilt function binary instead of a
    // release build in every deploy, when the lab was started with one.
    if let Ok(b) = std::env::var("DRD_SANDBOX_CI_BOOTSTRAP") {
        set("DRD_BOOTSTRAP", b);
    }
    // CodeBuild's local cache, for cargo: one target directory per project that outlives the
    // build. `DRD_SANDBOX_CI_CACHE` (the suite, the demo) shares one across sandboxes and
    // projects: cargo locks it and its fingerprints decide what is reused, so two labs building
    // the same workload at once compile it once, one after the other, not twice side by side.
    let target = match std::env::var_os("DRD_SANDBOX_CI_CACHE") {
        Some(c) => std::path::PathBuf::from(c).join("cargo"),
        None => ex.dir().join("codebuild-cache").join(project_name),
    };
    set("CARGO_TARGET_DIR", target.display().to_string());
    // The lab's build image compiles without debug info and incrementally-off (less to write
    // on the 2-core machines the suite runs on); the commands are the buildspec's own.
    set("CARGO_PROFILE_DEV_DEBUG", "0".into());
    set("CARGO_INCREMENTAL", "0".into());
    env
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn build(
    ex: &Executor,
    id: &str,
    pipeline: &str,
    region: &str,
    variables: &[(String, String)],
    stage: &str,
    a: &aws_sdk_codepipeline::types::ActionDeclaration,
    config: &HashMap<String, String>,
    work: &Path,
    attempt: u32,
) -> ActionResult {
    let fail = |m: String| ("JobFailed".to_string(), m, None::<String>);
    let project_name = config.get("ProjectName").cloned().unwrap_or_default();
    let cb = ex.aws().codebuild(region).await;
    let got = cb
        .batch_get_projects()
        .names(&project_name)
        .send()
        .await
        .map_err(|e| {
            fail(format!(
                "BatchGetProjects {project_name}: {}",
                drd::aws::error_code(&e).unwrap_or("error")
            ))
        })?;
    let Some(project) = got.projects().first() else {
        return Err(fail(format!(
            "CodeBuild project {project_name} does not exist"
        )));
    };
    let Some(input) = a.input_artifacts().first() else {
        return Err(fail(format!("action {} has no input artifact", a.name())));
    };
    let Some((zip, revision, _)) = ex.artifact(id, input.name()) else {
        return Err(fail(format!(
            "input artifact {} was not produced",
            input.name()
        )));
    };
    let base = work.join(format!("{stage}.{}.{attempt}", a.name()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).map_err(|e| fail(e.to_string()))?;
    // The source is unpacked outside the sandbox directory, as CodeBuild unpacks it on a build
    // host of its own: a sandbox directory inside a cargo workspace (the demo's .drd/) would
    // otherwise make cargo take the source for a member of that workspace. Removed at the end.
    let scratch = tempfile::Builder::new()
        .prefix("drd-lab-codebuild-")
        .tempdir()
        .map_err(|e| fail(format!("a scratch directory for the source: {e}")))?;
    let src = scratch.path().join("src");
    std::fs::create_dir_all(&src).map_err(|e| fail(e.to_string()))?;
    unzip(&zip, &src).map_err(fail)?;
    let spec_ref = project
        .source()
        .and_then(|s| s.buildspec())
        .filter(|s| !s.is_empty())
        .unwrap_or("buildspec.yml")
        .to_string();
    let (spec_name, spec_text) = if spec_ref.contains('\n') {
        (
            format!("{project_name} (inline buildspec)"),
            spec_ref.clone(),
        )
    } else {
        let p = src.join(&spec_ref);
        let t = std::fs::read_to_string(&p)
            .map_err(|e| fail(format!("YAML_FILE_ERROR: {spec_ref} in the source: {e}")))?;
        (spec_ref.clone(), t)
    };
    let spec = buildspec::parse(&spec_name, &spec_text).map_err(fail)?;

    // The environment: host basics, the lab's endpoints, CodeBuild's own variables, then the
    // buildspec's, the project's and the action's (each overriding the one before, as CodeBuild
    // ranks them: start-build overrides > project > buildspec).
    let build_id = format!("{project_name}:{}", &id[..8.min(id.len())]);
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| inherited(k)).collect();
    let mut set = |k: &str, v: String| {
        env.retain(|(x, _)| x != k);
        env.push((k.to_string(), v));
    };
    for (k, v) in lab_env(ex, region, &base, &project_name) {
        set(&k, v);
    }
    set("CODEBUILD_BUILD_ID", build_id.clone());
    set("CODEBUILD_BUILD_NUMBER", attempt.to_string());
    set("CODEBUILD_SRC_DIR", src.display().to_string());
    set("CODEBUILD_RESOLVED_SOURCE_VERSION", revision.clone());
    set("CODEBUILD_INITIATOR", format!("codepipeline/{pipeline}"));
    set("CODEBUILD_BUILD_SUCCEEDING", "1".into());
    for (k, v) in spec.variables() {
        set(&k, v);
    }
    if let Some(en) = project.environment() {
        for v in en.environment_variables() {
            let t = v.r#type().map(|t| t.as_str()).unwrap_or("PLAINTEXT");
            if t != "PLAINTEXT" {
                return Err(fail(format!(
                    "project variable {} is of type {t}: the lab passes PLAINTEXT variables only",
                    v.name()
                )));
            }
            set(v.name(), v.value().to_string());
        }
    }
    if let Some(raw) = config.get("EnvironmentVariables").filter(|s| !s.is_empty()) {
        let list: Vec<serde_json::Value> = serde_json::from_str(raw)
            .map_err(|e| fail(format!("EnvironmentVariables is not a JSON list: {e}")))?;
        for v in list {
            let n = v.get("name").and_then(|x| x.as_str()).unwrap_or("");
            let t = v
                .get("type")
                .and_then(|x| x.as_str())
                .unwrap_or("PLAINTEXT");
            if t != "PLAINTEXT" {
                return Err(fail(format!(
                    "action variable {n} is of type {t}: the lab passes PLAINTEXT variables only"
                )));
            }
            let raw_value = v.get("value").and_then(|x| x.as_str()).unwrap_or("");
            let value = resolve(raw_value, variables, id).map_err(fail)?;
            set(n, value);
        }
    }
    let timeout = Duration::from_secs(
        60 * project
            .timeout_in_minutes()
            .filter(|m| *m > 0)
            .unwrap_or(60) as u64,
    );
    let log = base.with_extension("log");
    let pgid = ex.set_pgid(id);
    let outcome = buildspec::run(&spec, &src, &env, &log, timeout, &pgid)
        .await
        .map_err(|e| fail(format!("starting the build: {e}")))?;
    let ext = Some(build_id);
    match outcome {
        Outcome::Succeeded => Ok((
            format!(
                "Build {} succeeded (log {})",
                ext.clone().unwrap_or_default(),
                log.display()
            ),
            ext,
        )),
        Outcome::Failed { message, .. } => Err(("JobFailed".into(), message, ext)),
        Outcome::TimedOut => Err((
            "JobFailed".into(),
            format!("Build timed out after {} s", timeout.as_secs()),
            ext,
        )),
        Outcome::Killed => Err(("JobFailed".into(), "Build was stopped".into(), ext)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_resolve_or_fail_by_name() {
        let vars = vec![("COMMIT_SHA".to_string(), "abc".to_string())];
        assert_eq!(
            resolve("#{variables.COMMIT_SHA}", &vars, "e1").unwrap(),
            "abc"
        );
        assert_eq!(
            resolve("x-#{codepipeline.PipelineExecutionId}-y", &vars, "e1").unwrap(),
            "x-e1-y"
        );
        assert!(resolve("#{variables.NOPE}", &vars, "e1")
            .unwrap_err()
            .contains("NOPE"));
        assert!(resolve("#{SourceVariables.CommitId}", &vars, "e1").is_err());
        assert!(resolve("#{variables.COMMIT_SHA", &vars, "e1").is_err());
    }
}
