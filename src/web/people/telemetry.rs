//! The agency's own OTLP export. Header values are credentials (a vendor's API key): they go
//! into the vault and come back masked, and a refused form never sends them back to the browser.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Empty, Time, when};
use crate::error::{Error, FieldError, Result};
use crate::ids::AgencyId;
use crate::state::AppState;
use crate::tenants::telemetry::{self, TelemetryInput};
use crate::web::Page;
use crate::web::access::{AgencyPage, PostedTo};
use crate::web::view::{Chrome, Done, FormErrors, done, page as render, refused as refused_page};

pub struct Current {
    pub endpoint: String,
    /// (name, masked value)
    pub headers: Vec<(String, String)>,
    pub updated: Time,
    pub delivery: Option<DeliveryRow>,
}

pub struct DeliveryRow {
    pub exported: u64,
    pub dropped: u64,
    pub last_error: Option<String>,
}

#[derive(Template)]
#[template(path = "people_telemetry.html")]
struct TelemetryPage {
    chrome: Chrome,
    current: Option<Current>,
    /// Operators of private deployments may allow http and private hosts.
    allow_private: bool,
    endpoint: String,
    errors: FormErrors,
    /// The posted headers were dropped from the refused form (they hold secrets).
    headers_cleared: bool,
}

async fn view(state: &AppState, page: &AgencyPage, done: Option<&str>) -> Result<TelemetryPage> {
    let chrome = Chrome::new(state, &page.viewer, Some(page.agency), "telemetry").await?.with_notice(done);
    let current = match telemetry::get(&state.db, &state.vault, &page.access).await {
        Ok(view) => Some(Current {
            endpoint: view.endpoint,
            headers: view.headers.into_iter().collect(),
            updated: when(&view.updated_at),
            delivery: view.delivery.map(|d| DeliveryRow {
                exported: d.exported_spans,
                dropped: d.dropped_spans,
                last_error: d.last_error,
            }),
        }),
        // Nothing configured is the usual state, not an error.
        Err(Error::NotFound) => None,
        Err(error) => return Err(error),
    };
    Ok(TelemetryPage {
        chrome,
        endpoint: current.as_ref().map(|c| c.endpoint.clone()).unwrap_or_default(),
        current,
        allow_private: state.config.telemetry_allow_private,
        errors: FormErrors::none(),
        headers_cleared: false,
    })
}

fn path(agency: AgencyId) -> String {
    format!("/app/agencies/{agency}/telemetry")
}

pub async fn page(State(state): State<AppState>, page: AgencyPage, Query(done): Query<Done>) -> Response {
    render(view(&state, &page, done.done.as_deref()).await.map(|p| Page::render(StatusCode::OK, &p)))
}

async fn refused(state: &AppState, page: &AgencyPage, error: Error, endpoint: Option<String>) -> Response {
    refused_page(view(state, page, None), error, |shown, errors| {
        if let Some(endpoint) = endpoint {
            shown.endpoint = endpoint;
            shown.headers_cleared = true;
        }
        shown.errors = errors;
    })
    .await
}

/// What of a refused endpoint goes back into the form: never its user, password, query or
/// fragment, which are refused precisely because vendors' keys travel there.
fn echoable(endpoint: &str) -> String {
    // `team:KEY@host` parses as a URL with the scheme `team`, and a key pasted into the wrong
    // field is no URL at all: only http(s) URLs with a host come back, taken apart.
    match url::Url::parse(endpoint.trim()) {
        Ok(mut url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            let clean = url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none();
            if clean {
                return endpoint.to_owned();
            }
            // Neither can fail on an http(s) URL with a host.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        _ => String::new(),
    }
}

#[derive(Deserialize)]
pub struct TelemetryForm {
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    headers: String,
}

/// Which line (1-based) each header name came from.
type HeaderLines = Vec<(usize, String)>;

/// `Name: value` lines (blank lines skipped) with the line each header came from, so errors can
/// point at a line without repeating anything typed on it: a line without a colon may well be a
/// pasted key.
fn parse_headers(text: &str) -> Result<(BTreeMap<String, String>, HeaderLines)> {
    let mut headers = BTreeMap::new();
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let number = index + 1;
        let Some((name, value)) = line.split_once(':') else {
            return Err(Error::invalid("headers", format!("Write line {number} as Name: value.")));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(Error::invalid("headers", format!("Give line {number} both a name and a value.")));
        }
        if headers.keys().any(|n: &String| n.eq_ignore_ascii_case(name)) {
            return Err(Error::invalid(
                "headers",
                format!("Line {number} repeats a header given above; keep one."),
            ));
        }
        headers.insert(name.to_owned(), value.to_owned());
        lines.push((number, name.to_owned()));
    }
    Ok((headers, lines))
}

/// The service names a bad header `headers.<name>`; the form has one `headers` field, and the
/// message says which line rather than echoing it.
fn point_at_lines(error: Error, lines: &[(usize, String)]) -> Error {
    let Error::Invalid(fields) = error else { return error };
    let mut out: Vec<FieldError> = Vec::new();
    for field in fields {
        let Some(name) = field.field.strip_prefix("headers.") else {
            out.push(field);
            continue;
        };
        let line = lines.iter().find(|(_, n)| n == name).map_or(0, |(number, _)| *number);
        let message = format!("line {line} {}", field.message);
        match out.iter_mut().find(|f| f.field == "headers") {
            Some(existing) => {
                existing.message.push_str("; ");
                existing.message.push_str(&message);
            }
            None => out.push(FieldError { field: "headers".into(), message }),
        }
    }
    Error::Invalid(out)
}

pub async fn save(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<AgencyPage, TelemetryForm>,
) -> Response {
    let saved = async {
        let (headers, lines) = parse_headers(&form.headers)?;
        let input = TelemetryInput { endpoint: form.endpoint.clone(), headers };
        telemetry::set(&state.db, &state.vault, &page.access, input, state.config.telemetry_allow_private)
            .await
            .map_err(|e| point_at_lines(e, &lines))?;
        resync(&state).await
    };
    match saved.await {
        Ok(()) => done(&path(page.agency), "telemetry-saved"),
        Err(error) => refused(&state, &page, error, Some(echoable(&form.endpoint))).await,
    }
}

pub async fn delete(
    State(state): State<AppState>,
    PostedTo { page, .. }: PostedTo<AgencyPage, Empty>,
) -> Response {
    let removed = async {
        telemetry::delete(&state.db, &page.access).await?;
        resync(&state).await
    };
    match removed.await {
        Ok(()) => done(&path(page.agency), "telemetry-removed"),
        Err(error) => refused(&state, &page, error, None).await,
    }
}

/// Points this process's exporters at the new configuration, as the API does.
async fn resync(state: &AppState) -> Result<()> {
    if let Some(routes) = crate::telemetry::agency_routes() {
        telemetry::sync(&state.db, &state.vault, &routes).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_parse_and_errors_never_repeat_them() {
        let (headers, lines) = parse_headers("Authorization: Bearer abc:def\n\n x-team : growth \n").unwrap();
        assert_eq!(headers.get("Authorization").map(String::as_str), Some("Bearer abc:def"));
        assert_eq!(headers.get("x-team").map(String::as_str), Some("growth"));
        assert_eq!(lines, vec![(1, "Authorization".to_owned()), (3, "x-team".to_owned())]);
        assert!(parse_headers("").unwrap().0.is_empty());
        for bad in ["sk_live_pasted_key", "x-key:", ": hunter2", "a: hunter2\nA: hunter3"] {
            let Err(Error::Invalid(errors)) = parse_headers(bad) else { panic!("{bad} accepted") };
            assert_eq!(errors[0].field, "headers");
            assert!(!errors[0].message.contains("sk_live") && !errors[0].message.contains("hunter"), "{bad}");
        }
    }
}
