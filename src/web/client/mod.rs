//! A client account's pages: overview (setup checklist, Kommo, Flutterwave keys, webhook URLs),
//! settings, activity and payments. Every page and form is a [`ClientPage`]: the viewer's access
//! is resolved before the handler runs, and the page then finds the client account within that
//! agency, so another agency's ids are a 404 before anything is said; changes go through the
//! same services as the API, which refuse members with a 403.

mod activity;
mod entry;
mod overview;
mod payments;
mod settings;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::access::ClientPage;
use super::view::{Chrome, FormErrors, again};
use super::{Page, error_page};
use crate::auth::Access;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::tenants::clients::{self, ClientView};

const CLIENT: &str = "/app/agencies/{agency}/clients/{client}";

pub fn router() -> Router<AppState> {
    let at = |rest: &str| format!("{CLIENT}{rest}");
    Router::new()
        .route(CLIENT, get(overview::page))
        .route(&at("/kommo/connect"), post(overview::connect_kommo))
        .route(&at("/kommo/disconnect"), post(overview::disconnect_kommo))
        .route(&at("/flutterwave-keys"), post(overview::save_keys))
        .route(&at("/ingress-token"), post(overview::rotate_token))
        .route(&at("/test-event"), post(overview::send_test_event))
        .route(&at("/delete"), post(overview::delete))
        .route(&at("/settings"), get(settings::page).post(settings::save))
        .route(&at("/activity"), get(activity::page))
        .route(&at("/payments"), get(payments::page))
        .route(&at("/activity/{entry}"), get(entry::page))
        .route(&at("/activity/{entry}/replay"), post(entry::replay))
        .route(&at("/jobs/{job}/replay"), post(activity::replay))
}

/// The client account a page is about, for its heading and tabs.
#[derive(Debug, Clone)]
pub struct ClientHead {
    pub name: String,
    /// `/app/agencies/{agency}/clients/{client}`: every page and form of it starts here.
    pub base: String,
    /// `overview`, `settings`, `activity` or `payments`.
    pub tab: &'static str,
}

impl ClientHead {
    /// `aria-current="page"` for the tab of this page.
    pub fn current_for(&self, tab: &str) -> &'static str {
        if self.tab == tab { "page" } else { "false" }
    }
}

/// What every page of a client account starts from.
pub struct Opened {
    pub access: Access,
    pub chrome: Chrome,
    pub client: ClientView,
    pub head: ClientHead,
}

/// The client account (404 when it is not this agency's) and the layout.
pub async fn open(
    state: &AppState,
    page: &ClientPage,
    tab: &'static str,
    done: Option<&str>,
) -> Result<Opened> {
    let ClientPage { viewer, access, agency, client } = page;
    let client = clients::get(&state.db, access, *client).await?;
    let chrome = Chrome::new(state, viewer, Some(*agency), "clients").await?.with_notice(done);
    let head = ClientHead {
        name: client.name.clone(),
        base: format!("/app/agencies/{agency}/clients/{}", client.id),
        tab,
    };
    Ok(Opened { access: access.clone(), chrome, client, head })
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

/// A refused change (403) is an error page: the forms it came from are not shown to members,
/// so there is nowhere to say it next to a field. Anything else goes back to the form.
pub fn refused_or_again(error: Error, form: impl FnOnce(StatusCode, FormErrors) -> Page) -> Response {
    if matches!(error, Error::Forbidden(_)) {
        return error_page(error).into_response();
    }
    again(error, form)
}

pub use super::view::when;
