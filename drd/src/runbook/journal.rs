//! The run journal: one immutable object per step transition in the store
//! (`journal/<run>/<seq>-<event>[-<step>].json`, written with `If-None-Match`), mirrored to a local
//! JSON-lines file for the operator. Folding the entries gives the run's state, which is what
//! `--resume` continues from: a step with a `succeeded` entry is never executed again.
//!
//! Entries hold step outputs and error messages, never secret values: actions take secrets from
//! the secret store or stdin and report only names, versions and hashes.

use crate::actions::Outputs;
use crate::error::{Error, Result};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    RunStarted,
    RunResumed,
    Started,
    Succeeded,
    Failed,
    Compensated,
    Waiting,
    RunFinished,
}

impl Event {
    pub fn as_str(&self) -> &'static str {
        match self {
            Event::RunStarted => "run_started",
            Event::RunResumed => "run_resumed",
            Event::Started => "started",
            Event::Succeeded => "succeeded",
            Event::Failed => "failed",
            Event::Compensated => "compensated",
            Event::Waiting => "waiting",
            Event::RunFinished => "run_finished",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u32,
    pub run: String,
    pub runbook: String,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    /// RFC 3339 with milliseconds.
    pub at: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: Outputs,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Run inputs and context (`run_started` only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `succeeded`, `failed` or `compensated` (`run_finished` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn journal_prefix(store: &Store, run: &str) -> String {
    format!("{}journal/{run}/", store.prefix)
}

/// A new run id: sortable time and a random suffix.
pub fn new_run_id() -> String {
    crate::backup::new_point_id(SystemTime::now())
}

pub struct Journal {
    store: Store,
    pub run: String,
    pub runbook: String,
    next: Mutex<u32>,
    local: Option<PathBuf>,
}

impl Journal {
    /// A journal for `run`, continuing after `next_seq` entries. `state_dir` gets the local copy.
    pub fn new(
        store: Store,
        run: &str,
        runbook: &str,
        next_seq: u32,
        state_dir: Option<PathBuf>,
    ) -> Self {
        let local = state_dir.and_then(|d| {
            let dir = d.join("journal");
            std::fs::create_dir_all(&dir).ok()?;
            Some(dir.join(format!("{run}.jsonl")))
        });
        Self {
            store,
            run: run.to_string(),
            runbook: runbook.to_string(),
            next: Mutex::new(next_seq),
            local,
        }
    }

    pub fn local_path(&self) -> Option<&PathBuf> {
        self.local.as_ref()
    }

    /// A blank entry of this run, to fill and `write`.
    pub fn entry(&self, event: Event, step: Option<&str>) -> Entry {
        let ms = now_ms();
        Entry {
            seq: 0,
            run: self.run.clone(),
            runbook: self.runbook.clone(),
            event,
            step: step.map(str::to_string),
            attempt: 0,
            at: humantime::format_rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms))
                .to_string(),
            at_ms: ms,
            outputs: Outputs::new(),
            detail: String::new(),
            inputs: BTreeMap::new(),
            region: None,
            outcome: None,
            duration_ms: None,
        }
    }

    /// Append an entry: to the store first (the authority for resume), then locally.
    pub async fn write(&self, mut e: Entry) -> Result<Entry> {
        let seq = {
            let mut n = self.next.lock().expect("journal seq");
            let s = *n;
            *n += 1;
            s
        };
        e.seq = seq;
        let key = format!(
            "{}{seq:06}-{}{}.json",
            journal_prefix(&self.store, &self.run),
            e.event.as_str(),
            e.step.as_ref().map(|s| format!("-{s}")).unwrap_or_default()
        );
        let body = serde_json::to_vec(&e).expect("journal entries serialize");
        if self.store.put_new(&key, &body).await? == crate::store::Written::Existed {
            return Err(Error::failed(format!(
                "journal entry {key} already exists: another process is writing run {}",
                self.run
            )));
        }
        if let Some(p) = &self.local {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{}", String::from_utf8_lossy(&body));
            }
        }
        tracing::info!(run = %self.run, step = ?e.step, event = e.event.as_str(), "journal");
        Ok(e)
    }
}

impl Journal {
    /// A line in the local copy only (for what happens after the store's journal is no longer
    /// this process's to write, such as a lost lease).
    pub fn note_local(&self, note: &str) {
        if let Some(p) = &self.local {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let line = serde_json::json!({"run": self.run, "note": note});
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

/// Every entry of a run, in order. Empty when the run does not exist.
pub async fn read(store: &Store, run: &str) -> Result<Vec<Entry>> {
    let prefix = journal_prefix(store, run);
    let mut out = vec![];
    for (key, _) in store.list(&prefix).await? {
        if key[prefix.len()..].contains('/') {
            continue; // approvals/
        }
        let Some(b) = store.get(&key).await? else {
            continue;
        };
        let e: Entry = serde_json::from_slice(&b).map_err(|e| {
            Error::failed(format!(
                "journal entry s3://{}/{key} is unreadable: {e}",
                store.bucket
            ))
        })?;
        out.push(e);
    }
    out.sort_by_key(|e| e.seq);
    Ok(out)
}

/// A run's entries and folded state; an error naming where it looked when the run has none.
pub async fn read_run(store: &Store, run: &str) -> Result<(Vec<Entry>, RunState)> {
    let entries = read(store, run).await?;
    if entries.is_empty() {
        return Err(Error::failed_hint(
            format!(
                "there is no run {run} (no journal in s3://{}/{})",
                store.bucket,
                journal_prefix(store, run)
            ),
            "list runs with drd runbook status, or start a new run without --resume",
        ));
    }
    let state = fold(&entries);
    Ok((entries, state))
}

/// The ids of every run in the store (oldest first).
pub async fn run_ids(store: &Store) -> Result<Vec<String>> {
    let prefix = format!("{}journal/", store.prefix);
    let mut ids: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_string))
        .collect();
    ids.dedup();
    Ok(ids)
}

/// A run's state, folded from its entries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunState {
    pub run: String,
    pub runbook: String,
    pub region: Option<String>,
    pub inputs: BTreeMap<String, String>,
    pub started_at: Option<String>,
    pub started_at_ms: u64,
    /// Outputs of every step that succeeded.
    pub completed: BTreeMap<String, Outputs>,
    /// The last event of each step.
    pub steps: BTreeMap<String, StepState>,
    pub outcome: Option<String>,
    pub next_seq: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepState {
    pub event: Event,
    /// A `failed` entry after the last attempt (the step's failure policy applied next).
    pub final_failure: bool,
    pub attempt: u32,
    pub at: String,
    pub at_ms: u64,
    pub detail: String,
    pub duration_ms: Option<u64>,
}

pub fn fold(entries: &[Entry]) -> RunState {
    let mut s = RunState::default();
    for e in entries {
        s.next_seq = s.next_seq.max(e.seq + 1);
        s.run = e.run.clone();
        s.runbook = e.runbook.clone();
        match e.event {
            Event::RunStarted => {
                s.inputs = e.inputs.clone();
                s.region = e.region.clone();
                s.started_at = Some(e.at.clone());
                s.started_at_ms = e.at_ms;
            }
            Event::RunFinished => s.outcome = e.outcome.clone(),
            Event::RunResumed => {}
            _ => {
                if let Some(step) = &e.step {
                    if e.event == Event::Succeeded {
                        s.completed.insert(step.clone(), e.outputs.clone());
                    }
                    s.steps.insert(
                        step.clone(),
                        StepState {
                            event: e.event,
                            final_failure: e.event == Event::Failed
                                && e.outcome.as_deref() == Some("final"),
                            attempt: e.attempt,
                            at: e.at.clone(),
                            at_ms: e.at_ms,
                            detail: e.detail.clone(),
                            duration_ms: e.duration_ms,
                        },
                    );
                }
            }
        }
    }
    s
}
