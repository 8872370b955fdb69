//! Alerts: the daemon tells people when protection degrades.
//!
//! Events (`policy::alerts::EVENTS`): `job-failed` (a scheduled run failed after its retries),
//! `rpo-breached` (the newest recovery point is older than `daemon.rpo`), `mirror-stale` (the
//! source mirror's last fetch is older than `ci.mirror_max_age`) and `drill-failed`.
//!
//! **One alert per condition, across daemons.** Each alert has a key naming the condition's
//! instance (the firing, the newest point's time, the mirror fetch's time). Before sending, the
//! daemon claims `<stack>/alerts/<event>/<key>.json` in the store with `If-None-Match: *`; only the
//! daemon whose create succeeds sends. When the store cannot be written (it may be why a backup
//! failed) the alert is sent anyway: a duplicate is better than silence.
//!
//! **No secret in the body.** The daemon holds no secret value (only public age recipients); the
//! detail is an error message, scrubbed of URL credentials and token-shaped words and cut to
//! 1,000 characters, and a webhook URL (which may carry a token) is never logged.

use super::metrics::Metrics;
use crate::aws::Aws;
use crate::policy::alerts::{AlertsPolicy, WebhookFormat};
use crate::store::{Store, Written};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The alert document (a webhook's JSON body and the SNS message); docs/schemas/alert.schema.json.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// The document's version.
    pub drd_alert: u32,
    pub event: &'static str,
    /// `critical` (protection is failing) or `warning` (it is degrading).
    pub severity: &'static str,
    pub stack: String,
    /// The scheduled job (`backup`, `verify`, `runbook:NAME`, ...), for `job-failed`.
    pub job: Option<String>,
    /// One line for a person.
    pub summary: String,
    /// The error or the figures behind the summary.
    pub detail: String,
    /// When the daemon raised it (RFC 3339).
    pub at: String,
    /// The daemon that raised it (host:pid).
    pub daemon: String,
    /// The condition's instance: the same condition never alerts twice.
    pub key: String,
}

impl Alert {
    pub fn new(
        event: &'static str,
        stack: &str,
        summary: String,
        detail: &str,
        key: String,
        daemon: &str,
    ) -> Self {
        Self {
            drd_alert: 1,
            event,
            severity: if event == "job-failed" || event == "drill-failed" {
                "critical"
            } else {
                "warning"
            },
            stack: stack.to_string(),
            job: None,
            summary: scrub(&summary),
            detail: scrub(detail),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            daemon: daemon.to_string(),
            key,
        }
    }

    fn slack_text(&self) -> String {
        format!(
            ":rotating_light: *drd {}* `{}`: {}\n{}",
            self.event, self.stack, self.summary, self.detail
        )
    }
}

/// Sends alerts to the sinks of a stack's policy.
#[derive(Clone)]
pub struct Alerter {
    aws: Arc<Aws>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// First wait between attempts (then doubling).
    backoff: Duration,
    /// Deliveries in flight: shutdown waits for them (bounded) instead of dropping them.
    tasks: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl Alerter {
    pub fn new(aws: Arc<Aws>, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A redirect could carry the alert (and the URL's token) elsewhere: none followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("drd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client without custom TLS builds");
        Self {
            aws,
            http,
            metrics,
            backoff: Duration::from_secs(1),
            tasks: Arc::default(),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Wait up to `bound` for deliveries in flight (at shutdown).
    pub async fn drain(&self, bound: Duration) {
        let mut set = std::mem::take(&mut *self.tasks.lock().expect("alert tasks"));
        let all = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("alerts still being delivered at shutdown were abandoned");
        }
    }

    /// Claim the condition in the store, then send to every sink; in the background (a slow
    /// webhook never holds a lease or a scheduler slot).
    pub fn raise(&self, policy: &AlertsPolicy, store: &Store, alert: Alert) {
        if policy.is_empty() || !policy.wants(alert.event) {
            return;
        }
        // A condition that lasts is raised once by this daemon, not at every check.
        let id = (
            alert.stack.clone(),
            alert.event.to_string(),
            alert.key.clone(),
        );
        if !self.metrics.raised.lock().expect("metrics").insert(id) {
            return;
        }
        let (me, policy, store) = (self.clone(), policy.clone(), store.clone());
        let mut tasks = self.tasks.lock().expect("alert tasks");
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move { me.claim_and_send(&policy, &store, &alert).await });
    }

    async fn claim_and_send(&self, policy: &AlertsPolicy, store: &Store, alert: &Alert) {
        let body = serde_json::to_vec(alert).expect("an alert serializes");
        let key = format!(
            "{}alerts/{}/{}.json",
            store.prefix,
            alert.event,
            safe_key(&alert.key)
        );
        let claimed = match store.put_new(&key, &body).await {
            Ok(Written::New) => true,
            Ok(Written::Existed) => {
                tracing::info!(event = alert.event, stack = %alert.stack, key = %alert.key, "alert already raised by another daemon");
                return;
            }
            Err(e) => {
                tracing::warn!(event = alert.event, error = %e, "cannot record the alert in the store; sending it anyway");
                false
            }
        };
        if !self.send(policy, alert).await && claimed {
            // Nothing delivered: give the claim back so the next check (here or on another
            // daemon) tries again, instead of a claimed alert nobody ever sent.
            let _ = store.delete(&key).await;
            let id = (
                alert.stack.clone(),
                alert.event.to_string(),
                alert.key.clone(),
            );
            self.metrics.raised.lock().expect("metrics").remove(&id);
        }
    }

    /// Send to each sink with retries; the outcome of each is logged and counted. True when
    /// at least one sink took it.
    pub async fn send(&self, policy: &AlertsPolicy, alert: &Alert) -> bool {
        let mut delivered = false;
        if let Some(w) = &policy.webhook {
            let url = w.resolve_url();
            let checked = url.as_deref().map(crate::policy::alerts::check_webhook_url);
            let outcome = match (url, checked) {
                (None, _) => {
                    tracing::error!(
                        event = alert.event,
                        "alerts.webhook: the URL variable is unset or empty; alert not sent"
                    );
                    "failed"
                }
                (Some(_), Some(Err(why))) => {
                    tracing::error!(event = alert.event, %why, "alerts.webhook: the URL is refused; alert not sent");
                    "failed"
                }
                (Some(url), _) => {
                    let body = match w.format {
                        WebhookFormat::Json => serde_json::to_value(alert).expect("serializes"),
                        WebhookFormat::Slack => serde_json::json!({ "text": alert.slack_text() }),
                    };
                    self.with_retries("webhook", alert, w.retries, || self.post(&url, &body))
                        .await
                }
            };
            self.metrics
                .count_alert(&alert.stack, alert.event, "webhook", outcome);
            delivered |= outcome == "sent";
        }
        if let Some(s) = &policy.sns {
            let arn = s.topic_arn.get_ref().clone();
            let region = s.region().unwrap_or("us-east-1").to_string();
            let message = serde_json::to_string(alert).expect("serializes");
            let subject: String = format!("drd {} {}", alert.event, alert.stack)
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
                .take(100)
                .collect();
            let outcome = self
                .with_retries("sns", alert, s.retries, || {
                    self.publish(&region, &arn, &subject, &message)
                })
                .await;
            self.metrics
                .count_alert(&alert.stack, alert.event, "sns", outcome);
            delivered |= outcome == "sent";
        }
        delivered
    }

    async fn with_retries<F, Fut>(
        &self,
        sink: &str,
        alert: &Alert,
        retries: u32,
        mut attempt: F,
    ) -> &'static str
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), (bool, String)>>,
    {
        let mut wait = self.backoff;
        for n in 0..=retries {
            match attempt().await {
                Ok(()) => {
                    tracing::info!(sink, event = alert.event, stack = %alert.stack, "alert sent");
                    return "sent";
                }
                Err((transient, why)) if transient && n < retries => {
                    tracing::warn!(sink, event = alert.event, attempt = n + 1, %why, retry_in = ?wait, "alert not delivered; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err((_, why)) => {
                    tracing::error!(sink, event = alert.event, stack = %alert.stack, %why, "alert not delivered");
                    return "failed";
                }
            }
        }
        "failed"
    }

    /// POST the body; `Err((transient, why))`. The URL is never part of `why`.
    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<(), (bool, String)> {
        match self.http.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let s = r.status();
                Err((
                    s.as_u16() == 429 || s.is_server_error(),
                    format!("the webhook answered {s}"),
                ))
            }
            // A request that could not be built is not worth retrying.
            Err(e) if e.is_builder() => {
                Err((false, "the webhook request could not be built".into()))
            }
            Err(e) => Err((
                true,
                format!(
                    "the webhook did not answer ({})",
                    if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connection failed"
                    } else {
                        "request failed"
                    }
                ),
            )),
        }
    }

    async fn publish(
        &self,
        region: &str,
        arn: &str,
        subject: &str,
        message: &str,
    ) -> Result<(), (bool, String)> {
        self.aws
            .sns(region)
            .await
            .publish()
            .topic_arn(arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let e = crate::aws::aws_error("sns", "Publish", e);
                (e.retry() == crate::error::Retry::Transient, e.to_string())
            })
    }
}

/// A store key segment from an alert key (RFC 3339 times, job names).
fn safe_key(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Remove what could be a credential from a message: URL user info, and words shaped like API
/// keys or tokens (`sk-...`, `ghp_...`, `github_pat_...`, long hex or base64 runs); cut to 1,000
/// characters.
pub fn scrub(s: &str) -> String {
    let mut out: Vec<String> = vec![];
    for word in s.split(' ') {
        let w = match word.find("://").zip(word.find('@')) {
            Some((scheme, at)) if at > scheme => {
                format!("{}://***{}", &word[..scheme], &word[at..])
            }
            _ => word.to_string(),
        };
        let bare = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-');
        if w.contains("arn:aws") {
            out.push("[arn]".into());
            continue;
        }
        let account = bare.len() == 12 && bare.chars().all(|c| c.is_ascii_digit());
        if account {
            out.push(w.replace(bare, "[account]"));
            continue;
        }
        // Commit and content hashes are public and worth keeping.
        let digest = (bare.len() == 40 || bare.len() == 64)
            && bare
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        let tokenish = !digest
            && ["sk-", "ghp_", "gho_", "ghs_", "github_pat_", "AKIA", "ASIA"]
                .iter()
                .any(|p| bare.starts_with(p) && bare.len() >= 16)
            || (!digest
                && bare.len() >= 32
                && bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c))
                && bare.chars().any(|c| c.is_ascii_digit())
                && bare.chars().any(|c| c.is_ascii_alphabetic()));
        out.push(if tokenish {
            w.replace(bare, "[redacted]")
        } else {
            w
        });
    }
    out.join(" ").chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_credentials_and_keeps_the_message() {
        let s = scrub("GET https://x-access-token:ghs_abcdefghijklmnop1234@github.com/o/r failed: key sk-proj-ABCDEFGHIJ0123456789 was refused");
        assert!(!s.contains("ghs_abcdefghijklmnop1234"), "{s}");
        assert!(!s.contains("sk-proj-ABCDEFGHIJ0123456789"), "{s}");
        assert!(s.contains("https://***@github.com/o/r"), "{s}");
        assert!(s.contains("was refused"), "{s}");
        // Ordinary words, ids and times stay.
        let s = scrub("User: arn:aws:sts::123456789012:assumed-role/x/y is not authorized (account 123456789012)");
        assert!(
            !s.contains("123456789012") && !s.contains("assumed-role"),
            "{s}"
        );
        let plain =
            "stack classifier-prod not found at 2026-12-01T00:00:00Z (point 20261201T000000Z-ab12)";
        assert_eq!(scrub(plain), plain);
        assert_eq!(scrub(&"x".repeat(5000)).len(), 1000);
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(scrub(&format!("code {sha} differs")).contains(sha));
    }

    /// A webhook that answers 503 twice, then 200: delivered on the third attempt; one that
    /// answers 400 is not retried; the Slack format is `{"text": ...}`.
    #[tokio::test]
    async fn webhook_delivery_retries_transient_answers_only() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let hits = Arc::new(AtomicU32::new(0));
        let bodies = Arc::new(std::sync::Mutex::new(vec![]));
        let (h, b) = (hits.clone(), bodies.clone());
        let app = axum::Router::new()
            .route(
                "/flaky",
                axum::routing::post(move |body: String| {
                    let n = h.fetch_add(1, Ordering::SeqCst);
                    b.lock().unwrap().push(body);
                    async move {
                        if n < 2 {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                }),
            )
            .route(
                "/bad",
                axum::routing::post(|| async { axum::http::StatusCode::BAD_REQUEST }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(l, app).await });
        let aws = Arc::new(Aws::new(Default::default()));
        let metrics = Arc::new(Metrics::new());
        let mut alerter = Alerter::new(aws, metrics.clone());
        alerter.backoff = Duration::from_millis(10);
        let policy = |path: &str, format: &str| -> AlertsPolicy {
            toml::from_str(&format!(
                "[webhook]\nurl = \"http://127.0.0.1:{port}/{path}\"\nformat = \"{format}\"\nretries = 3\n"
            ))
            .unwrap()
        };
        let alert = Alert::new(
            "job-failed",
            "s1",
            "the backup failed".into(),
            "why",
            "k".into(),
            "d",
        );
        alerter.send(&policy("flaky", "slack"), &alert).await;
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        let last: serde_json::Value =
            serde_json::from_str(bodies.lock().unwrap().last().unwrap()).unwrap();
        assert!(
            last["text"].as_str().unwrap().contains("the backup failed"),
            "{last}"
        );
        alerter.send(&policy("bad", "json"), &alert).await;
        let t = metrics.render(0.0, &[], false);
        assert!(t.contains("drd_alerts_total{stack=\"s1\",event=\"job-failed\",sink=\"webhook\",outcome=\"sent\"} 1"), "{t}");
        assert!(t.contains("drd_alerts_total{stack=\"s1\",event=\"job-failed\",sink=\"webhook\",outcome=\"failed\"} 1"), "{t}");
    }

    #[test]
    fn keys_are_store_safe() {
        assert_eq!(
            safe_key("runbook:pipeline@2026-12-01T00:00:00Z"),
            "runbook_pipeline_2026-12-01T00_00_00Z"
        );
    }
}
