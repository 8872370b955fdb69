//! Retention with restic's semantics, as pure functions of the point history and `now`.
//!
//! `keep_last N` keeps the N newest points; `keep_hourly/daily/weekly/monthly N` keep the newest
//! point of each of the last N hours/days/ISO weeks/months that have points; `keep_within D`
//! keeps every point younger than D. A point goes only if no rule keeps it; with no rule at all,
//! everything is kept. Blobs go only when no kept manifest names them.

use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    /// Seconds.
    pub within: Option<u64>,
}

impl Rules {
    /// The rules the policy's `[retention]` section states.
    pub fn from_policy(p: &crate::policy::RetentionPolicy) -> Self {
        Self {
            last: p.keep_last,
            hourly: p.keep_hourly,
            daily: p.keep_daily,
            weekly: p.keep_weekly,
            monthly: p.keep_monthly,
            within: p
                .keep_within
                .as_ref()
                .and_then(|w| humantime::parse_duration(w.get_ref()).ok())
                .map(|d| d.as_secs()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: u64,
    pub keep: bool,
    /// The rules that keep it (empty when it goes).
    pub reasons: Vec<String>,
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn bucket(kind: &str, t: u64) -> i64 {
    let days = (t / 86_400) as i64;
    match kind {
        "hourly" => (t / 3600) as i64,
        "daily" => days,
        // ISO weeks start on Monday; 1970-01-01 was a Thursday.
        "weekly" => days - (days + 3).rem_euclid(7),
        _ => {
            let (y, m, _) = civil(days);
            y * 12 + i64::from(m)
        }
    }
}

/// Decide for every point (`(id, unix seconds)`, any order).
pub fn apply(rules: &Rules, points: &[(String, u64)], now: u64) -> Vec<Decision> {
    let mut sorted: Vec<&(String, u64)> = points.iter().collect();
    // Newest first; ties broken by id so the result is deterministic.
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut out: Vec<Decision> = sorted
        .iter()
        .map(|(id, t)| Decision {
            id: id.clone(),
            time: *t,
            keep: false,
            reasons: vec![],
        })
        .collect();
    if rules.is_empty() {
        for d in &mut out {
            d.keep = true;
            d.reasons.push("no retention rule configured".into());
        }
        return out;
    }
    if let Some(n) = rules.last {
        for d in out.iter_mut().take(n as usize) {
            d.reasons.push(format!("keep_last {n}"));
        }
    }
    for (kind, n) in [
        ("hourly", rules.hourly),
        ("daily", rules.daily),
        ("weekly", rules.weekly),
        ("monthly", rules.monthly),
    ] {
        let Some(n) = n else { continue };
        let mut seen = BTreeSet::new();
        for d in out.iter_mut() {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(bucket(kind, d.time)) {
                d.reasons.push(format!("keep_{kind} {n}"));
            }
        }
    }
    if let Some(w) = rules.within {
        for d in out.iter_mut() {
            if d.time + w >= now {
                d.reasons.push(format!(
                    "keep_within {}",
                    humantime::format_duration(std::time::Duration::from_secs(w))
                ));
            }
        }
    }
    for d in &mut out {
        d.keep = !d.reasons.is_empty();
    }
    out
}

/// Blobs that no kept manifest names: the only ones prune may delete.
pub fn unreferenced<'a>(
    all: impl IntoIterator<Item = &'a String>,
    kept: &[BTreeSet<String>],
) -> Vec<String> {
    let referenced: BTreeSet<&String> = kept.iter().flatten().collect();
    all.into_iter()
        .filter(|b| !referenced.contains(b))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pts(times: &[u64]) -> Vec<(String, u64)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("p{i:03}"), *t))
            .collect()
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_419), (2025, 11, 27));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn restic_examples() {
        let h = 3600;
        // Three points in one hour, one in the previous hour.
        let p = pts(&[10 * h + 10, 10 * h + 20, 10 * h + 30, 9 * h + 5]);
        let d = apply(
            &Rules {
                hourly: Some(2),
                ..Default::default()
            },
            &p,
            11 * h,
        );
        let kept: Vec<&str> = d.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        assert_eq!(kept, ["p002", "p003"]);
        let d = apply(
            &Rules {
                last: Some(1),
                within: Some(h),
                ..Default::default()
            },
            &p,
            11 * h,
        );
        let kept: Vec<&str> = d.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        assert_eq!(kept, ["p002", "p001", "p000"]);
        assert!(apply(&Rules::default(), &p, 0).iter().all(|d| d.keep));
    }

    fn rules() -> impl Strategy<Value = Rules> {
        (
            proptest::option::of(0u32..6),
            proptest::option::of(0u32..6),
            proptest::option::of(0u32..6),
            proptest::option::of(0u32..4),
            proptest::option::of(0u32..4),
            proptest::option::of(0u64..10 * 86_400),
        )
            .prop_map(|(last, hourly, daily, weekly, monthly, within)| Rules {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                within,
            })
    }

    fn history() -> impl Strategy<Value = Vec<u64>> {
        // Up to 60 points over ~120 days.
        proptest::collection::vec(1_700_000_000u64..1_710_000_000u64, 0..60)
    }

    proptest! {
        #[test]
        fn a_point_goes_only_if_no_rule_keeps_it(r in rules(), times in history(), offset in 0u64..86_400) {
            let p = pts(&times);
            let now = times.iter().copied().max().unwrap_or(1_700_000_000) + offset;
            let d = apply(&r, &p, now);
            prop_assert_eq!(d.len(), p.len());
            for x in &d {
                prop_assert_eq!(x.keep, !x.reasons.is_empty());
                // Independent checks of each rule that could have kept it.
                if let Some(w) = r.within { if x.time + w >= now { prop_assert!(x.keep); } }
                let newer = d.iter().filter(|y| (y.time, &y.id) > (x.time, &x.id)).count();
                if let Some(n) = r.last { if newer < n as usize { prop_assert!(x.keep); } }
                for (kind, n) in [("hourly", r.hourly), ("daily", r.daily), ("weekly", r.weekly), ("monthly", r.monthly)] {
                    let Some(n) = n else { continue };
                    let b = bucket(kind, x.time);
                    let newest_in_bucket = !d.iter().any(|y| bucket(kind, y.time) == b && (y.time, &y.id) > (x.time, &x.id));
                    let newer_buckets: BTreeSet<i64> = d.iter().filter(|y| (y.time, &y.id) > (x.time, &x.id)).map(|y| bucket(kind, y.time)).filter(|k| *k != b).collect();
                    if newest_in_bucket && newer_buckets.len() < n as usize {
                        prop_assert!(x.keep, "{} should be kept by keep_{} {}", x.id, kind, n);
                    }
                    if !newest_in_bucket || newer_buckets.len() >= n as usize {
                        let prefix = format!("keep_{kind} ");
                        let kept_by_rule = x.reasons.iter().any(|s| s.starts_with(&prefix));
                        prop_assert!(!kept_by_rule, "{} wrongly kept by {}", x.id, prefix);
                    }
                }
            }
            if r.is_empty() { prop_assert!(d.iter().all(|x| x.keep)); }
        }

        #[test]
        fn no_kept_point_loses_a_blob(
            r in rules(),
            times in history(),
            refs in proptest::collection::vec(proptest::collection::btree_set(0u8..40, 0..6), 60),
        ) {
            let p = pts(&times);
            let now = times.iter().copied().max().unwrap_or(0);
            let d = apply(&r, &p, now);
            let blobs_of = |id: &str| -> BTreeSet<String> {
                let i: usize = id[1..].parse().unwrap();
                refs[i].iter().map(|b| format!("b{b}")).collect()
            };
            let all: BTreeSet<String> = (0..40).map(|b| format!("b{b}")).collect();
            let kept: Vec<BTreeSet<String>> = d.iter().filter(|x| x.keep).map(|x| blobs_of(&x.id)).collect();
            let gone = unreferenced(all.iter(), &kept);
            for k in &kept {
                for b in k {
                    prop_assert!(!gone.contains(b));
                }
            }
            // And every blob no kept point names does go.
            for b in &all {
                if !kept.iter().any(|k| k.contains(b)) { prop_assert!(gone.contains(b)); }
            }
        }
    }
}
