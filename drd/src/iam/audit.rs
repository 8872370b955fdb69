//! What a running drd may call, and what it did call.
//!
//! The command sets its declared actions once (`declare`); every SDK request passes `observe`
//! (from the interceptor every client carries, `aws::Where`), which maps the operation to the
//! IAM action AWS checks for it. With `DRD_IAM_RECORD=FILE` each call is appended to FILE
//! (`command<TAB>action<TAB>service:Operation`); with `DRD_IAM_AUDIT=1` a call whose action the
//! command did not declare fails before it is sent, naming the action and the command. The
//! end-to-end suite runs every drd it starts with the audit on, so a new call without its
//! declaration fails the test that exercises it.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;

/// What the running command declared: its name and the IAM actions it may use.
#[derive(Debug, Clone)]
pub struct Declared {
    pub command: String,
    pub actions: BTreeSet<String>,
}

static DECLARED: Mutex<Option<Declared>> = Mutex::new(None);

thread_local! {
    /// A declaration and audit switch for this thread only (the checker's own tests), which
    /// takes precedence over the process's.
    static LOCAL: std::cell::RefCell<Option<(Declared, bool)>> = const { std::cell::RefCell::new(None) };
}

/// Make `declared` this thread's declaration, with the audit on or off, whatever the process
/// declared or the environment says, until the guard drops. For tests of the checker itself (a
/// current-thread runtime polls every call on this thread).
pub fn local(declared: Declared, audit: bool) -> LocalGuard {
    let previous = LOCAL.with(|l| l.borrow_mut().replace((declared, audit)));
    LocalGuard(previous)
}

/// Ends `local`'s declaration, putting back the one it replaced.
pub struct LocalGuard(Option<(Declared, bool)>);

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        LOCAL.with(|l| *l.borrow_mut() = previous);
    }
}

/// Set what this process may call (one command per process; the daemon declares its jobs'
/// union).
pub fn declare(command: &str, actions: BTreeSet<String>) {
    *DECLARED.lock().expect("iam declared") = Some(Declared {
        command: command.to_string(),
        actions,
    });
}

/// Widen the declaration (a runbook learns its steps after the command started).
pub fn declare_more(actions: impl IntoIterator<Item = String>) {
    if let Some(d) = DECLARED.lock().expect("iam declared").as_mut() {
        d.actions.extend(actions);
    }
}

pub fn declared() -> Option<Declared> {
    DECLARED.lock().expect("iam declared").clone()
}

/// The IAM actions AWS checks for one SDK operation (`service` as the SDK's metadata names it).
/// Most are `prefix:Operation`; the table lists the exceptions.
pub fn actions_of(service: &str, operation: &str) -> Vec<String> {
    let prefix = match service {
        "cloudwatchlogs" | "logs" => "logs",
        "apigatewayv2" => "apigateway",
        other => other,
    };
    if prefix == "apigateway" {
        // API Gateway authorizes by HTTP verb on the resource path.
        let verb = if operation.starts_with("Get") {
            "GET"
        } else if operation.starts_with("Create") {
            "POST"
        } else if operation.starts_with("Update") {
            "PATCH"
        } else if operation.starts_with("Delete") {
            "DELETE"
        } else {
            "POST"
        };
        return vec![format!("apigateway:{verb}")];
    }
    let one = |a: &str| vec![format!("{prefix}:{a}")];
    match (prefix, operation) {
        ("s3", "HeadObject") => one("GetObject"),
        ("s3", "HeadBucket" | "ListObjectsV2" | "ListObjects") => one("ListBucket"),
        ("s3", "ListObjectVersions") => one("ListBucketVersions"),
        ("s3", "GetObjectLockConfiguration") => one("GetBucketObjectLockConfiguration"),
        ("s3", "PutObjectLockConfiguration") => one("PutBucketObjectLockConfiguration"),
        ("s3", "DeleteObjects") => one("DeleteObject"),
        ("s3", "CopyObject") => vec!["s3:GetObject".into(), "s3:PutObject".into()],
        (
            "s3",
            "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" | "UploadPartCopy",
        ) => one("PutObject"),
        ("s3", "AbortMultipartUpload") => one("AbortMultipartUpload"),
        ("s3", "GetBucketVersioning") => one("GetBucketVersioning"),
        ("lambda", "Invoke") => one("InvokeFunction"),
        ("lambda", "GetFunctionConfiguration") => one("GetFunctionConfiguration"),
        (_, op) => one(op),
    }
}

/// Whether `action` is covered by one of `declared` (exact, or a `prefix:*` wildcard).
pub fn covered(declared: &BTreeSet<String>, action: &str) -> bool {
    if declared.contains(action) || declared.contains("*") {
        return true;
    }
    let prefix = action.split(':').next().unwrap_or("");
    declared.contains(&format!("{prefix}:*"))
}

/// Actions a call needs that `declared` lacks.
pub fn undeclared(declared: &BTreeSet<String>, service: &str, operation: &str) -> Vec<String> {
    actions_of(service, operation)
        .into_iter()
        .filter(|a| !covered(declared, a))
        .collect()
}

/// One SDK call is about to be made: record it and, under `DRD_IAM_AUDIT`, refuse it when the
/// running command did not declare its action. Calls outside any command (the lab, tests'
/// second clients) pass unrecorded.
pub fn observe(service: &str, operation: &str) -> Result<(), String> {
    // The SDK names services by their SDK id ("S3", "Secrets Manager", "CloudWatch Logs").
    let service = &service.to_lowercase().replace(' ', "");
    let local = LOCAL.with(|l| l.borrow().clone());
    let (d, audit) = match local {
        Some((d, audit)) => (d, audit),
        None => {
            let Some(d) = declared() else { return Ok(()) };
            let audit =
                std::env::var_os("DRD_IAM_AUDIT").is_some_and(|v| !v.is_empty() && v != "0");
            (d, audit)
        }
    };
    let actions = actions_of(service, operation);
    if let Some(path) = std::env::var_os("DRD_IAM_RECORD") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            for a in &actions {
                let mark = if covered(&d.actions, a) {
                    ""
                } else {
                    "\tundeclared"
                };
                // One short write per line: appends from several processes do not interleave.
                let _ = f.write_all(
                    format!("{}\t{a}\t{service}:{operation}{mark}\n", d.command).as_bytes(),
                );
            }
        }
    }
    if audit {
        let missing = undeclared(&d.actions, service, operation);
        if !missing.is_empty() {
            return Err(format!(
                "drd called {service}:{operation}, which needs {}, and `{}` does not declare it: \
                 add it to the command's or the step's declaration (drd/src/iam) so that \
                 `drd iam policy` grants it",
                missing.join(", "),
                d.command
            ));
        }
    }
    Ok(())
}
