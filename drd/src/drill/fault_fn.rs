//! Faults of the function itself, each with its exact undo.
//!
//! `throttle` (lab and AWS): the function's reserved concurrency is set to 0 with the real
//! `PutFunctionConcurrency`, so Lambda throttles every request (what an emergency brake left on,
//! or a concurrency budget given to another function, does to users). The undo puts back the
//! reservation it found, or removes it when there was none.
//!
//! `latency` and `errors` (lab only: AWS has no switch for them): the lab's function host holds
//! each request, or fails a share of them as a failing function would, optionally for a known
//! length after which the lab lifts the fault by itself. The undo lifts it (harmless when it
//! has lifted already).

use crate::aws::{aws_error, Aws};
use crate::error::{Error, Result};
use crate::policy::Policy;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Throttle {
    pub kind: String,
    pub region: String,
    pub function: String,
    /// The reserved concurrency before the fault (`null`: none was reserved).
    pub reserved_before: Option<i32>,
}

pub async fn inject_throttle(aws: &Aws, policy: &Policy, region: &str) -> Result<Throttle> {
    let lambda = aws.lambda(region).await;
    let function = policy.function_name().to_string();
    let before = lambda
        .get_function_concurrency()
        .function_name(&function)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetFunctionConcurrency", e))?
        .reserved_concurrent_executions();
    lambda
        .put_function_concurrency()
        .function_name(&function)
        .reserved_concurrent_executions(0)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "PutFunctionConcurrency", e))?;
    Ok(Throttle {
        kind: "throttle".into(),
        region: region.to_string(),
        function,
        reserved_before: before,
    })
}

pub async fn undo_throttle(aws: &Aws, t: &Throttle) -> Result<Vec<String>> {
    let lambda = aws.lambda(&t.region).await;
    match t.reserved_before {
        Some(n) => {
            lambda
                .put_function_concurrency()
                .function_name(&t.function)
                .reserved_concurrent_executions(n)
                .send()
                .await
                .map_err(|e| aws_error("lambda", "PutFunctionConcurrency", e))?;
            Ok(vec![format!(
                "{}'s reserved concurrency is {n} again",
                t.function
            )])
        }
        None => {
            lambda
                .delete_function_concurrency()
                .function_name(&t.function)
                .send()
                .await
                .map_err(|e| aws_error("lambda", "DeleteFunctionConcurrency", e))?;
            Ok(vec![format!(
                "{} has no reserved concurrency again (as before)",
                t.function
            )])
        }
    }
}

/// A fault the lab's function host injects.
#[derive(Debug, Clone, Serialize)]
pub struct HostFault {
    /// `latency` or `errors`.
    pub kind: String,
    pub region: String,
    pub function: String,
    pub latency_ms: Option<u64>,
    pub rate: Option<f64>,
    /// The lab lifts it by itself after this long.
    pub lifts_after_ms: Option<u64>,
    /// The lab's function host.
    #[serde(skip)]
    control: String,
}

impl HostFault {
    pub fn summary(&self) -> String {
        let what = match self.kind.as_str() {
            "latency" => format!(
                "every request to {} is held {} ms",
                self.function,
                self.latency_ms.unwrap_or(0)
            ),
            _ => format!(
                "{:.0}% of the requests to {} fail as the function would",
                self.rate.unwrap_or(1.0) * 100.0,
                self.function
            ),
        };
        match self.lifts_after_ms {
            Some(ms) => format!("{} ({what}; the lab lifts it after {ms} ms)", self.kind),
            None => format!("{} ({what})", self.kind),
        }
    }

    fn url(&self) -> String {
        format!(
            "{}/_sandbox/functions/{}/{}/fault",
            self.control.trim_end_matches('/'),
            self.region,
            self.function
        )
    }
}

/// One request to a lab control endpoint (`what` names it in errors): a success, or why not.
pub(super) async fn lab(req: reqwest::RequestBuilder, what: &str) -> Result<()> {
    let r = req
        .send()
        .await
        .map_err(|e| Error::failed(format!("{what} did not answer: {}", e.without_url())))?;
    if !r.status().is_success() {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        return Err(Error::failed(format!(
            "{what} answered {status}: {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    Ok(())
}

/// Arm a `latency` or `errors` fault on the policy's function (`control`: the lab's function
/// host).
pub async fn inject_host_fault(
    control: &str,
    policy: &Policy,
    region: &str,
    kind: &str,
    plan: &super::FaultPlan,
) -> Result<HostFault> {
    let f = HostFault {
        kind: kind.to_string(),
        region: region.to_string(),
        function: policy.function_name().to_string(),
        latency_ms: plan.latency.map(|d| d.as_millis() as u64),
        rate: (kind == "errors").then(|| plan.rate.unwrap_or(1.0)),
        lifts_after_ms: plan.duration.map(|d| d.as_millis() as u64),
        control: control.to_string(),
    };
    let body = serde_json::json!({
        "kind": f.kind,
        "latency_ms": f.latency_ms,
        "rate": f.rate,
        "for_ms": f.lifts_after_ms,
    });
    lab(
        reqwest::Client::new().post(f.url()).json(&body),
        "the lab's function host (arming a fault)",
    )
    .await?;
    Ok(f)
}

pub async fn undo_host_fault(f: &HostFault) -> Result<Vec<String>> {
    lab(
        reqwest::Client::new().delete(f.url()),
        "the lab's function host (lifting a fault)",
    )
    .await?;
    Ok(vec![format!(
        "the lab's {} fault on {} is lifted",
        f.kind, f.function
    )])
}
