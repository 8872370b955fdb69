//! The speaker-role classifier: the workload drd protects.
//!
//! It relabels `Speaker 0:` / `Speaker 1:` lines of a call transcript into roles (by default
//! Agent/Customer) with one chat-completions call. The same binary runs under the Lambda runtime
//! (when `AWS_LAMBDA_RUNTIME_API` is set) or as a plain HTTP server (`--listen ADDR`), which the
//! drd sandbox's function host uses.

pub mod handler;
pub mod key;
pub mod llm;
pub mod server;
pub mod transcript;

pub use handler::{Classifier, Reply};

/// Settings read from the environment once, in `main`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub base_url: String,
    pub model: String,
    /// `OPENAI_API_KEY`, when set: it wins over the secret.
    pub api_key: Option<secrecy::SecretString>,
    /// `OPENAI_SECRET_NAME` (default `openai-api-key`); empty disables the secret lookup.
    pub secret_name: String,
    /// `OPENAI_SECRET_STAGE` (default `AWSCURRENT`): drd points a candidate version at
    /// `AWSPENDING` to prove a new key before promoting it.
    pub secret_stage: String,
}

impl Settings {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            base_url: var("OPENAI_BASE_URL").unwrap_or_else(|| llm::DEFAULT_BASE_URL.into()),
            model: var("OPENAI_MODEL").unwrap_or_else(|| llm::DEFAULT_MODEL.into()),
            api_key: var("OPENAI_API_KEY").map(secrecy::SecretString::from),
            secret_name: std::env::var("OPENAI_SECRET_NAME")
                .unwrap_or_else(|_| key::DEFAULT_SECRET_NAME.into()),
            secret_stage: var("OPENAI_SECRET_STAGE").unwrap_or_else(|| "AWSCURRENT".into()),
        }
    }

    /// Build the classifier; only touches AWS configuration when the key comes from a secret.
    pub async fn classifier(&self) -> Classifier {
        let key = match (&self.api_key, self.secret_name.trim()) {
            (Some(k), _) => key::ApiKey::fixed(k.clone()),
            (None, "") => key::ApiKey::none(),
            (None, name) => {
                let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                key::ApiKey::from_secret(
                    aws_sdk_secretsmanager::Client::new(&conf),
                    name.to_string(),
                    self.secret_stage.clone(),
                )
            }
        };
        Classifier {
            llm: llm::LlmClient::new(&self.base_url, &self.model),
            key,
        }
    }
}
