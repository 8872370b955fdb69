//! Lambda code packages: a zip with a static `bootstrap` at its root, built reproducibly (fixed
//! timestamps, permissions and order), so the same binary always gives the same bytes and the
//! same `CodeSha256`. Packages are stored content-addressed by their SHA-256.

use crate::error::{ConfigError, Error, Result};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The musl target the classifier is built for (static, runs on Amazon Linux 2023).
pub const LAMBDA_TARGET: &str = "x86_64-unknown-linux-musl";

/// A built code package and its digests.
#[derive(Debug, Clone)]
pub struct Package {
    pub zip: Vec<u8>,
    /// Lowercase hex SHA-256 of the zip: the content address.
    pub sha256_hex: String,
}

impl Package {
    /// Zip a bootstrap binary reproducibly.
    pub fn from_bootstrap(bootstrap: &[u8]) -> Result<Self> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(6))
            .unix_permissions(0o755)
            .last_modified_time(zip::DateTime::default());
        let zerr =
            |e: zip::result::ZipError| Error::failed(format!("building the zip failed: {e}"));
        w.start_file("bootstrap", opts).map_err(zerr)?;
        w.write_all(bootstrap)
            .map_err(|e| Error::io("writing the zip", e))?;
        let zip = w.finish().map_err(zerr)?.into_inner();
        Ok(Self::from_zip(zip))
    }

    pub fn from_zip(zip: Vec<u8>) -> Self {
        let sha256_hex = hex::encode(Sha256::digest(&zip));
        Self { zip, sha256_hex }
    }

    /// Lambda's `CodeSha256`: base64 of the raw SHA-256.
    pub fn code_sha256(&self) -> String {
        code_sha256_of_hex(&self.sha256_hex)
    }

    /// The object key in an artifact bucket.
    pub fn key(&self) -> String {
        object_key(&self.sha256_hex)
    }
}

/// `objects/sha256/<aa>/<hex>`: the same content-address layout as the recovery-point store.
pub fn object_key(hex: &str) -> String {
    format!("objects/sha256/{}/{}", &hex[..2], hex)
}

pub fn code_sha256_of_hex(hex_digest: &str) -> String {
    let raw = hex::decode(hex_digest).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Convert Lambda's base64 `CodeSha256` to the hex content address.
pub fn hex_of_code_sha256(b64: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (raw.len() == 32).then(|| hex::encode(raw))
}

/// Read the `bootstrap` entry of a package (used by the function host).
pub fn read_bootstrap(zip: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip))
        .map_err(|e| format!("the package is not a zip: {e}"))?;
    let mut f = a
        .by_name("bootstrap")
        .map_err(|_| "the package has no `bootstrap` at its root".to_string())?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(|e| format!("reading bootstrap from the package failed: {e}"))?;
    Ok(out)
}

/// Whether an ELF executable needs no dynamic loader (no `PT_INTERP` program header).
pub fn is_static_elf(bytes: &[u8]) -> std::result::Result<bool, String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a little-endian 64-bit ELF (Lambda x86_64 needs one)".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            return Err("truncated program headers".into());
        }
        let p_type = u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        if p_type == 3 {
            return Ok(false); // PT_INTERP: needs ld.so
        }
    }
    Ok(true)
}

/// Build the classifier for Lambda with cargo and return the binary's path.
pub fn cargo_build(source: &Path) -> Result<PathBuf> {
    let manifest = source.join("Cargo.toml");
    if !manifest.exists() {
        return Err(ConfigError::new(
            source.display().to_string(),
            "no Cargo.toml here: cannot build the function",
        )
        .field("workload.source")
        .hint("point workload.source at the classifier package, or pass --bootstrap FILE")
        .into());
    }
    tracing::info!(target = LAMBDA_TARGET, "building the function with cargo");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args([
            "build",
            "--release",
            "--bin",
            "classifier",
            "--target",
            LAMBDA_TARGET,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::io("running cargo", e))?;
    if !status.success() {
        return Err(Error::failed_hint(
            format!("cargo build of the function failed ({status})"),
            format!("run `rustup target add {LAMBDA_TARGET}` and install musl-tools (scripts/setup does both)"),
        ));
    }
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .map_err(|e| Error::io("running cargo metadata", e))?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::failed(format!("cargo metadata gave no JSON: {e}")))?;
    let target_dir = meta["target_directory"]
        .as_str()
        .ok_or_else(|| Error::failed("cargo metadata has no target_directory"))?;
    Ok(Path::new(target_dir)
        .join(LAMBDA_TARGET)
        .join("release")
        .join("classifier"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaging_is_reproducible_and_round_trips() {
        let bin = b"\x7fELF fake binary bytes".repeat(100);
        let a = Package::from_bootstrap(&bin).unwrap();
        let b = Package::from_bootstrap(&bin).unwrap();
        assert_eq!(a.zip, b.zip);
        assert_eq!(a.code_sha256(), b.code_sha256());
        assert_eq!(read_bootstrap(&a.zip).unwrap(), bin);
        assert_eq!(hex_of_code_sha256(&a.code_sha256()).unwrap(), a.sha256_hex);
        let other = Package::from_bootstrap(b"other").unwrap();
        assert_ne!(other.sha256_hex, a.sha256_hex);
        assert!(a
            .key()
            .starts_with(&format!("objects/sha256/{}/", &a.sha256_hex[..2])));
    }

    #[test]
    fn bootstrap_is_executable_in_the_zip() {
        let p = Package::from_bootstrap(b"x").unwrap();
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(&p.zip)).unwrap();
        let f = a.by_name("bootstrap").unwrap();
        assert_eq!(f.unix_mode().unwrap() & 0o777, 0o755);
    }

    #[test]
    fn static_check_on_this_test_binary_and_garbage() {
        // The test binary itself is dynamically linked on glibc.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(is_static_elf(&me), Ok(false));
        assert!(is_static_elf(b"#!/bin/sh\nexit 1\n").is_err());
    }
}
