//! Contract tests: the real classifier binary in `--listen` mode against a local stub of the
//! chat-completions API speaking the documented wire format (including its failure modes).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    Garbage,
    NonJsonContent,
    Incomplete,
    WrongRole,
    Status(u16),
}

struct Stub {
    mode: Mutex<Mode>,
    calls: AtomicUsize,
    last: Mutex<Option<(String, Value)>>,
}

async fn chat(State(s): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    *s.last.lock().unwrap() = Some((auth, req.clone()));
    let user = req["messages"][1]["content"].as_str().unwrap_or("");
    let task: Value = user
        .lines()
        .find_map(|l| l.strip_prefix("Task: "))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let labels: Vec<String> = task["labels"]
        .as_array()
        .map(|a| a.iter().map(|l| l.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    let roles: Vec<String> = task["roles"]
        .as_array()
        .map(|a| a.iter().map(|l| l.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    let mode = *s.mode.lock().unwrap();
    let mut mapping = serde_json::Map::new();
    for (i, l) in labels.iter().enumerate() {
        mapping.insert(l.clone(), json!(roles[i % roles.len()]));
    }
    let content = match mode {
        Mode::Status(code) => return (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(
                json!({"error": {"message": "stub failure", "type": "server_error", "code": null}}),
            ),
        )
            .into_response(),
        Mode::Garbage => return (StatusCode::OK, "<html>502 Bad Gateway</html>").into_response(),
        Mode::NonJsonContent => "Speaker 0 is the agent and Speaker 1 is the customer.".to_string(),
        Mode::Incomplete => {
            mapping.remove(&labels[labels.len() - 1]);
            Value::Object(mapping).to_string()
        }
        Mode::WrongRole => {
            mapping.insert(labels[0].clone(), json!("Supervisor"));
            Value::Object(mapping).to_string()
        }
        Mode::Good => Value::Object(mapping).to_string(),
    };
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    }))
    .into_response()
}

struct Fixture {
    stub: Arc<Stub>,
    child: std::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(key: Option<&str>) -> Fixture {
    let stub = Arc::new(Stub {
        mode: Mutex::new(Mode::Good),
        calls: AtomicUsize::new(0),
        last: Mutex::new(None),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(stub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_classifier"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("OPENAI_BASE_URL", format!("http://{stub_addr}/v1"))
        .env("OPENAI_MODEL", "test-model")
        .env("OPENAI_SECRET_NAME", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(k) = key {
        cmd.env("OPENAI_API_KEY", k);
    }
    let child = cmd.spawn().unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Fixture {
        stub,
        child,
        url: format!("http://127.0.0.1:{port}/"),
        http: reqwest::Client::new(),
    }
}

impl Fixture {
    async fn post_raw(&self, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap())
    }
    async fn post(&self, body: Value) -> (u16, Value) {
        self.post_raw(&body.to_string()).await
    }
    fn mode(&self, m: Mode) {
        *self.stub.mode.lock().unwrap() = m;
    }
    fn calls(&self) -> usize {
        self.stub.calls.load(Ordering::SeqCst)
    }
}

const T2: &str = "Speaker 0: Thanks for calling.\n\nSpeaker 1: My order is late.\n(hold music)\nSpeaker 0: Let me check.";

#[tokio::test]
async fn request_validation_errors() {
    let f = start(Some("sk-test")).await;
    let (s, b) = f.post(json!({})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("Missing required field: transcript"))
    );
    assert!(b["message"].is_string());
    let (s, b) = f.post_raw("{not json").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("Invalid JSON")));
    let (s, b) = f.post(json!({"transcript": "   "})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("Empty transcript")));
    let (s, b) = f
        .post(json!({"transcript": "Speaker 0: hi", "target_roles": ["Agent"]}))
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("Invalid target_roles"))
    );
    let (s, _) = f.post(json!({"transcript": 5})).await;
    assert_eq!(s, 400);
    assert_eq!(f.calls(), 0);
}

#[tokio::test]
async fn labels_already_roles_come_back_unchanged_without_an_llm_call() {
    let f = start(None).await; // no key at all: the no-LLM path must not need one
    let t = "Agent: Hello\nCustomer: Hi";
    let (s, b) = f.post(json!({"transcript": t})).await;
    assert_eq!(s, 200);
    assert_eq!(b["transcript"], t);
    assert_eq!(b["log"][0]["step"], "parse_labels");
    assert_eq!(b["log"][1]["step"], "no_mapping_needed");
    assert_eq!(f.calls(), 0);
}

#[tokio::test]
async fn relabels_with_one_llm_call_in_the_documented_wire_format() {
    let f = start(Some("sk-test")).await;
    let (s, b) = f.post(json!({"transcript": T2})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["transcript"], "Agent: Thanks for calling.\n\nCustomer: My order is late.\n(hold music)\nAgent: Let me check.");
    let steps: Vec<&str> = b["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["parse_labels", "llm_request", "mapping", "relabel"]);
    assert_eq!(b["log"][3]["lines_changed"], 3);
    assert_eq!(f.calls(), 1);
    let (auth, req) = f.stub.last.lock().unwrap().clone().unwrap();
    assert_eq!(auth, "Bearer sk-test");
    assert_eq!(req["model"], "test-model");
    assert_eq!(req["response_format"]["type"], "json_object");
    assert_eq!(req["messages"][0]["role"], "system");
}

#[tokio::test]
async fn custom_roles_and_three_speakers() {
    let f = start(Some("sk-test")).await;
    let t = "Speaker 0: a\nSpeaker 1: b\nSpeaker 2: c";
    let (s, b) = f
        .post(json!({"transcript": t, "target_roles": ["Doctor", "Patient", "Nurse"]}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["transcript"], "Doctor: a\nPatient: b\nNurse: c");
}

#[tokio::test]
async fn llm_failures_map_to_422() {
    let f = start(Some("sk-test")).await;
    for (mode, error) in [
        (Mode::Garbage, "Invalid API Response"),
        (Mode::NonJsonContent, "Invalid API Response"),
        (Mode::Status(429), "Invalid API Response"),
        (Mode::Status(500), "Invalid API Response"),
        (Mode::Status(401), "Invalid API Response"),
        (Mode::Incomplete, "Speaker Classification Error"),
        (Mode::WrongRole, "Speaker Classification Error"),
    ] {
        f.mode(mode);
        let before = f.calls();
        let (s, b) = f.post(json!({"transcript": T2})).await;
        assert_eq!((s, b["error"].as_str()), (422, Some(error)), "{b}");
        assert!(!b["message"].as_str().unwrap().contains("sk-test"));
        if let Mode::Status(429 | 500) = mode {
            assert_eq!(f.calls() - before, 2, "429/5xx are retried once");
        }
    }
}

#[tokio::test]
async fn missing_api_key_is_500() {
    let f = start(None).await;
    let (s, b) = f.post(json!({"transcript": T2})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (500, Some("Configuration Error")),
        "{b}"
    );
    assert_eq!(f.calls(), 0);
}
