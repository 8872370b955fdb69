//! Leases as compare-and-swap on S3, against the sandbox (moto behind the region gate, which
//! makes each object's writes atomic as S3's are). Interleavings are driven step by step: both
//! takers read the same record before either writes, which is the order in which the old
//! delete-then-create takeover let both win.

use drd::error::Error;
use drd::store::lease::{self, Lease, LeaseRecord};
use drd::store::Store;
use drd_e2e::{text, Sandbox};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REGION: &str = "us-west-2";

async fn store(sb: &Sandbox, bucket: &str, stack: &str) -> Store {
    assert_eq!(REGION, "us-west-2");
    sb.store(bucket, stack).await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Plant a record as another host's process would have left it.
async fn plant(store: &Store, name: &str, token: u64, expires_at: u64) {
    let r = LeaseRecord {
        holder: "drd backup".into(),
        host: "another-host/abc/pidns-1".into(),
        pid: 4242,
        token,
        expires_at,
        ttl_secs: 60,
        nonce: "n0".into(),
        released_by: None,
    };
    store
        .put(
            &lease::lease_key(store, name),
            &serde_json::to_vec(&r).unwrap(),
        )
        .await
        .unwrap();
}

async fn record(store: &Store, name: &str) -> LeaseRecord {
    lease::observe(store, &lease::lease_key(store, name))
        .await
        .unwrap()
        .unwrap()
        .record
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_takeovers_of_one_expired_lease_exactly_one_wins() {
    let sb = Sandbox::start();
    let st = store(&sb, "lease-takeover", "stk").await;
    plant(&st, "store", 7, now() - 5).await;
    let key = lease::lease_key(&st, "store");
    let ttl = Duration::from_secs(60);
    // Both read the same expired record...
    let seen_a = lease::observe(&st, &key).await.unwrap();
    let seen_b = lease::observe(&st, &key).await.unwrap();
    assert_eq!(seen_a.as_ref().unwrap().etag, seen_b.as_ref().unwrap().etag);
    // ...then both write: exactly one wins, with the next token.
    let a = Lease::take(&st, &key, "taker a", ttl, seen_a.as_ref())
        .await
        .unwrap();
    let b = Lease::take(&st, &key, "taker b", ttl, seen_b.as_ref())
        .await
        .unwrap();
    assert!(a.is_some() != b.is_some(), "exactly one takeover wins");
    let winner = a.or(b).unwrap();
    assert_eq!(winner.record.token, 8);
    assert_eq!(record(&st, "store").await.holder, winner.record.holder);
    // The loser, reading again, finds a live holder.
    match Lease::acquire(&st, "store", "taker c", ttl).await {
        Err(Error::LockHeld { holder, .. }) => assert!(holder.contains("taker"), "{holder}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a live lease was taken"),
    }
    winner.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_acquires_of_a_free_lease_give_one_holder() {
    let sb = Sandbox::start();
    let st = store(&sb, "lease-concurrent", "stk").await;
    let ttl = Duration::from_secs(60);
    for round in 0..3 {
        let tries = (0..8).map(|i| {
            let st = st.clone();
            async move { Lease::acquire(&st, "store", &format!("racer {i}"), ttl).await }
        });
        let results = futures::future::join_all(tries).await;
        let won: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one of 8 concurrent takers holds it"
        );
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, Error::LockHeld { .. }), "round {round}: {e}");
            }
        }
        let token = won[0].record.token;
        assert_eq!(token, round + 1, "tokens grow by one per holder");
        for r in results.into_iter().flatten() {
            r.release().await.unwrap();
        }
        // Released, not deleted: the token survives the release.
        let r = record(&st, "store").await;
        assert!(r.released_by.is_some() && r.token == token, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_racing_a_takeover_loses_and_a_stale_takeover_loses() {
    let sb = Sandbox::start();
    let st = store(&sb, "lease-renew", "stk").await;
    let key = lease::lease_key(&st, "runbook-x");
    // Takeover first: the holder's lease expired, another process took it, then the holder's
    // renewal (conditional on its own ETag) fails: it must stop writing.
    let mut holder = Lease::acquire(&st, "runbook-x", "holder", Duration::from_secs(3))
        .await
        .unwrap();
    // Expiries are whole seconds rounded up: a 3 s lease is free after 4 s at most.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let seen = lease::observe(&st, &key).await.unwrap();
    let taker = Lease::take(&st, &key, "taker", Duration::from_secs(60), seen.as_ref())
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(taker.record.token, holder.record.token + 1);
    assert!(!holder.renew(Duration::from_secs(3)).await.unwrap());
    // Giving back a lease that is no longer ours changes nothing.
    holder.release().await.unwrap();
    assert_eq!(record(&st, "runbook-x").await.holder, "taker");
    taker.release().await.unwrap();

    // Renewal first: a taker that read the record before the renewal writes on a stale ETag
    // and loses.
    let mut holder = Lease::acquire(&st, "runbook-x", "holder 2", Duration::from_secs(3))
        .await
        .unwrap();
    // Expiries are whole seconds rounded up: a 3 s lease is free after 4 s at most.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let stale = lease::observe(&st, &key).await.unwrap();
    assert!(holder.renew(Duration::from_secs(60)).await.unwrap());
    let late = Lease::take(
        &st,
        &key,
        "late taker",
        Duration::from_secs(60),
        stale.as_ref(),
    )
    .await
    .unwrap();
    assert!(late.is_none(), "a takeover on a stale read must lose");
    assert_eq!(record(&st, "runbook-x").await.holder, "holder 2");
    holder.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guarded_run_stops_when_its_lease_is_taken() {
    let sb = Sandbox::start();
    let st = store(&sb, "lease-guard", "stk").await;
    let mut l = Lease::acquire(&st, "store", "guarded", Duration::from_secs(3))
        .await
        .unwrap();
    // Someone breaks the lease (as drd unlock --force does) while the work runs.
    let st2 = st.clone();
    let breaker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let noop = |_: &str| {};
        lease::unlock(&st2, "store", "the test", true, Duration::ZERO, &noop)
            .await
            .unwrap()
    });
    let work = tokio::time::sleep(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let lost = l.guard(work).await.expect_err("the work must be stopped");
    assert!(lost.why.contains("took the lease"), "{}", lost.why);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped at the first renewal after the break, not after the work"
    );
    assert_eq!(breaker.await.unwrap().outcome, "broken");
    // A lease renewed all along keeps its work running to the end.
    let mut l = Lease::acquire(&st, "store", "guarded 2", Duration::from_secs(3))
        .await
        .unwrap();
    let out = l
        .guard(async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            42
        })
        .await;
    assert_eq!(out, Ok(42));
    assert!(record(&st, "store").await.expires_at > now(), "renewed");
    l.release().await.unwrap();
}

/// Work that must not stop halfway (a drill's injection and rollback) runs to its end under
/// `keep_while` even when the lease is broken meanwhile; the loss is reported beside its output.
#[tokio::test(flavor = "multi_thread")]
async fn kept_work_runs_to_its_end_and_reports_a_lost_lease() {
    let sb = Sandbox::start();
    let st = store(&sb, "lease-keep", "stk").await;
    let mut l = Lease::acquire(&st, "drill", "rollback", Duration::from_secs(3))
        .await
        .unwrap();
    let st2 = st.clone();
    let breaker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let noop = |_: &str| {};
        lease::unlock(&st2, "drill", "the test", true, Duration::ZERO, &noop)
            .await
            .unwrap()
    });
    let started = std::time::Instant::now();
    let (out, lost) = l
        .keep_while(async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            "undone"
        })
        .await;
    assert_eq!(out, "undone");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "ran to its end"
    );
    let lost = lost.expect("the loss is reported");
    assert!(lost.why.contains("took the lease"), "{}", lost.why);
    assert_eq!(breaker.await.unwrap().outcome, "broken");
    // Kept all along: no loss, and renewed past its TTL.
    let mut l = Lease::acquire(&st, "drill", "rollback 2", Duration::from_secs(3))
        .await
        .unwrap();
    let (out, lost) = l
        .keep_while(async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            7
        })
        .await;
    assert_eq!((out, lost.is_none()), (7, true));
    assert!(record(&st, "drill").await.expires_at > now(), "renewed");
    l.release().await.unwrap();
}

/// Every lease write's answer is lost after S3 applied it (`lost-reply` on every PutObject): the
/// writer reads the record back, finds its own nonce, and knows the lease is its own; without
/// that, each take would end in "held by" itself and each renewal in "taken over".
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_write_whose_answer_is_lost_is_recognised_as_ours() {
    let sb = Sandbox::start();
    let st = store(&sb, "lease-lost-reply", "stk").await;
    sb.faults(&[
        "--rate",
        "1",
        "--kinds",
        "lost-reply",
        "--service",
        "s3",
        "--operation",
        "PutObject",
    ]);
    let mut l = Lease::acquire(&st, "store", "unlucky", Duration::from_secs(60))
        .await
        .expect("the take happened; only its answer was lost");
    assert_eq!(l.record.token, 1);
    assert!(
        l.renew(Duration::from_secs(60)).await.unwrap(),
        "renewed, answer lost"
    );
    l.release().await.unwrap();
    let f = sb.faults(&[]);
    assert!(f["injected"]["lost-reply"].as_u64().unwrap() >= 3, "{f}");
    sb.faults(&["--rate", "0"]);
    let r = record(&st, "store").await;
    assert!(r.released_by.is_some(), "released, answer lost: {r:?}");
    assert_eq!(r.holder, "unlucky");
}

/// Prune racing backup: a backup decides blob reuse from a listing of the store, so it must
/// list only under the store lease; otherwise a prune holding the lease can delete a listed
/// blob that the backup then names without writing it. With a prune holding the lease, `drd
/// backup` and a second `drd prune` exit 3 without a single listing of the store (counted by
/// the gate), and after the release both go through.
#[tokio::test(flavor = "multi_thread")]
async fn prune_racing_backup_nothing_lists_the_store_before_it_holds_the_lease() {
    let sb = Sandbox::start();
    let policy = sb.policy("lease-order");
    let policy = policy.to_str().unwrap();
    let st = store(&sb, "lease-order-points", "lease-order").await;
    // Count the store's listings (a plan that matches them and injects nothing: 1 ms latency).
    sb.faults(&[
        "--rate",
        "1",
        "--kinds",
        "latency=1ms",
        "--service",
        "s3",
        "--operation",
        "ListObjectsV2",
    ]);
    let listings = || sb.faults(&[])["matched"].as_u64().unwrap();
    let prune = Lease::acquire(&st, "store", "drd prune", Duration::from_secs(60))
        .await
        .unwrap();
    for cmd in ["backup", "prune"] {
        let out = sb.drd().args(["--policy", policy, cmd]).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{cmd}: {}", text(&out));
        assert!(text(&out).contains("drd prune"), "{cmd}: {}", text(&out));
    }
    assert_eq!(
        listings(),
        0,
        "a command listed the store without the lease"
    );
    prune.release().await.unwrap();
    // Released: a prune now takes the lease and lists.
    let out = sb
        .drd()
        .args(["--policy", policy, "prune"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        listings() > 0,
        "the prune listed the store once it held the lease"
    );
    sb.faults(&["--rate", "0"]);
}

/// A lease whose holder's work is cancelled (its future dropped, as a daemon does on losing its
/// job lease) is given back at once, so the next holder does not wait out the TTL.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_dropped_with_its_cancelled_work_is_given_back() {
    let sb = Sandbox::start();
    let st = store(&sb, "lease-drop", "stk").await;
    let work = {
        let st = st.clone();
        async move {
            let mut l = Lease::acquire(&st, "store", "cancelled work", Duration::from_secs(60))
                .await
                .unwrap();
            let _ = l.guard(tokio::time::sleep(Duration::from_secs(30))).await;
        }
    };
    // Cancelled after it took the lease.
    let _ = tokio::time::timeout(Duration::from_secs(1), work).await;
    let mut freed = false;
    for _ in 0..50 {
        if record(&st, "store").await.released_by.is_some() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "{:?}", record(&st, "store").await);
    let next = Lease::acquire(&st, "store", "next", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(next.record.token, 2);
    next.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn drd_unlock_refuses_a_renewed_lease_and_breaks_a_dead_one() {
    let sb = Sandbox::start();
    let policy = sb.policy("lease-unlock");
    let st = store(&sb, "lease-unlock-points", "lease-unlock").await;
    let policy = policy.to_str().unwrap();

    // A holder that keeps renewing: unlock watches, sees the renewal and refuses (exit 3).
    let mut live = Lease::acquire(
        &st,
        "runbook-region-redeploy",
        "live run",
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let renewing = async { live.guard(tokio::time::sleep(Duration::from_secs(5))).await };
    let unlock = async {
        tokio::task::spawn_blocking({
            let mut c = sb.drd();
            c.args([
                "--policy",
                policy,
                "unlock",
                "runbook-region-redeploy",
                "--watch",
                "2s",
            ]);
            move || c.output().unwrap()
        })
        .await
        .unwrap()
    };
    let (kept, out) = tokio::join!(renewing, unlock);
    assert!(kept.is_ok(), "the live holder kept its lease");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    live.release().await.unwrap();

    // A holder that died elsewhere (another host id, no renewals): broken, and recorded.
    plant(&st, "runbook-region-redeploy", 41, now() + 600).await;
    let out = sb
        .drd()
        .args([
            "--policy",
            policy,
            "--output",
            "json",
            "unlock",
            "runbook-region-redeploy",
            "--watch",
            "2s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "broken");
    let rec = record(&st, "runbook-region-redeploy").await;
    assert!(
        rec.released_by
            .as_deref()
            .unwrap_or("")
            .contains("broken by"),
        "{rec:?}"
    );
    assert_eq!(rec.token, 41, "breaking keeps the token");
    let next = Lease::acquire(
        &st,
        "runbook-region-redeploy",
        "next",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(next.record.token, 42, "the next holder's token is higher");
    next.release().await.unwrap();

    // A record no drd can read (damage, or a newer format) is never taken over: a take names
    // it, and only unlock breaks it, once its ETag stayed still; tokens go on above it.
    let key = lease::lease_key(&st, "runbook-region-redeploy");
    st.put(&key, b"{\"holder\": \"a newer drd\", \"tok")
        .await
        .unwrap();
    let e = Lease::acquire(&st, "runbook-region-redeploy", "t", Duration::from_secs(60))
        .await
        .err()
        .expect("an unreadable lease record was taken over");
    assert!(
        e.to_string().contains(&key) && e.to_string().contains("drd unlock"),
        "{e}"
    );
    let out = sb
        .drd()
        .args([
            "--policy",
            policy,
            "--output",
            "json",
            "unlock",
            "runbook-region-redeploy",
            "--watch",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let next = Lease::acquire(&st, "runbook-region-redeploy", "t", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        next.record.token >= now() - 60,
        "token {}",
        next.record.token
    );
    next.release().await.unwrap();

    // Nothing held: nothing to do.
    let out = sb
        .drd()
        .args([
            "--policy",
            policy,
            "unlock",
            "runbook-region-redeploy",
            "--watch",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not held"), "{}", text(&out));
}
