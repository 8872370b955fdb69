//! The recovery-point manifest: what was captured, each blob by hash and size. Written last.

use crate::store::BlobRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub holder: String,
    /// The store lease's fencing token at the time of writing.
    pub fencing_token: u64,
    /// Set when `drd daemon` took the point on schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<Scheduled>,
    pub stack: StackCapture,
    pub function: FunctionCapture,
    pub code: Vec<CodeCapture>,
    pub log_group: Option<LogGroupCapture>,
    pub secrets: Vec<SecretCapture>,
    pub changes: Changes,
}

/// Which daemon firing took a point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scheduled {
    pub job: String,
    /// RFC 3339 of the firing.
    pub tick: String,
    /// The job's fencing token (one more than the previous firing's).
    pub token: u64,
    pub daemon: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackCapture {
    pub name: String,
    pub region: String,
    pub status: String,
    /// The template body exactly as CloudFormation returned it.
    pub template: BlobRef,
    pub parameters: Vec<ParameterCapture>,
    pub outputs: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub resources: Vec<ResourceCapture>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParameterCapture {
    pub key: String,
    /// `None` when the template declares the parameter `NoEcho`: never stored in clear.
    pub value: Option<String>,
    pub redacted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceCapture {
    pub logical_id: String,
    pub physical_id: String,
    pub resource_type: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionCapture {
    pub name: String,
    /// Configuration of `$LATEST` and every published version (one JSON document).
    pub configuration: BlobRef,
    pub versions: Vec<VersionCapture>,
    pub aliases: BTreeMap<String, String>,
    pub url: Option<UrlCapture>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VersionCapture {
    pub version: String,
    pub code_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UrlCapture {
    pub url: String,
    pub qualifier: String,
    pub auth_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CodeCapture {
    /// Lambda's base64 `CodeSha256`; the blob's hex hash is the same digest.
    pub code_sha256: String,
    /// The versions (or `live`) that run this package.
    pub used_by: Vec<String>,
    pub blob: BlobRef,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogGroupCapture {
    pub name: String,
    pub retention_days: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretCapture {
    pub name: String,
    pub versions: Vec<SecretVersionCapture>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretVersionCapture {
    pub version_id: String,
    pub stages: Vec<String>,
    pub created_date: Option<String>,
    /// The age file (ASCII-armored); its hash is of the ciphertext, never of the plaintext.
    pub blob: BlobRef,
    /// Whether the plaintext was JSON (verify checks it still parses after decryption).
    pub json: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    pub new_blobs: u64,
    pub new_bytes: u64,
    /// What changed since the previous point, human-readable.
    pub items: Vec<String>,
}

impl Manifest {
    /// Every blob the point names.
    pub fn blobs(&self) -> Vec<(&'static str, &BlobRef)> {
        let mut v: Vec<(&'static str, &BlobRef)> = vec![
            ("template", &self.stack.template),
            ("function configuration", &self.function.configuration),
        ];
        v.extend(self.code.iter().map(|c| ("code package", &c.blob)));
        for s in &self.secrets {
            v.extend(s.versions.iter().map(|x| ("secret backup", &x.blob)));
        }
        v
    }

    pub fn total_bytes(&self) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        self.blobs()
            .into_iter()
            .filter(|(_, b)| seen.insert(b.sha256.clone()))
            .map(|(_, b)| b.size)
            .sum()
    }
}
