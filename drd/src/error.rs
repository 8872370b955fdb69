//! Typed errors of the drd library. Each says what went wrong and what to do next; the binary
//! maps them to exit codes (0 ok, 1 failure, 2 usage/config error, 3 lock held).

use std::fmt;

/// Whether retrying the same call could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Permanent,
    Transient,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad policy, template, runbook or input: nothing was written.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// An AWS call failed; `code` is the service's error code (`AccessDenied`, ...).
    #[error("{service} {operation} failed{at}: {code}: {message}{hint}", at = at_suffix(.at), hint = hint_suffix(.hint))]
    Aws {
        service: &'static str,
        operation: &'static str,
        /// Where: `in REGION at ENDPOINT`, when known.
        at: Option<String>,
        code: String,
        message: String,
        hint: Option<String>,
        retry: Retry,
    },
    /// Something ran but did not reach the goal (a probe failed, a stack rolled back, ...).
    #[error("{message}{hint}", hint = hint_suffix(.hint))]
    Failed {
        message: String,
        hint: Option<String>,
    },
    /// Another run holds the lease.
    #[error(
        "lock {name} is held by {holder} until {until} unless renewed (fix: if that holder is gone, \
         `drd unlock {lease}` breaks the lock once it stops renewing; an interrupted runbook run \
         continues with --resume RUN)",
        lease = name.rsplit('/').next().unwrap_or(name)
    )]
    LockHeld {
        name: String,
        holder: String,
        until: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn at_suffix(at: &Option<String>) -> String {
    at.as_ref().map(|a| format!(" {a}")).unwrap_or_default()
}

fn hint_suffix(h: &Option<String>) -> String {
    h.as_ref()
        .map(|h| format!(" (hint: {h})"))
        .unwrap_or_default()
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            Error::LockHeld { .. } => 3,
            _ => 1,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed {
            message: message.into(),
            hint: None,
        }
    }

    pub fn failed_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Failed {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::Aws { retry, .. } => *retry,
            _ => Retry::Permanent,
        }
    }

    /// The message without its hint, and the hint: for wrapping an error in context while
    /// keeping one `(hint: ...)` at the end of the line.
    pub fn split_hint(&self) -> (String, Option<String>) {
        match self {
            Error::Aws {
                service,
                operation,
                at,
                code,
                message,
                hint,
                ..
            } => (
                format!(
                    "{service} {operation} failed{}: {code}: {message}",
                    at_suffix(at)
                ),
                hint.clone(),
            ),
            Error::Failed { message, hint } => (message.clone(), hint.clone()),
            other => (other.to_string(), None),
        }
    }

    /// The AWS error code, when this is an AWS error.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A configuration or input error, located as precisely as we can (file, line, field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            field: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Locate a byte offset of `text` as 1-based line and column.
    pub fn at_offset(self, text: &str, offset: usize) -> Self {
        let (line, col) = line_col(text, offset);
        self.at(line, col)
    }
}

pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (fix: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 8), (2, 3));
    }

    #[test]
    fn config_error_display_names_file_line_field_and_fix() {
        let e = ConfigError::new("p.toml", "bad region")
            .at(3, 5)
            .field("backup.region")
            .hint("use us-west-2");
        assert_eq!(
            e.to_string(),
            "p.toml:3:5: backup.region: bad region (fix: use us-west-2)"
        );
        assert_eq!(Error::from(e).exit_code(), 2);
    }
}
