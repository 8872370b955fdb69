//! The DR policy file (TOML): what to protect, where recovery points go, who may read them.
//!
//! Parsing is strict (`deny_unknown_fields`) and every semantic check reports the file, line and
//! field of the offending value, with a fix. Relative paths are resolved against the policy file's
//! folder, so a policy can be used from any working directory.

pub mod alerts;
pub(crate) mod validate;

use crate::error::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
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
    /// The workload's source repository, mirrored into the store by `drd mirror`.
    #[serde(default)]
    pub ci: Option<CiPolicy>,
    /// The Route 53 record users reach the service by (procedure 4 fails it over).
    #[serde(default)]
    pub dns: Option<DnsPolicy>,
    /// What serves the service's name over HTTPS in each region (docs/front-door.md).
    #[serde(default)]
    pub front_door: Option<FrontDoorPolicy>,
    /// What `drd daemon` does on schedule for this stack, and its listener.
    #[serde(default)]
    pub daemon: DaemonPolicy,
    /// Bounds on every AWS call (`--operation-timeout` / `--attempt-timeout` override them).
    #[serde(default)]
    pub aws: AwsPolicy,
    /// Where the daemon notifies when protection degrades (webhook, SNS).
    #[serde(default)]
    pub alerts: alerts::AlertsPolicy,
    /// Where the policy was read from (set by `load`).
    #[serde(skip)]
    pub path: PathBuf,
    /// Set by `use_copy`: the store this run does not use (`s3://bucket (region)`).
    #[serde(skip)]
    pub bypassed_store: Option<String>,
}

impl Policy {
    /// `--from-copy REGION`: make the copy bucket in `region` this run's store (read and written:
    /// lease, journal, active-region record, new points). The usual store is neither read nor
    /// written, and nothing switches back or forth by itself.
    pub fn use_copy(&mut self, region: &str) -> crate::error::Result<()> {
        let Some(i) = self
            .backup
            .copies
            .iter()
            .position(|c| c.region.get_ref() == region)
        else {
            let have: Vec<&str> = self
                .backup
                .copies
                .iter()
                .map(|c| c.region.get_ref().as_str())
                .collect();
            return Err(crate::error::ConfigError::new(
                self.path.display().to_string(),
                format!(
                    "--from-copy {region}: the policy keeps no copy there (copies: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            )
            .field("backup.copies")
            .hint("name a region of backup.copies, or add [[backup.copies]] for future points")
            .into());
        };
        let copy = self.backup.copies.remove(i);
        self.bypassed_store = Some(format!(
            "s3://{} ({})",
            self.backup.bucket.get_ref(),
            self.backup.region.get_ref()
        ));
        self.backup.bucket = copy.bucket;
        self.backup.region = copy.region;
        Ok(())
    }

    /// The store this run uses, for plans and reports.
    pub fn store_label(&self) -> String {
        let here = format!(
            "s3://{} ({})",
            self.backup.bucket.get_ref(),
            self.backup.region.get_ref()
        );
        match &self.bypassed_store {
            Some(b) => format!("{here}, the copy named by --from-copy; {b} is not used"),
            None => here,
        }
    }
}

/// `[aws]`: how long one AWS call, and one attempt of it, may take.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsPolicy {
    /// e.g. "5m": the longest one call may take, retries included.
    pub operation_timeout: Option<Spanned<String>>,
    /// e.g. "90s": the longest one attempt may take (a hung read fails and is retried).
    pub attempt_timeout: Option<Spanned<String>>,
}

impl AwsPolicy {
    pub fn operation_timeout(&self) -> Option<std::time::Duration> {
        parse_duration(self.operation_timeout.as_ref())
    }

    pub fn attempt_timeout(&self) -> Option<std::time::Duration> {
        parse_duration(self.attempt_timeout.as_ref())
    }
}

fn parse_duration(v: Option<&Spanned<String>>) -> Option<std::time::Duration> {
    v.and_then(|d| humantime::parse_duration(d.get_ref()).ok())
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
    /// Whether users depend on this stack. A stack is production unless the policy says
    /// `production = false`: on AWS, `drd drill run` refuses it without `--i-mean-production`.
    #[serde(default = "default_production")]
    pub production: bool,
}

fn default_production() -> bool {
    true
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
    /// A store in its own account: drd writes and reads points through this role (it assumes
    /// it), which the store bucket's policy (`drd iam policy --store-bucket`) lets add and read
    /// objects but never delete or overwrite a point or a blob.
    #[serde(default)]
    pub role_arn: Option<Spanned<String>>,
    /// The only role the store bucket lets delete points and blobs: `drd prune` assumes it, the
    /// daemon never does (a scheduled prune is refused when the store has its own account).
    #[serde(default)]
    pub prune_role_arn: Option<Spanned<String>>,
}

impl BackupPolicy {
    /// The age recipients, trimmed, as new points record them.
    pub fn recipient_names(&self) -> Vec<String> {
        self.recipients
            .get_ref()
            .iter()
            .map(|r| r.get_ref().trim().to_string())
            .collect()
    }

    /// The store's writer and prune roles, when the store lives in its own account.
    pub fn role_arns(&self) -> Vec<String> {
        self.role_arn
            .iter()
            .chain(self.prune_role_arn.iter())
            .map(|r| r.get_ref().clone())
            .collect()
    }
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
    /// The drills' canary (`drd drill`): a secret holding no credential that drills write
    /// timestamped values to before a fault, backed up like the others, so that what survives
    /// a recovery measures the RPO. Never one of the secrets above.
    #[serde(default)]
    pub canary: Option<Spanned<String>>,
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
pub struct CiPolicy {
    /// The git URL of the workload's repository (`DRD_CI_REPOSITORY` overrides it, as the lab
    /// sets it). Never put credentials in it.
    pub repository: Spanned<String>,
    /// The branch CI deploys (the mirror's zip is its tree).
    #[serde(default = "default_ci_branch")]
    pub branch: String,
    /// A Secrets Manager secret (primary region) holding a token for the repository, e.g.
    /// "github-token"; read at each mirror, never logged.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Or the name of an environment variable holding the token, e.g. "GITHUB_TOKEN".
    #[serde(default)]
    pub token_env: Option<String>,
    /// The mirror is stale (an alert: `drd_mirror_stale` 1, `drd status`) when its last
    /// successful fetch is older than this.
    #[serde(default = "default_mirror_max_age")]
    pub mirror_max_age: Spanned<String>,
    /// The GitHub Actions workflow that deploys (file name under `.github/workflows/`):
    /// `drd failover-ci` disables it when CI moves to CodePipeline and enables and dispatches it
    /// when CI comes back (the repository and API are `[github]`'s).
    #[serde(default = "default_ci_workflow")]
    pub workflow: String,
}

fn default_ci_workflow() -> String {
    "deploy.yml".into()
}

fn default_ci_branch() -> String {
    "main".into()
}

fn default_mirror_max_age() -> Spanned<String> {
    Spanned::new(0..0, "2h".into())
}

impl CiPolicy {
    /// The repository URL: `DRD_CI_REPOSITORY` when set, else the policy's.
    pub fn repository_url(&self) -> String {
        std::env::var("DRD_CI_REPOSITORY")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.repository.get_ref().clone())
    }

    pub fn max_age(&self) -> std::time::Duration {
        humantime::parse_duration(self.mirror_max_age.get_ref())
            .unwrap_or(std::time::Duration::from_secs(7200))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinePolicy {
    pub name: Spanned<String>,
    /// How many times `pipeline-failure` retries or restarts before giving up.
    #[serde(default = "default_pipeline_retries")]
    pub max_retries: u32,
    /// The CodePipeline + CodeBuild template `drd ci install` deploys (relative to the policy
    /// file), e.g. "../classifier/ci/pipeline.yaml".
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// Buckets of the standby pipeline: "<prefix>-source-<region>" (versioned, the S3 source)
    /// and "<prefix>-artifacts-<region>". Defaults to the pipeline's name.
    #[serde(default)]
    pub bucket_prefix: Option<String>,
    /// A managed policy attached to the CodeBuild role so its deploy stage may run `drd deploy`
    /// (see `drd iam`); without it the role can only read its buckets and write logs.
    #[serde(default)]
    pub deploy_policy_arn: Option<String>,
    /// The CodeBuild image of the standby pipeline: one with drd, the Rust toolchain (musl
    /// target) and musl-tools. The template's default is a stock image without them.
    #[serde(default)]
    pub build_image: Option<String>,
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
    /// `backup`, `verify`, `prune` or `runbook:NAME`.
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontDoorPolicy {
    /// `api-gateway`: an API Gateway HTTP API with a regional custom domain in each region
    /// (the only kind; docs/front-door.md says why not CloudFront).
    pub kind: Spanned<String>,
    /// The API's name in each region (default `<stack>-front-door`).
    #[serde(default)]
    pub api_name: Option<String>,
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

impl Default for SecretsPolicy {
    fn default() -> Self {
        Self {
            api_key: default_api_key_secret(),
            others: vec![],
            generated: vec![],
            canary: None,
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
        validate::validate(&policy, text)?;
        Ok(policy)
    }

    /// The template path, resolved against the policy file's folder.
    pub fn template_path(&self) -> PathBuf {
        self.resolve(self.stack.template.get_ref())
    }

    /// The standby pipeline's template (`[pipeline] template`), resolved.
    pub fn pipeline_template_path(&self) -> Option<PathBuf> {
        let t = self.pipeline.as_ref()?.template.as_ref()?;
        Some(self.resolve(t.get_ref()))
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
        v.extend(self.secrets.canary.iter().map(|s| s.get_ref().clone()));
        v
    }
    /// The drills' canary secret, when the policy names one.
    pub fn canary_secret(&self) -> Option<&str> {
        self.secrets.canary.as_ref().map(|c| c.get_ref().as_str())
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

#[cfg(test)]
mod tests;
