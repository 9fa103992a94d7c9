//! What every page shares: the layout's data (who is logged in, their agencies, the section,
//! a notice after a change), and form errors shown next to their fields.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{AgencyLink, Viewer};
use super::{Page, error_page};
use crate::error::{Error, Result};
use crate::ids::AgencyId;
use crate::problem::Problem;
use crate::roles::Role;
use crate::state::AppState;

/// The layout's data: the header, the agency navigation and the notice line.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub email: String,
    pub csrf: String,
    pub agencies: Vec<AgencyLink>,
    /// The agency the page belongs to, with the viewer's role in it.
    pub current: Option<AgencyLink>,
    /// Which navigation entry is this page's (`clients`, `members`, `api-keys`, `audit`,
    /// `telemetry`, `account`), for `aria-current`.
    pub section: &'static str,
    pub notice: Option<&'static str>,
    /// The viewer has not confirmed their address yet: the layout offers to mail the link again.
    pub unverified: bool,
}

impl Chrome {
    /// The layout for a page of `agency` (or of no agency). A stranger's agency is a 404.
    pub async fn new(
        state: &AppState,
        viewer: &Viewer,
        agency: Option<AgencyId>,
        section: &'static str,
    ) -> Result<Chrome> {
        let agencies = viewer.agencies(state).await?;
        let unverified = !crate::auth::recovery::is_verified(&state.db, viewer.user).await?;
        let current = match agency {
            Some(id) => Some(agencies.iter().find(|a| a.id == id).cloned().ok_or(Error::NotFound)?),
            None => None,
        };
        Ok(Chrome {
            email: viewer.email.clone(),
            csrf: viewer.csrf.clone(),
            agencies,
            current,
            section,
            notice: None,
            unverified,
        })
    }

    /// Adds the notice a redirect after a change asked for (`?done=<key>`).
    pub fn with_notice(mut self, done: Option<&str>) -> Chrome {
        self.notice = done.and_then(notice);
        self
    }

    /// Whether the viewer may make admin changes in the current agency (templates hide the
    /// forms otherwise; the services refuse them either way).
    pub fn is_admin(&self) -> bool {
        self.current.as_ref().is_some_and(|a| a.role >= Role::Admin)
    }

    /// `aria-current="page"` for the navigation entry of this page.
    pub fn current_for(&self, section: &str) -> &'static str {
        if self.section == section { "page" } else { "false" }
    }

    /// The current agency's pages start here.
    pub fn base(&self) -> String {
        self.current.as_ref().map(|a| format!("/app/agencies/{}", a.id)).unwrap_or_else(|| "/app".into())
    }
}

/// The `?done=` query every page accepts.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    pub done: Option<String>,
}

/// Notices are a fixed list, so a crafted link cannot make a page say anything else.
fn notice(key: &str) -> Option<&'static str> {
    Some(match key {
        "client-created" => "Client account created.",
        "client-deleted" => "Client account deleted.",
        "settings-saved" => "Settings saved.",
        "keys-saved" => "Flutterwave keys saved and checked with Flutterwave.",
        "token-rotated" => {
            "New webhook URLs issued. The old ones stopped working; update Flutterwave's dashboard."
        }
        "kommo-disconnected" => "Kommo disconnected.",
        "job-replayed" => "The job will run again shortly.",
        "invited" => "Invitation created.",
        "invitation-revoked" => "Invitation revoked.",
        "member-updated" => "Role changed.",
        "member-removed" => "Member removed.",
        "key-revoked" => "API key revoked.",
        "telemetry-saved" => "Telemetry export saved.",
        "telemetry-removed" => "Telemetry export removed.",
        "password-changed" => "Password changed. Your other sessions were logged out.",
        "joined" => "Welcome: you joined the agency.",
        "password-reset" => "Password changed. Every other session of yours was logged out.",
        "verification-sent" => "We mailed you a new link to confirm your address.",
        "alerts-saved" => "Alert settings saved.",
        _ => return None,
    })
}

/// Where a change sends the browser afterwards (303, so a reload does not post again).
pub fn done(path: &str, key: &str) -> Response {
    let separator = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{separator}done={key}")).into_response()
}

/// What a form got wrong: messages by field name, and one for the whole form.
#[derive(Debug, Default, Clone)]
pub struct FormErrors {
    fields: BTreeMap<String, String>,
    pub summary: Option<String>,
}

impl FormErrors {
    pub fn none() -> FormErrors {
        FormErrors::default()
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// `aria-invalid` for a field.
    pub fn invalid(&self, field: &str) -> &'static str {
        if self.fields.contains_key(field) { "true" } else { "false" }
    }

    /// The first message for a list field or any of its items (`field`, `field[2]`): a form
    /// shows a multi-select's errors in one place.
    pub fn get_any(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| *name == field || name.strip_prefix(field).is_some_and(|r| r.starts_with('[')))
            .map(|(_, message)| message.as_str())
    }

    /// `aria-invalid` for a list field or any of its items.
    pub fn invalid_any(&self, field: &str) -> &'static str {
        if self.get_any(field).is_some() { "true" } else { "false" }
    }
}

/// A failed change: shown on the page that was posted (with the input kept) when the person can
/// fix it; a missing page, or our own failure, is an error page.
pub enum Failure {
    Form(StatusCode, FormErrors),
    Page(Page),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let problem = Problem::from(error);
        let status = problem.status_code();
        // A dependency's failure about one field (Flutterwave could not check a key) is
        // something to show next to that field; any other server error is an error page.
        if status == StatusCode::NOT_FOUND || (status.is_server_error() && problem.errors.is_empty()) {
            return Failure::Page(error_page_from(problem));
        }
        let mut errors = FormErrors::none();
        for field in &problem.errors {
            errors.fields.entry(field.field.clone()).or_insert_with(|| field.message.clone());
        }
        if problem.errors.is_empty() {
            errors.summary = Some(problem.detail.clone().unwrap_or_else(|| problem.title.clone()));
        } else {
            errors.summary = Some("Some fields need another look; see the messages next to them.".into());
        }
        Failure::Form(status, errors)
    }
}

fn error_page_from(problem: Problem) -> Page {
    super::problem_page(problem)
}

/// Shows the posted form again after a failure the person can fix (`form` gets the status and
/// the errors, and keeps the input); anything else is an error page.
pub fn again(error: Error, form: impl FnOnce(StatusCode, FormErrors) -> Page) -> Response {
    match Failure::from(error) {
        Failure::Form(status, errors) => form(status, errors).into_response(),
        Failure::Page(page) => page.into_response(),
    }
}

/// The page again after a refused change: `view` rebuilds it as it is now, `fill` puts the
/// errors (and any input worth keeping) on it.
pub async fn refused<T: askama::Template>(
    view: impl std::future::Future<Output = Result<T>>,
    error: Error,
    fill: impl FnOnce(&mut T, FormErrors),
) -> Response {
    match view.await {
        Ok(mut page) => again(error, |status, errors| {
            fill(&mut page, errors);
            Page::render(status, &page)
        }),
        Err(error) => error_page(error).into_response(),
    }
}

/// Renders a page's result: the page, or the error page.
pub fn page(result: Result<Page>) -> Response {
    match result {
        Ok(page) => page.into_response(),
        Err(error) => error_page(error).into_response(),
    }
}

/// A stored time (ms) as people read it, in UTC.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// An RFC 3339 time from a service view, as people read it.
pub fn when_rfc3339(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at).map_or_else(|_| at.to_owned(), |t| when(t.timestamp_millis()))
}
