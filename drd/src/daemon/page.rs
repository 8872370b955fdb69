//! The status page at `/`: one server-rendered HTML page, no script, no external asset (inline
//! CSS and SVG), read-only.
//!
//! Per protected stack: the acting region, `live`'s version, code and commit, the probes just
//! run (T0, T1: no LLM call), the RPO against its bound, a timeline of recovery points, the last
//! runbook runs with their outcome and duration, the drills' last runs (outcome, RTO, median), and
//! the next firings of its jobs.
//! Nothing secret: no Function URL, no ARN, no account id, no probe body; a failed probe's
//! detail and any error are scrubbed like alert details. Every figure carries a `data-field`
//! attribute so a test (or a scraper) reads exactly what a person sees.

use super::scheduler::JobSpec;
use super::Shared;
use crate::drill::report::esc;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::fmt::Write;
use std::time::Duration;

/// What the page shows for one stack.
pub struct StackView {
    pub stack: String,
    pub region: Option<String>,
    pub stack_status: Option<String>,
    pub live_version: Option<String>,
    pub code_sha256: Option<String>,
    pub commit: Option<String>,
    pub healthy: Option<bool>,
    /// (tier, ok, latency ms, detail when failed).
    pub probes: Vec<(String, bool, u64, String)>,
    pub rpo_seconds: u64,
    pub newest_point: Option<(String, u64)>,
    /// Point ids with their times (unix seconds), oldest first.
    pub points: Vec<(String, f64)>,
    /// (run, runbook, outcome, started, duration seconds).
    pub runs: Vec<(String, String, String, String, Option<u64>)>,
    /// The drills' recent runs compared (the stored reports).
    pub drills: Vec<crate::drill::report::History>,
    /// (job, next firing).
    pub next: Vec<(String, DateTime<Utc>)>,
    pub errors: Vec<String>,
}

/// How long a rendered page is served before it is gathered again.
pub const PAGE_TTL: Duration = Duration::from_secs(30);

/// How many points the timeline draws and how many runs the table lists.
const TIMELINE_POINTS: usize = 60;
const RUNS_SHOWN: usize = 10;

/// Gather every stack's view (each AWS read bounded, a failure shown on the page).
pub async fn gather(shared: &Shared) -> Vec<StackView> {
    let backend = shared.backend.read().await.clone();
    let jobs = shared.jobs.read().await.clone();
    let now = shared.clock.now();
    // Stacks are gathered concurrently: the page takes as long as the slowest stack.
    let views = backend.stacks.iter().map(|(name, ctx)| {
        let (aws, jobs) = (&backend.aws, &jobs);
        async move {
            let p = &ctx.policy;
            let mut v = StackView {
                stack: name.clone(),
                region: None,
                stack_status: None,
                live_version: None,
                code_sha256: None,
                commit: None,
                healthy: None,
                probes: vec![],
                rpo_seconds: p.daemon.rpo().as_secs(),
                newest_point: None,
                points: vec![],
                runs: vec![],
                drills: vec![],
                next: next_firings(jobs, name, now),
                errors: vec![],
            };
            let bound = Duration::from_secs(20);
            match tokio::time::timeout(bound, crate::store::active::active_region(aws, p)).await {
                Ok(Ok(region)) => {
                    match tokio::time::timeout(bound, crate::status::status(aws, p, &region, false))
                        .await
                    {
                        Ok(Ok(r)) => {
                            v.stack_status = r.stack.status.clone();
                            v.live_version = r.live.as_ref().map(|l| l.version.clone());
                            v.code_sha256 = r.live.as_ref().map(|l| l.code_sha256.clone());
                            v.commit = r
                                .live
                                .as_ref()
                                .and_then(|l| l.commit.clone())
                                .or(r.recovery.live_commit.clone());
                            v.healthy = Some(r.healthy);
                            v.probes = r
                                .probes
                                .iter()
                                .map(|x| {
                                    // The failure's class only: a probe's body never reaches the page.
                                    let detail = match (x.ok, x.status) {
                                        (true, _) => String::new(),
                                        (false, Some(s)) => format!("answered HTTP {s}"),
                                        (false, None) => "no answer".to_string(),
                                    };
                                    (format!("{:?}", x.tier), x.ok, x.latency_ms, detail)
                                })
                                .collect();
                            v.newest_point = r
                                .recovery
                                .newest_point
                                .as_ref()
                                .map(|n| (n.id.clone(), n.age_seconds));
                        }
                        Ok(Err(e)) => v
                            .errors
                            .push(format!("status: {}", super::alerts::scrub(&e.to_string()))),
                        Err(_) => v.errors.push("status: no answer within 20 s".into()),
                    }
                    v.region = Some(region);
                }
                Ok(Err(e)) => v.errors.push(format!(
                    "acting region: {}",
                    super::alerts::scrub(&e.to_string())
                )),
                Err(_) => v.errors.push("acting region: no answer within 20 s".into()),
            }
            match tokio::time::timeout(bound, ctx.store.point_ids()).await {
                Ok(Ok(ids)) => {
                    let skip = ids.len().saturating_sub(TIMELINE_POINTS);
                    v.points = ids
                        .into_iter()
                        .skip(skip)
                        .filter_map(|id| super::backend::point_time(&id).map(|t| (id, t)))
                        .collect();
                }
                Ok(Err(e)) => v
                    .errors
                    .push(format!("points: {}", super::alerts::scrub(&e.to_string()))),
                Err(_) => v.errors.push("points: no answer within 20 s".into()),
            }
            match tokio::time::timeout(bound, crate::drill::report::history(&ctx.store, 5)).await {
                Ok(Ok(d)) => v.drills = d,
                Ok(Err(e)) => v
                    .errors
                    .push(format!("drills: {}", super::alerts::scrub(&e.to_string()))),
                Err(_) => v.errors.push("drills: no answer within 20 s".into()),
            }
            match tokio::time::timeout(bound, runs(&ctx.store)).await {
                Ok(Ok(r)) => v.runs = r,
                Ok(Err(e)) => v.errors.push(format!(
                    "runbook runs: {}",
                    super::alerts::scrub(&e.to_string())
                )),
                Err(_) => v.errors.push("runbook runs: no answer within 20 s".into()),
            }
            v
        }
    });
    futures::future::join_all(views).await
}

fn next_firings(jobs: &[JobSpec], stack: &str, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    let mut v: Vec<(String, DateTime<Utc>)> = jobs
        .iter()
        .filter(|j| j.stack == stack)
        .filter_map(|j| {
            j.cron
                .next_after(now)
                .map(|t| (j.job.clone(), j.fire_at(t)))
        })
        .collect();
    v.sort_by_key(|(_, t)| *t);
    v
}

/// The newest runbook runs, newest first.
async fn runs(
    store: &Store,
) -> crate::error::Result<Vec<(String, String, String, String, Option<u64>)>> {
    use crate::runbook::journal;
    let mut ids = journal::run_ids(store).await?;
    ids.sort();
    ids.reverse();
    let mut out = vec![];
    for id in ids.into_iter().take(RUNS_SHOWN) {
        let entries = journal::read(store, &id).await?;
        let s = journal::fold(&entries);
        let last_ms = entries
            .iter()
            .map(|e| e.at_ms)
            .max()
            .unwrap_or(s.started_at_ms);
        let duration = s
            .outcome
            .as_ref()
            .map(|_| last_ms.saturating_sub(s.started_at_ms) / 1000);
        out.push((
            id,
            s.runbook,
            s.outcome.unwrap_or_else(|| "unfinished".into()),
            s.started_at.unwrap_or_default(),
            duration,
        ));
    }
    Ok(out)
}

fn age(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}\
h1{font-size:20px}h2{font-size:17px;margin-top:1.6em;border-bottom:1px solid #ccd}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #dde;padding:3px 8px;text-align:left}\
th{background:#f3f4f7}.ok{color:#116329;font-weight:600}.bad{color:#b42318;font-weight:600}\
.muted{color:#667}code{font-size:12px}svg{border:1px solid #dde;background:#fafbfc}";

/// The page at `now`.
pub fn render(views: &[StackView], now: DateTime<Utc>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"60\"><title>drd status</title>\
         <style>{STYLE}</style></head><body><h1>drd status</h1>\
         <p class=\"muted\">Rendered <time data-field=\"rendered-at\">{}</time> by drd {}. \
         Read-only; refreshes every minute.</p>",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        env!("CARGO_PKG_VERSION")
    );
    if views.is_empty() {
        h.push_str("<p>No stack is protected by this daemon.</p>");
    }
    for v in views {
        stack_section(&mut h, v, now);
    }
    h.push_str("</body></html>\n");
    h
}

fn stack_section(h: &mut String, v: &StackView, now: DateTime<Utc>) {
    let f = |x: &Option<String>| esc(x.as_deref().unwrap_or("unknown"));
    let _ = write!(
        h,
        "<section data-stack=\"{s}\"><h2>{s}</h2><table>\
         <tr><th>acting region</th><td data-field=\"region\">{}</td></tr>\
         <tr><th>stack</th><td data-field=\"stack-status\">{}</td></tr>\
         <tr><th>live version</th><td data-field=\"live-version\">{}</td></tr>\
         <tr><th>live code</th><td><code data-field=\"code-sha256\">{}</code></td></tr>\
         <tr><th>commit</th><td><code data-field=\"commit\">{}</code></td></tr>\
         <tr><th>healthy</th><td data-field=\"healthy\" class=\"{}\">{}</td></tr></table>",
        f(&v.region),
        f(&v.stack_status),
        f(&v.live_version),
        f(&v.code_sha256),
        esc(v.commit.as_deref().unwrap_or("not recorded")),
        match v.healthy {
            Some(true) => "ok",
            Some(false) => "bad",
            None => "muted",
        },
        match v.healthy {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        },
        s = esc(&v.stack),
    );
    h.push_str("<h3>Probes</h3><table><tr><th>tier</th><th>result</th><th>latency</th><th>detail</th></tr>");
    for (tier, ok, ms, detail) in &v.probes {
        let _ = write!(
            h,
            "<tr data-probe=\"{t}\"><td>{t}</td><td data-field=\"probe-ok\" class=\"{}\">{}</td>\
             <td data-field=\"probe-latency-ms\">{ms}</td><td>{}</td></tr>",
            if *ok { "ok" } else { "bad" },
            if *ok { "ok" } else { "FAIL" },
            esc(detail),
            t = esc(tier)
        );
    }
    h.push_str("</table>");
    // Recovery point objective.
    match &v.newest_point {
        Some((id, a)) => {
            let within = *a <= v.rpo_seconds;
            let _ = write!(
                h,
                "<h3>Recovery points</h3><p>Newest <code data-field=\"newest-point\">{}</code>, \
                 <span data-field=\"rpo-age-seconds\" data-value=\"{a}\">{}</span> old; RPO bound \
                 <span data-field=\"rpo-seconds\" data-value=\"{}\">{}</span>: \
                 <span data-field=\"within-rpo\" class=\"{}\">{}</span>.</p>",
                esc(id),
                age(*a),
                v.rpo_seconds,
                age(v.rpo_seconds),
                if within { "ok" } else { "bad" },
                if within { "within" } else { "BREACHED" },
            );
        }
        None => {
            let _ = write!(
                h,
                "<h3>Recovery points</h3><p data-field=\"newest-point\" class=\"bad\">none yet \
                 (RPO bound <span data-field=\"rpo-seconds\" data-value=\"{}\">{}</span>)</p>",
                v.rpo_seconds,
                age(v.rpo_seconds)
            );
        }
    }
    timeline(h, &v.points, now);
    h.push_str("<h3>Runbook runs</h3>");
    if v.runs.is_empty() {
        h.push_str("<p class=\"muted\" data-field=\"runs\">none recorded</p>");
    } else {
        h.push_str("<table><tr><th>run</th><th>runbook</th><th>outcome</th><th>started</th><th>took (measured RTO of a recovery)</th></tr>");
        for (run, rb, outcome, started, took) in &v.runs {
            let _ = write!(
                h,
                "<tr data-run=\"{}\"><td><code>{}</code></td><td data-field=\"runbook\">{}</td>\
                 <td data-field=\"outcome\" class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(run),
                esc(run),
                esc(rb),
                if outcome == "succeeded" { "ok" } else { "bad" },
                esc(outcome),
                esc(started),
                took.map(age).unwrap_or_else(|| "-".into())
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h3>Drills</h3>");
    if v.drills.is_empty() {
        h.push_str(
            "<p class=\"muted\" data-field=\"drills\">none recorded (drd drill run NAME)</p>",
        );
    } else {
        h.push_str("<table><tr><th>drill</th><th>last run</th><th>outcome</th><th>RTO</th><th>median RTO (last 5)</th></tr>");
        let s = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.1} s"));
        for d in &v.drills {
            let Some(last) = d.last.last() else { continue };
            let _ = write!(
                h,
                "<tr data-drill=\"{n}\"><td>{n}</td><td><code>{}</code></td>\
                 <td data-field=\"drill-outcome\" class=\"{}\">{}</td><td data-field=\"drill-rto\">{}</td><td>{}</td></tr>",
                esc(&last.run),
                if last.outcome == "met" { "ok" } else { "bad" },
                esc(&last.outcome),
                s(last.rto_seconds),
                s(d.median_rto_seconds),
                n = esc(&d.drill)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h3>Next firings</h3><table><tr><th>job</th><th>at</th><th>in</th></tr>");
    for (job, t) in &v.next {
        let _ = write!(
            h,
            "<tr data-job=\"{j}\"><td>{j}</td><td><time data-field=\"next\">{}</time></td><td>{}</td></tr>",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            age((*t - now).num_seconds().max(0) as u64),
            j = esc(job)
        );
    }
    h.push_str("</table>");
    for e in &v.errors {
        let _ = write!(h, "<p class=\"bad\" data-field=\"error\">{}</p>", esc(e));
    }
    h.push_str("</section>");
}

/// An inline SVG: one mark per recovery point on a time axis ending now.
fn timeline(h: &mut String, points: &[(String, f64)], now: DateTime<Utc>) {
    let (w, ht, pad) = (720.0, 60.0, 20.0);
    let end = now.timestamp_millis() as f64 / 1000.0;
    let start = points
        .first()
        .map_or(end - 3600.0, |(_, t)| t.min(end - 60.0));
    let span = (end - start).max(1.0);
    let x = |t: f64| pad + (t - start) / span * (w - 2.0 * pad);
    let _ = write!(
        h,
        "<svg data-field=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" \
         viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"recovery points over time\">\
         <line x1=\"{pad}\" y1=\"40\" x2=\"{}\" y2=\"40\" stroke=\"#99a\"/>",
        w - pad
    );
    for (id, t) in points {
        let _ = write!(
            h,
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"40\" r=\"5\" fill=\"#2f6feb\"><title>{}</title></circle>",
            x(*t),
            esc(id)
        );
    }
    let _ = write!(
        h,
        "<line x1=\"{0:.1}\" y1=\"15\" x2=\"{0:.1}\" y2=\"50\" stroke=\"#b42318\"/>\
         <text x=\"{1:.1}\" y=\"12\" font-size=\"11\" fill=\"#b42318\">now</text>\
         <text x=\"{pad}\" y=\"58\" font-size=\"11\" fill=\"#667\">{2}</text></svg>",
        x(end),
        x(end) - 20.0,
        DateTime::from_timestamp(start as i64, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_and_marks_every_point() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let v = StackView {
            stack: "s<1>".into(),
            region: Some("us-east-1".into()),
            stack_status: Some("CREATE_COMPLETE".into()),
            live_version: Some("3".into()),
            code_sha256: Some("abc".into()),
            commit: None,
            healthy: Some(true),
            probes: vec![("T0".into(), true, 12, String::new())],
            rpo_seconds: 3600,
            newest_point: Some(("p2".into(), 60)),
            points: vec![
                ("p1".into(), 1_764_546_000.0),
                ("p2".into(), 1_764_547_140.0),
            ],
            runs: vec![],
            drills: vec![],
            next: vec![],
            errors: vec!["x <script>".into()],
        };
        let page = render(&[v], now);
        assert!(page.contains("<h2>s&lt;1&gt;</h2>"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert_eq!(page.matches("<circle class=\"point\"").count(), 2);
        assert!(page.contains("data-field=\"live-version\">3<"), "{page}");
        assert!(page.contains("class=\"ok\">within<"), "{page}");
    }
}
