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
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
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

/// Where a call went: the region its client signs for and the endpoint it reached. Failure
/// lines name both (a restore talks to two regions; an emulator or a proxy is an endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub region: String,
    pub endpoint: Option<String>,
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "in {} at {e}", self.region),
            None => write!(f, "in {}", self.region),
        }
    }
}

/// A transport error wrapped with where it happened (see `Where`).
#[derive(Debug)]
struct LocatedError {
    at: Located,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for LocatedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.at)
    }
}

impl std::error::Error for LocatedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The endpoint a request was sent to (scheme, host and port), kept for the completion hook.
#[derive(Debug, Clone)]
struct SentTo(String);

impl aws_smithy_types::config_bag::Storable for SentTo {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// An interceptor on every client: it records where each request goes, attaches that to a
/// service's answer (a response extension) and wraps transport failures (no answer) with it,
/// so `aws_error` can name the region and endpoint of any failure.
#[derive(Debug)]
struct Where {
    region: String,
}

impl Where {
    fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
        }
    }

    fn located(&self, cfg: &ConfigBag, uri: Option<&str>) -> Located {
        let endpoint = cfg
            .load::<SentTo>()
            .map(|e| e.0.clone())
            .or_else(|| uri.and_then(endpoint_of));
        Located {
            region: self.region.clone(),
            endpoint,
        }
    }
}

/// `scheme://host[:port]` of a request URI.
/// (`None` for a URI not yet resolved to an endpoint: a relative path.)
fn endpoint_of(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    Some(format!(
        "{scheme}://{}",
        rest.split(['/', '?']).next().unwrap_or(rest)
    ))
}

impl Intercept for Where {
    fn name(&self) -> &'static str {
        "drd-where"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        if let Some(e) = endpoint_of(ctx.request().uri()) {
            cfg.interceptor_state().store_put(SentTo(e));
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let at = self.located(cfg, None);
        ctx.response_mut().add_extension(at);
        Ok(())
    }

    fn modify_before_completion(
        &self,
        ctx: &mut FinalizerInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let uri = ctx.request().map(|r| r.uri().to_string());
        let at = self.located(cfg, uri.as_deref());
        let Some(slot) = ctx.output_or_error_mut() else {
            return Ok(());
        };
        let Err(e) = slot else { return Ok(()) };
        // A service's answer keeps its type (callers match on it); only failures without one
        // are wrapped, keeping their kind.
        if e.is_operation_error() || e.is_response_error() || e.is_interceptor_error() {
            return Ok(());
        }
        let timeout = e.is_timeout_error();
        let connector = e
            .as_connector_error()
            .map(|c| (c.is_timeout(), c.is_io(), c.is_user(), c.as_other()));
        let placeholder = OrchestratorError::other("drd: locating a transport error");
        let Err(orig) = std::mem::replace(slot, Err(placeholder)) else {
            return Ok(());
        };
        let wrapped: BoxError = Box::new(LocatedError {
            at,
            source: Box::new(orig),
        });
        *slot = Err(match connector {
            Some((true, _, _, _)) => OrchestratorError::connector(ConnectorError::timeout(wrapped)),
            Some((_, true, _, _)) => OrchestratorError::connector(ConnectorError::io(wrapped)),
            Some((_, _, true, _)) => OrchestratorError::connector(ConnectorError::user(wrapped)),
            Some((_, _, _, kind)) => {
                OrchestratorError::connector(ConnectorError::other(wrapped, kind))
            }
            None if timeout => OrchestratorError::timeout(wrapped),
            None => OrchestratorError::other(wrapped),
        });
        Ok(())
    }
}

/// Where an SDK error happened, when the `Where` interceptor recorded it.
fn located_of<E>(err: &SdkError<E, HttpResponse>) -> Option<Located>
where
    E: std::error::Error + 'static,
{
    if let Some(r) = err.raw_response() {
        if let Some(at) = r.extension::<Located>() {
            return Some(at.clone());
        }
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cur {
        if let Some(l) = e.downcast_ref::<LocatedError>() {
            return Some(l.at.clone());
        }
        cur = e.source();
    }
    None
}

/// Turn an SDK error into a typed drd error naming the service, operation and error code.
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
    if all.contains("credential") {
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
            let code = e.code().unwrap_or("Unknown").to_string();
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
                    Some("grant the permission to the caller's role (see docs/permissions.md)")
                }
                "Throttling" | "ThrottlingException" | "TooManyRequestsException" | "SlowDown"
                | "RequestLimitExceeded" => Some(
                    "AWS is throttling these calls: retry in a minute, raise --max-attempts, or spread scheduled jobs (jitter)",
                ),
                "InvalidClientTokenId" | "UnrecognizedClientException" | "ExpiredToken" => {
                    Some("refresh the credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID)")
                }
                _ => None,
            };
            (
                code,
                e.message().unwrap_or("").to_string(),
                retry,
                hint.map(str::to_string),
            )
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

/// The service error code of an SDK error, if the service answered.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}
