//! A local stub of the OpenAI chat-completions API for the sandbox.
//!
//! It accepts only keys it was told are valid (`drd sandbox llm allow|revoke`, key on stdin), so
//! revoking a key really breaks deep probes and a rotation really heals them. It keeps only
//! SHA-256 digests of keys, in memory and in `llm-keys.json`, never a key itself. Its mapping is
//! deterministic: the i-th label of the task goes to role i (mod the number of roles).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct LlmStub {
    keys: Mutex<BTreeSet<String>>,
    store: Option<PathBuf>,
    calls: std::sync::atomic::AtomicU64,
}

pub fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

impl LlmStub {
    pub fn new(store: Option<PathBuf>) -> Arc<Self> {
        let keys = store
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<BTreeSet<String>>(&b).ok())
            .unwrap_or_default();
        Arc::new(Self {
            keys: Mutex::new(keys),
            store,
            calls: Default::default(),
        })
    }

    fn save(&self, keys: &BTreeSet<String>) {
        if let Some(p) = &self.store {
            let _ = std::fs::write(p, serde_json::to_vec(keys).unwrap_or_default());
        }
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/_sandbox/keys/allow", post(allow))
            .route("/_sandbox/keys/revoke", post(revoke))
            .route("/_sandbox/keys", get(count))
            .with_state(self.clone())
    }
}

async fn allow(State(s): State<Arc<LlmStub>>, body: Bytes) -> Response {
    let key = String::from_utf8_lossy(&body).trim().to_string();
    if key.is_empty() {
        return (StatusCode::BAD_REQUEST, "empty key").into_response();
    }
    let mut keys = s.keys.lock().expect("keys");
    keys.insert(digest(&key));
    s.save(&keys);
    Json(json!({"allowed": keys.len()})).into_response()
}

async fn revoke(State(s): State<Arc<LlmStub>>, body: Bytes) -> Response {
    let key = String::from_utf8_lossy(&body).trim().to_string();
    let mut keys = s.keys.lock().expect("keys");
    let removed = keys.remove(&digest(&key));
    s.save(&keys);
    Json(json!({"revoked": removed, "allowed": keys.len()})).into_response()
}

async fn count(State(s): State<Arc<LlmStub>>) -> Response {
    let n = s.keys.lock().expect("keys").len();
    let calls = s.calls.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({"allowed": n, "calls": calls})).into_response()
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

async fn chat(State(s): State<Arc<LlmStub>>, headers: HeaderMap, body: Bytes) -> Response {
    s.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if key.is_empty() || !s.keys.lock().expect("keys").contains(&digest(key)) {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            "invalid_json",
        );
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("sandbox");
    let user = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let mapping = map_labels(user);
    Json(json!({
        "id": format!("chatcmpl-sandbox-{}", s.calls.load(std::sync::atomic::Ordering::Relaxed)),
        "object": "chat.completion",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": mapping.to_string()},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": user.len() / 4, "completion_tokens": 10, "total_tokens": user.len() / 4 + 10}
    }))
    .into_response()
}

/// Read the `Task: {"labels": [...], "roles": [...]}` line of the prompt; fall back to the
/// transcript's labels and Agent/Customer.
pub fn map_labels(user: &str) -> Value {
    let task = user
        .lines()
        .find_map(|l| l.strip_prefix("Task: "))
        .and_then(|t| serde_json::from_str::<Value>(t).ok());
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut labels = strings(task.as_ref().and_then(|t| t.get("labels")));
    let mut roles = strings(task.as_ref().and_then(|t| t.get("roles")));
    if roles.is_empty() {
        roles = vec!["Agent".into(), "Customer".into()];
    }
    if labels.is_empty() {
        for line in user.lines() {
            if let Some((l, _)) = line.split_once(':') {
                let l = l.trim().to_string();
                if !l.is_empty() && !labels.contains(&l) && !roles.contains(&l) && l != "Task" {
                    labels.push(l);
                }
            }
        }
    }
    let map: serde_json::Map<String, Value> = labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, Value::String(roles[i % roles.len()].clone())))
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_task_labels_in_order() {
        let m = map_labels("Task: {\"labels\":[\"Speaker 0\",\"Speaker 1\",\"Speaker 2\"],\"roles\":[\"Agent\",\"Customer\"]}\n\nTranscript:\n...");
        assert_eq!(
            m,
            json!({"Speaker 0": "Agent", "Speaker 1": "Customer", "Speaker 2": "Agent"})
        );
        let m = map_labels("Speaker 1: a\nSpeaker 0: b");
        assert_eq!(m, json!({"Speaker 1": "Agent", "Speaker 0": "Customer"}));
    }

    #[test]
    fn digests_never_equal_the_key() {
        assert_ne!(digest("sk-test"), "sk-test");
        assert_eq!(digest("sk-test\n"), digest("sk-test"));
    }
}
