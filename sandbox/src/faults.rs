//! Fault injection in the region gate: errors, throttling, dropped connections and latency on a
//! seeded, reproducible share of the requests that reach the emulator, optionally only for one
//! service or one operation (`drd sandbox faults`).
//!
//! Request N (counted among the requests the plan matches) gets a fault when the first eight
//! bytes of SHA-256(seed, N) read as a fraction below the rate; the next eight bytes pick the
//! kind. The same seed and the same sequence of requests give the same faults. Every fault but
//! `lost-reply` is injected *before* the request reaches moto, so it has no side effect; what
//! the client sees is what AWS sends for it (the error code its service uses, in its protocol's
//! body). `lost-reply` forwards the request and drops the answer: the write happened, and the
//! client only sees a closed connection.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A fault, written as `500`, `503-slowdown`, `throttle`, `access-denied`, `reset`,
/// `lost-reply` or `latency=2s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Kind {
    /// HTTP 500 (`InternalError` / `InternalFailure`).
    Internal,
    /// HTTP 503 (`SlowDown` for S3, `ServiceUnavailable` elsewhere).
    Slowdown,
    /// The service's throttling answer (`SlowDown` 503 for S3, `Throttling` 400 for the query
    /// protocol, `ThrottlingException` 400 for JSON services, 429 for Lambda).
    Throttle,
    /// The answer to a caller without the permission (`AccessDenied` 403 for S3, IAM, STS,
    /// CloudFormation and Route 53; `AccessDeniedException` 403 for JSON services and Lambda).
    Denied,
    /// The connection is closed without an answer, before the request reaches the emulator.
    Reset,
    /// The request reaches the emulator (its write happens), then the connection is closed
    /// without the answer: the client cannot tell it from a reset, and a retry meets its own
    /// write.
    LostReply,
    /// The request is held this long, then forwarded.
    Latency(Duration),
}

impl TryFrom<String> for Kind {
    type Error = String;
    fn try_from(s: String) -> Result<Kind, String> {
        Kind::parse(&s)
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> String {
        k.name()
    }
}

impl Kind {
    /// `500`, `503-slowdown`, `throttle`, `reset`, `latency=2s`.
    pub fn parse(s: &str) -> Result<Kind, String> {
        match s.trim() {
            "500" => Ok(Kind::Internal),
            "503-slowdown" | "503" => Ok(Kind::Slowdown),
            "throttle" => Ok(Kind::Throttle),
            "access-denied" => Ok(Kind::Denied),
            "reset" => Ok(Kind::Reset),
            "lost-reply" => Ok(Kind::LostReply),
            other => match other.strip_prefix("latency=") {
                Some(d) => humantime::parse_duration(d)
                    .map(Kind::Latency)
                    .map_err(|e| format!("{d:?} is not a duration: {e}")),
                None => Err(format!(
                    "{other:?} is not a fault kind: use 500, 503-slowdown, throttle, access-denied, reset, lost-reply or latency=DURATION"
                )),
            },
        }
    }

    pub fn name(&self) -> String {
        match self {
            Kind::Internal => "500".into(),
            Kind::Slowdown => "503-slowdown".into(),
            Kind::Throttle => "throttle".into(),
            Kind::Denied => "access-denied".into(),
            Kind::Reset => "reset".into(),
            Kind::LostReply => "lost-reply".into(),
            Kind::Latency(d) => format!("latency={}", humantime::format_duration(*d)),
        }
    }
}

/// What `drd sandbox faults` sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Share of the matching requests that get a fault, 0 to 1 (0 stops injecting).
    pub rate: f64,
    pub kinds: Vec<Kind>,
    pub seed: u64,
    /// Only requests signed for this service (e.g. `s3`), when set.
    #[serde(default)]
    pub service: Option<String>,
    /// Only this operation (e.g. `PutObject`), when set.
    #[serde(default)]
    pub operation: Option<String>,
    /// Only requests whose path contains this (e.g. one object's key), when set.
    #[serde(default)]
    pub path_contains: Option<String>,
}

/// A plan in force, with its counters.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Injector {
    pub plan: Option<Plan>,
    /// Requests the plan matched, and faults injected (by kind).
    pub matched: u64,
    pub injected: std::collections::BTreeMap<String, u64>,
}

impl Injector {
    /// The fault for this request, if any (and count it).
    pub fn decide(&mut self, service: &str, operation: &str) -> Option<Kind> {
        self.decide_for(service, operation, "")
    }

    /// The fault for this request to `path`, if any (and count it).
    pub fn decide_for(&mut self, service: &str, operation: &str, path: &str) -> Option<Kind> {
        let plan = self.plan.as_ref()?;
        if plan.rate <= 0.0 || plan.kinds.is_empty() {
            return None;
        }
        if plan.service.as_deref().is_some_and(|s| s != service)
            || plan.operation.as_deref().is_some_and(|o| o != operation)
            || plan
                .path_contains
                .as_deref()
                .is_some_and(|k| !path.contains(k))
        {
            return None;
        }
        let n = self.matched;
        self.matched += 1;
        let h = Sha256::digest(format!("{}:{n}", plan.seed).as_bytes());
        let draw = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
        if draw >= plan.rate {
            return None;
        }
        let pick = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes")) as usize;
        let kind = plan.kinds[pick % plan.kinds.len()].clone();
        *self.injected.entry(kind.name()).or_default() += 1;
        Some(kind)
    }

    pub fn total_injected(&self) -> u64 {
        self.injected.values().sum()
    }
}

/// The AWS operation a request names, as far as the gate can tell: the JSON protocol's
/// `X-Amz-Target`, the query protocol's `Action`, S3's method and query, else `METHOD path`.
pub fn operation(
    service: &str,
    method: &str,
    path: &str,
    query: &str,
    target: Option<&str>,
    body: &[u8],
) -> String {
    if let Some(t) = target {
        return t.rsplit('.').next().unwrap_or(t).to_string();
    }
    if let Some(a) = form_value(query, "Action") {
        return a;
    }
    if let Ok(b) = std::str::from_utf8(body) {
        if let Some(a) = form_value(b, "Action") {
            return a;
        }
    }
    if service == "s3" {
        let has_key = path.trim_matches('/').contains('/');
        let q = |k: &str| {
            query
                .split('&')
                .any(|kv| kv == k || kv.starts_with(&format!("{k}=")))
        };
        return match (method, has_key) {
            ("GET", true) => "GetObject",
            ("PUT", true) => "PutObject",
            ("DELETE", true) => "DeleteObject",
            ("HEAD", true) => "HeadObject",
            ("GET", false) if q("list-type") => "ListObjectsV2",
            ("GET", false) if q("object-lock") => "GetObjectLockConfiguration",
            ("GET", false) => "ListObjects",
            ("HEAD", false) => "HeadBucket",
            ("PUT", false) if q("object-lock") => "PutObjectLockConfiguration",
            ("PUT", false) => "CreateBucket",
            ("POST", false) if q("delete") => "DeleteObjects",
            _ => return format!("{method} {path}"),
        }
        .to_string();
    }
    format!("{method} {path}")
}

fn form_value(s: &str, key: &str) -> Option<String> {
    s.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

/// An HTTP answer: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

/// The answer AWS gives for `kind` in `service`'s protocol. `None` for faults that are not
/// answers (reset, latency).
pub fn answer(kind: &Kind, service: &str) -> Option<Answer> {
    let msg = "injected by the sandbox gate (drd sandbox faults)";
    let (status, code) = match (kind, service) {
        (Kind::Internal, "s3") => (500, "InternalError"),
        (Kind::Internal, _) => (500, "InternalFailure"),
        (Kind::Slowdown, "s3") | (Kind::Throttle, "s3") => (503, "SlowDown"),
        (Kind::Slowdown, _) => (503, "ServiceUnavailable"),
        (Kind::Throttle, "lambda") => (429, "TooManyRequestsException"),
        (Kind::Throttle, "cloudformation" | "iam" | "sts" | "route53") => (400, "Throttling"),
        (Kind::Throttle, _) => (400, "ThrottlingException"),
        (Kind::Denied, "s3" | "iam" | "sts" | "cloudformation" | "route53") => {
            (403, "AccessDenied")
        }
        (Kind::Denied, _) => (403, "AccessDeniedException"),
        (Kind::Reset | Kind::LostReply | Kind::Latency(_), _) => return None,
    };
    Some(match service {
        "s3" => (
            status,
            vec![("content-type", "application/xml".into())],
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message><RequestId>sandbox-fault</RequestId></Error>"),
        ),
        "route53" => (
            status,
            vec![("content-type", "text/xml".into())],
            format!("<?xml version=\"1.0\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>sandbox-fault</RequestId></ErrorResponse>"),
        ),
        "cloudformation" | "iam" | "sts" => (
            status,
            vec![("content-type", "text/xml".into())],
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>sandbox-fault</RequestId></ErrorResponse>"),
        ),
        _ => (
            status,
            vec![
                ("content-type", "application/x-amz-json-1.1".into()),
                ("x-amzn-errortype", code.to_string()),
            ],
            serde_json::json!({"__type": code, "message": msg}).to_string(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: f64, seed: u64) -> Injector {
        Injector {
            plan: Some(Plan {
                rate,
                kinds: vec![Kind::Internal, Kind::Throttle, Kind::Reset],
                seed,
                service: None,
                operation: None,
                path_contains: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_at_about_the_rate() {
        let run = |seed| {
            let mut i = plan(0.2, seed);
            (0..2000)
                .map(|_| i.decide("s3", "PutObject").map(|k| k.name()))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "reproducible");
        assert_ne!(a, run(8), "another seed, other faults");
        let n = a.iter().filter(|x| x.is_some()).count();
        assert!((300..500).contains(&n), "{n} faults in 2000 at rate 0.2");
        for k in ["500", "throttle", "reset"] {
            assert!(a.iter().any(|x| x.as_deref() == Some(k)), "{k} never drawn");
        }
        let mut off = plan(0.0, 7);
        assert!((0..100).all(|_| off.decide("s3", "GetObject").is_none()));
    }

    #[test]
    fn filters_pick_a_service_and_an_operation() {
        let mut i = plan(1.0, 1);
        i.plan.as_mut().unwrap().service = Some("s3".into());
        i.plan.as_mut().unwrap().operation = Some("PutObject".into());
        assert!(i.decide("secretsmanager", "PutObject").is_none());
        assert!(i.decide("s3", "GetObject").is_none());
        assert!(i.decide("s3", "PutObject").is_some());
        i.plan.as_mut().unwrap().path_contains = Some("points/p1.json".into());
        assert!(i
            .decide_for("s3", "PutObject", "/b/s/points/p2.json")
            .is_none());
        assert!(i
            .decide_for("s3", "PutObject", "/b/s/points/p1.json")
            .is_some());
        assert_eq!(i.matched, 2);
    }

    #[test]
    fn kinds_parse_and_operations_are_named() {
        assert_eq!(
            Kind::parse("latency=2s").unwrap(),
            Kind::Latency(Duration::from_secs(2))
        );
        assert!(Kind::parse("explode")
            .unwrap_err()
            .contains("not a fault kind"));
        assert_eq!(operation("s3", "PUT", "/b/k/x", "", None, b""), "PutObject");
        assert_eq!(
            operation("s3", "GET", "/b", "list-type=2&prefix=x", None, b""),
            "ListObjectsV2"
        );
        assert_eq!(
            operation(
                "secretsmanager",
                "POST",
                "/",
                "",
                Some("secretsmanager.GetSecretValue"),
                b""
            ),
            "GetSecretValue"
        );
        assert_eq!(
            operation(
                "cloudformation",
                "POST",
                "/",
                "",
                None,
                b"Action=DescribeStacks&Version=2010-05-15"
            ),
            "DescribeStacks"
        );
        let (status, _, body) = answer(&Kind::Throttle, "secretsmanager").unwrap();
        assert_eq!(status, 400);
        assert!(body.contains("ThrottlingException"));
        assert!(answer(&Kind::Reset, "s3").is_none());
    }
}
