//! The lab's GitHub, in GitHub's documented REST wire format.
//!
//! * Actions secrets (<https://docs.github.com/en/rest/actions/secrets>): `GET
//!   .../actions/secrets/public-key`, `PUT .../actions/secrets/{name}` with `{encrypted_value,
//!   key_id}`, `GET .../secrets/{name}`. The stub holds the repository's X25519 private key and
//!   really opens each sealed box, so a test can check the value drd sent; 422 to a box it
//!   cannot open. [`GitHubStub`] serves only these, in-process, for the rotation tests.
//! * The lab instance ([`Lab`], served by `sandbox serve` on its own port) adds the git remote
//!   (`/git/speaker-role/classifier.git`, smart HTTP through `git http-backend`, see
//!   [`crate::git`]) and Actions workflows and runs (see [`crate::actions`]: a dispatch runs the
//!   step `deploy` of job `deploy` of the dispatched ref's workflow; only dispatches start
//!   runs, a push starts none).
//!
//! Every REST call needs `Authorization: Bearer <token>` (401 otherwise); the lab's token is made
//! at `up`, kept in `<dir>/github-token` (mode 0600) and never logged. The outage switch
//! (`drd sandbox github down`) makes every REST and git request answer 503.

use crate::git::{self, Repo, REPOSITORY};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) const DOCS: &str = "https://docs.github.com/rest";

pub struct Stub {
    sk: crypto_box::SecretKey,
    key_id: String,
    token: SecretString,
    repo: String,
    /// name -> (plaintext, updated_at)
    pub secrets: Mutex<BTreeMap<String, (String, String)>>,
    pub puts: Mutex<u32>,
}

impl Stub {
    fn new(repo: &str, token: SecretString) -> Arc<Self> {
        Arc::new(Self {
            sk: crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng),
            key_id: "568250167242549743".into(),
            token,
            repo: repo.into(),
            secrets: Mutex::new(BTreeMap::new()),
            puts: Mutex::new(0),
        })
    }

    fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/repos/{owner}/{repo}/actions/secrets/public-key",
                get(public_key),
            )
            .route(
                "/repos/{owner}/{repo}/actions/secrets/{name}",
                get(get_secret).put(put_secret),
            )
            .with_state(self.clone())
    }
}

pub struct GitHubStub {
    pub url: String,
    pub state: Arc<Stub>,
}

impl GitHubStub {
    /// Serve the secrets API on a free loopback port for `owner/name`, accepting only `token`.
    pub async fn start(repo: &str, token: &str) -> Self {
        let state = Stub::new(repo, SecretString::from(token.to_string()));
        let app = state.router();
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

/// A GitHub-style error: `{message, documentation_url}`.
pub(crate) fn gh_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "documentation_url": DOCS, "status": status.as_str()})),
    )
        .into_response()
}

fn bearer_ok(h: &HeaderMap, token: &SecretString) -> bool {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token.expose_secret())
}

fn guard(s: &Stub, h: &HeaderMap, owner: &str, repo: &str) -> Option<Response> {
    if !bearer_ok(h, &s.token) {
        return Some(gh_error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if h.get("x-github-api-version").is_none() || h.get("user-agent").is_none() {
        return Some(gh_error(
            StatusCode::BAD_REQUEST,
            "missing X-GitHub-Api-Version or User-Agent",
        ));
    }
    if !format!("{owner}/{repo}").eq_ignore_ascii_case(&s.repo) {
        return Some(gh_error(StatusCode::NOT_FOUND, "Not Found"));
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

pub(crate) fn now() -> String {
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
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "key_id does not match the repository key",
        );
    }
    let opened = body["encrypted_value"]
        .as_str()
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|raw| s.sk.unseal(&raw).ok())
        .and_then(|p| String::from_utf8(p).ok());
    let Some(plain) = opened else {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "encrypted_value is not a sealed box for this key",
        );
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
        None => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

// ---- The lab instance -------------------------------------------------------------------

/// Where the lab's token is kept (mode 0600).
pub fn token_path(dir: &std::path::Path) -> PathBuf {
    dir.join("github-token")
}

pub(crate) fn runs_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("github-runs")
}

/// The environment a shell uses to reach the lab's GitHub on `port`: never the token, only the
/// file that holds it.
pub fn env(port: u16, token_file: &std::path::Path) -> Vec<(&'static str, String)> {
    let api = format!("http://127.0.0.1:{port}");
    vec![
        ("DRD_CI_REPOSITORY", format!("{api}/git/{REPOSITORY}.git")),
        ("DRD_GITHUB_API", api),
        ("DRD_GITHUB_REPOSITORY", REPOSITORY.to_string()),
        (
            "DRD_SANDBOX_GITHUB_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ]
}

/// What a workflow run's step gets on top of the host's environment: the sandbox's endpoints
/// (a lab run deploys to this sandbox, never elsewhere) and `drd` (beside this binary) first on
/// `PATH`.
pub fn run_env(
    dir: &std::path::Path,
    host_port: u16,
    llm_port: u16,
    proxy_port: u16,
    github_port: u16,
) -> Vec<(String, String)> {
    let local = |p: u16| format!("http://127.0.0.1:{p}");
    // What the workflow's configure-aws-credentials step (not run in the lab) would provide:
    // credentials, here the emulator's.
    let keys = crate::iam::lab_keys();
    let mut out: Vec<(String, String)> = vec![
        ("AWS_ENDPOINT_URL".into(), local(proxy_port)),
        ("AWS_ACCESS_KEY_ID".into(), keys.access_key_id),
        ("AWS_SECRET_ACCESS_KEY".into(), keys.secret_access_key),
        ("DRD_LAMBDA_DATA_ENDPOINT".into(), local(host_port)),
        ("DRD_LLM_BASE_URL".into(), format!("{}/v1", local(llm_port))),
    ];
    // The lab's one shortcut, as for CodeBuild (docs/emulator-gaps.md): a prebuilt function
    // binary instead of a release build in every deploy, when the lab was started with one.
    if let Ok(b) = std::env::var("DRD_SANDBOX_CI_BOOTSTRAP") {
        out.push(("DRD_BOOTSTRAP".into(), b));
    }
    let token_file = token_path(dir);
    let token_file = std::fs::canonicalize(&token_file).unwrap_or(token_file);
    out.extend(
        env(github_port, &token_file)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    let bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from));
    if let Some(bin) = bin {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(bin).chain(std::env::split_paths(&path));
        if let Ok(p) = std::env::join_paths(paths) {
            out.push(("PATH".into(), p.to_string_lossy().into_owned()));
        }
    }
    out
}

/// At `up` of a sandbox that was not running: a fresh bare repository (seeded from `seed` when
/// given), no runs, a new token. Returns the seed commit.
pub async fn prepare(
    dir: &std::path::Path,
    seed: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    let scratch = dir.join("github-seed");
    for d in [dir.join("git"), runs_dir(dir), scratch.clone()] {
        if d.exists() {
            std::fs::remove_dir_all(&d)
                .map_err(|e| format!("cannot remove {}: {e}", d.display()))?;
        }
    }
    let repo = Repo::init(git::repo_dir(dir)).await?;
    let sha = match seed {
        Some(src) => {
            let sha = repo.seed(src, &scratch, dir).await;
            let _ = std::fs::remove_dir_all(&scratch);
            Some(sha?)
        }
        None => None,
    };
    let mut raw = [0u8; 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let path = token_path(dir);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(f, "ghp_{}", hex::encode(raw))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(sha)
}

pub struct Lab {
    pub(crate) dir: PathBuf,
    pub(crate) repo: Repo,
    pub(crate) api: String,
    pub(crate) token: SecretString,
    pub(crate) up: AtomicBool,
    pub(crate) disabled: Mutex<BTreeSet<u64>>,
    pub(crate) runs: Mutex<Vec<crate::actions::Run>>,
    pub(crate) next_run: AtomicU64,
    /// What a run's step gets on top of the host's environment: the sandbox's endpoints.
    pub(crate) run_env: Vec<(String, String)>,
    pub(crate) secrets: Arc<Stub>,
}

impl Lab {
    /// The lab on `port`, with the token `prepare` wrote.
    pub fn open(
        dir: PathBuf,
        port: u16,
        run_env: Vec<(String, String)>,
    ) -> Result<Arc<Self>, String> {
        let path = token_path(&dir);
        let token = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e} (run drd sandbox up)", path.display()))?;
        let token = SecretString::from(token.trim().to_string());
        // Absolute: runs see it as GITHUB_WORKSPACE and may change directory.
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        Ok(Arc::new(Self {
            repo: Repo::new(git::repo_dir(&dir)),
            dir,
            api: format!("http://127.0.0.1:{port}"),
            secrets: Stub::new(REPOSITORY, token.clone()),
            token,
            up: AtomicBool::new(true),
            disabled: Mutex::new(BTreeSet::new()),
            runs: Mutex::new(vec![]),
            next_run: AtomicU64::new(1),
            run_env,
        }))
    }

    /// The lab's port: REST, the Actions secrets and the git remote, behind the outage switch.
    pub fn router(self: &Arc<Self>) -> Router {
        let rest = crate::actions::routes()
            .route_layer(from_fn_with_state(self.clone(), authorize))
            .route("/", get(root))
            .route("/git/{*path}", any(git_http))
            .with_state(self.clone());
        rest.merge(self.secrets.router())
            .fallback(|| async { gh_error(StatusCode::NOT_FOUND, "Not Found") })
            .layer(from_fn_with_state(self.clone(), outage))
    }

    /// The outage switch on the function host's control port: `GET /_sandbox/github`, `POST
    /// /_sandbox/github/down|up`.
    pub fn control(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_sandbox/github", get(control_get))
            .route("/_sandbox/github/{verb}", post(control_set))
            .with_state(self.clone())
    }

    fn status_json(&self, changed: Option<bool>) -> Value {
        json!({
            "up": self.up.load(Ordering::SeqCst),
            "changed": changed,
            "api": self.api,
            "repository": REPOSITORY,
            "runs": self.runs.lock().expect("runs").len(),
        })
    }
}

/// 503 for everything while the outage switch is on.
async fn outage(State(lab): State<Arc<Lab>>, req: Request, next: Next) -> Response {
    if lab.up.load(Ordering::SeqCst) {
        return next.run(req).await;
    }
    if req.uri().path().starts_with("/git/") {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "GitHub is unavailable (the lab's outage switch is on)\n",
        )
            .into_response();
    }
    gh_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable: the lab's GitHub is down (drd sandbox github up)",
    )
}

/// The lab's token, a User-Agent (GitHub refuses requests without one) and the lab repository.
async fn authorize(State(lab): State<Arc<Lab>>, req: Request, next: Next) -> Response {
    let h = req.headers();
    if !bearer_ok(h, &lab.token) {
        return gh_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if h.get("user-agent").is_none() {
        return gh_error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    let mut parts = req.uri().path().trim_start_matches('/').split('/').skip(1);
    let named = format!(
        "{}/{}",
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("")
    );
    if !named.eq_ignore_ascii_case(REPOSITORY) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    next.run(req).await
}

async fn root(State(lab): State<Arc<Lab>>) -> Response {
    Json(json!({"repository_url": format!("{}/repos/{{owner}}/{{repo}}", lab.api)})).into_response()
}

async fn control_get(State(lab): State<Arc<Lab>>) -> Response {
    Json(lab.status_json(None)).into_response()
}

async fn control_set(State(lab): State<Arc<Lab>>, Path(verb): Path<String>) -> Response {
    let up = match verb.as_str() {
        "up" => true,
        "down" => false,
        _ => return gh_error(StatusCode::BAD_REQUEST, "use POST /_sandbox/github/down|up"),
    };
    let was = lab.up.swap(up, Ordering::SeqCst);
    tracing::warn!(up, "the lab's GitHub outage switch was set");
    Json(lab.status_json(Some(was != up))).into_response()
}

async fn git_http(
    State(lab): State<Arc<Lab>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let rest = parts.uri.path().strip_prefix("/git").unwrap_or("");
    // GitHub serves a repository with and without `.git`.
    let path_info = if rest.starts_with(&format!("/{REPOSITORY}.git/")) {
        rest.to_string()
    } else if let Some(tail) = rest.strip_prefix(&format!("/{REPOSITORY}/")) {
        format!("/{REPOSITORY}.git/{tail}")
    } else {
        return (StatusCode::NOT_FOUND, "Repository not found.\n").into_response();
    };
    let root = lab.dir.join("git");
    let query = parts.uri.query().unwrap_or("");
    let peer = peer.ip().to_string();
    git::http_backend(
        &root,
        &path_info,
        &parts.method,
        query,
        &parts.headers,
        &peer,
        body,
    )
    .await
}

/// Switch a running sandbox's GitHub down (`up = false`) or up; returns whether it is up now
/// and whether anything changed.
pub async fn switch(state: &crate::State, up: bool) -> drd::error::Result<(bool, bool)> {
    let verb = if up { "up" } else { "down" };
    let url = format!("{}/_sandbox/github/{verb}", state.host.url());
    let v = crate::host_call(
        reqwest::Client::new().post(url),
        &format!("set GitHub {verb}"),
    )
    .await?;
    Ok((
        v["up"].as_bool().unwrap_or(up),
        v["changed"].as_bool().unwrap_or(false),
    ))
}

/// Whether a running sandbox's GitHub is up (`None` when the host does not say).
pub async fn is_up(state: &crate::State) -> Option<bool> {
    let url = format!("{}/_sandbox/github", state.host.url());
    let v = crate::host_call(reqwest::Client::new().get(url), "read the GitHub switch")
        .await
        .ok()?;
    v["up"].as_bool()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_the_token_file_never_the_token() {
        let env = env(4321, std::path::Path::new("/s/github-token"));
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("DRD_CI_REPOSITORY"),
            Some("http://127.0.0.1:4321/git/speaker-role/classifier.git")
        );
        assert_eq!(get("DRD_GITHUB_API"), Some("http://127.0.0.1:4321"));
        assert_eq!(
            get("DRD_GITHUB_REPOSITORY"),
            Some("speaker-role/classifier")
        );
        assert_eq!(
            get("DRD_SANDBOX_GITHUB_TOKEN_FILE"),
            Some("/s/github-token")
        );
    }
}
