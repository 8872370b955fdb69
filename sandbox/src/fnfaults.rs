//! Faults of one function, injected by the function host (the lab's `latency` and `errors`
//! drills): what a slow dependency or a bad code path looks like from the function's users.
//!
//! - `POST /_sandbox/functions/{region}/{function}/fault` with `{"kind": "latency",
//!   "latency_ms": 3000}` or `{"kind": "errors", "rate": 0.5}`, optionally `"for_ms": N` (the
//!   fault lifts by itself after N ms: a synthetic outage of known length). Replaces any fault
//!   of that function.
//! - `DELETE` on the same path lifts it; `GET /_sandbox/functions/faults` lists those in force.
//!
//! `latency` holds each Function URL request and `Invoke` that long before the function sees
//! it. `errors` answers a share of them as Lambda does when the function fails: a Function URL
//! gets 502 (`{"Message": "Internal Server Error"}`), `Invoke` a 200 with
//! `X-Amz-Function-Error: Unhandled`. The share is exact, not random: request N (counted from
//! the injection) fails when floor(N * rate) grows, so rate 0.5 fails every second request.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `latency` or `errors`.
    pub kind: String,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// The share of requests that fail (`errors`), in (0, 1]; default 1.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Lift the fault by itself after this long.
    #[serde(default)]
    pub for_ms: Option<u64>,
}

impl Spec {
    fn check(&self) -> Result<(), String> {
        match self.kind.as_str() {
            "latency" if self.latency_ms.is_some() && self.rate.is_none() => Ok(()),
            "latency" => Err("latency needs latency_ms (and takes no rate)".into()),
            "errors" if self.latency_ms.is_some() => Err("errors takes no latency_ms".into()),
            "errors" => match self.rate {
                Some(r) if !(r > 0.0 && r <= 1.0) => Err(format!("rate {r} is not in (0, 1]")),
                _ => Ok(()),
            },
            other => Err(format!(
                "{other:?} is not a function fault: use latency or errors"
            )),
        }
    }
}

struct Armed {
    spec: Spec,
    until: Option<Instant>,
    /// Requests seen since the injection.
    seen: u64,
}

/// What a request meets.
pub enum Effect {
    None,
    Delay(Duration),
    Fail,
}

#[derive(Default)]
pub struct FnFaults {
    armed: Mutex<BTreeMap<String, Armed>>,
}

fn key(region: &str, function: &str) -> String {
    format!("{region}/{function}")
}

impl FnFaults {
    /// The fault the next request to `function` in `region` meets (counting it).
    pub fn effect(&self, region: &str, function: &str) -> Effect {
        let mut map = self.armed.lock().expect("function faults");
        let k = key(region, function);
        let Some(a) = map.get_mut(&k) else {
            return Effect::None;
        };
        if a.until.is_some_and(|u| Instant::now() >= u) {
            map.remove(&k);
            return Effect::None;
        }
        a.seen += 1;
        match a.spec.kind.as_str() {
            "latency" => Effect::Delay(Duration::from_millis(a.spec.latency_ms.unwrap_or(0))),
            _ => {
                let rate = a.spec.rate.unwrap_or(1.0);
                let (n, before) = (a.seen as f64, (a.seen - 1) as f64);
                if (n * rate).floor() > (before * rate).floor() {
                    Effect::Fail
                } else {
                    Effect::None
                }
            }
        }
    }

    pub fn control(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_sandbox/functions/faults", get(list))
            .route(
                "/_sandbox/functions/{region}/{function}/fault",
                post(arm).delete(lift),
            )
            .with_state(self.clone())
    }

    fn listing(&self) -> serde_json::Value {
        let now = Instant::now();
        let map = self.armed.lock().expect("function faults");
        json!(map
            .iter()
            .filter(|(_, a)| a.until.is_none_or(|u| now < u))
            .map(|(k, a)| (k.clone(), json!({"spec": a.spec, "requests": a.seen})))
            .collect::<serde_json::Map<_, _>>())
    }
}

async fn list(State(f): State<Arc<FnFaults>>) -> Response {
    Json(f.listing()).into_response()
}

async fn arm(
    State(f): State<Arc<FnFaults>>,
    Path((region, function)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let spec: Spec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad(&e.to_string()),
    };
    if let Err(e) = spec.check() {
        return bad(&e);
    }
    let until = spec
        .for_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    f.armed.lock().expect("function faults").insert(
        key(&region, &function),
        Armed {
            spec,
            until,
            seen: 0,
        },
    );
    Json(f.listing()).into_response()
}

async fn lift(
    State(f): State<Arc<FnFaults>>,
    Path((region, function)): Path<(String, String)>,
) -> Response {
    f.armed
        .lock()
        .expect("function faults")
        .remove(&key(&region, &function));
    Json(f.listing()).into_response()
}

fn bad(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "Bad Request", "message": why})),
    )
        .into_response()
}

/// Whether the request may reach `function`: `None` to go on (after any injected latency), or
/// the answer Lambda gives instead. A reserved concurrency of 0 (the `throttle` drill, set
/// through the real `PutFunctionConcurrency`) throttles every request, as on AWS: 429 for a
/// Function URL, `TooManyRequestsException` for `Invoke`. `url`: a Function URL request.
pub(crate) async fn admit(
    host: &crate::host::Host,
    region: &str,
    function: &str,
    url: bool,
) -> Option<Response> {
    let reserved = host
        .aws
        .lambda(region)
        .await
        .get_function_concurrency()
        .function_name(function)
        .send()
        .await
        .ok()
        .and_then(|c| c.reserved_concurrent_executions());
    if reserved == Some(0) {
        return Some(if url {
            (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"Message": "Rate Exceeded."})),
            )
                .into_response()
        } else {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("x-amzn-errortype", "TooManyRequestsException")],
                Json(json!({
                    "Type": "User",
                    "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                    "message": "Rate Exceeded."
                })),
            )
                .into_response()
        });
    }
    match host.fn_faults.effect(region, function) {
        Effect::None => None,
        Effect::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Effect::Fail if url => Some(
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({"Message": "Internal Server Error"})),
            )
                .into_response(),
        ),
        Effect::Fail => Some(
            (
                StatusCode::OK,
                [("x-amz-function-error", "Unhandled")],
                Json(json!({
                    "errorType": "LabInjectedError",
                    "errorMessage": "the lab's function host failed this request (an errors fault)"
                })),
            )
                .into_response(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armed(rate: f64) -> FnFaults {
        let f = FnFaults::default();
        f.armed.lock().unwrap().insert(
            key("r", "f"),
            Armed {
                spec: Spec {
                    kind: "errors".into(),
                    latency_ms: None,
                    rate: Some(rate),
                    for_ms: None,
                },
                until: None,
                seen: 0,
            },
        );
        f
    }

    #[test]
    fn an_error_rate_fails_exactly_that_share_of_requests() {
        for (rate, want) in [(1.0, 10), (0.5, 5), (0.3, 3), (0.1, 1)] {
            let f = armed(rate);
            let failed = (0..10)
                .filter(|_| matches!(f.effect("r", "f"), Effect::Fail))
                .count();
            assert_eq!(failed, want, "rate {rate}");
        }
        // Other functions are untouched.
        assert!(matches!(armed(1.0).effect("r", "g"), Effect::None));
    }

    #[test]
    fn specs_are_checked() {
        let s = |k: &str, l: Option<u64>, r: Option<f64>| Spec {
            kind: k.into(),
            latency_ms: l,
            rate: r,
            for_ms: None,
        };
        assert!(s("latency", Some(10), None).check().is_ok());
        assert!(s("latency", None, None).check().is_err());
        assert!(s("errors", None, Some(0.0)).check().is_err());
        assert!(s("errors", None, Some(1.5)).check().is_err());
        assert!(s("errors", None, None).check().is_ok());
        assert!(s("boom", None, None).check().is_err());
    }
}
