//! Leases in the store: `locks/<name>` created with `If-None-Match: *`, holding who took it,
//! until when, and a fencing token. An expired lease, or one whose holder process on this host
//! is gone (a killed run), may be taken over.

use super::{status_of, Store};
use crate::aws::aws_error;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub token: u64,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

pub struct Lease {
    store: Store,
    key: String,
    pub record: LeaseRecord,
    /// The TTL of the last write of the record, and when (this process's monotonic clock).
    ttl: Duration,
    written: Instant,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

fn pid_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

impl Lease {
    /// Take the lease `name` for `ttl`, or fail with `Error::LockHeld` (exit 3).
    pub async fn acquire(store: &Store, name: &str, what: &str, ttl: Duration) -> Result<Lease> {
        let key = format!("{}locks/{name}", store.prefix);
        let mut token = 1;
        for _ in 0..4 {
            // Optimistic: create the lease; only on a conflict look at who holds it.
            let record = LeaseRecord {
                holder: what.to_string(),
                host: hostname(),
                pid: std::process::id(),
                token,
                expires_at: now_secs() + ttl.as_secs(),
            };
            let body = serde_json::to_vec(&record).expect("lease serializes");
            match store
                .s3
                .put_object()
                .bucket(&store.bucket)
                .key(&key)
                .if_none_match("*")
                .body(body.into())
                .send()
                .await
            {
                Ok(_) => {
                    return Ok(Lease {
                        store: store.clone(),
                        key,
                        record,
                        ttl,
                        written: Instant::now(),
                    })
                }
                Err(e) if status_of(&e) == Some(412) => {}
                Err(e) => return Err(aws_error("s3", "PutObject", e)),
            }
            let Some(current) = store.get(&key).await? else {
                continue; // released meanwhile: try again
            };
            // An unreadable lease is a torn write: replace it.
            if let Ok(p) = serde_json::from_slice::<LeaseRecord>(&current) {
                let dead_here = p.host == hostname() && !pid_alive(p.pid);
                if p.expires_at > now_secs() && !dead_here {
                    return Err(Error::LockHeld {
                        name: format!("s3://{}/{key}", store.bucket),
                        holder: format!("{} (pid {} on {})", p.holder, p.pid, p.host),
                        until: humantime::format_rfc3339_seconds(
                            UNIX_EPOCH + Duration::from_secs(p.expires_at),
                        )
                        .to_string(),
                    });
                }
                // Expired, or its holder died on this host: take it over.
                token = p.token + 1;
            }
            store.delete(&key).await?;
        }
        Err(Error::failed(format!(
            "could not take the lease {key}: it kept changing"
        )))
    }

    /// Extend the lease by `ttl` from now. `Ok(false)` when it is no longer ours (it expired
    /// and another holder took it). The read-then-write leaves a window of one round trip, so
    /// holders renew well before expiry (the daemon: every third of the TTL) and what they write
    /// carries their fencing token.
    pub async fn renew(&mut self, ttl: Duration) -> Result<bool> {
        let Some(b) = self.store.get(&self.key).await? else {
            return Ok(false);
        };
        if serde_json::from_slice::<LeaseRecord>(&b).ok().as_ref() != Some(&self.record) {
            return Ok(false);
        }
        let mut next = self.record.clone();
        next.expires_at = now_secs() + ttl.as_secs();
        self.store
            .put(
                &self.key,
                &serde_json::to_vec(&next).expect("lease serializes"),
            )
            .await?;
        self.record = next;
        (self.ttl, self.written) = (ttl, Instant::now());
        Ok(true)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether nobody can have taken the lease over: more than half its TTL is left, by the
    /// wall clock (which a suspended host's monotonic clock would not see pass) and by the
    /// monotonic clock (which a wall-clock jump does not move). Takers wait for expiry by their
    /// own clocks, so this holds unless clocks disagree by more than half the TTL.
    fn surely_ours(&self) -> bool {
        let half = self.ttl / 2;
        self.written.elapsed() < half && now_secs() + half.as_secs() < self.record.expires_at
    }

    /// Give the lease back (only if it is still ours: read back first unless `surely_ours`).
    pub async fn release(self) -> Result<()> {
        if self.surely_ours() {
            return self.store.delete(&self.key).await;
        }
        if let Some(b) = self.store.get(&self.key).await? {
            if serde_json::from_slice::<LeaseRecord>(&b).ok().as_ref() == Some(&self.record) {
                self.store.delete(&self.key).await?;
            }
        }
        Ok(())
    }
}
