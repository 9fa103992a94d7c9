//! The agency's people and machines: members, invitations, API keys, the audit log, and its
//! own telemetry export. Handlers call the `tenants` services, which decide who may change what;
//! templates only hide the forms a viewer could not use.

pub(crate) mod alerts;
mod api_keys;
mod audit;
mod members;
mod telemetry;

use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;

use super::view::FormErrors;
use super::view::Time;
use crate::error::{Error, Result};
use crate::roles::Role;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let base = "/app/agencies/{agency}";
    Router::new()
        .route(&format!("{base}/members"), get(members::page))
        .route(&format!("{base}/members/{{user}}"), post(members::set_role))
        .route(&format!("{base}/members/{{user}}/remove"), post(members::remove))
        .route(&format!("{base}/invitations"), post(members::invite))
        .route(&format!("{base}/invitations/{{invitation}}/revoke"), post(members::revoke))
        .route(&format!("{base}/api-keys"), get(api_keys::page).post(api_keys::create))
        .route(&format!("{base}/api-keys/{{key}}/revoke"), post(api_keys::revoke))
        .route(&format!("{base}/audit"), get(audit::page))
        .route(&format!("{base}/telemetry"), get(telemetry::page).post(telemetry::save))
        .route(&format!("{base}/telemetry/delete"), post(telemetry::delete))
        .route(&format!("{base}/alerts"), get(alerts::page).post(alerts::save))
}

/// A time from a service view, for a page (`{{ t.html() }}` shows it in the viewer's zone).
fn when(at: &str) -> Time {
    Time::from_rfc3339(at)
}

/// A form with nothing but its CSRF token: a button.
#[derive(Deserialize)]
pub struct Empty {}

/// A credential shown once, right after it was made: nothing stores it in a readable form, so a
/// reload cannot show it again.
pub struct ShownOnce {
    /// The readonly input's id (the copy button and its live region use it).
    pub id: &'static str,
    pub label: &'static str,
    pub value: String,
    pub advice: String,
}

/// A role picked in a form; an unknown one is a field error rather than an unreadable form.
fn parse_role(field: &str, role: &str) -> Result<Role> {
    role.parse().map_err(|_| Error::invalid(field, "Choose one of the roles offered."))
}

/// A failed row action (a button in a table) has no field next to it: its message goes to the
/// page's alert instead of the generic "see the fields" summary.
fn row_failure(mut errors: FormErrors, fields: &[&str]) -> FormErrors {
    if let Some(message) = fields.iter().find_map(|f| errors.get(f)) {
        errors.summary = Some(message.to_owned());
    }
    errors
}
