//! The agency home: its client accounts at a glance, and adding one.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{PagePath, Posted, Viewer};
use super::view::{Chrome, Done, FormErrors, done, page, refused, when};
use super::{Page, error_page};
use crate::error::Result;
use crate::flutterwave::keys::Mode;
use crate::ids::AgencyId;
use crate::kommo::health;
use crate::state::AppState;
use crate::tenants::{clients, overview};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/app") }))
        .route("/app", get(app))
        .route("/app/agencies/{agency}", get(home))
        .route("/app/agencies/{agency}/clients", post(create_client))
}

/// The first agency's home; someone in no agency sees how to get into one.
async fn app(State(state): State<AppState>, viewer: Viewer) -> Response {
    match viewer.agencies(&state).await {
        Ok(agencies) => match agencies.first() {
            Some(agency) => Redirect::to(&format!("/app/agencies/{}", agency.id)).into_response(),
            None => Redirect::to("/app/account").into_response(),
        },
        Err(error) => error_page(error).into_response(),
    }
}

/// One row of the health table, worded for people.
pub struct HealthRow {
    pub id: String,
    pub name: String,
    pub kommo: &'static str,
    pub kommo_tone: &'static str,
    pub flutterwave: &'static str,
    pub flutterwave_tone: &'static str,
    pub last_webhook: String,
    pub open_links: i64,
    pub paid: Vec<String>,
    pub failures: i64,
    pub paused: Option<String>,
}

/// A Kommo health as a label and a tone (`good`, `warn`, `bad`, `none`).
pub fn kommo_label(connection: Option<&str>) -> (&'static str, &'static str) {
    match connection {
        None => ("Not connected", "none"),
        Some(health::ACTIVE) => ("Connected", "good"),
        Some(health::NEEDS_REAUTH) => ("Needs reconnecting", "warn"),
        Some(health::REVOKED) => ("Revoked", "bad"),
        Some(health::PAYMENT_REQUIRED) => ("Kommo unpaid", "bad"),
        Some(health::BLOCKED) => ("Blocked by Kommo", "bad"),
        Some(_) => ("Unknown", "warn"),
    }
}

pub fn flutterwave_label(mode: Option<Mode>) -> (&'static str, &'static str) {
    match mode {
        None => ("No keys", "none"),
        Some(Mode::Test) => ("Test keys", "warn"),
        Some(Mode::Live) => ("Live keys", "good"),
    }
}

fn row(client: overview::ClientHealth) -> HealthRow {
    let (kommo, kommo_tone) = kommo_label(client.kommo.as_ref().map(|(h, _)| h.as_str()));
    let (flutterwave, flutterwave_tone) = flutterwave_label(client.flutterwave);
    HealthRow {
        id: client.id.to_string(),
        name: client.name,
        kommo,
        kommo_tone,
        flutterwave,
        flutterwave_tone,
        last_webhook: client.last_webhook_at.map_or_else(|| "Never".to_owned(), when),
        open_links: client.open_links,
        paid: client
            .payments_this_month
            .iter()
            .map(|(currency, total, count)| {
                let total = super::view::money(currency, *total);
                format!("{total} ({count} payment{})", if *count == 1 { "" } else { "s" })
            })
            .collect(),
        failures: client.failures,
        paused: client.paused,
    }
}

#[derive(Template)]
#[template(path = "agency_home.html")]
struct HomePage {
    chrome: Chrome,
    clients: Vec<HealthRow>,
    name: String,
    errors: FormErrors,
}

async fn home_page(
    state: &AppState,
    viewer: &Viewer,
    agency: AgencyId,
    done: Option<&str>,
    name: String,
    errors: FormErrors,
) -> Result<HomePage> {
    let access = viewer.access(state, agency).await?;
    let chrome = Chrome::new(state, viewer, Some(agency), "clients").await?.with_notice(done);
    let clients = overview::clients(&state.db, &state.vault, &access).await?.into_iter().map(row).collect();
    Ok(HomePage { chrome, clients, name, errors })
}

async fn home(
    State(state): State<AppState>,
    viewer: Viewer,
    PagePath(agency): PagePath<AgencyId>,
    Query(done): Query<Done>,
) -> Response {
    page(
        home_page(&state, &viewer, agency, done.done.as_deref(), String::new(), FormErrors::none())
            .await
            .map(|p| Page::render(StatusCode::OK, &p)),
    )
}

#[derive(Deserialize)]
struct NewClient {
    #[serde(default)]
    name: String,
}

async fn create_client(
    State(state): State<AppState>,
    PagePath(agency): PagePath<AgencyId>,
    posted: Posted<NewClient>,
) -> Response {
    let Posted { viewer, form } = posted;
    let created = async {
        let access = viewer.access(&state, agency).await?;
        clients::create(&state.db, &state.vault, &state.public_url, &access, &form.name).await
    };
    match created.await {
        Ok((client, _)) => done(&format!("/app/agencies/{agency}/clients/{}", client.id), "client-created"),
        Err(error) => {
            let home = home_page(&state, &viewer, agency, None, form.name.clone(), FormErrors::none());
            refused(home, error, |home, errors| home.errors = errors).await
        }
    }
}
