//! What the daemon tests share: a deployed stack with a daemon policy, daemons started as real
//! processes with JSON logs, and readers for their logs and `/metrics`.

use crate::{bootstrap, text, Sandbox};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
pub const KEY: &str = "sk-e2e-daemon-0123456789";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct World {
    pub sb: Sandbox,
    pub name: String,
    pub policy: PathBuf,
}

impl World {
    /// Deploy the stack, and write a policy whose daemon section is `daemon`.
    pub async fn new(name: &str, daemon: &str) -> World {
        let sb = Sandbox::start();
        sb.allow_key(KEY);
        let policy = sb.policy_with(
            name,
            "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k",
            daemon,
        );
        let out = sb.run(
            &[
                "--policy",
                policy.to_str().unwrap(),
                "deploy",
                "--bootstrap",
                bootstrap().to_str().unwrap(),
            ],
            KEY,
        );
        assert!(out.status.success(), "{}", text(&out));
        World {
            sb,
            name: name.into(),
            policy,
        }
    }

    /// Start `drd daemon` with JSON logs to a file.
    pub fn start(&self, tag: &str, port: u16, extra: &[&str]) -> (Child, PathBuf) {
        let log = self.sb.dir.path().join(format!("daemon-{tag}.log"));
        let mut c = self.sb.drd();
        c.args([
            "--policy",
            self.policy.to_str().unwrap(),
            "--log-format",
            "json",
            "daemon",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        (c.spawn().expect("start drd daemon"), log)
    }

    /// (point id, scheduled firing) of every manifest in the store.
    pub async fn points(&self) -> Vec<(String, Option<String>)> {
        let bucket = format!("{}-points", self.name);
        let prefix = format!("{}/points/", self.name);
        let mut v = vec![];
        for k in self.sb.list_keys("us-west-2", &bucket, &prefix).await {
            let m = self.sb.get_json("us-west-2", &bucket, &k).await;
            v.push((
                m["id"].as_str().unwrap().to_string(),
                m["scheduled"]["tick"].as_str().map(str::to_string),
            ));
        }
        v
    }
}

pub fn wait_for_log(log: &PathBuf, what: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(f) = std::fs::File::open(log) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let msg = v["fields"]["message"].as_str().unwrap_or("");
                    if msg.contains(what) || line.contains(what) {
                        return v;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {what:?} in {}: {}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// The metrics, or `None` while the daemon does not listen yet.
pub async fn try_scrape(port: u16) -> Option<prometheus_parse::Scrape> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).ok()
}

pub async fn scrape(port: u16) -> prometheus_parse::Scrape {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text")
}

pub fn gauge(s: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && x.labels.get(label.0) == Some(label.1))
        .and_then(|x| match x.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

pub fn counter(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}
