//! A drill's report: one JSON document (docs/schemas/drill-report.schema.json), rendered as
//! Markdown, a self-contained HTML page (inline CSS and SVG: a timeline with one mark per probe
//! sample, the fault, each recovery step and the heal, no external asset, no script) and JUnit
//! XML for CI.

use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Milliseconds since the drill started.
    pub t_ms: u64,
    pub ok: bool,
    /// The slowest tier's latency.
    pub latency_ms: u64,
    /// Why the sample was unhealthy (empty when healthy).
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub t_ms: u64,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateProbe {
    pub tier: String,
    pub ok: bool,
    pub latency_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryStep {
    pub id: String,
    pub status: String,
    /// When the step succeeded, in milliseconds since the drill started.
    pub t_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    /// The runbook, or `automatic`.
    pub runbook: String,
    pub run: Option<String>,
    pub outcome: String,
    pub steps: Vec<RecoveryStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// Whether the undo ran and succeeded (`false` when it failed or was skipped).
    pub ok: bool,
    pub skipped: bool,
    pub done: Vec<String>,
    pub error: Option<String>,
    /// The steady state checked after the rollback.
    pub steady_after: Vec<GateProbe>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// From the injection to the first of `healthy_after` consecutive healthy samples.
    pub rto_seconds: Option<f64>,
    pub rto_met: Option<bool>,
    /// The fault's time minus the newest canary that survived (or, for CI drills, the mirror's
    /// age; for a rehearsal, the restored data's age); `null` when not measured.
    pub rpo_seconds: Option<f64>,
    pub rpo_note: String,
    /// `objectives.rpo`, when the drill has one.
    pub rpo_objective_seconds: Option<f64>,
    /// Whether the measured RPO is within the objective (`null`: no objective or not measured).
    pub rpo_met: Option<bool>,
    /// Samples taken, and how many were unhealthy.
    pub samples: usize,
    pub unhealthy_samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub schema: u32,
    pub drill: String,
    pub title: String,
    pub run: String,
    pub stack: String,
    pub region: String,
    /// What the prober called: `function-url` (no front door exists yet).
    pub probed_via: String,
    pub started_at: String,
    pub finished_at: String,
    /// `met`, `breached` (healed, slower than the objective), `failed`, `gate-failed` or
    /// `interrupted`.
    pub outcome: String,
    pub reason: Option<String>,
    pub rto_objective_seconds: f64,
    pub interval_ms: u64,
    pub healthy_after: u32,
    pub gate: Vec<GateProbe>,
    /// When the fault was injected (ms since the start); `null` when nothing was injected.
    pub injected_at_ms: Option<u64>,
    pub fault: Option<serde_json::Value>,
    pub recovery: Option<Recovery>,
    pub healed_at_ms: Option<u64>,
    pub measured: Measured,
    pub rollback: Option<Rollback>,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
}

impl DrillReport {
    /// 0 when the objective was met and the rollback succeeded; 1 otherwise.
    pub fn exit_ok(&self) -> bool {
        self.outcome == "met" && self.rollback.as_ref().is_none_or(|r| r.ok)
    }
}

/// HTML-escape text (also used by the daemon's status page).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), |s| format!("{s:.1}"))
}

/// " s" after a measured figure, nothing after "not measured".
fn unit(v: Option<f64>) -> &'static str {
    if v.is_some() {
        " s"
    } else {
        ""
    }
}

pub fn markdown(r: &DrillReport) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Drill {}: {}\n", r.drill, r.title);
    let _ = writeln!(m, "| | |\n|---|---|");
    let _ = writeln!(m, "| run | `{}` |", r.run);
    let _ = writeln!(m, "| stack | {} in {} |", r.stack, r.region);
    let _ = writeln!(m, "| outcome | **{}** |", r.outcome);
    if let Some(why) = &r.reason {
        let _ = writeln!(m, "| reason | {why} |");
    }
    let _ = writeln!(
        m,
        "| RTO | {} s (objective {:.1} s{}) |",
        secs(r.measured.rto_seconds),
        r.rto_objective_seconds,
        match r.measured.rto_met {
            Some(true) => ", met",
            Some(false) => ", BREACHED",
            None => "",
        }
    );
    let _ = writeln!(
        m,
        "| RPO | {}{}{} ({}) |",
        secs(r.measured.rpo_seconds),
        unit(r.measured.rpo_seconds),
        match (r.measured.rpo_objective_seconds, r.measured.rpo_met) {
            (Some(o), Some(true)) => format!(" (objective {o:.1} s, met)"),
            (Some(o), Some(false)) => format!(" (objective {o:.1} s, BREACHED)"),
            (Some(o), None) => format!(" (objective {o:.1} s)"),
            (None, _) => String::new(),
        },
        r.measured.rpo_note
    );
    let _ = writeln!(
        m,
        "| samples | {} every {} ms, {} unhealthy |",
        r.measured.samples, r.interval_ms, r.measured.unhealthy_samples
    );
    if let Some(rb) = &r.rollback {
        let _ = writeln!(
            m,
            "| rollback | {}{} |",
            if rb.skipped {
                "SKIPPED (second interrupt)"
            } else if rb.ok {
                "ok"
            } else {
                "FAILED"
            },
            rb.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(m, "\n## Timeline\n");
    for e in &r.events {
        let _ = writeln!(m, "- {:>8.1} s  {}", e.t_ms as f64 / 1000.0, e.what);
    }
    m
}

pub fn junit(r: &DrillReport) -> String {
    let failed = !r.exit_ok();
    let time = r.samples.last().map_or(0.0, |s| s.t_ms as f64 / 1000.0);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuite name=\"drd drill\" tests=\"1\" failures=\"{}\" time=\"{time:.1}\">",
        u8::from(failed)
    );
    let _ = write!(
        x,
        "  <testcase classname=\"drill.{}\" name=\"{}\" time=\"{time:.1}\">",
        esc(&r.drill),
        esc(&r.run)
    );
    if failed {
        let _ = write!(
            x,
            "<failure message=\"{}\">{}</failure>",
            esc(&r.outcome),
            esc(r.reason.as_deref().unwrap_or(&r.outcome))
        );
    }
    let _ = writeln!(x, "</testcase>\n</testsuite>");
    x
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24}\
h1{font-size:20px}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #dde;\
padding:3px 8px;text-align:left}th{background:#f3f4f7}.ok{color:#116329;font-weight:600}\
.bad{color:#b42318;font-weight:600}svg{border:1px solid #dde;background:#fafbfc}";

/// The self-contained HTML page.
pub fn html(r: &DrillReport) -> String {
    let mut h = String::new();
    let good = r.exit_ok();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>drd drill {d}</title>\
         <style>{STYLE}</style></head><body><h1>Drill {d}: {t}</h1><table>\
         <tr><th>run</th><td><code>{run}</code></td></tr>\
         <tr><th>stack</th><td>{s} in {reg}</td></tr>\
         <tr><th>outcome</th><td data-field=\"outcome\" class=\"{cls}\">{o}</td></tr>",
        d = esc(&r.drill),
        t = esc(&r.title),
        run = esc(&r.run),
        s = esc(&r.stack),
        reg = esc(&r.region),
        cls = if good { "ok" } else { "bad" },
        o = esc(&r.outcome),
    );
    if let Some(why) = &r.reason {
        let _ = write!(
            h,
            "<tr><th>reason</th><td data-field=\"reason\">{}</td></tr>",
            esc(why)
        );
    }
    let _ = write!(
        h,
        "<tr><th>RTO</th><td><span data-field=\"rto-seconds\">{}</span> s against \
         <span data-field=\"rto-objective-seconds\">{:.1}</span> s: <span data-field=\"rto-met\" class=\"{}\">{}</span></td></tr>\
         <tr><th>RPO</th><td><span data-field=\"rpo-seconds\">{}</span>{}{}: {}</td></tr>\
         <tr><th>samples</th><td><span data-field=\"samples\">{}</span> every {} ms, \
         <span data-field=\"unhealthy-samples\">{}</span> unhealthy</td></tr>",
        secs(r.measured.rto_seconds),
        r.rto_objective_seconds,
        if r.measured.rto_met == Some(true) { "ok" } else { "bad" },
        match r.measured.rto_met {
            Some(true) => "met",
            Some(false) => "BREACHED",
            None => "not measured",
        },
        secs(r.measured.rpo_seconds),
        unit(r.measured.rpo_seconds),
        match (r.measured.rpo_objective_seconds, r.measured.rpo_met) {
            (Some(o), met) => format!(
                " against <span data-field=\"rpo-objective-seconds\">{o:.1}</span> s: <span data-field=\"rpo-met\" class=\"{}\">{}</span>",
                if met == Some(true) { "ok" } else { "bad" },
                match met {
                    Some(true) => "met",
                    Some(false) => "BREACHED",
                    None => "not measured",
                }
            ),
            (None, _) => String::new(),
        },
        esc(&r.measured.rpo_note),
        r.measured.samples,
        r.interval_ms,
        r.measured.unhealthy_samples,
    );
    if let Some(rb) = &r.rollback {
        let _ = write!(
            h,
            "<tr><th>rollback</th><td data-field=\"rollback\" class=\"{}\">{}</td></tr>",
            if rb.ok { "ok" } else { "bad" },
            esc(&if rb.skipped {
                "SKIPPED (second interrupt)".to_string()
            } else if rb.ok {
                format!("ok: {}", rb.done.join("; "))
            } else {
                format!("FAILED: {}", rb.error.as_deref().unwrap_or(""))
            })
        );
    }
    h.push_str("</table>");
    timeline(&mut h, r);
    h.push_str("<h2>Events</h2><table><tr><th>s</th><th>what</th></tr>");
    for e in &r.events {
        let _ = write!(
            h,
            "<tr><td>{:.1}</td><td>{}</td></tr>",
            e.t_ms as f64 / 1000.0,
            esc(&e.what)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// Samples as marks (green healthy, red unhealthy; height by latency), the fault, the recovery
/// steps and the heal as vertical lines.
fn timeline(h: &mut String, r: &DrillReport) {
    let (w, ht, pad) = (900.0_f64, 200.0_f64, 50.0_f64);
    let end = r.samples.last().map_or(1, |s| s.t_ms).max(1) as f64;
    let max_lat = r
        .samples
        .iter()
        .map(|s| s.latency_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: u64| pad + t as f64 / end * (w - 2.0 * pad);
    let y = |l: u64| ht - pad - (l as f64 / max_lat) * (ht - 2.0 * pad);
    let _ = write!(
        h,
        "<h2>Timeline</h2><svg data-field=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" \
         aria-label=\"probe samples over time\"><line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#99a\"/>",
        b = ht - pad,
        r = w - pad
    );
    // Labels step down the top margin so close markers stay readable.
    let mut n = 0;
    let mut vline = |t: u64, colour: &str, label: &str| {
        let ly = 10 + (n % 4) * 11;
        n += 1;
        let _ = write!(
            h,
            "<line class=\"marker\" x1=\"{0:.1}\" y1=\"{4}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"{colour}\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{2:.1}\" y=\"{ly}\" font-size=\"10\" fill=\"{colour}\">{3}</text>",
            x(t),
            ht - pad,
            x(t) + 2.0,
            esc(label),
            ly + 2
        );
    };
    if let Some(t) = r.injected_at_ms {
        vline(t, "#b42318", "fault");
    }
    if let Some(rec) = &r.recovery {
        for s in &rec.steps {
            if let Some(t) = s.t_ms {
                vline(t, "#8250df", &s.id);
            }
        }
    }
    if let Some(t) = r.healed_at_ms {
        vline(t, "#116329", "healed");
    }
    for s in &r.samples {
        let _ = write!(
            h,
            "<circle class=\"sample\" data-ok=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{:.1} s: {} ms{}</title></circle>",
            s.ok,
            x(s.t_ms),
            y(s.latency_ms),
            if s.ok { "#2da44e" } else { "#cf222e" },
            s.t_ms as f64 / 1000.0,
            s.latency_ms,
            if s.ok { String::new() } else { format!(" {}", esc(&s.detail)) }
        );
    }
    let _ = write!(
        h,
        "<text x=\"{pad}\" y=\"{}\" font-size=\"10\" fill=\"#667\">0 s</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#667\">{:.0} s</text></svg>",
        ht - 10.0,
        w - pad - 20.0,
        ht - 10.0,
        end / 1000.0
    );
}

/// One drill's recent runs compared (`drd drill report`).
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub drill: String,
    pub runs: usize,
    /// Runs by outcome.
    pub outcomes: std::collections::BTreeMap<String, usize>,
    pub rto_objective_seconds: Option<f64>,
    pub median_rto_seconds: Option<f64>,
    pub worst_rto_seconds: Option<f64>,
    /// (run, outcome, RTO), oldest first.
    pub last: Vec<HistoryRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRun {
    pub run: String,
    pub outcome: String,
    pub rto_seconds: Option<f64>,
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Compare the last `last` runs of each drill from their stored reports.
pub async fn history(
    store: &crate::store::Store,
    last: usize,
) -> crate::error::Result<Vec<History>> {
    let prefix = format!("{}drills/", store.prefix);
    let mut by_drill: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (key, _) in store.list(&prefix).await? {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((drill, file)) = rest.split_once('/') else {
            continue;
        };
        if let Some(run) = file.strip_suffix(".json") {
            by_drill
                .entry(drill.to_string())
                .or_default()
                .push(run.to_string());
        }
    }
    let mut out = vec![];
    for (drill, mut runs) in by_drill {
        runs.sort();
        let skip = runs.len().saturating_sub(last.max(1));
        let mut h = History {
            drill: drill.clone(),
            runs: 0,
            outcomes: Default::default(),
            rto_objective_seconds: None,
            median_rto_seconds: None,
            worst_rto_seconds: None,
            last: vec![],
        };
        for run in runs.into_iter().skip(skip) {
            let Some(bytes) = store.get(&format!("{prefix}{drill}/{run}.json")).await? else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let outcome = v["outcome"].as_str().unwrap_or("unknown").to_string();
            *h.outcomes.entry(outcome.clone()).or_default() += 1;
            h.rto_objective_seconds = v["rto_objective_seconds"]
                .as_f64()
                .or(h.rto_objective_seconds);
            h.last.push(HistoryRun {
                run,
                outcome,
                rto_seconds: v["measured"]["rto_seconds"].as_f64(),
            });
        }
        h.runs = h.last.len();
        let rtos: Vec<f64> = h.last.iter().filter_map(|r| r.rto_seconds).collect();
        h.worst_rto_seconds = rtos.iter().copied().reduce(f64::max);
        h.median_rto_seconds = median(rtos);
        out.push(h);
    }
    Ok(out)
}

/// The comparison as one self-contained HTML page (a bar per run, the objective as a line).
pub fn history_html(hs: &[History]) -> String {
    let mut h = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>drd drills</title>\
         <style>{STYLE}</style></head><body><h1>Drills compared</h1>"
    );
    if hs.is_empty() {
        h.push_str("<p>No drill has run yet.</p>");
    }
    for d in hs {
        let _ = write!(
            h,
            "<section data-drill=\"{n}\"><h2>{n}</h2><table><tr><th>runs</th><td data-field=\"runs\">{}</td></tr>\
             <tr><th>median RTO</th><td data-field=\"median-rto-seconds\">{}</td></tr>\
             <tr><th>worst RTO</th><td data-field=\"worst-rto-seconds\">{}</td></tr>\
             <tr><th>objective</th><td>{}</td></tr><tr><th>outcomes</th><td>{}</td></tr></table>",
            d.runs,
            secs(d.median_rto_seconds),
            secs(d.worst_rto_seconds),
            secs(d.rto_objective_seconds),
            esc(&d.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")),
            n = esc(&d.drill),
        );
        let (w, ht, pad) = (600.0_f64, 140.0_f64, 20.0_f64);
        let top = d
            .last
            .iter()
            .filter_map(|r| r.rto_seconds)
            .chain(d.rto_objective_seconds)
            .fold(1.0_f64, f64::max);
        let bw = (w - 2.0 * pad) / d.last.len().max(1) as f64;
        let _ = write!(h, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"RTO per run\">");
        for (i, r) in d.last.iter().enumerate() {
            let v = r.rto_seconds.unwrap_or(0.0);
            let bh = v / top * (ht - 2.0 * pad);
            let _ = write!(
                h,
                "<rect class=\"run\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{}: {} ({})</title></rect>",
                pad + i as f64 * bw + 2.0,
                ht - pad - bh,
                (bw - 4.0).max(1.0),
                if r.outcome == "met" { "#2da44e" } else { "#cf222e" },
                esc(&r.run),
                secs(r.rto_seconds),
                esc(&r.outcome)
            );
        }
        if let Some(o) = d.rto_objective_seconds {
            let y = ht - pad - o / top * (ht - 2.0 * pad);
            let _ = write!(h, "<line x1=\"{pad}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#8250df\" stroke-dasharray=\"4 3\"/>", w - pad);
        }
        h.push_str("</svg></section>");
    }
    h.push_str("</body></html>\n");
    h
}
