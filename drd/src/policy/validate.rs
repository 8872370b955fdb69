//! Semantic checks of a parsed policy, one validator per section. The first mistake found
//! stops the load with the file, line, field and a fix; the order of the sections is the order
//! of the checks.

use super::{fqdn, is_region_name, Policy};
use crate::error::ConfigError;
use std::ops::Range;
use std::str::FromStr;

/// Check a parsed policy against the text it came from (for line numbers).
pub(super) fn validate(policy: &Policy, text: &str) -> Result<(), ConfigError> {
    let c = Check {
        file: policy.path.display().to_string(),
        text,
    };
    c.regions_and_names(policy)?;
    c.buckets(policy)?;
    c.copies(policy)?;
    c.retention_and_secrets(policy)?;
    c.github(policy)?;
    c.front_door(policy)?;
    c.dns(policy)?;
    c.daemon(policy)?;
    c.ci(policy)?;
    c.recipients(policy)?;
    c.aws(policy)?;
    c.alerts(policy)?;
    Ok(())
}

struct Check<'a> {
    file: String,
    text: &'a str,
}

impl Check<'_> {
    fn at(&self, s: &Range<usize>, field: &str, msg: String, hint: &str) -> ConfigError {
        ConfigError::new(&self.file, msg)
            .at_offset(self.text, s.start)
            .field(field)
            .hint(hint)
    }

    /// Region names, the backup region apart from the primary, no empty names.
    fn regions_and_names(&self, p: &Policy) -> Result<(), ConfigError> {
        for (field, value) in [
            ("stack.primary_region", &p.stack.primary_region),
            ("backup.region", &p.backup.region),
        ] {
            if !is_region_name(value.get_ref()) {
                return Err(self.at(
                    &value.span(),
                    field,
                    format!("{:?} is not an AWS region name", value.get_ref()),
                    "use a region code such as \"us-east-1\" or \"eu-west-2\"",
                ));
            }
        }
        if p.backup.region.get_ref() == p.stack.primary_region.get_ref() {
            return Err(self.at(
                &p.backup.region.span(),
                "backup.region",
                format!(
                    "the backup bucket is in the primary region {:?}; a region loss would take \
                     the recovery points with it",
                    p.stack.primary_region.get_ref()
                ),
                "put the backup bucket in another region, e.g. \"us-west-2\"",
            ));
        }
        for (field, value) in [
            ("stack.name", &p.stack.name),
            ("stack.function_name", &p.stack.function_name),
            ("stack.template", &p.stack.template),
        ] {
            if value.get_ref().trim().is_empty() {
                return Err(self.at(
                    &value.span(),
                    field,
                    "must not be empty".into(),
                    "give it a value",
                ));
            }
        }
        Ok(())
    }

    /// Bucket names, and Object Lock days.
    fn buckets(&self, p: &Policy) -> Result<(), ConfigError> {
        for (field, value) in [
            ("backup.bucket", &p.backup.bucket),
            ("artifacts.bucket_prefix", &p.artifacts.bucket_prefix),
        ] {
            if let Err(why) = check_bucket_name(value.get_ref()) {
                return Err(self.at(
                    &value.span(),
                    field,
                    format!("{:?} is not a valid S3 bucket name: {why}", value.get_ref()),
                    "use 3-63 lowercase letters, digits, '-' and '.'",
                ));
            }
        }
        for (field, role) in [
            ("backup.role_arn", &p.backup.role_arn),
            ("backup.prune_role_arn", &p.backup.prune_role_arn),
        ] {
            let Some(role) = role else { continue };
            let ok = role
                .get_ref()
                .strip_prefix("arn:aws:iam::")
                .and_then(|r| r.split_once(":role/"))
                .is_some_and(|(acct, name)| {
                    acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
                });
            if !ok {
                return Err(self.at(
                    &role.span(),
                    field,
                    format!("{:?} is not an IAM role ARN", role.get_ref()),
                    "write arn:aws:iam::ACCOUNT:role/NAME (the role in the store's account)",
                ));
            }
        }
        if let (None, Some(prune)) = (&p.backup.role_arn, &p.backup.prune_role_arn) {
            return Err(self.at(
                &prune.span(),
                "backup.prune_role_arn",
                "a prune role without a writer role: the store has no account of its own".into(),
                "set backup.role_arn too (the role drd writes points through), or remove backup.prune_role_arn",
            ));
        }
        if let Some(l) = &p.backup.object_lock {
            if *l.days.get_ref() == 0 {
                return Err(self.at(
                    &l.days.span(),
                    "backup.object_lock.days",
                    "Object Lock retention must be at least 1 day".into(),
                    "set days = 1 or more, or remove [backup.object_lock]",
                ));
            }
        }
        Ok(())
    }

    /// Each copy: a region that is not the primary, a valid bucket that is not the store's.
    fn copies(&self, p: &Policy) -> Result<(), ConfigError> {
        for (i, c) in p.backup.copies.iter().enumerate() {
            if !is_region_name(c.region.get_ref()) {
                return Err(self.at(
                    &c.region.span(),
                    &format!("backup.copies[{i}].region"),
                    format!("{:?} is not an AWS region name", c.region.get_ref()),
                    "use a region code such as \"eu-west-1\"",
                ));
            }
            if c.region.get_ref() == p.stack.primary_region.get_ref() {
                return Err(self.at(
                    &c.region.span(),
                    &format!("backup.copies[{i}].region"),
                    "a copy in the primary region is lost with it".into(),
                    "put copies in other regions",
                ));
            }
            if let Err(why) = check_bucket_name(c.bucket.get_ref()) {
                return Err(self.at(
                    &c.bucket.span(),
                    &format!("backup.copies[{i}].bucket"),
                    format!(
                        "{:?} is not a valid S3 bucket name: {why}",
                        c.bucket.get_ref()
                    ),
                    "use 3-63 lowercase letters, digits, '-' and '.'",
                ));
            }
            if c.bucket.get_ref() == p.backup.bucket.get_ref() {
                return Err(self.at(
                    &c.bucket.span(),
                    &format!("backup.copies[{i}].bucket"),
                    "the copy bucket is the backup bucket itself".into(),
                    "name a different bucket",
                ));
            }
        }
        Ok(())
    }

    /// `keep_within` is a duration; generated secrets are listed secrets.
    fn retention_and_secrets(&self, p: &Policy) -> Result<(), ConfigError> {
        if let Some(w) = &p.retention.keep_within {
            if let Err(e) = humantime::parse_duration(w.get_ref()) {
                return Err(self.at(
                    &w.span(),
                    "retention.keep_within",
                    format!("{:?} is not a duration: {e}", w.get_ref()),
                    "write a duration such as \"36h\" or \"7days\"",
                ));
            }
        }
        for (i, g) in p.secrets.generated.iter().enumerate() {
            if !p.secrets.others.iter().any(|o| o.get_ref() == g.get_ref()) {
                return Err(self.at(
                    &g.span(),
                    &format!("secrets.generated[{i}]"),
                    format!("{:?} is not listed in secrets.others", g.get_ref()),
                    "add it to secrets.others (the API key is always issued by its provider)",
                ));
            }
        }
        if let Some(c) = &p.secrets.canary {
            let name = c.get_ref();
            let token = p.github.as_ref().map(|g| g.token_secret.as_str());
            if name == p.api_key_secret()
                || p.secrets.others.iter().any(|o| o.get_ref() == name)
                || token == Some(name.as_str())
                || p.ci.as_ref().and_then(|c| c.token_secret.as_deref()) == Some(name.as_str())
            {
                return Err(self.at(
                    &c.span(),
                    "secrets.canary",
                    format!("{name:?} is a real secret: drills overwrite the canary"),
                    "name a secret of its own, e.g. canary = \"drd-drill-canary\"",
                ));
            }
            if name.is_empty() {
                return Err(self.at(
                    &c.span(),
                    "secrets.canary",
                    "the canary's name is empty".into(),
                    "name a secret of its own, e.g. canary = \"drd-drill-canary\"",
                ));
            }
        }
        Ok(())
    }

    /// `owner/name`.
    fn github(&self, p: &Policy) -> Result<(), ConfigError> {
        if let Some(gh) = &p.github {
            let r = gh.repository.get_ref();
            let parts: Vec<&str> = r.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(self.at(
                    &gh.repository.span(),
                    "github.repository",
                    format!("{r:?} is not a repository name"),
                    "write it as \"owner/name\"",
                ));
            }
        }
        Ok(())
    }

    /// A zone name or id, a record inside it, a TTL in range.
    fn dns(&self, p: &Policy) -> Result<(), ConfigError> {
        if let Some(d) = &p.dns {
            let zone = d.zone.get_ref().trim();
            let is_id = zone.starts_with('Z')
                && zone.len() > 5
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if zone.is_empty() || (!is_id && !zone.trim_end_matches('.').contains('.')) {
                return Err(self.at(
                    &d.zone.span(),
                    "dns.zone",
                    format!("{zone:?} is neither a hosted zone name nor an id"),
                    "write the zone's domain (\"example.com.\") or its id (\"Z0123456789ABC\")",
                ));
            }
            let rec = fqdn(d.record.get_ref());
            if !(is_id || rec.ends_with(&format!(".{}", fqdn(zone)))) {
                return Err(self.at(
                    &d.record.span(),
                    "dns.record",
                    format!(
                        "{rec:?} is not inside the zone {:?} (and a CNAME cannot be the zone apex)",
                        fqdn(zone)
                    ),
                    "name a record in the zone, e.g. \"classifier.<zone>\"",
                ));
            }
            if p.front_door.is_none() {
                return Err(self.at(
                    &d.record.span(),
                    "dns.record",
                    format!(
                        "{rec:?} would point at a Function URL, which serves no custom name on AWS (a TLS client asking for it gets the *.lambda-url certificate); this mode is no longer supported"
                    ),
                    "migrate: add [front_door] kind = \"api-gateway\", make sure an ISSUED ACM certificate for the name exists in each region, then run drd deploy in each region (docs/front-door.md#migrating)",
                ));
            }
            if !(0..=172_800).contains(d.ttl.get_ref()) {
                return Err(self.at(
                    &d.ttl.span(),
                    "dns.ttl",
                    format!("TTL {} is out of range", d.ttl.get_ref()),
                    "use 0-172800 seconds; 60 keeps a failover quick",
                ));
            }
        }
        Ok(())
    }

    /// A known kind, and the name it serves (`[dns] record`).
    fn front_door(&self, p: &Policy) -> Result<(), ConfigError> {
        let Some(f) = &p.front_door else {
            return Ok(());
        };
        match f.kind.get_ref().as_str() {
            "api-gateway" => {}
            "cloudfront" => {
                return Err(self.at(
                    &f.kind.span(),
                    "front_door.kind",
                    "CloudFront's origin failover retries only GET, HEAD and OPTIONS, and the classifier's API is POST".into(),
                    "use kind = \"api-gateway\" (docs/front-door.md says why)",
                ))
            }
            other => {
                return Err(self.at(
                    &f.kind.span(),
                    "front_door.kind",
                    format!("unknown front door kind {other:?}"),
                    "use kind = \"api-gateway\"",
                ))
            }
        }
        if p.dns.is_none() {
            return Err(ConfigError::new(&self.file, "[front_door] has no name to serve")
                .field("front_door")
                .hint("add [dns] with zone and record: the record is the front door's custom domain"));
        }
        if let Some(n) = &f.api_name {
            if n.trim().is_empty() || n.len() > 128 {
                return Err(ConfigError::new(
                    &self.file,
                    format!("front_door.api_name {n:?} is not a usable API name"),
                )
                .field("front_door.api_name")
                .hint("1 to 128 characters, or leave it out for <stack>-front-door"));
            }
        }
        Ok(())
    }

    /// The listen address, the RPO, and each schedule (known job, once, cron, jitter).
    fn ci(&self, p: &Policy) -> Result<(), ConfigError> {
        let Some(ci) = &p.ci else { return Ok(()) };
        let url = ci.repository.get_ref();
        let scheme_ok = ["https://", "http://", "file://", "/"]
            .iter()
            .any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(self.at(
                &ci.repository.span(),
                "ci.repository",
                format!("{url:?} is not an http(s) or file git URL"),
                "write e.g. \"https://github.com/OWNER/REPO.git\" (ssh is not supported)",
            ));
        }
        if url
            .split_once("://")
            .is_some_and(|(_, r)| r.split('/').next().is_some_and(|a| a.contains('@')))
        {
            return Err(self.at(
                &ci.repository.span(),
                "ci.repository",
                "the repository URL carries credentials".into(),
                "remove them; set [ci] token_secret or token_env instead",
            ));
        }
        if humantime::parse_duration(ci.mirror_max_age.get_ref()).is_err() {
            return Err(self.at(
                &ci.mirror_max_age.span(),
                "ci.mirror_max_age",
                format!("{:?} is not a duration", ci.mirror_max_age.get_ref()),
                "write a duration such as \"2h\"",
            ));
        }
        Ok(())
    }

    fn daemon(&self, p: &Policy) -> Result<(), ConfigError> {
        let d = &p.daemon;
        if let Some(l) = &d.listen {
            if l.get_ref().parse::<std::net::SocketAddr>().is_err() {
                return Err(self.at(
                    &l.span(),
                    "daemon.listen",
                    format!("{:?} is not an address", l.get_ref()),
                    "write ip:port, e.g. \"127.0.0.1:9464\"",
                ));
            }
        }
        if let Some(r) = &d.rpo {
            if humantime::parse_duration(r.get_ref()).is_err() {
                return Err(self.at(
                    &r.span(),
                    "daemon.rpo",
                    format!("{:?} is not a duration", r.get_ref()),
                    "write a duration such as \"1h\" or \"30m\"",
                ));
            }
        }
        let mut jobs = std::collections::BTreeSet::new();
        for (i, s) in d.schedule.iter().enumerate() {
            let job = s.job.get_ref();
            if job == "prune" && p.backup.role_arn.is_some() {
                return Err(self.at(
                    &s.job.span(),
                    &format!("daemon.schedule[{i}].job"),
                    "the store has its own account (backup.role_arn): only the prune role may delete points, and the daemon never holds it".into(),
                    "remove this schedule and run `drd prune` as an operator (it assumes backup.prune_role_arn)",
                ));
            }
            if job == "mirror" && p.ci.is_none() {
                return Err(self.at(
                    &s.job.span(),
                    &format!("daemon.schedule[{i}].job"),
                    "the mirror job needs the repository to mirror".into(),
                    "add [ci] repository = \"https://github.com/OWNER/REPO.git\" (or remove this schedule)",
                ));
            }
            // Runbook names are file stems: letters, digits, `-`, `_`, `.` (they become metric
            // labels and store keys).
            let known = matches!(job.as_str(), "backup" | "verify" | "prune" | "mirror")
                || job
                    .strip_prefix("runbook:")
                    .or_else(|| job.strip_prefix("drill:"))
                    .is_some_and(|n| {
                        !n.is_empty()
                            && n.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    });
            if !known {
                return Err(self.at(
                    &s.job.span(),
                    &format!("daemon.schedule[{i}].job"),
                    format!("{job:?} is not a job"),
                    "use backup, verify, prune, mirror, runbook:NAME or drill:NAME",
                ));
            }
            if !jobs.insert(job.clone()) {
                return Err(self.at(
                    &s.job.span(),
                    &format!("daemon.schedule[{i}].job"),
                    format!("{job:?} is scheduled twice"),
                    "give each job one schedule (a cron expression can list several times)",
                ));
            }
            if let Err(why) = crate::schedule::Cron::parse(
                s.cron.get_ref(),
                s.timezone.as_ref().map(|t| t.get_ref().as_str()),
            ) {
                let span = match (&s.timezone, why.contains("time zone")) {
                    (Some(t), true) => t.span(),
                    _ => s.cron.span(),
                };
                return Err(self.at(
                    &span,
                    &format!("daemon.schedule[{i}].cron"),
                    why,
                    "e.g. cron = \"0 */15 * * * *\" (every 15 minutes), timezone = \"Europe/Berlin\"",
                ));
            }
            if let Some(j) = &s.jitter {
                if humantime::parse_duration(j.get_ref()).is_err() {
                    return Err(self.at(
                        &j.span(),
                        &format!("daemon.schedule[{i}].jitter"),
                        format!("{:?} is not a duration", j.get_ref()),
                        "write a duration such as \"30s\"",
                    ));
                }
            }
        }
        Ok(())
    }

    /// At least one recipient, each a public key (never a private one).
    fn recipients(&self, p: &Policy) -> Result<(), ConfigError> {
        let recipients = &p.backup.recipients;
        if recipients.get_ref().is_empty() {
            return Err(self.at(
                &recipients.span(),
                "backup.recipients",
                "the recipient list is empty: secret backups could not be encrypted".into(),
                "add the public key of the recovery identity, e.g. the output of `age-keygen -y KEYFILE`",
            ));
        }
        for (i, r) in recipients.get_ref().iter().enumerate() {
            if let Err((msg, hint)) = check_recipient(r.get_ref()) {
                return Err(self.at(&r.span(), &format!("backup.recipients[{i}]"), msg, hint));
            }
        }
        Ok(())
    }

    /// `[aws]`: durations, at least a second, an attempt no longer than its operation.
    /// One URL source per webhook, an http(s) URL (plain http only to this machine), a topic
    /// ARN, known event names.
    fn alerts(&self, p: &Policy) -> Result<(), ConfigError> {
        let a = &p.alerts;
        if let Some(w) = &a.webhook {
            match (&w.url, &w.url_env) {
                (Some(u), Some(_)) => {
                    return Err(self.at(
                        &u.span(),
                        "alerts.webhook.url",
                        "both url and url_env are set".into(),
                        "keep one: url_env when the URL holds a token",
                    ))
                }
                (None, None) => {
                    return Err(ConfigError::new(&self.file, "[alerts.webhook] has no URL")
                        .field("alerts.webhook")
                        .hint("add url = \"https://...\" or url_env = \"VARIABLE\""))
                }
                (Some(u), None) => {
                    if let Err(why) = check_webhook_url(u.get_ref()) {
                        return Err(self.at(
                            &u.span(),
                            "alerts.webhook.url",
                            why,
                            "write https://HOST/PATH (http:// only to 127.0.0.1 or localhost)",
                        ));
                    }
                }
                (None, Some(v)) => {
                    let ok = !v.get_ref().is_empty()
                        && v.get_ref()
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !ok {
                        return Err(self.at(
                            &v.span(),
                            "alerts.webhook.url_env",
                            format!("{:?} is not an environment variable name", v.get_ref()),
                            "write a name such as \"DRD_ALERT_WEBHOOK_URL\"",
                        ));
                    }
                }
            }
        }
        if let Some(s) = &a.sns {
            let arn = s.topic_arn.get_ref();
            let parts: Vec<&str> = arn.split(':').collect();
            let ok = parts.len() == 6
                && parts[0] == "arn"
                && parts[2] == "sns"
                && is_region_name(parts[3])
                && parts[4].len() == 12
                && parts[4].chars().all(|c| c.is_ascii_digit())
                && !parts[5].is_empty();
            if !ok {
                return Err(self.at(&s.topic_arn.span(), "alerts.sns.topic_arn", format!("{arn:?} is not an SNS topic ARN"), "write arn:aws:sns:REGION:ACCOUNT:TOPIC, e.g. arn:aws:sns:us-east-1:123456789012:drd-alerts"));
            }
        }
        if let Some(on) = &a.on {
            for (i, e) in on.get_ref().iter().enumerate() {
                if !super::alerts::EVENTS.contains(&e.get_ref().as_str()) {
                    return Err(self.at(
                        &e.span(),
                        &format!("alerts.on[{i}]"),
                        format!("{:?} is not an alert event", e.get_ref()),
                        &format!("use some of: {}", super::alerts::EVENTS.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    fn aws(&self, p: &Policy) -> Result<(), ConfigError> {
        for (field, v) in [
            ("aws.operation_timeout", &p.aws.operation_timeout),
            ("aws.attempt_timeout", &p.aws.attempt_timeout),
        ] {
            let Some(v) = v else { continue };
            match humantime::parse_duration(v.get_ref()) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => {}
                Ok(_) => {
                    return Err(self.at(
                        &v.span(),
                        field,
                        format!("{:?} is too short for an AWS call", v.get_ref()),
                        "use at least \"1s\"; the defaults are \"5m\" and \"90s\"",
                    ))
                }
                Err(e) => {
                    return Err(self.at(
                        &v.span(),
                        field,
                        format!("{:?} is not a duration: {e}", v.get_ref()),
                        "write a duration such as \"5m\" or \"90s\"",
                    ))
                }
            }
        }
        if let (Some(op), Some(at), Some(span)) = (
            p.aws.operation_timeout(),
            p.aws.attempt_timeout(),
            p.aws.attempt_timeout.as_ref().map(|a| a.span()),
        ) {
            if at > op {
                return Err(self.at(
                    &span,
                    "aws.attempt_timeout",
                    "an attempt may not take longer than the whole call (aws.operation_timeout)"
                        .into(),
                    "make attempt_timeout at most operation_timeout",
                ));
            }
        }
        Ok(())
    }
}

fn check_bucket_name(s: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&s.len()) {
        return Err("it must be 3 to 63 characters long");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("only lowercase letters, digits, '-' and '.' are allowed");
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric()
        || !s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

/// Accept X25519 (`age1...`) and SSH (`ssh-ed25519`, `ssh-rsa`) public keys. Never echo a value
/// that looks like a private key.
fn check_recipient(s: &str) -> Result<(), (String, &'static str)> {
    let s = s.trim();
    if s.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") || s.contains("PRIVATE KEY") {
        return Err((
            "this is a private identity, not a public recipient; drd must never hold it".into(),
            "remove it from the policy, keep it offline, and list its public key (`age-keygen -y FILE`)",
        ));
    }
    if s.starts_with("age1") {
        return age::x25519::Recipient::from_str(s)
            .map(|_| ())
            .map_err(|e| {
                (
                    format!("{s:?} is not a valid age X25519 recipient: {e}"),
                    "copy the whole `age1...` line printed by `age-keygen`",
                )
            });
    }
    if s.starts_with("ssh-") {
        return age::ssh::Recipient::from_str(s).map(|_| ()).map_err(|e| {
            (
                format!("{s:?} is not a usable SSH recipient: {e:?}"),
                "use an ssh-ed25519 or ssh-rsa public key line",
            )
        });
    }
    Err((
        format!("{s:?} is not an age recipient"),
        "use an `age1...` X25519 public key or an ssh-ed25519/ssh-rsa public key",
    ))
}

/// A webhook URL: https anywhere, plain http only to this machine (a lab or a local relay).
/// The URL itself is never part of the error (it often holds a token).
pub fn check_webhook_url(u: &str) -> Result<(), String> {
    let Ok(url) = reqwest::Url::parse(u) else {
        return Err("the webhook URL does not parse as a URL".into());
    };
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => Ok(()),
        ("http", Some("127.0.0.1" | "localhost" | "[::1]")) => Ok(()),
        ("http", Some(h)) => Err(format!(
            "plain http to {h} would send alerts unencrypted over the network"
        )),
        _ => Err("the webhook URL is not an http(s) URL".into()),
    }
}
