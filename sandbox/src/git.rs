//! The lab's git remote: one bare repository (`speaker-role/classifier`), seeded with the
//! workload's sources at `up`, served over smart HTTP by the real `git http-backend` CGI, and read
//! by the GitHub stub with the git CLI (`ls-tree`, `cat-file`, `rev-parse`).
//!
//! Every git command runs with no system or user configuration (`GIT_CONFIG_NOSYSTEM`,
//! `GIT_CONFIG_GLOBAL=/dev/null`), so the seed commit's SHA depends only on the seed's files:
//! author, committer, dates and message are fixed.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The lab repository's `owner/name`.
pub const REPOSITORY: &str = "speaker-role/classifier";
/// The seed commit's author and committer.
pub const SEED_NAME: &str = "drd lab";
pub const SEED_EMAIL: &str = "lab@drd.invalid";
/// The seed commit's author and committer date: fixed, so the SHA is reproducible.
pub const SEED_DATE: &str = "2026-01-01T00:00:00Z";
const SEED_MESSAGE: &str = "Seed the lab repository with the workload's sources";
/// CGI response headers larger than this are refused (git sends a handful of short lines).
const MAX_CGI_HEAD: usize = 64 * 1024;

/// The bare repository's directory under the sandbox directory.
pub fn repo_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("git").join(format!("{REPOSITORY}.git"))
}

/// `git` with no system or user configuration, no prompts, and nothing inherited that could
/// point it at another repository.
pub fn git() -> tokio::process::Command {
    let mut c = tokio::process::Command::new("git");
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_NAMESPACE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

/// A parsed CGI response head: the status (from `Status:`, else 302 with `Location:`, else
/// 200), the other header lines, and where the body starts in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct CgiHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_start: usize,
}

/// Parse the head of a CGI response (RFC 3875 section 6: header lines, then a blank line; lines
/// end with LF or CRLF). `Ok(None)`: the blank line has not arrived yet.
pub fn parse_cgi_head(buf: &[u8]) -> Result<Option<CgiHead>, String> {
    let mut start = 0;
    let mut headers = vec![];
    let mut status = None;
    loop {
        let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') else {
            return Ok(None);
        };
        let line = &buf[start..start + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += nl + 1;
        if line.is_empty() {
            break;
        }
        let line =
            std::str::from_utf8(line).map_err(|_| "a CGI header line is not UTF-8".to_string())?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a CGI header line: {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(format!("not a CGI header name: {name:?}"));
        }
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("not a CGI status: {value:?}"))?;
            status = Some(code);
        } else {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    let redirect = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("location"));
    Ok(Some(CgiHead {
        status: status.unwrap_or(if redirect { 302 } else { 200 }),
        headers,
        body_start: start,
    }))
}

/// One smart-HTTP request handed to `git http-backend`: `path_info` is the path below the
/// project root (`/speaker-role/classifier.git/info/refs`). The request body streams into the
/// CGI's stdin (compressed bodies stay compressed: the CGI reads `HTTP_CONTENT_ENCODING`) and
/// its stdout streams back after the head.
pub async fn http_backend(
    project_root: &Path,
    path_info: &str,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    remote_addr: &str,
    body: Body,
) -> Response {
    let mut cmd = git();
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("PATH_INFO", path_info)
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "drd-lab")
        .env("REMOTE_ADDR", remote_addr);
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        cmd.env_remove(var);
        if let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) {
            cmd.env(var, v);
        }
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        // The CGI's complaints go to the host's log.
        .stderr(std::process::Stdio::inherit());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("git http-backend: {e}")),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    // Feed the body while the head is read: the CGI may answer before it has read everything.
    tokio::spawn(async move {
        let mut body = body;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        // Dropping stdin closes it: end of the request body.
    });
    let mut buf = Vec::with_capacity(8192);
    let head = loop {
        match parse_cgi_head(&buf) {
            Ok(Some(h)) => break h,
            Ok(None) if buf.len() > MAX_CGI_HEAD => {
                return plain(StatusCode::BAD_GATEWAY, "git http-backend: head too large")
            }
            Ok(None) => {}
            Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("git http-backend: {e}")),
        }
        let mut chunk = [0u8; 8192];
        match stdout.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = child.wait().await;
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "git http-backend ended before its response head",
                );
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let first = Bytes::copy_from_slice(&buf[head.body_start..]);
    let stream = futures::stream::unfold(
        (Some(first), stdout, Some(child)),
        |(first, mut stdout, mut child)| async move {
            if let Some(first) = first.filter(|f| !f.is_empty()) {
                return Some((Ok(first), (None, stdout, child)));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match stdout.read(&mut chunk).await {
                Ok(0) => {
                    if let Some(mut c) = child.take() {
                        let _ = c.wait().await;
                    }
                    None
                }
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok(Bytes::from(chunk)), (None, stdout, child)))
                }
                Err(e) => Some((Err(e), (None, stdout, None))),
            }
        },
    );
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in head.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// A branch or tag a ref name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `refs/heads/main` or `refs/tags/v1`.
    pub full: String,
    /// `main` or `v1`.
    pub name: String,
    /// The commit it points to (tags peeled).
    pub sha: String,
}

/// The lab's bare repository, read and written with the git CLI.
#[derive(Debug, Clone)]
pub struct Repo {
    pub git_dir: PathBuf,
}

impl Repo {
    pub fn new(git_dir: PathBuf) -> Self {
        Self {
            git_dir: absolute(&git_dir),
        }
    }

    fn cmd(&self) -> tokio::process::Command {
        let mut c = git();
        c.arg("--git-dir").arg(&self.git_dir);
        c
    }

    /// Run git on the repository; its stdout, or its stderr as the error.
    async fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Result<String, String> {
        let out = self
            .cmd()
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .await
            .map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "git {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Create the bare repository with `main` as its default branch and pushes allowed over
    /// HTTP (`http.receivepack`).
    pub async fn init(git_dir: PathBuf) -> Result<Self, String> {
        let parent = git_dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let out = git()
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&git_dir)
            .output()
            .await
            .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "git init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let repo = Self::new(git_dir);
        repo.run(&["config", "http.receivepack", "true"], &[])
            .await?;
        Ok(repo)
    }

    /// Commit a copy of `src` (without `target/` at its top, any `.git`, the files its
    /// `.gitignore` files ignore, and the directory
    /// `skip`: the sandbox's own, should it be inside `src`) as the one commit of `main`, with
    /// the fixed identity and dates; `scratch` is an empty directory to work in. Returns the
    /// commit's SHA.
    pub async fn seed(&self, src: &Path, scratch: &Path, skip: &Path) -> Result<String, String> {
        // Absolute: git reads GIT_INDEX_FILE relative to the work tree.
        let tree_dir = absolute(scratch).join("tree");
        let skip = std::fs::canonicalize(skip).unwrap_or_else(|_| absolute(skip));
        copy_tree(src, &tree_dir, true, &skip)
            .map_err(|e| format!("cannot copy {}: {e}", src.display()))?;
        let index = absolute(scratch).join("index");
        let index = index.to_string_lossy();
        let idx = [("GIT_INDEX_FILE", index.as_ref())];
        let work_tree = tree_dir.to_string_lossy();
        self.run(
            &["--work-tree", work_tree.as_ref(), "add", "--all", "."],
            &idx,
        )
        .await?;
        let tree = self.run(&["write-tree"], &idx).await?;
        let identity = [
            ("GIT_AUTHOR_NAME", SEED_NAME),
            ("GIT_AUTHOR_EMAIL", SEED_EMAIL),
            ("GIT_AUTHOR_DATE", SEED_DATE),
            ("GIT_COMMITTER_NAME", SEED_NAME),
            ("GIT_COMMITTER_EMAIL", SEED_EMAIL),
            ("GIT_COMMITTER_DATE", SEED_DATE),
        ];
        let commit = self
            .run(&["commit-tree", tree.trim(), "-m", SEED_MESSAGE], &identity)
            .await?;
        let commit = commit.trim().to_string();
        self.run(&["update-ref", "refs/heads/main", &commit], &[])
            .await?;
        Ok(commit)
    }

    /// The default branch (what `HEAD` names) and its commit; `None` while it has no commit.
    pub async fn default_branch(&self) -> Option<Resolved> {
        let name = self
            .run(&["symbolic-ref", "--short", "HEAD"], &[])
            .await
            .ok()?;
        self.resolve(name.trim()).await
    }

    /// A branch or tag name (`main`, `v1`, `refs/heads/main`, `refs/tags/v1`) as the lab
    /// repository has it; `None` when there is no such branch or tag. Branches win over tags of
    /// the same name. Commit SHAs and revision expressions (`main~1`) are not refs.
    pub async fn resolve(&self, r: &str) -> Option<Resolved> {
        if !is_ref_name(r) {
            return None;
        }
        let candidates: Vec<String> = if r.starts_with("refs/heads/") || r.starts_with("refs/tags/")
        {
            vec![r.to_string()]
        } else {
            vec![format!("refs/heads/{r}"), format!("refs/tags/{r}")]
        };
        for full in candidates {
            let peeled = format!("{full}^{{commit}}");
            let args = [
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &peeled,
            ];
            if let Ok(sha) = self.run(&args, &[]).await {
                let name = full
                    .strip_prefix("refs/heads/")
                    .or_else(|| full.strip_prefix("refs/tags/"))
                    .unwrap_or(&full)
                    .to_string();
                return Some(Resolved {
                    full,
                    name,
                    sha: sha.trim().to_string(),
                });
            }
        }
        None
    }

    /// The workflow files (`.github/workflows/*.yml`, `*.yaml`) of a commit, sorted.
    pub async fn workflow_files(&self, sha: &str) -> Vec<String> {
        let out = self
            .run(&["ls-tree", "--name-only", sha, ".github/workflows/"], &[])
            .await
            .unwrap_or_default();
        let mut files: Vec<String> = out
            .lines()
            .filter(|l| l.ends_with(".yml") || l.ends_with(".yaml"))
            .map(str::to_string)
            .collect();
        files.sort();
        files
    }

    /// A file's text at a commit.
    pub async fn show(&self, sha: &str, path: &str) -> Option<String> {
        self.run(&["cat-file", "blob", &format!("{sha}:{path}")], &[])
            .await
            .ok()
    }

    /// When a file was added and last changed in the history of a commit (committer dates,
    /// RFC 3339).
    pub async fn dates(&self, sha: &str, path: &str) -> Option<(String, String)> {
        let out = self
            .run(&["log", "--format=%cI", sha, "--", path], &[])
            .await
            .ok()?;
        let mut lines = out.lines();
        let updated = lines.next()?.to_string();
        let created = lines.last().map(str::to_string).unwrap_or(updated.clone());
        Some((created, updated))
    }

    /// Write a commit's files into `dest` (created), keeping the index in `index`.
    pub async fn checkout(&self, sha: &str, dest: &Path, index: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let (dest, index) = (absolute(dest), absolute(index));
        let (dest, index) = (dest.to_string_lossy(), index.to_string_lossy());
        self.run(
            &[
                "--work-tree",
                dest.as_ref(),
                "checkout",
                "--force",
                sha,
                "--",
                ".",
            ],
            &[("GIT_INDEX_FILE", index.as_ref())],
        )
        .await
        .map(|_| ())
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A branch or tag name git would accept (`git check-ref-format`), with no revision syntax.
fn is_ref_name(r: &str) -> bool {
    !r.is_empty()
        && r.len() < 256
        && !r.starts_with(['-', '/'])
        && !r.ends_with(['/', '.'])
        && !r.ends_with(".lock")
        && !r.contains("..")
        && !r.contains("@{")
        && !r.contains("//")
        && r.bytes()
            .all(|b| b > b' ' && b != 0x7f && !b"~^:?*[\\".contains(&b))
}

/// Copy a directory tree (files, executable bits, symbolic links); skips `.git` everywhere,
/// `target` at the top, and the directory `skip`.
fn copy_tree(src: &Path, dest: &Path, top: bool, skip: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || (top && name == "target") {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if kind.is_dir() {
            if std::fs::canonicalize(&from).is_ok_and(|c| c == skip) {
                continue;
            }
            copy_tree(&from, &to, false, skip)?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgi_heads_with_lf_or_crlf_and_a_status() {
        let raw = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nno";
        let h = parse_cgi_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 403);
        assert_eq!(
            h.headers,
            vec![("Content-Type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(&raw[h.body_start..], b"no");
        let body = b"Expires: Fri, 01 Jan 1980 00:00:00 GMT\nPragma: no-cache\n\n001e# service";
        let h = parse_cgi_head(body).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[0].1, "Fri, 01 Jan 1980 00:00:00 GMT");
        assert_eq!(&body[h.body_start..], b"001e# service");
    }

    #[test]
    fn a_cgi_head_is_incomplete_until_its_blank_line() {
        assert_eq!(parse_cgi_head(b"").unwrap(), None);
        assert_eq!(
            parse_cgi_head(b"Content-Type: text/plain\r\n").unwrap(),
            None
        );
        assert_eq!(parse_cgi_head(b"Content-Type: text/pl").unwrap(), None);
        // A head with no header lines at all.
        let h = parse_cgi_head(b"\r\nbody").unwrap().unwrap();
        assert_eq!((h.status, h.body_start), (200, 2));
    }

    #[test]
    fn location_without_status_redirects_and_bad_heads_are_errors() {
        let h = parse_cgi_head(b"Location: /x\n\n").unwrap().unwrap();
        assert_eq!(h.status, 302);
        assert!(parse_cgi_head(b"Status: soon\n\n").is_err());
        assert!(parse_cgi_head(b"Status: 99 Too Low\n\n").is_err());
        assert!(parse_cgi_head(b"no colon here\n\n").is_err());
        assert!(parse_cgi_head(b"Bad Name: x\n\n").is_err());
        assert!(parse_cgi_head(b"X: \xff\n\n").is_err());
        // Case-insensitive `Status`, value padding trimmed.
        let h = parse_cgi_head(b"status:   404 Not Found  \n\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 404);
    }

    #[test]
    fn ref_names_exclude_revision_syntax() {
        for ok in [
            "main",
            "v1.2",
            "refs/heads/main",
            "feature/x",
            "refs/tags/v1",
        ] {
            assert!(is_ref_name(ok), "{ok}");
        }
        for bad in [
            "", "main~1", "main^", "HEAD@{1}", "a..b", "-x", "a b", "x:y", "a/", "x.lock", "/a",
        ] {
            assert!(!is_ref_name(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn seeds_reproducibly_and_resolves_branches_and_tags() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join(".github/workflows")).unwrap();
        std::fs::create_dir_all(src.join("target/debug")).unwrap();
        std::fs::create_dir_all(src.join(".git")).unwrap();
        std::fs::write(
            src.join("Cargo.toml"),
            "[package]\nversion.workspace = true\n",
        )
        .unwrap();
        std::fs::write(src.join(".github/workflows/deploy.yml"), "on: push\n").unwrap();
        std::fs::write(src.join("target/debug/big"), "skipped").unwrap();
        std::fs::write(src.join(".git/HEAD"), "skipped").unwrap();
        let mut shas = vec![];
        for n in 0..2 {
            let repo = Repo::init(t.path().join(format!("r{n}/x.git")))
                .await
                .unwrap();
            // The sandbox's own directory inside the seed (token, logs) is left out.
            let sandbox = src.join(format!(".drd/sandbox{n}"));
            let scratch = sandbox.join("seed");
            std::fs::create_dir_all(&scratch).unwrap();
            std::fs::write(sandbox.join("github-token"), "ghp_secret").unwrap();
            shas.push(repo.seed(&src, &scratch, &sandbox).await.unwrap());
            assert_eq!(
                repo.workflow_files(&shas[n]).await,
                vec![".github/workflows/deploy.yml"]
            );
            let files = repo
                .run(&["ls-tree", "-r", "--name-only", "main"], &[])
                .await
                .unwrap();
            assert_eq!(files, ".github/workflows/deploy.yml\nCargo.toml\n");
            let main = repo.default_branch().await.unwrap();
            assert_eq!(
                (main.full.as_str(), main.sha.as_str()),
                ("refs/heads/main", shas[n].as_str())
            );
            repo.run(
                &["tag", "-a", "v1", "-m", "v1", "main"],
                &[("GIT_COMMITTER_NAME", "t"), ("GIT_COMMITTER_EMAIL", "t@t")],
            )
            .await
            .unwrap();
            let tag = repo.resolve("v1").await.unwrap();
            assert_eq!(
                (tag.full.as_str(), tag.sha.as_str()),
                ("refs/tags/v1", shas[n].as_str())
            );
            assert!(repo.resolve("nope").await.is_none());
            assert!(repo.resolve(&shas[n]).await.is_none(), "a SHA is not a ref");
            let (created, updated) = repo
                .dates("main", ".github/workflows/deploy.yml")
                .await
                .unwrap();
            assert_eq!(
                (created.as_str(), updated.as_str()),
                ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
            );
            std::fs::remove_dir_all(src.join(".drd")).unwrap();
        }
        assert_eq!(shas[0], shas[1], "the seed commit is reproducible");
    }
}
