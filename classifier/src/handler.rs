//! The request/response contract of the classifier, independent of how it is hosted (Lambda
//! runtime or the local HTTP server). See `ARCHITECTURE.md` and the design's "protected workload".

use crate::key::{ApiKey, KeyError};
use crate::llm::{LlmClient, LlmError};
use crate::transcript;
use base64_lite::decode as b64decode;
use serde_json::{json, Value};

/// A response before it is framed for HTTP or for the Lambda runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn error(status: u16, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": error, "message": message.into()}),
        }
    }

    /// The Function URL / API Gateway v2 response shape.
    pub fn to_lambda_response(&self) -> Value {
        json!({
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": self.body.to_string(),
        })
    }
}

pub struct Classifier {
    pub llm: LlmClient,
    pub key: ApiKey,
}

const DEFAULT_ROLES: [&str; 2] = ["Agent", "Customer"];

impl Classifier {
    /// The answer to a `GET` (any path): a liveness check for load balancers and Route 53
    /// health checks, which cannot send a body. It calls nothing.
    pub fn health(&self) -> Reply {
        Reply {
            status: 200,
            body: json!({"status": "ok", "service": "speaker-role-classifier"}),
        }
    }

    /// Handle a Lambda event: a Function URL event (with a `body`) or a direct invocation.
    pub async fn handle_event(&self, event: &Value) -> Reply {
        let method = event
            .pointer("/requestContext/http/method")
            .and_then(Value::as_str);
        if method == Some("GET") {
            return self.health();
        }
        match event.get("body") {
            Some(Value::String(body)) => {
                let bytes = if event.get("isBase64Encoded") == Some(&Value::Bool(true)) {
                    match b64decode(body) {
                        Some(b) => b,
                        None => {
                            return Reply::error(400, "Invalid JSON", "body is not valid base64")
                        }
                    }
                } else {
                    body.as_bytes().to_vec()
                };
                self.handle_body(&bytes).await
            }
            Some(Value::Null) | None if event.get("requestContext").is_some() => {
                self.handle_body(b"").await
            }
            _ => self.handle_request(event).await,
        }
    }

    /// Handle a raw HTTP body.
    pub async fn handle_body(&self, body: &[u8]) -> Reply {
        if body.iter().all(u8::is_ascii_whitespace) {
            return self.handle_request(&json!({})).await;
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => self.handle_request(&v).await,
            Err(e) => Reply::error(
                400,
                "Invalid JSON",
                format!("request body is not JSON: {e}"),
            ),
        }
    }

    pub async fn handle_request(&self, req: &Value) -> Reply {
        let Some(obj) = req.as_object() else {
            return Reply::error(400, "Invalid JSON", "request body must be a JSON object");
        };
        let transcript = match obj.get("transcript") {
            None | Some(Value::Null) => {
                return Reply::error(
                    400,
                    "Missing required field: transcript",
                    "send {\"transcript\": \"Speaker 0: ...\"}",
                )
            }
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Reply::error(
                    400,
                    "Missing required field: transcript",
                    "transcript must be a string",
                )
            }
        };
        if transcript.trim().is_empty() {
            return Reply::error(400, "Empty transcript", "transcript must not be empty");
        }
        let roles: Vec<String> = match obj.get("target_roles") {
            None | Some(Value::Null) => DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
            Some(Value::Array(a)) => {
                let roles: Option<Vec<String>> = a
                    .iter()
                    .map(|r| r.as_str().map(str::trim).filter(|s| !s.is_empty()))
                    .map(|r| r.map(str::to_string))
                    .collect();
                match roles {
                    Some(r) if r.len() >= 2 => r,
                    _ => {
                        return Reply::error(
                            400,
                            "Invalid target_roles",
                            "target_roles must be a list of at least two non-empty strings",
                        )
                    }
                }
            }
            Some(_) => {
                return Reply::error(
                    400,
                    "Invalid target_roles",
                    "target_roles must be a list of at least two non-empty strings",
                )
            }
        };

        let labels = transcript::labels(transcript);
        let mut log = vec![json!({"step": "parse_labels", "labels": labels})];
        let needed = transcript::labels_needing_mapping(transcript, &roles);
        if needed.is_empty() {
            log.push(json!({"step": "no_mapping_needed"}));
            return Reply {
                status: 200,
                body: json!({"transcript": transcript, "log": log}),
            };
        }

        let key = match self.key.get(false).await {
            Ok(k) => k,
            Err(KeyError::Missing(m)) => {
                return Reply::error(500, "Configuration Error", KeyError::Missing(m).to_string())
            }
            Err(e) => return Reply::error(500, "Configuration Error", e.to_string()),
        };
        log.push(json!({"step": "llm_request", "model": self.llm.model(), "labels": needed}));
        let mut result = self
            .llm
            .map_speakers(&key, transcript, &needed, &roles)
            .await;
        if matches!(result, Err(LlmError::Unauthorized)) && self.key.can_refresh() {
            // The key may have been rotated since we cached it: read it again, once.
            log.push(json!({"step": "key_refresh"}));
            match self.key.get(true).await {
                Ok(k) => result = self.llm.map_speakers(&k, transcript, &needed, &roles).await,
                Err(e) => return Reply::error(500, "Configuration Error", e.to_string()),
            }
        }
        let raw = match result {
            Ok(m) => m,
            Err(e) => return Reply::error(422, "Invalid API Response", e.to_string()),
        };
        let mapping = match transcript::validate_mapping(&raw, &needed, &roles) {
            Ok(m) => m,
            Err(e) => return Reply::error(422, "Speaker Classification Error", e.to_string()),
        };
        log.push(json!({"step": "mapping", "mapping": mapping}));
        let (out, changed) = transcript::relabel(transcript, &mapping);
        log.push(json!({"step": "relabel", "lines_changed": changed}));
        Reply {
            status: 200,
            body: json!({"transcript": out, "log": log}),
        }
    }
}

/// Just enough base64 for Function URL bodies, so the classifier stays small.
mod base64_lite {
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        fn val(c: u8) -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' | b'-' => 62,
                b'/' | b'_' => 63,
                _ => return None,
            } as u32)
        }
        let bytes: Vec<u8> = s
            .bytes()
            .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
            .collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                n |= val(*c)? << (18 - 6 * i);
            }
            match chunk.len() {
                4 => out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]),
                3 => out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8]),
                2 => out.push((n >> 16) as u8),
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn decodes() {
        assert_eq!(decode("eyJhIjoxfQ==").unwrap(), br#"{"a":1}"#);
        assert_eq!(decode("aGk").unwrap(), b"hi");
        assert!(decode("!!").is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;
    use crate::llm::LlmClient;

    fn classifier() -> Classifier {
        Classifier {
            llm: LlmClient::new("http://127.0.0.1:9/v1", "m"),
            key: ApiKey::none(),
        }
    }

    #[tokio::test]
    async fn function_url_event_direct_invocation_and_base64_are_all_accepted() {
        let c = classifier();
        let t = "Agent: a\nCustomer: b";
        let req = json!({"transcript": t}).to_string();
        let url_event = json!({"requestContext": {}, "body": req, "isBase64Encoded": false});
        assert_eq!(c.handle_event(&url_event).await.body["transcript"], t);
        let b64 = "eyJ0cmFuc2NyaXB0IjoiQWdlbnQ6IGFcbkN1c3RvbWVyOiBiIn0=";
        let b64_event = json!({"requestContext": {}, "body": b64, "isBase64Encoded": true});
        assert_eq!(c.handle_event(&b64_event).await.body["transcript"], t);
        let direct = json!({"transcript": t});
        assert_eq!(c.handle_event(&direct).await.status, 200);
        let empty = json!({"requestContext": {}});
        let r = c.handle_event(&empty).await;
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (400, Some("Missing required field: transcript"))
        );
    }

    #[tokio::test]
    async fn a_get_is_a_health_check() {
        let c = classifier();
        let ev = json!({"requestContext": {"http": {"method": "GET"}}, "rawPath": "/healthz"});
        let r = c.handle_event(&ev).await;
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
        let post = json!({"requestContext": {"http": {"method": "POST"}}, "body": "{}"});
        assert_eq!(c.handle_event(&post).await.status, 400);
    }

    #[test]
    fn lambda_response_shape() {
        let r = Reply::error(400, "Invalid JSON", "x").to_lambda_response();
        assert_eq!(r["statusCode"], 400);
        assert_eq!(r["headers"]["content-type"], "application/json");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body, json!({"error": "Invalid JSON", "message": "x"}));
    }
}
