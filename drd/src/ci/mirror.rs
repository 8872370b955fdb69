//! `drd mirror`: the workload's source in the store, so CI can fail over while GitHub is down.
//!
//! git2 fetches the repository's branches and tags (`refs/heads/*`, `refs/tags/*`, never
//! `refs/pull/*`) into a local bare cache (`<state dir>/mirror/<stack>.git`, safe to delete at
//! any time). Then, when a ref moved, three things go to the store, in this order:
//! 1. a git bundle (v2) of those refs: the header written here and the pack from libgit2's
//!    `PackBuilder`, streamed to a spool file while hashed (git2 has no bundle writer);
//! 2. a reproducible zip of the deploy branch's tree (CodePipeline's S3 source format: sorted
//!    paths, fixed times, modes 0644/0755), also spooled;
//! 3. the mirror manifest `mirror/manifests/<id>.json` (refs -> SHAs and commit times, the tree,
//!    both blobs), written with `If-None-Match`;
//!
//! and last the pointer `mirror/latest.json` (newest manifest, last successful fetch), moved by
//! compare-and-swap on its ETag. A run killed anywhere before the pointer leaves the previous
//! manifest current and valid; blobs without a manifest are what prune removes. When no ref
//! moved, only the pointer is rewritten (the fetch time is the freshness).

use super::transport;
use crate::error::{ConfigError, Error, Result};
use crate::policy::Policy;
use crate::store::BlobRef;
use crate::store::{Store, Written};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RefEntry {
    pub sha: String,
    /// The commit the ref points to (peeled through an annotated tag), and its time.
    pub commit: String,
    pub commit_time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorManifest {
    pub schema: u32,
    pub id: String,
    pub created_at: String,
    pub fetched_at: String,
    /// `remote URL` (without credentials) or `push --from PATH`.
    pub source: String,
    pub branch: String,
    /// The deploy branch's commit and tree.
    pub head: String,
    pub tree: String,
    pub refs: BTreeMap<String, RefEntry>,
    pub bundle: BlobRef,
    pub zip: BlobRef,
    pub writer: String,
}

/// `mirror/latest.json`: the newest manifest and the last successful fetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    pub manifest: String,
    pub head: String,
    pub fetched_at: String,
}

#[derive(Debug, Serialize)]
pub struct MirrorReport {
    pub manifest: String,
    pub changed: bool,
    pub source: String,
    pub branch: String,
    pub head: String,
    pub refs: usize,
    pub bundle: Option<BlobRef>,
    pub zip: Option<BlobRef>,
    pub objects_written: u64,
    pub fetched_at: String,
    pub duration_ms: u64,
}

pub fn manifest_key(store: &Store, id: &str) -> String {
    format!("{}mirror/manifests/{id}.json", store.prefix)
}

pub fn pointer_key(store: &Store) -> String {
    format!("{}mirror/latest.json", store.prefix)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn git_err(what: &str, e: git2::Error) -> Error {
    Error::failed(format!("{what}: {}", e.message()))
}

/// The `[ci]` section, or a config error saying how to add it.
pub fn ci_policy(policy: &Policy) -> Result<&crate::policy::CiPolicy> {
    policy.ci.as_ref().ok_or_else(|| {
        ConfigError::new(
            policy.path.display().to_string(),
            "no [ci] section: nothing to mirror",
        )
        .field("ci")
        .hint("add [ci] repository = \"https://github.com/OWNER/REPO.git\" and branch = \"main\"")
        .into()
    })
}

/// The token for the repository: `[ci] token_env`, else `[ci] token_secret` (Secrets Manager,
/// primary region); none for a public repository or the lab.
pub async fn token(
    aws: &crate::aws::Aws,
    policy: &Policy,
) -> Result<Option<secrecy::SecretString>> {
    let ci = ci_policy(policy)?;
    if let Some(var) = &ci.token_env {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return Ok(Some(v.into()));
            }
        }
    }
    let Some(name) = &ci.token_secret else {
        return Ok(None);
    };
    let sm = aws.secrets(policy.primary_region()).await;
    let v = sm
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|e| crate::aws::aws_error("secretsmanager", "GetSecretValue", e))?;
    Ok(v.secret_string().map(|s| s.to_string().into()))
}

/// The refs mirrored: branches and tags, name -> (target, peeled commit, commit time).
pub fn refs_of(repo: &git2::Repository) -> Result<BTreeMap<String, RefEntry>> {
    let mut out = BTreeMap::new();
    for r in repo.references().map_err(|e| git_err("listing refs", e))? {
        let r = r.map_err(|e| git_err("reading a ref", e))?;
        let Some(name) = r.name() else { continue };
        if !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) {
            continue;
        }
        let Some(target) = r.target() else { continue };
        // A tag may point at a tree or a blob (no commit, no time): `commit` is then what it
        // peels to, and the time is empty.
        let entry = match r.peel_to_commit() {
            Ok(commit) => {
                let t = commit.time();
                let when = SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(t.seconds().max(0) as u64);
                RefEntry {
                    sha: target.to_string(),
                    commit: commit.id().to_string(),
                    commit_time: humantime::format_rfc3339_seconds(when).to_string(),
                }
            }
            Err(_) => {
                let peeled = r
                    .peel(git2::ObjectType::Any)
                    .map_err(|e| git_err(&format!("peeling {name}"), e))?;
                RefEntry {
                    sha: target.to_string(),
                    commit: peeled.id().to_string(),
                    commit_time: String::new(),
                }
            }
        };
        out.insert(name.to_string(), entry);
    }
    Ok(out)
}

/// The bare cache repository, created when missing (it is safe to delete at any time).
pub fn open_cache(cache: &Path) -> Result<git2::Repository> {
    if let Ok(r) = git2::Repository::open_bare(cache) {
        return Ok(r);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| Error::io(format!("creating {}", cache.display()), e))?;
    git2::Repository::init_bare(cache).map_err(|e| git_err("creating the mirror cache", e))
}

/// Fetch branches and tags from `url` into the bare cache (created when missing), pruning refs
/// the remote deleted.
pub fn fetch(
    cache: &Path,
    url: &str,
    token: Option<&secrecy::SecretString>,
) -> Result<git2::Repository> {
    transport::register();
    let repo = open_cache(cache)?;
    transport::with_auth(url, token, || {
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| git_err("the repository URL", e))?;
        let mut opts = git2::FetchOptions::new();
        opts.prune(git2::FetchPrune::On)
            .download_tags(git2::AutotagOption::None);
        remote
            .fetch(
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                Some(&mut opts),
                None,
            )
            .map_err(|e| {
                Error::failed_hint(
                    format!("fetching {}: {}", transport::redact(url), e.message()),
                    "the last mirror stays current; drd mirror push --from CLONE takes commits while the remote is down",
                )
            })
    })?;
    Ok(repo)
}

/// Count commits the remote's deploy branch has that `mirrored` does not (the cache is
/// fetched into a scratch ref, not into the mirrored refs). `None` when the remote cannot be
/// asked.
pub fn commits_behind(
    cache: &Path,
    url: &str,
    token: Option<&secrecy::SecretString>,
    branch: &str,
    mirrored: &str,
) -> Option<u64> {
    transport::register();
    let repo = open_cache(cache).ok()?;
    transport::with_auth(url, token, || {
        let mut remote = repo.remote_anonymous(url).ok()?;
        let spec = format!("+refs/heads/{branch}:refs/drd/remote-head");
        remote.fetch(&[spec.as_str()], None, None).ok()?;
        let theirs = repo.refname_to_id("refs/drd/remote-head").ok()?;
        let ours = git2::Oid::from_str(mirrored).ok()?;
        if repo.find_commit(ours).is_err() {
            return None;
        }
        repo.graph_ahead_behind(theirs, ours)
            .ok()
            .map(|(ahead, _)| ahead as u64)
    })
}

/// Write a v2 bundle of `refs` (and HEAD at the deploy branch) to `out`; returns bytes written.
fn write_bundle(
    repo: &git2::Repository,
    refs: &BTreeMap<String, RefEntry>,
    head: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("writing the bundle", e);
    out.write_all(b"# v2 git bundle\n").map_err(io)?;
    for (name, r) in refs {
        writeln!(out, "{} {name}", r.sha).map_err(io)?;
    }
    writeln!(out, "{head} HEAD").map_err(io)?;
    out.write_all(b"\n").map_err(io)?;
    bound_pack_memory(repo)?;
    let mut pb = repo.packbuilder().map_err(|e| git_err("pack", e))?;
    // Delta search on every core (0: as many threads as the machine has).
    pb.set_threads(0);
    let mut walk = repo.revwalk().map_err(|e| git_err("revwalk", e))?;
    for (name, r) in refs {
        let sha = git2::Oid::from_str(&r.sha).map_err(|e| git_err(name, e))?;
        // Annotated tags (of tags, ...): every tag object of the chain, then what it names.
        let mut obj = repo.find_object(sha, None).map_err(|e| git_err(name, e))?;
        while let Some(tag) = obj.as_tag() {
            pb.insert_object(tag.id(), None)
                .map_err(|e| git_err(name, e))?;
            obj = tag.target().map_err(|e| git_err(name, e))?;
        }
        if obj.kind() == Some(git2::ObjectType::Commit) {
            walk.push(obj.id()).map_err(|e| git_err(name, e))?;
        } else {
            // A tag of a tree or a blob.
            pb.insert_recursive(obj.id(), None)
                .map_err(|e| git_err(name, e))?;
        }
    }
    pb.insert_walk(&mut walk).map_err(|e| git_err("pack", e))?;
    let mut failed = None;
    pb.foreach(|chunk| match out.write_all(chunk) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })
    .map_err(|e| git_err("pack", e))?;
    if let Some(e) = failed {
        return Err(io(e));
    }
    Ok(())
}

/// libgit2's pack builder caches deltas up to 256 MiB and gives its delta window unlimited
/// memory by default; the mirror's own cache repository is told to stay small, so a big
/// repository's bundle costs tens of megabytes, not its size.
fn bound_pack_memory(repo: &git2::Repository) -> Result<()> {
    let mut c = repo
        .config()
        .map_err(|e| git_err("the cache's config", e))?;
    for (k, v) in [
        ("pack.deltaCacheSize", 8i64 << 20),
        ("pack.windowMemory", 32 << 20),
    ] {
        c.set_i64(k, v).map_err(|e| git_err(k, e))?;
    }
    Ok(())
}

/// A writer that hashes and counts what passes through to a file.
struct Hashing {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    size: u64,
}

impl Write for Hashing {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(b)?;
        self.hash.update(&b[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn spool(what: &str) -> Result<(Hashing, tempfile::TempPath)> {
    let t = tempfile::Builder::new()
        .prefix(&format!("drd-{what}-"))
        .tempfile()
        .map_err(|e| Error::io(format!("a spool file for the {what}"), e))?;
    let (f, path) = t.into_parts();
    Ok((
        Hashing {
            file: std::io::BufWriter::new(f),
            hash: Sha256::new(),
            size: 0,
        },
        path,
    ))
}

/// The zip of `tree`: every blob under it, sorted by path, stored with the 1980-01-01 time zip
/// uses as its epoch and mode 0755 or 0644 (symlinks as symlinks); submodules are left out.
pub fn write_zip(
    repo: &git2::Repository,
    tree: &git2::Tree<'_>,
    out: impl Write + std::io::Seek,
) -> Result<()> {
    let mut entries: Vec<(String, git2::Oid, i32)> = vec![];
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        if e.kind() == Some(git2::ObjectType::Blob) {
            entries.push((
                format!("{dir}{}", e.name().unwrap_or("")),
                e.id(),
                e.filemode(),
            ));
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| git_err("walking the tree", e))?;
    entries.sort();
    let mut z = zip::ZipWriter::new(out);
    let zerr = |e: zip::result::ZipError| Error::failed(format!("writing the source zip: {e}"));
    for (path, oid, mode) in entries {
        let blob = repo.find_blob(oid).map_err(|e| git_err(&path, e))?;
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default());
        if mode == 0o120000 {
            let target = String::from_utf8_lossy(blob.content()).to_string();
            z.add_symlink(path, target, opts.unix_permissions(0o777))
                .map_err(zerr)?;
            continue;
        }
        let perms = if mode == 0o100755 { 0o755 } else { 0o644 };
        z.start_file(path, opts.unix_permissions(perms))
            .map_err(zerr)?;
        z.write_all(blob.content())
            .map_err(|e| Error::io("writing the source zip", e))?;
    }
    let mut w = z.finish().map_err(zerr)?;
    // A buffered writer only reports a failed write (a full disk) when flushed: a truncated
    // zip must never be hashed and stored.
    w.flush()
        .map_err(|e| Error::io("writing the source zip", e))?;
    Ok(())
}

/// What one mirror run produced locally (before any store write).
pub struct Built {
    pub refs: BTreeMap<String, RefEntry>,
    pub head: String,
    pub tree: String,
    pub bundle: (tempfile::TempPath, String, u64),
    pub zip: (tempfile::TempPath, String, u64),
}

/// The bundle and the zip of the cache's refs, with `branch` as the deploy branch.
pub fn build(repo: &git2::Repository, branch: &str) -> Result<Built> {
    let refs = refs_of(repo)?;
    let head_ref = format!("refs/heads/{branch}");
    let Some(head) = refs.get(&head_ref).map(|r| r.commit.clone()) else {
        return Err(Error::failed_hint(
            format!("the repository has no branch {branch}"),
            "set [ci] branch to the branch CI deploys",
        ));
    };
    let commit = repo
        .find_commit(git2::Oid::from_str(&head).map_err(|e| git_err(&head, e))?)
        .map_err(|e| git_err(&head, e))?;
    let tree = commit.tree().map_err(|e| git_err("the head's tree", e))?;
    let (mut b, bpath) = spool("bundle")?;
    write_bundle(repo, &refs, &head, &mut b)?;
    b.flush().map_err(|e| Error::io("writing the bundle", e))?;
    let bundle = (bpath, hex::encode(b.hash.clone().finalize()), b.size);
    // The zip needs Seek: write it to its file, then hash the file.
    let zpath = tempfile::Builder::new()
        .prefix("drd-zip-")
        .tempfile()
        .map_err(|e| Error::io("a spool file for the zip", e))?
        .into_temp_path();
    {
        let f = std::fs::File::create(&zpath).map_err(|e| Error::io("the zip spool", e))?;
        write_zip(repo, &tree, std::io::BufWriter::new(f))?;
    }
    let (zhash, zsize) = hash_file(&zpath)?;
    Ok(Built {
        head,
        tree: tree.id().to_string(),
        refs,
        bundle,
        zip: (zpath, zhash, zsize),
    })
}

pub fn hash_file(p: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p.display().to_string(), e))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| Error::io(p.display().to_string(), e))?;
    Ok((hex::encode(h.finalize()), n))
}

/// The pointer and the manifest it names; `None` before the first mirror.
pub async fn newest(store: &Store) -> Result<Option<(Pointer, MirrorManifest, String)>> {
    let Some((b, etag)) = store.get_versioned(&pointer_key(store)).await? else {
        return Ok(None);
    };
    let p: Pointer = serde_json::from_slice(&b)
        .map_err(|e| Error::failed(format!("{} is unreadable: {e}", pointer_key(store))))?;
    let key = manifest_key(store, &p.manifest);
    let m = store
        .get(&key)
        .await?
        .ok_or_else(|| Error::failed(format!("{key}, named by the mirror pointer, is missing")))?;
    // The schema first: a newer manifest is refused as newer, not as unreadable.
    let schema = serde_json::from_slice::<serde_json::Value>(&m)
        .ok()
        .and_then(|v| v.get("schema").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    if schema > u64::from(MANIFEST_SCHEMA) {
        return Err(Error::failed_hint(
            format!("{key} has mirror schema {schema}; this drd reads up to {MANIFEST_SCHEMA}"),
            "install a newer drd",
        ));
    }
    let m: MirrorManifest = serde_json::from_slice(&m)
        .map_err(|e| Error::failed(format!("{key} is unreadable: {e}")))?;
    if m.schema > MANIFEST_SCHEMA {
        return Err(Error::failed_hint(
            format!(
                "{key} has schema {} (written by {}); this drd reads up to {MANIFEST_SCHEMA}",
                m.schema, m.writer
            ),
            "install a newer drd",
        ));
    }
    Ok(Some((p, m, etag)))
}

/// Store what `build` made (blobs, manifest) and move the pointer; or, when the refs equal the
/// newest manifest's, only record the fetch time.
pub async fn store_built(
    store: &Store,
    built: Option<Built>,
    refs_now: &BTreeMap<String, RefEntry>,
    branch: &str,
    source: String,
    fetched_at: String,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<MirrorReport> {
    // Nothing new to upload: only the pointer moves (a compare-and-swap prune never touches),
    // without holding the store lease a backup may be waiting for.
    if built.is_none() {
        return write_built(store, built, refs_now, branch, source, fetched_at).await;
    }
    // Under the store lease, as a backup writes: prune (which holds it too) never sees a
    // bundle uploaded but not yet named by its manifest, and never deletes it.
    let mut lease = crate::store::lease::Lease::acquire_waiting(
        store,
        crate::backup::STORE_LEASE,
        "drd mirror",
        crate::backup::LEASE_TTL,
        std::time::Duration::from_secs(300),
        progress,
    )
    .await?;
    let work = write_built(store, built, refs_now, branch, source, fetched_at);
    let r = match lease.guard(work).await {
        Ok(r) => r,
        Err(lost) => Err(Error::failed_hint(
            format!(
                "the mirror stopped: the store lease {} was lost ({}); the previous mirror stays current",
                lost.key, lost.why
            ),
            "run drd mirror again",
        )),
    };
    let _ = lease.release().await;
    r
}

async fn write_built(
    store: &Store,
    built: Option<Built>,
    refs_now: &BTreeMap<String, RefEntry>,
    branch: &str,
    source: String,
    fetched_at: String,
) -> Result<MirrorReport> {
    let started = std::time::Instant::now();
    let prev = newest(store).await?;
    let unchanged = prev
        .as_ref()
        .is_some_and(|(_, m, _)| &m.refs == refs_now && m.branch == branch);
    let mut written = 0u64;
    let fresh = match built {
        Some(b) if !unchanged => Some(b),
        _ => None,
    };
    let (manifest, report_blobs) = if let Some(b) = fresh {
        let put = |path: &tempfile::TempPath, hex: &str, size: u64| {
            let key = store.blob_key(hex);
            let path: PathBuf = path.to_path_buf();
            async move {
                if store.exists(&key).await? {
                    return Ok::<bool, Error>(false);
                }
                Ok(store.put_new_file(&key, &path, size).await? == Written::New)
            }
        };
        written += u64::from(put(&b.bundle.0, &b.bundle.1, b.bundle.2).await?);
        written += u64::from(put(&b.zip.0, &b.zip.1, b.zip.2).await?);
        let id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
            &b.head[..8]
        );
        let m = MirrorManifest {
            schema: MANIFEST_SCHEMA,
            id: id.clone(),
            created_at: now_rfc3339(),
            fetched_at: fetched_at.clone(),
            source: source.clone(),
            branch: branch.to_string(),
            head: b.head.clone(),
            tree: b.tree.clone(),
            refs: b.refs.clone(),
            bundle: BlobRef {
                sha256: b.bundle.1.clone(),
                size: b.bundle.2,
            },
            zip: BlobRef {
                sha256: b.zip.1.clone(),
                size: b.zip.2,
            },
            writer: format!("drd {}", env!("CARGO_PKG_VERSION")),
        };
        let body = serde_json::to_vec_pretty(&m).expect("manifest serializes");
        if store.put_new(&manifest_key(store, &id), &body).await? == Written::New {
            written += 1;
        }
        (m.clone(), Some((m.bundle.clone(), m.zip.clone())))
    } else {
        let (_, m, _) = prev
            .clone()
            .ok_or_else(|| Error::failed("nothing to store"))?;
        (m, None)
    };
    // Last: the pointer, by compare-and-swap on what was read (retried when another mirror
    // moved it in between, unless that one fetched later).
    let pointer = Pointer {
        manifest: manifest.id.clone(),
        head: manifest.head.clone(),
        fetched_at: fetched_at.clone(),
    };
    let body = serde_json::to_vec_pretty(&pointer).expect("pointer serializes");
    let mut etag = prev.as_ref().map(|(_, _, e)| e.clone());
    let mut moved = false;
    for _ in 0..10 {
        if store
            .put_if(&pointer_key(store), &body, etag.as_deref())
            .await?
            .is_some()
        {
            written += 1;
            moved = true;
            break;
        }
        // Another mirror moved the pointer in between. It only ever moves forward (by fetch
        // time): a run whose fetch is not newer leaves it where it is.
        match newest(store).await? {
            Some((p, _, _)) if p.fetched_at >= fetched_at => {
                return Err(Error::failed_hint(
                    format!(
                        "another mirror moved {} to {} (fetched {}) while this one ran; it stays",
                        pointer_key(store),
                        p.manifest,
                        p.fetched_at
                    ),
                    "nothing to do: the newer mirror is current (drd status shows it)",
                ));
            }
            Some((_, _, e)) => etag = Some(e),
            None => etag = None,
        }
    }
    if !moved {
        return Err(Error::failed(format!(
            "{} kept changing under ten attempts to move it; run drd mirror again",
            pointer_key(store)
        )));
    }
    Ok(MirrorReport {
        manifest: manifest.id.clone(),
        changed: report_blobs.is_some(),
        source,
        branch: branch.to_string(),
        head: manifest.head.clone(),
        refs: manifest.refs.len(),
        bundle: report_blobs.as_ref().map(|b| b.0.clone()),
        zip: report_blobs.map(|b| b.1),
        objects_written: written,
        fetched_at,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
