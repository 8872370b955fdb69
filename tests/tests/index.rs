//! The points index and the newest-point pointer (`<stack>/latest-point.json`), end to end on a
//! sandbox and checked with a second client: built on first use for points from before it,
//! kept by every backup, read by `points list [--last N]`, repaired after a run that died
//! between the pointer and its manifest, found disagreeing by `verify --index` and rebuilt by
//! `points reindex`, segmented past 256 points, rebuilt by prune (DeleteObjects), and never
//! missing a point when two backups race.

use drd_e2e::{text, Sandbox};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const KEY: &str = "sk-e2e-index-0123456789";

struct W {
    sb: Sandbox,
    policy: String,
    name: String,
}

impl W {
    fn drd(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["--policy", self.policy.as_str()];
        a.extend_from_slice(args);
        self.sb.run(&a, "")
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.drd(args);
        assert!(out.status.success(), "drd {args:?}: {}", text(&out));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        serde_json::from_slice(&self.ok(&a).stdout).unwrap()
    }

    fn bucket(&self) -> String {
        format!("{}-points", self.name)
    }

    fn head_key(&self) -> String {
        format!("{}/latest-point.json", self.name)
    }

    /// Point ids whose manifests exist, as a second client lists them.
    async fn listed(&self) -> Vec<String> {
        let prefix = format!("{}/points/", self.name);
        self.sb
            .list_keys("us-west-2", &self.bucket(), &prefix)
            .await
            .iter()
            .map(|k| {
                k.trim_start_matches(&prefix)
                    .trim_end_matches(".json")
                    .to_string()
            })
            .collect()
    }

    fn listed_by_drd(&self, extra: &[&str]) -> Vec<String> {
        let mut a = vec!["points", "list"];
        a.extend_from_slice(extra);
        self.json(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    async fn put(&self, key: &str, body: &Value) {
        self.sb
            .s3("us-west-2")
            .await
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(serde_json::to_vec(body).unwrap().into())
            .send()
            .await
            .unwrap();
    }

    async fn delete(&self, key: &str) {
        self.sb
            .s3("us-west-2")
            .await
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .unwrap();
    }
}

async fn world(name: &str, extra: &str) -> W {
    let sb = Sandbox::start();
    sb.allow_key(KEY);
    let policy = sb.policy_with(
        name,
        "age1nl9upv528fhapk9tpcejgcthvxt9g7nvdygteey9ekltsxmxjs3q9u3u2k",
        extra,
    );
    let policy = policy.to_str().unwrap().to_string();
    sb.deploy(&policy, KEY);
    W {
        sb,
        policy,
        name: name.to_string(),
    }
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn the_index_is_built_kept_repaired_and_rebuilt() {
    let w = world("ix-a", "").await;
    for _ in 0..3 {
        w.ok(&["backup"]);
    }
    w.ok(&["verify", "--index"]);
    let listed = w.listed().await;
    assert_eq!(w.listed_by_drd(&[]), listed);
    assert_eq!(w.listed_by_drd(&["--last", "2"]), listed[1..]);
    let v = w.json(&["verify", "--point", "latest"]);
    assert_eq!(v[0]["id"], json!(listed[2]), "{v}");

    // A store from before the index: listed from the manifests, indexed by the next backup.
    w.delete(&w.head_key()).await;
    assert_eq!(w.listed_by_drd(&[]), listed);
    let out = w.drd(&["verify", "--index"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("drd points reindex"), "{}", text(&out));
    w.ok(&["backup"]);
    w.ok(&["verify", "--index"]);
    let listed = w.listed().await;
    assert_eq!(listed.len(), 4);
    assert_eq!(w.listed_by_drd(&[]), listed);

    // A run that died between the pointer and its manifest: the pointer names a point that
    // never appeared. Lists skip it, verify accepts it, the next backup drops it.
    let mut head = w.sb.get_json("us-west-2", &w.bucket(), &w.head_key()).await;
    let ghost = "29990101T000000000Z-00ghost0";
    head["id"] = json!(ghost);
    let mut entry = head["index"]["recent"][0].clone();
    entry["id"] = json!(ghost);
    head["index"]["recent"].as_array_mut().unwrap().push(entry);
    w.put(&w.head_key(), &head).await;
    assert_eq!(w.listed_by_drd(&[]), listed);
    assert_eq!(w.listed_by_drd(&["--last", "1"]), listed[3..]);
    w.ok(&["verify", "--index"]);
    w.ok(&["backup"]);
    let listed = w.listed().await;
    assert_eq!(listed.len(), 5);
    w.ok(&["verify", "--index"]);
    assert_eq!(w.listed_by_drd(&[]), listed);
    let head = w.sb.get_json("us-west-2", &w.bucket(), &w.head_key()).await;
    assert_eq!(head["id"], json!(listed[4]), "{head}");
    assert!(
        !head.to_string().contains(ghost),
        "the ghost entry stayed: {head}"
    );

    // An index that disagrees with the manifests (one removed by hand): verify names it,
    // reindex rebuilds it.
    let prefix = format!("{}/points/", w.name);
    w.delete(&format!("{prefix}{}.json", listed[0])).await;
    let out = w.drd(&["verify", "--index"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&listed[0]), "{}", text(&out));
    let r = w.json(&["points", "reindex"]);
    assert_eq!(r["points"], 4, "{r}");
    w.ok(&["verify", "--index"]);
    assert_eq!(w.listed_by_drd(&[]), w.listed().await);
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn segments_hold_older_points_and_prune_rebuilds_them() {
    let w = world("ix-b", "[retention]\nkeep_last = 5\n").await;
    w.ok(&["backup"]);
    // 300 older points through a second client: copies of the real manifest, a second apart.
    let real = w.listed().await[0].clone();
    let body =
        w.sb.get_json(
            "us-west-2",
            &w.bucket(),
            &format!("{}/points/{real}.json", w.name),
        )
        .await;
    let s3 = w.sb.s3("us-west-2").await;
    let puts = (0..300).map(|i| {
        let mut m = body.clone();
        let id = format!(
            "20200101T{:02}{:02}{:02}000Z-syn{i:05}",
            i / 3600,
            (i / 60) % 60,
            i % 60
        );
        m["id"] = json!(id);
        m["created_at"] = json!(format!(
            "2020-01-01T{:02}:{:02}:{:02}.000Z",
            i / 3600,
            (i / 60) % 60,
            i % 60
        ));
        let key = format!("{}/points/{id}.json", w.name);
        let s3 = s3.clone();
        let bucket = w.bucket();
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(serde_json::to_vec(&m).unwrap().into())
                .send()
                .await
                .unwrap();
        }
    });
    futures::future::join_all(puts).await;
    let out = w.drd(&["verify", "--index"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "300 points the index does not know"
    );
    let r = w.json(&["points", "reindex"]);
    assert_eq!(r["points"], 301, "{r}");
    assert_eq!(r["segments"], 1, "{r}");
    assert_eq!(r["recent"], 45, "{r}");
    w.ok(&["verify", "--index"]);
    let listed = w.listed().await;
    assert_eq!(w.listed_by_drd(&[]), listed);
    // The newest 50 come from the recent entries and the one segment.
    assert_eq!(
        w.listed_by_drd(&["--last", "50"]),
        listed[listed.len() - 50..]
    );
    let segs =
        w.sb.list_keys("us-west-2", &w.bucket(), &format!("{}/index/", w.name))
            .await;
    assert_eq!(segs.len(), 1, "{segs:?}");

    // Prune (keep_last 5): manifests deleted in batches, the index rebuilt without them, the
    // old segment gone.
    let out = w.ok(&["prune"]);
    assert!(text(&out).contains("deleted"), "{}", text(&out));
    let listed = w.listed().await;
    assert_eq!(listed.len(), 5);
    w.ok(&["verify", "--index"]);
    assert_eq!(w.listed_by_drd(&[]), listed);
    let segs =
        w.sb.list_keys("us-west-2", &w.bucket(), &format!("{}/index/", w.name))
            .await;
    assert!(segs.is_empty(), "{segs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_backups_never_lose_an_index_entry() {
    let w = world("ix-c", "").await;
    w.ok(&["backup"]);
    let mut won = 0;
    for _ in 0..5 {
        let run = || {
            let mut c = w.sb.drd();
            c.args(["--policy", &w.policy, "backup"]);
            std::thread::spawn(move || c.output().unwrap())
        };
        let (a, b) = (run(), run());
        for out in [a.join().unwrap(), b.join().unwrap()] {
            match out.status.code() {
                Some(0) => won += 1,
                // The other held the store lease: refused, nothing written.
                Some(3) => assert!(text(&out).contains("held"), "{}", text(&out)),
                c => panic!("exit {c:?}: {}", text(&out)),
            }
        }
    }
    assert!(
        won >= 5,
        "at least one backup of each race succeeds ({won})"
    );
    let listed = w.listed().await;
    assert_eq!(listed.len(), won + 1);
    w.ok(&["verify", "--index"]);
    let by_drd: BTreeSet<String> = w.listed_by_drd(&[]).into_iter().collect();
    assert_eq!(by_drd, listed.into_iter().collect());
}
