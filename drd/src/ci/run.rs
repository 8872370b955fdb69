//! The mirror's commands: fetch from the remote (`drd mirror`), take a developer's clone while
//! the remote is down (`drd mirror push --from`), check the stored blobs (`verify --mirror`),
//! and say how fresh the mirror is (`drd status`, the daemon's gauges).

use super::mirror::{self, MirrorManifest, MirrorReport};
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::Store;
use std::path::{Path, PathBuf};

/// The bare cache of one stack's repository under `cache_root`.
pub fn cache_dir(cache_root: &Path, policy: &Policy) -> PathBuf {
    cache_root.join(format!("{}.git", policy.stack_name()))
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::failed(format!("the git task failed: {e}")))?
}

/// `drd mirror`: fetch, then store what changed.
pub async fn mirror(
    aws: &Aws,
    policy: &Policy,
    cache_root: &Path,
    force: bool,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<MirrorReport> {
    let ci = mirror::ci_policy(policy)?;
    let (url, branch) = (ci.repository_url(), ci.branch.clone());
    let token = mirror::token(aws, policy).await?;
    check_url(&url, token.is_some())?;
    let store = crate::store::open_store(aws, policy).await?;
    let cache = cache_dir(cache_root, policy);
    let fetched_at = now();
    // The mirrored head before this fetch: a head taken with `push --from` during an outage
    // must not be replaced by a remote that does not contain it yet.
    let before = mirror::newest(&store)
        .await?
        .filter(|(_, m, _)| m.branch == branch)
        .map(|(_, m, _)| (m.head, m.source));
    progress(&format!("fetching {}", super::transport::redact(&url)));
    let (c, u, b) = (cache.clone(), url.clone(), branch.clone());
    let refs = blocking(move || {
        let repo = mirror::fetch(&c, &u, token.as_ref())?;
        let refs = mirror::refs_of(&repo)?;
        if let (Some((old, source)), Some(new)) = (&before, refs.get(&format!("refs/heads/{b}"))) {
            let contains = *old == new.commit
                || matches!(
                    (git2::Oid::from_str(&new.commit), git2::Oid::from_str(old)),
                    (Ok(n), Ok(o)) if repo.graph_descendant_of(n, o).unwrap_or(false)
                );
            if !contains && !force {
                return Err(Error::failed_hint(
                    format!(
                        "the remote's {b} ({}) does not contain the mirrored head {old} (from {source}): the mirror stays as it is",
                        new.commit
                    ),
                    "push the mirrored commits to the remote first (git push from that clone), or pass --force to mirror the remote as it is",
                ));
            }
        }
        Ok(refs)
    })
    .await?;
    progress(&format!("{} branch(es) and tag(s)", refs.len()));
    let source = format!("remote {}", super::transport::redact(&url));
    let prev = mirror::newest(&store).await?;
    let unchanged = prev
        .as_ref()
        .is_some_and(|(_, m, _)| m.refs == refs && m.branch == branch);
    let built = if unchanged {
        progress("no ref moved: only the fetch time is recorded");
        None
    } else {
        let (c, b) = (cache.clone(), branch.clone());
        Some(
            blocking(move || {
                let repo = git2::Repository::open_bare(&c)
                    .map_err(|e| Error::failed(format!("the mirror cache: {}", e.message())))?;
                mirror::build(&repo, &b)
            })
            .await?,
        )
    };
    mirror::store_built(&store, built, &refs, &branch, source, fetched_at, progress).await
}

/// `drd mirror push --from CLONE`: the clone's deploy branch becomes the mirrored head (the
/// other refs stay as mirrored), refused when its history does not contain the mirrored head
/// unless `force`.
pub async fn push_from(
    aws: &Aws,
    policy: &Policy,
    cache_root: &Path,
    clone: &Path,
    force: bool,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<MirrorReport> {
    let ci = mirror::ci_policy(policy)?;
    let branch = ci.branch.clone();
    let store = crate::store::open_store(aws, policy).await?;
    let cache = cache_dir(cache_root, policy);
    let prev = mirror::newest(&store).await?;
    // The cache holds the mirrored refs; rebuilt from the newest bundle when it was deleted.
    if let Some((_, m, _)) = &prev {
        let (c, m2) = (cache.clone(), m.clone());
        let complete = blocking(move || Ok(cache_has(&c, &m2))).await?;
        if !complete {
            progress(
                "the mirror cache is missing or incomplete: rebuilding it from the newest bundle",
            );
            restore_cache(&store, m, &cache).await?;
        }
    }
    let mirrored = prev.as_ref().map(|(_, m, _)| m.head.clone());
    let (c, cl, b) = (cache.clone(), clone.to_path_buf(), branch.clone());
    let (refs, built) = blocking(move || {
        super::transport::register();
        let local = git2::Repository::open(&cl).map_err(|e| {
            Error::failed_hint(
                format!("{} is not a git repository: {}", cl.display(), e.message()),
                "pass the path of a clone of the workload's repository",
            )
        })?;
        let theirs = local
            .refname_to_id(&format!("refs/heads/{b}"))
            .map_err(|_| {
                Error::failed_hint(
                    format!("{} has no branch {b}", cl.display()),
                    format!("check out the deploy branch: git -C {} switch {b}", cl.display()),
                )
            })?;
        if let Some(m) = &mirrored {
            let m = git2::Oid::from_str(m).map_err(|e| Error::failed(e.message().to_string()))?;
            let contains = theirs == m || local.graph_descendant_of(theirs, m).unwrap_or(false);
            if !contains && !force {
                return Err(Error::failed_hint(
                    format!(
                        "{b} in {} ({theirs}) does not contain the mirrored head {m}: refused",
                        cl.display()
                    ),
                    format!("fetch or rebase onto {m} first, or pass --force to replace the mirrored history"),
                ));
            }
        }
        let repo = mirror::open_cache(&c)?;
        let url = cl.display().to_string();
        let mut remote = repo
            .remote_anonymous(&url)
            .map_err(|e| Error::failed(e.message().to_string()))?;
        let spec = format!("+refs/heads/{b}:refs/heads/{b}");
        remote
            .fetch(&[spec.as_str()], None, None)
            .map_err(|e| Error::failed(format!("reading {}: {}", cl.display(), e.message())))?;
        let refs = mirror::refs_of(&repo)?;
        let built = mirror::build(&repo, &b)?;
        Ok((refs, built))
    })
    .await?;
    progress(&format!(
        "{branch} at {} from {}",
        built.head,
        clone.display()
    ));
    let source = format!("push --from {}", clone.display());
    mirror::store_built(&store, Some(built), &refs, &branch, source, now(), progress).await
}

/// A repository URL drd may use: no credentials in it (they belong in `[ci] token_secret` or
/// `token_env`, also when the URL comes from `DRD_CI_REPOSITORY`), and no token over plain HTTP.
pub(crate) fn check_url(url: &str, has_token: bool) -> Result<()> {
    let authority = url
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or(""))
        .unwrap_or("");
    if authority.contains('@') {
        return Err(Error::failed_hint(
            format!(
                "the repository URL {} carries credentials",
                super::transport::redact(url)
            ),
            "remove them from [ci] repository / DRD_CI_REPOSITORY; set [ci] token_secret or token_env",
        ));
    }
    if has_token && url.starts_with("http://") {
        return Err(Error::failed_hint(
            format!("{url} is plain HTTP and a token is configured: it would travel in clear"),
            "use the https:// URL",
        ));
    }
    Ok(())
}

/// Whether the cache has every ref of `m` at its SHA.
fn cache_has(cache: &Path, m: &MirrorManifest) -> bool {
    let Ok(repo) = git2::Repository::open_bare(cache) else {
        return false;
    };
    m.refs.iter().all(|(name, r)| {
        repo.refname_to_id(name)
            .is_ok_and(|id| id.to_string() == r.sha)
    })
}

/// Rebuild the cache from a stored bundle: its pack into the object database, its refs set.
pub async fn restore_cache(store: &Store, m: &MirrorManifest, cache: &Path) -> Result<()> {
    let spool = download(store, &m.bundle.sha256).await?;
    let (c, refs) = (cache.to_path_buf(), m.refs.clone());
    blocking(move || {
        let repo = mirror::open_cache(&c)?;
        let f = std::fs::File::open(&spool).map_err(|e| Error::io("the bundle", e))?;
        let mut r = std::io::BufReader::new(f);
        // Header lines up to the blank line, then the pack.
        loop {
            let mut line = String::new();
            let n = std::io::BufRead::read_line(&mut r, &mut line)
                .map_err(|e| Error::io("the bundle", e))?;
            if n == 0 {
                return Err(Error::failed("the bundle ends before its pack"));
            }
            if line == "\n" {
                break;
            }
        }
        let odb = repo
            .odb()
            .map_err(|e| Error::failed(e.message().to_string()))?;
        let mut w = odb
            .packwriter()
            .map_err(|e| Error::failed(e.message().to_string()))?;
        std::io::copy(&mut r, &mut w).map_err(|e| Error::io("indexing the bundle's pack", e))?;
        w.commit()
            .map_err(|e| Error::failed(format!("the bundle's pack: {}", e.message())))?;
        for (name, e) in &refs {
            let id =
                git2::Oid::from_str(&e.sha).map_err(|e| Error::failed(e.message().to_string()))?;
            repo.reference(name, id, true, "drd: restored from the mirror bundle")
                .map_err(|e| Error::failed(format!("{name}: {}", e.message())))?;
        }
        Ok(())
    })
    .await
}

/// A blob streamed into a spool file.
pub async fn download(store: &Store, hex: &str) -> Result<tempfile::TempPath> {
    use tokio::io::AsyncWriteExt;
    let key = store.blob_key(hex);
    let o = store
        .s3
        .get_object()
        .bucket(&store.bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| crate::aws::aws_error("s3", "GetObject", e))?;
    let t = tempfile::Builder::new()
        .prefix("drd-bundle-")
        .tempfile()
        .map_err(|e| Error::io("a spool file", e))?;
    let (f, path) = t.into_parts();
    let mut f = tokio::fs::File::from_std(f);
    let mut body = o.body;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| Error::failed(format!("reading {key}: {e}")))?
    {
        f.write_all(&chunk)
            .await
            .map_err(|e| Error::io("a spool file", e))?;
    }
    f.flush().await.map_err(|e| Error::io("a spool file", e))?;
    Ok(path)
}

/// Re-hash the newest mirror's bundle and zip (streamed); problems, empty when sound.
pub async fn verify(store: &Store) -> Result<Option<(MirrorManifest, Vec<String>)>> {
    let Some((_, m, _)) = mirror::newest(store).await? else {
        return Ok(None);
    };
    let mut problems = vec![];
    for (what, b) in [("bundle", &m.bundle), ("zip", &m.zip)] {
        match download(store, &b.sha256).await {
            Ok(p) => {
                let (hex, size) = mirror::hash_file(&p)?;
                if hex != b.sha256 || size != b.size {
                    problems.push(format!(
                        "the {what} {} hashes to {hex} ({size} bytes), not {} ({} bytes)",
                        store.blob_key(&b.sha256),
                        b.sha256,
                        b.size
                    ));
                }
            }
            Err(e) => problems.push(format!("the {what} {}: {e}", store.blob_key(&b.sha256))),
        }
    }
    Ok(Some((m, problems)))
}

/// How fresh the mirror is, for `drd status` and the daemon.
#[derive(Debug, serde::Serialize, Default, Clone)]
pub struct Freshness {
    pub manifest: Option<String>,
    pub head: Option<String>,
    /// RFC 3339 of the last successful fetch (or push).
    pub fetched_at: Option<String>,
    pub age_seconds: Option<u64>,
    /// Commits the remote's deploy branch has that the mirror does not; absent when the
    /// remote could not be asked.
    pub commits_behind: Option<u64>,
    pub stale: bool,
    pub max_age_seconds: u64,
}

pub async fn freshness(
    aws: &Aws,
    policy: &Policy,
    cache_root: &Path,
    ask_remote: bool,
) -> Result<Freshness> {
    let ci = mirror::ci_policy(policy)?;
    let store = crate::store::open_store_read(aws, policy).await?;
    let mut f = Freshness {
        max_age_seconds: ci.max_age().as_secs(),
        stale: true,
        ..Default::default()
    };
    let Some((p, _, _)) = mirror::newest(&store).await? else {
        return Ok(f);
    };
    let age = humantime::parse_rfc3339_weak(&p.fetched_at)
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs());
    f.stale = age.is_none_or(|a| a > f.max_age_seconds);
    f.age_seconds = age;
    f.fetched_at = Some(p.fetched_at.clone());
    f.manifest = Some(p.manifest.clone());
    f.head = Some(p.head.clone());
    if ask_remote && cache_dir(cache_root, policy).exists() {
        let token = mirror::token(aws, policy).await.ok().flatten();
        let (c, u, b, h) = (
            cache_dir(cache_root, policy),
            ci.repository_url(),
            ci.branch.clone(),
            p.head.clone(),
        );
        f.commits_behind = tokio::task::spawn_blocking(move || {
            mirror::commits_behind(&c, &u, token.as_ref(), &b, &h)
        })
        .await
        .ok()
        .flatten();
    }
    Ok(f)
}
