//! A drill's journal and report files: events kept for the report and flushed to
//! `<drill>-<run>.events.jsonl` as they happen (a crash still leaves a record), then the report
//! written locally and to the store, the lease given back.

use super::report::{self, DrillReport, Event};
use super::run::Options;
use crate::error::{Error, Result};
use crate::store::lease::Lease;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// The event journal: kept in memory for the report, appended to `<run>.events.jsonl` and
/// flushed per event (a crash still leaves a record), and shown as progress.
pub(super) struct Recorder<'a> {
    pub(super) t0: Instant,
    pub(super) events: Mutex<Vec<Event>>,
    pub(super) file: Mutex<Option<std::fs::File>>,
    pub(super) progress: &'a (dyn Fn(&str) + Sync),
}

impl Recorder<'_> {
    pub(super) fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    pub(super) fn note(&self, what: impl Into<String>) -> u64 {
        let e = Event {
            t_ms: self.ms(),
            what: what.into(),
        };
        (self.progress)(&e.what);
        if let Some(f) = self.file.lock().expect("journal").as_mut() {
            let _ = writeln!(f, "{}", serde_json::to_string(&e).expect("serializes"));
            let _ = f.flush();
        }
        let t = e.t_ms;
        self.events.lock().expect("journal").push(e);
        t
    }
}

/// Totals, the report files (local and in the store), the lease released.
pub(super) async fn finish(
    mut report: DrillReport,
    rec: &Recorder<'_>,
    store: &crate::store::Store,
    opts: &Options<'_>,
    lease: Lease,
) -> Result<DrillReport> {
    report.finished_at = now_rfc3339();
    report.measured.samples = report.samples.len();
    report.measured.unhealthy_samples = report.samples.iter().filter(|s| !s.ok).count();
    rec.note(format!("drill {}: {}", report.drill, report.outcome));
    report.events = rec.events.lock().expect("journal").clone();
    if report.injected_at_ms.is_some() || report.outcome != "gate-failed" {
        crate::store::drill_marker::clear(store, &report.run).await?;
    }
    let json = serde_json::to_vec_pretty(&report).expect("serializes");
    let html = report::html(&report);
    if let Some(d) = &opts.report_dir {
        let base = d.join(format!("{}-{}", report.drill, report.run));
        for (ext, body) in [
            ("json", json.clone()),
            ("md", report::markdown(&report).into_bytes()),
            ("html", html.clone().into_bytes()),
            ("junit.xml", report::junit(&report).into_bytes()),
        ] {
            let p = base.with_extension(ext);
            std::fs::write(&p, body)
                .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
    }
    let key = format!("{}drills/{}/{}", store.prefix, report.drill, report.run);
    store.put(&format!("{key}.json"), &json).await?;
    store.put(&format!("{key}.html"), html.as_bytes()).await?;
    let _ = lease.release().await;
    Ok(report)
}

pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
