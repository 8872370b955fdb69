//! The built-in actions runbook steps are made of, and the checks that prove their effects.
//!
//! Every action is idempotent: it reads first and writes only on a difference, so running it on
//! an already-converged system is a no-op (which its check then confirms). Actions that only read
//! (`writes: false`) may run during planning to resolve later steps' arguments; actions that write
//! never do.

mod lambda;
mod manual;

pub use lambda::{pin_version, PinOutcome};

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
    ACTIONS.iter().find(|a| a.name == name)
}

pub fn check_spec(name: &str) -> Option<&'static ActionSpec> {
    CHECKS.iter().find(|a| a.name == name)
}

pub fn names(checks: bool) -> impl Iterator<Item = &'static str> {
    (if checks { CHECKS } else { ACTIONS })
        .iter()
        .map(|a| a.name)
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
        other => Err(Error::failed(format!("unknown check {other}"))),
    }
}

/// A one-line description of what a (write) step would do, for plans.
pub fn describe(name: &str, args: &Args) -> String {
    let a = |k: &str| args.get(k).map(String::as_str).unwrap_or("?");
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
