//! `drd iam policy`: the IAM policy each command, runbook and the daemon needs, rendered from the
//! declarations the code is audited against (drd/src/iam), scoped to the policy's resources.
//!
//! This file holds the commands' declarations: what each command calls itself. A command that
//! runs a runbook adds the runbook's steps (actions/iam.rs) when the run starts.

use super::Cli;
use crate::error::{ConfigError, Result};
use crate::iam::caps::{self, Cap};
use crate::iam::render::{self, Scope};
use crate::policy::Policy;
use std::collections::BTreeSet;

/// The declarations of every command that reaches AWS: the command (its subcommand path), what
/// it calls itself, and the built-in runbook it runs (whose steps it needs too).
pub const COMMANDS: &[(&str, &[&Cap], Option<&str>)] = {
    use caps::*;
    // open_store makes the bucket on first use (and reads its Object Lock setting).
    const STORE_RW: &[&Cap] = &[
        &STORE_READ,
        &STORE_WRITE,
        &STORE_RELEASE,
        &STORE_CREATE,
        &STORE_ASSUME,
    ];
    const MIRROR: &[&Cap] = &[
        &STORE_READ,
        &STORE_WRITE,
        &STORE_RELEASE,
        &STORE_CREATE,
        &STORE_ASSUME,
        &TOKEN_READ,
    ];
    const STATUS: &[&Cap] = &[
        &STACK_READ,
        &FUNCTION_READ,
        &FUNCTION_INVOKE,
        &DOOR_READ,
        &DNS_READ,
        &STORE_READ,
        &STORE_ASSUME,
    ];
    &[
        ("validate", &[], None),
        (
            "check",
            &[
                &IDENTITY,
                &STACK_READ,
                &FUNCTION_LIST,
                &SECRETS_DESCRIBE,
                &STORE_READ,
                &STORE_ASSUME,
                &ARTIFACTS_READ,
            ],
            None,
        ),
        (
            "deploy",
            &[
                &ARTIFACTS,
                &SECRETS_DESCRIBE,
                &SECRETS_CREATE,
                &STACK_READ,
                &STACK_WRITE,
                &FUNCTION_READ,
                &FUNCTION_PUBLISH,
                &FUNCTION_URL,
                &FUNCTION_INVOKE,
                &LOGS,
                &DNS_READ,
                &DNS_WRITE,
                &DOOR_READ,
                &DOOR_WRITE,
                &STORE_READ,
                &STORE_WRITE,
                &STORE_RELEASE,
                &STORE_CREATE,
                &STORE_ASSUME,
            ],
            None,
        ),
        ("status", STATUS, None),
        ("backup", crate::actions::iam::BACKUP, None),
        ("points list", &[&STORE_READ, &STORE_ASSUME], None),
        ("points show", &[&STORE_READ, &STORE_ASSUME], None),
        ("points reindex", STORE_RW, None),
        ("verify", &[&STORE_READ, &STORE_ASSUME], None),
        (
            "prune",
            &[
                &STORE_READ,
                &STORE_WRITE,
                &STORE_RELEASE,
                &STORE_PRUNE,
                &STORE_ASSUME,
            ],
            None,
        ),
        (
            "pin",
            &[
                &STORE_CREATE,
                &FUNCTION_READ,
                &FUNCTION_INVOKE,
                &STORE_READ,
                &STORE_WRITE,
                &STORE_RELEASE,
                &STORE_ASSUME,
            ],
            None,
        ),
        ("unlock", STORE_RW, None),
        ("rollback", STORE_RW, Some("lambda-rollback")),
        ("rotate", STORE_RW, Some("secret-rotation")),
        ("restore", STORE_RW, Some("region-redeploy")),
        ("failback", STORE_RW, Some("failback")),
        ("failover-ci", STORE_RW, Some("ci-failover")),
        ("runbook run", STORE_RW, None),
        ("runbook status", &[&STORE_READ, &STORE_ASSUME], None),
        ("runbook approve", STORE_RW, None),
        (
            "ci install",
            &[&IDENTITY, &CI_INSTALL, &STORE_READ, &STORE_ASSUME],
            None,
        ),
        ("mirror", MIRROR, None),
        ("mirror push", MIRROR, None),
        ("runbook list", &[], None),
        ("runbook show", &[], None),
        ("drill list", &[], None),
        ("drill validate", &[], None),
        (
            "drill run",
            &[
                &IDENTITY,
                &REHEARSAL,
                &STORE_READ,
                &STORE_WRITE,
                &STORE_RELEASE,
                &STORE_ASSUME,
                &FUNCTION_READ,
                &FUNCTION_INVOKE,
                &FUNCTION_CODE,
                &FUNCTION_PUBLISH,
                &FUNCTION_DELETE_VERSION,
                &FUNCTION_THROTTLE,
                &ARTIFACTS,
                &ALARMS_READ,
                &SECRETS_READ,
                &DNS_READ,
                &DOOR_READ,
                &STACK_READ,
                &STACK_DELETE,
            ],
            None,
        ),
        ("drill report", &[&STORE_READ, &STORE_ASSUME], None),
        ("schedule", &[], None),
        ("iam policy", &[], None),
        ("iam table", &[], None),
    ]
};

/// What the daemon's jobs call besides a backup's (`daemon_base`): verify, pin, the status page
/// and alerts; prune and drills only where the schedule has them (`daemon_caps`).
const DAEMON_MORE: &[&Cap] = &[
    &caps::FUNCTION_INVOKE,
    &caps::DOOR_READ,
    &caps::DNS_READ,
    &caps::ALERTS,
    &caps::TOKEN_READ,
];

/// Every daemon's capabilities: its backup job's and `DAEMON_MORE`.
fn daemon_base() -> Vec<&'static Cap> {
    let mut v = crate::actions::iam::BACKUP.to_vec();
    v.extend_from_slice(DAEMON_MORE);
    v
}

fn builtin_runbook_caps(name: &str) -> Vec<&'static Cap> {
    crate::runbook::load(None, name)
        .map(|rb| crate::runbook::exec::iam_caps(&rb))
        .unwrap_or_default()
}

/// Everything a command may call: its own declaration and its runbook's steps. `None` for a
/// command drd does not know (the audit then refuses every call).
pub fn command_caps(chain: &str) -> Option<Vec<&'static Cap>> {
    if chain == "daemon" {
        let mut v = daemon_base();
        v.push(&caps::STORE_PRUNE);
        // Any drill the schedule can name.
        v.extend(command_caps("drill run").unwrap_or_default());
        return Some(v);
    }
    let (name, runbook) = match chain.strip_prefix("runbook run ") {
        Some(rb) => ("runbook run", Some(rb.to_string())),
        None => (chain, None),
    };
    let (_, own, rb) = COMMANDS.iter().find(|(c, _, _)| *c == name)?;
    let mut v: Vec<&'static Cap> = own.to_vec();
    let rb = runbook.or(rb.map(str::to_string));
    if let Some(rb) = rb {
        v.extend(builtin_runbook_caps(&rb));
    }
    if name == "drill run" {
        for rb in [
            "lambda-rollback",
            "secret-rotation",
            "region-redeploy",
            "failback",
        ] {
            v.extend(builtin_runbook_caps(rb));
        }
    }
    Some(v)
}

/// The runtime declaration of a command (main.rs): its actions; nothing for a command that
/// never reaches AWS.
pub fn declared_actions(chain: &str) -> BTreeSet<String> {
    command_caps(chain)
        .map(|c| caps::actions(&c))
        .unwrap_or_default()
}

/// The daemon's capabilities for one policy: its schedule decides prune and drills.
pub fn daemon_caps(policy: &Policy) -> Vec<&'static Cap> {
    let mut v = daemon_base();
    for s in &policy.daemon.schedule {
        let job = s.job.get_ref();
        if job == "prune" {
            v.push(&caps::STORE_PRUNE);
        } else if job.starts_with("drill:") {
            v.extend(command_caps("drill run").unwrap_or_default());
        } else if let Some(rb) = job.strip_prefix("runbook:") {
            v.extend(builtin_runbook_caps(rb));
        }
    }
    v
}

/// The resource names of `policy`, for rendering.
pub fn scope_of(policy: &Policy, account: Option<&str>, widen: bool) -> Scope {
    let mut store_buckets = vec![policy.backup.bucket.get_ref().clone()];
    store_buckets.extend(
        policy
            .backup
            .copies
            .iter()
            .map(|c| c.bucket.get_ref().clone()),
    );
    let mut token_secrets: Vec<String> = vec![];
    if let Some(g) = &policy.github {
        token_secrets.push(g.token_secret.clone());
    }
    if let Some(t) = policy.ci.as_ref().and_then(|c| c.token_secret.clone()) {
        token_secrets.push(t);
    }
    token_secrets.sort();
    token_secrets.dedup();
    let mut pipelines: Vec<String> = policy
        .pipeline
        .iter()
        .map(|p| p.name.get_ref().clone())
        .collect();
    if policy.ci.is_some() {
        pipelines.push(format!("{}-*", policy.stack_name()));
    }
    let mut secrets = policy.secret_names();
    secrets.extend(policy.secrets.generated.iter().map(|s| s.get_ref().clone()));
    secrets.sort();
    secrets.dedup();
    Scope {
        account: account.unwrap_or("*").to_string(),
        stack: policy.stack_name().to_string(),
        function: policy.function_name().to_string(),
        store_buckets,
        artifact_prefix: policy.artifacts.bucket_prefix.get_ref().clone(),
        secrets,
        api_key_secret: Some(policy.api_key_secret().to_string()),
        token_secrets,
        pipelines,
        topic: policy
            .alerts
            .sns
            .as_ref()
            .map(|s| s.topic_arn.get_ref().clone()),
        store_roles: policy.backup.role_arns(),
        store_via_role: policy.backup.role_arn.is_some(),
        widen,
    }
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd iam policy --command deploy --account 123456789012\n  drd iam policy --runbook lambda-rollback\n  drd iam policy --daemon\n  drd iam policy --store-bucket\n  drd iam policy --store-role prune\n  drd iam table"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: IamCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IamCommand {
    /// Print the IAM policy JSON one use needs, scoped to the policy's resources.
    Policy(PolicyArgs),
    /// Print docs/permissions.md's table: every command's capabilities and actions.
    Table,
}

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub what: What,
    /// The account id for ARNs (default `*`).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// Widen resources to `*` for services the lab's emulator cannot scope (S3, IAM and STS
    /// keep theirs) and add the emulator's names for actions: the lab's least-privilege users.
    #[arg(long)]
    pub lab: bool,
}

/// Whose policy: exactly one.
#[derive(Debug, clap::Args)]
#[group(id = "what", required = true, multiple = false)]
pub struct What {
    /// A command, as you type it (`deploy`, `points show`, `runbook run NAME`).
    #[arg(long)]
    pub command: Option<String>,
    /// A runbook (built-in or in --runbooks): its steps and the runner's own calls.
    #[arg(long)]
    pub runbook: Option<String>,
    /// The daemon's role, for the policy's schedule (it never holds the prune role's deletes
    /// when the store is protected, see docs/store-account.md).
    #[arg(long)]
    pub daemon: bool,
    /// The store bucket's own policy (a store in its own account: backup.role_arn writes,
    /// backup.prune_role_arn alone deletes, no principal overwrites a point or a blob).
    #[arg(long)]
    pub store_bucket: bool,
    /// The function's own execution role (what the classifier calls).
    #[arg(long)]
    pub function_role: bool,
    /// A store role's identity policy, in the store's account: `writer` (backup.role_arn: read,
    /// add, release its own leases; never delete a point) or `prune` (backup.prune_role_arn).
    #[arg(long, value_name = "ROLE", value_parser = ["writer", "prune"])]
    pub store_role: Option<String>,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    match &args.command {
        IamCommand::Table => {
            print!("{}", table());
            Ok(())
        }
        IamCommand::Policy(a) => {
            let policy = cli.load_policy()?;
            let doc = policy_doc(&policy, a, Some(cli.runbooks.as_path()))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("JSON serializes")
            );
            Ok(())
        }
    }
}

/// The document `drd iam policy` prints.
pub fn policy_doc(
    policy: &Policy,
    a: &PolicyArgs,
    runbooks: Option<&std::path::Path>,
) -> Result<serde_json::Value> {
    let scope = scope_of(policy, a.account.as_deref(), a.lab);
    if a.what.store_bucket {
        return crate::store::protect::bucket_policy(policy);
    }
    if a.what.function_role {
        return Ok(render::policy(FUNCTION_ROLE, &scope));
    }
    if let Some(role) = &a.what.store_role {
        // The store's own roles: their grants are on the store itself.
        let scope = Scope {
            store_via_role: false,
            ..scope
        };
        let caps = if role == "prune" {
            STORE_PRUNE_ROLE
        } else {
            STORE_WRITER_ROLE
        };
        return Ok(render::policy(caps, &scope));
    }
    let caps = if a.what.daemon {
        daemon_caps(policy)
    } else if let Some(rb) = &a.what.runbook {
        let rb = crate::runbook::load(runbooks, rb)?;
        crate::runbook::exec::iam_caps(&rb)
    } else {
        let c = a.what.command.as_deref().unwrap_or_default();
        command_caps(c).ok_or_else(|| {
            ConfigError::new(
                "--command",
                format!("{c:?} is not a drd command that reaches AWS"),
            )
            .hint(format!(
                "one of: {}",
                COMMANDS
                    .iter()
                    .filter(|(_, caps, rb)| !caps.is_empty() || rb.is_some())
                    .map(|(c, _, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?
    };
    Ok(render::policy(&caps, &scope))
}

/// The store's writer role (`backup.role_arn`): everything drd does in the store but delete a
/// point or a blob.
pub const STORE_WRITER_ROLE: &[&Cap] = &[
    &caps::STORE_READ,
    &caps::STORE_WRITE,
    &caps::STORE_RELEASE,
    &caps::STORE_CREATE,
];

/// The store's prune role (`backup.prune_role_arn`): the writer's reads and writes, and the
/// deletes of expired points and unreferenced blobs.
pub const STORE_PRUNE_ROLE: &[&Cap] = &[
    &caps::STORE_READ,
    &caps::STORE_WRITE,
    &caps::STORE_RELEASE,
    &caps::STORE_PRUNE,
];

/// What the classifier itself calls (classifier/src/key.rs reads the API key; the Lambda
/// service writes its logs): classifier/stack.yaml's FunctionRole must grant exactly this.
pub const FUNCTION_ROLE: &[&Cap] = &[&caps::FUNCTION_OWN_SECRET];

/// docs/permissions.md's generated table.
pub fn table() -> String {
    let mut out = String::from("| command | capabilities | actions |\n|---|---|---|\n");
    for (c, _, _) in COMMANDS {
        let caps = command_caps(c).unwrap_or_default();
        if caps.is_empty() {
            continue;
        }
        out.push_str(&format!("| `{c}` | {} |\n", render::table_row(&caps)));
    }
    out.push_str(&format!(
        "| `daemon` (every job) | {} |\n",
        render::table_row(&command_caps("daemon").unwrap_or_default())
    ));
    out.push_str("\n| capability | used by | actions and resources |\n|---|---|---|\n");
    for c in caps::ALL {
        let grants: Vec<String> = c
            .grants
            .iter()
            .map(|g| format!("{} on {:?}", g.actions.join(", "), g.on))
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            c.name,
            c.why,
            grants.join("; ")
        ));
    }
    out
}

/// Commands that never call AWS themselves (the sandbox's are the lab's own, with its own
/// credentials): no declaration, so the audit refuses any call they would make.
pub const NO_AWS: &[&str] = &[
    "completions",
    "man",
    "sandbox",
    "validate",
    "schedule",
    "iam",
];

#[cfg(test)]
mod tests;
