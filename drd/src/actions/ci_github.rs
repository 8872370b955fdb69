//! The GitHub side of CI failover: is GitHub reachable, park (disable) the deploy workflow or
//! record a reconcile item, push what reached the mirror during the outage back to GitHub
//! (fast-forward only, ref by ref), enable and dispatch the workflow and await its run, and
//! close the reconcile items.

use super::{arg, Args, Ctx, Outputs};
use crate::ci::mirror;
use crate::error::{ConfigError, Error, Result};
use crate::github::GitHub;
use crate::store::ci_epoch::{self, Reconcile};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The `[github]` section, or a configuration error (before any write: preflight asks).
pub(super) fn require_section<'a>(ctx: &'a Ctx<'_>) -> Result<&'a crate::policy::GithubPolicy> {
    ctx.policy.github.as_ref().ok_or_else(|| {
        Error::from(
            ConfigError::new(
                ctx.policy.path.display().to_string(),
                "no [github] section: drd failover-ci needs the repository's REST API",
            )
            .field("github")
            .hint("add [github] repository = \"OWNER/REPO\" (and token_secret, api_url for GitHub Enterprise)"),
        )
    })
}

/// The client, the repository (`owner/name`) and the deploy workflow's file name.
async fn client(ctx: &Ctx<'_>) -> Result<(GitHub, String, String)> {
    let gh = require_section(ctx)?;
    let workflow = ctx
        .policy
        .ci
        .as_ref()
        .map_or_else(|| "deploy.yml".to_string(), |c| c.workflow.clone());
    let token =
        super::github::token_of(&super::secret::current_value(ctx, &gh.token_secret).await?);
    Ok((
        GitHub::new(&gh.api_url, token),
        gh.repository.get_ref().clone(),
        workflow,
    ))
}

/// One bounded read of the deploy workflow: `Ok` when GitHub answers it.
pub(super) async fn reachable(ctx: &Ctx<'_>) -> Result<()> {
    let (c, repo, wf) = client(ctx).await?;
    match tokio::time::timeout(Duration::from_secs(10), c.workflow(&repo, &wf)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(Error::failed("no answer within 10 s")),
    }
}

fn reconcile_id(workflow: &str) -> String {
    format!("disable-workflow:{workflow}")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Disable the deploy workflow; when GitHub does not answer, record a reconcile item instead
/// (the epoch already refuses the runs it would start; failback finishes the item).
pub async fn disable_workflow(ctx: &Ctx<'_>, _args: &Args) -> Result<Outputs> {
    require_section(ctx)?;
    let wf = ctx
        .policy
        .ci
        .as_ref()
        .map_or_else(|| "deploy.yml".to_string(), |c| c.workflow.clone());
    let id = reconcile_id(&wf);
    // The token unreadable counts as GitHub unreachable: the outage path needs neither.
    let done = match client(ctx).await {
        Ok((c, repo, _)) => c.set_workflow_enabled(&repo, &wf, false).await,
        Err(e) => Err(Error::failed(format!("no GitHub client: {e}"))),
    };
    match done {
        Ok(()) => {
            (ctx.progress)(&format!("GitHub workflow {wf} disabled"));
            // Done now: an item an earlier run left is finished.
            ci_epoch::close_reconcile(&ctx.store, std::slice::from_ref(&id)).await?;
            Ok(Outputs::from([
                ("workflow".into(), wf),
                ("state".into(), "disabled".into()),
                ("reconcile".into(), "none".into()),
            ]))
        }
        // GitHub refused (a bad token, no actions: write, no such workflow): a fix is needed,
        // not a note for later.
        Err(e) if !crate::github::unavailable(&e) => Err(e),
        Err(e) => {
            let item = Reconcile {
                id: id.clone(),
                what: format!(
                    "GitHub did not answer ({e}): the workflow {wf} could not be disabled; runs it starts are refused by the CI epoch. drd failover-ci --to github enables it deliberately and closes this item; a second drd failover-ci --to codepipeline disables it once GitHub answers"
                ),
                since: now(),
                run: ctx.run_id.clone(),
            };
            ci_epoch::add_reconcile(&ctx.store, item).await?;
            (ctx.progress)(&format!(
                "GitHub unreachable: could not disable {wf}; reconcile item {id} recorded"
            ));
            Ok(Outputs::from([
                ("workflow".into(), wf),
                ("state".into(), "unknown (GitHub unreachable)".into()),
                ("reconcile".into(), id),
            ]))
        }
    }
}

/// The workflow is disabled, or a reconcile item for it is recorded.
pub async fn workflow_parked(ctx: &Ctx<'_>, _args: &Args) -> Result<()> {
    let (c, repo, wf) = client(ctx).await?;
    let (rec, _) = ci_epoch::read(&ctx.store).await?;
    if rec.reconcile.iter().any(|r| r.id == reconcile_id(&wf)) {
        return Ok(());
    }
    let w = c.workflow(&repo, &wf).await?;
    if w.state.starts_with("disabled") {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "the workflow {wf} is {} and no reconcile item is recorded",
            w.state
        )))
    }
}

/// The remote's refs (`refs/heads/*`, `refs/tags/*`) by ls-remote.
fn ls_remote(repo: &git2::Repository, url: &str) -> Result<BTreeMap<String, git2::Oid>> {
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| Error::failed(e.message().to_string()))?;
    remote
        .connect(git2::Direction::Fetch)
        .map_err(|e| Error::failed(format!("connecting to the repository: {}", e.message())))?;
    let refs = remote
        .list()
        .map_err(|e| Error::failed(e.message().to_string()))?
        .iter()
        .filter(|h| h.name().starts_with("refs/heads/") || h.name().starts_with("refs/tags/"))
        .map(|h| (h.name().to_string(), h.oid()))
        .collect();
    Ok(refs)
}

enum Plan {
    Push,
    Same,
    RemoteAhead,
    Diverged,
}

/// Push the mirrored refs to the remote: fast-forward only, ref by ref. What was pushed (or
/// why nothing was), and the deploy branch's head on the remote afterwards.
fn push_refs(
    cache: &std::path::Path,
    url: &str,
    m: &mirror::MirrorManifest,
    bundle_at: &str,
) -> Result<(Vec<String>, String)> {
    crate::ci::transport::register();
    let repo = git2::Repository::open_bare(cache)
        .map_err(|e| Error::failed(format!("the restored mirror: {}", e.message())))?;
    let theirs = ls_remote(&repo, url)?;
    // Their objects, to tell fast-forwards from divergence.
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| Error::failed(e.message().to_string()))?;
    remote
        .fetch(&["+refs/heads/*:refs/drd-remote/heads/*"], None, None)
        .map_err(|e| Error::failed(format!("fetching the remote's branches: {}", e.message())))?;
    let mut done = vec![];
    let branch_ref = format!("refs/heads/{}", m.branch);
    for (name, e) in &m.refs {
        let ours =
            git2::Oid::from_str(&e.sha).map_err(|e| Error::failed(e.message().to_string()))?;
        let plan = match theirs.get(name) {
            None => Plan::Push,
            Some(t) if *t == ours => Plan::Same,
            Some(_) if name.starts_with("refs/tags/") => Plan::Diverged,
            Some(t) if repo.graph_descendant_of(ours, *t).unwrap_or(false) => Plan::Push,
            Some(t) if repo.graph_descendant_of(*t, ours).unwrap_or(false) => Plan::RemoteAhead,
            Some(_) => Plan::Diverged,
        };
        match plan {
            Plan::Same => {}
            Plan::RemoteAhead => done.push(format!("{name}: the remote is ahead, kept")),
            Plan::Diverged => {
                let short = name.trim_start_matches("refs/heads/");
                return Err(Error::failed_hint(
                    format!(
                        "{name} diverged: the remote has {} and the mirror {ours}, neither contains the other; nothing more was pushed ({})",
                        theirs[name],
                        if done.is_empty() { "no ref pushed".into() } else { done.join("; ") }
                    ),
                    format!(
                        "merge by hand in a clone of the repository: aws s3 cp {bundle_at} mirror.bundle && git fetch mirror.bundle {name}:refs/heads/drd-mirror-{short} && git merge drd-mirror-{short} && git push origin {short}; then drd mirror (so the mirror contains the merge) and drd failover-ci --to github --resume RUN"
                    ),
                ));
            }
            Plan::Push => {
                let spec = format!("{name}:{name}");
                let refused = std::cell::RefCell::new(None::<String>);
                let pushed = {
                    let mut cb = git2::RemoteCallbacks::new();
                    cb.push_update_reference(|r, status| {
                        if let Some(s) = status {
                            *refused.borrow_mut() = Some(format!("{r}: {s}"));
                        }
                        Ok(())
                    });
                    let mut opts = git2::PushOptions::new();
                    opts.remote_callbacks(cb);
                    remote.push(&[spec.as_str()], Some(&mut opts))
                };
                let refused = refused.into_inner();
                if let Some(why) = refused.or_else(|| pushed.err().map(|e| e.message().to_string()))
                {
                    let short = name.trim_start_matches("refs/heads/");
                    return Err(Error::failed_hint(
                        format!("the remote refused {name} ({ours}): {why}"),
                        format!(
                            "when branch protection refused it, open a pull request: push the mirrored commits to a branch (git push origin {ours}:refs/heads/drd-mirror-{short}) and open one from drd-mirror-{short} into {short}; merge it, then run drd failover-ci --to github --resume RUN"
                        ),
                    ));
                }
                done.push(format!(
                    "{name}: {} -> {ours}",
                    theirs.get(name).map_or("(new)".into(), |t| t.to_string())
                ));
            }
        }
    }
    let after = ls_remote(&repo, url)?;
    let head = after
        .get(&branch_ref)
        .map(|o| o.to_string())
        .ok_or_else(|| Error::failed(format!("the remote has no {branch_ref} after the push")))?;
    Ok((done, head))
}

/// Push the newest mirror's refs to GitHub (fast-forward only): the commits that reached the
/// mirror during the outage (`drd mirror push --from`).
pub async fn push_mirror(ctx: &Ctx<'_>, _args: &Args) -> Result<Outputs> {
    let (_, m, _) = mirror::newest(&ctx.store)
        .await?
        .ok_or_else(|| Error::failed("the store holds no mirror"))?;
    let ci = mirror::ci_policy(ctx.policy)?;
    let url = ci.repository_url();
    let token = mirror::token(ctx.aws, ctx.policy).await?;
    // No credentials in the URL (so none in a git error) and no token over plain HTTP.
    crate::ci::run::check_url(&url, token.is_some())?;
    // A scratch repository from the mirror's own bundle: no local cache is trusted or locked.
    let dir = tempfile::Builder::new()
        .prefix("drd-failback-")
        .tempdir()
        .map_err(|e| Error::io("a scratch directory", e))?;
    let cache = dir.path().join("mirror.git");
    crate::ci::run::restore_cache(&ctx.store, &m, &cache).await?;
    let bundle_at = format!(
        "s3://{}/{}",
        ctx.store.bucket,
        ctx.store.blob_key(&m.bundle.sha256)
    );
    let (c, u, m2) = (cache.clone(), url.clone(), m.clone());
    let (done, head) = tokio::task::spawn_blocking(move || {
        crate::ci::transport::with_auth(&u, token.as_ref(), || push_refs(&c, &u, &m2, &bundle_at))
    })
    .await
    .map_err(|e| Error::failed(format!("the git task failed: {e}")))??;
    let shown = crate::ci::transport::redact(&url);
    for d in &done {
        (ctx.progress)(&format!("{shown}: {d}"));
    }
    Ok(Outputs::from([
        (
            "pushed".into(),
            if done.is_empty() {
                "nothing: the remote had every mirrored ref".into()
            } else {
                done.join("; ")
            },
        ),
        ("head".into(), head),
        ("branch".into(), m.branch.clone()),
    ]))
}

/// The remote's deploy branch is at `commit`.
pub async fn github_has(ctx: &Ctx<'_>, args: &Args) -> Result<()> {
    let commit = arg(args, "commit")?.to_string();
    let ci = mirror::ci_policy(ctx.policy)?;
    let (url, branch) = (ci.repository_url(), ci.branch.clone());
    let token = mirror::token(ctx.aws, ctx.policy).await?;
    crate::ci::run::check_url(&url, token.is_some())?;
    let head = tokio::task::spawn_blocking(move || {
        crate::ci::transport::register();
        let dir = tempfile::tempdir().map_err(|e| Error::io("a scratch directory", e))?;
        let repo = git2::Repository::init_bare(dir.path())
            .map_err(|e| Error::failed(e.message().to_string()))?;
        crate::ci::transport::with_auth(&url, token.as_ref(), || ls_remote(&repo, &url)).map(|r| {
            r.get(&format!("refs/heads/{branch}"))
                .map(|o| o.to_string())
        })
    })
    .await
    .map_err(|e| Error::failed(format!("the git task failed: {e}")))??;
    if head.as_deref() != Some(commit.as_str()) {
        return Err(Error::failed(format!(
            "the remote's deploy branch is at {head:?}, not {commit}"
        )));
    }
    Ok(())
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()
}

/// Enable the deploy workflow, dispatch it on the deploy branch (or find the run an earlier
/// attempt dispatched) and await its run.
pub async fn dispatch_deploy(ctx: &Ctx<'_>, args: &Args) -> Result<Outputs> {
    let (commit, branch) = (arg(args, "commit")?, arg(args, "branch")?);
    // Dispatched runs created since the switch are this failback's (two minutes of slack for
    // GitHub's clock); with no switch time, only a run that has not finished yet.
    let since = match args.get("since").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            parse_time(s).ok_or_else(|| {
                Error::failed(format!("argument since {s:?} is not an RFC 3339 time"))
            })? - Duration::from_secs(120),
        ),
        None => None,
    };
    let poll = match args.get("poll").filter(|s| !s.is_empty()) {
        Some(p) => humantime::parse_duration(p)
            .map_err(|e| Error::failed(format!("poll {p:?} is not a duration: {e}")))?,
        None => Duration::from_secs(5),
    };
    let (c, repo, wf) = client(ctx).await?;
    let w = c.workflow(&repo, &wf).await?;
    if w.state != "active" {
        c.set_workflow_enabled(&repo, &wf, true).await?;
        (ctx.progress)(&format!("GitHub workflow {wf} enabled (was {})", w.state));
    }
    // A run of this commit since the switch (a resumed run): awaited, not dispatched again
    // unless it failed.
    let runs = c.runs_for(&repo, &wf, commit).await?;
    let seen: Vec<u64> = runs.iter().map(|r| r.id).collect();
    let earlier = runs
        .into_iter()
        .filter(|r| r.event == "workflow_dispatch")
        .filter(|r| match since {
            Some(t) => parse_time(&r.created_at).is_some_and(|c| c >= t),
            None => r.status != "completed",
        })
        .find(|r| r.conclusion.as_deref().is_none_or(|c| c == "success"));
    let (id, dispatched) = match earlier {
        Some(r) => {
            (ctx.progress)(&format!("run {} of {commit} already {}", r.id, r.status));
            (r.id, false)
        }
        None => {
            let id = match c.dispatch(&repo, &wf, branch).await? {
                Some(id) => id,
                // 204 without run details: the new dispatched run of the commit (no clock
                // involved: any run listed before the dispatch is not it).
                None => find_run(&c, &repo, &wf, commit, &seen).await?,
            };
            (ctx.progress)(&format!("dispatched {wf} on {branch}: run {id}"));
            (id, true)
        }
    };
    let run = loop {
        let r = c.run(&repo, id).await?;
        if r.status == "completed" {
            break r;
        }
        tokio::time::sleep(poll).await;
    };
    let conclusion = run.conclusion.clone().unwrap_or_else(|| "none".into());
    if conclusion != "success" {
        return Err(Error::failed_hint(
            format!(
                "run {id} of {wf} concluded {conclusion}{}",
                run.html_url.map(|u| format!(" ({u})")).unwrap_or_default()
            ),
            "read the run's log; fix and push, then run drd failover-ci --to github again (or --resume RUN)",
        ));
    }
    if run.head_sha != commit {
        return Err(Error::failed(format!(
            "run {id} deployed {}, not {commit}: the branch moved meanwhile",
            run.head_sha
        )));
    }
    Ok(Outputs::from([
        ("run_id".into(), id.to_string()),
        ("dispatched".into(), dispatched.to_string()),
        ("conclusion".into(), conclusion),
    ]))
}

async fn find_run(c: &GitHub, repo: &str, wf: &str, commit: &str, seen: &[u64]) -> Result<u64> {
    for _ in 0..30 {
        let found = c
            .runs_for(repo, wf, commit)
            .await?
            .into_iter()
            .find(|r| r.event == "workflow_dispatch" && !seen.contains(&r.id));
        if let Some(r) = found {
            return Ok(r.id);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(Error::failed(format!(
        "the dispatch of {wf} was accepted but no run of {commit} appeared within a minute"
    )))
}

/// Close the reconcile items the failover left (the workflow is enabled deliberately now).
pub async fn close_reconcile(ctx: &Ctx<'_>, _args: &Args) -> Result<Outputs> {
    let (rec, _) = ci_epoch::read(&ctx.store).await?;
    let ids: Vec<String> = rec.reconcile.iter().map(|r| r.id.clone()).collect();
    if ids.is_empty() {
        return Ok(Outputs::from([("closed".into(), "none were open".into())]));
    }
    ci_epoch::close_reconcile(&ctx.store, &ids).await?;
    (ctx.progress)(&format!("reconcile items closed: {}", ids.join(", ")));
    Ok(Outputs::from([("closed".into(), ids.join(", "))]))
}

pub async fn reconciled(ctx: &Ctx<'_>, _args: &Args) -> Result<()> {
    let (rec, _) = ci_epoch::read(&ctx.store).await?;
    if rec.reconcile.is_empty() {
        return Ok(());
    }
    Err(Error::failed(format!(
        "reconcile items still open: {}",
        rec.reconcile
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}
