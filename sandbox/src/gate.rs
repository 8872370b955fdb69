//! The region gate: makes a region loss real in the sandbox.
//!
//! Every SDK request of a sandbox user goes through a small HTTP proxy in front of moto (the
//! environment's `AWS_ENDPOINT_URL` is the proxy). The proxy reads the region from the SigV4
//! credential scope (`Credential=AK/DATE/REGION/SERVICE/aws4_request`) and, for a region that
//! `drd sandbox fail-region` switched off, closes the connection without an answer: the caller
//! sees exactly what a dead regional endpoint gives, a connection error, not an HTTP error it
//! could mistake for a service answer. The function host consults the same gate and stops
//! serving Function URLs and `Invoke` in a failed region.
//!
//! Global services (Route 53, IAM, CloudFront, Organizations) sign with us-east-1 but are not
//! regional, so a failed us-east-1 does not take them down here by itself. Their *control
//! planes* do live in us-east-1 on AWS: failing the pseudo-region `global`
//! (`drd sandbox fail-region us-east-1 --control-planes`, or `fail-region global` alone) drops
//! their API calls too, while DNS answers and health checks (the function host's own reads of
//! the records, their data plane) keep working. (On real AWS the Route 53
//! *control plane* does live in us-east-1; see docs/restore.md for why `failover` mode is the
//! default.)
//!
//! The gate also makes S3 writes as atomic as S3's: moto's threaded server checks a
//! condition (`If-Match`, `If-None-Match`) and writes in two steps, so two conditional writes to
//! one key could both pass. The gate holds a per-object lock around every S3 write (PUT, POST,
//! DELETE), so a race test tests drd, not moto (docs/emulator-gaps.md).
//!
//! It also injects faults (`drd sandbox faults`, see `faults.rs`): errors in the service's own
//! wire format, throttling, dropped connections and latency, seeded and reproducible.
//!
//! The gate also keeps a busy clock: the wall time during which at least one emulator request
//! (proxied call or function-host request) was in flight, so a benchmark can split a command's
//! wall time into its own time and time spent waiting on the emulator.

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Services that are global on AWS: not taken down with one region.
pub const GLOBAL_SERVICES: &[&str] = &["route53", "iam", "cloudfront", "organizations"];

/// The pseudo-region that stands for the global services' control planes (in us-east-1 on AWS).
pub const GLOBAL: &str = "global";

#[derive(Default)]
pub struct Gate {
    failed: Mutex<BTreeSet<String>>,
    busy: Mutex<BusyClock>,
    /// One lock per S3 object being written (host + path), dropped when unused.
    writes: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Faults to inject (`drd sandbox faults`).
    pub faults: Mutex<crate::faults::Injector>,
    /// The pipeline executor (CodePipeline executions; see pipeline.rs), once the lab set it.
    pub pipelines: std::sync::OnceLock<Arc<crate::pipeline::Executor>>,
    /// Requests per `service Operation` since the last reset (`/_sandbox/stats`; benchmarks
    /// count a command's calls with it).
    pub operations: Mutex<std::collections::BTreeMap<String, u64>>,
}

#[derive(Default)]
struct BusyClock {
    inflight: u32,
    since: Option<Instant>,
    total: Duration,
    requests: u64,
    /// Stretches of time with at least one request in flight: a lower bound on the dependent
    /// round trips a client made (requests that overlap cannot depend on each other).
    waves: u64,
}

/// Counts one request as in flight until dropped.
pub struct BusyGuard<'a>(&'a Gate);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut b = self.0.busy.lock().expect("busy clock");
        b.inflight -= 1;
        if b.inflight == 0 {
            if let Some(s) = b.since.take() {
                b.total += s.elapsed();
            }
        }
    }
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn fail(&self, region: &str) -> bool {
        self.failed
            .lock()
            .expect("regions")
            .insert(region.to_string())
    }

    pub fn restore(&self, region: &str) -> bool {
        self.failed.lock().expect("regions").remove(region)
    }

    pub fn failed(&self) -> Vec<String> {
        self.failed
            .lock()
            .expect("regions")
            .iter()
            .cloned()
            .collect()
    }

    pub fn is_failed(&self, region: &str) -> bool {
        self.failed.lock().expect("regions").contains(region)
    }

    /// Whether a request signed for `region` and `service` must be dropped: a global service's
    /// control plane when `global` is failed, a regional service when its region is.
    pub fn blocks(&self, region: &str, service: &str) -> bool {
        if GLOBAL_SERVICES.contains(&service) {
            self.is_failed(GLOBAL)
        } else {
            self.is_failed(region)
        }
    }

    pub fn busy(&self) -> BusyGuard<'_> {
        let mut b = self.busy.lock().expect("busy clock");
        if b.inflight == 0 {
            b.since = Some(Instant::now());
            b.waves += 1;
        }
        b.inflight += 1;
        b.requests += 1;
        BusyGuard(self)
    }

    /// Serialize writes to one S3 object: the returned guard holds its lock.
    pub async fn write_lock(&self, object: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut w = self.writes.lock().expect("write locks");
            // Forget locks nobody holds or waits for, so the map stays small.
            w.retain(|_, m| Arc::strong_count(m) > 1);
            w.entry(object.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// (busy milliseconds so far, requests so far).
    pub fn busy_stats(&self) -> (u64, u64) {
        let b = self.busy.lock().expect("busy clock");
        let open = b.since.map(|s| s.elapsed()).unwrap_or_default();
        ((b.total + open).as_millis() as u64, b.requests)
    }

    /// Busy stretches so far (see `BusyClock::waves`).
    pub fn waves(&self) -> u64 {
        self.busy.lock().expect("busy clock").waves
    }
}

/// Region and service of a SigV4 `Authorization` header (or a presigned URL's
/// `X-Amz-Credential`).
pub fn credential_scope(auth: Option<&str>, query: Option<&str>) -> Option<(String, String)> {
    let scope = match auth.and_then(|a| a.split("Credential=").nth(1)) {
        Some(c) => c.split([',', ' ']).next()?.to_string(),
        None => {
            let q = query?;
            let v = q
                .split('&')
                .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))?;
            v.replace("%2F", "/").replace("%2f", "/")
        }
    };
    let mut parts = scope.split('/');
    let (_ak, _date, region, service) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((region.to_string(), service.to_string()))
}

#[derive(Debug)]
struct Dropped(String);

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for Dropped {}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// Serve the proxy on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    upstream: String,
    gate: Arc<Gate>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("reqwest client");
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
            _ = stop.wait_for(|v| *v) => return,
        };
        let (http, upstream, gate) = (http.clone(), upstream.clone(), gate.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                forward(req, http.clone(), upstream.clone(), gate.clone())
            });
            // An error here is a dropped region's connection or a client going away.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn forward(
    req: Request<Incoming>,
    http: reqwest::Client,
    upstream: String,
    gate: Arc<Gate>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let scope = credential_scope(auth, req.uri().query());
    if let Some((region, service)) = &scope {
        if gate.blocks(region, service) {
            // Returning an error makes hyper close the connection without a response.
            return Err(Dropped(format!("region {region} is failed")));
        }
    }
    // An S3 write holds its object's lock until moto has answered.
    let is_s3_write = scope.as_ref().is_some_and(|(_, s)| s == "s3")
        && matches!(req.method().as_str(), "PUT" | "POST" | "DELETE");
    let _write = match is_s3_write {
        true => {
            let host = req
                .headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Some(
                gate.write_lock(&format!("{host}{}", req.uri().path()))
                    .await,
            )
        }
        false => None,
    };
    let _busy = gate.busy();
    let mut lose_reply = None;
    let (mut parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Dropped(format!("reading the request: {e}")))?
        .to_bytes();
    if let Some((_, service)) = &scope {
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok());
        let op = crate::faults::operation(
            service,
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            target,
            &body,
        );
        *gate
            .operations
            .lock()
            .expect("operation counts")
            .entry(format!("{service} {op}"))
            .or_default() += 1;
        let fault = gate
            .faults
            .lock()
            .expect("faults")
            .decide_for(service, &op, parts.uri.path());
        if fault == Some(crate::faults::Kind::LostReply) {
            lose_reply = Some(format!("fault injected: lost reply ({service} {op})"));
        }
        match fault {
            Some(crate::faults::Kind::Reset) => {
                return Err(Dropped(format!("fault injected: reset ({service} {op})")))
            }
            Some(crate::faults::Kind::Latency(d)) => tokio::time::sleep(d).await,
            Some(crate::faults::Kind::LostReply) => {}
            Some(kind) => {
                let (status, headers, text) =
                    crate::faults::answer(&kind, service).expect("an answer kind");
                let mut b = Response::builder().status(status);
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                return Ok(b.body(Full::new(Bytes::from(text))).expect("response"));
            }
            None => {}
        }
    }
    // CodePipeline executions are the lab's: moto serves the definitions only.
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let (Some((region, _)), Some(op), Some(ex)) = (
        &scope,
        target.strip_prefix("CodePipeline_20150709."),
        gate.pipelines.get(),
    ) {
        if crate::pipeline::OPERATIONS.contains(&op) {
            let (status, v) = ex.handle(op, region, &body).await;
            if let Some(why) = lose_reply {
                // The operation took effect; its answer is lost, as an injected fault says.
                return Err(Dropped(why));
            }
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amzn-requestid", "lab")
                .body(Full::new(Bytes::from(v.to_string())))
                .expect("response"));
        }
    }
    // CloudWatch over RPC-v2 CBOR is translated for moto (crate::cbor); the rest goes as is.
    let (pq, body, cbor) =
        crate::cbor::route(&mut parts.headers, &parts.uri, body).map_err(Dropped)?;
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| Dropped(e.to_string()))?;
    let mut out = http.request(method, format!("{upstream}{pq}"));
    for (k, v) in parts.headers.iter() {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("the emulator did not answer: {}", e.without_url());
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(msg)))
                .expect("response"));
        }
    };
    let mut b = Response::builder().status(resp.status().as_u16());
    let headers = resp.headers().clone();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Dropped(format!("reading the emulator's answer: {e}")))?;
    if let Some(why) = lose_reply {
        return Err(Dropped(why));
    }
    if cbor {
        return Ok(cbor_reply(b, &bytes));
    }
    let (bytes, fixed) = fix_reply(scope.as_ref(), &parts, bytes);
    for (k, v) in headers.iter() {
        // Content-Length stays (a HEAD answer carries the object's size in it) unless the
        // body was corrected.
        if (k.as_str() == "content-length" && !fixed) || !HOP_BY_HOP.contains(&k.as_str()) {
            b = b.header(k.as_str(), v.as_bytes());
        }
    }
    Ok(b.body(Full::new(bytes)).expect("response"))
}

/// moto's JSON answer to a translated CloudWatch request, as RPC-v2 CBOR (`crate::cbor`).
/// A body that is not JSON goes back unchanged as text, so its detail is not lost.
fn cbor_reply(b: hyper::http::response::Builder, json: &[u8]) -> Response<Full<Bytes>> {
    let b = b.header("x-amzn-requestid", "lab");
    match crate::cbor::reply(json) {
        Some(cbor) => b
            .header("content-type", "application/cbor")
            .header("smithy-protocol", "rpc-v2-cbor")
            .body(Full::new(Bytes::from(cbor))),
        None => b
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::copy_from_slice(json))),
    }
    .expect("response")
}

/// Replies moto gets wrong in a way the Rust SDK rejects, or leaves out what AWS gives, corrected
/// to AWS's wire format (docs/emulator-gaps.md): GetBucketVersioning's root element is
/// `VersioningConfiguration`, not `GetBucketVersioningResponse`; an API Gateway custom domain
/// has a regional target.
fn fix_reply(
    scope: Option<&(String, String)>,
    parts: &hyper::http::request::Parts,
    bytes: Bytes,
) -> (Bytes, bool) {
    // API Gateway v2 custom domains: moto gives them no regional target (crate::host::front).
    if let Some((region, "apigateway")) = scope.map(|(r, s)| (r.as_str(), s.as_str())) {
        if parts.uri.path().starts_with("/v2/domainnames") {
            if let Some(fixed) = crate::host::front::fix_domain_reply(region, &bytes) {
                return (Bytes::from(fixed), true);
            }
        }
    }
    let s3_get = scope.is_some_and(|(_, s)| s == "s3") && parts.method == hyper::Method::GET;
    let versioning = parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "versioning" || kv == "versioning=")
    });
    if s3_get && versioning {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if text.contains("<GetBucketVersioningResponse") {
                let fixed = text
                    .replace("<GetBucketVersioningResponse", "<VersioningConfiguration")
                    .replace(
                        "</GetBucketVersioningResponse>",
                        "</VersioningConfiguration>",
                    );
                return (Bytes::from(fixed), true);
            }
        }
    }
    (bytes, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_from_header_and_presigned_query() {
        let h = "AWS4-HMAC-SHA256 Credential=testing/20261127/eu-west-1/lambda/aws4_request, \
                 SignedHeaders=host, Signature=abc";
        assert_eq!(
            credential_scope(Some(h), None),
            Some(("eu-west-1".into(), "lambda".into()))
        );
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=testing%2F20261127%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=x";
        assert_eq!(
            credential_scope(None, Some(q)),
            Some(("us-east-1".into(), "s3".into()))
        );
        assert_eq!(credential_scope(None, Some("a=b")), None);
        assert_eq!(credential_scope(Some("Bearer x"), None), None);
    }

    #[test]
    fn a_failed_region_blocks_regional_services_only() {
        let g = Gate::new();
        assert!(!g.blocks("us-east-1", "s3"));
        assert!(g.fail("us-east-1"));
        assert!(!g.fail("us-east-1"), "failing twice reports no change");
        assert!(g.blocks("us-east-1", "s3"));
        assert!(g.blocks("us-east-1", "lambda"));
        assert!(!g.blocks("us-east-1", "route53"), "Route 53 is global");
        assert!(g.fail(GLOBAL));
        assert!(
            g.blocks("us-east-1", "route53"),
            "its control plane is down"
        );
        assert!(g.blocks("us-east-1", "iam"));
        assert!(g.restore(GLOBAL));
        assert!(!g.blocks("us-east-1", "route53"));
        assert!(!g.blocks("us-west-2", "s3"));
        assert!(g.restore("us-east-1"));
        assert!(!g.blocks("us-east-1", "s3"));
    }

    #[tokio::test]
    async fn writes_to_one_object_are_serialized_and_others_are_not() {
        let g = Gate::new();
        let a = g.write_lock("h/bucket/locks/store").await;
        // Another object is free at once.
        let _b = tokio::time::timeout(Duration::from_millis(100), g.write_lock("h/bucket/x"))
            .await
            .expect("another object is not blocked");
        // The same object waits until the first write is done.
        let g2 = g.clone();
        let waiter = tokio::spawn(async move {
            g2.write_lock("h/bucket/locks/store").await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a second write to the object must wait"
        );
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released")
            .unwrap();
    }

    #[test]
    fn the_busy_clock_counts_overlapping_requests_once() {
        let g = Gate::new();
        let t0 = Instant::now();
        {
            let _a = g.busy();
            std::thread::sleep(Duration::from_millis(30));
            let _b = g.busy();
            std::thread::sleep(Duration::from_millis(30));
        }
        let busy_end = t0.elapsed().as_millis() as u64;
        std::thread::sleep(Duration::from_millis(50));
        let (ms, n) = g.busy_stats();
        assert_eq!(n, 2);
        assert!(ms >= 60, "{ms} ms: both sleeps are busy time");
        assert!(
            ms <= busy_end,
            "{ms} ms > {busy_end} ms: idle time was counted"
        );
    }
}
