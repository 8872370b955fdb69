//! Bad inputs through the real binary: a corpus of broken policies, runbooks, identity files and
//! secret values (offline: nothing may reach AWS), and of broken manifests, blobs, journal
//! entries, lease records, active-region records and pin files planted in one sandbox's store.
//! Every case must exit 2 (usage or configuration) or 1 (failure) with a message naming the
//! file, field or object, never panic, and write or delete nothing.

use drd_e2e::{age_keygen, bootstrap, drd_bin, root, text, Sandbox};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A public recipient (the shipped example's): the offline cases never encrypt anything.
const RECIPIENT: &str = "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k";
const PRIVATE: &str = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
/// The sandbox's stack, its store bucket, and the API key it runs with.
const STACK: &str = "badin";
const BUCKET: &str = "badin-points";
const KEY: &str = "sk-bad-inputs-test-5d3f";
/// A stack that is never deployed: its refused deploys must leave nothing behind.
const FRESH: &str = "badin-fresh";

/// An age secret key (the prefix and at least 10 of its characters) or an OpenSSH private key.
fn shows_key_material(t: &str) -> bool {
    t.contains("BEGIN OPENSSH PRIVATE KEY")
        || t.match_indices("AGE-SECRET-KEY-1").any(|(i, m)| {
            t[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                .count()
                >= 10
        })
}

/// One bad input and what drd must do with it.
struct Case {
    /// policy, runbook, identity, secret, manifest, blob, journal, lease, active-region, pin
    kind: &'static str,
    name: &'static str,
    /// What the input breaks, i.e. why drd must refuse it.
    why: &'static str,
    /// drd's arguments; store cases get `--policy` from the runner unless they name one.
    args: Vec<String>,
    exit: i32,
    /// What the output (stdout and stderr) must name: the file, field or object.
    needles: Vec<String>,
    /// Files written into the case's own directory (the command runs there).
    files: Vec<(String, Vec<u8>)>,
    /// An object put into the store bucket before the run (full key, content).
    plant: Vec<(String, Vec<u8>)>,
    stdin: String,
    /// What the output must never contain (secret values).
    hidden: Vec<String>,
}

fn case(
    kind: &'static str,
    name: &'static str,
    why: &'static str,
    args: &[&str],
    exit: i32,
    needles: &[&str],
) -> Case {
    Case {
        kind,
        name,
        why,
        args: args.iter().map(|s| s.to_string()).collect(),
        exit,
        needles: needles.iter().map(|s| s.to_string()).collect(),
        files: vec![],
        plant: vec![],
        stdin: String::new(),
        hidden: vec![],
    }
}

impl Case {
    fn file(mut self, path: &str, body: impl AsRef<[u8]>) -> Self {
        self.files.push((path.to_string(), body.as_ref().to_vec()));
        self
    }

    fn plant(mut self, key: &str, body: impl AsRef<[u8]>) -> Self {
        self.plant.push((key.to_string(), body.as_ref().to_vec()));
        self
    }

    fn stdin(mut self, s: &str) -> Self {
        self.stdin = s.to_string();
        self
    }

    fn hidden(mut self, s: &str) -> Self {
        self.hidden.push(s.to_string());
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Policies: each row breaks the good policy in exactly one place.

/// How a policy case breaks the good policy.
enum Edit {
    /// Replace the first occurrence of the text.
    Replace(&'static str, &'static str),
    /// Append sections; their first line is line 14.
    Append(&'static str),
    /// The whole file.
    Whole(&'static str),
    /// No policy file at `nowhere.toml`.
    Absent,
}

struct PolicyRow {
    name: &'static str,
    why: &'static str,
    edit: Edit,
    /// The command (`--policy` is added).
    cmd: &'static [&'static str],
    needles: &'static [&'static str],
}

/// The sound policy every row breaks. Lines: 2 name, 8 bucket_prefix, 11 bucket, 12 region,
/// 13 recipients; appended sections start at line 14.
fn good_policy() -> String {
    format!(
        r#"[stack]
name = "bad-inputs"
primary_region = "us-east-1"
template = {template:?}
function_name = "bad-inputs-fn"

[artifacts]
bucket_prefix = "bad-inputs-artifacts"

[backup]
bucket = "bad-inputs-points"
region = "us-west-2"
recipients = ["{RECIPIENT}"]
"#,
        template = root().join("classifier/stack.yaml").display().to_string()
    )
}

const POLICIES: &[PolicyRow] = &[
    PolicyRow {
        name: "a misspelt key",
        why: "strict TOML: an unknown key is a typo that would silently drop a setting",
        edit: Edit::Replace("[artifacts]\n", "[artifacts]\nbucket_prefx = \"x\"\n"),
        cmd: &["validate"],
        needles: &["policy.toml:8:", "unknown field `bucket_prefx`"],
    },
    PolicyRow {
        name: "no store bucket",
        why: "backup.bucket is required: there is nowhere to put recovery points",
        edit: Edit::Replace("bucket = \"bad-inputs-points\"\n", ""),
        cmd: &["backup"],
        needles: &["policy.toml", "missing field `bucket`"],
    },
    PolicyRow {
        name: "an unterminated string",
        why: "not TOML at all",
        edit: Edit::Replace("name = \"bad-inputs\"", "name = \"bad-inputs"),
        cmd: &["status"],
        needles: &["policy.toml:2:"],
    },
    PolicyRow {
        name: "an empty file",
        why: "no [stack] section",
        edit: Edit::Whole(""),
        cmd: &["points", "list"],
        needles: &["policy.toml", "missing field `stack`"],
    },
    PolicyRow {
        name: "a policy file that does not exist",
        why: "nothing to read",
        edit: Edit::Absent,
        cmd: &["validate"],
        needles: &["nowhere.toml", "cannot read the policy file"],
    },
    PolicyRow {
        name: "a count written as a word",
        why: "retention.keep_last must be a number",
        edit: Edit::Append("[retention]\nkeep_last = \"ten\"\n"),
        cmd: &["prune"],
        needles: &["policy.toml:15:", "invalid type"],
    },
    PolicyRow {
        name: "a region name with a typo",
        why: "us-west2 is no AWS region",
        edit: Edit::Replace("region = \"us-west-2\"", "region = \"us-west2\""),
        cmd: &["status"],
        needles: &["policy.toml:12:", "backup.region", "not an AWS region name"],
    },
    PolicyRow {
        name: "the store in the primary region",
        why: "a region loss would take the recovery points with it",
        edit: Edit::Replace("region = \"us-west-2\"", "region = \"us-east-1\""),
        cmd: &["prune"],
        needles: &["policy.toml:12:", "backup.region", "primary region"],
    },
    PolicyRow {
        name: "no recipient",
        why: "secret backups could not be encrypted",
        edit: Edit::Replace("recipients = [\"", "recipients = [] # [\""),
        cmd: &["validate"],
        needles: &["policy.toml:13:", "backup.recipients", "empty"],
    },
    PolicyRow {
        name: "a private identity as the recipient",
        why: "drd must never hold a private key (and must not echo it)",
        edit: Edit::Replace(RECIPIENT, PRIVATE),
        cmd: &["backup"],
        needles: &[
            "policy.toml:13:",
            "backup.recipients[0]",
            "private identity",
        ],
    },
    PolicyRow {
        name: "a recipient with a broken checksum",
        why: "an age1 key that does not decode",
        edit: Edit::Replace("age1nl9upv", "age1xx9upv"),
        cmd: &["validate"],
        needles: &["backup.recipients[0]", "not a valid age X25519 recipient"],
    },
    PolicyRow {
        name: "an e-mail address as the recipient",
        why: "neither an age nor an SSH public key",
        edit: Edit::Replace(RECIPIENT, "ops@example.com"),
        cmd: &["verify"],
        needles: &[
            "policy.toml:13:",
            "backup.recipients[0]",
            "is not an age recipient",
        ],
    },
    PolicyRow {
        name: "an invalid bucket name",
        why: "S3 refuses upper case and '_'",
        edit: Edit::Replace("bucket = \"bad-inputs-points\"", "bucket = \"Bad_Inputs\""),
        cmd: &["backup"],
        needles: &[
            "policy.toml:11:",
            "backup.bucket",
            "not a valid S3 bucket name",
        ],
    },
    PolicyRow {
        name: "a commit that is not a full SHA",
        why: "the CI records commit -> version; a short or symbolic name would be ambiguous",
        edit: Edit::Append(""),
        cmd: &["deploy", "--commit", "abc1234"],
        needles: &["--commit", "not a full commit SHA", "git rev-parse HEAD"],
    },
    PolicyRow {
        name: "a standby pipeline without a template",
        why: "drd ci install deploys [pipeline] template",
        edit: Edit::Append("[pipeline]\nname = \"bad-inputs-standby\"\n"),
        cmd: &["ci", "install"],
        needles: &["pipeline.template", "names no template"],
    },
    PolicyRow {
        name: "a pipeline template that does not exist",
        why: "a path relative to the policy file that points nowhere",
        edit: Edit::Append("[pipeline]\nname = \"bad-inputs-standby\"\ntemplate = \"nope.yaml\"\n"),
        cmd: &["ci", "install"],
        needles: &[
            "nope.yaml",
            "pipeline.template",
            "cannot read the pipeline template",
        ],
    },
    PolicyRow {
        name: "a bucket prefix too short",
        why: "bucket names have 3 to 63 characters",
        edit: Edit::Replace("\"bad-inputs-artifacts\"", "\"ab\""),
        cmd: &["deploy"],
        needles: &["policy.toml:8:", "artifacts.bucket_prefix"],
    },
    PolicyRow {
        name: "Object Lock for zero days",
        why: "a lock must last at least a day",
        edit: Edit::Append("[backup.object_lock]\nmode = \"governance\"\ndays = 0\n"),
        cmd: &["validate"],
        needles: &["policy.toml:16:", "backup.object_lock.days"],
    },
    PolicyRow {
        name: "an unknown Object Lock mode",
        why: "only governance and compliance exist",
        edit: Edit::Append("[backup.object_lock]\nmode = \"forever\"\ndays = 3\n"),
        cmd: &["backup"],
        needles: &["policy.toml", "unknown variant `forever`"],
    },
    PolicyRow {
        name: "a copy in the primary region",
        why: "a copy lost with the primary protects nothing",
        edit: Edit::Append(
            "[[backup.copies]]\nbucket = \"bad-inputs-copy\"\nregion = \"us-east-1\"\n",
        ),
        cmd: &["validate"],
        needles: &["policy.toml:16:", "backup.copies[0].region"],
    },
    PolicyRow {
        name: "a copy into the store bucket itself",
        why: "a copy must be another bucket",
        edit: Edit::Append(
            "[[backup.copies]]\nbucket = \"bad-inputs-points\"\nregion = \"eu-west-1\"\n",
        ),
        cmd: &["backup"],
        needles: &[
            "policy.toml:15:",
            "backup.copies[0].bucket",
            "the backup bucket itself",
        ],
    },
    PolicyRow {
        name: "keep_within that is no duration",
        why: "retention.keep_within must be a duration",
        edit: Edit::Append("[retention]\nkeep_within = \"soon\"\n"),
        cmd: &["prune"],
        needles: &["policy.toml:15:", "retention.keep_within", "not a duration"],
    },
    PolicyRow {
        name: "a generated secret that is not protected",
        why: "secrets.generated must be listed in secrets.others",
        edit: Edit::Append(
            "[secrets]\nothers = [\"github-token\"]\ngenerated = [\"webhook-secret\"]\n",
        ),
        cmd: &["validate"],
        needles: &[
            "policy.toml:16:",
            "secrets.generated[0]",
            "not listed in secrets.others",
        ],
    },
    PolicyRow {
        name: "a repository without its owner",
        why: "github.repository is owner/name",
        edit: Edit::Append("[github]\nrepository = \"classifier\"\n"),
        cmd: &["validate"],
        needles: &["policy.toml:15:", "github.repository"],
    },
    PolicyRow {
        name: "a top-level domain as the hosted zone",
        why: "\"com\" is neither a zone name nor an id",
        edit: Edit::Append("[dns]\nzone = \"com\"\nrecord = \"x.com\"\n"),
        cmd: &["validate"],
        needles: &["policy.toml:15:", "dns.zone"],
    },
    PolicyRow {
        name: "a DNS TTL out of range",
        why: "Route 53 takes 0 to 172800 seconds",
        edit: Edit::Append(
            "[dns]\nzone = \"example.com.\"\nrecord = \"classifier.example.com\"\nttl = 999999\n\n[front_door]\nkind = \"api-gateway\"\n",
        ),
        cmd: &["validate"],
        needles: &["policy.toml:17:", "dns.ttl", "out of range"],
    },
    PolicyRow {
        name: "a DNS record without a front door (the old CNAME-to-URL mode)",
        why: "a Function URL serves no custom name: a TLS client gets the lambda-url certificate",
        edit: Edit::Append("[dns]\nzone = \"example.com.\"\nrecord = \"classifier.example.com\"\n"),
        cmd: &["validate"],
        needles: &["policy.toml:16:", "dns.record", "[front_door]", "migrat"],
    },
    PolicyRow {
        name: "a CloudFront front door",
        why: "CloudFront origin groups fail over GET, HEAD and OPTIONS only; the API is POST",
        edit: Edit::Append(
            "[dns]\nzone = \"example.com.\"\nrecord = \"classifier.example.com\"\n\n[front_door]\nkind = \"cloudfront\"\n",
        ),
        cmd: &["validate"],
        needles: &["policy.toml:19:", "front_door.kind", "POST"],
    },
    PolicyRow {
        name: "a cron expression without seconds",
        why: "drd's cron has 6 or 7 fields",
        edit: Edit::Append("[[daemon.schedule]]\njob = \"backup\"\ncron = \"0 * * * *\"\n"),
        cmd: &["validate"],
        needles: &["policy.toml:16:", "daemon.schedule[0].cron"],
    },
    PolicyRow {
        name: "an unknown scheduled job",
        why: "only backup, verify, prune and runbook:NAME run on schedule",
        edit: Edit::Append("[[daemon.schedule]]\njob = \"backups\"\ncron = \"0 0 * * * *\"\n"),
        cmd: &["validate"],
        needles: &["policy.toml:15:", "daemon.schedule[0].job", "not a job"],
    },
    PolicyRow {
        name: "a listen address without a port",
        why: "daemon.listen is ip:port",
        edit: Edit::Append("[daemon]\nlisten = \"localhost\"\n"),
        cmd: &["validate"],
        needles: &["policy.toml:15:", "daemon.listen", "not an address"],
    },
    PolicyRow {
        name: "an attempt longer than its call",
        why: "aws.attempt_timeout may not exceed aws.operation_timeout",
        edit: Edit::Append("[aws]\noperation_timeout = \"30s\"\nattempt_timeout = \"2m\"\n"),
        cmd: &["status"],
        needles: &["policy.toml:16:", "aws.attempt_timeout"],
    },
];

fn policy_cases() -> Vec<Case> {
    POLICIES
        .iter()
        .map(|p| {
            let mut args = p.cmd.to_vec();
            let text = match p.edit {
                Edit::Replace(from, to) => {
                    let good = good_policy();
                    assert!(
                        good.contains(from),
                        "{}: {from:?} is not in the policy",
                        p.name
                    );
                    good.replacen(from, to, 1)
                }
                Edit::Append(extra) => good_policy() + extra,
                Edit::Whole(t) => t.to_string(),
                Edit::Absent => good_policy(),
            };
            let file = match p.edit {
                Edit::Absent => "nowhere.toml",
                _ => "policy.toml",
            };
            args.extend(["--policy", file]);
            case("policy", p.name, p.why, &args, 2, p.needles).file("policy.toml", text)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Runbooks: files in `rb/` (passed as --runbooks), each with one mistake.

struct RunbookRow {
    name: &'static str,
    why: &'static str,
    /// The file in `rb/`.
    file: &'static str,
    toml: &'static str,
    /// The command (`--runbooks rb --policy policy.toml` are added).
    cmd: &'static [&'static str],
    needles: &'static [&'static str],
}

const COMPENSATION_LOOP: &str = r#"name = "drill"
title = "t"
[[step]]
id = "move"
title = "a"
action = "lambda.point_alias"
args = { version = "2" }
check = "lambda.alias_is"
check_args = { version = "2" }
on_failure = "compensate:undo-a"
[[step]]
id = "undo-a"
title = "b"
action = "lambda.point_alias"
args = { version = "1" }
check = "lambda.alias_is"
check_args = { version = "1" }
on_failure = "compensate:undo-b"
compensation = true
[[step]]
id = "undo-b"
title = "c"
action = "lambda.point_alias"
args = { version = "1" }
check = "lambda.alias_is"
check_args = { version = "1" }
on_failure = "compensate:undo-a"
compensation = true
"#;

const RUNBOOKS: &[RunbookRow] = &[
    RunbookRow {
        name: "an unterminated string",
        why: "not TOML at all",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"unterminated\n",
        cmd: &["runbook", "list"],
        needles: &["rb/drill.toml:2:"],
    },
    RunbookRow {
        name: "a misspelt step key",
        why: "strict TOML: `acton` is a typo of `action`",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\nacton = \"lambda.observe\"\n",
        cmd: &["runbook", "show", "drill"],
        needles: &["rb/drill.toml:6:", "unknown field `acton`"],
    },
    RunbookRow {
        name: "an unknown action",
        why: "no built-in action lambda.rollback",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.rollback\"\n",
        cmd: &["runbook", "run", "drill", "--dry-run"],
        needles: &["rb/drill.toml:6:", "unknown action \"lambda.rollback\""],
    },
    RunbookRow {
        name: "a write without a check",
        why: "a step that changes AWS must name the check proving its effect",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.point_alias\"\nargs = { version = \"2\" }\n",
        cmd: &["validate"],
        needles: &["rb/drill.toml:6:", "changes AWS but the step names no check"],
    },
    RunbookRow {
        name: "a missing argument",
        why: "lambda.point_alias needs the version to move to",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.point_alias\"\ncheck = \"lambda.alias_is\"\ncheck_args = { version = \"2\" }\n",
        cmd: &["runbook", "list"],
        needles: &["rb/drill.toml:6:", "needs the argument \"version\""],
    },
    RunbookRow {
        name: "a reference to a later step",
        why: "a step cannot use an output that does not exist yet (a cycle)",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"choose\"\ntitle = \"choose\"\naction = \"lambda.choose_rollback_target\"\nargs = { current = \"${steps.observe.live_version}\" }\n[[step]]\nid = \"observe\"\ntitle = \"observe\"\naction = \"lambda.observe\"\n",
        cmd: &["runbook", "show", "drill"],
        needles: &["rb/drill.toml:7:", "a reference to a later step is a cycle"],
    },
    RunbookRow {
        name: "an undeclared input",
        why: "${input.version} names no input of the runbook",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.point_alias\"\nargs = { version = \"${input.version}\" }\ncheck = \"lambda.alias_is\"\ncheck_args = { version = \"2\" }\n",
        cmd: &["runbook", "run", "drill", "--dry-run"],
        needles: &["rb/drill.toml:7:", "input \"version\" is not declared"],
    },
    RunbookRow {
        name: "an unknown check",
        why: "no built-in check lambda.alias_was",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.point_alias\"\nargs = { version = \"2\" }\ncheck = \"lambda.alias_was\"\n",
        cmd: &["validate"],
        needles: &["rb/drill.toml:8:", "unknown check \"lambda.alias_was\""],
    },
    RunbookRow {
        name: "too many retries",
        why: "at most 10 retries",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.observe\"\nretries = 50\n",
        cmd: &["runbook", "list"],
        needles: &["rb/drill.toml:7:", "50 retries is too many"],
    },
    RunbookRow {
        name: "a zero timeout",
        why: "a step with no time to run can never succeed",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.observe\"\ntimeout = \"0s\"\n",
        cmd: &["runbook", "show", "drill"],
        needles: &["rb/drill.toml:7:", "must be longer than zero"],
    },
    RunbookRow {
        name: "an unknown failure policy",
        why: "on_failure is stop, continue or compensate:STEP",
        file: "drill.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.observe\"\non_failure = \"rollback\"\n",
        cmd: &["validate"],
        needles: &["rb/drill.toml:7:", "\"rollback\" is not a failure policy"],
    },
    RunbookRow {
        name: "a compensation loop",
        why: "two compensation steps that compensate each other never end",
        file: "drill.toml",
        toml: COMPENSATION_LOOP,
        cmd: &["runbook", "run", "drill", "--dry-run"],
        needles: &["rb/drill.toml:27:", "compensation loops back"],
    },
    RunbookRow {
        name: "a file not named after its runbook",
        why: "runbooks are found by file name",
        file: "other.toml",
        toml: "name = \"drill\"\ntitle = \"t\"\n[[step]]\nid = \"a\"\ntitle = \"a\"\naction = \"lambda.observe\"\n",
        cmd: &["runbook", "list"],
        needles: &["rb/other.toml", "rename the file"],
    },
    RunbookRow {
        name: "an override of a shipped runbook without steps",
        why: "the file replaces the built-in lambda-rollback: a rollback must stop before AWS",
        file: "lambda-rollback.toml",
        toml: "name = \"lambda-rollback\"\ntitle = \"t\"\n",
        cmd: &["rollback", "--dry-run"],
        needles: &["rb/lambda-rollback.toml:1:", "the runbook has no steps"],
    },
];

fn runbook_cases() -> Vec<Case> {
    RUNBOOKS
        .iter()
        .map(|r| {
            let mut args = r.cmd.to_vec();
            args.extend(["--runbooks", "rb", "--policy", "policy.toml"]);
            case("runbook", r.name, r.why, &args, 2, r.needles)
                .file(&format!("rb/{}", r.file), r.toml)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Identity files and secret values, offline: both are read before any AWS call.

/// `drd verify --all --identity FILE`: the identity is read right after the policy.
fn verify_with(name: &'static str, why: &'static str, file: &str, needles: &[&str]) -> Case {
    let args = [
        "verify",
        "--all",
        "--identity",
        file,
        "--policy",
        "policy.toml",
    ];
    case("identity", name, why, &args, 2, needles)
}

fn identity_cases(encrypted_ssh: &[u8], ssh_public: &[u8]) -> Vec<Case> {
    vec![
        verify_with(
            "a missing identity file",
            "nothing to read",
            "missing.txt",
            &["missing.txt", "--identity", "cannot read the identity file"],
        ),
        verify_with(
            "a directory as the identity",
            "not a file",
            "keys",
            &["keys: --identity", "cannot read the identity file"],
        )
        .file("keys/readme.txt", "the key is kept offline"),
        verify_with(
            "an empty identity file",
            "no key in it",
            "empty.txt",
            &["empty.txt", "not an age identity file or SSH private key"],
        )
        .file("empty.txt", ""),
        verify_with(
            "the public recipient instead of the identity",
            "a public key cannot decrypt",
            "recipient.txt",
            &[
                "recipient.txt",
                "not an age identity file or SSH private key",
            ],
        )
        .file("recipient.txt", format!("{RECIPIENT}\n")),
        verify_with(
            "a damaged AGE-SECRET-KEY line",
            "the key does not decode",
            "broken.txt",
            &["broken.txt", "an AGE-SECRET-KEY line does not parse"],
        )
        .file("broken.txt", "# created: today\nAGE-SECRET-KEY-1QQQQQQQQ\n"),
        verify_with(
            "an SSH key under a passphrase",
            "drd never asks for a passphrase",
            "id_ed25519",
            &["id_ed25519", "encrypted or unsupported"],
        )
        .file("id_ed25519", encrypted_ssh),
        verify_with(
            "an SSH public key as the identity",
            "a public key cannot decrypt",
            "id_ed25519.pub",
            &[
                "id_ed25519.pub",
                "not an age identity file or SSH private key",
            ],
        )
        .file("id_ed25519.pub", ssh_public),
        case(
            "identity",
            "a missing identity file for a restore",
            "the restore's identity is checked before anything is read",
            &[
                "restore",
                "--region",
                "us-west-2",
                "--identity",
                "missing.txt",
                "--dry-run",
                "--policy",
                "policy.toml",
            ],
            2,
            &["missing.txt", "cannot read the identity file"],
        ),
    ]
}

fn secret_value_cases() -> Vec<Case> {
    let rotate = &["rotate", "openai-api-key", "--policy", "policy.toml"];
    vec![
        case(
            "secret",
            "an empty new value",
            "nothing to rotate to",
            rotate,
            2,
            &["<stdin>", "the new value is empty"],
        ),
        case(
            "secret",
            "a new value of blanks only",
            "nothing to rotate to",
            rotate,
            2,
            &["<stdin>", "the new value is empty"],
        )
        .stdin("  \n\t\n"),
        case(
            "secret",
            "an API key with a space",
            "an API key is one word",
            rotate,
            2,
            &["<stdin>", "openai-api-key", "contains whitespace"],
        )
        .stdin("sk-one two\n")
        .hidden("sk-one"),
        case(
            "secret",
            "a JSON value cut short",
            "it starts as JSON but does not parse",
            rotate,
            2,
            &["<stdin>", "starts with '{' but is not JSON"],
        )
        .stdin("{\"OPENAI_API_KEY\": \"sk-half")
        .hidden("sk-half"),
        case(
            "secret",
            "JSON without the key's field",
            "the function reads OPENAI_API_KEY",
            rotate,
            2,
            &["<stdin>", "no non-empty string field OPENAI_API_KEY"],
        )
        .stdin("{\"api_key\": \"sk-elsewhere\"}")
        .hidden("sk-elsewhere"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running and judging a case.

/// drd with nothing inherited that could point it elsewhere, and an AWS endpoint that refuses
/// every connection: an offline case that reached AWS would fail with exit 1, not 2.
fn offline(dir: &Path) -> Command {
    let mut c = Command::new(drd_bin());
    for k in [
        "AWS_PROFILE",
        "DRD_POLICY",
        "DRD_REGION",
        "DRD_OUTPUT",
        "DRD_LOG_FORMAT",
        "DRD_BOOTSTRAP",
        "DRD_RUNBOOKS",
        "DRD_FAILPOINT",
        "DRD_LAMBDA_DATA_ENDPOINT",
        "DRD_LOCK_TTL",
        "DRD_MAX_ATTEMPTS",
        "DRD_OPERATION_TIMEOUT",
        "DRD_ATTEMPT_TIMEOUT",
    ] {
        c.env_remove(k);
    }
    c.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("DRD_STATE_DIR", dir.join("state"));
    c
}

/// Run `c` with `args` in `dir`, `stdin` piped in.
fn run(mut c: Command, dir: &Path, args: &[String], stdin: &str) -> Output {
    use std::io::Write;
    c.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn drd");
    let mut pipe = child.stdin.take().expect("drd's stdin");
    // drd may stop before it reads stdin: a broken pipe here is not the case's failure.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().expect("drd output")
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (path, body) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
    }
}

/// Every file (with its content) and directory under `dir`.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d)
            .expect("read the case directory")
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                pending.push(p.clone());
                out.insert(p, None);
            } else {
                let body = std::fs::read(&p).unwrap_or_default();
                out.insert(p, Some(body));
            }
        }
    }
    out
}

/// What is wrong with one run of a case (nothing: it behaved).
fn judge(c: &Case, out: &Output) -> Vec<String> {
    let all = text(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut bad = vec![];
    if out.status.code() != Some(c.exit) {
        bad.push(format!("exit {:?}, expected {}", out.status.code(), c.exit));
    }
    for n in &c.needles {
        if !all.contains(n.as_str()) {
            bad.push(format!("the message does not name {n:?}"));
        }
    }
    for p in ["panicked", "RUST_BACKTRACE"] {
        if stderr.contains(p) {
            bad.push(format!("stderr shows a panic ({p:?})"));
        }
    }
    for h in &c.hidden {
        if all.contains(h.as_str()) {
            bad.push(format!("the output echoes the secret {h:?}"));
        }
    }
    bad
}

fn report(c: &Case, problems: &[String], out: &Output) -> String {
    format!(
        "[{}] {}: {}\n  input: {}\n  ran: drd {}\n{}",
        c.kind,
        c.name,
        problems.join("; "),
        c.why,
        c.args.join(" "),
        text(out)
    )
}

fn assert_counts(cases: &[Case], min: &[(&str, usize)]) {
    for (kind, n) in min {
        let have = cases.iter().filter(|c| c.kind == *kind).count();
        assert!(
            have >= *n,
            "only {have} {kind} case(s); the corpus has at least {n}"
        );
    }
}

/// An ed25519 key pair from the real `ssh-keygen`, the private half under a passphrase:
/// (private key file, public key file).
fn ssh_keys(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args([
            "-t",
            "ed25519",
            "-N",
            "correct horse battery",
            "-q",
            "-C",
            "ops@drd",
            "-f",
        ])
        .arg(&key)
        .output()
        .expect("ssh-keygen (apt install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read(&key).unwrap(),
        std::fs::read(key.with_extension("pub")).unwrap(),
    )
}

#[test]
fn bad_policies_runbooks_identities_and_secret_values_exit_2_before_any_aws_call() {
    let work = tempfile::tempdir().unwrap();
    // The policy every case starts from is sound.
    let base = work.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("policy.toml"), good_policy()).unwrap();
    let args: Vec<String> = ["validate", "--policy", "policy.toml"]
        .map(String::from)
        .into();
    let out = run(offline(&base), &base, &args, "");
    assert!(out.status.success(), "the good policy: {}", text(&out));

    let (encrypted, public) = ssh_keys(work.path());
    let mut cases = policy_cases();
    cases.extend(runbook_cases());
    cases.extend(identity_cases(&encrypted, &public));
    cases.extend(secret_value_cases());
    assert_counts(
        &cases,
        &[
            ("policy", 15),
            ("runbook", 8),
            ("identity", 5),
            ("secret", 3),
        ],
    );
    let mut failures = vec![];
    for (i, c) in cases.iter().enumerate() {
        let dir = work.path().join(format!("case-{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        if !c.files.iter().any(|(p, _)| p == "policy.toml") {
            std::fs::write(dir.join("policy.toml"), good_policy()).unwrap();
        }
        write_files(&dir, &c.files);
        let before = tree(&dir);
        let out = run(offline(&dir), &dir, &c.args, &c.stdin);
        let mut problems = judge(c, &out);
        // No key material is ever echoed, whatever the input (a hint may name the prefix).
        if shows_key_material(&text(&out)) {
            problems.push("the output shows key material".into());
        }
        if tree(&dir) != before {
            problems.push("files in its directory changed".into());
        }
        if !problems.is_empty() {
            failures.push(report(c, &problems, &out));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs were mishandled:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The store: objects planted into one sandbox's recovery-point bucket.

async fn get(s3: &aws_sdk_s3::Client, key: &str) -> Option<Vec<u8>> {
    match s3.get_object().bucket(BUCKET).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
        Err(e) => panic!("s3://{BUCKET}/{key}: {e:?}"),
    }
}

async fn put(s3: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put s3://{BUCKET}/{key}: {e:?}"));
}

async fn delete(s3: &aws_sdk_s3::Client, key: &str) {
    s3.delete_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete s3://{BUCKET}/{key}: {e:?}"));
}

/// One stored object as a listing shows it.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    etag: String,
    size: i64,
    modified: String,
}

/// Every object of the store bucket, except the lease records: taking and giving back a lease
/// rewrites `locks/<name>` by design (a lease case checks its planted record itself).
async fn snapshot(s3: &aws_sdk_s3::Client) -> BTreeMap<String, Stored> {
    let mut out = BTreeMap::new();
    let mut pages = s3.list_objects_v2().bucket(BUCKET).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("list s3://{BUCKET}: {e:?}"));
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            if key.contains("/locks/") {
                continue;
            }
            let s = Stored {
                etag: o.e_tag().unwrap_or_default().to_string(),
                size: o.size().unwrap_or_default(),
                modified: format!("{:?}", o.last_modified()),
            };
            out.insert(key.to_string(), s);
        }
    }
    out
}

/// What changed between two snapshots.
fn changes(before: &BTreeMap<String, Stored>, after: &BTreeMap<String, Stored>) -> Vec<String> {
    let mut d = vec![];
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("deleted {k}")),
            Some(w) if w != v => d.push(format!("rewrote {k}")),
            Some(_) => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        d.push(format!("wrote {k}"));
    }
    d
}

/// The store as every case starts from it (outside `locks/`), with each object's content.
struct Baseline(BTreeMap<String, (String, Vec<u8>)>);

impl Baseline {
    async fn take(s3: &aws_sdk_s3::Client) -> Self {
        let mut all = BTreeMap::new();
        for (k, s) in snapshot(s3).await {
            let body = get(s3, &k).await.unwrap_or_else(|| panic!("{k} vanished"));
            all.insert(k, (s.etag, body));
        }
        Self(all)
    }

    /// Undo whatever a misbehaving run did, so one failure does not cascade into the next case.
    async fn reset(&self, s3: &aws_sdk_s3::Client) {
        let now = snapshot(s3).await;
        for k in now.keys().filter(|k| !self.0.contains_key(*k)) {
            delete(s3, k).await;
        }
        for (k, (etag, body)) in &self.0 {
            if now.get(k).map(|s| &s.etag) != Some(etag) {
                put(s3, k, body.clone()).await;
            }
        }
    }
}

/// Plant the case's object, run it, and say what went wrong; the planted object's old content
/// (or its absence) is restored afterwards.
async fn run_store_case(
    sb: &Sandbox,
    s3: &aws_sdk_s3::Client,
    policy: &str,
    dir: &Path,
    c: &Case,
) -> (Vec<String>, Output) {
    std::fs::create_dir_all(dir).unwrap();
    write_files(dir, &c.files);
    let mut original = vec![];
    for (key, body) in &c.plant {
        original.push((key.clone(), get(s3, key).await));
        put(s3, key, body.clone()).await;
    }
    let before = snapshot(s3).await;
    let mut cmd = sb.drd();
    if !c.args.iter().any(|a| a == "--policy") {
        cmd.args(["--policy", policy]);
    }
    let out = run(cmd, dir, &c.args, &c.stdin);
    let mut problems = judge(c, &out);
    if text(&out).contains(KEY) {
        problems.push("the output shows the API key".into());
    }
    problems.extend(changes(&before, &snapshot(s3).await));
    for (key, body) in &c.plant {
        if get(s3, key).await.as_deref() != Some(body.as_slice()) {
            problems.push(format!("rewrote or deleted the planted {key}"));
        }
    }
    for (key, old) in original.into_iter().rev() {
        match old {
            Some(b) => put(s3, &key, b).await,
            None => delete(s3, &key).await,
        }
    }
    (problems, out)
}

/// Bad manifests made from a real one. Their ids sort after every real point's, so commands
/// that start from the newest point meet them first.
struct Bad<'a>(&'a Value);

impl Bad<'_> {
    fn id(&self, i: u32) -> String {
        format!("29991231T235959999Z-bad{i:03}")
    }

    fn key(&self, i: u32) -> String {
        format!("{STACK}/points/{}.json", self.id(i))
    }

    /// How a message names it.
    fn named(&self, i: u32) -> String {
        format!("points/{}.json", self.id(i))
    }

    /// The real manifest as point `i`, then edited.
    fn body(&self, i: u32, edit: &dyn Fn(&mut Value)) -> Vec<u8> {
        let mut v = self.0.clone();
        v["id"] = json!(self.id(i));
        edit(&mut v);
        serde_json::to_vec_pretty(&v).unwrap()
    }

    /// The first half of point `i`'s manifest.
    fn cut(&self, i: u32) -> Vec<u8> {
        let b = self.body(i, &|_: &mut Value| {});
        b[..b.len() / 2].to_vec()
    }
}

/// Manifests that do not parse: prune and verify must stop, naming them, and delete nothing.
fn unreadable_manifest_cases(m: &Value) -> Vec<Case> {
    let b = Bad(m);
    let unknown = |v: &mut Value| v["restored_by"] = json!("someone");
    let when = |v: &mut Value| v["created_at"] = json!("yesterday at noon");
    vec![
        case(
            "manifest",
            "a truncated manifest, pruned",
            "not JSON: prune cannot know what it keeps",
            &["prune"],
            1,
            &[&b.named(1)],
        )
        .plant(&b.key(1), b.cut(1)),
        case(
            "manifest",
            "a truncated manifest, verified",
            "not JSON",
            &["verify", "--point", &b.id(2)],
            1,
            &[&b.id(2)],
        )
        .plant(&b.key(2), b.cut(2)),
        case(
            "manifest",
            "an unknown field, pruned",
            "a format this drd does not know",
            &["prune"],
            1,
            &[&b.named(3)],
        )
        .plant(&b.key(3), b.body(3, &unknown)),
        case(
            "manifest",
            "an unknown field, shown",
            "a format this drd does not know",
            &["points", "show", &b.id(4)],
            1,
            &[&b.named(4), "unknown field `restored_by`"],
        )
        .plant(&b.key(4), b.body(4, &unknown)),
        case(
            "manifest",
            "created_at that is no time, pruned",
            "retention cannot place the point",
            &["prune"],
            1,
            &[&b.named(5)],
        )
        .plant(&b.key(5), b.body(5, &when)),
        case(
            "manifest",
            "created_at that is no time, verified",
            "the point has no time",
            &["verify", "--point", &b.id(6)],
            1,
            &[&b.id(6)],
        )
        .plant(&b.key(6), b.body(6, &when)),
        case(
            "manifest",
            "a JSON array",
            "not a manifest object",
            &["verify", "--point", &b.id(7)],
            1,
            &[&b.id(7)],
        )
        .plant(&b.key(7), "[]"),
    ]
}

/// Manifests that parse as JSON but not as a manifest this drd may use.
fn manifest_format_cases(m: &Value) -> Vec<Case> {
    let b = Bad(m);
    let newer = |v: &mut Value| v["schema"] = json!(99);
    vec![
        case(
            "manifest",
            "schema 99, pruned",
            "written by a newer drd: never pruned by this one",
            &["prune"],
            1,
            &["schema 99", "newer"],
        )
        .plant(&b.key(8), b.body(8, &newer)),
        case(
            "manifest",
            "schema 99, backed up beside",
            "this drd must not write beside it (the newer drd moved the newest-point pointer to it first)",
            &["backup"],
            1,
            &["schema 99", "newer"],
        )
        .plant(&b.key(9), b.body(9, &newer))
        .plant(
            &format!("{STACK}/latest-point.json"),
            serde_json::to_vec(&json!({"id": b.id(9), "created_at": "2999-12-31T23:59:59Z", "fencing_token": 1})).unwrap(),
        ),
        case(
            "manifest",
            "schema 99 with its writer, shown",
            "says which drd reads it",
            &["points", "show", &b.id(10)],
            1,
            &["schema 99", "drd 9.0.0"],
        )
        .plant(
            &b.key(10),
            b.body(10, &|v: &mut Value| {
                v["schema"] = json!(99);
                v["writer"] = json!("drd 9.0.0");
            }),
        ),
        case(
            "manifest",
            "an id that is not its key's",
            "the manifest belongs elsewhere",
            &["points", "show", &b.id(11)],
            1,
            &[&b.named(11), "does not match its key"],
        )
        .plant(
            &b.key(11),
            b.body(11, &|v: &mut Value| {
                v["id"] = json!("20200101T000000000Z-elsewhere");
            }),
        ),
        case(
            "manifest",
            "a blob hash that is no SHA-256",
            "it names no content address",
            &["points", "show", &b.id(12)],
            1,
            &[&b.named(12), "is not a SHA-256"],
        )
        .plant(
            &b.key(12),
            b.body(12, &|v: &mut Value| {
                v["stack"]["template"]["sha256"] = json!("not-a-sha256");
            }),
        ),
        case(
            "manifest",
            "no schema",
            "the format cannot be told",
            &["points", "show", &b.id(13)],
            1,
            &[&b.named(13), "field `schema`"],
        )
        .plant(
            &b.key(13),
            b.body(13, &|v: &mut Value| {
                v.as_object_mut().unwrap().remove("schema");
            }),
        ),
        case(
            "manifest",
            "schema 0",
            "no drd ever wrote it",
            &["points", "show", &b.id(14)],
            1,
            &[&b.named(14), "schema 0 is not a drd manifest schema"],
        )
        .plant(
            &b.key(14),
            b.body(14, &|v: &mut Value| v["schema"] = json!(0)),
        ),
    ]
}

fn flipped(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    let i = v.len() / 2;
    v[i] ^= 0x01;
    v
}

/// The newest point's template, configuration, code package and first secret backup, as
/// (key, content).
async fn stored_blobs(s3: &aws_sdk_s3::Client, m: &Value) -> Vec<(String, Vec<u8>)> {
    let hexes = [
        &m["stack"]["template"]["sha256"],
        &m["function"]["configuration"]["sha256"],
        &m["code"][0]["blob"]["sha256"],
        &m["secrets"][0]["versions"][0]["blob"]["sha256"],
    ];
    let mut out = vec![];
    for h in hexes {
        let hex = h
            .as_str()
            .unwrap_or_else(|| panic!("a blob is missing from {m}"));
        let key = format!("{STACK}/objects/sha256/{}/{hex}", &hex[..2]);
        let body = get(s3, &key)
            .await
            .unwrap_or_else(|| panic!("{key} is not stored"));
        out.push((key, body));
    }
    out
}

fn blob_cases(blobs: &[(String, Vec<u8>)], newest: &str, identity: &str) -> Vec<Case> {
    let [template, config, code, secret] = blobs else {
        panic!("four blobs, not {}", blobs.len())
    };
    vec![
        case(
            "blob",
            "a template with one byte flipped",
            "it no longer hashes to its name",
            &["verify", "--point", newest],
            1,
            &[newest, &template.0, "corrupted"],
        )
        .plant(&template.0, flipped(&template.1)),
        case(
            "blob",
            "a configuration cut in half",
            "it no longer hashes to its name",
            &["verify", "--point", newest],
            1,
            &[&config.0, "corrupted"],
        )
        .plant(&config.0, &config.1[..config.1.len() / 2]),
        case(
            "blob",
            "an emptied code package",
            "every point naming it is broken",
            &["verify", "--all"],
            1,
            &[&code.0, "corrupted"],
        )
        .plant(&code.0, b""),
        case(
            "blob",
            "a secret backup that is no age file",
            "it neither hashes nor decrypts",
            &["verify", "--point", newest, "--identity", identity],
            1,
            &[&secret.0],
        )
        .plant(&secret.0, "not an age file"),
    ]
}

fn journal_cases() -> Vec<Case> {
    let run = |i: u32| format!("29991231T235959999Z-run{i:03}");
    let key = |i: u32| format!("{STACK}/journal/{}/000000-run_started.json", run(i));
    let entry = |i: u32, runbook: &str| {
        json!({"seq": 0, "run": run(i), "runbook": runbook, "event": "run_started",
            "attempt": 0, "at": "2026-01-01T00:00:00.000Z", "at_ms": 1_767_225_600_000u64,
            "inputs": {}, "region": "us-east-1"})
    };
    let mut exploded = entry(2, "lambda-rollback");
    exploded["event"] = json!("exploded");
    let mut no_seq = entry(3, "lambda-rollback");
    no_seq.as_object_mut().unwrap().remove("seq");
    vec![
        case(
            "journal",
            "a truncated entry",
            "a run's state cannot be folded from it",
            &["runbook", "status", &run(1)],
            1,
            &[&key(1), "unreadable"],
        )
        .plant(&key(1), "{\"seq\": 0, \"run\""),
        case(
            "journal",
            "an unknown event",
            "a transition this drd does not know",
            &["runbook", "status", &run(2)],
            1,
            &[&key(2)],
        )
        .plant(&key(2), exploded.to_string()),
        case(
            "journal",
            "an entry without its sequence number",
            "entries are ordered by seq",
            &[
                "runbook",
                "run",
                "lambda-rollback",
                "--resume",
                &run(3),
                "--dry-run",
            ],
            1,
            &[&key(3)],
        )
        .plant(&key(3), no_seq.to_string()),
        case(
            "journal",
            "garbage among the runs",
            "listing runs folds every journal",
            &["runbook", "status"],
            1,
            &[&key(4)],
        )
        .plant(&key(4), "garbage"),
        case(
            "journal",
            "an array as an entry, resumed",
            "a resume must not guess what ran",
            &["rollback", "--resume", &run(5)],
            1,
            &[&key(5)],
        )
        .plant(&key(5), "[1, 2, 3]"),
        case(
            "journal",
            "binary bytes as an entry, approved",
            "there is no run to approve",
            &["runbook", "approve", &run(6), "move-alias"],
            1,
            &[&key(6)],
        )
        .plant(&key(6), b"\x00\x01\xfe binary"),
        // A sound entry of a runbook drd does not have: runbook::load's "no runbook" is a
        // configuration error (exit 2).
        case(
            "journal",
            "a run of a runbook that does not exist",
            "nothing can report it",
            &["runbook", "status", &run(7)],
            2,
            &["\"vanished\""],
        )
        .plant(&key(7), entry(7, "vanished").to_string()),
    ]
}

/// Lease records, the active-region record and the pin file.
fn record_cases() -> Vec<Case> {
    let lock = format!("{STACK}/locks/store");
    let pins_lock = format!("{STACK}/locks/pins");
    let active = format!("{STACK}/active-region.json");
    let pins = format!("{STACK}/pins/{STACK}-fn.json");
    let pins_named = format!("pins/{STACK}-fn.json");
    let negative = r#"{"holder":"drd prune","host":"h","pid":1,"token":-5,"expires_at":0}"#;
    vec![
        case(
            "lease",
            "a lease record that is not JSON",
            "its token and holder are unknown",
            &["backup"],
            1,
            &["locks/store"],
        )
        .plant(&lock, "garbage"),
        case(
            "lease",
            "a lease record with only a holder",
            "no token, no expiry",
            &["backup"],
            1,
            &["locks/store"],
        )
        .plant(&lock, r#"{"holder":"drd backup"}"#),
        case(
            "lease",
            "an empty lease record",
            "no token, no expiry",
            &["backup"],
            1,
            &["locks/store"],
        )
        .plant(&lock, ""),
        case(
            "lease",
            "a negative fencing token",
            "tokens only grow from 1",
            &["prune"],
            1,
            &["locks/store"],
        )
        .plant(&lock, negative),
        case(
            "lease",
            "a pin lease that is not JSON",
            "its token and holder are unknown",
            &["pin"],
            1,
            &["locks/pins"],
        )
        .plant(&pins_lock, "{{{"),
        case(
            "active-region",
            "an active-region record that is not JSON",
            "drd cannot tell where the stack serves",
            &["status"],
            1,
            &["active-region.json"],
        )
        .plant(&active, "garbage"),
        case(
            "active-region",
            "a region that is a number",
            "a rollback must not act on a guessed region",
            &["rollback", "--dry-run"],
            1,
            &["active-region.json"],
        )
        .plant(&active, r#"{"region": 5}"#),
        case(
            "active-region",
            "an active-region record with only a region",
            "the point and URL it came with are unknown",
            &["backup"],
            1,
            &["active-region.json", "unreadable"],
        )
        .plant(&active, r#"{"region": "us-west-2"}"#),
        case(
            "pin",
            "a pin file without its pins",
            "the known-good versions are unknown",
            &["backup"],
            1,
            &[&pins_named, "unreadable"],
        )
        .plant(&pins, format!(r#"{{"function": "{STACK}-fn"}}"#)),
        case(
            "pin",
            "a pin file that is an array",
            "the known-good versions are unknown",
            &["pin"],
            1,
            &[&pins_named],
        )
        .plant(&pins, "[]"),
    ]
}

/// A wrong identity, and secret values a deploy of a stack whose secret does not exist yet
/// must refuse before its first write.
fn sandbox_input_cases(wrong: &str, fresh: &str, bootstrap: &str) -> Vec<Case> {
    vec![
        case(
            "identity",
            "a valid identity that is not a recipient",
            "it decrypts none of the secret backups",
            &["verify", "--all", "--identity", wrong],
            1,
            &["--identity"],
        ),
        case(
            "secret",
            "an API key with a space, from --secret-file",
            "an API key is one word",
            &[
                "--policy",
                fresh,
                "deploy",
                "--bootstrap",
                bootstrap,
                "--secret-file",
                "secret.txt",
            ],
            2,
            &["secret.txt", "contains whitespace"],
        )
        .file("secret.txt", "sk-one two\n")
        .hidden("sk-one"),
        case(
            "secret",
            "a secret file that does not exist",
            "nothing to read",
            &[
                "--policy",
                fresh,
                "deploy",
                "--bootstrap",
                bootstrap,
                "--secret-file",
                "missing.txt",
            ],
            2,
            &["missing.txt", "cannot read the secret file"],
        ),
        case(
            "secret",
            "JSON whose key is a number",
            "OPENAI_API_KEY must be a non-empty string",
            &["--policy", fresh, "deploy", "--bootstrap", bootstrap],
            2,
            &["<stdin>", "OPENAI_API_KEY"],
        )
        .stdin("{\"OPENAI_API_KEY\": 42}"),
    ]
}

/// What the refused deploys of the fresh stack must not have created.
async fn deploy_left_nothing(sb: &Sandbox) -> Vec<String> {
    let mut left = vec![];
    let bucket = format!("{FRESH}-artifacts-us-east-1");
    let s3 = sb.s3("us-east-1").await;
    if s3.head_bucket().bucket(&bucket).send().await.is_ok() {
        left.push(format!(
            "[secret] the refused deploys created the bucket {bucket}"
        ));
    }
    let secret = format!("{FRESH}-key");
    let sm = sb.secrets("us-east-1").await;
    if sm.describe_secret().secret_id(&secret).send().await.is_ok() {
        left.push(format!(
            "[secret] the refused deploys created the secret {secret}"
        ));
    }
    let cf = sb.cloudformation("us-east-1").await;
    if cf.describe_stacks().stack_name(FRESH).send().await.is_ok() {
        left.push(format!(
            "[secret] the refused deploys created the stack {FRESH}"
        ));
    }
    left
}

fn backup(sb: &Sandbox, policy: &str) -> String {
    let out = sb.run(&["--policy", policy, "backup", "--output", "json"], "");
    assert!(out.status.success(), "backup: {}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    r["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_store_objects_fail_naming_the_object_and_nothing_is_written_or_deleted() {
    let sb = Sandbox::start();
    let (identity, recipient) = age_keygen(sb.dir.path());
    let policy = sb.policy_with(STACK, &recipient, "[retention]\nkeep_last = 1\n");
    let policy = policy.to_str().unwrap().to_string();
    sb.allow_key(KEY);
    sb.deploy(&policy, KEY);
    // Two points: with keep_last = 1 a prune that ignored a bad manifest would delete one.
    backup(&sb, &policy);
    let newest = backup(&sb, &policy);
    let s3 = sb.s3("us-west-2").await;
    let manifest = sb
        .get_json(
            "us-west-2",
            BUCKET,
            &format!("{STACK}/points/{newest}.json"),
        )
        .await;
    let blobs = stored_blobs(&s3, &manifest).await;
    let other = sb.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (wrong, _) = age_keygen(&other);
    let fresh = sb.policy_with(
        FRESH,
        &recipient,
        &format!("[secrets]\napi_key = \"{FRESH}-key\"\n"),
    );
    let bin = bootstrap();

    let mut cases = unreadable_manifest_cases(&manifest);
    cases.extend(manifest_format_cases(&manifest));
    cases.extend(blob_cases(&blobs, &newest, identity.to_str().unwrap()));
    cases.extend(journal_cases());
    cases.extend(record_cases());
    cases.extend(sandbox_input_cases(
        wrong.to_str().unwrap(),
        fresh.to_str().unwrap(),
        bin.to_str().unwrap(),
    ));
    assert_counts(
        &cases,
        &[("manifest", 7), ("blob", 4), ("journal", 4), ("lease", 4)],
    );
    let base = Baseline::take(&s3).await;
    let mut failures = vec![];
    for (i, c) in cases.iter().enumerate() {
        let dir = sb.dir.path().join(format!("case-{i:02}"));
        let (problems, out) = run_store_case(&sb, &s3, &policy, &dir, c).await;
        if !problems.is_empty() {
            failures.push(report(c, &problems, &out));
        }
        base.reset(&s3).await;
    }
    failures.extend(deploy_left_nothing(&sb).await);
    assert!(
        failures.is_empty(),
        "{} problem(s) over {} bad store objects and inputs:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
