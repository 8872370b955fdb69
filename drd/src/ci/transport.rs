//! git's smart HTTP protocol for libgit2, over reqwest (rustls), so the mirror needs neither
//! OpenSSL nor curl and reaches GitHub over HTTPS from a static binary. Modelled on git2-rs's own
//! `git2-curl`, except that a response is streamed to libgit2 instead of buffered: a large
//! repository's pack never sits in memory.
//!
//! The transport is registered once per process for `http` and `https`. Credentials go in an
//! `Authorization` header looked up by URL prefix (`with_auth`), never in the URL, a log line or
//! an error.

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use secrecy::{ExposeSecret, SecretString};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Once;

thread_local! {
    /// The repository URL and its token, for the git operation running on this thread
    /// (libgit2 calls the transport on the thread that fetches): two mirrors on two threads
    /// never see each other's token.
    static AUTH: RefCell<Option<(String, SecretString)>> = const { RefCell::new(None) };
}

/// Run `f` on this thread with `token` sent to requests for exactly `url` (GitHub takes a
/// token as the password of `x-access-token`).
pub fn with_auth<R>(url: &str, token: Option<&SecretString>, f: impl FnOnce() -> R) -> R {
    let previous =
        AUTH.with(|a| a.replace(token.map(|t| (url.trim_end_matches('/').to_string(), t.clone()))));
    let r = f();
    AUTH.with(|a| a.replace(previous));
    r
}

fn auth_for(url: &str) -> Option<String> {
    use base64::Engine;
    AUTH.with(|a| {
        a.borrow()
            .as_ref()
            .filter(|(u, _)| u == url.trim_end_matches('/'))
            .map(|(_, t)| t.clone())
    })
    .map(|t| {
        let pair = format!("x-access-token:{}", t.expose_secret());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    })
}

/// Register the transport (once; later calls do nothing).
pub fn register() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // libgit2's object cache (256 MiB by default) would keep every commit and tree a
        // mirror reads; the mirror reads each once.
        git2::opts::enable_caching(false);
        for scheme in ["http", "https"] {
            // SAFETY: `git2::transport::register` is unsafe because it mutates libgit2's
            // global transport table without synchronisation. It runs exactly once (`Once`),
            // before this process makes any git2 network call (every caller registers first).
            #[allow(unsafe_code)]
            let r = unsafe { git2::transport::register(scheme, factory) };
            if let Err(e) = r {
                tracing::warn!(scheme, error = %e.message(), "could not register the git transport");
            }
        }
    });
}

fn factory(remote: &git2::Remote<'_>) -> Result<Transport, git2::Error> {
    Transport::smart(
        remote,
        true,
        Http {
            client: reqwest::blocking::Client::builder()
                .user_agent(concat!("git/2.0 (drd ", env!("CARGO_PKG_VERSION"), ")"))
                .connect_timeout(std::time::Duration::from_secs(30))
                // A stalled remote ends the call instead of hanging a job that holds a lease.
                .timeout(std::time::Duration::from_secs(1800))
                .build()
                .map_err(|e| git2::Error::from_str(&format!("HTTP client: {e}")))?,
        },
    )
}

struct Http {
    client: reqwest::blocking::Client,
}

impl SmartSubtransport for Http {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let (service, path, post) = match action {
            Service::UploadPackLs => ("upload-pack", "/info/refs?service=git-upload-pack", false),
            Service::UploadPack => ("upload-pack", "/git-upload-pack", true),
            Service::ReceivePackLs => {
                ("receive-pack", "/info/refs?service=git-receive-pack", false)
            }
            Service::ReceivePack => ("receive-pack", "/git-receive-pack", true),
        };
        Ok(Box::new(Stream {
            client: self.client.clone(),
            url: format!("{}{path}", url.trim_end_matches('/')),
            base: url.to_string(),
            service,
            post,
            body: vec![],
            response: None,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

struct Stream {
    client: reqwest::blocking::Client,
    url: String,
    base: String,
    service: &'static str,
    post: bool,
    body: Vec<u8>,
    response: Option<reqwest::blocking::Response>,
}

fn err(m: String) -> io::Error {
    io::Error::other(m)
}

impl Stream {
    fn send(&mut self) -> io::Result<()> {
        let mut req = if self.post {
            self.client
                .post(&self.url)
                .header(
                    "Content-Type",
                    format!("application/x-git-{}-request", self.service),
                )
                .header(
                    "Accept",
                    format!("application/x-git-{}-result", self.service),
                )
                .body(std::mem::take(&mut self.body))
        } else {
            self.client.get(&self.url).header("Accept", "*/*")
        };
        if let Some(a) = auth_for(&self.base) {
            let mut v = reqwest::header::HeaderValue::from_str(&a)
                .map_err(|_| err("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            req = req.header("Authorization", v);
        }
        let resp = req
            .send()
            .map_err(|e| err(format!("{}: {}", redact(&self.base), e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(err(format!(
                "{} answered HTTP {}",
                redact(&self.base),
                status.as_u16()
            )));
        }
        let expected = if self.post {
            format!("application/x-git-{}-result", self.service)
        } else {
            format!("application/x-git-{}-advertisement", self.service)
        };
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct != expected {
            return Err(err(format!(
                "{} is not a smart git HTTP server (Content-Type {ct:?}, expected {expected})",
                redact(&self.base)
            )));
        }
        self.response = Some(resp);
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.send()?;
        }
        self.response.as_mut().expect("sent").read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(err("the request was already sent".into()));
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A URL without any user information (`https://user:token@host/...` -> `https://host/...`).
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact("https://x-access-token:ghp_secret@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            redact("http://127.0.0.1:9/git/a.git"),
            "http://127.0.0.1:9/git/a.git"
        );
        assert_eq!(redact("https://h"), "https://h");
    }

    #[test]
    fn a_token_goes_to_its_url_only_while_registered() {
        let t = SecretString::from("tok".to_string());
        let inside = with_auth("https://h/o/r.git", Some(&t), || {
            (
                auth_for("https://h/o/r.git"),
                auth_for("https://other/x.git"),
            )
        });
        assert_eq!(inside.0.as_deref(), Some("Basic eC1hY2Nlc3MtdG9rZW46dG9r"));
        assert_eq!(inside.1, None);
        assert_eq!(auth_for("https://h/o/r.git"), None);
    }
}
