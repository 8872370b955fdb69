//! The lab's webhook receiver: it captures what drd's alerts POST, so tests (and a person
//! trying alerts in the lab) can read them back.
//!
//! - `POST /_sandbox/hooks/{name}`: captured (body parsed as JSON when it is JSON); 200, or 503
//!   while failures are armed for `name`.
//! - `GET /_sandbox/hooks/{name}`: every capture of `name`, oldest first, with the failed ones.
//! - `POST /_sandbox/hooks/{name}/fail/{n}`: the next `n` deliveries to `name` answer 503 (to
//!   see retries).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Hooks {
    calls: Mutex<BTreeMap<String, Vec<Value>>>,
    fail: Mutex<BTreeMap<String, u32>>,
}

impl Hooks {
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_sandbox/hooks/{name}", post(capture).get(list))
            .route("/_sandbox/hooks/{name}/fail/{n}", post(arm))
            .with_state(self.clone())
    }
}

async fn capture(
    State(h): State<Arc<Hooks>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let failing = {
        let mut f = h.fail.lock().expect("hooks");
        match f.get_mut(&name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    let text = String::from_utf8_lossy(&body).to_string();
    let parsed = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    h.calls
        .lock()
        .expect("hooks")
        .entry(name)
        .or_default()
        .push(json!({
            "answered": if failing { 503 } else { 200 },
            "content_type": header("content-type"),
            "user_agent": header("user-agent"),
            "json": parsed,
            "body": text,
        }));
    if failing {
        (StatusCode::SERVICE_UNAVAILABLE, "armed failure\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn list(State(h): State<Arc<Hooks>>, Path(name): Path<String>) -> Json<Value> {
    let calls = h
        .calls
        .lock()
        .expect("hooks")
        .get(&name)
        .cloned()
        .unwrap_or_default();
    Json(json!({ "name": name, "calls": calls }))
}

async fn arm(State(h): State<Arc<Hooks>>, Path((name, n)): Path<(String, u32)>) -> Json<Value> {
    h.fail.lock().expect("hooks").insert(name.clone(), n);
    Json(json!({ "name": name, "failing_next": n }))
}
