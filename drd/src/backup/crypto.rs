//! age encryption of secret backups: ASCII-armored age files, encrypted to the policy's public
//! recipients (X25519 or SSH). drd can write them but never read them without the operator's
//! identity file (`--identity`), which it only ever reads, never stores.

use crate::error::{ConfigError, Error, Result};
use secrecy::{ExposeSecret, SecretSlice};
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

/// Parse recipients (already validated by the policy).
pub fn recipients(list: &[String]) -> Result<Vec<Box<dyn age::Recipient + Send + Sync>>> {
    let mut out: Vec<Box<dyn age::Recipient + Send + Sync>> = vec![];
    for r in list {
        let r = r.trim();
        if let Ok(x) = age::x25519::Recipient::from_str(r) {
            out.push(Box::new(x));
        } else if let Ok(s) = age::ssh::Recipient::from_str(r) {
            out.push(Box::new(s));
        } else {
            return Err(
                ConfigError::new("policy", format!("{r:?} is not an age recipient"))
                    .field("backup.recipients")
                    .into(),
            );
        }
    }
    Ok(out)
}

/// Encrypt to every recipient, ASCII-armored.
pub fn encrypt(
    recipients: &[Box<dyn age::Recipient + Send + Sync>],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let enc = age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| Error::failed(format!("age: cannot encrypt to the recipients: {e}")))?;
    let mut out = vec![];
    let io = |e: std::io::Error| Error::failed(format!("age: encryption failed: {e}"));
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(io)?;
    let mut w = enc.wrap_output(armor).map_err(io)?;
    w.write_all(plaintext).map_err(io)?;
    w.finish().and_then(|a| a.finish()).map_err(io)?;
    Ok(out)
}

/// An operator's identities, read from a file (age identities or an SSH private key).
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl Identities {
    pub fn from_file(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new(&shown, format!("cannot read the identity file: {e}"))
                .field("--identity")
                .hint("pass the age identity file (age-keygen output) that matches the policy's recipients")
        })?;
        // An age identity file: `AGE-SECRET-KEY-1...` lines, `#` comments (what age-keygen
        // writes). Parsed line by line so the identities are Send + Sync (the daemon verifies on
        // its worker threads).
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            if !lines.is_empty() && lines.iter().all(|l| l.starts_with("AGE-SECRET-KEY-")) {
                let mut ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![];
                for l in lines {
                    let id = l.parse::<age::x25519::Identity>().map_err(|e| {
                        ConfigError::new(
                            &shown,
                            format!("an AGE-SECRET-KEY line does not parse: {e}"),
                        )
                        .field("--identity")
                        .hint("pass the file written by age-keygen, unchanged")
                    })?;
                    ids.push(Box::new(id));
                }
                return Ok(Self(ids));
            }
        }
        match age::ssh::Identity::from_buffer(&bytes[..], Some(shown.clone())) {
            Ok(id @ age::ssh::Identity::Unencrypted(_)) => Ok(Self(vec![Box::new(id)])),
            Ok(_) => Err(
                ConfigError::new(&shown, "the SSH identity is encrypted or unsupported")
                    .field("--identity")
                    .hint("use an unencrypted ssh-ed25519/ssh-rsa key or an age identity file")
                    .into(),
            ),
            Err(_) => Err(
                ConfigError::new(&shown, "not an age identity file or SSH private key")
                    .field("--identity")
                    .hint("pass the file written by age-keygen (AGE-SECRET-KEY-1...)")
                    .into(),
            ),
        }
    }

    /// Decrypt an armored (or binary) age file (`NOT_FOR_THIS_IDENTITY` when it was encrypted
    /// to other recipients: sound, but not this key's to open). The plaintext stays in a zeroizing buffer.
    pub fn decrypt(&self, ciphertext: &[u8]) -> std::result::Result<SecretSlice<u8>, String> {
        let dec = age::Decryptor::new(age::armor::ArmoredReader::new(ciphertext))
            .map_err(|e| format!("not a readable age file: {e}"))?;
        let mut r = dec
            .decrypt(self.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => NOT_FOR_THIS_IDENTITY.to_string(),
                e => format!("cannot decrypt: {e}"),
            })?;
        let mut out = vec![];
        r.read_to_end(&mut out)
            .map_err(|e| format!("decryption failed: {e}"))?;
        Ok(SecretSlice::from(out))
    }
}

/// The decryption failure of a file encrypted to recipients none of the identities match.
pub const NOT_FOR_THIS_IDENTITY: &str =
    "encrypted to other recipients: no key of this identity opens it";

/// Whether decrypted bytes are well-formed for their recorded kind.
pub fn well_formed(plain: &SecretSlice<u8>, json: bool) -> bool {
    let b = plain.expose_secret();
    match std::str::from_utf8(b) {
        Ok(s) if json => serde_json::from_str::<serde_json::Value>(s).is_ok(),
        Ok(s) => !s.is_empty(),
        Err(_) => !json && !b.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_identity() {
        let id = age::x25519::Identity::generate();
        let r = recipients(&[id.to_public().to_string()]).unwrap();
        let c = encrypt(&r, b"{\"k\":\"v\"}").unwrap();
        assert!(c.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!String::from_utf8_lossy(&c).contains("\"k\""));
        let ids = Identities(vec![Box::new(id)]);
        let p = ids.decrypt(&c).unwrap();
        assert_eq!(p.expose_secret(), b"{\"k\":\"v\"}");
        assert!(well_formed(&p, true));
        let other = Identities(vec![Box::new(age::x25519::Identity::generate())]);
        assert!(other.decrypt(&c).is_err());
        assert!(ids.decrypt(b"garbage").is_err());
    }
}
