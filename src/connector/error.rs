//! The one error type every driver returns, classified by kind.
//!
//! The sync engine decides what to do with a failure from the kind alone:
//! retry it later ([`ConnectorError::is_retryable`]), wait as long as the
//! system asked ([`ErrorKind::RateLimited`]), or stop and tell the operator.

use std::fmt;
use std::time::Duration;

/// What went wrong, in the terms the sync engine acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Credentials missing, wrong or expired (after one refresh attempt).
    Auth,
    /// The system asked us to slow down; wait `retry_after` when it said.
    RateLimited { retry_after: Option<Duration> },
    /// The record or endpoint does not exist.
    NotFound,
    /// The system refused a write because of its current state (a version
    /// or uniqueness conflict).
    Conflict,
    /// The data is wrong: a malformed response, a record the system rejects,
    /// a page that contradicts the one before.
    InvalidData,
    /// The system is down, overloaded or the connection broke.
    Unavailable,
    /// No answer within the configured time.
    Timeout,
    /// The definition or instance configuration is wrong; nothing was tried.
    Config,
}

impl ErrorKind {
    /// Whether trying again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited { .. } | ErrorKind::Unavailable | ErrorKind::Timeout
        )
    }

    /// A short stable name for logs, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidData => "invalid_data",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Config => "config",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::RateLimited {
                retry_after: Some(d),
            } => write!(f, "rate_limited (retry after {} ms)", d.as_millis()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A connector failure: its kind, where it happened and what the system
/// said. Messages never carry secrets: drivers build them from status
/// codes, URLs with credentials removed, and response excerpts.
#[derive(Debug, thiserror::Error)]
#[error("{system}: {kind}: {message}")]
pub struct ConnectorError {
    /// The classification the sync engine acts on.
    pub kind: ErrorKind,
    /// The system (instance) name, or the definition name before one exists.
    pub system: String,
    /// What happened, in words an operator can act on.
    pub message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, system: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            system: system.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error (shown in the cause chain).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// How long the system asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }

    pub fn config(system: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, system, message)
    }

    pub fn invalid_data(system: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidData, system, message)
    }

    pub fn unavailable(system: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, system, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_kinds_are_retryable() {
        let retryable: Vec<_> = [
            ErrorKind::Auth,
            ErrorKind::RateLimited { retry_after: None },
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::InvalidData,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Config,
        ]
        .into_iter()
        .filter(|k| k.is_retryable())
        .map(ErrorKind::as_str)
        .collect();
        assert_eq!(retryable, ["rate_limited", "unavailable", "timeout"]);
    }

    #[test]
    fn display_names_system_kind_and_delay() {
        let e = ConnectorError::new(
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            },
            "xero_main",
            "HTTP 429 on GET /Invoices",
        );
        assert_eq!(
            e.to_string(),
            "xero_main: rate_limited (retry after 2000 ms): HTTP 429 on GET /Invoices"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert!(e.is_retryable());
    }
}
