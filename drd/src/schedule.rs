//! Cron schedules with seconds and a time zone, jitter, and the catch-up arithmetic.
//!
//! Expressions have six or seven fields: `sec min hour day-of-month month day-of-week [year]`
//! (the `cron` crate's syntax: names such as `Mon-Fri` and `Jan` work; numeric days of the
//! week are 1-7 = Sun-Sat). They are evaluated on the wall clock of the schedule's time zone
//! (IANA name, default UTC), so `0 0 2 * * *` in `Europe/Berlin` fires at 02:00 Berlin time
//! across daylight-saving changes.

use chrono::{DateTime, Duration as CDuration, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::time::Duration;

/// How far back a daemon with no record of a job looks for a missed firing.
pub const FIRST_START_LOOKBACK_DAYS: i64 = 8;

#[derive(Debug, Clone)]
pub struct Cron {
    pub expr: String,
    pub tz: Tz,
    schedule: cron::Schedule,
}

impl Cron {
    /// Parse `expr` in time zone `tz` (`None`: UTC). `Err` says what is wrong.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "{expr:?} has {fields} fields; drd schedules have 6 or 7: \
                 sec min hour day-of-month month day-of-week [year]"
            ));
        }
        let schedule = cron::Schedule::from_str(expr).map_err(|e| format!("{expr:?}: {e}"))?;
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => {
                Tz::from_str(name).map_err(|_| format!("{name:?} is not an IANA time zone name"))?
            }
        };
        if schedule
            .after(&Utc::now().with_timezone(&tz))
            .next()
            .is_none()
        {
            return Err(format!("{expr:?} never fires again"));
        }
        Ok(Self {
            expr: expr.to_string(),
            tz,
            schedule,
        })
    }

    /// The first firing strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The firings in `(from, to]`, at most `cap` of them.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cap: usize,
    ) -> Vec<DateTime<Utc>> {
        self.schedule
            .after(&from.with_timezone(&self.tz))
            .map(|d| d.with_timezone(&Utc))
            .take_while(|d| *d <= to)
            .take(cap)
            .collect()
    }

    /// The latest firing in `(from, to]`, if any (walks forward: bounded by `to - from`).
    pub fn latest_in(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&from.with_timezone(&self.tz))
            .map(|d| d.with_timezone(&Utc))
            .take_while(|d| *d <= to)
            .take(5_000_000)
            .last()
    }
}

/// The jitter of one firing: a deterministic offset in `[0, max)` from the stack, the job and
/// the tick, so every daemon computes the same moment for the same firing (and they race for
/// the lease at once) while different stacks spread out.
pub fn jitter(max: Duration, stack: &str, job: &str, tick: DateTime<Utc>) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let h = Sha256::digest(format!("{stack}\0{job}\0{}", tick.timestamp_millis()));
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    Duration::from_millis(n % (max.as_millis() as u64).max(1))
}

pub fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + CDuration::from_std(d).unwrap_or(CDuration::zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn seconds_fields_and_time_zones() {
        let c = Cron::parse("*/15 * * * * *", None).unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T10:00:07Z")),
            Some(t("2026-11-27T10:00:15Z"))
        );
        assert_eq!(
            c.next_after(t("2026-11-27T10:00:15Z")),
            Some(t("2026-11-27T10:00:30Z"))
        );
        // 02:30 in Berlin is 01:30 UTC in winter and 00:30 UTC in summer.
        let b = Cron::parse("0 30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            b.next_after(t("2026-11-27T00:00:00Z")),
            Some(t("2026-11-27T01:30:00Z"))
        );
        assert_eq!(
            b.next_after(t("2026-07-01T00:00:00Z")),
            Some(t("2026-07-01T00:30:00Z"))
        );
        // Names work; numeric weekdays are 1-7 = Sun-Sat.
        let w = Cron::parse("0 0 9 * * Mon-Fri", None).unwrap();
        assert_eq!(
            w.next_after(t("2026-11-27T10:00:00Z")),
            Some(t("2026-11-30T09:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        assert!(Cron::parse("0 * * * *", None)
            .unwrap_err()
            .contains("6 or 7"));
        assert!(Cron::parse("61 * * * * *", None).is_err());
        assert!(Cron::parse("0 0 0 * * *", Some("Mars/Olympus"))
            .unwrap_err()
            .contains("time zone"));
        assert!(Cron::parse("0 0 0 1 1 * 2001", None)
            .unwrap_err()
            .contains("never"));
    }

    #[test]
    fn the_latest_missed_firing_and_the_firings_between() {
        let c = Cron::parse("0 */10 * * * *", None).unwrap();
        let from = t("2026-11-27T10:00:00Z");
        let to = t("2026-11-27T10:35:00Z");
        assert_eq!(c.latest_in(from, to), Some(t("2026-11-27T10:30:00Z")));
        assert_eq!(c.between(from, to, 100).len(), 3);
        assert_eq!(c.latest_in(from, t("2026-11-27T10:05:00Z")), None);
    }

    #[test]
    fn jitter_is_bounded_deterministic_and_spreads_stacks() {
        let max = Duration::from_secs(30);
        let tick = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let j = jitter(max, &format!("stack-{i}"), "backup", tick);
            assert!(j < max);
            assert_eq!(j, jitter(max, &format!("stack-{i}"), "backup", tick));
            seen.insert(j.as_secs());
        }
        assert!(
            seen.len() > 20,
            "200 stacks spread over the window: {seen:?}"
        );
        assert_eq!(jitter(Duration::ZERO, "s", "backup", tick), Duration::ZERO);
    }
}
