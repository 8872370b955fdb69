//! Leases in the store: `locks/<name>`, one JSON record each, changed only by compare-and-swap.
//!
//! | who                | writes                                  | condition                     |
//! |--------------------|-----------------------------------------|-------------------------------|
//! | the first taker    | a new record, token 1                   | `If-None-Match: *`            |
//! | a taker            | a record with token + 1                 | `If-Match` on the ETag it read, and only when the record read was released, expired, or held by a dead process with this host id |
//! | the holder         | its record with a later expiry (renew)  | `If-Match` on its last ETag   |
//! | the holder         | its record, released (`released_by`)    | `If-Match` on its last ETag   |
//! | `drd unlock`       | the record, released (`released_by`)    | `If-Match` on the ETag it read, after seeing no renewal (or `--force`) |
//!
//! Every record carries a random nonce, so no two writes have the same ETag. The record is never
//! deleted: a released lease keeps its token, so fencing tokens only grow. A 412 (S3's answer to
//! a failed condition, or 409 for a concurrent conditional write) means someone else wrote first:
//! the taker reads again, the holder has lost the lease. Holders renew every third of the TTL
//! and stop their work when a renewal fails (`Lease::guard`).

use super::Store;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Overrides this process's host id (`host_id`).
pub const HOST_ID_ENV: &str = "DRD_HOST_ID";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    /// The holder's host id (`host_id`).
    pub host: String,
    pub pid: u32,
    pub token: u64,
    /// Seconds since the epoch; 0 once released.
    pub expires_at: u64,
    /// The TTL the holder renews with (seconds; 0 in records of older drd versions).
    #[serde(default)]
    pub ttl_secs: u64,
    /// Random per write: every write has its own ETag.
    #[serde(default)]
    pub nonce: String,
    /// Who gave the lease back, or broke it (`drd unlock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

impl LeaseRecord {
    /// Free to take: released, or expired.
    pub fn is_free(&self, now: u64) -> bool {
        self.released_by.is_some() || self.expires_at <= now
    }

    fn describe(&self) -> String {
        format!("{} (pid {} on {})", self.holder, self.pid, self.host)
    }
}

/// What the store holds for a lease: the record (`None` when it does not parse) and its ETag.
#[derive(Debug, Clone)]
pub struct Observed {
    pub record: Option<LeaseRecord>,
    pub etag: String,
}

pub struct Lease {
    store: Store,
    key: String,
    pub record: LeaseRecord,
    etag: String,
    /// The TTL of the last write of the record, and when (this process's monotonic clock).
    ttl: Duration,
    written: Instant,
    /// Given back (or known lost): nothing for `Drop` to do.
    done: bool,
}

impl Drop for Lease {
    /// A lease dropped without `release` (its holder's work was cancelled, or a `?` left
    /// early) is given back in the background when a runtime is there to do it, so the next
    /// holder need not wait out the TTL. Best effort: the TTL still bounds a lease whose
    /// holder died.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, key, etag) = (self.store.clone(), self.key.clone(), self.etag.clone());
            let record = released(&self.record, "released when its work stopped");
            rt.spawn(async move {
                // A few tries: a store that fails now and then must not keep the lease held.
                for attempt in 0..5u32 {
                    match write(&store, &key, &record, Some(&etag)).await {
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(lease = %key, error = %e, attempt, "cannot give back a dropped lease; retrying");
                            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        }
                    }
                }
            });
        }
    }
}

/// `r` given back: expiry 0, token kept, a fresh nonce, and who gave it back.
fn released(r: &LeaseRecord, how: &str) -> LeaseRecord {
    let mut done = r.clone();
    done.expires_at = 0;
    done.nonce = nonce();
    done.released_by = Some(format!("{} ({how})", r.holder));
    done
}

/// Why a guarded piece of work was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLost {
    pub key: String,
    pub why: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When a lease written now for `ttl` expires, in whole seconds rounded up: a lease never
/// looks expired before its full TTL has passed.
fn expiry(ttl: Duration) -> u64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (now_ms + ttl.as_millis() as u64).div_ceil(1000)
}

fn nonce() -> String {
    use sha2::{Digest, Sha256};
    let seed = format!(
        "{:?}{}{:?}",
        SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    let n = NONCE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    hex::encode(&Sha256::digest(format!("{seed}{n}").as_bytes())[..8])
}

static NONCE_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// This process's host identity, as lease records name it: `DRD_HOST_ID` when set, else the
/// hostname with the machine id and the PID namespace, so two containers that share a hostname
/// (but not a PID namespace) never take each other's PIDs for their own.
pub fn host_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        if let Some(id) = std::env::var(HOST_ID_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            return id.trim().to_string();
        }
        // The machine id is confidential (machine-id(5)): only a digest of it is shown.
        let machine = std::fs::read_to_string("/etc/machine-id")
            .map(|s| {
                use sha2::{Digest, Sha256};
                hex::encode(&Sha256::digest(format!("drd host id\n{}", s.trim()).as_bytes())[..6])
            })
            .unwrap_or_default();
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| {
                p.to_string_lossy()
                    .trim_start_matches("pid:[")
                    .trim_end_matches(']')
                    .to_string()
            })
            .unwrap_or_default();
        format!("{}/{machine}/pidns-{pidns}", hostname())
    })
    .clone()
}

fn pid_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

pub fn lease_key(store: &Store, name: &str) -> String {
    format!("{}locks/{name}", store.prefix)
}

/// Read a lease record with its ETag; `None` when there is none.
pub async fn observe(store: &Store, key: &str) -> Result<Option<Observed>> {
    Ok(store
        .get_versioned(key)
        .await?
        .map(|(body, etag)| Observed {
            record: serde_json::from_slice(&body).ok(),
            etag,
        }))
}

/// The one write a lease ever makes: `If-None-Match: *` (`etag` None) or `If-Match: etag`.
/// `Ok(None)` when the condition failed (someone else wrote first); else the new ETag.
///
/// A write S3 applied whose answer was lost (a timeout, a dropped connection, and a retry that
/// then meets its own write) fails its condition too: on a failed condition the record is read
/// back, and if it carries this write's nonce the write is ours after all.
async fn write(
    store: &Store,
    key: &str,
    record: &LeaseRecord,
    etag: Option<&str>,
) -> Result<Option<String>> {
    let body = serde_json::to_vec(record).expect("lease serializes");
    let ours = |o: Option<Observed>| {
        o.and_then(|o| o.record.filter(|r| r.nonce == record.nonce).map(|_| o.etag))
    };
    match store.put_if(key, &body, etag).await {
        Ok(Some(new)) => Ok(Some(new)),
        Ok(None) => Ok(ours(observe(store, key).await?)),
        // No answer at all: the write may have happened. If the record carries our nonce it
        // did; if not, the error stands.
        Err(e) => match observe(store, key).await {
            Ok(o) => match ours(o) {
                Some(etag) => Ok(Some(etag)),
                None => Err(e),
            },
            Err(_) => Err(e),
        },
    }
}

fn held_error(store: &Store, key: &str, p: &LeaseRecord) -> Error {
    Error::LockHeld {
        name: format!("s3://{}/{key}", store.bucket),
        holder: p.describe(),
        until: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(p.expires_at))
            .to_string(),
    }
}

impl Lease {
    /// Take the lease `name` for `ttl`, or fail with `Error::LockHeld` (exit 3).
    pub async fn acquire(store: &Store, name: &str, what: &str, ttl: Duration) -> Result<Lease> {
        let key = lease_key(store, name);
        for _ in 0..8 {
            let seen = observe(store, &key).await?;
            if let Some(l) = Self::take(store, &key, what, ttl, seen.as_ref()).await? {
                return Ok(l);
            }
            // Someone else wrote between our read and our write: read again.
        }
        Err(Error::failed(format!(
            "could not take the lease {key}: it kept changing"
        )))
    }

    /// Like `acquire`, but a lease held by someone who stops renewing is waited for, up to
    /// `max_wait` (a resume after the previous holder died elsewhere).
    pub async fn acquire_waiting(
        store: &Store,
        name: &str,
        what: &str,
        ttl: Duration,
        max_wait: Duration,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Lease> {
        let deadline = Instant::now() + max_wait;
        let mut told = false;
        loop {
            match Self::acquire(store, name, what, ttl).await {
                Err(Error::LockHeld { holder, until, .. }) if Instant::now() < deadline => {
                    let line = format!(
                        "waiting for the lease {name}: held by {holder} until {until} unless renewed"
                    );
                    // Said once whatever the output mode (a wait must never look like a hang).
                    if !told {
                        tracing::warn!("{line}");
                        told = true;
                    }
                    progress(&line);
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(left.min(Duration::from_secs(2))).await;
                }
                r => return r,
            }
        }
    }

    /// One attempt to take the lease from what was seen at `key` (`None`: nothing there).
    /// `Ok(None)` when another writer changed it first; `Err(LockHeld)` while its holder lives.
    /// Public so race tests can interleave two takers deterministically.
    pub async fn take(
        store: &Store,
        key: &str,
        what: &str,
        ttl: Duration,
        seen: Option<&Observed>,
    ) -> Result<Option<Lease>> {
        let token = match seen {
            None => 1,
            Some(o) => match &o.record {
                Some(p) => {
                    let dead_here = p.host == host_id() && !pid_alive(p.pid);
                    if !p.is_free(now_secs()) && !dead_here {
                        return Err(held_error(store, key, p));
                    }
                    p.token + 1
                }
                // A record this drd cannot read (a newer format, or damage) may belong to a
                // holder that still runs: never taken over silently. `drd unlock` breaks it
                // after watching it stay unchanged, with the clock's seconds as the token floor.
                None => {
                    return Err(Error::failed_hint(
                        format!(
                            "the lease record s3://{}/{key} is unreadable (damaged, or written by a newer drd): nothing tells whether its holder still runs",
                            store.bucket
                        ),
                        format!(
                            "if no drd holds it, break it with drd unlock {} (it watches the record first)",
                            key.rsplit('/').next().unwrap_or(key)
                        ),
                    ))
                }
            },
        };
        let record = LeaseRecord {
            holder: what.to_string(),
            host: host_id(),
            pid: std::process::id(),
            token,
            expires_at: expiry(ttl),
            ttl_secs: ttl.as_secs(),
            nonce: nonce(),
            released_by: None,
        };
        let etag = seen.map(|o| o.etag.as_str());
        Ok(write(store, key, &record, etag).await?.map(|etag| Lease {
            store: store.clone(),
            key: key.to_string(),
            record,
            etag,
            ttl,
            written: Instant::now(),
            done: false,
        }))
    }

    /// Extend the lease by `ttl` from now. `Ok(false)` when it is no longer ours (it was taken
    /// over or broken): the holder must stop writing.
    pub async fn renew(&mut self, ttl: Duration) -> Result<bool> {
        // The expiry is computed before the request leaves: that, not the answer's arrival, is
        // what the lease is valid from.
        let sent = Instant::now();
        let mut next = self.record.clone();
        next.expires_at = expiry(ttl);
        next.ttl_secs = ttl.as_secs();
        next.nonce = nonce();
        match write(&self.store, &self.key, &next, Some(&self.etag)).await? {
            Some(etag) => {
                self.record = next;
                self.etag = etag;
                (self.ttl, self.written) = (ttl, sent);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Until when the lease is surely ours by this process's monotonic clock (a wall-clock jump
    /// does not move it): its TTL from the moment its last successful write was sent, less a
    /// sixth of the TTL for clocks that disagree.
    fn safe_until(&self) -> Instant {
        self.written + self.ttl - self.ttl / 6
    }

    /// Run `work` while renewing the lease every third of its TTL. A renewal that finds the
    /// lease taken stops `work` (it is dropped at its next await) and says why; failed renewals
    /// are tried again, but never past `safe_until`: when that comes without a renewal, the work
    /// is stopped before anyone else could take the lease.
    pub async fn guard<F: Future>(&mut self, work: F) -> std::result::Result<F::Output, LeaseLost> {
        let ttl = self.ttl;
        let key = self.key.clone();
        let lost = |why: String| LeaseLost {
            key: key.clone(),
            why,
        };
        let renewer = async {
            let mut last_error = String::new();
            loop {
                let now = Instant::now();
                let deadline = self.safe_until();
                if now >= deadline {
                    return lost(format!(
                        "the lease could not be renewed before it expired{last_error}"
                    ));
                }
                // Renew a third of the TTL after the last good write; after a failure, retry
                // soon, each attempt cut off at the deadline.
                let next = if last_error.is_empty() {
                    self.written + ttl / 3
                } else {
                    now + Duration::from_millis(200)
                };
                tokio::time::sleep_until(next.min(deadline).into()).await;
                let left = self.safe_until().saturating_duration_since(Instant::now());
                match tokio::time::timeout(left.min(ttl / 3), self.renew(ttl)).await {
                    Ok(Ok(true)) => last_error.clear(),
                    Ok(Ok(false)) => {
                        return lost("another holder took the lease over (or it was broken)".into())
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %key, error = %e, "lease renewal failed; retrying");
                        last_error = format!(": {e}");
                    }
                    Err(_) => {
                        tracing::warn!(lease = %key, "lease renewal timed out; retrying");
                        last_error = " (timeout)".into();
                    }
                }
            }
        };
        // Boxed: guarded work (a whole backup) is a large future, and debug builds run their
        // tokio workers on small stacks.
        let work = Box::pin(work);
        tokio::select! {
            out = work => Ok(out),
            lost = renewer => Err(lost),
        }
    }

    /// Run `work` to its end while renewing the lease, for work that must not stop halfway (a
    /// drill's injection and rollback): a loss is returned beside the output instead of
    /// stopping the work.
    pub async fn keep_while<F: Future>(&mut self, work: F) -> (F::Output, Option<LeaseLost>) {
        let mut work = Box::pin(work);
        match self.guard(&mut work).await {
            Ok(out) => (out, None),
            Err(lost) => (work.await, Some(lost)),
        }
    }

    /// Give the lease back: its record is marked released (keeping the token) only if it is
    /// still ours.
    pub async fn release(mut self) -> Result<()> {
        self.done = true;
        let done = released(&self.record, "released");
        write(&self.store, &self.key, &done, Some(&self.etag)).await?;
        Ok(())
    }
}

/// Release `key` if this process holds it (for a holder whose `Lease` value is gone, such as a
/// daemon's aborted job at shutdown). True when it was ours and is now released.
pub async fn release_if_ours(store: &Store, key: &str) -> Result<bool> {
    let Some(o) = observe(store, key).await? else {
        return Ok(false);
    };
    let Some(mut r) = o.record else {
        return Ok(false);
    };
    if r.is_free(now_secs()) || r.pid != std::process::id() || r.host != host_id() {
        return Ok(false);
    }
    r = released(&r, "released at shutdown");
    Ok(write(store, key, &r, Some(&o.etag)).await?.is_some())
}

/// What `drd unlock` did.
#[derive(Debug, Clone, Serialize)]
pub struct Unlocked {
    pub lease: String,
    /// `broken`, `not_held` (free already).
    pub outcome: String,
    pub holder: Option<String>,
    pub token: Option<u64>,
}

/// Break the lease `name`: only when its holder has stopped renewing (its record does not
/// change while `watch` passes) unless `force`. The broken record names who broke it and keeps
/// the token, so the next holder's token is higher.
pub async fn unlock(
    store: &Store,
    name: &str,
    by: &str,
    force: bool,
    watch: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Unlocked> {
    let key = lease_key(store, name);
    let shown = format!("s3://{}/{key}", store.bucket);
    let Some(mut seen) = observe(store, &key).await? else {
        return Ok(Unlocked {
            lease: shown,
            outcome: "not_held".into(),
            holder: None,
            token: None,
        });
    };
    if seen.record.is_none() && !force {
        // Unreadable: only its ETag can show a holder renewing it.
        progress(&format!(
            "watching the unreadable record {shown} for {} to see whether anything still renews it",
            humantime::format_duration(watch)
        ));
        tokio::time::sleep(watch).await;
        match observe(store, &key).await? {
            Some(a) if a.etag == seen.etag => seen = a,
            _ => {
                return Err(Error::failed(format!(
                    "{shown} changed while drd watched it: something still writes it; run drd unlock again, or --force"
                )))
            }
        }
    }
    if let Some(r) = &seen.record {
        if r.is_free(now_secs()) {
            return Ok(Unlocked {
                lease: shown,
                outcome: "not_held".into(),
                holder: Some(r.describe()),
                token: Some(r.token),
            });
        }
        if !force && r.ttl_secs == 0 {
            // A record of an older drd: its holder never renews, so silence proves nothing.
            return Err(held_error(store, &key, r));
        }
        if !force {
            progress(&format!(
                "watching {shown} for {} to see whether {} still renews it",
                humantime::format_duration(watch),
                r.describe()
            ));
            tokio::time::sleep(watch).await;
            let again = observe(store, &key).await?;
            match again {
                Some(a) if a.etag == seen.etag => seen = a,
                Some(Observed { record: Some(n), .. }) if n.is_free(now_secs()) => {
                    return Ok(Unlocked {
                        lease: shown,
                        outcome: "not_held".into(),
                        holder: Some(n.describe()),
                        token: Some(n.token),
                    })
                }
                Some(Observed { record: Some(n), .. }) => {
                    return Err(Error::LockHeld {
                        name: shown,
                        holder: format!("{} (it renewed the lease while drd watched; pass --force to break it anyway)", n.describe()),
                        until: humantime::format_rfc3339_seconds(
                            UNIX_EPOCH + Duration::from_secs(n.expires_at),
                        )
                        .to_string(),
                    })
                }
                _ => {
                    return Err(Error::failed(format!(
                        "{shown} changed while drd watched it: run drd unlock again"
                    )))
                }
            }
        }
    }
    let broken = LeaseRecord {
        holder: seen
            .record
            .as_ref()
            .map(|r| r.holder.clone())
            .unwrap_or_else(|| "unreadable record".into()),
        host: seen
            .record
            .as_ref()
            .map(|r| r.host.clone())
            .unwrap_or_default(),
        pid: seen.record.as_ref().map(|r| r.pid).unwrap_or(0),
        token: seen
            .record
            .as_ref()
            .map(|r| r.token)
            .unwrap_or_else(now_secs),
        expires_at: 0,
        ttl_secs: 0,
        nonce: nonce(),
        released_by: Some(format!(
            "broken by {by} (drd unlock{})",
            if force { " --force" } else { "" }
        )),
    };
    match write(store, &key, &broken, Some(&seen.etag)).await? {
        Some(_) => Ok(Unlocked {
            lease: shown,
            outcome: "broken".into(),
            holder: seen.record.as_ref().map(LeaseRecord::describe),
            token: Some(broken.token),
        }),
        None => Err(Error::failed(format!(
            "{shown} changed while drd was breaking it: run drd unlock again"
        ))),
    }
}
