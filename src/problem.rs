//! RFC 9457 problem details: the one shape every error answer takes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, FieldError};
use crate::store::StoreError;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem+json body. `type` is `about:blank` for plain HTTP errors and a
/// `urn:pipepay:problem:*` name for errors pipepay defines.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The `x-request-id` of the request, to quote when asking for help.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    /// A plain HTTP problem titled by its status.
    pub fn status(status: StatusCode) -> Self {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            request_id: None,
            retry_after_secs: None,
        }
    }

    /// A problem pipepay defines, with a stable machine-readable name.
    pub fn new(status: StatusCode, name: &str, title: impl Into<String>) -> Self {
        Problem { kind: format!("urn:pipepay:problem:{name}"), title: title.into(), ..Self::status(status) }
    }

    pub fn not_found() -> Self {
        Self::status(StatusCode::NOT_FOUND).with_detail("There is nothing at this address.")
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError { field: field.into(), message: message.into() });
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        // Serialising a struct of strings cannot fail; the fallback keeps the edge panic-free.
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Problem {
        match error {
            Error::NotFound => Problem::not_found(),
            Error::Forbidden(why) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed").with_detail(why)
            }
            Error::Unauthenticated(why) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Not logged in").with_detail(why)
            }
            Error::Invalid(errors) => Problem {
                errors,
                ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "Some fields are not valid")
                    .with_detail("Fix the fields listed in `errors` and send the request again.")
            },
            Error::Malformed(why) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed", "Malformed request").with_detail(why)
            }
            Error::UnsupportedMediaType(expected) => Problem::status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .with_detail(format!("Send the body as {expected}.")),
            Error::TooLarge => Problem::status(StatusCode::PAYLOAD_TOO_LARGE),
            Error::Conflict { field, message } => {
                let problem =
                    Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").with_detail(&message);
                match field {
                    Some(field) => problem.with_field(field, message),
                    None => problem,
                }
            }
            Error::RateLimited { retry_after_secs } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
                    .with_detail(format!("Wait {retry_after_secs} s before trying again."))
                    .with_retry_after(retry_after_secs)
            }
            Error::Upstream { field, message } => {
                let problem =
                    Problem::new(StatusCode::BAD_GATEWAY, "upstream", "A service pipepay depends on failed")
                        .with_detail(&message);
                match field {
                    Some(field) => problem.with_field(field, message),
                    None => problem,
                }
            }
            // 503, not 502: nothing outside failed; this instance cannot do it until configured.
            Error::NotConfigured { problem, title, detail } => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, problem, title).with_detail(detail)
            }
            error @ Error::Store(StoreError::Sqlx(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            )) => {
                tracing::error!(error = %crate::error_chain(&error), "database unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
                    .with_detail("The database is not answering; try again shortly.")
                    .with_retry_after(1)
            }
            error @ (Error::Store(_) | Error::Vault(_) | Error::Internal(_)) => {
                // The cause chain goes to the log, never to the client: it may name tables,
                // hosts or (for a bug) values that are not the client's business.
                tracing::error!(error = %crate::error_chain(&error), "request failed");
                Problem::status(StatusCode::INTERNAL_SERVER_ERROR).with_detail(
                    "Something went wrong on our side; quote the request id if you ask for help.",
                )
            }
        }
    }
}
