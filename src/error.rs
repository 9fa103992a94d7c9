//! The error every service returns: what went wrong in terms a caller can act on. The HTTP edge
//! turns it into problem+json (`problem`); the cause chain of internal errors goes to the
//! log, never to the client.

use serde::Serialize;

use crate::store::StoreError;
use crate::vault::VaultError;

/// One field a request got wrong, so clients can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's path in the request, e.g. `email` or `tax.rate_percent`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing, or belonging to someone else: the two are indistinguishable on purpose.
    #[error("not found")]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The body is not what its content type claims (broken JSON, a bad form).
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported media type: expected {0}")]
    UnsupportedMediaType(&'static str),
    #[error("request body too large")]
    TooLarge,
    #[error("conflict: {message}")]
    Conflict { field: Option<&'static str>, message: String },
    #[error("too many attempts; retry in {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    /// A dependency outside pipepay refused or failed (Kommo, Flutterwave).
    #[error("upstream: {message}")]
    Upstream { field: Option<&'static str>, message: String },
    /// The operator has not configured an integration this needs; `detail` names the settings.
    #[error("{title}: {detail}")]
    NotConfigured { problem: &'static str, title: &'static str, detail: String },
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("vault failed")]
    Vault(#[from] VaultError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid(vec![FieldError { field: field.into(), message: message.into() }])
    }

    pub fn conflict(field: &'static str, message: impl Into<String>) -> Error {
        Error::Conflict { field: Some(field), message: message.into() }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(StoreError::Sqlx(e))
    }
}

/// Collects every field error of one request, so the client can fix them all at once.
#[derive(Debug, Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }

    pub fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.fail(field, message);
        }
    }

    /// Records the error of a fallible parse and returns its value, if any.
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::Invalid(self.0)) }
    }
}
