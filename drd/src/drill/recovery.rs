//! The drill's recovery: a runbook run in this process, or a restore rehearsal; and, after a
//! region loss, the failback that returns the service to its primary.

use super::fault;
use super::journal::Recorder;
use super::report::{DrillReport, Recovery, RecoveryStep};
use super::run::Options;
use super::Drill;
use crate::aws::Aws;
use crate::error::{Error, Result};
use crate::policy::Policy;
use std::sync::Mutex;
use tokio::sync::watch;

/// The rehearsal's recovery: restore the point under scratch names in the scratch region;
/// the prober is given the scratch Function URL once it serves.
pub(super) async fn rehearse(
    aws: &Aws,
    policy: &Policy,
    store: &crate::store::Store,
    r: &fault::Rehearsal,
    rec: &Recorder<'_>,
    url_tx: &watch::Sender<Option<String>>,
    opts: &Options<'_>,
) -> Recovery {
    rec.note(format!(
        "recovery: rehearsal of a restore of point {} into {}",
        r.scratch.point, r.scratch.region
    ));
    let steps = Mutex::new(vec![]);
    let step = |id: &str| {
        let t = rec.note(format!("rehearsal: {id} done"));
        steps.lock().expect("steps").push(RecoveryStep {
            id: id.to_string(),
            status: "succeeded".into(),
            t_ms: Some(t),
        });
    };
    let got = crate::restore::rehearsal::restore(
        aws,
        policy,
        store,
        &r.manifest,
        &r.scratch,
        opts.progress,
        &step,
    )
    .await;
    let outcome = match got {
        Ok(url) => {
            let _ = url_tx.send(Some(url));
            "succeeded".to_string()
        }
        Err(e) => {
            rec.note(format!("rehearsal: the restore failed: {e}"));
            format!("failed: {e}")
        }
    };
    Recovery {
        runbook: "restore-rehearsal".into(),
        run: None,
        outcome,
        steps: steps.into_inner().expect("steps"),
    }
}

/// Every input the recovery runbook needs without a default must be given: checked before the
/// gate, so that a drill never breaks what it then cannot recover.
pub(super) fn check_inputs(
    drill: &Drill,
    inputs: &std::collections::BTreeMap<String, String>,
    runbooks: Option<&std::path::Path>,
) -> Result<()> {
    let given = |k: &str| inputs.get(k).is_some_and(|v| !v.is_empty());
    // What the fault's recovery cannot do without: a restore needs where and with which key.
    let mut needed: Vec<String> = match drill.fault.kind.get_ref().as_str() {
        "region-loss" | "none" => vec!["region".into(), "identity".into()],
        _ => vec![],
    };
    if let Some(name) = &drill.recovery.runbook {
        let rb = crate::runbook::load(runbooks, name.get_ref())?;
        needed.extend(
            rb.inputs
                .iter()
                .filter(|(_, i)| i.required)
                .map(|(k, _)| k.clone()),
        );
    }
    needed.sort();
    needed.dedup();
    let missing: Vec<&String> = needed.iter().filter(|k| !given(k)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(crate::error::ConfigError::new(
        "--input",
        format!(
            "drill {} cannot recover without {}",
            drill.name(),
            missing
                .iter()
                .map(|k| format!("input {k}"))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    )
    .hint(format!(
        "pass {} (a scheduled drill: the schedule's inputs = {{ ... }} in the policy, and daemon.identity)",
        missing
            .iter()
            .map(|k| if *k == "identity" {
                "--identity FILE".to_string()
            } else {
                format!("--input {k}=...")
            })
            .collect::<Vec<_>>()
            .join(" ")
    ))
    .into())
}

/// After a region loss and its undo: when the service runs elsewhere (the store's active-region
/// record), the `failback` runbook returns it to the primary and retires the standby's stack.
/// When it still runs in the primary (the restore was stopped before it moved users) but a
/// stack stands in the standby that was not there before the drill, the rollback says so and
/// fails: a half-built stack is not deleted behind anyone's back.
pub(super) async fn fail_back(
    aws: &Aws,
    policy: &Policy,
    store: &crate::store::Store,
    (inputs, standby_existed): (&std::collections::BTreeMap<String, String>, bool),
    opts: &Options<'_>,
) -> Result<Option<String>> {
    let active = crate::store::active::read_active(store).await?;
    let Some(a) = active.filter(|a| a.region != policy.primary_region()) else {
        if let (false, Some(r)) = (standby_existed, inputs.get("region")) {
            let cf = aws.cloudformation(r).await;
            if crate::stack::describe_stack(&cf, policy.stack_name())
                .await?
                .is_some()
            {
                return Err(Error::failed_hint(
                    format!(
                        "the stopped restore left stack {} in {r}, which was not there before the drill",
                        policy.stack_name()
                    ),
                    format!(
                        "check it, then delete it: aws cloudformation delete-stack --stack-name {} --region {r}",
                        policy.stack_name()
                    ),
                ));
            }
        }
        return Ok(None);
    };
    let mut fb = std::collections::BTreeMap::new();
    if let Some(i) = inputs.get("identity") {
        fb.insert("identity".to_string(), i.clone());
    }
    fb.insert("retire_standby".to_string(), "true".to_string());
    let rr = recover(None, aws, policy, &a.region, ("failback", &fb), opts, store).await?;
    if rr.outcome != "succeeded" {
        return Err(Error::failed(format!(
            "runbook failback {} (run {}): {}",
            rr.outcome,
            rr.run,
            rr.error.as_deref().unwrap_or("see its journal")
        )));
    }
    Ok(Some(format!(
        "failback (run {}): the service is back in {}; the standby stack in {} is retired (its secrets and artifact bucket stay)",
        rr.run,
        policy.primary_region(),
        a.region
    )))
}

/// A rehearsal's RPO: the age of the point it restores, at the start (what a restore now would
/// lose at most).
pub(super) fn rpo_of_point(report: &mut DrillReport, s: &crate::restore::rehearsal::Scratch) {
    let Ok(at) = humantime::parse_rfc3339(&s.point_created_at) else {
        return;
    };
    let age = std::time::SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs_f64();
    report.measured.rpo_seconds = Some((age * 10.0).round() / 10.0);
    report.measured.rpo_note = format!(
        "the age of the newest point ({}, taken {}) when the rehearsal began: a restore would lose at most what changed since",
        s.point, s.point_created_at
    );
}

/// Run the recovery runbook in this process (journaled like any run).
/// `runbook` is the runbook's name and inputs.
pub(super) async fn recover(
    secret_value: Option<&secrecy::SecretString>,
    aws: &Aws,
    policy: &Policy,
    region: &str,
    runbook: (&str, &std::collections::BTreeMap<String, String>),
    opts: &Options<'_>,
    store: &crate::store::Store,
) -> Result<crate::runbook::exec::RunReport> {
    let (name, inputs) = runbook;
    let rb = crate::runbook::load(opts.runbooks.as_deref(), name)?;
    let ctx = crate::actions::Ctx {
        aws,
        policy,
        region: region.to_string(),
        store: store.clone(),
        run_id: String::new(),
        progress: opts.progress,
        secret_value,
    };
    let ro = crate::runbook::exec::RunOptions {
        inputs: inputs.clone(),
        resume: None,
        state_dir: opts.state_dir.clone(),
        lease_ttl: None,
        #[cfg(feature = "failpoints")]
        failpoint: None,
    };
    crate::runbook::exec::execute(&ctx, &rb, &ro).await
}

/// After a GitHub outage and its undo: when CodePipeline holds the CI epoch, the `ci-failback`
/// runbook pushes what reached the mirror to GitHub, gives the epoch back and deploys through
/// the workflow.
pub(super) async fn ci_fail_back(
    aws: &Aws,
    policy: &Policy,
    region: &str,
    store: &crate::store::Store,
    opts: &Options<'_>,
) -> Result<Option<String>> {
    let (epoch, _) = crate::store::ci_epoch::read(store).await?;
    if epoch.provider != crate::store::ci_epoch::Provider::Codepipeline {
        return Ok(None);
    }
    let rr = recover(
        None,
        aws,
        policy,
        region,
        ("ci-failback", &std::collections::BTreeMap::new()),
        opts,
        store,
    )
    .await?;
    if rr.outcome != "succeeded" {
        return Err(Error::failed(format!(
            "runbook ci-failback {} (run {}): {}",
            rr.outcome,
            rr.run,
            rr.error.as_deref().unwrap_or("see its journal")
        )));
    }
    Ok(Some(format!(
        "ci-failback (run {}): GitHub holds the CI epoch again and deployed through its workflow",
        rr.run
    )))
}

/// A CI drill's RPO: the mirror's age at the fault (commits pushed to GitHub after its last
/// fetch are not in what the standby pipeline deploys).
pub(super) async fn mirror_rpo(
    report: &mut DrillReport,
    store: &crate::store::Store,
    at: std::time::SystemTime,
) {
    let newest = crate::ci::mirror::newest(store).await;
    let Ok(Some((pointer, _, _))) = newest else {
        report.measured.rpo_note =
            "no mirror in the store: the standby CI has nothing to deploy".into();
        return;
    };
    let Ok(fetched) = humantime::parse_rfc3339(&pointer.fetched_at) else {
        return;
    };
    let age = at.duration_since(fetched).unwrap_or_default().as_secs_f64();
    report.measured.rpo_seconds = Some((age * 10.0).round() / 10.0);
    report.measured.rpo_note = format!(
        "the mirror's age at the fault (last fetched from GitHub {}, head {}): what was pushed to GitHub after it is not deployable during the outage",
        pointer.fetched_at, pointer.head
    );
}
