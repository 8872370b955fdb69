//! Progress of long work (stack operations, restores, pipeline runs, mirrors), on stderr only:
//! stdout stays the command's result (`--output json` is never mixed with it).
//!
//! - On a terminal: an `indicatif` spinner with the elapsed time and what is awaited; each
//!   event (a step, a stack status, the stack's latest resource event) is printed above it.
//! - Off a terminal (CI, journald): one status line at a steady interval
//!   (`DRD_PROGRESS_INTERVAL`, default 30 s): `drd restore: 2m 30s elapsed; <latest event>`.
//!   Nothing between beats, so logs stay short and a silent minute never happens.
//! - `DRD_PROGRESS=off` silences both.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Off a terminal, also print each event as it happens.
    echo: bool,
    latest: Arc<Mutex<String>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines(Duration),
    Off,
}

/// The mode for this process: `DRD_PROGRESS=off`, else a bar on a terminal, else lines every
/// `DRD_PROGRESS_INTERVAL`.
pub fn mode() -> Mode {
    if std::env::var("DRD_PROGRESS").is_ok_and(|v| v == "off") {
        return Mode::Off;
    }
    if std::io::stderr().is_terminal() {
        return Mode::Bar;
    }
    let every = std::env::var("DRD_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| *d >= Duration::from_millis(100))
        .unwrap_or(DEFAULT_INTERVAL);
    Mode::Lines(every)
}

/// The off-terminal status line.
pub fn status_line(label: &str, elapsed: Duration, latest: &str) -> String {
    let secs = Duration::from_secs(elapsed.as_secs());
    let latest = if latest.is_empty() {
        "starting".to_string()
    } else {
        latest.replace('\n', " ")
    };
    format!(
        "drd {label}: {} elapsed; {latest}",
        humantime::format_duration(secs)
    )
}

impl Progress {
    /// Start showing progress of `label` (the command, e.g. "restore").
    pub fn start(label: &str) -> Self {
        Self::with_mode(label, mode())
    }

    /// Like `start`; off a terminal, `echo` also prints every event line as it happens (what
    /// deploy, ci install and mirror always printed).
    pub fn start_echoing(label: &str, echo: bool) -> Self {
        let m = mode();
        let mut p = Self::with_mode(label, m);
        p.echo = echo && matches!(m, Mode::Lines(_));
        p
    }

    pub fn with_mode(label: &str, mode: Mode) -> Self {
        let latest = Arc::new(Mutex::new(String::new()));
        match mode {
            Mode::Off => Self {
                bar: None,
                echo: false,
                latest,
                ticker: None,
            },
            Mode::Bar => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} drd {prefix} [{elapsed}] {wide_msg}")
                        .expect("a valid template"),
                );
                bar.set_prefix(label.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Self {
                    bar: Some(bar),
                    echo: false,
                    latest,
                    ticker: None,
                }
            }
            Mode::Lines(every) => {
                let (l, label, started) = (latest.clone(), label.to_string(), Instant::now());
                let ticker = tokio::runtime::Handle::try_current().ok().map(|h| {
                    h.spawn(async move {
                        loop {
                            tokio::time::sleep(every).await;
                            let now = l.lock().expect("progress").clone();
                            eprintln!("{}", status_line(&label, started.elapsed(), &now));
                        }
                    })
                });
                Self {
                    bar: None,
                    echo: false,
                    latest,
                    ticker,
                }
            }
        }
    }

    /// A line always printed (above the spinner on a terminal), also off a terminal.
    pub fn say(&self, msg: &str) {
        *self.latest.lock().expect("progress") = msg.to_string();
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// An event: shown above the spinner on a terminal, the next status line's subject off one.
    pub fn line(&self, msg: &str) {
        *self.latest.lock().expect("progress") = msg.to_string();
        if let Some(b) = &self.bar {
            b.println(format!("  {msg}"));
            b.set_message(msg.to_string());
        } else if self.echo {
            eprintln!("  {msg}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_what_and_how_long() {
        assert_eq!(
            status_line(
                "restore",
                Duration::from_millis(150_400),
                "stack x: CREATE_IN_PROGRESS"
            ),
            "drd restore: 2m 30s elapsed; stack x: CREATE_IN_PROGRESS"
        );
        assert_eq!(
            status_line("deploy", Duration::from_secs(0), ""),
            "drd deploy: 0s elapsed; starting"
        );
    }
}
