//! The built-in actions runbook steps are made of, and the checks that prove their effects.
//!
//! Every action is idempotent: it reads first and writes only on a difference, so running it on
//! an already-converged system is a no-op (which its check then confirms). Actions that only read
//! (`writes: false`) may run during planning to resolve later steps' arguments; actions that write
//! never do.

mod ci;
mod ci_github;
mod ci_specs;
mod front;
mod github;
pub mod iam;
mod lambda;
mod manual;
mod pipeline;
mod restore;
mod secret;

pub use lambda::{pin_version, PinOutcome};

pub use ci::ci_holder_answers;

use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::Store;
use std::collections::BTreeMap;

pub type Args = BTreeMap<String, String>;
pub type Outputs = BTreeMap<String, String>;

/// What a runbook may say about an action or check.
#[derive(Debug)]
pub struct ActionSpec {
    pub name: &'static str,
    /// One line for the rendered on-call document.
    pub summary: &'static str,
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub outputs: &'static [&'static str],
    /// Changes AWS (or the store); such steps must name a check.
    pub writes: bool,
    pub suggested_check: Option<&'static str>,
}

pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "lambda.observe",
        summary: "Read which version `live` serves, its CodeSha256 and the Function URL.",
        required: &[],
        optional: &[],
        outputs: &["live_version", "code_sha256", "function_url"],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "lambda.choose_rollback_target",
        summary: "Pick the newest pinned version older than `current` (or `to`, which must be \
                  pinned unless `force`).",
        required: &["current"],
        optional: &["to", "force"],
        outputs: &["target", "code_sha256", "pinned"],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "lambda.verify_code",
        summary: "Check that a version's CodeSha256 still equals the expected (pinned) one.",
        required: &["version", "code_sha256"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "lambda.point_alias",
        summary: "Move the `live` alias to a version (the Function URL stays the same).",
        required: &["version"],
        optional: &[],
        outputs: &["previous", "changed"],
        writes: true,
        suggested_check: Some("lambda.alias_is"),
    },
    ActionSpec {
        name: "lambda.pin",
        summary: "Probe a version by invoking it and record it as known-good in `pins/`.",
        required: &["version"],
        optional: &["deep"],
        outputs: &["code_sha256", "config_digest"],
        writes: true,
        suggested_check: Some("pin.exists"),
    },
    ActionSpec {
        name: "probe.url",
        summary: "Probe the Function URL (tiers T0,T1 by default; T2 calls the LLM).",
        required: &[],
        optional: &["tiers"],
        outputs: &["tiers", "latency_ms"],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "secret.observe",
        summary: "Read which version of the secret is AWSCURRENT.",
        required: &["secret"],
        optional: &[],
        outputs: &["current_version"],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "secret.stage",
        summary: "Stage the new value (read from stdin, never an argument) as AWSPENDING.",
        required: &["secret"],
        optional: &[],
        outputs: &["pending_version"],
        writes: true,
        suggested_check: Some("secret.stage_is"),
    },
    ActionSpec {
        name: "secret.prove_pending",
        summary: "Publish a candidate function version that reads AWSPENDING, restore $LATEST, \
                  and probe the candidate T2 (one LLM call with the new key).",
        required: &["secret"],
        optional: &[],
        outputs: &["candidate_version"],
        writes: true,
        suggested_check: Some("lambda.latest_clean"),
    },
    ActionSpec {
        name: "secret.promote",
        summary: "Move AWSCURRENT to the pending version (the old one becomes AWSPREVIOUS).",
        required: &["secret", "version"],
        optional: &[],
        outputs: &["previous_version", "changed"],
        writes: true,
        suggested_check: Some("secret.stage_is"),
    },
    ActionSpec {
        name: "secret.unstage",
        summary: "Remove the AWSPENDING label from a version.",
        required: &["secret", "version"],
        optional: &[],
        outputs: &[],
        writes: true,
        suggested_check: Some("secret.stage_absent"),
    },
    ActionSpec {
        name: "github.update_secret",
        summary: "Write the secret's current value to the mapped GitHub Actions repository \
                  secret (sealed box to the repository key; token from the github-token secret).",
        required: &["secret"],
        optional: &[],
        outputs: &["github_secret", "updated_after"],
        writes: true,
        suggested_check: Some("github.secret_updated"),
    },
    ActionSpec {
        name: "backup.take",
        summary: "Take a recovery point now.",
        required: &[],
        optional: &[],
        outputs: &["point", "new_blobs"],
        writes: true,
        suggested_check: Some("backup.has_secret_version"),
    },
    ActionSpec {
        name: "pipeline.inspect",
        summary: "Read the pipeline's latest execution and, if it failed, the stage that failed.",
        required: &["pipeline"],
        optional: &[],
        outputs: &["execution_id", "status", "failed_stage"],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "pipeline.recover",
        summary: "Retry the failed stage's failed actions (or start a new execution when nothing \
                  failed) and wait, up to `max_retries` times; an execution in progress is waited \
                  on, never started twice.",
        required: &["pipeline", "max_retries"],
        optional: &["poll", "baseline"],
        outputs: &["execution_id", "attempts", "actions"],
        writes: true,
        suggested_check: Some("pipeline.latest_succeeded"),
    },
    ActionSpec {
        name: "restore.preflight",
        summary: "Check everything that can stop a restore, writing nothing: the target is a \
                  region (the primary is repaired in place, and must answer), the identity \
                  decrypts the backups, the point (named, or the newest that passes verify) is \
                  sound, the hosted zone exists; plan the region-bound rewrites and probe the \
                  primary once (3 s).",
        required: &["region", "identity"],
        optional: &["point"],
        outputs: &[
            "point",
            "created_at",
            "rpo_seconds",
            "point_region",
            "live_version",
            "code_sha256",
            "secret_versions",
            "rewrites",
            "stack_exists",
            "primary_reachable",
            "primary",
            "skipped_points",
            "dns_now",
            "mode",
            "store",
        ],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "restore.failback_preflight",
        summary: "Before a failback, writing nothing: the store names a standby region as \
                  active, the primary answers, and the restore preflight into the primary passes.",
        required: &["identity"],
        optional: &["point"],
        outputs: &[
            "region",
            "standby",
            "point",
            "rpo_seconds",
            "primary",
            "store",
        ],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "restore.retire_standby",
        summary: "With `retire = true`, delete the stack in the standby region and wait for it \
                  to go; otherwise keep it and say so (never silently).",
        required: &["region", "retire"],
        optional: &[],
        outputs: &["retired", "detail"],
        writes: true,
        suggested_check: Some("restore.standby_retired"),
    },
    ActionSpec {
        name: "restore.secrets",
        summary: "Recreate every secret in the region from its age backup, each AWSCURRENT and \
                  AWSPREVIOUS version under its original version id, with its stage labels.",
        required: &["region", "point", "identity"],
        optional: &[],
        outputs: &["secrets", "versions_put", "recovered", "repairs"],
        writes: true,
        suggested_check: Some("restore.secrets_match"),
    },
    ActionSpec {
        name: "restore.code",
        summary: "Copy the package `live` ran from the store into the region's artifact bucket \
                  (created if absent), checking its hash.",
        required: &["region", "point"],
        optional: &[],
        outputs: &["bucket", "key", "uploaded"],
        writes: true,
        suggested_check: Some("restore.code_present"),
    },
    ActionSpec {
        name: "restore.stack",
        summary: "Create (or converge) the stack in the region from the point's template and \
                  parameters, rewriting only region-bound values, and wait for it.",
        required: &["region", "point"],
        optional: &[],
        outputs: &["action", "status", "rewrites"],
        writes: true,
        suggested_check: Some("restore.stack_matches"),
    },
    ActionSpec {
        name: "restore.function",
        summary: "Publish the restored code, probe the version (T0, T1), point `live`, make sure \
                  the Function URL exists and passes T0/T1, pin the version and record the \
                  region as active.",
        required: &["region", "point"],
        optional: &[],
        outputs: &[
            "version",
            "published",
            "function_url",
            "url_host",
            "healthy_at",
            "pinned",
        ],
        writes: true,
        suggested_check: Some("restore.function_healthy"),
    },
    ActionSpec {
        name: "dns.point_at",
        summary: "Make the policy's Route 53 record send users to a front door's regional target \
                  (failover PRIMARY with a health check on `health_host`, the old primary as \
                  SECONDARY; or a plain swap), and read it back. Without [dns] in the policy: \
                  skipped, and reported.",
        required: &["host"],
        optional: &["health_host"],
        outputs: &[
            "record",
            "before",
            "secondary",
            "changed",
            "change_id",
            "skipped",
        ],
        writes: true,
        suggested_check: Some("dns.points_at"),
    },
    ActionSpec {
        name: "manual.approve",
        summary: "Wait until an operator runs `drd runbook approve RUN STEP`.",
        required: &["message"],
        optional: &[],
        outputs: &["approved_by"],
        writes: false,
        suggested_check: None,
    },
];

pub const CHECKS: &[ActionSpec] = &[
    ActionSpec {
        name: "lambda.alias_is",
        summary: "`live` points to the given version.",
        required: &["version"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "lambda.verify_code",
        summary: "The version's CodeSha256 equals the expected one.",
        required: &["version", "code_sha256"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "probe.url",
        summary: "The Function URL passes the given probe tiers.",
        required: &[],
        optional: &["tiers"],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "secret.stage_is",
        summary: "The stage label is on the given secret version.",
        required: &["secret", "stage", "version"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "secret.stage_absent",
        summary: "No version of the secret carries the stage label.",
        required: &["secret", "stage"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "lambda.latest_clean",
        summary: "$LATEST carries no rotation marker in its environment.",
        required: &[],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "github.secret_updated",
        summary:
            "The mapped GitHub secret was updated after `since` (no mapping: nothing to prove).",
        required: &["secret"],
        optional: &["since"],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "backup.has_secret_version",
        summary: "The recovery point holds a backup of the secret version.",
        required: &["point", "secret", "version"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "pipeline.latest_succeeded",
        summary: "The pipeline's latest execution succeeded.",
        required: &["pipeline"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "restore.secrets_match",
        summary: "Every AWSCURRENT/AWSPREVIOUS version of the point exists in the region with its \
                  labels.",
        required: &["region", "point"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "restore.code_present",
        summary: "The package is in the region's artifact bucket and hashes to its address.",
        required: &["region", "point"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "restore.stack_matches",
        summary: "The stack in the region is complete with the planned template and parameters.",
        required: &["region", "point"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "restore.function_healthy",
        summary: "`live` in the region runs the point's code and its URL passes T1.",
        required: &["region", "point"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "dns.points_at",
        summary: "The record sends users to the host (no [dns] in the policy: nothing to prove).",
        required: &["host"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "restore.standby_retired",
        summary: "With `retire = true`, the standby region holds no stack; otherwise nothing.",
        required: &["region", "retire"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "backup.captures",
        summary: "The recovery point captured the stack in the given region.",
        required: &["point", "region"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
    ActionSpec {
        name: "pin.exists",
        summary: "The version is pinned with its current CodeSha256.",
        required: &["version"],
        optional: &[],
        outputs: &[],
        writes: false,
        suggested_check: None,
    },
];

pub fn spec(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS
        .iter()
        .chain(ci_specs::ACTIONS)
        .chain(front::ACTIONS)
        .find(|a| a.name == name)
}

pub fn check_spec(name: &str) -> Option<&'static ActionSpec> {
    CHECKS
        .iter()
        .chain(ci_specs::CHECKS)
        .chain(front::CHECKS)
        .find(|a| a.name == name)
}

pub fn names(checks: bool) -> impl Iterator<Item = &'static str> {
    let (core, ci, front) = if checks {
        (CHECKS, ci_specs::CHECKS, front::CHECKS)
    } else {
        (ACTIONS, ci_specs::ACTIONS, front::ACTIONS)
    };
    core.iter().chain(ci).chain(front).map(|a| a.name)
}

/// What actions run against: the clients, the policy, the store, the run.
pub struct Ctx<'a> {
    pub aws: &'a Aws,
    pub policy: &'a Policy,
    /// The region acted on.
    pub region: String,
    pub store: Store,
    pub run_id: String,
    pub progress: &'a (dyn Fn(&str) + Sync),
    /// A new secret value (from stdin), only for the rotation's stage step; never journaled.
    pub secret_value: Option<&'a secrecy::SecretString>,
}

impl Ctx<'_> {
    pub fn function(&self) -> &str {
        self.policy.function_name()
    }
}

/// Run one action with resolved arguments.
pub async fn run(ctx: &Ctx<'_>, step: &str, name: &str, args: &Args) -> Result<Outputs> {
    match name {
        "lambda.observe" => lambda::observe(ctx).await,
        "lambda.choose_rollback_target" => lambda::choose_rollback_target(ctx, args).await,
        "lambda.verify_code" => lambda::verify_code(ctx, args).await.map(|_| Outputs::new()),
        "lambda.point_alias" => lambda::point_alias(ctx, args).await,
        "lambda.pin" => lambda::pin(ctx, args).await,
        "probe.url" => lambda::probe_url(ctx, args).await,
        "manual.approve" => manual::approve(ctx, step, args).await,
        "secret.observe" => secret::observe(ctx, args).await,
        "secret.stage" => secret::stage(ctx, args).await,
        "secret.prove_pending" => secret::prove_pending(ctx, args).await,
        "secret.promote" => secret::promote(ctx, args).await,
        "secret.unstage" => secret::unstage(ctx, args).await,
        "github.update_secret" => github::update_secret(ctx, args).await,
        "backup.take" => github::take_backup(ctx).await,
        "pipeline.inspect" => pipeline::inspect(ctx, args).await,
        "pipeline.recover" => pipeline::recover(ctx, args).await,
        "restore.preflight" => restore::preflight(ctx, args).await,
        "restore.secrets" => restore::secrets(ctx, args).await,
        "restore.code" => restore::code(ctx, args).await,
        "restore.stack" => restore::stack(ctx, args).await,
        "restore.function" => restore::function(ctx, args).await,
        "dns.point_at" => restore::dns_point_at(ctx, args).await,
        "restore.failback_preflight" => restore::failback_preflight(ctx, args).await,
        "restore.retire_standby" => restore::retire_standby(ctx, args).await,
        // Boxed: their futures are large, and this match's future is every arm's size.
        n if n.starts_with("ci.") => Box::pin(ci_specs::run(ctx, n, args)).await,
        n if n.starts_with("front_door.") => Box::pin(front::run(ctx, n, args)).await,
        other => Err(Error::failed(format!("unknown action {other}"))),
    }
}

/// Run one check. `Ok(())` when the effect holds; `Err` says what is wrong.
pub async fn check(ctx: &Ctx<'_>, name: &str, args: &Args) -> Result<()> {
    match name {
        "lambda.alias_is" => lambda::alias_is(ctx, args).await,
        "lambda.verify_code" => lambda::verify_code(ctx, args).await,
        "probe.url" => lambda::probe_url(ctx, args).await.map(|_| ()),
        "pin.exists" => lambda::pin_exists(ctx, args).await,
        "secret.stage_is" => secret::stage_is(ctx, args).await,
        "secret.stage_absent" => secret::stage_absent(ctx, args).await,
        "lambda.latest_clean" => secret::latest_clean(ctx, args).await,
        "github.secret_updated" => github::secret_updated(ctx, args).await,
        "backup.has_secret_version" => github::has_secret_version(ctx, args).await,
        "pipeline.latest_succeeded" => pipeline::latest_succeeded(ctx, args).await,
        "restore.secrets_match" => restore::secrets_match(ctx, args).await,
        "restore.code_present" => restore::code_present(ctx, args).await,
        "restore.stack_matches" => restore::stack_matches(ctx, args).await,
        "restore.function_healthy" => restore::function_healthy(ctx, args).await,
        "dns.points_at" => restore::dns_points_at(ctx, args).await,
        "backup.captures" => restore::backup_captures(ctx, args).await,
        "restore.standby_retired" => restore::standby_retired(ctx, args).await,
        n if n.starts_with("ci.") => Box::pin(ci_specs::check(ctx, n, args)).await,
        n if n.starts_with("front_door.") => Box::pin(front::check(ctx, n, args)).await,
        other => Err(Error::failed(format!("unknown check {other}"))),
    }
}

/// A one-line description of what a (write) step would do, for plans.
pub fn describe(name: &str, args: &Args) -> String {
    let a = |k: &str| {
        args.get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("?")
    };
    match name {
        "lambda.observe" => "read the live alias, its code hash and the Function URL".into(),
        "lambda.choose_rollback_target" => match args.get("to").filter(|s| !s.is_empty()) {
            Some(to) => format!("roll back from version {} to version {to}", a("current")),
            None => format!("pick the newest pinned version older than {}", a("current")),
        },
        "lambda.verify_code" => format!(
            "check that version {} still has CodeSha256 {}",
            a("version"),
            a("code_sha256")
        ),
        "lambda.point_alias" => format!("move alias live to version {}", a("version")),
        "lambda.pin" => format!("probe and pin version {}", a("version")),
        "probe.url" => format!(
            "probe the Function URL ({})",
            args.get("tiers").map(String::as_str).unwrap_or("T0,T1")
        ),
        "manual.approve" => format!("wait for approval: {}", a("message")),
        "secret.observe" => format!("read which version of {} is AWSCURRENT", a("secret")),
        "secret.stage" => format!("stage the new value of {} as AWSPENDING", a("secret")),
        "secret.prove_pending" => format!(
            "publish a candidate version reading AWSPENDING of {} and probe it T2",
            a("secret")
        ),
        "secret.promote" => format!(
            "move AWSCURRENT of {} to version {}",
            a("secret"),
            a("version")
        ),
        "secret.unstage" => format!(
            "remove AWSPENDING of {} from version {}",
            a("secret"),
            a("version")
        ),
        "github.update_secret" => {
            format!("update the GitHub Actions secret mapped to {}", a("secret"))
        }
        "backup.take" => "take a recovery point".into(),
        "pipeline.inspect" => format!("read the latest execution of pipeline {}", a("pipeline")),
        "pipeline.recover" => format!(
            "retry the failed stage of {} (or start it), up to {} time(s), and wait",
            a("pipeline"),
            a("max_retries")
        ),
        "restore.preflight" => format!(
            "check the target {}, the identity and point {} (no writes)",
            a("region"),
            args.get("point").map(String::as_str).unwrap_or("latest")
        ),
        "restore.secrets" => format!(
            "recreate the secrets of point {} in {} (AWSCURRENT and AWSPREVIOUS)",
            a("point"),
            a("region")
        ),
        "restore.code" => format!(
            "copy the code package of point {} into the artifact bucket in {}",
            a("point"),
            a("region")
        ),
        "restore.stack" => format!(
            "create the stack in {} from point {} (region-bound values rewritten)",
            a("region"),
            a("point")
        ),
        "restore.function" => format!(
            "publish, probe and pin the function in {}, point live, check the Function URL",
            a("region")
        ),
        "dns.point_at" => format!("send the service's DNS name to {}", a("host")),
        "restore.failback_preflight" => {
            "check the standby, the primary, the identity and the point (no writes)".into()
        }
        "restore.retire_standby" => match args.get("retire").map(String::as_str) {
            Some("true") => format!("delete the standby stack in {}", a("region")),
            _ => format!(
                "keep the standby stack in {} (--retire-standby not given)",
                a("region")
            ),
        },
        n if n.starts_with("ci.") => ci_specs::describe(n, args),
        n if n.starts_with("front_door.") => front::describe(n, args),
        _ => name.to_string(),
    }
}

pub(crate) fn arg<'a>(args: &'a Args, k: &str) -> Result<&'a str> {
    args.get(k)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::failed(format!("argument {k:?} is empty")))
}

pub(crate) fn flag(args: &Args, k: &str) -> Result<bool> {
    match args.get(k).map(String::as_str).unwrap_or("") {
        "" | "false" => Ok(false),
        "true" => Ok(true),
        other => Err(Error::failed(format!(
            "argument {k:?} must be true or false, not {other:?}"
        ))),
    }
}
