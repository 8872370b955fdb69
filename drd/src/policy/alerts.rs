//! `[alerts]`: where the daemon sends a notification when protection degrades (a scheduled job
//! fails, the newest point is older than the RPO, the source mirror goes stale, a drill fails).
//!
//! Two sinks, each its own section and each optional: `[alerts.webhook]` (an HTTP POST of a JSON
//! body, or a Slack-compatible `{"text": ...}`) and `[alerts.sns]` (a message published to a
//! topic). A webhook URL often carries a token (Slack's do), so it can be read from the
//! environment (`url_env`) instead of the policy file.

use serde::Deserialize;
use toml::Spanned;

/// The events an alert can be raised for (`on`), as written in the policy and in the body.
pub const EVENTS: &[&str] = &["job-failed", "rpo-breached", "mirror-stale", "drill-failed"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsPolicy {
    #[serde(default)]
    pub webhook: Option<WebhookPolicy>,
    #[serde(default)]
    pub sns: Option<SnsPolicy>,
    /// Which events alert; default all of `EVENTS`.
    #[serde(default)]
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// drd's own JSON document (docs/schemas/alert.schema.json).
    #[default]
    Json,
    /// `{"text": "..."}`, what Slack's incoming webhooks (and Mattermost's) accept.
    Slack,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPolicy {
    /// The URL to POST to. Prefer `url_env` when the URL holds a token.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Attempts after the first on a timeout, a connection error, 429 or 5xx.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsPolicy {
    /// `arn:aws:sns:REGION:ACCOUNT:NAME`; the message is published in the topic's region.
    pub topic_arn: Spanned<String>,
    /// Attempts after the first on a transient error.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_retries() -> u32 {
    3
}

pub use super::validate::check_webhook_url;

impl AlertsPolicy {
    /// Whether `event` alerts under this policy.
    pub fn wants(&self, event: &str) -> bool {
        match &self.on {
            None => true,
            Some(on) => on.get_ref().iter().any(|e| e.get_ref() == event),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.webhook.is_none() && self.sns.is_none()
    }
}

impl WebhookPolicy {
    /// The URL: `url`, else the variable `url_env` names (`None` when it is unset or empty).
    pub fn resolve_url(&self) -> Option<String> {
        if let Some(u) = &self.url {
            return Some(u.get_ref().clone());
        }
        let var = self.url_env.as_ref()?;
        std::env::var(var.get_ref()).ok().filter(|v| !v.is_empty())
    }
}

impl SnsPolicy {
    /// The topic's region (the fourth field of its ARN).
    pub fn region(&self) -> Option<&str> {
        self.topic_arn.get_ref().split(':').nth(3)
    }
}
