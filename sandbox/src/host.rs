//! The function host: the sandbox's Lambda data plane.
//!
//! For a Function URL request (`Host: <id>.lambda-url.<region>.on.aws`) or a Lambda `Invoke`
//! (`POST /2015-03-31/functions/<name>/invocations?Qualifier=Q`) it asks the emulator which
//! version is meant, fetches that version's code package from the artifact bucket by its
//! `CodeSha256` (moto's `Code.Location` is not a real URL), verifies the hash, and runs its
//! `bootstrap --listen` with that version's environment. A package that will not start gives a
//! 502 (or an `Unhandled` function error for `Invoke`) with the reason, never a hang. Every
//! process it starts is killed when it stops (and by the kernel if it dies: `PDEATHSIG`).

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use drd::aws::{aws_error, Aws};
use drd::workload::package;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub(crate) mod front;

pub struct Host {
    pub(crate) aws: Aws,
    moto_url: String,
    dir: PathBuf,
    http: reqwest::Client,
    instances: Mutex<HashMap<String, Instance>>,
    urls: Mutex<HashMap<String, (String, Instant)>>,
    /// Regions switched off (region-loss drills) and the emulator busy clock.
    pub gate: Arc<super::gate::Gate>,
    /// Latency and errors injected per function (`crate::fnfaults`).
    pub fn_faults: Arc<crate::fnfaults::FnFaults>,
    /// Route 53 health checks evaluated in the last second (`front`): (healthy, when).
    health: std::sync::Mutex<HashMap<String, (bool, Instant)>>,
}

struct Instance {
    child: tokio::process::Child,
    port: u16,
}

/// Why a function could not be run.
#[derive(Debug)]
enum RunError {
    NotFound(String),
    Start(String),
    Aws(String),
}

impl Host {
    pub fn new(moto_url: String, dir: PathBuf, gate: Arc<super::gate::Gate>) -> Arc<Self> {
        let aws = Aws::new(drd::aws::AwsSettings {
            endpoint_url: Some(moto_url.clone()),
            max_attempts: Some(1),
            ..Default::default()
        });
        Arc::new(Self {
            aws,
            moto_url,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .expect("reqwest client"),
            instances: Mutex::new(HashMap::new()),
            urls: Mutex::new(HashMap::new()),
            gate,
            fn_faults: Arc::default(),
            health: Default::default(),
        })
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        let host = self.clone();
        axum::Router::new().fallback(move |req: Request| {
            let host = host.clone();
            async move { host.handle(req).await }
        })
    }

    /// Kill every function process.
    pub async fn stop_all(&self) {
        let mut map = self.instances.lock().await;
        for (_, mut i) in map.drain() {
            let _ = i.child.start_kill();
            let _ = i.child.wait().await;
        }
    }

    pub async fn instance_count(&self) -> usize {
        self.instances.lock().await.len()
    }

    async fn handle(self: Arc<Self>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 6 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let path = parts.uri.path().to_string();
        if path == "/_sandbox/healthz" {
            let n = self.instance_count().await;
            return axum::Json(json!({"ok": true, "instances": n})).into_response();
        }
        if let Some(rest) = path.strip_prefix("/_sandbox/regions") {
            return self.regions(&parts.method, rest).await;
        }
        if path == "/_sandbox/faults" {
            if parts.method == Method::POST {
                match serde_json::from_slice::<crate::faults::Plan>(&body) {
                    Ok(p) => {
                        let mut f = self.gate.faults.lock().expect("faults");
                        *f = crate::faults::Injector {
                            plan: (p.rate > 0.0).then_some(p),
                            ..Default::default()
                        };
                    }
                    Err(e) => return error(StatusCode::BAD_REQUEST, "Bad Request", &e.to_string()),
                }
            }
            let f = self.gate.faults.lock().expect("faults").clone();
            return axum::Json(json!(f)).into_response();
        }
        if path == "/_sandbox/stats" {
            // POST: start counting operations afresh.
            let operations = {
                let mut o = self.gate.operations.lock().expect("operation counts");
                let now = o.clone();
                if parts.method == Method::POST {
                    o.clear();
                }
                now
            };
            let (busy_ms, requests) = self.gate.busy_stats();
            return axum::Json(json!({
                "emulator_busy_ms": busy_ms,
                "requests": requests,
                "busy_stretches": self.gate.waves(),
                "operations": operations,
            }))
            .into_response();
        }
        let _busy = self.gate.busy();
        if let Some(rest) = path.strip_prefix("/2015-03-31/functions/") {
            if let Some(name) = rest.strip_suffix("/invocations") {
                let name = percent_decode(name);
                let qualifier = parts.uri.query().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("Qualifier="))
                        .map(percent_decode)
                });
                return self.invoke(&parts.headers, &name, qualifier, body).await;
            }
        }
        let host = parts
            .headers
            .get("x-forwarded-host")
            .or_else(|| parts.headers.get("host"))
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        if host.contains(".lambda-url.") {
            return self
                .function_url(&host, parts.method, &pq, &parts.headers, body)
                .await;
        }
        if host.is_empty() || !host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
            return error(
                StatusCode::NOT_FOUND,
                "Not Found",
                "neither a Function URL host, a front door name nor a Lambda Invoke path",
            );
        }
        let req = front::Req {
            method: parts.method,
            path_and_query: &pq,
            headers: &parts.headers,
            body,
        };
        match front::api_host(&host) {
            Some((api, region)) => self.serve_api(&region, &api, req).await,
            None => self.serve_name(&host, req).await,
        }
    }

    async fn function_url(
        &self,
        host: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        // <id>.lambda-url.<region>.on.aws
        let region = host.split('.').nth(2).unwrap_or("").to_string();
        if self.region_failed(&region) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Region Unavailable",
                &format!("the sandbox has failed region {region}"),
            );
        }
        let function = match self.resolve_url(host, &region).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "Not Found",
                    &format!("no function has the URL host {host}"),
                )
            }
            Err(e) => return error(StatusCode::BAD_GATEWAY, "Emulator Error", &e),
        };
        if self.url_refuses(&region, &function, headers).await {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"Message": "Forbidden"})),
            )
                .into_response();
        }
        if let Some(r) = crate::fnfaults::admit(self, &region, &function, true).await {
            return r;
        }
        match self.run(&region, &function, drd::lambda::LIVE_ALIAS).await {
            Ok((port, _version)) => {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                self.forward(port, method, path_and_query, &ct, body).await
            }
            Err(RunError::NotFound(m)) => error(StatusCode::NOT_FOUND, "Function Not Found", &m),
            Err(RunError::Start(m)) => {
                error(StatusCode::BAD_GATEWAY, "Function failed to start", &m)
            }
            Err(RunError::Aws(m)) => error(StatusCode::BAD_GATEWAY, "Emulator Error", &m),
        }
    }

    async fn forward(
        &self,
        port: u16,
        method: Method,
        pq: &str,
        ct: &str,
        body: Bytes,
    ) -> Response {
        let url = format!("http://127.0.0.1:{port}{pq}");
        let m = reqwest::Method::from_bytes(method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        match self
            .http
            .request(m, url)
            .header("content-type", ct)
            .body(body.to_vec())
            .send()
            .await
        {
            Ok(r) => {
                let status =
                    StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                let bytes = r.bytes().await.unwrap_or_default();
                (status, [("content-type", ct)], bytes).into_response()
            }
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                "Function Error",
                &format!("the function did not answer: {e}"),
            ),
        }
    }

    async fn invoke(
        &self,
        headers: &HeaderMap,
        name: &str,
        qualifier: Option<String>,
        event: Bytes,
    ) -> Response {
        // The function may be named by ARN: arn:aws:lambda:<region>:<acct>:function:<name>[:<q>]
        let (region, function, arn_q) = match name.split(':').collect::<Vec<_>>().as_slice() {
            ["arn", _, "lambda", region, _, "function", f] => {
                (region.to_string(), f.to_string(), None)
            }
            ["arn", _, "lambda", region, _, "function", f, q] => {
                (region.to_string(), f.to_string(), Some(q.to_string()))
            }
            _ => (
                signing_region(headers).unwrap_or_else(|| "us-east-1".into()),
                name.to_string(),
                None,
            ),
        };
        if self.region_failed(&region) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceException",
                &format!("the sandbox has failed region {region}"),
            );
        }
        if let Some(r) = crate::fnfaults::admit(self, &region, &function, false).await {
            return r;
        }
        let qualifier = qualifier.or(arn_q).unwrap_or_else(|| "$LATEST".into());
        let event: Value = serde_json::from_slice(&event).unwrap_or(Value::Null);
        let body = match event.get("body") {
            Some(Value::String(b)) => b.clone().into_bytes(),
            _ => event.to_string().into_bytes(),
        };
        match self.run(&region, &function, &qualifier).await {
            Ok((port, version)) => {
                let resp = self
                    .forward(
                        port,
                        Method::POST,
                        "/",
                        "application/json",
                        Bytes::from(body),
                    )
                    .await;
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), 6 * 1024 * 1024)
                    .await
                    .unwrap_or_default();
                let payload = json!({
                    "statusCode": status,
                    "headers": {"content-type": "application/json"},
                    "body": String::from_utf8_lossy(&bytes),
                });
                (
                    StatusCode::OK,
                    [("x-amz-executed-version", version)],
                    payload.to_string(),
                )
                    .into_response()
            }
            Err(RunError::NotFound(m)) => (
                StatusCode::NOT_FOUND,
                [("x-amzn-errortype", "ResourceNotFoundException")],
                json!({"Type": "User", "Message": m}).to_string(),
            )
                .into_response(),
            Err(RunError::Start(m)) => (
                StatusCode::OK,
                [("x-amz-function-error", "Unhandled")],
                json!({"errorType": "Runtime.ExitError", "errorMessage": m}).to_string(),
            )
                .into_response(),
            Err(RunError::Aws(m)) => (
                StatusCode::BAD_GATEWAY,
                [("x-amzn-errortype", "ServiceException")],
                json!({"Type": "Service", "Message": m}).to_string(),
            )
                .into_response(),
        }
    }

    fn region_failed(&self, region: &str) -> bool {
        self.gate.is_failed(region)
    }

    /// `GET /_sandbox/regions`, `POST /_sandbox/regions/<R>/fail|restore`.
    async fn regions(&self, method: &Method, rest: &str) -> Response {
        let words: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let changed = match (method, words.as_slice()) {
            (&Method::GET, [""]) => None,
            (&Method::POST, [region, "fail"]) if *region == crate::gate::GLOBAL => {
                Some(self.gate.fail(region))
            }
            (&Method::POST, [region, "restore"]) if *region == crate::gate::GLOBAL => {
                Some(self.gate.restore(region))
            }
            (&Method::POST, [region, "fail"]) if drd::policy::is_region_name(region) => {
                let changed = self.gate.fail(region);
                // A failed region's function processes die with it.
                let mut map = self.instances.lock().await;
                let prefix = format!("{region}/");
                let keys: Vec<String> = map
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect();
                for k in keys {
                    if let Some(mut i) = map.remove(&k) {
                        let _ = i.child.start_kill();
                    }
                }
                Some(changed)
            }
            (&Method::POST, [region, "restore"]) if drd::policy::is_region_name(region) => {
                Some(self.gate.restore(region))
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "use GET /_sandbox/regions or POST /_sandbox/regions/<region>/fail|restore",
                )
            }
        };
        axum::Json(json!({"failed": self.gate.failed(), "changed": changed})).into_response()
    }

    /// Which function a Function URL host belongs to (cached briefly).
    async fn resolve_url(&self, host: &str, region: &str) -> Result<Option<String>, String> {
        if let Some((f, at)) = self.urls.lock().await.get(host) {
            if at.elapsed() < Duration::from_secs(5) {
                return Ok(Some(f.clone()));
            }
        }
        let lambda = self.aws.lambda(region).await;
        let mut pages = lambda.list_functions().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("lambda", "ListFunctions", e).to_string())?;
            for f in page.functions() {
                let Some(name) = f.function_name() else {
                    continue;
                };
                let found = lambda
                    .get_function_url_config()
                    .function_name(name)
                    .qualifier(drd::lambda::LIVE_ALIAS)
                    .send()
                    .await;
                if let Ok(cfg) = found {
                    let url_host = cfg
                        .function_url()
                        .trim_start_matches("https://")
                        .trim_end_matches('/')
                        .to_string();
                    if url_host == host {
                        self.urls
                            .lock()
                            .await
                            .insert(host.to_string(), (name.to_string(), Instant::now()));
                        return Ok(Some(name.to_string()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Make sure an instance of `function:qualifier` runs; returns its port and version.
    async fn run(
        &self,
        region: &str,
        function: &str,
        qualifier: &str,
    ) -> Result<(u16, String), RunError> {
        let lambda = self.aws.lambda(region).await;
        let version = if qualifier == "$LATEST" || qualifier.bytes().all(|b| b.is_ascii_digit()) {
            qualifier.to_string()
        } else {
            match lambda
                .get_alias()
                .function_name(function)
                .name(qualifier)
                .send()
                .await
            {
                Ok(a) => a.function_version().unwrap_or("$LATEST").to_string(),
                Err(e) => {
                    let e = aws_error("lambda", "GetAlias", e);
                    return Err(if e.aws_code() == Some("ResourceNotFoundException") {
                        RunError::NotFound(format!(
                            "{function}:{qualifier} does not exist in {region}"
                        ))
                    } else {
                        RunError::Aws(e.to_string())
                    });
                }
            }
        };
        let conf = match lambda
            .get_function_configuration()
            .function_name(function)
            .qualifier(&version)
            .send()
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let e = aws_error("lambda", "GetFunctionConfiguration", e);
                return Err(if e.aws_code() == Some("ResourceNotFoundException") {
                    RunError::NotFound(format!("{function}:{version} does not exist in {region}"))
                } else {
                    RunError::Aws(e.to_string())
                });
            }
        };
        let code_sha = conf.code_sha256().unwrap_or_default().to_string();
        let mut env: Vec<(String, String)> = conf
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        env.sort();
        let env_digest = hex::encode(Sha256::digest(serde_json::to_vec(&env).unwrap_or_default()));
        let key = format!("{region}/{function}/{version}/{code_sha}/{env_digest}");

        let mut instances = self.instances.lock().await;
        if let Some(inst) = instances.get_mut(&key) {
            if matches!(inst.child.try_wait(), Ok(None)) {
                return Ok((inst.port, version));
            }
            instances.remove(&key);
        }
        let bootstrap = self.prepare_code(region, &code_sha).await?;
        let port = free_port().map_err(|e| RunError::Start(format!("no free port: {e}")))?;
        let log_path = self.dir.join(format!("fn-{}.log", &env_digest[..12]));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| RunError::Start(format!("cannot create {}: {e}", log_path.display())))?;
        // The function acts as the lab's own key (in IAM mode the workload account's admin: the
        // function's role is checked against its template instead, docs/emulator-gaps.md).
        let lab_keys = crate::iam::lab_keys();
        let mut cmd = tokio::process::Command::new(&bootstrap);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("AWS_ENDPOINT_URL", &self.moto_url)
            .env("AWS_REGION", region)
            .env("AWS_DEFAULT_REGION", region)
            .env("AWS_ACCESS_KEY_ID", &lab_keys.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &lab_keys.secret_access_key)
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_VERSION", &version)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| RunError::Start(e.to_string()))?,
            )
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: only an async-signal-safe prctl call runs between fork and exec. This is the
        // one `unsafe` in drd: without it a killed host would leave its functions running.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| RunError::Start(format!("cannot execute the package's bootstrap: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = tail(&log_path);
                return Err(RunError::Start(format!(
                    "bootstrap of {function}:{version} exited ({status}) before it listened; last output: {tail}"
                )));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(RunError::Start(format!(
                    "bootstrap of {function}:{version} did not listen within 15 s; last output: {}",
                    tail(&log_path)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        instances.insert(key, Instance { child, port });
        Ok((port, version))
    }

    /// Fetch, verify and unpack the package with this `CodeSha256` from a bucket in the
    /// function's own region (as Lambda copies code from a same-region bucket); returns the
    /// bootstrap path. Unpacked packages are kept per region, so a package that exists only in
    /// another region never runs.
    async fn prepare_code(&self, region: &str, code_sha: &str) -> Result<PathBuf, RunError> {
        let hex = package::hex_of_code_sha256(code_sha)
            .ok_or_else(|| RunError::Start(format!("CodeSha256 {code_sha:?} is not a SHA-256")))?;
        let dir = self.dir.join("code").join(region).join(&hex);
        let bootstrap = dir.join("bootstrap");
        if bootstrap.exists() {
            return Ok(bootstrap);
        }
        let s3 = self.aws.s3(region).await;
        let key = package::object_key(&hex);
        let buckets = s3
            .list_buckets()
            .send()
            .await
            .map_err(|e| RunError::Aws(aws_error("s3", "ListBuckets", e).to_string()))?;
        let mut zip = None;
        for b in buckets.buckets() {
            let Some(name) = b.name() else { continue };
            let location = s3
                .get_bucket_location()
                .bucket(name)
                .send()
                .await
                .ok()
                .and_then(|l| l.location_constraint().map(|c| c.as_str().to_string()))
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "us-east-1".into());
            if location != region {
                continue;
            }
            if let Ok(obj) = s3.get_object().bucket(name).key(&key).send().await {
                if let Ok(data) = obj.body.collect().await {
                    zip = Some(data.into_bytes().to_vec());
                    break;
                }
            }
        }
        let zip = zip.ok_or_else(|| {
            RunError::Start(format!(
                "no bucket in {region} holds the code package {key}; deploy it with drd deploy"
            ))
        })?;
        let got = hex::encode(Sha256::digest(&zip));
        if got != hex {
            return Err(RunError::Start(format!(
                "the stored package {key} hashes to {got}, not to the version's CodeSha256"
            )));
        }
        let bin = package::read_bootstrap(&zip).map_err(RunError::Start)?;
        std::fs::create_dir_all(&dir).map_err(|e| RunError::Start(e.to_string()))?;
        let tmp = dir.join("bootstrap.tmp");
        std::fs::write(&tmp, bin).map_err(|e| RunError::Start(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| RunError::Start(e.to_string()))?;
        std::fs::rename(&tmp, &bootstrap).map_err(|e| RunError::Start(e.to_string()))?;
        Ok(bootstrap)
    }
}

fn error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "message": message})),
    )
        .into_response()
}

/// The region of a SigV4 `Authorization` header's credential scope.
fn signing_region(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    cred.split('/').nth(2).map(str::to_string)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let t: String = text
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if t.trim().is_empty() {
        "(nothing)".into()
    } else {
        t.trim().replace('\n', " | ")
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_names_and_regions() {
        assert_eq!(percent_decode("arn%3Aaws%3Alambda"), "arn:aws:lambda");
        assert_eq!(percent_decode("%24LATEST"), "$LATEST");
        assert_eq!(percent_decode("plain"), "plain");
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20261127/eu-west-1/lambda/aws4_request, SignedHeaders=host"
                .parse()
                .unwrap(),
        );
        assert_eq!(signing_region(&h).as_deref(), Some("eu-west-1"));
    }
}
