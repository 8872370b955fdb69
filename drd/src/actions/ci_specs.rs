//! What runbooks may say about the CI failover actions and checks (`ci.rs`, `ci_github.rs`),
//! how plans describe them, and which function runs each.

use super::{ci, ci_github, ActionSpec, Args, Ctx, Outputs};
use crate::error::{Error, Result};

pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "ci.preflight",
        summary: "Read the CI epoch, whether GitHub answers, the newest mirror and its age (the \
                  CI RPO), the commit to deploy (`latest`: the mirrored head) and, towards \
                  CodePipeline, the standby pipeline; no writes. Towards GitHub it must answer.",
        required: &["to"],
        optional: &["commit"],
        outputs: &[
            "to",
            "provider_now",
            "epoch_now",
            "reconcile_open",
            "github",
            "manifest",
            "commit",
            "branch",
            "mirror_fetched_at",
            "mirror_age_s",
            "pipeline",
            "pipeline_state",
        ],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "ci.install",
        summary: "Install or converge the standby pipeline in the acting region, as `drd ci \
                  install` does.",
        required: &[],
        optional: &[],
        outputs: &["pipeline", "stack_action", "source_bucket"],
        writes: true,
        suggested_check: Some("ci.pipeline_ready"),
    },
    ActionSpec {
        name: "ci.take_epoch",
        summary: "Give the CI epoch (`ci/active.json`) to `to` by compare-and-swap, under the \
                  lease provider-checked deploys hold; already there: nothing written.",
        required: &["to"],
        optional: &[],
        outputs: &["epoch", "provider", "since", "switched"],
        writes: true,
        suggested_check: Some("ci.epoch_is"),
    },
    ActionSpec {
        name: "ci.disable_workflow",
        summary: "Disable the GitHub deploy workflow; when GitHub does not answer, record a \
                  reconcile item that failback finishes.",
        required: &[],
        optional: &[],
        outputs: &["workflow", "state", "reconcile"],
        writes: true,
        suggested_check: Some("ci.workflow_parked"),
    },
    ActionSpec {
        name: "ci.upload_source",
        summary: "Put the mirrored zip of `commit` into the pipeline's versioned source bucket \
                  as a new object version (or find the one an earlier attempt put).",
        required: &["commit"],
        optional: &[],
        outputs: &["bucket", "key", "version_id", "uploaded"],
        writes: true,
        suggested_check: Some("ci.source_present"),
    },
    ActionSpec {
        name: "ci.run_pipeline",
        summary: "Start the pipeline on exactly that object version with the commit as the \
                  variable COMMIT_SHA (or find the execution an earlier attempt started), wait, \
                  and retry a failed stage up to `max_retries` times.",
        required: &["version_id", "commit", "max_retries"],
        optional: &["poll"],
        outputs: &["execution_id", "started", "stage_retries"],
        writes: true,
        suggested_check: Some("ci.live_at_commit"),
    },
    ActionSpec {
        name: "ci.push_mirror",
        summary: "Push the newest mirror's branches and tags to GitHub, fast-forward only, ref \
                  by ref; a diverged or refused ref stops the run with the commands to fix it.",
        required: &[],
        optional: &[],
        outputs: &["pushed", "head", "branch"],
        writes: true,
        suggested_check: Some("ci.github_has"),
    },
    ActionSpec {
        name: "ci.dispatch_deploy",
        summary: "Enable the GitHub deploy workflow, dispatch it on the deploy branch (the run \
                  from the reply, or found by its commit) and await its run.",
        required: &["commit", "branch"],
        optional: &["since", "poll"],
        outputs: &["run_id", "dispatched", "conclusion"],
        writes: true,
        suggested_check: Some("ci.live_at_commit"),
    },
    ActionSpec {
        name: "ci.close_reconcile",
        summary: "Close the reconcile items the failover left.",
        required: &[],
        optional: &[],
        outputs: &["closed"],
        writes: true,
        suggested_check: Some("ci.reconciled"),
    },
];

pub const CHECKS: &[ActionSpec] = &[
    ActionSpec {
        name: "ci.pipeline_ready",
        summary: "The standby pipeline exists in the acting region and its source bucket is \
                  versioned.",
        required: &[],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "ci.epoch_is",
        summary: "The CI epoch is held by `to`.",
        required: &["to"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "ci.workflow_parked",
        summary: "The deploy workflow is disabled, or a reconcile item for it is recorded.",
        required: &[],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "ci.source_present",
        summary: "That object version exists and carries the commit.",
        required: &["bucket", "key", "version_id", "commit"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "ci.live_at_commit",
        summary: "`live` runs a version recorded with the commit and passes T0, T1 and T2.",
        required: &["commit"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "ci.github_has",
        summary: "GitHub's deploy branch is at the commit.",
        required: &["commit"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "ci.reconciled",
        summary: "No reconcile item is open.",
        required: &[],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
];

/// A one-line description for plans.
pub fn describe(name: &str, args: &Args) -> String {
    let a = |k: &str| {
        args.get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("?")
    };
    match name {
        "ci.preflight" => format!(
            "check GitHub, the mirror and the commit ({}) for CI on {} (no writes)",
            args.get("commit").map(String::as_str).unwrap_or("latest"),
            a("to")
        ),
        "ci.install" => "install or converge the standby pipeline".into(),
        "ci.take_epoch" => format!("give the CI epoch to {}", a("to")),
        "ci.disable_workflow" => {
            "disable the GitHub deploy workflow (or record a reconcile item)".into()
        }
        "ci.upload_source" => format!(
            "put the mirrored zip of {} into the pipeline's source bucket",
            a("commit")
        ),
        "ci.run_pipeline" => format!(
            "run the pipeline on object version {} with COMMIT_SHA={} and wait (retry a failed stage up to {} time(s))",
            a("version_id"),
            a("commit"),
            a("max_retries")
        ),
        "ci.push_mirror" => "push the mirrored refs to GitHub (fast-forward only)".into(),
        "ci.dispatch_deploy" => format!(
            "enable and dispatch the deploy workflow on {} and await its run of {}",
            a("branch"),
            a("commit")
        ),
        "ci.close_reconcile" => "close the reconcile items".into(),
        _ => name.to_string(),
    }
}

pub(super) async fn run(ctx: &Ctx<'_>, name: &str, args: &Args) -> Result<Outputs> {
    match name {
        "ci.preflight" => ci::preflight(ctx, args).await,
        "ci.install" => ci::install(ctx).await,
        "ci.take_epoch" => ci::take_epoch(ctx, args).await,
        "ci.disable_workflow" => ci_github::disable_workflow(ctx, args).await,
        "ci.upload_source" => ci::upload_source(ctx, args).await,
        "ci.run_pipeline" => ci::run_pipeline(ctx, args).await,
        "ci.push_mirror" => ci_github::push_mirror(ctx, args).await,
        "ci.dispatch_deploy" => ci_github::dispatch_deploy(ctx, args).await,
        "ci.close_reconcile" => ci_github::close_reconcile(ctx, args).await,
        other => Err(Error::failed(format!("unknown action {other}"))),
    }
}

pub(super) async fn check(ctx: &Ctx<'_>, name: &str, args: &Args) -> Result<()> {
    match name {
        "ci.pipeline_ready" => ci::pipeline_ready(ctx, args).await,
        "ci.epoch_is" => ci::epoch_is(ctx, args).await,
        "ci.workflow_parked" => ci_github::workflow_parked(ctx, args).await,
        "ci.source_present" => ci::source_present(ctx, args).await,
        "ci.live_at_commit" => ci::live_at_commit(ctx, args).await,
        "ci.github_has" => ci_github::github_has(ctx, args).await,
        "ci.reconciled" => ci_github::reconciled(ctx, args).await,
        other => Err(Error::failed(format!("unknown check {other}"))),
    }
}
