//! Where a call went: every client carries the `Where` interceptor, which records the endpoint
//! each request is sent to, attaches it to the service's answer, wraps transport failures with
//! it (so `aws_error` names the region and endpoint of any failure), and passes every
//! operation to the IAM audit (`crate::iam::observe`) before it is sent.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

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
pub(super) struct LocatedError {
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
pub(super) struct Where {
    region: String,
}

impl Where {
    pub(super) fn new(region: &str) -> Self {
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

    // Not read_before_execution: a client's interceptors run that before the operation's
    // configuration (its `Metadata`) is in the bag.
    fn read_before_serialization(
        &self,
        _ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            crate::iam::observe(m.service(), m.name())?;
        }
        Ok(())
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
pub(super) fn located_of<E>(err: &SdkError<E, HttpResponse>) -> Option<Located>
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
