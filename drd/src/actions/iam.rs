//! What each action and check may call on AWS, beside the dispatch in mod.rs: a runbook run
//! declares the union of its steps' capabilities (`runbook_caps`), and `drd iam policy
//! --runbook R` renders the same union. An action missing here is refused by the audit.

use crate::iam::caps::{self, Cap};

/// The capabilities one step's action (or check) needs; `None` for a name drd does not know.
pub fn caps_of(name: &str) -> Option<&'static [&'static Cap]> {
    use caps::*;
    const ROTATE: &[&Cap] = &[
        &SECRETS_ROTATE,
        &FUNCTION_READ,
        &FUNCTION_CODE,
        &FUNCTION_PUBLISH,
        &FUNCTION_INVOKE,
    ];
    const PREFLIGHT: &[&Cap] = &[
        &STORE_READ,
        &STACK_READ,
        &FUNCTION_READ,
        &FUNCTION_INVOKE,
        &DNS_READ,
        &SECRETS_READ,
        &DOOR_READ,
    ];
    const PIN: &[&Cap] = &[
        &FUNCTION_READ,
        &FUNCTION_INVOKE,
        &STORE_READ,
        &STORE_WRITE,
        &STORE_RELEASE,
    ];
    Some(match name {
        "lambda.observe" | "lambda.verify_code" | "lambda.alias_is" | "lambda.latest_clean" => {
            &[&FUNCTION_READ]
        }
        "lambda.choose_rollback_target" => &[&FUNCTION_READ, &STORE_READ],
        "lambda.point_alias" => &[&FUNCTION_READ, &FUNCTION_PUBLISH],
        "lambda.pin" => PIN,
        "probe.url" | "restore.function_healthy" => &[&FUNCTION_READ, &FUNCTION_INVOKE],
        "manual.approve" => &[&STORE_READ, &STORE_WRITE],
        "pin.exists" | "backup.has_secret_version" | "backup.captures" => &[&STORE_READ],
        "secret.observe" | "secret.stage_is" | "secret.stage_absent" => &[&SECRETS_READ],
        "secret.stage" | "secret.prove_pending" | "secret.promote" | "secret.unstage" => ROTATE,
        "github.update_secret" | "github.secret_updated" => &[&SECRETS_READ, &TOKEN_READ],
        "backup.take" => BACKUP,
        "pipeline.inspect" | "pipeline.recover" | "pipeline.latest_succeeded" => &[&PIPELINE_RUN],
        "restore.preflight" | "restore.failback_preflight" => PREFLIGHT,
        "restore.secrets" | "restore.secrets_match" => {
            &[&STORE_READ, &SECRETS_READ, &SECRETS_CREATE]
        }
        "restore.code" => &[&STORE_READ, &ARTIFACTS],
        "restore.code_present" => &[&ARTIFACTS_READ],
        "restore.stack" => &[
            &STACK_READ,
            &STACK_WRITE,
            &ARTIFACTS,
            &LOGS,
            &SECRETS_DESCRIBE,
        ],
        "restore.stack_matches" => &[&STACK_READ],
        "restore.function" => &[
            &FUNCTION_READ,
            &FUNCTION_PUBLISH,
            &FUNCTION_URL,
            &FUNCTION_INVOKE,
            &STORE_READ,
            &STORE_WRITE,
            &STORE_RELEASE,
        ],
        "dns.point_at" => &[&DNS_READ, &DNS_WRITE],
        "dns.points_at" => &[&DNS_READ],
        "restore.retire_standby" | "restore.standby_retired" => &[
            &STACK_READ,
            &STACK_DELETE,
            &DNS_READ,
            &DNS_WRITE,
            &DOOR_READ,
            &DOOR_DELETE,
        ],
        n if n.starts_with("front_door.") => {
            &[&DOOR_READ, &DOOR_WRITE, &FUNCTION_READ, &FUNCTION_URL]
        }
        n if n.starts_with("ci.") => &[
            &IDENTITY,
            &STORE_CREATE,
            &CI_INSTALL,
            &PIPELINE_RUN,
            &STORE_READ,
            &STORE_WRITE,
            &STORE_RELEASE,
            &TOKEN_READ,
            &FUNCTION_READ,
        ],
        _ => return None,
    })
}

/// What taking a recovery point calls (the `backup` command, the daemon's job, `backup.take`).
pub const BACKUP: &[&Cap] = &[
    &caps::STORE_READ,
    &caps::STORE_WRITE,
    &caps::STORE_RELEASE,
    &caps::STORE_CREATE,
    &caps::STORE_ASSUME,
    &caps::STACK_READ,
    &caps::FUNCTION_READ,
    &caps::SECRETS_READ,
    &caps::LOGS_READ,
    &caps::ARTIFACTS_READ,
];

/// What every runbook run needs besides its steps: the journal, the run's lease, the active
/// region and the store's role.
pub const RUNBOOK_BASE: &[&Cap] = &[
    &caps::STORE_READ,
    &caps::STORE_WRITE,
    &caps::STORE_RELEASE,
    &caps::STORE_ASSUME,
];

/// The capabilities of a runbook's steps and checks, and the runner's own.
pub fn runbook_caps(steps: &[(&str, Option<&str>)]) -> Vec<&'static Cap> {
    let mut out: Vec<&'static Cap> = RUNBOOK_BASE.to_vec();
    for (action, check) in steps {
        for name in std::iter::once(*action).chain(*check) {
            for c in caps_of(name).unwrap_or(&[]) {
                if !out.iter().any(|o| o.name == c.name) {
                    out.push(c);
                }
            }
        }
    }
    out
}
