//! A local stub of the GitHub REST API for Actions secrets, speaking the documented wire format
//! (<https://docs.github.com/en/rest/actions/secrets>): `GET .../actions/secrets/public-key`,
//! `PUT .../actions/secrets/{name}` with `{encrypted_value, key_id}`, `GET .../secrets/{name}`.
//! It holds the repository's X25519 private key and really opens each sealed box, so a test can
//! check the value drd sent; it answers 401 to a wrong token and 422 to a box it cannot open.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub struct Stub {
    sk: crypto_box::SecretKey,
    key_id: String,
    token: String,
    repo: String,
    /// name -> (plaintext, updated_at)
    pub secrets: Mutex<BTreeMap<String, (String, String)>>,
    pub puts: Mutex<u32>,
}

pub struct GitHubStub {
    pub url: String,
    pub state: Arc<Stub>,
}

impl GitHubStub {
    /// Serve on a free loopback port for `owner/name`, accepting only `token`.
    pub async fn start(repo: &str, token: &str) -> Self {
        let state = Arc::new(Stub {
            sk: crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng),
            key_id: "568250167242549743".into(),
            token: token.into(),
            repo: repo.into(),
            secrets: Mutex::new(BTreeMap::new()),
            puts: Mutex::new(0),
        });
        let app = axum::Router::new()
            .route(
                "/repos/{owner}/{repo}/actions/secrets/public-key",
                get(public_key),
            )
            .route(
                "/repos/{owner}/{repo}/actions/secrets/{name}",
                get(get_secret).put(put_secret),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// The plaintext of a secret as the stub decrypted it.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.state
            .secrets
            .lock()
            .unwrap()
            .get(name)
            .map(|(v, _)| v.clone())
    }
}

fn guard(s: &Stub, h: &HeaderMap, owner: &str, repo: &str) -> Option<Response> {
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", s.token) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials"})),
            )
                .into_response(),
        );
    }
    if h.get("x-github-api-version").is_none() || h.get("user-agent").is_none() {
        return Some(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "missing X-GitHub-Api-Version or User-Agent"})),
            )
                .into_response(),
        );
    }
    if format!("{owner}/{repo}") != s.repo {
        return Some(
            (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
        );
    }
    None
}

async fn public_key(
    State(s): State<Arc<Stub>>,
    Path((owner, repo)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = guard(&s, &h, &owner, &repo) {
        return r;
    }
    let key = base64::engine::general_purpose::STANDARD.encode(s.sk.public_key().as_bytes());
    Json(json!({"key_id": s.key_id, "key": key})).into_response()
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

async fn put_secret(
    State(s): State<Arc<Stub>>,
    Path((owner, repo, name)): Path<(String, String, String)>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = guard(&s, &h, &owner, &repo) {
        return r;
    }
    if body["key_id"].as_str() != Some(s.key_id.as_str()) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "key_id does not match the repository key"})),
        )
            .into_response();
    }
    let opened = body["encrypted_value"]
        .as_str()
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|raw| s.sk.unseal(&raw).ok())
        .and_then(|p| String::from_utf8(p).ok());
    let Some(plain) = opened else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "encrypted_value is not a sealed box for this key"})),
        )
            .into_response();
    };
    *s.puts.lock().unwrap() += 1;
    let existed = s
        .secrets
        .lock()
        .unwrap()
        .insert(name, (plain, now()))
        .is_some();
    if existed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::CREATED, Json(json!({}))).into_response()
    }
}

async fn get_secret(
    State(s): State<Arc<Stub>>,
    Path((owner, repo, name)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = guard(&s, &h, &owner, &repo) {
        return r;
    }
    match s.secrets.lock().unwrap().get(&name) {
        Some((_, at)) => {
            Json(json!({"name": name, "created_at": at, "updated_at": at})).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
    }
}
