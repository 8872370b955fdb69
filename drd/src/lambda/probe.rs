//! Health probes in tiers:
//! - T0: `{}` must give 400 "Missing required field: transcript" (the code runs at all);
//! - T1: an already-labelled transcript must come back unchanged (no LLM call);
//! - T2: a `Speaker 0/1` transcript must come back with every line relabelled (one LLM call,
//!   so it also proves the API key and the LLM endpoint).

use crate::aws::aws_error;
use crate::error::{Error, Result};
use aws_smithy_types::Blob;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    T0,
    T1,
    T2,
}

impl Tier {
    pub fn upto(deep: bool) -> Vec<Tier> {
        if deep {
            vec![Tier::T0, Tier::T1, Tier::T2]
        } else {
            vec![Tier::T0, Tier::T1]
        }
    }
}

pub const T1_TRANSCRIPT: &str = "Agent: Hello, how can I help?\nCustomer: Hi, my order is late.";
pub const T2_TRANSCRIPT: &str =
    "Speaker 0: Thank you for calling, how can I help?\nSpeaker 1: My order has not arrived.\nSpeaker 0: Let me check that for you.";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    pub tier: Tier,
    /// What was probed: `url` (the Function URL) or `version N` (an Invoke with a qualifier).
    pub via: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub detail: String,
}

pub fn request(tier: Tier) -> Value {
    match tier {
        Tier::T0 => json!({}),
        Tier::T1 => json!({"transcript": T1_TRANSCRIPT}),
        Tier::T2 => json!({"transcript": T2_TRANSCRIPT}),
    }
}

/// Decide whether a reply passes a tier. `Err` says why not.
pub fn judge(tier: Tier, status: u16, body: &Value) -> std::result::Result<(), String> {
    match tier {
        Tier::T0 => {
            let err = body.get("error").and_then(Value::as_str).unwrap_or("");
            if status == 400 && err == "Missing required field: transcript" {
                Ok(())
            } else {
                Err(format!(
                    "expected 400 \"Missing required field: transcript\", got {status} {}",
                    short(body)
                ))
            }
        }
        Tier::T1 => {
            let t = body.get("transcript").and_then(Value::as_str);
            if status == 200 && t == Some(T1_TRANSCRIPT) {
                Ok(())
            } else {
                Err(format!(
                    "expected 200 with the transcript unchanged, got {status} {}",
                    short(body)
                ))
            }
        }
        Tier::T2 => {
            let Some(t) = body.get("transcript").and_then(Value::as_str) else {
                return Err(format!(
                    "expected 200 with a relabelled transcript, got {status} {}",
                    short(body)
                ));
            };
            let roles = ["Agent", "Customer"];
            let lines: Vec<&str> = t.split('\n').collect();
            let ok = status == 200
                && lines.len() == T2_TRANSCRIPT.split('\n').count()
                && lines.iter().all(|l| {
                    l.split_once(':')
                        .is_some_and(|(label, _)| roles.contains(&label.trim()))
                });
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "expected every line relabelled to Agent/Customer, got {status} {}",
                    short(body)
                ))
            }
        }
    }
}

fn short(body: &Value) -> String {
    let s = body.to_string();
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// Sends requests to a Function URL or to the front door, through the data-plane override when
/// one is set (the sandbox function host): the URL's host name travels in the `Host` header.
/// A Function URL is `AWS_IAM` (only the front door may call it unsigned, and it may not), so a
/// prober made with [`UrlProber::signing`] signs requests to `*.lambda-url.*` hosts with SigV4,
/// as an IAM caller holding `lambda:InvokeFunctionUrl` would.
#[derive(Clone)]
pub struct UrlProber {
    http: reqwest::Client,
    data_endpoint: Option<String>,
    signer: Option<std::sync::Arc<Signer>>,
}

/// Where a signing prober's credentials come from, and the ones it holds per region until they
/// are about to expire (the default provider chain caches nothing: without this, every probe
/// would ask STS, IMDS or SSO again).
struct Signer {
    source: CredentialSource,
    held: std::sync::Mutex<std::collections::HashMap<String, aws_credential_types::Credentials>>,
}

enum CredentialSource {
    /// drd's own, resolved with the configuration of the URL's region.
    Aws(crate::aws::Aws),
    Static(aws_credential_types::Credentials),
}

impl Signer {
    async fn credentials(&self, region: &str) -> Result<aws_credential_types::Credentials> {
        use aws_credential_types::provider::ProvideCredentials;
        let fresh = |c: &aws_credential_types::Credentials| {
            c.expiry()
                .is_none_or(|t| t > std::time::SystemTime::now() + Duration::from_secs(300))
        };
        if let Some(c) = self
            .held
            .lock()
            .expect("credentials")
            .get(region)
            .filter(|c| fresh(c))
        {
            return Ok(c.clone());
        }
        let c = match &self.source {
            CredentialSource::Static(c) => c.clone(),
            CredentialSource::Aws(aws) => {
                let provider = aws.credentials_provider(region).await.ok_or_else(|| {
                    Error::failed("no credentials to sign the Function URL request")
                })?;
                provider.provide_credentials().await.map_err(|e| {
                    Error::failed(format!(
                        "no credentials to sign the Function URL request: {e}"
                    ))
                })?
            }
        };
        self.held
            .lock()
            .expect("credentials")
            .insert(region.to_string(), c.clone());
        Ok(c)
    }
}

impl UrlProber {
    /// An unsigned prober: what any HTTPS client of the front door is.
    pub fn new(data_endpoint: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(70))
            .build()
            .expect("reqwest client builds");
        Self {
            http,
            data_endpoint,
            signer: None,
        }
    }

    fn with(data_endpoint: Option<String>, source: CredentialSource) -> Self {
        let mut p = Self::new(data_endpoint);
        p.signer = Some(std::sync::Arc::new(Signer {
            source,
            held: Default::default(),
        }));
        p
    }

    /// A prober that signs its Function URL requests with drd's own credentials.
    pub async fn signing(aws: &crate::aws::Aws) -> Self {
        Self::with(
            aws.settings().data_endpoint.clone(),
            CredentialSource::Aws(crate::aws::Aws::new(aws.settings().clone())),
        )
    }

    /// A prober that signs its Function URL requests as the given access key (a caller that
    /// is not drd: a test's second client, an operator's tool).
    pub fn signing_as(data_endpoint: Option<String>, access_key: &str, secret_key: &str) -> Self {
        Self::with(
            data_endpoint,
            CredentialSource::Static(aws_credential_types::Credentials::new(
                access_key, secret_key, None, None, "drd",
            )),
        )
    }

    /// The same prober with an HTTP client (connection pool) of its own.
    pub fn fresh(&self) -> Self {
        let mut p = Self::new(self.data_endpoint.clone());
        p.signer = self.signer.clone();
        p
    }

    /// POST a JSON body to a Function URL or the front door; returns status and parsed body.
    pub async fn post(&self, function_url: &str, body: &Value) -> Result<(u16, Value)> {
        let parsed = reqwest::Url::parse(function_url)
            .map_err(|e| Error::failed(format!("bad Function URL {function_url:?}: {e}")))?;
        let host = parsed.host_str().unwrap_or_default().to_string();
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let req = match &self.data_endpoint {
            Some(ep) => {
                let mut target = reqwest::Url::parse(ep)
                    .map_err(|e| Error::failed(format!("bad data endpoint {ep:?}: {e}")))?;
                target.set_path(parsed.path());
                self.http.post(target).header(reqwest::header::HOST, &host)
            }
            None => self.http.post(parsed.clone()),
        };
        let mut req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        if let (Some(signer), Some(region)) = (&self.signer, url_region(&host)) {
            let creds = signer.credentials(&region).await?;
            for (k, v) in sign(creds, parsed.as_str(), &host, &region, &bytes)? {
                req = req.header(k, v);
            }
        }
        let resp = req
            .body(bytes)
            .send()
            .await
            // Without the URL: this detail reaches reports, alerts and the status page.
            .map_err(|e| {
                Error::failed(format!("Function URL request failed: {}", e.without_url()))
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    pub async fn probe(&self, function_url: &str, tier: Tier) -> ProbeResult {
        let start = Instant::now();
        let r = self.post(function_url, &request(tier)).await;
        finish(tier, "url".into(), start, r)
    }
}

/// The region of a Function URL host (`<id>.lambda-url.<region>.on.aws`); `None` for any other
/// host (the front door is called unsigned, as users call it).
fn url_region(host: &str) -> Option<String> {
    let mut parts = host.split('.');
    let (_id, kind, region) = (parts.next()?, parts.next()?, parts.next()?);
    (kind == "lambda-url").then(|| region.to_string())
}

/// SigV4 headers for a POST of `body` to `url` (service `lambda`), with the payload's SHA-256 in
/// `x-amz-content-sha256` as Function URLs with `AWS_IAM` expect of a POST.
fn sign(
    c: aws_credential_types::Credentials,
    url: &str,
    host: &str,
    region: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
    };
    let identity: aws_smithy_runtime_api::client::identity::Identity = c.into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("lambda")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| Error::failed(format!("signing parameters: {e}")))?
        .into();
    let headers = [("host", host), ("content-type", "application/json")];
    let req = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| Error::failed(format!("signing the Function URL request: {e}")))?;
    let (instructions, _) = sign(req, &params)
        .map_err(|e| Error::failed(format!("signing the Function URL request: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Probe one version (or alias) by invoking it, before any alias points to it.
pub async fn probe_invoke(
    lambda_data: &aws_sdk_lambda::Client,
    function: &str,
    qualifier: &str,
    tier: Tier,
) -> ProbeResult {
    let start = Instant::now();
    let r = invoke(lambda_data, function, qualifier, &request(tier)).await;
    finish(tier, format!("version {qualifier}"), start, r)
}

/// Invoke and unwrap a Function URL style response (`statusCode`, `body`).
pub async fn invoke(
    lambda_data: &aws_sdk_lambda::Client,
    function: &str,
    qualifier: &str,
    event: &Value,
) -> Result<(u16, Value)> {
    let out = lambda_data
        .invoke()
        .function_name(function)
        .qualifier(qualifier)
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .map_err(|e| aws_error("lambda", "Invoke", e))?;
    let payload: Value = out
        .payload()
        .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
        .unwrap_or(Value::Null);
    if let Some(kind) = out.function_error() {
        let msg = payload
            .get("errorMessage")
            .and_then(Value::as_str)
            .unwrap_or("no error message");
        return Err(Error::failed(format!(
            "{function}:{qualifier} failed ({kind}): {msg}"
        )));
    }
    let status = payload
        .get("statusCode")
        .and_then(Value::as_u64)
        .unwrap_or(200) as u16;
    let body = match payload.get("body") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Some(v) => v.clone(),
        None => payload.clone(),
    };
    Ok((status, body))
}

fn finish(tier: Tier, via: String, start: Instant, r: Result<(u16, Value)>) -> ProbeResult {
    let latency_ms = start.elapsed().as_millis() as u64;
    match r {
        Ok((status, body)) => match judge(tier, status, &body) {
            Ok(()) => ProbeResult {
                tier,
                via,
                ok: true,
                status: Some(status),
                latency_ms,
                detail: "ok".into(),
            },
            Err(why) => ProbeResult {
                tier,
                via,
                ok: false,
                status: Some(status),
                latency_ms,
                detail: why,
            },
        },
        Err(e) => ProbeResult {
            tier,
            via,
            ok: false,
            status: None,
            latency_ms,
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges() {
        assert!(judge(
            Tier::T0,
            400,
            &json!({"error": "Missing required field: transcript"})
        )
        .is_ok());
        assert!(judge(Tier::T0, 200, &json!({})).is_err());
        assert!(judge(Tier::T1, 200, &json!({"transcript": T1_TRANSCRIPT})).is_ok());
        assert!(judge(Tier::T1, 200, &json!({"transcript": "x"})).is_err());
        let good = T2_TRANSCRIPT
            .replace("Speaker 0", "Agent")
            .replace("Speaker 1", "Customer");
        assert!(judge(Tier::T2, 200, &json!({"transcript": good})).is_ok());
        assert!(judge(Tier::T2, 200, &json!({"transcript": T2_TRANSCRIPT})).is_err());
        assert!(judge(Tier::T2, 422, &json!({"error": "Invalid API Response"})).is_err());
    }
}
