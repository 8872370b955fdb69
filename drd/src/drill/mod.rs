//! Game-day drills: inject a fault, let a runbook (or nothing) recover, measure from outside.
//!
//! A drill is data (`runbooks/drills/*.toml`, parsed strictly, every mistake one line with file,
//! line, field and a fix). Running one (`run`) checks the steady state first (a gate: a failed
//! gate injects nothing), starts an independent prober (its own task and HTTP client, sharing
//! nothing with the recovery, sampling at a fixed interval), injects the fault, runs the
//! recovery, measures the RTO as the time from the injection to the first of `healthy_after`
//! consecutive healthy samples, always undoes the fault (also after a failure or an interrupt),
//! checks the steady state again, and writes a report (`report`).

mod alarm;
mod canary;
pub mod fault;
mod fault_fn;
mod journal;
mod probe;
mod recovery;
pub mod report;
pub mod run;

use crate::error::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// The drills shipped with drd (a file of the same name in `<runbooks>/drills/` wins).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "corrupt-live",
        include_str!("../../../runbooks/drills/corrupt-live.toml"),
    ),
    (
        "revoke-key",
        include_str!("../../../runbooks/drills/revoke-key.toml"),
    ),
    (
        "restore-rehearsal",
        include_str!("../../../runbooks/drills/restore-rehearsal.toml"),
    ),
    (
        "region-loss",
        include_str!("../../../runbooks/drills/region-loss.toml"),
    ),
    (
        "github-outage",
        include_str!("../../../runbooks/drills/github-outage.toml"),
    ),
];

/// Fault kinds this drd can inject, and where each may run.
pub const FAULTS: &[(&str, &str)] = &[
    ("corrupt-live", "lab and AWS"),
    ("revoke-key", "lab only"),
    ("region-loss", "lab only"),
    ("github-outage", "lab only"),
    // Reserved concurrency 0 through the real PutFunctionConcurrency (the lab honours it).
    ("throttle", "lab and AWS"),
    // Injected by the lab's function host: AWS has no switch for them.
    ("latency", "lab only"),
    ("errors", "lab only"),
    // A rehearsal breaks nothing: `recovery.rehearsal` says what is rehearsed.
    ("none", "lab and AWS"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drill {
    pub name: Spanned<String>,
    pub title: String,
    pub objectives: Objectives,
    #[serde(default)]
    pub steady_state: SteadyState,
    pub fault: Fault,
    pub recovery: Recovery,
    #[serde(default)]
    pub stop_conditions: StopConditions,
    /// Where the drill was read from.
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// The recovery time objective, e.g. "2m".
    pub rto: Spanned<String>,
    /// The recovery point objective, e.g. "30m": the most data (canary time) a recovery may
    /// lose. Optional: without it the RPO is measured and reported, not judged.
    #[serde(default)]
    pub rpo: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    /// Probe tiers a healthy sample passes (T0, T1; T2 costs one LLM call per sample).
    #[serde(default = "default_tiers")]
    pub tiers: Spanned<Vec<String>>,
    /// A sample slower than this is unhealthy.
    #[serde(default = "default_max_latency")]
    pub max_latency: Spanned<String>,
    /// The prober's fixed sampling interval.
    #[serde(default = "default_interval")]
    pub interval: Spanned<String>,
    /// Consecutive healthy samples that make the service healthy again.
    #[serde(default = "default_healthy_after")]
    pub healthy_after: Spanned<u32>,
}

impl Default for SteadyState {
    fn default() -> Self {
        Self {
            tiers: default_tiers(),
            max_latency: default_max_latency(),
            interval: default_interval(),
            healthy_after: default_healthy_after(),
        }
    }
}

fn default_tiers() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["T0".into(), "T1".into()])
}
fn default_max_latency() -> Spanned<String> {
    Spanned::new(0..0, "5s".into())
}
fn default_interval() -> Spanned<String> {
    Spanned::new(0..0, "500ms".into())
}
fn default_healthy_after() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: Spanned<String>,
    /// `latency`: how long each request is held, e.g. "6s".
    #[serde(default)]
    pub latency: Option<Spanned<String>>,
    /// `errors`: the share of requests that fail, in (0, 1]; default 1.
    #[serde(default)]
    pub rate: Option<Spanned<f64>>,
    /// `latency`/`errors`: the fault lifts by itself after this long (a synthetic outage of
    /// known length: recovery `expect = "automatic"` then measures it).
    #[serde(default)]
    pub duration: Option<Spanned<String>>,
}

/// The checked knobs of a function fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub latency: Option<Duration>,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// The runbook that recovers (run in this process, journaled like any run).
    #[serde(default)]
    pub runbook: Option<Spanned<String>>,
    /// Inputs of that runbook.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// `"automatic"`: nothing is run; the drill measures whether the service heals by itself.
    #[serde(default)]
    pub expect: Option<Spanned<String>>,
    /// `"restore"`: a restore rehearsal (with `fault.kind = "none"`): the newest point is
    /// restored into a scratch region under scratch names (input `region`), probed, and torn
    /// down; nothing users see changes (docs/drills.md).
    #[serde(default)]
    pub rehearsal: Option<Spanned<String>>,
    /// How long after the injection the runbook starts: the time on-call takes to notice and
    /// act (counted in the RTO, as in a real outage). Default "0s".
    #[serde(default)]
    pub start_after: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConditions {
    /// The longest the drill waits for the service to heal after the injection.
    #[serde(default = "default_max_duration")]
    pub max_duration: Spanned<String>,
    /// A probe threshold: stop (and roll back) once more samples than this were unhealthy
    /// after the fault (a bound on what users suffer, whatever the clock says).
    #[serde(default)]
    pub max_unhealthy_samples: Option<Spanned<u32>>,
    /// A CloudWatch alarm (in the drill's region) that stops the drill when it goes off; in
    /// ALARM already, nothing is injected.
    #[serde(default)]
    pub alarm: Option<Spanned<String>>,
}

impl Default for StopConditions {
    fn default() -> Self {
        Self {
            max_duration: default_max_duration(),
            max_unhealthy_samples: None,
            alarm: None,
        }
    }
}

fn default_max_duration() -> Spanned<String> {
    Spanned::new(0..0, "10m".into())
}

/// Parses a duration field (its value, its name) into a located error on a mistake.
type Dur<'a> = dyn Fn(&Spanned<String>, &str) -> Result<Duration, ConfigError> + 'a;

/// Makes a located error: (the value's span, the field, the message, the fix).
type At<'a> = dyn Fn(&std::ops::Range<usize>, &str, String, &str) -> ConfigError + 'a;

/// The checked figures of a drill.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub rto: Duration,
    pub rpo: Option<Duration>,
    pub tiers: Vec<crate::lambda::probe::Tier>,
    /// `"CI"` among the tiers: the CI holding the epoch must answer (CI drills).
    pub ci: bool,
    pub max_latency: Duration,
    pub interval: Duration,
    pub healthy_after: u32,
    pub max_duration: Duration,
    pub start_after: Duration,
    pub fault: FaultPlan,
    /// `stop_conditions.max_unhealthy_samples`.
    pub max_unhealthy: Option<u32>,
    /// `stop_conditions.alarm`.
    pub alarm: Option<String>,
}

impl Drill {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// Parse and check one drill file's text. `runbooks` lists the runbooks a recovery may name.
    pub fn parse(text: &str, source: &str, runbooks: &[String]) -> Result<Self, ConfigError> {
        let mut d: Drill = toml::from_str(text).map_err(|e| {
            let mut err = ConfigError::new(source, e.message().trim().to_string())
                .hint("see runbooks/drills/corrupt-live.toml for the format");
            if let Some(span) = e.span() {
                err = err.at_offset(text, span.start);
            }
            err
        })?;
        d.source = source.to_string();
        d.plan_checked(text, runbooks)?;
        Ok(d)
    }

    /// The drill's figures, every field checked (file, line, field and a fix on a mistake).
    pub fn plan(&self) -> Plan {
        self.plan_checked("", &[])
            .expect("a parsed drill was checked")
    }

    fn plan_checked(&self, text: &str, runbooks: &[String]) -> Result<Plan, ConfigError> {
        let at = |s: &std::ops::Range<usize>, field: &str, msg: String, hint: &str| {
            let mut e = ConfigError::new(&self.source, msg).field(field).hint(hint);
            if !text.is_empty() && s.end > 0 {
                e = e.at_offset(text, s.start);
            }
            e
        };
        let dur = |v: &Spanned<String>, field: &str| {
            humantime::parse_duration(v.get_ref()).map_err(|_| {
                at(
                    &v.span(),
                    field,
                    format!("{:?} is not a duration", v.get_ref()),
                    "write a duration such as \"500ms\", \"30s\" or \"5m\"",
                )
            })
        };
        let rto = dur(&self.objectives.rto, "objectives.rto")?;
        let rpo = match &self.objectives.rpo {
            Some(v) => Some(dur(v, "objectives.rpo")?),
            None => None,
        };
        let max_latency = dur(&self.steady_state.max_latency, "steady_state.max_latency")?;
        let interval = dur(&self.steady_state.interval, "steady_state.interval")?;
        if interval < Duration::from_millis(100) {
            return Err(at(
                &self.steady_state.interval.span(),
                "steady_state.interval",
                "an interval under 100ms would load the service more than it measures it".into(),
                "use 100ms or more",
            ));
        }
        let max_duration = dur(
            &self.stop_conditions.max_duration,
            "stop_conditions.max_duration",
        )?;
        let start_after = match &self.recovery.start_after {
            Some(v) => dur(v, "recovery.start_after")?,
            None => Duration::ZERO,
        };
        let mut tiers = vec![];
        let mut ci = false;
        for t in self.steady_state.tiers.get_ref() {
            if t == "CI" {
                ci = true;
                continue;
            }
            tiers.push(match t.as_str() {
                "T0" => crate::lambda::probe::Tier::T0,
                "T1" => crate::lambda::probe::Tier::T1,
                "T2" => crate::lambda::probe::Tier::T2,
                other => {
                    return Err(at(
                        &self.steady_state.tiers.span(),
                        "steady_state.tiers",
                        format!("{other:?} is not a probe tier"),
                        "use T0, T1, T2 (and CI for the CI's own health)",
                    ))
                }
            });
        }
        if tiers.is_empty() && !ci {
            return Err(at(
                &self.steady_state.tiers.span(),
                "steady_state.tiers",
                "no tier: every sample would be healthy".into(),
                "list at least T0",
            ));
        }
        let healthy_after = *self.steady_state.healthy_after.get_ref();
        if healthy_after == 0 {
            return Err(at(
                &self.steady_state.healthy_after.span(),
                "steady_state.healthy_after",
                "0 samples cannot show the service healthy".into(),
                "use 1 or more (3 is a good default)",
            ));
        }
        let kind = self.fault.kind.get_ref();
        if !FAULTS.iter().any(|(k, _)| k == kind) {
            return Err(at(
                &self.fault.kind.span(),
                "fault.kind",
                format!("{kind:?} is not a fault this drd can inject"),
                &format!(
                    "use one of: {}",
                    FAULTS
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let fault = self.fault_plan(kind, &dur, &at)?;
        let max_unhealthy = self.max_unhealthy(healthy_after, &at)?;
        if let Some(r) = &self.recovery.rehearsal {
            let hint = "write rehearsal = \"restore\" with fault.kind = \"none\", and no runbook or expect";
            if r.get_ref() != "restore" {
                return Err(at(
                    &r.span(),
                    "recovery.rehearsal",
                    format!("rehearsal = {:?} is not one drd can run", r.get_ref()),
                    "use rehearsal = \"restore\"",
                ));
            }
            if self.recovery.runbook.is_some() || self.recovery.expect.is_some() {
                return Err(at(
                    &r.span(),
                    "recovery.rehearsal",
                    "a rehearsal runs no runbook and expects nothing".into(),
                    hint,
                ));
            }
            if kind != "none" {
                return Err(at(
                    &self.fault.kind.span(),
                    "fault.kind",
                    format!("a rehearsal injects no fault, but fault.kind is {kind:?}"),
                    "write kind = \"none\"",
                ));
            }
        } else if kind == "none" {
            return Err(at(
                &self.fault.kind.span(),
                "fault.kind",
                "fault.kind = \"none\" breaks nothing: only a rehearsal may use it".into(),
                "name a fault, or write rehearsal = \"restore\" under [recovery]",
            ));
        } else {
            self.check_recovery(runbooks, &at)?;
        }
        Ok(Plan {
            rto,
            rpo,
            tiers,
            ci,
            max_latency,
            interval,
            healthy_after,
            max_duration,
            start_after,
            fault,
            max_unhealthy,
            alarm: self
                .stop_conditions
                .alarm
                .as_ref()
                .map(|a| a.get_ref().clone()),
        })
    }

    /// `stop_conditions.max_unhealthy_samples`: at least `healthy_after`.
    fn max_unhealthy(&self, healthy_after: u32, at: &At<'_>) -> Result<Option<u32>, ConfigError> {
        match &self.stop_conditions.max_unhealthy_samples {
            Some(n) if *n.get_ref() < healthy_after.max(1) => Err(at(
                &n.span(),
                "stop_conditions.max_unhealthy_samples",
                format!(
                    "{} unhealthy samples would stop the drill before a fault could be seen",
                    n.get_ref()
                ),
                "allow at least as many as steady_state.healthy_after (a few minutes' worth is usual)",
            )),
            Some(n) => Ok(Some(*n.get_ref())),
            None => Ok(None),
        }
    }

    /// `latency` (required by and only for `latency`), `rate` (only `errors`), `duration` (only
    /// those two: the lab lifts them).
    fn fault_plan(&self, kind: &str, dur: &Dur<'_>, at: &At<'_>) -> Result<FaultPlan, ConfigError> {
        let f = &self.fault;
        let only = |span: &std::ops::Range<usize>, field: &str, who: &str| {
            at(
                span,
                field,
                format!("{field} is for {who} faults, and this one is {kind:?}"),
                &format!("remove {field}, or use fault.kind = {who:?}"),
            )
        };
        let latency = match &f.latency {
            Some(v) if kind == "latency" => {
                let l = dur(v, "fault.latency")?;
                let max = dur(&self.steady_state.max_latency, "steady_state.max_latency")?;
                if l <= max {
                    return Err(at(
                        &v.span(),
                        "fault.latency",
                        format!(
                            "{} is within steady_state.max_latency ({}): the prober would never see the fault",
                            v.get_ref(),
                            self.steady_state.max_latency.get_ref()
                        ),
                        "hold requests longer than max_latency, e.g. twice as long",
                    ));
                }
                Some(l)
            }
            Some(v) => return Err(only(&v.span(), "fault.latency", "latency")),
            None if kind == "latency" => {
                return Err(at(
                    &f.kind.span(),
                    "fault.latency",
                    "a latency fault needs latency: how long each request is held".into(),
                    "add latency = \"6s\" (more than steady_state.max_latency, to be seen)",
                ))
            }
            None => None,
        };
        let rate = match &f.rate {
            Some(r) if kind != "errors" => return Err(only(&r.span(), "fault.rate", "errors")),
            Some(r) if !(*r.get_ref() > 0.0 && *r.get_ref() <= 1.0) => {
                return Err(at(
                    &r.span(),
                    "fault.rate",
                    format!("rate {} is not a share of requests", r.get_ref()),
                    "use a number above 0 and at most 1 (0.5: every second request fails)",
                ))
            }
            Some(r) => Some(*r.get_ref()),
            None => None,
        };
        let duration = match &f.duration {
            Some(v) if kind == "latency" || kind == "errors" => Some(dur(v, "fault.duration")?),
            Some(v) => {
                return Err(at(
                    &v.span(),
                    "fault.duration",
                    format!(
                        "a {kind} fault does not lift by itself: the drill's rollback lifts it"
                    ),
                    "remove duration (only latency and errors faults take one)",
                ))
            }
            None => None,
        };
        Ok(FaultPlan {
            latency,
            rate,
            duration,
        })
    }

    /// `runbook = NAME` or `expect = "automatic"`, exactly one.
    fn check_recovery(&self, runbooks: &[String], at: &At<'_>) -> Result<(), ConfigError> {
        let exp = |e: &Spanned<String>, msg: String| {
            at(
                &e.span(),
                "recovery.expect",
                msg,
                "write either runbook = \"NAME\" or expect = \"automatic\"",
            )
        };
        match (&self.recovery.runbook, &self.recovery.expect) {
            (Some(_), Some(e)) => {
                return Err(exp(e, "both runbook and expect are set".into()));
            }
            (None, Some(e)) if e.get_ref() != "automatic" => {
                return Err(exp(
                    e,
                    format!("expect = {:?} is not \"automatic\"", e.get_ref()),
                ));
            }
            (None, None) => {
                return Err(
                    ConfigError::new(&self.source, "[recovery] names no runbook")
                        .field("recovery")
                        .hint("write runbook = \"lambda-rollback\" (or expect = \"automatic\")"),
                );
            }
            (Some(r), None) if !runbooks.is_empty() && !runbooks.contains(r.get_ref()) => {
                return Err(at(
                    &r.span(),
                    "recovery.runbook",
                    format!("there is no runbook {:?}", r.get_ref()),
                    &format!("use one of: {}", runbooks.join(", ")),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Who may be drilled. On AWS (no endpoint override) the target must be named (`--stack`, equal
/// to the policy's stack) and a production stack (`stack.production`, the default) needs
/// `--i-mean-production`. In the lab a named target must still match.
pub fn target_guard(
    policy: &crate::policy::Policy,
    on_aws: bool,
    stack: Option<&str>,
    i_mean_production: bool,
) -> Result<(), ConfigError> {
    let file = policy.path.display().to_string();
    let name = policy.stack_name();
    match stack {
        Some(s) if s != name => {
            return Err(ConfigError::new(
                "--stack",
                format!("--stack {s} is not the policy's stack {name}"),
            )
            .hint(format!(
                "pass --stack {name}, or the policy of {s} with --policy"
            )));
        }
        None if on_aws => {
            return Err(
                ConfigError::new("--stack", "on AWS a drill needs an explicit target").hint(
                    format!(
                        "name it: --stack {name} (a drill injects a real fault into that stack)"
                    ),
                ),
            );
        }
        _ => {}
    }
    if on_aws && policy.stack.production && !i_mean_production {
        return Err(ConfigError::new(
            file,
            format!("stack {name} is production (stack.production, the default): a drill would break it for its users"),
        )
        .field("stack.production")
        .hint("drill a staging stack (a policy with production = false), or add --i-mean-production on a game day everyone knows about"));
    }
    Ok(())
}

/// Every drill: the shipped ones, then `<dir>/*.toml` (which replace shipped ones by name).
pub fn load_all(dir: Option<&Path>) -> Result<BTreeMap<String, Drill>, ConfigError> {
    let runbooks: Vec<String> = crate::runbook::load_all(dir.and_then(Path::parent))
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, text) in SHIPPED {
        let d = Drill::parse(text, &format!("(shipped) drills/{name}.toml"), &runbooks)?;
        out.insert(d.name().to_string(), d);
    }
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| ConfigError::new(dir.display().to_string(), format!("cannot read: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let shown = f.display().to_string();
            let text = std::fs::read_to_string(&f)
                .map_err(|e| ConfigError::new(&shown, format!("cannot read: {e}")))?;
            let d = Drill::parse(&text, &shown, &runbooks)?;
            out.insert(d.name().to_string(), d);
        }
    }
    Ok(out)
}

pub fn load(dir: Option<&Path>, name: &str) -> Result<Drill, ConfigError> {
    let mut all = load_all(dir)?;
    let known: Vec<String> = all.keys().cloned().collect();
    all.remove(name).ok_or_else(|| {
        ConfigError::new("NAME", format!("there is no drill {name:?}"))
            .hint(format!("use one of: {}", known.join(", ")))
    })
}

#[cfg(test)]
mod tests;
