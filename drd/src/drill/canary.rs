//! The RPO canary: RPO measured, not declared.
//!
//! Before the fault a drill writes timestamped values to the policy's canary secret
//! (`secrets.canary`, never a real credential) at a fixed interval, from a task and client of
//! its own. The canary is backed up like every other secret, so after the recovery the value the
//! service's region holds is the newest canary that survived: RPO = the fault's time minus that
//! canary's time. A fault that loses nothing leaves the last canary in place (RPO under one
//! canary interval); a region restored from a point carries the canary that point captured.

use crate::aws::{aws_error, error_code, Aws};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One canary value (the secret's whole string: it holds no credential).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// Always `1`: marks the value as a canary (a read-back refuses anything else).
    pub drd_canary: u32,
    /// The drill run that wrote it.
    pub run: String,
    /// 1, 2, ... within that run.
    pub seq: u32,
    /// RFC 3339, milliseconds.
    pub written_at: String,
}

impl Canary {
    pub fn time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.written_at).ok()
    }
}

/// The writer task: started before the fault, stopped (and awaited: no write races the fault)
/// right before the injection.
pub struct Writer {
    stop: watch::Sender<bool>,
    handle: JoinHandle<(Vec<Canary>, Option<String>)>,
}

/// What the writer did.
pub struct Written {
    pub canaries: Vec<Canary>,
    /// The first write that failed (the writer stops at it).
    pub error: Option<String>,
}

impl Writer {
    /// Write the first canary now, then one every `interval` until stopped.
    pub async fn start(
        aws: &Aws,
        region: &str,
        secret: &str,
        run: &str,
        interval: Duration,
    ) -> Writer {
        let sm = aws.secrets(region).await;
        let (stop, mut stopped) = watch::channel(false);
        let (secret, run) = (secret.to_string(), run.to_string());
        let region = region.to_string();
        let handle = tokio::spawn(async move {
            let mut out = vec![];
            // Only a canary is ever overwritten: a secret of that name holding anything else
            // (a real credential the policy does not list) is left alone.
            if let Err(e) = read_with(&sm, &region, &secret).await {
                return (out, Some(format!("{e}; nothing was written")));
            }
            let mut seq = 0;
            loop {
                seq += 1;
                let c = Canary {
                    drd_canary: 1,
                    run: run.clone(),
                    seq,
                    written_at: chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                };
                if let Err(e) = write(&sm, &secret, &c).await {
                    return (out, Some(e.to_string()));
                }
                out.push(c);
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.wait_for(|s| *s) => return (out, None),
                }
            }
        });
        Writer { stop, handle }
    }

    /// Stop writing; every write has finished when this returns.
    pub async fn stop(self) -> Written {
        let _ = self.stop.send(true);
        match self.handle.await {
            Ok((canaries, error)) => Written { canaries, error },
            Err(e) => Written {
                canaries: vec![],
                error: Some(format!("the canary writer died: {e}")),
            },
        }
    }
}

/// Put `c` as the secret's new AWSCURRENT (creating the secret the first time).
async fn write(sm: &aws_sdk_secretsmanager::Client, secret: &str, c: &Canary) -> Result<()> {
    let body = serde_json::to_string(c).expect("serializes");
    match sm
        .put_secret_value()
        .secret_id(secret)
        .secret_string(&body)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => sm
            .create_secret()
            .name(secret)
            .description("drd drill canary: timestamps written by drills to measure the RPO; holds no credential")
            .secret_string(&body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_error("secretsmanager", "CreateSecret", e)),
        Err(e) => Err(aws_error("secretsmanager", "PutSecretValue", e)),
    }
}

/// The canary `secret` holds in `region` (AWSCURRENT); `None` when the secret does not exist
/// there. A value that is not a canary is refused without being shown.
pub async fn read(aws: &Aws, region: &str, secret: &str) -> Result<Option<Canary>> {
    read_with(&aws.secrets(region).await, region, secret).await
}

async fn read_with(
    sm: &aws_sdk_secretsmanager::Client,
    region: &str,
    secret: &str,
) -> Result<Option<Canary>> {
    let v = match sm
        .get_secret_value()
        .secret_id(secret)
        .version_stage("AWSCURRENT")
        .send()
        .await
    {
        Ok(v) => v,
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_error("secretsmanager", "GetSecretValue", e)),
    };
    let text = v.secret_string().unwrap_or_default();
    match serde_json::from_str::<Canary>(text) {
        Ok(c) if c.drd_canary == 1 => Ok(Some(c)),
        _ => Err(Error::failed_hint(
            format!("{secret} in {region} holds something other than a drill canary (not shown)"),
            "secrets.canary must name a secret of its own: drills overwrite it",
        )),
    }
}

/// RPO from the canaries: `(seconds, note)`. `survived` is what the recovered region holds,
/// `written` what this drill wrote before the fault at `fault`.
pub fn rpo(
    fault: SystemTime,
    region: &str,
    survived: Option<&Canary>,
    written: &[Canary],
) -> (Option<f64>, String) {
    let last = written.last();
    let wrote = match (written.first(), last) {
        (Some(_), Some(l)) => format!(
            "; the drill wrote {} canaries before the fault, the last at {}",
            written.len(),
            l.written_at
        ),
        _ => String::new(),
    };
    let age = |t: SystemTime| {
        let s = fault.duration_since(t).unwrap_or_default().as_secs_f64();
        (s * 10.0).round() / 10.0
    };
    match survived.and_then(|c| c.time().map(|t| (c, t))) {
        Some((c, t)) => {
            let whose = if written.iter().any(|w| w == c) {
                format!("this drill's canary #{}", c.seq)
            } else {
                format!(
                    "canary #{} of run {} (nothing this drill wrote survived; no canary was written between that one and this drill, so this is an upper bound)",
                    c.seq, c.run
                )
            };
            (
                Some(age(t)),
                format!(
                    "measured: the newest canary that survived in {region} is {whose}, written {}{wrote}",
                    c.written_at
                ),
            )
        }
        None => match written.first().and_then(Canary::time) {
            Some(t) => (
                Some(age(t)),
                format!(
                    "measured: no canary survived in {region}: everything the drill wrote is lost, so the RPO is at least this{wrote}"
                ),
            ),
            None => (None, format!("not measured: no canary in {region}")),
        },
    }
}

/// Read the canary back where the service now runs and set the report's RPO from it (and
/// whether the objective is met). Never fails the drill: a canary that cannot be read leaves
/// the RPO "not measured", with why.
pub(super) async fn measure(
    aws: &Aws,
    report: &mut super::report::DrillReport,
    fault: SystemTime,
    (region, secret): (&str, &str),
    written: &[Canary],
) {
    match read(aws, region, secret).await {
        Ok(c) => {
            let (s, note) = rpo(fault, region, c.as_ref(), written);
            if s.is_some() || report.measured.rpo_seconds.is_none() {
                report.measured.rpo_seconds = s;
                report.measured.rpo_note = note;
            }
        }
        Err(e) if report.measured.rpo_seconds.is_some() => {
            report.measured.rpo_note = format!(
                "{} (the canary could not be read back in {region}: {e})",
                report.measured.rpo_note
            );
        }
        Err(e) => {
            report.measured.rpo_note =
                format!("not measured: the canary could not be read back in {region}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(run: &str, seq: u32, at: &str) -> Canary {
        Canary {
            drd_canary: 1,
            run: run.into(),
            seq,
            written_at: at.into(),
        }
    }

    #[test]
    fn the_rpo_is_the_fault_minus_the_newest_surviving_canary() {
        let fault = humantime::parse_rfc3339("2026-12-01T10:00:10Z").unwrap();
        let written = [
            c("r", 1, "2026-12-01T10:00:00.000Z"),
            c("r", 2, "2026-12-01T10:00:05.000Z"),
            c("r", 3, "2026-12-01T10:00:09.500Z"),
        ];
        // Nothing lost: the last canary is there.
        let (s, note) = rpo(fault, "us-east-1", Some(&written[2]), &written);
        assert_eq!(s, Some(0.5));
        assert!(note.contains("this drill's canary #3"), "{note}");
        // A point restored from before the drill: an earlier run's canary.
        let old = c("earlier", 7, "2026-12-01T09:50:10.000Z");
        let (s, note) = rpo(fault, "us-west-2", Some(&old), &written);
        assert_eq!(s, Some(600.0));
        assert!(note.contains("run earlier"), "{note}");
        // Nothing survived: at least since the first canary.
        let (s, note) = rpo(fault, "us-west-2", None, &written);
        assert_eq!(s, Some(10.0));
        assert!(note.contains("no canary survived"), "{note}");
        assert_eq!(rpo(fault, "x", None, &[]).0, None);
    }
}
