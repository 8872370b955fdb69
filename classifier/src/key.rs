//! Where the OpenAI API key comes from: `OPENAI_API_KEY` when set, otherwise the Secrets Manager
//! secret (default `openai-api-key`, stage `AWSCURRENT`). The secret is read once and cached; on
//! an HTTP 401 the caller asks for a re-read, so a rotation reaches a warm function without a
//! redeploy. The value may be a bare key or the original layout `{"OPENAI_API_KEY": "..."}`.

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

pub const DEFAULT_SECRET_NAME: &str = "openai-api-key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no OpenAI API key is configured: set OPENAI_API_KEY or create the secret {0:?}")]
    Missing(String),
    #[error("reading the secret {name:?} failed: {code}")]
    Read { name: String, code: String },
    #[error("the secret {0:?} holds neither a bare key nor a JSON object with OPENAI_API_KEY")]
    Layout(String),
}

enum Source {
    Fixed(SecretString),
    Secret {
        client: aws_sdk_secretsmanager::Client,
        name: String,
        stage: String,
    },
    Nothing,
}

pub struct ApiKey {
    source: Source,
    cached: Mutex<Option<SecretString>>,
}

impl ApiKey {
    pub fn fixed(key: SecretString) -> Self {
        Self {
            source: Source::Fixed(key),
            cached: Mutex::new(None),
        }
    }

    pub fn none() -> Self {
        Self {
            source: Source::Nothing,
            cached: Mutex::new(None),
        }
    }

    pub fn from_secret(
        client: aws_sdk_secretsmanager::Client,
        name: String,
        stage: String,
    ) -> Self {
        Self {
            source: Source::Secret {
                client,
                name,
                stage,
            },
            cached: Mutex::new(None),
        }
    }

    /// Whether a re-read could yield a different key (only a secret can change under us).
    pub fn can_refresh(&self) -> bool {
        matches!(self.source, Source::Secret { .. })
    }

    /// The key, reading the secret on first use (or again when `refresh` is set).
    pub async fn get(&self, refresh: bool) -> Result<SecretString, KeyError> {
        match &self.source {
            Source::Fixed(k) => Ok(k.clone()),
            Source::Nothing => Err(KeyError::Missing(DEFAULT_SECRET_NAME.into())),
            Source::Secret {
                client,
                name,
                stage,
            } => {
                let mut cached = self.cached.lock().await;
                if let (false, Some(k)) = (refresh, cached.as_ref()) {
                    return Ok(k.clone());
                }
                let out = client
                    .get_secret_value()
                    .secret_id(name)
                    // Always name the stage: an unstaged read can return a stale value.
                    .version_stage(stage)
                    .send()
                    .await
                    .map_err(|e| {
                        use aws_sdk_secretsmanager::error::{
                            DisplayErrorContext, ProvideErrorMetadata,
                        };
                        match e.as_service_error() {
                            Some(s) if s.is_resource_not_found_exception() => {
                                KeyError::Missing(name.clone())
                            }
                            Some(s) => KeyError::Read {
                                name: name.clone(),
                                code: s.code().unwrap_or("unknown").to_string(),
                            },
                            None => KeyError::Read {
                                name: name.clone(),
                                code: DisplayErrorContext(&e).to_string(),
                            },
                        }
                    })?;
                let raw = out
                    .secret_string()
                    .ok_or_else(|| KeyError::Layout(name.clone()))?;
                let key = parse_secret_value(raw).ok_or_else(|| KeyError::Layout(name.clone()))?;
                *cached = Some(key.clone());
                Ok(key)
            }
        }
    }
}

/// Accept a bare key or `{"OPENAI_API_KEY": "..."}`. Surrounding whitespace is dropped.
pub fn parse_secret_value(raw: &str) -> Option<SecretString> {
    let raw = raw.trim();
    if raw.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(raw).ok()?;
        let k = v.get("OPENAI_API_KEY")?.as_str()?.trim();
        return (!k.is_empty()).then(|| SecretString::from(k.to_string()));
    }
    (!raw.is_empty() && !raw.contains(char::is_whitespace))
        .then(|| SecretString::from(raw.to_string()))
}

/// For tests and logs: a key's presence without its value.
pub fn describe(key: &SecretString) -> String {
    format!("<{} chars>", key.expose_secret().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_parse() {
        assert_eq!(
            parse_secret_value(" sk-abc\n").unwrap().expose_secret(),
            "sk-abc"
        );
        assert_eq!(
            parse_secret_value(r#"{"OPENAI_API_KEY": "sk-x"}"#)
                .unwrap()
                .expose_secret(),
            "sk-x"
        );
        assert!(parse_secret_value("").is_none());
        assert!(parse_secret_value(r#"{"OTHER": "x"}"#).is_none());
        assert!(parse_secret_value("two words").is_none());
    }
}
