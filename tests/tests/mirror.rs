//! `drd mirror` against the lab's git remote over smart HTTP, checked with the real git CLI:
//! the stored bundle verifies and clones to every branch and tag of the remote, the stored zip is
//! `git archive` of the deploy branch file by file, an unchanged remote writes one object, a
//! remote that is down leaves the previous mirror current, `push --from` takes a clone one commit
//! ahead and refuses an unrelated one, `verify --mirror` re-hashes the blobs; and two daemons run
//! each mirror firing once and export the freshness gauges.

use drd_e2e::{root, text, Sandbox};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const RECIPIENT: &str = "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.invalid")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.invalid")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ls-remote` of heads and tags (annotated tags' peeled lines left out): name -> SHA.
fn refs(dir: &Path, what: &str) -> BTreeMap<String, String> {
    git(dir, &["ls-remote", "--heads", "--tags", what])
        .lines()
        .filter(|l| !l.ends_with("^{}"))
        .map(|l| {
            let (sha, name) = l.split_once('\t').unwrap();
            (name.to_string(), sha.to_string())
        })
        .collect()
}

/// A small repository: a nested file, an executable script, a symlink.
fn seed(dir: &Path) -> PathBuf {
    let s = dir.join("seed");
    std::fs::create_dir_all(s.join("src/deep")).unwrap();
    std::fs::write(s.join("README.md"), "the workload\n").unwrap();
    std::fs::write(s.join("src/deep/lib.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(s.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("README.md", s.join("LINK")).unwrap();
    s
}

struct W {
    sb: Sandbox,
    policy: PathBuf,
    name: String,
    work: PathBuf,
}

impl W {
    fn new(name: &str, extra: &str) -> W {
        let tmp = tempfile::tempdir().unwrap().keep();
        let seed = seed(&tmp);
        let sb = Sandbox::start_with(&["--seed-repo", seed.to_str().unwrap()], &[]);
        let policy = sb.policy_with(
            name,
            RECIPIENT,
            &format!(
                "[ci]\nrepository = \"https://github.com/speaker-role/classifier.git\"\nbranch = \"main\"\nmirror_max_age = \"1h\"\n{extra}"
            ),
        );
        W {
            sb,
            policy,
            name: name.into(),
            work: tmp,
        }
    }

    fn drd(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["--policy", self.policy.to_str().unwrap()];
        a.extend_from_slice(args);
        self.sb.run(&a, "")
    }

    fn mirror(&self, args: &[&str]) -> Value {
        let mut a = vec!["--output", "json", "mirror"];
        a.extend_from_slice(args);
        let out = self.drd(&a);
        assert!(out.status.success(), "drd mirror {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn url(&self) -> String {
        self.sb.var("DRD_CI_REPOSITORY")
    }

    async fn blob(&self, hex: &str, to: &Path) {
        let bucket = format!("{}-points", self.name);
        let key = format!("{}/objects/sha256/{}/{hex}", self.name, &hex[..2]);
        let o = self
            .sb
            .s3("us-west-2")
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let b = o.body.collect().await.unwrap().into_bytes();
        std::fs::write(to, b).unwrap();
    }

    async fn pointer(&self) -> Value {
        self.sb
            .get_json(
                "us-west-2",
                &format!("{}-points", self.name),
                &format!("{}/mirror/latest.json", self.name),
            )
            .await
    }
}

/// Every file of a directory tree: relative path -> (bytes, executable), symlinks as their target.
fn files(dir: &Path) -> BTreeMap<String, (Vec<u8>, bool)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, (t.display().to_string().into_bytes(), false));
            } else if meta.is_dir() {
                stack.push(p);
            } else {
                use std::os::unix::fs::PermissionsExt;
                let exec = meta.permissions().mode() & 0o111 != 0;
                out.insert(rel, (std::fs::read(&p).unwrap(), exec));
            }
        }
    }
    out
}

fn unzip(zip: &Path, into: &Path) {
    let out = Command::new("python3")
        .args(["-c", "import sys,zipfile,os\nz=zipfile.ZipFile(sys.argv[1])\nfor i in z.infolist():\n  p=os.path.join(sys.argv[2],i.filename)\n  m=(i.external_attr>>16)\n  if i.is_dir(): os.makedirs(p,exist_ok=True); continue\n  os.makedirs(os.path.dirname(p),exist_ok=True)\n  if (m & 0o170000)==0o120000: os.symlink(z.read(i).decode(),p); continue\n  open(p,'wb').write(z.read(i))\n  if m: os.chmod(p,m & 0o777)\n"])
        .arg(zip)
        .arg(into)
        .output()
        .unwrap();
    assert!(out.status.success(), "unzip: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_stores_a_bundle_and_a_zip_git_agrees_with_and_takes_a_clone_while_the_remote_is_down(
) {
    let w = W::new("mirror-a", "");
    // More history on the remote: a second commit, another branch, a lightweight and an
    // annotated tag.
    let clone = w.work.join("clone");
    git(
        &w.work,
        &["clone", "--quiet", &w.url(), clone.to_str().unwrap()],
    );
    std::fs::write(clone.join("src/deep/lib.rs"), "pub fn f() -> u8 { 1 }\n").unwrap();
    git(&clone, &["commit", "--quiet", "-am", "second"]);
    git(&clone, &["branch", "feature"]);
    git(&clone, &["tag", "v1"]);
    git(&clone, &["tag", "-a", "v2", "-m", "release 2"]);
    git(
        &clone,
        &["push", "--quiet", "origin", "main", "feature", "v1", "v2"],
    );
    let remote = refs(&w.work, &w.url());
    assert_eq!(remote.len(), 4, "{remote:?}");

    let r = w.mirror(&[]);
    assert_eq!(r["changed"], true, "{r}");
    assert_eq!(
        r["objects_written"], 4,
        "bundle, zip, manifest, pointer: {r}"
    );
    assert_eq!(r["head"], remote["refs/heads/main"].as_str(), "{r}");

    // The bundle: verified by git inside a repository, and cloned to every ref of the remote.
    let bundle = w.work.join("mirror.bundle");
    w.blob(r["bundle"]["sha256"].as_str().unwrap(), &bundle)
        .await;
    let scratch = w.work.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    git(&scratch, &["init", "--quiet"]);
    git(&scratch, &["bundle", "verify", bundle.to_str().unwrap()]);
    let restored = w.work.join("restored.git");
    git(
        &w.work,
        &[
            "clone",
            "--quiet",
            "--mirror",
            bundle.to_str().unwrap(),
            restored.to_str().unwrap(),
        ],
    );
    assert_eq!(refs(&w.work, restored.to_str().unwrap()), remote);

    // The zip: git archive of main, file by file (modes and the symlink included).
    let zip = w.work.join("source.zip");
    w.blob(r["zip"]["sha256"].as_str().unwrap(), &zip).await;
    let archive = w.work.join("archive.zip");
    git(
        &clone,
        &[
            "archive",
            "--format=zip",
            "-o",
            archive.to_str().unwrap(),
            "main",
        ],
    );
    let (a, b) = (w.work.join("zip-a"), w.work.join("zip-b"));
    unzip(&zip, &a);
    unzip(&archive, &b);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert_eq!(fa, fb);
    assert!(fa["run.sh"].1, "the script stays executable");
    assert_eq!(fa["LINK"].0, b"README.md");

    // Nothing moved: one small object (the pointer, with the new fetch time).
    let before = w.pointer().await;
    let again = w.mirror(&[]);
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["objects_written"], 1, "{again}");
    assert_eq!(again["manifest"], r["manifest"]);
    let after = w.pointer().await;
    assert!(after["fetched_at"].as_str() > before["fetched_at"].as_str());
    let out = w.drd(&["verify", "--mirror"]);
    assert!(out.status.success(), "{}", text(&out));
    // drd status reports the mirror's freshness, asking the remote (no stack is deployed here,
    // so status itself exits 1; its document is still printed).
    let status = |w: &W| -> Value {
        let out = w.drd(&["--output", "json", "status"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    let st = status(&w);
    assert_eq!(st["mirror"]["manifest"], r["manifest"], "{st}");
    assert_eq!(st["mirror"]["commits_behind"], 0, "{st}");
    assert_eq!(st["mirror"]["stale"], false, "{st}");

    // GitHub is down: the mirror fails and the previous one stays current and valid; a
    // developer's clone one commit ahead becomes the source.
    let out = w.sb.run(&["sandbox", "github", "down"], "");
    assert!(out.status.success(), "{}", text(&out));
    let out = w.drd(&["mirror"]);
    assert!(
        !out.status.success(),
        "a mirror of a remote that is down fails"
    );
    assert!(text(&out).contains("push --from"), "{}", text(&out));
    assert_eq!(w.pointer().await["manifest"], r["manifest"]);
    let st = status(&w);
    assert!(
        st["mirror"]["commits_behind"].is_null(),
        "the remote cannot be asked: {st}"
    );
    assert_eq!(st["mirror"]["manifest"], r["manifest"], "{st}");
    std::fs::write(
        clone.join("README.md"),
        "the workload, fixed during the outage\n",
    )
    .unwrap();
    git(&clone, &["commit", "--quiet", "-am", "hotfix"]);
    let ahead = git(&clone, &["rev-parse", "HEAD"]);
    // A lost cache is rebuilt from the stored bundle.
    let cache = w.sb.dir.path().join("state/mirror");
    std::fs::remove_dir_all(&cache).unwrap();
    let pushed = w.mirror(&["push", "--from", clone.to_str().unwrap()]);
    assert_eq!(pushed["changed"], true, "{pushed}");
    assert_eq!(pushed["head"], ahead.as_str());
    let bundle2 = w.work.join("pushed.bundle");
    w.blob(pushed["bundle"]["sha256"].as_str().unwrap(), &bundle2)
        .await;
    let got = refs(&w.work, bundle2.to_str().unwrap());
    assert_eq!(got["refs/heads/main"], ahead);
    assert_eq!(
        got["refs/tags/v2"], remote["refs/tags/v2"],
        "other refs stay as mirrored"
    );
    assert_eq!(got["refs/heads/feature"], remote["refs/heads/feature"]);

    // An unrelated history is refused, and nothing changes.
    let other = w.work.join("other");
    std::fs::create_dir_all(&other).unwrap();
    git(&other, &["init", "--quiet", "-b", "main"]);
    std::fs::write(other.join("x"), "unrelated\n").unwrap();
    git(&other, &["add", "x"]);
    git(&other, &["commit", "--quiet", "-m", "unrelated"]);
    let out = w.drd(&["mirror", "push", "--from", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not contain the mirrored head"),
        "{}",
        text(&out)
    );
    assert_eq!(w.pointer().await["manifest"], pushed["manifest"]);
    let out = w.drd(&["verify", "--mirror"]);
    assert!(out.status.success(), "{}", text(&out));

    // GitHub is back but without the hotfix: the mirror refuses to drop it; once the hotfix is
    // pushed to the remote, the mirror follows the remote again.
    let out = w.sb.run(&["sandbox", "github", "up"], "");
    assert!(out.status.success(), "{}", text(&out));
    let out = w.drd(&["mirror"]);
    assert!(
        !out.status.success(),
        "a remote without the pushed head is refused"
    );
    assert!(
        text(&out).contains("does not contain the mirrored head"),
        "{}",
        text(&out)
    );
    assert_eq!(w.pointer().await["manifest"], pushed["manifest"]);
    git(&clone, &["push", "--quiet", "origin", "main"]);
    let back = w.mirror(&[]);
    assert_eq!(back["head"], ahead.as_str(), "{back}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_run_each_mirror_firing_once_and_export_its_freshness() {
    let w = W::new(
        "mirror-d",
        "[[daemon.schedule]]\njob = \"mirror\"\ncron = \"*/2 * * * * *\"\njitter = \"300ms\"\n",
    );
    let (pa, pb) = (free_port(), free_port());
    let start = |tag: &str, port: u16| {
        let log = w.sb.dir.path().join(format!("daemon-{tag}.log"));
        let mut c = w.sb.drd();
        c.args([
            "--policy",
            w.policy.to_str().unwrap(),
            "--log-format",
            "json",
            "daemon",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lease-ttl",
            "4s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        (c.spawn().expect("drd daemon"), log)
    };
    let (mut a, log_a) = start("a", pa);
    let (mut b, log_b) = start("b", pb);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let body = reqwest::get(format!("http://127.0.0.1:{pa}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for pid in [a.id(), b.id()] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    let _ = a.wait();
    let _ = b.wait();
    // Each firing ran once, in one daemon or the other.
    let mut ran: Vec<String> = vec![];
    for log in [&log_a, &log_b] {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["fields"]["message"] == "succeeded"
                && v["fields"]["job"]
                    .as_str()
                    .is_some_and(|j| j.contains("mirror"))
            {
                ran.push(v["fields"]["tick"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    let n = ran.len();
    assert!(
        n >= 3,
        "mirror firings that ran: {ran:?}\n{}",
        std::fs::read_to_string(&log_a).unwrap()
    );
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), n, "a firing ran twice: {ran:?}");
    // The freshness gauges, as the daemon exports them.
    let sample = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("{name}{{stack=\"mirror-d\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    };
    assert!(sample("drd_mirror_age_seconds") < 60.0, "{body}");
    assert_eq!(sample("drd_mirror_stale"), 0.0, "{body}");
    assert_eq!(sample("drd_mirror_commits_behind"), 0.0, "{body}");
    let _ = root();
}

/// A mirror killed at any moment leaves a current mirror that verifies: the pointer moves last,
/// after the blobs and the manifest it names.
#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_killed_at_any_moment_leaves_the_previous_mirror_valid() {
    let w = W::new("mirror-k", "");
    let first = w.mirror(&[]);
    let clone = w.work.join("clone");
    git(
        &w.work,
        &["clone", "--quiet", &w.url(), clone.to_str().unwrap()],
    );
    let mut killed_before_pointer = 0;
    for (i, delay) in [20u64, 60, 120, 200, 350, 600, 900].iter().enumerate() {
        std::fs::write(clone.join("README.md"), format!("change {i}\n")).unwrap();
        git(
            &clone,
            &["commit", "--quiet", "-am", &format!("change {i}")],
        );
        git(&clone, &["push", "--quiet", "origin", "main"]);
        let before = w.pointer().await["manifest"].clone();
        let mut c = w.sb.drd();
        c.args(["--policy", w.policy.to_str().unwrap(), "mirror"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        let _ = child.kill();
        let _ = child.wait();
        let now = w.pointer().await["manifest"].clone();
        if now == before {
            killed_before_pointer += 1;
        }
        let out = w.drd(&["verify", "--mirror"]);
        assert!(
            out.status.success(),
            "after a kill at {delay} ms the current mirror must verify: {}",
            text(&out)
        );
        // A leftover store lease is the dead run's: the next mirror takes over once it
        // expires, so break it here rather than wait.
        let _ = w.drd(&["unlock", "store", "--force"]);
    }
    assert!(
        killed_before_pointer > 0,
        "no kill landed before the pointer moved"
    );
    // The next mirror completes from whatever the kills left.
    let last = w.mirror(&[]);
    assert_eq!(last["head"], git(&clone, &["rev-parse", "HEAD"]).as_str());
    assert_ne!(last["manifest"], first["manifest"]);
    let out = w.drd(&["verify", "--mirror"]);
    assert!(out.status.success(), "{}", text(&out));
}
