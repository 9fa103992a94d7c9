//! The server-rendered side of pipepay: the agency web app, and the pages a browser (or
//! Kommo's servers) reach outside the JSON API. Handlers call the same services as the API;
//! templates only display. Plain HTML forms work without JavaScript; `app.js` only adds copy
//! buttons and confirmations.

mod access;
mod account;
mod agency;
pub mod api_reference;
mod chart;
mod client;
mod kommo;
mod outbox;
mod people;
mod session;
mod stash;
mod view;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::Error;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(account::router())
        .merge(agency::router())
        .merge(client::router())
        .merge(people::router())
        .merge(kommo::router())
        .merge(outbox::router())
        .route(stash::RESUME, get(stash::resume))
        .route(
            "/assets/app.css",
            get(|| asset("text/css; charset=utf-8", include_str!("../../frontend/assets/app.css"))),
        )
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", include_str!("../../frontend/assets/app.js"))),
        )
}

/// Any unknown address: a page for browsers, problem+json for everything else.
pub async fn not_found(headers: axum::http::HeaderMap) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if browser {
        error_page(Error::NotFound).into_response()
    } else {
        crate::problem::Problem::not_found().into_response()
    }
}

/// Assets are compiled into the binary: nothing is fetched from anywhere else.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        body,
    )
        .into_response()
}

/// A rendered page with pipepay's page security policy: everything from pipepay itself, and
/// forms may lead only to pipepay or to the Kommo consent page it redirects to.
pub struct Page {
    status: StatusCode,
    html: String,
    form_targets: String,
}

impl Page {
    pub fn render(status: StatusCode, template: &impl Template) -> Page {
        let html = template.render().unwrap_or_else(|error| {
            tracing::error!(%error, "a page template failed to render");
            "<!doctype html><title>pipepay</title><p>Something went wrong.</p>".to_owned()
        });
        Page { status, html, form_targets: String::new() }
    }

    /// Lets this page's forms end at `origin` (after a redirect), e.g. Kommo's consent page.
    pub fn allow_form_target(mut self, origin: &str) -> Page {
        self.form_targets = format!(" {origin}");
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let csp = format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; \
             form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
            self.form_targets
        );
        let mut response = (self.status, self.html).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(value) = HeaderValue::from_str(&csp) {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
        response
    }
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct Message {
    pub title: String,
    pub message: String,
    /// `ok` or `error`.
    pub tone: &'static str,
    /// (href, label)
    pub link: Option<(String, String)>,
}

impl Message {
    pub fn ok(title: &str, message: impl Into<String>) -> Message {
        Message { title: title.into(), message: message.into(), tone: "ok", link: None }
    }

    pub fn with_link(mut self, href: impl Into<String>, label: impl Into<String>) -> Message {
        self.link = Some((href.into(), label.into()));
        self
    }
}

/// A service error as a page: the status and the message the API would give, in HTML.
pub fn error_page(error: Error) -> Page {
    problem_page(crate::problem::Problem::from(error))
}

fn problem_page(problem: crate::problem::Problem) -> Page {
    let message = problem.detail.clone().unwrap_or_else(|| problem.title.clone());
    let errors: Vec<String> = problem.errors.iter().map(|e| e.message.clone()).collect();
    let message = if errors.is_empty() || errors.contains(&message) { message } else { errors.join(" ") };
    Page::render(
        problem.status_code(),
        &Message {
            title: problem.title.clone(),
            message,
            tone: "error",
            link: Some(("/".into(), "Back to pipepay".into())),
        },
    )
}
