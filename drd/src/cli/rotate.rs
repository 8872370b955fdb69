//! `drd rotate SECRET`: runbook `secret-rotation` (procedure 3), new value on stdin.

use super::Cli;
use crate::error::{ConfigError, Error, Result};
use std::collections::BTreeMap;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  printf %s \"$NEW_KEY\" | drd rotate openai-api-key --dry-run\n  printf %s \"$NEW_KEY\" | drd rotate openai-api-key\n  drd rotate openai-api-key --resume RUN < /dev/null"
)]
pub struct Args {
    /// The secret to rotate (a name from the policy, e.g. openai-api-key).
    pub secret: String,
    /// Generate a random value (32 bytes, base64url) instead of reading stdin; only for secrets
    /// the policy lists in `secrets.generated`.
    #[arg(long, conflicts_with = "resume")]
    pub generate: bool,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue an interrupted rotation (pipe the new value again unless it was already staged).
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    if !policy.secret_names().iter().any(|s| s == &args.secret) {
        return Err(ConfigError::new(
            "SECRET",
            format!("{:?} is not a secret of the policy", args.secret),
        )
        .hint(format!("use one of: {}", policy.secret_names().join(", ")))
        .into());
    }
    // The new value: stdin only (never an argument), parsed and checked before any write.
    let value = if args.dry_run {
        None
    } else if args.generate {
        if !policy
            .secrets
            .generated
            .iter()
            .any(|g| g.get_ref() == &args.secret)
        {
            return Err(ConfigError::new(
                "--generate",
                format!(
                    "drd may not generate {:?}: its value is issued by a provider",
                    args.secret
                ),
            )
            .hint(format!(
                "pipe the provider's new value on stdin, or list it in secrets.generated of {}",
                policy.path.display()
            ))
            .into());
        }
        Some(generate_value())
    } else {
        read_new_value(&policy, &args.secret, args.resume.is_some())?
    };
    // Also on resume: the executor refuses a run that rotates a different secret.
    let inputs = BTreeMap::from([("secret".to_string(), args.secret.clone())]);
    let Some(r) = super::runbook::run_named(
        cli,
        "secret-rotation",
        inputs,
        args.dry_run,
        args.resume.clone(),
        value.as_ref(),
    )
    .await?
    else {
        return Ok(());
    };
    let out = |step: &str, k: &str| r.output(step, k).map(str::to_string);
    let old = out("observe", "current_version");
    let new = out("stage", "pending_version");
    // What the operator must still do by hand, once the rotation succeeded.
    let revoke = (r.outcome == "succeeded").then(|| {
        format!(
            "revoke the old key at the provider (the value of {} version {}), then check with drd status --deep",
            args.secret,
            old.as_deref().unwrap_or("?")
        )
    });
    if cli.json() {
        super::print_json(&serde_json::json!({
            "secret": args.secret,
            "old_version": old,
            "new_version": new,
            "point": out("backup", "point"),
            "github_secret": out("github", "github_secret"),
            "revoke": revoke,
            "run": r,
        }));
    } else {
        super::runbook::print_report(cli, &r);
        if let Some(revoke) = &revoke {
            println!(
                "rotated {}: AWSCURRENT is now version {}; the old value is version {} (AWSPREVIOUS)",
                args.secret,
                new.as_deref().unwrap_or("?"),
                old.as_deref().unwrap_or("?")
            );
            println!("now {revoke}");
        }
    }
    super::runbook::finish(&r)
}

/// 32 random bytes from the OS, base64url without padding.
fn generate_value() -> secrecy::SecretString {
    use base64::Engine;
    use crypto_box::aead::rand_core::RngCore;
    let mut b = [0u8; 32];
    crypto_box::aead::OsRng.fill_bytes(&mut b);
    let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    b.fill(0);
    secrecy::SecretString::from(s)
}

fn read_new_value(
    policy: &crate::policy::Policy,
    secret: &str,
    resuming: bool,
) -> Result<Option<secrecy::SecretString>> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        if resuming {
            return Ok(None);
        }
        return Err(ConfigError::new("<stdin>", "no new value was given")
            .hint(format!("pipe it in: drd rotate {secret} < new-value-file"))
            .into());
    }
    let mut raw = String::new();
    std::io::stdin()
        .read_to_string(&mut raw)
        .map_err(|e| Error::io("reading the new value from stdin", e))?;
    if raw.trim().is_empty() {
        if resuming {
            return Ok(None);
        }
        return Err(ConfigError::new("<stdin>", "the new value is empty")
            .hint(format!("pipe it in: drd rotate {secret} < new-value-file"))
            .into());
    }
    if secret == policy.api_key_secret() {
        Ok(Some(crate::deploy::parse_api_key(&raw, "<stdin>", secret)?))
    } else {
        Ok(Some(secrecy::SecretString::from(raw.trim().to_string())))
    }
}
