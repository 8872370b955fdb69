//! `drd daemon`: scheduled protection of one or many stacks.
//!
//! One loop per (stack, job) runs the policy's cron schedules (see `scheduler` for the rules:
//! exactly once per firing across daemons, takeover, no overlap, catch-up, bounded concurrency,
//! fencing). The process also serves `/healthz`, `/readyz` and `/metrics`, reloads its policies
//! on SIGHUP (an invalid set is rejected and the running one kept), and on SIGTERM/SIGINT stops
//! scheduling, gives running jobs the grace period, releases its leases and exits 0.

pub mod alerts;
pub mod backend;
mod http;
pub mod metrics;
pub mod page;
pub mod scheduler;

use crate::aws::Aws;
use crate::error::{ConfigError, Error, Result};
use crate::policy::Policy;
use crate::schedule;
use backend::{StackCtx, StoreBackend};
use metrics::Metrics;
use scheduler::{Clock, JobSpec, Scheduler, WallClock};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, RwLock, Semaphore};

pub struct Options {
    /// A policy file, or a directory of them (`*.toml`).
    pub policy: PathBuf,
    pub listen: Option<String>,
    pub max_concurrent: usize,
    pub lease_ttl: Duration,
    pub grace: Duration,
    pub runbooks: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

/// Read and validate every policy at `path` (a file or a directory of `*.toml`).
pub fn load_policies(path: &Path) -> Result<Vec<Policy>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| {
                ConfigError::new(
                    path.display().to_string(),
                    format!("cannot read the directory: {e}"),
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(ConfigError::new(
                path.display().to_string(),
                "the directory holds no *.toml policy",
            )
            .field("--policy")
            .hint("put one policy file per stack in it (see policies/classifier.toml)")
            .into());
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out: Vec<Policy> = vec![];
    for f in files {
        let p = Policy::load(&f)?;
        if let Some(other) = out.iter().find(|o| o.stack_name() == p.stack_name()) {
            return Err(ConfigError::new(
                f.display().to_string(),
                format!(
                    "stack {:?} is also protected by {}",
                    p.stack_name(),
                    other.path.display()
                ),
            )
            .field("stack.name")
            .hint("one policy per stack")
            .into());
        }
        out.push(p);
    }
    Ok(out)
}

/// Every scheduled job of every policy.
pub fn jobs(policies: &[Policy]) -> Result<Vec<JobSpec>> {
    let mut v = vec![];
    for p in policies {
        for s in &p.daemon.schedule {
            let cron = schedule::Cron::parse(
                s.cron.get_ref(),
                s.timezone.as_ref().map(|t| t.get_ref().as_str()),
            )
            .map_err(|why| {
                ConfigError::new(p.path.display().to_string(), why).field("daemon.schedule.cron")
            })?;
            v.push(JobSpec {
                stack: p.stack_name().to_string(),
                job: s.job.get_ref().clone(),
                cron,
                jitter: s.jitter(),
            });
        }
    }
    Ok(v)
}

/// The listener address: `--listen`, else the one policy value, else loopback.
pub fn listen_addr(policies: &[Policy], flag: Option<&str>) -> Result<SocketAddr> {
    let given: Vec<(&Policy, &str)> = policies
        .iter()
        .filter_map(|p| p.daemon.listen.as_ref().map(|l| (p, l.get_ref().as_str())))
        .collect();
    let raw = match (flag, given.as_slice()) {
        (Some(f), _) => f.to_string(),
        (None, []) => crate::policy::DEFAULT_LISTEN.to_string(),
        (None, [(_, l)]) => l.to_string(),
        (None, [(a, la), rest @ ..]) => {
            if let Some((b, lb)) = rest.iter().find(|(_, l)| l != la) {
                return Err(ConfigError::new(
                    b.path.display().to_string(),
                    format!(
                        "daemon.listen {lb:?} differs from {la:?} in {}",
                        a.path.display()
                    ),
                )
                .field("daemon.listen")
                .hint("set it in one policy only, or pass --listen")
                .into());
            }
            la.to_string()
        }
    };
    raw.parse().map_err(|_| {
        ConfigError::new("--listen", format!("{raw:?} is not an address"))
            .hint("write ip:port")
            .into()
    })
}

/// What the HTTP handlers read.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// (stack, RPO) of the running policies.
    pub stacks: RwLock<Vec<(String, Duration)>>,
    pub backend: RwLock<Arc<StoreBackend>>,
    /// The running schedules (the status page shows their next firings).
    pub jobs: RwLock<Vec<JobSpec>>,
    /// The status page as last rendered: one gathering at a time, reused for `PAGE_TTL`, so
    /// page loads cannot multiply AWS calls and probes.
    pub page: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
}

async fn backend_for(
    aws: &Arc<Aws>,
    policies: &[Policy],
    holder: &str,
    opts: &Options,
    alerter: &alerts::Alerter,
) -> Result<StoreBackend> {
    let mut stacks = BTreeMap::new();
    for p in policies {
        let store = crate::store::open_store(aws, p).await?;
        stacks.insert(
            p.stack_name().to_string(),
            StackCtx {
                policy: p.clone(),
                store,
            },
        );
    }
    Ok(StoreBackend::new(
        aws.clone(),
        stacks,
        holder.to_string(),
        opts.runbooks.clone(),
        opts.state_dir.clone(),
    )
    .with_alerter(alerter.clone()))
}

/// Run the daemon until SIGTERM/SIGINT.
pub async fn run(aws: Arc<Aws>, opts: Options) -> Result<()> {
    let mut policies = load_policies(&opts.policy)?;
    let addr = listen_addr(&policies, opts.listen.as_deref())?;
    let holder = format!("{}:{}", crate::store::lease::hostname(), std::process::id());
    let metrics = Arc::new(Metrics::default());
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let started = clock.now().timestamp_millis() as f64 / 1000.0;
    // One alerter for the process (its deliveries in flight are awaited at shutdown).
    let alerter = alerts::Alerter::new(aws.clone(), metrics.clone());
    let permits = Arc::new(Semaphore::new(opts.max_concurrent.max(1)));
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("installing the SIGINT handler", e))?;
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| Error::io("installing the SIGHUP handler", e))?;

    let backend = Arc::new(backend_for(&aws, &policies, &holder, &opts, &alerter).await?);
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        clock: clock.clone(),
        stacks: RwLock::new(stack_rpos(&policies)),
        backend: RwLock::new(backend.clone()),
        jobs: RwLock::new(jobs(&policies)?),
        page: tokio::sync::Mutex::new(None),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listener address", e))?;
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(listener, shared.clone(), http_stop_rx));
    // The scheduler's heartbeat (for /healthz).
    let hb_metrics = metrics.clone();
    let hb_clock = clock.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            hb_metrics.beat(hb_clock.now().timestamp_millis());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let mut draining: Vec<tokio::task::JoinHandle<()>> = vec![];
    let mut backend = backend;
    loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let sched = Arc::new(Scheduler {
            backend: backend.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            permits: permits.clone(),
            ttl: opts.lease_ttl,
            holder: holder.clone(),
        });
        let specs = jobs(&policies)?;
        tracing::info!(
            listen = %bound,
            stacks = policies.len(),
            jobs = specs.len(),
            max_concurrent = opts.max_concurrent,
            lease_ttl = ?opts.lease_ttl,
            "drd daemon running"
        );
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = specs
            .into_iter()
            .map(|j| tokio::spawn(sched.clone().job_loop(j, stop_rx.clone())))
            .collect();
        // Keep the RPO and mirror gauges true for what other daemons write.
        let refresh_backend = backend.clone();
        let refresh_metrics = metrics.clone();
        let mut refresh_stop = stop_rx.clone();
        let refresh_clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let listed = refresh_backend.newest_points().await;
                *refresh_metrics.listed.lock().expect("metrics") =
                    listed.iter().map(|(s, _)| s.clone()).collect();
                for (stack, t) in listed {
                    if let Some(t) = t {
                        refresh_metrics.set_newest_point(&stack, t);
                    }
                }
                for (stack, t, max_age, behind) in refresh_backend.mirror_fetches().await {
                    refresh_metrics.set_mirror(&stack, t, behind, max_age);
                }
                // Alerts for what the gauges now show (once per condition across daemons).
                let now = refresh_clock.now().timestamp_millis() as f64 / 1000.0;
                refresh_backend.check_conditions(&refresh_metrics, now, started);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    // A firing another daemon ran: read what it wrote now, not in a minute.
                    _ = refresh_metrics.refresh.notified() => {}
                    _ = refresh_stop.changed() => return,
                }
            }
        }));
        // Wait for a signal.
        let reload = loop {
            tokio::select! {
                _ = term.recv() => break false,
                _ = int.recv() => break false,
                _ = hup.recv() => {
                    match load_policies(&opts.policy).and_then(|p| jobs(&p).map(|_| p)) {
                        Ok(new) => {
                            match backend_for(&aws, &new, &holder, &opts, &alerter).await {
                                Ok(b) => {
                                    tracing::info!(stacks = new.len(), "SIGHUP: policies reloaded");
                                    metrics.reloads.lock().expect("metrics").0 += 1;
                                    policies = new;
                                    backend = Arc::new(b);
                                    break true;
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "SIGHUP: reload rejected (a store is unreachable); the running policies stay");
                                    metrics.reloads.lock().expect("metrics").1 += 1;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "SIGHUP: reload rejected (invalid policy); the running policies stay");
                            metrics.reloads.lock().expect("metrics").1 += 1;
                        }
                    }
                }
            }
        };
        let _ = stop_tx.send(true);
        if reload {
            // Old loops finish their running job in the background; the lease keeps them from
            // running a firing twice with the new ones.
            draining.extend(tasks);
            *shared.stacks.write().await = stack_rpos(&policies);
            *shared.backend.write().await = backend.clone();
            *shared.jobs.write().await = jobs(&policies)?;
            continue;
        }
        tracing::info!(grace = ?opts.grace, "stopping: no new runs; waiting for running jobs");
        tasks.append(&mut draining);
        let all = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(opts.grace, all).await.is_err() {
            tracing::warn!("grace period over: aborting the jobs still running (a backup without its manifest leaves no point; a runbook resumes from its journal)");
            for t in &tasks {
                t.abort();
            }
        }
        backend.release_all().await;
        alerter.drain(Duration::from_secs(10)).await;
        heartbeat.abort();
        let _ = http_stop_tx.send(true);
        // A status page still gathering does not hold the exit past a few seconds.
        let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
        tracing::info!("drd daemon stopped");
        return Ok(());
    }
}

fn stack_rpos(policies: &[Policy]) -> Vec<(String, Duration)> {
    policies
        .iter()
        .map(|p| (p.stack_name().to_string(), p.daemon.rpo()))
        .collect()
}

#[cfg(test)]
mod tests;
