//! A minimal OpenAI-compatible chat-completions client that asks for a label -> role mapping.
//!
//! Wire format: `POST {base}/chat/completions` with `Authorization: Bearer KEY`, a JSON body with
//! `model`, `messages` and `response_format: {"type": "json_object"}`; the mapping is the JSON
//! object in `choices[0].message.content`.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use std::time::Duration;

/// The public API; the sandbox and tests point `OPENAI_BASE_URL` at a local stub instead.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The key was refused: the caller should re-read it (a rotation may have happened).
    #[error("the chat-completions API refused the API key (HTTP 401)")]
    Unauthorized,
    #[error("the chat-completions API answered HTTP {status}")]
    Status { status: u16 },
    #[error("the chat-completions API could not be reached: {0}")]
    Transport(String),
    #[error("the chat-completions reply was not in the expected format: {0}")]
    Format(String),
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    base_url: String,
    model: String,
    /// Attempts for 429 and 5xx answers (at least 1).
    attempts: u32,
    backoff: Duration,
}

impl LlmClient {
    pub fn new(base_url: &str, model: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(45))
            .build()
            .expect("a reqwest client with rustls always builds");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            attempts: 2,
            backoff: Duration::from_millis(200),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The prompt carries a machine-readable JSON block so any OpenAI-compatible model (and the
    /// sandbox stub) can answer with `{"<label>": "<role>", ...}`.
    pub fn request_body(&self, transcript: &str, labels: &[String], roles: &[String]) -> Value {
        let task = json!({"labels": labels, "roles": roles});
        json!({
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": "You label the speakers of a call transcript. \
                    Answer with one JSON object that maps every speaker label listed in the task \
                    to exactly one of the listed roles, and nothing else."},
                {"role": "user", "content": format!("Task: {task}\n\nTranscript:\n{transcript}")}
            ]
        })
    }

    /// Ask for a mapping. Retries 429 and 5xx answers with a short backoff.
    pub async fn map_speakers(
        &self,
        key: &SecretString,
        transcript: &str,
        labels: &[String],
        roles: &[String],
    ) -> Result<Value, LlmError> {
        let body = self.request_body(transcript, labels, roles);
        let url = format!("{}/chat/completions", self.base_url);
        let mut last = LlmError::Transport("no attempt made".into());
        for attempt in 0..self.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * attempt).await;
            }
            let resp = self
                .http
                .post(&url)
                .bearer_auth(key.expose_secret())
                .json(&body)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    // Never print the request: it carries the key in a header.
                    last = LlmError::Transport(e.without_url().to_string());
                    continue;
                }
            };
            let status = resp.status().as_u16();
            if status == 401 {
                return Err(LlmError::Unauthorized);
            }
            if status == 429 || status >= 500 {
                last = LlmError::Status { status };
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(LlmError::Status { status });
            }
            let text = resp
                .text()
                .await
                .map_err(|e| LlmError::Transport(e.without_url().to_string()))?;
            return parse_reply(&text);
        }
        Err(last)
    }
}

/// Extract the mapping object from a chat-completions reply body.
pub fn parse_reply(text: &str) -> Result<Value, LlmError> {
    let reply: Value = serde_json::from_str(text)
        .map_err(|e| LlmError::Format(format!("reply is not JSON: {e}")))?;
    let content = reply
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| LlmError::Format("no choices[0].message.content string".into()))?;
    let mapping: Value = serde_json::from_str(content)
        .map_err(|e| LlmError::Format(format!("message content is not JSON: {e}")))?;
    match mapping {
        // Some models wrap the answer: {"mapping": {...}}.
        Value::Object(ref o) if o.len() == 1 && o.get("mapping").is_some_and(Value::is_object) => {
            Ok(o["mapping"].clone())
        }
        Value::Object(_) => Ok(mapping),
        _ => Err(LlmError::Format(
            "message content is not a JSON object".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_wrapped_mappings() {
        let plain = r#"{"choices":[{"message":{"role":"assistant","content":"{\"Speaker 0\":\"Agent\"}"}}]}"#;
        assert_eq!(parse_reply(plain).unwrap(), json!({"Speaker 0": "Agent"}));
        let wrapped =
            r#"{"choices":[{"message":{"content":"{\"mapping\":{\"Speaker 0\":\"Agent\"}}"}}]}"#;
        assert_eq!(parse_reply(wrapped).unwrap(), json!({"Speaker 0": "Agent"}));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse_reply("<html>"), Err(LlmError::Format(_))));
        assert!(matches!(parse_reply("{}"), Err(LlmError::Format(_))));
        let not_json = r#"{"choices":[{"message":{"content":"Speaker 0 is the agent"}}]}"#;
        assert!(matches!(parse_reply(not_json), Err(LlmError::Format(_))));
        let array = r#"{"choices":[{"message":{"content":"[1,2]"}}]}"#;
        assert!(matches!(parse_reply(array), Err(LlmError::Format(_))));
    }
}
