//! The DR policy file (TOML): what to protect, where recovery points go, who may read them.
//!
//! Parsing is strict (`deny_unknown_fields`) and every semantic check reports the file, line and
//! field of the offending value, with a fix. Relative paths are resolved against the policy file's
//! folder, so a policy can be used from any working directory.

use crate::error::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub stack: StackPolicy,
    #[serde(default)]
    pub workload: WorkloadPolicy,
    pub artifacts: ArtifactsPolicy,
    pub backup: BackupPolicy,
    #[serde(default)]
    pub secrets: SecretsPolicy,
    #[serde(default)]
    pub retention: RetentionPolicy,
    /// The GitHub repository whose Actions secrets mirror some of ours (optional).
    #[serde(default)]
    pub github: Option<GithubPolicy>,
    /// The AWS CodePipeline that is the CI alternative (procedure 1 retries it).
    #[serde(default)]
    pub pipeline: Option<PipelinePolicy>,
    /// The Route 53 record users reach the service by (procedure 4 fails it over).
    #[serde(default)]
    pub dns: Option<DnsPolicy>,
    /// What `drd daemon` does on schedule for this stack, and its listener.
    #[serde(default)]
    pub daemon: DaemonPolicy,
    /// Where the policy was read from (set by `load`).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackPolicy {
    /// CloudFormation stack name.
    pub name: Spanned<String>,
    pub primary_region: Spanned<String>,
    /// The stack template, relative to the policy file.
    pub template: Spanned<String>,
    /// The Lambda function the template creates (its `FunctionName` parameter).
    pub function_name: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadPolicy {
    /// The cargo package directory `drd deploy` builds when no `--bootstrap` is given.
    #[serde(default = "default_source")]
    pub source: String,
    /// OpenAI-compatible API base URL the function calls (`OPENAI_BASE_URL`).
    #[serde(default = "default_llm_base_url")]
    pub llm_base_url: String,
    #[serde(default = "default_llm_model")]
    pub llm_model: String,
}

impl Default for WorkloadPolicy {
    fn default() -> Self {
        Self {
            source: default_source(),
            llm_base_url: default_llm_base_url(),
            llm_model: default_llm_model(),
        }
    }
}

fn default_source() -> String {
    "../classifier".into()
}
fn default_llm_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_llm_model() -> String {
    "gpt-4o-mini".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsPolicy {
    /// Code packages go to `<bucket_prefix>-<region>` (one bucket per region, created on demand).
    pub bucket_prefix: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    /// The recovery-point bucket; it must live outside the primary region.
    pub bucket: Spanned<String>,
    pub region: Spanned<String>,
    /// age recipients (X25519 `age1...` or SSH public keys): drd can encrypt, never decrypt.
    pub recipients: Spanned<Vec<Spanned<String>>>,
    /// Object Lock on the store bucket(s): created with it, never weakened.
    #[serde(default)]
    pub object_lock: Option<ObjectLockPolicy>,
    /// Further buckets every point is copied to (each outside the primary region).
    #[serde(default)]
    pub copies: Vec<CopyPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Governance,
    Compliance,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockPolicy {
    pub mode: LockMode,
    pub days: Spanned<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyPolicy {
    pub bucket: Spanned<String>,
    pub region: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsPolicy {
    /// The secret the function reads its OpenAI key from.
    #[serde(default = "default_api_key_secret")]
    pub api_key: Spanned<String>,
    /// Further secrets that are backed up (for example the CI's `github-token`).
    #[serde(default)]
    pub others: Vec<Spanned<String>>,
    /// Secrets among `others` whose values drd may generate (`drd rotate NAME --generate`):
    /// shared secrets no provider issues. The API key and tokens come from their provider.
    #[serde(default)]
    pub generated: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubPolicy {
    /// REST API base (GitHub Enterprise: `https://HOST/api/v3`).
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// `owner/name`.
    pub repository: Spanned<String>,
    /// The Secrets Manager secret holding the API token.
    #[serde(default = "default_github_token_secret")]
    pub token_secret: String,
    /// Secrets Manager secret name -> GitHub Actions secret name, e.g.
    /// `"openai-api-key" = "OPENAI_API_KEY"`.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinePolicy {
    pub name: Spanned<String>,
    /// How many times `pipeline-failure` retries or restarts before giving up.
    #[serde(default = "default_pipeline_retries")]
    pub max_retries: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonPolicy {
    /// Address of the daemon's HTTP listener (`/healthz`, `/readyz`, `/metrics`); default
    /// `127.0.0.1:9464`. With a directory of policies, at most one value may be given.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// The recovery point objective: `/readyz` fails when the newest point is older. Default
    /// "2h".
    #[serde(default)]
    pub rpo: Option<Spanned<String>>,
    /// An age identity file for scheduled `verify` (decrypts every secret backup). Without
    /// one, the scheduled verify is structural (re-hashes every blob).
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub schedule: Vec<SchedulePolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePolicy {
    /// `backup`, `verify`, `prune`, `mirror` (reserved for CI failover) or `runbook:NAME`.
    pub job: Spanned<String>,
    /// `sec min hour day-of-month month day-of-week [year]`.
    pub cron: Spanned<String>,
    /// IANA time zone the cron is read in (default UTC).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// A random-looking but deterministic delay in `[0, jitter)` per firing, e.g. "30s".
    #[serde(default)]
    pub jitter: Option<Spanned<String>>,
    /// Inputs of a scheduled runbook.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

impl DaemonPolicy {
    pub fn rpo(&self) -> std::time::Duration {
        self.rpo
            .as_ref()
            .and_then(|r| humantime::parse_duration(r.get_ref()).ok())
            .unwrap_or(std::time::Duration::from_secs(7200))
    }
}

impl SchedulePolicy {
    pub fn jitter(&self) -> std::time::Duration {
        self.jitter
            .as_ref()
            .and_then(|j| humantime::parse_duration(j.get_ref()).ok())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsMode {
    /// Failover records (PRIMARY with a health check, SECONDARY): Route 53 itself moves traffic
    /// when the primary's health check fails, even while its control plane is unreachable.
    #[default]
    Failover,
    /// One plain record whose value is swapped.
    Swap,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsPolicy {
    /// The public hosted zone: its name (`example.com.`) or id (`Z0123456789ABC`). It must
    /// exist: drd never creates zones (delegation is the domain owner's decision).
    pub zone: Spanned<String>,
    /// The service's name inside the zone, e.g. `classifier.example.com`.
    pub record: Spanned<String>,
    #[serde(default)]
    pub mode: DnsMode,
    #[serde(default = "default_dns_ttl")]
    pub ttl: Spanned<i64>,
    /// Path Route 53's HTTPS health check requests (the classifier answers any GET with 200).
    #[serde(default = "default_health_path")]
    pub health_check_path: String,
}

fn default_dns_ttl() -> Spanned<i64> {
    Spanned::new(0..0, 60)
}

fn default_health_path() -> String {
    "/healthz".into()
}

impl DnsPolicy {
    /// The record name as Route 53 returns it: lowercase, with the trailing dot.
    pub fn record_fqdn(&self) -> String {
        fqdn(self.record.get_ref())
    }
}

/// `name` lowercased with exactly one trailing dot.
pub fn fqdn(name: &str) -> String {
    format!(
        "{}.",
        name.trim().trim_end_matches('.').to_ascii_lowercase()
    )
}

fn default_pipeline_retries() -> u32 {
    2
}

fn default_github_api() -> String {
    "https://api.github.com".into()
}

fn default_github_token_secret() -> String {
    "github-token".into()
}

/// Which recovery points `drd prune` keeps (restic semantics); no rule keeps everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    /// A duration such as "2d" or "36h".
    pub keep_within: Option<Spanned<String>>,
}

impl RetentionPolicy {
    pub fn rules(&self) -> crate::backup::retention::Rules {
        crate::backup::retention::Rules {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            within: self
                .keep_within
                .as_ref()
                .and_then(|w| humantime::parse_duration(w.get_ref()).ok())
                .map(|d| d.as_secs()),
        }
    }
}

impl Default for SecretsPolicy {
    fn default() -> Self {
        Self {
            api_key: default_api_key_secret(),
            others: vec![],
            generated: vec![],
        }
    }
}

fn default_api_key_secret() -> Spanned<String> {
    Spanned::new(0..0, "openai-api-key".into())
}

impl Policy {
    /// Read, parse and validate a policy file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(&shown, format!("cannot read the policy file: {e}"))
                .hint("pass --policy FILE or set DRD_POLICY (see policies/classifier.toml)")
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let mut policy: Policy = toml::from_str(text).map_err(|e| {
            let mut err = ConfigError::new(&shown, e.message().trim().to_string());
            if let Some(span) = e.span() {
                err = err.at_offset(text, span.start);
            }
            if e.message().contains("unknown field") {
                err = err.hint("remove the key or rename it to one of the expected keys");
            } else if e.message().contains("missing field") {
                err = err.hint("add the field (see policies/classifier.toml for an example)");
            }
            err
        })?;
        policy.path = path.to_path_buf();
        policy.validate(text)?;
        Ok(policy)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let file = self.path.display().to_string();
        let at = |s: &std::ops::Range<usize>, field: &str, msg: String, hint: &str| {
            ConfigError::new(&file, msg)
                .at_offset(text, s.start)
                .field(field)
                .hint(hint)
        };
        for (field, value) in [
            ("stack.primary_region", &self.stack.primary_region),
            ("backup.region", &self.backup.region),
        ] {
            if !is_region_name(value.get_ref()) {
                return Err(at(
                    &value.span(),
                    field,
                    format!("{:?} is not an AWS region name", value.get_ref()),
                    "use a region code such as \"us-east-1\" or \"eu-west-2\"",
                ));
            }
        }
        if self.backup.region.get_ref() == self.stack.primary_region.get_ref() {
            return Err(at(
                &self.backup.region.span(),
                "backup.region",
                format!(
                    "the backup bucket is in the primary region {:?}; a region loss would take \
                     the recovery points with it",
                    self.stack.primary_region.get_ref()
                ),
                "put the backup bucket in another region, e.g. \"us-west-2\"",
            ));
        }
        for (field, value) in [
            ("stack.name", &self.stack.name),
            ("stack.function_name", &self.stack.function_name),
            ("stack.template", &self.stack.template),
        ] {
            if value.get_ref().trim().is_empty() {
                return Err(at(
                    &value.span(),
                    field,
                    "must not be empty".into(),
                    "give it a value",
                ));
            }
        }
        for (field, value) in [
            ("backup.bucket", &self.backup.bucket),
            ("artifacts.bucket_prefix", &self.artifacts.bucket_prefix),
        ] {
            if let Err(why) = check_bucket_name(value.get_ref()) {
                return Err(at(
                    &value.span(),
                    field,
                    format!("{:?} is not a valid S3 bucket name: {why}", value.get_ref()),
                    "use 3-63 lowercase letters, digits, '-' and '.'",
                ));
            }
        }
        if let Some(l) = &self.backup.object_lock {
            if *l.days.get_ref() == 0 {
                return Err(at(
                    &l.days.span(),
                    "backup.object_lock.days",
                    "Object Lock retention must be at least 1 day".into(),
                    "set days = 1 or more, or remove [backup.object_lock]",
                ));
            }
        }
        for (i, c) in self.backup.copies.iter().enumerate() {
            if !is_region_name(c.region.get_ref()) {
                return Err(at(
                    &c.region.span(),
                    &format!("backup.copies[{i}].region"),
                    format!("{:?} is not an AWS region name", c.region.get_ref()),
                    "use a region code such as \"eu-west-1\"",
                ));
            }
            if c.region.get_ref() == self.stack.primary_region.get_ref() {
                return Err(at(
                    &c.region.span(),
                    &format!("backup.copies[{i}].region"),
                    "a copy in the primary region is lost with it".into(),
                    "put copies in other regions",
                ));
            }
            if let Err(why) = check_bucket_name(c.bucket.get_ref()) {
                return Err(at(
                    &c.bucket.span(),
                    &format!("backup.copies[{i}].bucket"),
                    format!(
                        "{:?} is not a valid S3 bucket name: {why}",
                        c.bucket.get_ref()
                    ),
                    "use 3-63 lowercase letters, digits, '-' and '.'",
                ));
            }
            if c.bucket.get_ref() == self.backup.bucket.get_ref() {
                return Err(at(
                    &c.bucket.span(),
                    &format!("backup.copies[{i}].bucket"),
                    "the copy bucket is the backup bucket itself".into(),
                    "name a different bucket",
                ));
            }
        }
        if let Some(w) = &self.retention.keep_within {
            if let Err(e) = humantime::parse_duration(w.get_ref()) {
                return Err(at(
                    &w.span(),
                    "retention.keep_within",
                    format!("{:?} is not a duration: {e}", w.get_ref()),
                    "write a duration such as \"36h\" or \"7days\"",
                ));
            }
        }
        for (i, g) in self.secrets.generated.iter().enumerate() {
            if !self
                .secrets
                .others
                .iter()
                .any(|o| o.get_ref() == g.get_ref())
            {
                return Err(at(
                    &g.span(),
                    &format!("secrets.generated[{i}]"),
                    format!("{:?} is not listed in secrets.others", g.get_ref()),
                    "add it to secrets.others (the API key is always issued by its provider)",
                ));
            }
        }
        if let Some(gh) = &self.github {
            let r = gh.repository.get_ref();
            let parts: Vec<&str> = r.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(at(
                    &gh.repository.span(),
                    "github.repository",
                    format!("{r:?} is not a repository name"),
                    "write it as \"owner/name\"",
                ));
            }
        }
        if let Some(d) = &self.dns {
            let zone = d.zone.get_ref().trim();
            let is_id = zone.starts_with('Z')
                && zone.len() > 5
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if zone.is_empty() || (!is_id && !zone.trim_end_matches('.').contains('.')) {
                return Err(at(
                    &d.zone.span(),
                    "dns.zone",
                    format!("{zone:?} is neither a hosted zone name nor an id"),
                    "write the zone's domain (\"example.com.\") or its id (\"Z0123456789ABC\")",
                ));
            }
            let rec = fqdn(d.record.get_ref());
            if !(is_id || rec.ends_with(&format!(".{}", fqdn(zone)))) {
                return Err(at(
                    &d.record.span(),
                    "dns.record",
                    format!(
                        "{rec:?} is not inside the zone {:?} (and a CNAME cannot be the zone apex)",
                        fqdn(zone)
                    ),
                    "name a record in the zone, e.g. \"classifier.<zone>\"",
                ));
            }
            if !(0..=172_800).contains(d.ttl.get_ref()) {
                return Err(at(
                    &d.ttl.span(),
                    "dns.ttl",
                    format!("TTL {} is out of range", d.ttl.get_ref()),
                    "use 0-172800 seconds; 60 keeps a failover quick",
                ));
            }
        }
        let d = &self.daemon;
        if let Some(l) = &d.listen {
            if l.get_ref().parse::<std::net::SocketAddr>().is_err() {
                return Err(at(
                    &l.span(),
                    "daemon.listen",
                    format!("{:?} is not an address", l.get_ref()),
                    "write ip:port, e.g. \"127.0.0.1:9464\"",
                ));
            }
        }
        if let Some(r) = &d.rpo {
            if humantime::parse_duration(r.get_ref()).is_err() {
                return Err(at(
                    &r.span(),
                    "daemon.rpo",
                    format!("{:?} is not a duration", r.get_ref()),
                    "write a duration such as \"1h\" or \"30m\"",
                ));
            }
        }
        let mut jobs = std::collections::BTreeSet::new();
        for (i, s) in d.schedule.iter().enumerate() {
            let job = s.job.get_ref();
            let known = matches!(job.as_str(), "backup" | "verify" | "prune" | "mirror")
                || job.strip_prefix("runbook:").is_some_and(|n| !n.is_empty());
            if !known {
                return Err(at(
                    &s.job.span(),
                    &format!("daemon.schedule[{i}].job"),
                    format!("{job:?} is not a job"),
                    "use backup, verify, prune, mirror or runbook:NAME",
                ));
            }
            if !jobs.insert(job.clone()) {
                return Err(at(
                    &s.job.span(),
                    &format!("daemon.schedule[{i}].job"),
                    format!("{job:?} is scheduled twice"),
                    "give each job one schedule (a cron expression can list several times)",
                ));
            }
            if let Err(why) = crate::daemon::schedule::Cron::parse(
                s.cron.get_ref(),
                s.timezone.as_ref().map(|t| t.get_ref().as_str()),
            ) {
                let span = match (&s.timezone, why.contains("time zone")) {
                    (Some(t), true) => t.span(),
                    _ => s.cron.span(),
                };
                return Err(at(
                    &span,
                    &format!("daemon.schedule[{i}].cron"),
                    why,
                    "e.g. cron = \"0 */15 * * * *\" (every 15 minutes), timezone = \"Europe/Berlin\"",
                ));
            }
            if let Some(j) = &s.jitter {
                if humantime::parse_duration(j.get_ref()).is_err() {
                    return Err(at(
                        &j.span(),
                        &format!("daemon.schedule[{i}].jitter"),
                        format!("{:?} is not a duration", j.get_ref()),
                        "write a duration such as \"30s\"",
                    ));
                }
            }
        }
        let recipients = &self.backup.recipients;
        if recipients.get_ref().is_empty() {
            return Err(at(
                &recipients.span(),
                "backup.recipients",
                "the recipient list is empty: secret backups could not be encrypted".into(),
                "add the public key of the recovery identity, e.g. the output of `age-keygen -y KEYFILE`",
            ));
        }
        for (i, r) in recipients.get_ref().iter().enumerate() {
            if let Err((msg, hint)) = check_recipient(r.get_ref()) {
                return Err(at(&r.span(), &format!("backup.recipients[{i}]"), msg, hint));
            }
        }
        Ok(())
    }

    /// The template path, resolved against the policy file's folder.
    pub fn template_path(&self) -> PathBuf {
        self.resolve(self.stack.template.get_ref())
    }

    pub fn source_path(&self) -> PathBuf {
        self.resolve(&self.workload.source)
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.path.parent().unwrap_or(Path::new(".")).join(p)
    }

    pub fn stack_name(&self) -> &str {
        self.stack.name.get_ref()
    }
    pub fn function_name(&self) -> &str {
        self.stack.function_name.get_ref()
    }
    pub fn primary_region(&self) -> &str {
        self.stack.primary_region.get_ref()
    }
    pub fn api_key_secret(&self) -> &str {
        self.secrets.api_key.get_ref()
    }
    /// The artifact bucket of one region.
    pub fn artifact_bucket(&self, region: &str) -> String {
        format!("{}-{}", self.artifacts.bucket_prefix.get_ref(), region)
    }
    /// Every secret the policy protects, the function's own first.
    pub fn secret_names(&self) -> Vec<String> {
        let mut v = vec![self.api_key_secret().to_string()];
        v.extend(self.secrets.others.iter().map(|s| s.get_ref().clone()));
        v
    }
}

/// `us-east-1`, `eu-central-2`, `ap-southeast-3`, `us-gov-west-1`, `cn-north-1`, ...
pub fn is_region_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if !(3..=4).contains(&parts.len()) {
        return false;
    }
    let first = parts[0];
    let last = parts[parts.len() - 1];
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

fn check_bucket_name(s: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&s.len()) {
        return Err("it must be 3 to 63 characters long");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("only lowercase letters, digits, '-' and '.' are allowed");
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric()
        || !s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

/// Accept X25519 (`age1...`) and SSH (`ssh-ed25519`, `ssh-rsa`) public keys. Never echo a value
/// that looks like a private key.
fn check_recipient(s: &str) -> Result<(), (String, &'static str)> {
    let s = s.trim();
    if s.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") || s.contains("PRIVATE KEY") {
        return Err((
            "this is a private identity, not a public recipient; drd must never hold it".into(),
            "remove it from the policy, keep it offline, and list its public key (`age-keygen -y FILE`)",
        ));
    }
    if s.starts_with("age1") {
        return age::x25519::Recipient::from_str(s)
            .map(|_| ())
            .map_err(|e| {
                (
                    format!("{s:?} is not a valid age X25519 recipient: {e}"),
                    "copy the whole `age1...` line printed by `age-keygen`",
                )
            });
    }
    if s.starts_with("ssh-") {
        return age::ssh::Recipient::from_str(s).map(|_| ()).map_err(|e| {
            (
                format!("{s:?} is not a usable SSH recipient: {e:?}"),
                "use an ssh-ed25519 or ssh-rsa public key line",
            )
        });
    }
    Err((
        format!("{s:?} is not an age recipient"),
        "use an `age1...` X25519 public key or an ssh-ed25519/ssh-rsa public key",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[stack]
name = "speaker-role-classifier"
primary_region = "us-east-1"
template = "../classifier/stack.yaml"
function_name = "speaker-role-classifier"

[artifacts]
bucket_prefix = "drd-artifacts"

[backup]
bucket = "drd-points"
region = "us-west-2"
recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
"#;

    fn parse(t: &str) -> Result<Policy, ConfigError> {
        Policy::parse(t, Path::new("p.toml"))
    }

    #[test]
    fn good_policy_parses_with_defaults() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.api_key_secret(), "openai-api-key");
        assert_eq!(p.artifact_bucket("us-east-1"), "drd-artifacts-us-east-1");
        assert_eq!(p.template_path(), Path::new("../classifier/stack.yaml"));
    }

    #[test]
    fn unknown_key_names_line() {
        let t = GOOD.replace("[artifacts]", "[artifacts]\nbucket_prefx = \"x\"");
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("unknown field `bucket_prefx`"), "{e}");
        assert_eq!(e.line, Some(9));
        assert!(e.to_string().starts_with("p.toml:9:"), "{e}");
    }

    #[test]
    fn daemon_and_dns_mistakes_name_field_and_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "[[daemon.schedule]]\njob = \"backup\"\ncron = \"0 * * * *\"\n",
                "daemon.schedule[0].cron",
                17,
                "6 or 7",
            ),
            (
                "[[daemon.schedule]]\njob = \"backups\"\ncron = \"0 * * * * *\"\n",
                "daemon.schedule[0].job",
                16,
                "not a job",
            ),
            (
                "[[daemon.schedule]]\njob = \"verify\"\ncron = \"0 0 4 * * *\"\ntimezone = \"Berlin\"\n",
                "daemon.schedule[0].cron",
                18,
                "time zone",
            ),
            (
                "[[daemon.schedule]]\njob = \"prune\"\ncron = \"0 0 4 * * *\"\n[[daemon.schedule]]\njob = \"prune\"\ncron = \"0 0 5 * * *\"\n",
                "daemon.schedule[1].job",
                19,
                "twice",
            ),
            ("[daemon]\nrpo = \"soon\"\n", "daemon.rpo", 16, "not a duration"),
            ("[daemon]\nlisten = \"localhost\"\n", "daemon.listen", 16, "not an address"),
            (
                "[dns]\nzone = \"example.com.\"\nrecord = \"classifier.example.org\"\n",
                "dns.record",
                17,
                "not inside the zone",
            ),
            ("[dns]\nzone = \"com\"\nrecord = \"x.com\"\n", "dns.zone", 16, "neither"),
        ];
        for (extra, field, line, msg) in cases {
            let e = parse(&format!("{GOOD}{extra}")).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(*field), "{extra}: {e}");
            assert_eq!(e.line, Some(*line), "{extra}: {e}");
            assert!(e.message.contains(msg), "{extra}: {e}");
            assert!(e.hint.is_some(), "{e}");
        }
        let ok = parse(&format!(
            "{GOOD}[dns]\nzone = \"Z0123456789ABC\"\nrecord = \"classifier.example.com\"\nmode = \"swap\"\n\
             [daemon]\nrpo = \"45m\"\n[[daemon.schedule]]\njob = \"runbook:lambda-rollback\"\ncron = \"0 0 6 * * Mon\"\njitter = \"2m\"\n"
        ))
        .unwrap();
        assert_eq!(ok.daemon.rpo(), std::time::Duration::from_secs(45 * 60));
        assert_eq!(
            ok.daemon.schedule[0].jitter(),
            std::time::Duration::from_secs(120)
        );
        assert_eq!(ok.dns.unwrap().record_fqdn(), "classifier.example.com.");
    }

    #[test]
    fn bad_region_names_field_and_line() {
        let t = GOOD.replace("us-west-2", "us-wst2");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("backup.region"));
        assert_eq!(e.line, Some(13));
    }

    #[test]
    fn backup_in_primary_region_is_refused() {
        let t = GOOD.replace("us-west-2", "us-east-1");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("backup.region"));
        assert!(e.message.contains("primary region"));
    }

    #[test]
    fn empty_recipients_refused() {
        let t = GOOD.replace(
            "[\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]",
            "[]",
        );
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("backup.recipients"));
        assert_eq!(e.line, Some(14));
    }

    #[test]
    fn malformed_recipient_refused() {
        let t = GOOD.replace("age1ql3z7hjy54pw", "age1xx3z7hjy54pw");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("backup.recipients[0]"));
        assert_eq!(e.line, Some(14));
    }

    #[test]
    fn private_key_is_refused_without_being_echoed() {
        let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let t = GOOD.replace(
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
            secret,
        );
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("private identity"));
        assert!(!e.to_string().contains(secret));
    }

    #[test]
    fn ssh_recipient_accepted() {
        let t = GOOD.replace(
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust",
        );
        parse(&t).unwrap();
    }

    #[test]
    fn copies_and_object_lock_are_checked() {
        let t = format!("{GOOD}\n[backup.object_lock]\nmode = \"compliance\"\ndays = 0\n");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("backup.object_lock.days"));
        let t = format!("{GOOD}\n[backup.object_lock]\nmode = \"forever\"\ndays = 3\n");
        assert!(parse(&t).unwrap_err().message.contains("unknown variant"));
        let t = format!("{GOOD}\n[[backup.copies]]\nbucket = \"c\"\nregion = \"eu-west-1\"\n");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("backup.copies[0].bucket"));
        let t = format!("{GOOD}\n[[backup.copies]]\nbucket = \"copy-b\"\nregion = \"us-east-1\"\n");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("backup.copies[0].region"));
        assert_eq!(e.line, Some(18));
        let t = format!("{GOOD}\n[[backup.copies]]\nbucket = \"copy-b\"\nregion = \"eu-west-1\"\n\n[retention]\nkeep_within = \"soon\"\n");
        assert_eq!(
            parse(&t).unwrap_err().field.as_deref(),
            Some("retention.keep_within")
        );
    }

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-3",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "us-east",
            "useast1",
            "US-EAST-1",
            "us-east-1a",
            "",
            "u-east-1",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }
}
