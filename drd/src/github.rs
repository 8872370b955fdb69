//! The slice of the GitHub REST API drd needs: a repository's Actions public key and writing an
//! Actions secret, sealed (libsodium sealed box) with that key as the API requires
//! (<https://docs.github.com/en/rest/actions/secrets>); and for `drd failover-ci`, a workflow's
//! state, enabling and disabling it, dispatching it and reading its runs
//! (<https://docs.github.com/en/rest/actions/workflows>, `.../workflow-runs`).

use crate::error::{Error, Result};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub struct GitHub {
    http: reqwest::Client,
    api: String,
    token: SecretString,
}

#[derive(Debug, Deserialize)]
pub struct PublicKey {
    pub key_id: String,
    /// Base64 of the 32-byte X25519 public key.
    pub key: String,
}

/// A workflow (`GET .../actions/workflows/{file}`).
#[derive(Debug, Clone, Deserialize)]
pub struct Workflow {
    pub id: u64,
    pub path: String,
    /// `active`, `disabled_manually`, ...
    pub state: String,
}

/// A workflow run.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub id: u64,
    pub head_sha: String,
    #[serde(default)]
    pub head_branch: Option<String>,
    /// `queued`, `in_progress`, `completed`, ...
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub html_url: Option<String>,
    /// `workflow_dispatch`, `push`, ...
    #[serde(default)]
    pub event: String,
}

#[derive(Debug, Deserialize)]
struct Runs {
    workflow_runs: Vec<Run>,
}

#[derive(Debug, Deserialize)]
pub struct SecretMeta {
    pub name: String,
    pub updated_at: String,
}

/// Encrypt `value` to a repository public key as a libsodium sealed box, base64-encoded.
pub fn seal(public_key_b64: &str, value: &[u8]) -> Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64
        .decode(public_key_b64)
        .map_err(|e| Error::failed(format!("the repository public key is not base64: {e}")))?;
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| Error::failed("the repository public key is not 32 bytes (an X25519 key)"))?;
    let pk = crypto_box::PublicKey::from(bytes);
    let sealed = pk
        .seal(&mut crypto_box::aead::OsRng, value)
        .map_err(|_| Error::failed("sealing the secret failed"))?;
    Ok(b64.encode(sealed))
}

/// Whether a GitHub error means GitHub is unavailable (no answer, a timeout, 5xx, rate
/// limited) rather than refusing the request (a bad token, no permission, no such workflow).
pub fn unavailable(e: &Error) -> bool {
    match e {
        Error::Failed { message, .. } => {
            !message.contains(" failed: HTTP 4") || message.contains(" failed: HTTP 429")
        }
        _ => false,
    }
}

impl GitHub {
    pub fn new(api: &str, token: SecretString) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("reqwest client builds"),
            api: api.trim_end_matches('/').to_string(),
            token,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(self.token.expose_secret())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header("User-Agent", concat!("drd/", env!("CARGO_PKG_VERSION")))
    }

    async fn send(&self, what: &str, r: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = r
            .send()
            .await
            .map_err(|e| Error::failed(format!("GitHub {what}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        Err(Error::failed_hint(
            format!("GitHub {what} failed: HTTP {}: {msg}", status.as_u16()),
            match status.as_u16() {
                401 => "the github-token secret is not a valid token",
                403 | 404 => "the token needs access to the repository: secrets write (drd rotate), actions write and contents write (drd failover-ci)",
                _ => "retry later; GitHub may be degraded",
            },
        ))
    }

    pub async fn public_key(&self, repo: &str) -> Result<PublicKey> {
        let r = self.req(
            reqwest::Method::GET,
            &format!("/repos/{repo}/actions/secrets/public-key"),
        );
        self.send("GET public-key", r)
            .await?
            .json()
            .await
            .map_err(|e| Error::failed(format!("GitHub public-key reply: {e}")))
    }

    /// Create or update an Actions secret.
    pub async fn put_secret(&self, repo: &str, name: &str, value: &SecretString) -> Result<()> {
        let key = self.public_key(repo).await?;
        let encrypted = seal(&key.key, value.expose_secret().as_bytes())?;
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("/repos/{repo}/actions/secrets/{name}"),
            )
            .json(&serde_json::json!({"encrypted_value": encrypted, "key_id": key.key_id}));
        self.send(&format!("PUT secret {name}"), r).await?;
        Ok(())
    }

    /// A workflow by file name (`deploy.yml`) or id.
    pub async fn workflow(&self, repo: &str, workflow: &str) -> Result<Workflow> {
        let r = self.req(
            reqwest::Method::GET,
            &format!("/repos/{repo}/actions/workflows/{workflow}"),
        );
        self.send(&format!("GET workflow {workflow}"), r)
            .await?
            .json()
            .await
            .map_err(|e| Error::failed(format!("GitHub workflow reply: {e}")))
    }

    /// `PUT .../enable` or `.../disable` (204).
    pub async fn set_workflow_enabled(&self, repo: &str, workflow: &str, on: bool) -> Result<()> {
        let verb = if on { "enable" } else { "disable" };
        let r = self.req(
            reqwest::Method::PUT,
            &format!("/repos/{repo}/actions/workflows/{workflow}/{verb}"),
        );
        self.send(&format!("PUT workflow {workflow} {verb}"), r)
            .await?;
        Ok(())
    }

    /// Dispatch `workflow` on `git_ref`, asking for the run's details. `Some(run id)` when the
    /// server returns them (200), `None` when it answers 204 without them (find the run by
    /// `head_sha` then).
    pub async fn dispatch(&self, repo: &str, workflow: &str, git_ref: &str) -> Result<Option<u64>> {
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("/repos/{repo}/actions/workflows/{workflow}/dispatches"),
            )
            .json(&serde_json::json!({"ref": git_ref, "return_run_details": true}));
        let resp = self
            .send(&format!("POST workflow {workflow} dispatches"), r)
            .await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::failed(format!("GitHub dispatch reply: {e}")))?;
        Ok(v.get("workflow_run_id").and_then(serde_json::Value::as_u64))
    }

    /// The newest runs of `workflow` for `head_sha` (newest first).
    pub async fn runs_for(&self, repo: &str, workflow: &str, head_sha: &str) -> Result<Vec<Run>> {
        let r = self
            .req(
                reqwest::Method::GET,
                &format!("/repos/{repo}/actions/workflows/{workflow}/runs"),
            )
            .query(&[("head_sha", head_sha), ("per_page", "20")]);
        let runs: Runs = self
            .send(&format!("GET workflow {workflow} runs"), r)
            .await?
            .json()
            .await
            .map_err(|e| Error::failed(format!("GitHub runs reply: {e}")))?;
        Ok(runs.workflow_runs)
    }

    pub async fn run(&self, repo: &str, id: u64) -> Result<Run> {
        let r = self.req(
            reqwest::Method::GET,
            &format!("/repos/{repo}/actions/runs/{id}"),
        );
        self.send(&format!("GET run {id}"), r)
            .await?
            .json()
            .await
            .map_err(|e| Error::failed(format!("GitHub run reply: {e}")))
    }

    pub async fn secret(&self, repo: &str, name: &str) -> Result<SecretMeta> {
        let r = self.req(
            reqwest::Method::GET,
            &format!("/repos/{repo}/actions/secrets/{name}"),
        );
        self.send(&format!("GET secret {name}"), r)
            .await?
            .json()
            .await
            .map_err(|e| Error::failed(format!("GitHub secret reply: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn sealed_boxes_open_with_the_repository_private_key() {
        let sk = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
        let pk = base64::engine::general_purpose::STANDARD.encode(sk.public_key().as_bytes());
        let sealed = seal(&pk, b"sk-new-value").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .unwrap();
        // 32-byte ephemeral key + 16-byte tag + message.
        assert_eq!(raw.len(), 32 + 16 + 12);
        assert_eq!(sk.unseal(&raw).unwrap(), b"sk-new-value");
        assert!(seal("not base64!", b"x").is_err());
        assert!(seal("AAAA", b"x").is_err());
    }
}
