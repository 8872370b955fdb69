//! The local lab (`drd-sandbox`, run as `drd sandbox ...`): moto server as the AWS control plane,
//! the function host as the Lambda data plane, a chat-completions stub and a GitHub REST stub, all
//! on loopback ports, and a lab GitHub (a git remote served by `git http-backend` and the Actions
//! workflows REST API, whose dispatches run the workflow's deploy step). It is a crate of its own so that the production `drd` binary and the daemon
//! image carry none of it.
//!
//! `up` starts them in their own process groups, records their PIDs and ports in
//! `<dir>/sandbox.json`, prints the environment to use, and returns. Starting twice is harmless;
//! a state file whose processes are gone (or whose PIDs now belong to other programs) is stale
//! and replaced.

pub mod actions;
pub mod buildspec;
pub mod cbor;
pub mod cli;
pub mod faults;
pub mod fnfaults;
pub mod gate;
pub mod git;
pub mod github;
pub mod hooks;
pub mod host;
pub mod iam;
pub mod llm;
pub mod pipeline;
mod pipeline_build;
pub mod workflow;

use drd::error::{ConfigError, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The one place the emulator version is pinned (also read by `scripts/setup`).
const REQUIREMENTS: &str = include_str!("../../requirements-sandbox.txt");

/// The pinned moto requirement, e.g. `moto[server]==5.2.1`, for install hints.
pub fn moto_requirement() -> &'static str {
    REQUIREMENTS
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("moto"))
        .unwrap_or("moto[server]")
}
pub const DEFAULT_REGION: &str = "us-east-1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub port: u16,
    /// A word the process's command line must contain, to tell a reused PID apart.
    pub marker: String,
}

impl Proc {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn alive(&self) -> bool {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), None).is_err() {
            return false;
        }
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|c| String::from_utf8_lossy(&c).contains(&self.marker))
            .unwrap_or(false)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub moto: Proc,
    pub host: Proc,
    pub llm_port: u16,
    /// The region gate in front of moto (what `AWS_ENDPOINT_URL` points to); absent in the
    /// state of sandboxes started by older drd versions.
    #[serde(default)]
    pub proxy_port: Option<u16>,
    /// The lab GitHub (REST and the git remote); absent in older state files.
    #[serde(default)]
    pub github_port: Option<u16>,
    /// The file holding the lab GitHub's token (absolute).
    #[serde(default)]
    pub github_token_file: Option<PathBuf>,
    /// The lab repository's seed commit, when it was seeded.
    #[serde(default)]
    pub github_seed: Option<String>,
    pub region: String,
    pub started_at: String,
    /// IAM mode (`up --iam`): each account's `lab-admin` key; empty when moto authorizes
    /// nothing (iam.rs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, iam::Keys>,
}

impl State {
    pub fn llm_base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.llm_port)
    }

    /// The control-plane endpoint users talk to: the region gate, or moto itself.
    pub fn endpoint_url(&self) -> String {
        match self.proxy_port {
            Some(p) => format!("http://127.0.0.1:{p}"),
            None => self.moto.url(),
        }
    }

    /// The environment a shell (or a test) uses to talk to this sandbox.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let (key, secret) = match self.accounts.get(iam::WORKLOAD_ACCOUNT) {
            Some(k) => (k.access_key_id.clone(), k.secret_access_key.clone()),
            None => ("testing".into(), "testing".into()),
        };
        let mut env = vec![
            ("AWS_ENDPOINT_URL", self.endpoint_url()),
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_REGION", self.region.clone()),
            ("DRD_LAMBDA_DATA_ENDPOINT", self.host.url()),
            ("DRD_LLM_BASE_URL", self.llm_base_url()),
            // The webhook receiver: POST alerts to $DRD_SANDBOX_HOOKS/NAME, read them with GET.
            (
                "DRD_SANDBOX_HOOKS",
                format!("{}/_sandbox/hooks", self.host.url()),
            ),
        ];
        if let (Some(port), Some(token)) = (self.github_port, &self.github_token_file) {
            env.extend(github::env(port, token));
        }
        if let Some(k) = self.accounts.get(iam::STORE_ACCOUNT) {
            // The store account's administrator, `ACCESS_KEY_ID:SECRET` (a test sets up the
            // store's roles with it).
            env.push((
                "DRD_SANDBOX_STORE_ADMIN",
                format!("{}:{}", k.access_key_id, k.secret_access_key),
            ));
        }
        env
    }

    pub fn running(&self) -> bool {
        self.moto.alive() && self.host.alive()
    }
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("sandbox.json")
}

pub fn read_state(dir: &Path) -> Option<State> {
    let bytes = std::fs::read(state_path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The state of a running sandbox, or a clear error telling how to start one.
pub fn running_state(dir: &Path) -> Result<State> {
    match read_state(dir) {
        Some(s) if s.running() => Ok(s),
        Some(_) => Err(Error::failed_hint(
            format!(
                "the sandbox in {} is not running (stale state)",
                dir.display()
            ),
            "run `drd sandbox up`",
        )),
        None => Err(Error::failed_hint(
            format!("no sandbox in {}", dir.display()),
            "run `drd sandbox up` (or pass --dir)",
        )),
    }
}

pub struct UpOptions {
    pub dir: PathBuf,
    /// The moto server command (`moto_server`, or e.g. `python3 -m moto.server`).
    pub moto_cmd: String,
    pub region: String,
    /// The directory whose files seed the lab repository (`None`: an empty repository).
    pub seed: Option<PathBuf>,
    /// IAM mode: moto authorizes every request (iam.rs).
    pub iam: bool,
}

/// What `up` found or did.
pub enum Up {
    Started(State),
    AlreadyRunning(State),
    Restarted { state: State, stale: State },
}

pub async fn up(opts: &UpOptions) -> Result<Up> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| Error::io(format!("creating {}", opts.dir.display()), e))?;
    let previous = read_state(&opts.dir);
    if let Some(s) = &previous {
        if s.running() {
            return Ok(Up::AlreadyRunning(s.clone()));
        }
        // Stale: stop whatever half is left so ports and PIDs are not leaked.
        stop_proc(&s.moto).await;
        stop_proc(&s.host).await;
        let _ = std::fs::remove_file(state_path(&opts.dir));
    }

    // A sandbox that starts gets a fresh lab GitHub: repository (re)seeded, no runs, new token.
    let github_seed = github::prepare(&opts.dir, opts.seed.as_deref())
        .await
        .map_err(|e| {
            Error::failed_hint(
                format!("cannot prepare the lab GitHub: {e}"),
                "check that git is installed and --seed-repo names a readable directory",
            )
        })?;
    let moto = start_moto(opts).await?;
    let accounts = if opts.iam {
        match iam::bootstrap(&moto.url(), &[iam::WORKLOAD_ACCOUNT, iam::STORE_ACCOUNT]).await {
            Ok(a) => a,
            Err(e) => {
                stop_proc(&moto).await;
                return Err(e);
            }
        }
    } else {
        BTreeMap::new()
    };
    let lab_keys = accounts.get(iam::WORKLOAD_ACCOUNT).cloned();
    let host = match start_host(opts, &moto, lab_keys.as_ref()).await {
        Ok(h) => h,
        Err(e) => {
            stop_proc(&moto).await;
            return Err(e);
        }
    };
    let (host, Ports { llm, proxy, github }) = host;
    let token_file = github::token_path(&opts.dir);
    let state = State {
        moto,
        host,
        llm_port: llm,
        proxy_port: Some(proxy),
        github_port: Some(github),
        github_token_file: Some(std::fs::canonicalize(&token_file).unwrap_or(token_file)),
        github_seed,
        region: opts.region.clone(),
        accounts,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let tmp = opts.dir.join("sandbox.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&state).expect("state serializes"),
    )
    .map_err(|e| Error::io("writing the sandbox state", e))?;
    std::fs::rename(&tmp, state_path(&opts.dir))
        .map_err(|e| Error::io("writing the sandbox state", e))?;
    Ok(match previous {
        Some(stale) => Up::Restarted { state, stale },
        None => Up::Started(state),
    })
}

/// Ports come from the kernel's free list and are released before a server binds them, so two
/// sandboxes starting at once can be handed the same port: the loser exits saying so (`lost`
/// in its error) and is started again, on fresh ports, up to five times.
async fn on_fresh_ports<T, F: std::future::Future<Output = Result<T>>>(
    what: &str,
    lost: &str,
    start: impl Fn() -> F,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start().await {
            Err(e) if attempt < 5 && e.to_string().contains(lost) => {
                tracing::warn!("{what} lost a port to another process; starting it again");
            }
            r => return r,
        }
    }
}

async fn start_moto(opts: &UpOptions) -> Result<Proc> {
    on_fresh_ports("moto", "in use", || start_moto_once(opts)).await
}

async fn start_moto_once(opts: &UpOptions) -> Result<Proc> {
    let mut words = opts.moto_cmd.split_whitespace();
    let program = words.next().ok_or_else(|| {
        ConfigError::new("--moto-server", "the moto server command is empty")
            .hint("pass --moto-server moto_server")
    })?;
    let port = host::free_port().map_err(|e| Error::io("finding a free port", e))?;
    let log = std::fs::File::create(opts.dir.join("moto.log"))
        .map_err(|e| Error::io("creating moto.log", e))?;
    let mut cmd = if opts.iam {
        // moto's server through the lab's launcher (iam.rs: signature comparison off).
        let mut c = std::process::Command::new(iam::python_for(program));
        c.args(["-c", iam::LAUNCHER]);
        c
    } else {
        let mut c = std::process::Command::new(program);
        c.args(words);
        c
    };
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io("moto.log", e))?)
        .stderr(log);
    // Never enable moto's request recorder: it writes request bodies (secrets) in clear.
    cmd.env_remove("MOTO_ENABLE_RECORDING");
    // A requested ACM certificate is ISSUED at once: the lab has no DNS validation to wait for
    // (on AWS it takes the validation record and minutes; docs/emulator-gaps.md).
    cmd.env("MOTO_ACM_VALIDATION_WAIT", "0");
    if opts.iam {
        // A bucket is its account's alone, as on AWS without a bucket policy that grants
        // another account (moto shares buckets across accounts by default, and its bucket
        // policies cannot grant: docs/emulator-gaps.md).
        cmd.env("MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS", "false");
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        Error::failed_hint(
            format!("cannot start the moto server ({program}): {e}"),
            format!(
                "install it with ./scripts/setup (pip install '{}') or pass --moto-server CMD",
                moto_requirement()
            ),
        )
    })?;
    let proc = Proc {
        pid: child.id() as i32,
        port,
        marker: "moto".into(),
    };
    let url = proc.url();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(opts.dir.join("moto.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(Error::failed_hint(
                format!("the moto server exited ({status}): {tail}"),
                format!("check the install: pip install '{}'", moto_requirement()),
            ));
        }
        // Ours only once our server says it bound the port: another sandbox's moto may be the
        // one answering on it.
        let bound = std::fs::read_to_string(opts.dir.join("moto.log"))
            .is_ok_and(|l| l.contains(&format!("Running on {url}")));
        if bound {
            if let Ok(r) = http.get(format!("{url}/moto-api/data.json")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(Error::failed(format!(
                "the moto server did not answer on {url} within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The moto `/moto-api/` exposes no version; the launcher trusts the pinned install.
    Ok(proc)
}

/// The ports of the host process's listeners besides the function host's own.
struct Ports {
    llm: u16,
    proxy: u16,
    github: u16,
}

async fn start_host(
    opts: &UpOptions,
    moto: &Proc,
    keys: Option<&iam::Keys>,
) -> Result<(Proc, Ports)> {
    on_fresh_ports("the function host", "Address already in use", || {
        start_host_once(opts, moto, keys)
    })
    .await
}

/// Written by `sandbox serve` once all its listeners are bound.
fn ready_path(dir: &Path) -> PathBuf {
    dir.join("serve.ready")
}

async fn start_host_once(
    opts: &UpOptions,
    moto: &Proc,
    keys: Option<&iam::Keys>,
) -> Result<(Proc, Ports)> {
    let _ = std::fs::remove_file(ready_path(&opts.dir));
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating the drd-sandbox binary", e))?;
    let port = host::free_port().map_err(|e| Error::io("finding a free port", e))?;
    let llm_port = host::free_port().map_err(|e| Error::io("finding a free port", e))?;
    let proxy_port = host::free_port().map_err(|e| Error::io("finding a free port", e))?;
    let github_port = host::free_port().map_err(|e| Error::io("finding a free port", e))?;
    let log = std::fs::File::create(opts.dir.join("host.log"))
        .map_err(|e| Error::io("creating host.log", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve")
        .arg("--dir")
        .arg(&opts.dir)
        .args(["--moto-url", &moto.url()])
        .args(["--host-port", &port.to_string()])
        .args(["--llm-port", &llm_port.to_string()])
        .args(["--proxy-port", &proxy_port.to_string()])
        .args(["--github-port", &github_port.to_string()])
        .env(
            "AWS_ACCESS_KEY_ID",
            keys.map_or("testing", |k| k.access_key_id.as_str()),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            keys.map_or("testing", |k| k.secret_access_key.as_str()),
        )
        .env("AWS_REGION", &opts.region)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io("host.log", e))?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("starting the function host", e))?;
    let proc = Proc {
        pid: child.id() as i32,
        port,
        marker: "sandbox".into(),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(opts.dir.join("host.log")).unwrap_or_default();
            return Err(Error::failed(format!(
                "the function host exited ({status}): {}",
                log.lines().last().unwrap_or("")
            )));
        }
        // Until our host has bound its ports, whatever answers on them is someone else's.
        let ours = ready_path(&opts.dir).exists();
        let host_ok = ours
            && http
                .get(format!("{}/_sandbox/healthz", proc.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        let llm_ok = http
            .get(format!("http://127.0.0.1:{llm_port}/_sandbox/keys"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let proxy_ok = http
            .get(format!("http://127.0.0.1:{proxy_port}/moto-api/data.json"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let github_ok = http
            .get(format!("http://127.0.0.1:{github_port}/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if host_ok && llm_ok && proxy_ok && github_ok {
            let ports = Ports {
                llm: llm_port,
                proxy: proxy_port,
                github: github_port,
            };
            return Ok((proc, ports));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(Error::failed(
                "the function host did not answer within 20 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM the process group, wait up to 5 s, then SIGKILL.
pub async fn stop_proc(p: &Proc) -> bool {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    if !p.alive() {
        return false;
    }
    let pid = Pid::from_raw(p.pid);
    let _ = killpg(pid, Signal::SIGTERM).or_else(|_| kill(pid, Signal::SIGTERM));
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if p.alive() {
        let _ = killpg(pid, Signal::SIGKILL).or_else(|_| kill(pid, Signal::SIGKILL));
    }
    true
}

/// Stop everything `up` started; returns whether anything was running.
pub async fn down(dir: &Path) -> Result<bool> {
    let Some(s) = read_state(dir) else {
        return Ok(false);
    };
    let a = stop_proc(&s.host).await;
    let b = stop_proc(&s.moto).await;
    let _ = std::fs::remove_file(state_path(dir));
    Ok(a || b)
}

/// Run the function host, the LLM stub, the region gate and the lab GitHub until SIGTERM/SIGINT
/// (the hidden `sandbox serve`).
pub async fn serve(
    dir: PathBuf,
    moto_url: String,
    host_port: u16,
    llm_port: u16,
    proxy_port: u16,
    github_port: u16,
) -> Result<()> {
    let gate = gate::Gate::new();
    let h = host::Host::new(moto_url.clone(), dir.clone(), gate.clone());
    let stub = llm::LlmStub::new(Some(dir.join("llm-keys.json")));
    let hl = tokio::net::TcpListener::bind(("127.0.0.1", host_port))
        .await
        .map_err(|e| Error::io(format!("listening on 127.0.0.1:{host_port}"), e))?;
    let ll = tokio::net::TcpListener::bind(("127.0.0.1", llm_port))
        .await
        .map_err(|e| Error::io(format!("listening on 127.0.0.1:{llm_port}"), e))?;
    let pl = tokio::net::TcpListener::bind(("127.0.0.1", proxy_port))
        .await
        .map_err(|e| Error::io(format!("listening on 127.0.0.1:{proxy_port}"), e))?;
    let gl = tokio::net::TcpListener::bind(("127.0.0.1", github_port))
        .await
        .map_err(|e| Error::io(format!("listening on 127.0.0.1:{github_port}"), e))?;
    let run_env = github::run_env(&dir, host_port, llm_port, proxy_port, github_port);
    let lab = github::Lab::open(dir.clone(), github_port, run_env).map_err(Error::failed)?;
    std::fs::write(ready_path(&dir), format!("{}\n", std::process::id()))
        .map_err(|e| Error::io("writing serve.ready", e))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let executor = pipeline::Executor::new(
        moto_url.clone(),
        dir.clone(),
        pipeline::LabUrls {
            gate: format!("http://127.0.0.1:{proxy_port}"),
            host: format!("http://127.0.0.1:{host_port}"),
            llm: format!("http://127.0.0.1:{llm_port}/v1"),
        },
    );
    let _ = gate.pipelines.set(executor.clone());
    let c = tokio::spawn(gate::serve(pl, moto_url, gate, rx.clone()));
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let (hr, sr) = (
        h.router()
            .merge(pipeline::control(executor))
            .merge(lab.control())
            .merge(h.fn_faults.control())
            .merge(std::sync::Arc::new(hooks::Hooks::default()).router()),
        stub.router(),
    );
    let gr = lab
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let rx3 = rx.clone();
    let g =
        tokio::spawn(async move { axum::serve(gl, gr).with_graceful_shutdown(wait(rx3)).await });
    let rx2 = rx.clone();
    let a =
        tokio::spawn(async move { axum::serve(hl, hr).with_graceful_shutdown(wait(rx2)).await });
    let b = tokio::spawn(async move { axum::serve(ll, sr).with_graceful_shutdown(wait(rx)).await });
    tracing::info!(
        host_port,
        llm_port,
        proxy_port,
        "function host, LLM stub and region gate listening"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: killing function processes");
    let _ = tx.send(true);
    h.stop_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let _ = a.await;
        let _ = b.await;
        let _ = c.await;
        let _ = g.await;
    })
    .await;
    Ok(())
}

/// Arm (or, with `times` 0, disarm) the pipeline executor's flaky switch for one action.
pub async fn ci_flaky(
    state: &State,
    pipeline: &str,
    action: &str,
    times: u32,
) -> Result<serde_json::Value> {
    let url = format!("{}/_sandbox/ci/flaky", state.host.url());
    host_call(
        reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({"pipeline": pipeline, "action": action, "times": times})),
        "arm the flaky switch",
    )
    .await
}

/// One control request to the function host; its JSON answer. `what` names the request in
/// errors.
pub(crate) async fn host_call(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<serde_json::Value> {
    let r = req.send().await.map_err(|e| {
        Error::failed(format!(
            "the function host did not answer: {}",
            e.without_url()
        ))
    })?;
    if !r.status().is_success() {
        return Err(Error::failed(format!(
            "the function host refused to {what}: HTTP {}",
            r.status()
        )));
    }
    Ok(r.json().await.unwrap_or_default())
}

/// Fail (`fail = true`) or restore a region in a running sandbox; returns the failed regions
/// and whether anything changed.
pub async fn set_region(state: &State, region: &str, fail: bool) -> Result<(Vec<String>, bool)> {
    let verb = if fail { "fail" } else { "restore" };
    let url = format!("{}/_sandbox/regions/{region}/{verb}", state.host.url());
    let v = host_call(
        reqwest::Client::new().post(url),
        &format!("{verb} {region}"),
    )
    .await?;
    let failed = v["failed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((failed, v["changed"].as_bool().unwrap_or(false)))
}

/// The regions a running sandbox has failed, and its emulator busy clock (ms, requests).
pub async fn gate_stats(state: &State) -> Result<(Vec<String>, u64, u64)> {
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", state.host.url());
        async move {
            let r = http.get(url).send().await.map_err(|e| {
                Error::failed(format!(
                    "the function host did not answer: {}",
                    e.without_url()
                ))
            })?;
            Ok::<serde_json::Value, Error>(r.json().await.unwrap_or_default())
        }
    };
    let regions = get("/_sandbox/regions").await?;
    let stats = get("/_sandbox/stats").await?;
    let failed = regions["failed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((
        failed,
        stats["emulator_busy_ms"].as_u64().unwrap_or(0),
        stats["requests"].as_u64().unwrap_or(0),
    ))
}

/// Tell the LLM stub that a key is valid (or no longer valid). The key never leaves memory
/// except as the request body to the stub on loopback.
pub async fn llm_key(state: &State, key: &secrecy::SecretString, allow: bool) -> Result<u64> {
    use secrecy::ExposeSecret;
    let path = if allow { "allow" } else { "revoke" };
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/_sandbox/keys/{path}",
            state.llm_port
        ))
        .body(key.expose_secret().to_string())
        .send()
        .await
        .map_err(|e| Error::failed(format!("the LLM stub did not answer: {}", e.without_url())))?;
    if !r.status().is_success() {
        return Err(Error::failed(format!(
            "the LLM stub refused: HTTP {}",
            r.status()
        )));
    }
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    Ok(v["allowed"].as_u64().unwrap_or(0))
}

/// Set (or with `None`, only read) the gate's fault plan; returns the injector's state.
pub async fn faults(state: &State, plan: Option<&faults::Plan>) -> Result<faults::Injector> {
    let http = reqwest::Client::new();
    let url = format!("{}/_sandbox/faults", state.host.url());
    let req = match plan {
        Some(p) => http.post(url).json(p),
        None => http.get(url),
    };
    let v = host_call(req, "set the fault plan").await?;
    Ok(faults::Injector {
        plan: serde_json::from_value(v["plan"].clone()).ok(),
        matched: v["matched"].as_u64().unwrap_or(0),
        injected: serde_json::from_value(v["injected"].clone()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_is_pinned_to_an_exact_5_2_version() {
        assert!(
            moto_requirement().starts_with("moto[server]==5.2."),
            "{}",
            moto_requirement()
        );
    }

    #[test]
    fn a_dead_pid_is_not_alive() {
        let p = Proc {
            pid: i32::MAX - 1,
            port: 1,
            marker: "moto".into(),
        };
        assert!(!p.alive());
        // Our own PID is alive but its command line does not carry the marker: a reused PID.
        let me = Proc {
            pid: std::process::id() as i32,
            port: 1,
            marker: "no-such-marker-xyz".into(),
        };
        assert!(!me.alive());
    }
}
