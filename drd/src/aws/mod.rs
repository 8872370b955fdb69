//! The one place AWS SDK clients are built: per region, from one `AwsSettings` (profile, endpoint
//! override, data-plane override, retries, operation and attempt timeouts), honouring the
//! standard credential chain.
//!
//! With an endpoint override (an emulator) S3 uses path-style addressing and retries default to a
//! single attempt: the SDK's retries repeat moto's 500s and hide the first, real error.

use crate::error::{Error, Retry};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub profile: Option<String>,
    /// Control-plane endpoint override (`--endpoint-url`, `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// Lambda data-plane override (Function URLs and `Invoke`), e.g. the sandbox function host.
    pub data_endpoint: Option<String>,
    /// Total attempts per call; `None` picks 3 against AWS and 1 against an emulator.
    pub max_attempts: Option<u32>,
    /// Longest one call may take, retries included (`DEFAULT_OPERATION_TIMEOUT` when unset).
    pub operation_timeout: Option<Duration>,
    /// Longest one attempt of a call may take (`DEFAULT_ATTEMPT_TIMEOUT` when unset): a hung read
    /// fails and is retried instead of stalling a job that keeps renewing its lease.
    pub attempt_timeout: Option<Duration>,
}

/// Standard retries (exponential backoff with jitter). Against an emulator on loopback, where a
/// retry costs milliseconds and nothing is being protected from overload, the first backoff is
/// 100 ms instead of 1 s.
fn retry_config(attempts: u32, emulator: bool) -> RetryConfig {
    let c = RetryConfig::standard().with_max_attempts(attempts.max(1));
    if emulator {
        c.with_initial_backoff(Duration::from_millis(100))
    } else {
        c
    }
}

/// Covers a Lambda `Invoke` that waits for a cold start and an LLM call (the function's own
/// timeout is 60 s) and a code package upload.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Aws {
    settings: AwsSettings,
    configs: Mutex<HashMap<String, SdkConfig>>,
    /// One S3 client per region: a daemon protecting many stacks opens a store per stack.
    s3_clients: Mutex<HashMap<String, aws_sdk_s3::Client>>,
    /// A CodePipeline client given from outside (tests use the SDK's mock client: the emulator
    /// serves no pipeline executions, see docs/emulator-gaps.md).
    codepipeline: Mutex<Option<aws_sdk_codepipeline::Client>>,
}

impl Aws {
    pub fn new(settings: AwsSettings) -> Self {
        Self {
            settings,
            configs: Mutex::new(HashMap::new()),
            s3_clients: Mutex::new(HashMap::new()),
            codepipeline: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    async fn config(&self, region: &str) -> SdkConfig {
        if let Some(c) = self.configs.lock().expect("config cache").get(region) {
            return c.clone();
        }
        let attempts =
            self.settings
                .max_attempts
                .unwrap_or(if self.settings.endpoint_url.is_some() {
                    1
                } else {
                    3
                });
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(retry_config(attempts, self.settings.endpoint_url.is_some()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(
                        self.settings
                            .operation_timeout
                            .unwrap_or(DEFAULT_OPERATION_TIMEOUT),
                    )
                    .operation_attempt_timeout(
                        self.settings
                            .attempt_timeout
                            .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT),
                    )
                    .build(),
            );
        if let Some(p) = &self.settings.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &self.settings.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let conf = loader.load().await;
        self.configs
            .lock()
            .expect("config cache")
            .insert(region.to_string(), conf.clone());
        conf
    }

    pub async fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        if let Some(c) = self.s3_clients.lock().expect("s3 clients").get(region) {
            return c.clone();
        }
        let conf = self.config(region).await;
        let s3 = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(self.settings.endpoint_url.is_some())
            .interceptor(Where::new(region))
            .build();
        let c = aws_sdk_s3::Client::from_conf(s3);
        self.s3_clients
            .lock()
            .expect("s3 clients")
            .insert(region.to_string(), c.clone());
        c
    }

    /// An S3 client acting as `role` (a store in its own account: `backup.role_arn`), whose
    /// credentials come from STS AssumeRole with the caller's own and are renewed before they
    /// expire. Without a role, the caller's client.
    pub async fn s3_as(&self, region: &str, role: Option<&str>) -> aws_sdk_s3::Client {
        let Some(role) = role else {
            return self.s3(region).await;
        };
        let key = format!("{region}|{role}");
        if let Some(c) = self.s3_clients.lock().expect("s3 clients").get(&key) {
            return c.clone();
        }
        let conf = self.config(region).await;
        let provider = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name("drd-store")
            .region(Region::new(region.to_string()))
            .configure(&conf)
            .build()
            .await;
        let provider = Assumed {
            role: role.to_string(),
            inner: provider,
        };
        let s3 = aws_sdk_s3::config::Builder::from(&conf)
            .credentials_provider(provider)
            .force_path_style(self.settings.endpoint_url.is_some())
            .interceptor(Where::new(region))
            .build();
        let c = aws_sdk_s3::Client::from_conf(s3);
        self.s3_clients
            .lock()
            .expect("s3 clients")
            .insert(key, c.clone());
        c
    }

    pub async fn cloudformation(&self, region: &str) -> aws_sdk_cloudformation::Client {
        let conf = self.config(region).await;
        aws_sdk_cloudformation::Client::from_conf(
            aws_sdk_cloudformation::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    pub async fn lambda(&self, region: &str) -> aws_sdk_lambda::Client {
        let conf = self.config(region).await;
        aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    /// Lambda client for `Invoke`: goes to the data-plane override when one is set.
    pub async fn lambda_data(&self, region: &str) -> aws_sdk_lambda::Client {
        let conf = self.config(region).await;
        let mut b = aws_sdk_lambda::config::Builder::from(&conf).interceptor(Where::new(region));
        if let Some(e) = &self.settings.data_endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_lambda::Client::from_conf(b.build())
    }

    pub async fn secrets(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        let conf = self.config(region).await;
        aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    pub async fn cloudwatch(&self, region: &str) -> aws_sdk_cloudwatch::Client {
        let conf = self.config(region).await;
        aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    pub async fn apigatewayv2(&self, region: &str) -> aws_sdk_apigatewayv2::Client {
        let conf = self.config(region).await;
        aws_sdk_apigatewayv2::Client::from_conf(
            aws_sdk_apigatewayv2::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    pub async fn acm(&self, region: &str) -> aws_sdk_acm::Client {
        let conf = self.config(region).await;
        aws_sdk_acm::Client::from_conf(
            aws_sdk_acm::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    /// The credentials the SDK clients use, for requests drd signs itself (an `AWS_IAM` Function
    /// URL takes a SigV4-signed request, `crate::lambda::probe::UrlProber`).
    /// The provider of the configuration for `region` (an assumed role's STS calls go to that
    /// region, not to us-east-1). It does not cache: callers keep what it gives until it expires.
    pub async fn credentials_provider(
        &self,
        region: &str,
    ) -> Option<aws_credential_types::provider::SharedCredentialsProvider> {
        self.config(region).await.credentials_provider()
    }

    pub async fn logs(&self, region: &str) -> aws_sdk_cloudwatchlogs::Client {
        let conf = self.config(region).await;
        aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    pub async fn codepipeline(&self, region: &str) -> aws_sdk_codepipeline::Client {
        if let Some(c) = self.codepipeline.lock().expect("client override").clone() {
            return c;
        }
        let conf = self.config(region).await;
        aws_sdk_codepipeline::Client::from_conf(
            aws_sdk_codepipeline::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    pub async fn codebuild(&self, region: &str) -> aws_sdk_codebuild::Client {
        let conf = self.config(region).await;
        aws_sdk_codebuild::Client::from_conf(
            aws_sdk_codebuild::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    /// Use this CodePipeline client instead of building one.
    pub fn set_codepipeline(&self, client: aws_sdk_codepipeline::Client) {
        *self.codepipeline.lock().expect("client override") = Some(client);
    }

    /// Route 53 is a global service: its API is signed for us-east-1 whatever region drd acts
    /// on (on AWS its control plane lives there; see docs/restore.md).
    pub async fn route53(&self) -> aws_sdk_route53::Client {
        let conf = self.config("us-east-1").await;
        aws_sdk_route53::Client::from_conf(
            aws_sdk_route53::config::Builder::from(&conf)
                .interceptor(Where::new("us-east-1"))
                .build(),
        )
    }

    pub async fn sns(&self, region: &str) -> aws_sdk_sns::Client {
        let conf = self.config(region).await;
        aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }

    pub async fn sts(&self, region: &str) -> aws_sdk_sts::Client {
        let conf = self.config(region).await;
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&conf)
                .interceptor(Where::new(region))
                .build(),
        )
    }
}

/// The store's role as a credentials provider whose failures say which role could not be
/// assumed (the SDK's own read as if there were no credentials at all).
#[derive(Debug)]
struct Assumed {
    role: String,
    inner: aws_config::sts::AssumeRoleProvider,
}

impl aws_credential_types::provider::ProvideCredentials for Assumed {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        use aws_credential_types::provider::error::CredentialsError;
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            // The provider's own STS client carries no interceptor: audit the call here.
            crate::iam::observe("sts", "AssumeRole").map_err(CredentialsError::provider_error)?;
            self.inner.provide_credentials().await.map_err(|e| {
                CredentialsError::provider_error(format!(
                    "sts:AssumeRole of {} (backup.role_arn) failed: {}",
                    self.role,
                    DisplayErrorContext(&e)
                ))
            })
        })
    }
}

mod locate;
pub use locate::Located;
use locate::Where;
use locate::{located_of, LocatedError};

/// The messages of an error and its sources, outermost first.
fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![];
    let mut cur = Some(err);
    while let Some(e) = cur {
        let m = e.to_string();
        // The location frame names hosts (a bucket called `acme-credentials` must not read as
        // a credentials failure): it is reported apart, never classified.
        if !m.is_empty() && out.last() != Some(&m) && e.downcast_ref::<LocatedError>().is_none() {
            out.push(m);
        }
        cur = e.source();
    }
    out
}

/// An SDK error's message and its sources' messages, outermost first.
fn sdk_chain<E, R>(err: &SdkError<E, R>) -> Vec<String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut parts = vec![err.to_string()];
    if let Some(inner) = std::error::Error::source(err) {
        for m in chain(inner) {
            if parts.last() != Some(&m) {
                parts.push(m);
            }
        }
    }
    parts
}

/// A request that never got an answer, as one line: (code, what happened, what to do), from
/// the messages of the error and its sources (outermost first).
pub fn classify_failure(parts: &[String], timed_out: bool) -> (&'static str, String, &'static str) {
    let all = parts.join(": ").to_lowercase();
    // The innermost cause, shortened: the detail a person can act on.
    let cause: String = parts
        .last()
        .map(|c| c.replace('\n', " "))
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect();
    if all.contains("assumerole") || all.contains("assume role") || all.contains("assumed role") {
        (
            "AssumeRoleFailed",
            format!("the store's role (backup.role_arn) could not be assumed ({cause})"),
            "check that the role trusts this account and that the caller holds sts:AssumeRole on it (every command's `drd iam policy` includes it); docs/store-account.md",
        )
    } else if all.contains("credential") {
        (
            "NoCredentials",
            "no AWS credentials were found (environment, profile, SSO or instance role)".into(),
            "set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or eval \"$(drd sandbox up)\" for the local lab",
        )
    } else if all.contains("dns error")
        || all.contains("failed to lookup address")
        || all.contains("name or service not known")
    {
        (
            "DnsFailure",
            format!("the endpoint's host name does not resolve ({cause})"),
            "check the region, --endpoint-url / AWS_ENDPOINT_URL and DNS",
        )
    } else if all.contains("certificate") || all.contains("tls") || all.contains("ssl") {
        (
            "TlsFailure",
            format!("the TLS handshake failed ({cause})"),
            "check the endpoint's name and certificate; a proxy that intercepts TLS needs its CA trusted",
        )
    } else if timed_out || all.contains("timed out") || all.contains("timeout") {
        (
            "Unreachable",
            "no answer within the attempt timeout".into(),
            "the service or the network is slow or down: retry, raise --attempt-timeout, or (a failing region) fail over with drd restore --region R",
        )
    } else if all.contains("refused") {
        (
            "Unreachable",
            format!("the connection was refused ({cause})"),
            "check --endpoint-url / AWS_ENDPOINT_URL (the local lab: eval \"$(drd sandbox up)\")",
        )
    } else {
        (
            "Unreachable",
            format!("the connection failed ({cause})"),
            "check the network and the region; a failing region: see the AWS Health Dashboard, or fail over with drd restore --region R",
        )
    }
}

/// Global services whose control plane (their API) lives in us-east-1 on AWS, while their data
/// plane (DNS answers, health checks, edge requests) runs everywhere.
pub const GLOBAL_CONTROL_PLANES: &[&str] = &["route53", "cloudfront", "iam"];

/// Turn an SDK error into a typed drd error naming the service, operation and error code.
pub fn aws_error<E>(
    service: &'static str,
    operation: &'static str,
    err: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let at = located_of(&err).map(|l| l.to_string());
    let (code, message, retry, hint) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            // A 403 without a code (Route 53's and some emulators' denials) is a denial.
            let code = match e.code() {
                Some(c) => c.to_string(),
                None if se.raw().status().as_u16() == 403 => "AccessDenied".to_string(),
                None => "Unknown".to_string(),
            };
            let retry = if matches!(
                code.as_str(),
                "Throttling"
                    | "ThrottlingException"
                    | "TooManyRequestsException"
                    | "SlowDown"
                    | "RequestLimitExceeded"
                    | "ServiceUnavailable"
                    | "InternalError"
            ) {
                Retry::Transient
            } else {
                Retry::Permanent
            };
            let hint = match code.as_str() {
                "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
                    Some(denied_hint(service, operation))
                }
                "Throttling" | "ThrottlingException" | "TooManyRequestsException" | "SlowDown"
                | "RequestLimitExceeded" => Some(
                    "AWS is throttling these calls: retry in a minute, raise --max-attempts, or spread scheduled jobs (jitter)".to_string(),
                ),
                "InvalidClientTokenId" | "UnrecognizedClientException" | "ExpiredToken" => {
                    Some("refresh the credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID)".to_string())
                }
                _ => None,
            };
            (code, e.message().unwrap_or("").to_string(), retry, hint)
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            // One line for the person reading it; the whole chain with -v.
            tracing::info!(
                service,
                operation,
                "the full error: {}",
                DisplayErrorContext(&err)
            );
            let (code, message, hint) =
                classify_failure(&sdk_chain(&err), matches!(err, SdkError::TimeoutError(_)));
            let retry = if code == "NoCredentials" {
                Retry::Permanent
            } else {
                Retry::Transient
            };
            let hint = match (code, GLOBAL_CONTROL_PLANES.contains(&service)) {
                ("Unreachable", true) => format!(
                    "{service}'s control plane (it runs in us-east-1) does not answer, and this step needs it; users still move by themselves to a standby prepared ahead (a health-checked SECONDARY record: drd deploy --region R before the outage); run the command again when it answers (its steps converge: what is done stays done)"
                ),
                _ => hint.to_string(),
            };
            (code.to_string(), message, retry, Some(hint))
        }
        SdkError::ResponseError(_) => (
            "BadResponse".to_string(),
            DisplayErrorContext(&err).to_string(),
            Retry::Transient,
            None,
        ),
        // No credentials can surface before the request is dispatched.
        _ if sdk_chain(&err)
            .join(" ")
            .to_lowercase()
            .contains("credential") =>
        {
            tracing::info!(
                service,
                operation,
                "the full error: {}",
                DisplayErrorContext(&err)
            );
            let (code, message, hint) = classify_failure(&sdk_chain(&err), false);
            (
                code.to_string(),
                message,
                Retry::Permanent,
                Some(hint.to_string()),
            )
        }
        _ => (
            "ClientError".to_string(),
            DisplayErrorContext(&err).to_string(),
            Retry::Permanent,
            None,
        ),
    };
    Error::Aws {
        service,
        operation,
        at,
        code,
        message,
        hint,
        retry,
    }
}

/// What to grant after a denial: the IAM action the operation needs (an S3 denial names none),
/// and the command whose generated policy holds it.
fn denied_hint(service: &str, operation: &str) -> String {
    let actions = crate::iam::actions_of(service, operation).join(" and ");
    match crate::iam::declared() {
        Some(d) if !d.command.is_empty() => format!(
            "the caller lacks {actions}: grant it to the caller's role; `drd iam policy --command '{}'` prints everything this command needs (docs/permissions.md)",
            d.command
        ),
        _ => format!(
            "the caller lacks {actions}: grant it to the caller's role (`drd iam policy`, docs/permissions.md)"
        ),
    }
}

/// The service error code of an SDK error, if the service answered.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

#[cfg(test)]
mod audit_tests {
    use super::*;
    use crate::iam::audit::{local, Declared};

    /// A client whose calls can go nowhere: port 9 on loopback refuses.
    fn aws() -> Aws {
        Aws::new(AwsSettings {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            max_attempts: Some(1),
            ..Default::default()
        })
    }

    fn declared(actions: &[&str]) -> Declared {
        Declared {
            command: "backup".into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    // The checker, proved on a deliberate undeclared call: `backup` declares no s3:DeleteObject,
    // so the interceptor every client carries refuses the call before it is sent, naming the
    // action and the command; the same call declared goes out (and fails to connect instead).
    #[tokio::test(flavor = "current_thread")]
    async fn an_undeclared_call_is_refused_naming_the_action_and_the_command() {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        let s3 = aws().s3("us-east-1").await;
        let delete = || {
            s3.delete_object()
                .bucket("points")
                .key("stack/points/p.json")
                .send()
        };
        let undeclared = declared(&["s3:GetObject", "s3:PutObject"]);
        let guard = local(undeclared.clone(), true);
        let err = delete().await.unwrap_err();
        drop(guard);
        let msg = aws_error("s3", "DeleteObject", err).to_string();
        assert!(
            msg.contains("s3:DeleteObject") && msg.contains("`backup` does not declare it"),
            "{msg}"
        );
        // Declared: the call is made (nothing listens, so it fails to connect).
        let guard = local(declared(&["s3:DeleteObject"]), true);
        let err = delete().await.unwrap_err();
        drop(guard);
        let msg = aws_error("s3", "DeleteObject", err).to_string();
        assert!(!msg.contains("does not declare"), "{msg}");
        assert!(msg.contains("127.0.0.1:9"), "{msg}");
        // Audit off: the undeclared call goes out too (recorded, not refused).
        let guard = local(undeclared, false);
        let err = delete().await.unwrap_err();
        drop(guard);
        assert!(!aws_error("s3", "DeleteObject", err)
            .to_string()
            .contains("does not declare"));
    }

    #[test]
    fn an_operation_maps_to_the_action_iam_checks() {
        use crate::iam::actions_of;
        assert_eq!(actions_of("s3", "HeadObject"), ["s3:GetObject"]);
        assert_eq!(actions_of("s3", "ListObjectsV2"), ["s3:ListBucket"]);
        assert_eq!(actions_of("lambda", "Invoke"), ["lambda:InvokeFunction"]);
        assert_eq!(actions_of("apigatewayv2", "CreateApi"), ["apigateway:POST"]);
        assert_eq!(
            actions_of("cloudwatchlogs", "DescribeLogGroups"),
            ["logs:DescribeLogGroups"]
        );
        assert_eq!(
            actions_of("s3", "CopyObject"),
            ["s3:GetObject", "s3:PutObject"]
        );
    }
}
