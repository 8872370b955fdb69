//! The recovery-point manifest: what was captured, each blob by hash and size. Written last.

use crate::store::BlobRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest format this drd writes: a major number. Schema 2 added `writer`, per-version
/// encrypted Lambda environments and binary secrets; schema 3 added `source` (the newest source
/// mirror); schema 4 a drill label; schema 5 the age recipients (every point is written as 5:
/// a drd that cannot say which identities a point needs must not read it as if it could).
/// Older manifests read as they were.
pub const MANIFEST_SCHEMA: u32 = 5;
/// The oldest format this drd still reads.
pub const MANIFEST_SCHEMA_MIN: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    /// The drd that wrote it (`drd 0.1.0`); absent in schema 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
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
    /// The newest source mirror (`drd mirror`) when the point was taken; absent without `[ci]`
    /// or before the first mirror, and in schemas 1 and 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceMirror>,
    pub changes: Changes,
    /// The age recipients the point's secrets and environments are encrypted to (schema 5;
    /// empty in older points, whose recipients were not recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Set when the point was taken while a drill had the stack broken on purpose
    /// (`restore --point latest` skips it). Schema 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillMark>,
}

/// The drill a point was taken during.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillMark {
    pub drill: String,
    pub run: String,
}

/// Which source mirror goes with a point: the mirror manifest (`mirror/manifests/<id>.json`),
/// the deploy branch's head and when it was fetched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceMirror {
    pub manifest: String,
    pub head: String,
    pub fetched_at: String,
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
    /// Each version's environment, age-encrypted like the secrets (names readable); the
    /// configuration blob names only the variables. Absent in schema 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<EnvCapture>,
}

/// One version's Lambda environment: its variable names in clear, the values in an age file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvCapture {
    /// `$LATEST` or a published version.
    pub version: String,
    /// What identifies this configuration of the version (RevisionId, else LastModified and
    /// the code hash): while it is unchanged the encrypted blob is reused, never re-encrypted.
    pub stamp: String,
    pub names: Vec<String>,
    /// The age file of the variables as a JSON object.
    pub blob: BlobRef,
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
    /// A `SecretBinary` value: restored as bytes, exactly as read. Absent in schema 1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
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
        v.extend(
            self.function
                .environments
                .iter()
                .map(|e| ("environment backup", &e.blob)),
        );
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

/// Why a manifest could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestProblem {
    /// Written by a newer drd in a format this one does not know: never pruned or rewritten.
    Newer {
        key: String,
        schema: u64,
        writer: Option<String>,
    },
    /// Not JSON, not this format, or a field that cannot be right.
    Unreadable { key: String, why: String },
}

impl ManifestProblem {
    pub fn key(&self) -> &str {
        match self {
            Self::Newer { key, .. } | Self::Unreadable { key, .. } => key,
        }
    }
}

impl From<ManifestProblem> for crate::error::Error {
    fn from(p: ManifestProblem) -> Self {
        match p {
            ManifestProblem::Newer {
                key,
                schema,
                writer,
            } => crate::error::Error::failed_hint(
                format!(
                    "{key} is manifest schema {schema}, newer than this drd {} reads (schema {MANIFEST_SCHEMA_MIN} to {MANIFEST_SCHEMA}){}",
                    env!("CARGO_PKG_VERSION"),
                    writer.as_deref().map(|w| format!("; written by {w}")).unwrap_or_default()
                ),
                format!(
                    "install {} or newer; this drd does not prune, back up into or restore from a store it cannot read",
                    writer.as_deref().unwrap_or("the drd release that writes this schema")
                ),
            ),
            ManifestProblem::Unreadable { key, why } => crate::error::Error::failed_hint(
                format!("manifest {key} is unreadable: {why}"),
                "inspect it (drd points show ID); drd prune keeps it, and every blob it may name, only with --skip-unreadable",
            ),
        }
    }
}

/// Parse the manifest stored at `key`: the schema is read first (a newer major format is
/// refused as such, never as a parse error), then the strict format, then the fields a parse
/// cannot check (the id matches the key, `created_at` is RFC 3339).
pub fn parse(key: &str, bytes: &[u8]) -> std::result::Result<Manifest, ManifestProblem> {
    let bad = |why: String| ManifestProblem::Unreadable {
        key: key.to_string(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let schema = v
        .get("schema")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("field `schema` is missing or not a number".into()))?;
    if schema > u64::from(MANIFEST_SCHEMA) {
        return Err(ManifestProblem::Newer {
            key: key.to_string(),
            schema,
            writer: v.get("writer").and_then(|w| w.as_str()).map(str::to_string),
        });
    }
    if schema < u64::from(MANIFEST_SCHEMA_MIN) {
        return Err(bad(format!("schema {schema} is not a drd manifest schema")));
    }
    let m: Manifest = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
    if humantime::parse_rfc3339(&m.created_at).is_err() {
        return Err(bad(format!(
            "field `created_at` {:?} is not an RFC 3339 UTC time",
            m.created_at
        )));
    }
    let stem = key
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".json"))
        .unwrap_or_default();
    if m.id != stem {
        return Err(bad(format!("field `id` {:?} does not match its key", m.id)));
    }
    for (what, b) in m.blobs() {
        if b.sha256.len() != 64 || !b.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "the {what} blob hash {:?} is not a SHA-256",
                b.sha256
            )));
        }
    }
    Ok(m)
}

/// Every string in a manifest that could name a blob (64 hex digits), read from bytes that may
/// not parse: what a prune keeps for a manifest it cannot read.
pub fn hashes_in(bytes: &[u8]) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut run = String::new();
    for &c in bytes.iter().chain(std::iter::once(&b' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c.to_ascii_lowercase() as char);
        } else {
            if run.len() == 64 {
                out.insert(std::mem::take(&mut run));
            }
            run.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        let blob = |c: char| serde_json::json!({"sha256": c.to_string().repeat(64), "size": 1});
        serde_json::json!({
            "schema": 1, "id": "p1", "created_at": "2026-11-30T10:00:00Z", "holder": "h",
            "fencing_token": 1,
            "stack": {"name": "s", "region": "us-east-1", "status": "CREATE_COMPLETE",
                "template": blob('a'), "parameters": [], "outputs": {}, "tags": {}, "resources": []},
            "function": {"name": "f", "configuration": blob('b'), "versions": [], "aliases": {},
                "url": null},
            "code": [], "log_group": null,
            "secrets": [{"name": "k", "versions": [{"version_id": "v", "stages": ["AWSCURRENT"],
                "created_date": null, "blob": blob('c'), "json": false}]}],
            "changes": {"new_blobs": 0, "new_bytes": 0, "items": []}
        })
    }

    fn parse_v(v: &serde_json::Value) -> std::result::Result<Manifest, ManifestProblem> {
        parse("s/points/p1.json", v.to_string().as_bytes())
    }

    #[test]
    fn schema_1_still_reads_and_newer_or_unknown_is_told_apart() {
        let m = parse_v(&sample()).unwrap();
        assert!(!m.secrets[0].versions[0].binary && m.function.environments.is_empty());
        let mut newer = sample();
        newer["schema"] = 99.into();
        newer["writer"] = "drd 9.0.0".into();
        newer["brand_new"] = true.into();
        let e = parse_v(&newer).unwrap_err();
        assert!(
            matches!(e, ManifestProblem::Newer { schema: 99, .. }),
            "{e:?}"
        );
        let msg = crate::error::Error::from(e).to_string();
        assert!(
            msg.contains("schema 99") && msg.contains("drd 9.0.0"),
            "{msg}"
        );
        let mut unknown = sample();
        unknown["brand_new"] = true.into();
        let e = parse_v(&unknown).unwrap_err();
        assert!(
            matches!(&e, ManifestProblem::Unreadable { why, .. } if why.contains("brand_new")),
            "{e:?}"
        );
    }

    #[test]
    fn fields_a_parse_cannot_check_are_checked() {
        let mut bad_time = sample();
        bad_time["created_at"] = "yesterday".into();
        assert!(
            matches!(parse_v(&bad_time), Err(ManifestProblem::Unreadable { why, .. }) if why.contains("created_at"))
        );
        let mut bad_id = sample();
        bad_id["id"] = "p2".into();
        assert!(
            matches!(parse_v(&bad_id), Err(ManifestProblem::Unreadable { why, .. }) if why.contains("`id`"))
        );
        let mut bad_hash = sample();
        bad_hash["stack"]["template"]["sha256"] = "../../etc".into();
        assert!(parse_v(&bad_hash).is_err());
        assert!(parse("k", b"{not json").is_err());
    }

    #[test]
    fn hashes_are_found_in_bytes_that_do_not_parse() {
        let mut v = sample().to_string();
        v.truncate(v.len() - 3);
        let found = hashes_in(v.as_bytes());
        for c in ['a', 'b', 'c'] {
            assert!(found.contains(&c.to_string().repeat(64)), "{c}");
        }
        assert!(hashes_in(&[b'a'; 65]).is_empty());
    }
}
