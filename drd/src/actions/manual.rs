//! Manual approval: the step waits until an operator records an approval for this run and step
//! (`drd runbook approve RUN STEP` writes `journal/<run>/approvals/<step>.json`). If the step's
//! timeout passes first, the run pauses and can be resumed after the approval.

use super::{arg, Ctx, Outputs};
use crate::error::Result;
use std::time::Duration;

pub async fn approve(ctx: &Ctx<'_>, step: &str, args: &crate::actions::Args) -> Result<Outputs> {
    let message = arg(args, "message")?;
    let key = ctx.store.approval_key(&ctx.run_id, step);
    let mut told = false;
    loop {
        if let Some(b) = ctx.store.get(&key).await? {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            let by = v
                .get("by")
                .and_then(|b| b.as_str())
                .unwrap_or("unknown")
                .to_string();
            return Ok(Outputs::from([("approved_by".into(), by)]));
        }
        if !told {
            (ctx.progress)(&format!(
                "waiting for approval: {message}\n    approve with: drd runbook approve {} {step}",
                ctx.run_id
            ));
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
