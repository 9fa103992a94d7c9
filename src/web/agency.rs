//! The agency home: its client accounts at a glance (setup checklist, links and payments per
//! client account), and adding one.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::access::{AgencyPage, PostedTo};
use super::session::Viewer;
use super::view::{Chrome, Done, FormErrors, done, page, refused, when};
use super::{Page, error_page};
use crate::error::Result;
use crate::flutterwave::keys::Mode;
use crate::ids::AgencyId;
use crate::kommo::health;
use crate::state::AppState;
use crate::store::links::LinkState;
use crate::tenants::{clients, overview, payments};

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

/// One step of a client account's setup checklist.
pub struct ChecklistItem {
    pub label: &'static str,
    pub done: bool,
}

/// A client account's setup checklist, worded for people, with the next step as a link.
pub struct ChecklistView {
    pub items: Vec<ChecklistItem>,
    /// (words, address) of the next step.
    pub next: Option<(&'static str, String)>,
    /// It can make payment links (the first three steps are done) and nothing waits for a person.
    pub ready: bool,
    pub done: usize,
}

impl ChecklistView {
    /// `base` is the client account's address; `paused` whether its jobs wait for a person.
    pub fn new(list: overview::Checklist, base: &str, paused: bool) -> ChecklistView {
        let next = list.next().map(|step| match step {
            overview::Step::ConnectKommo => ("Next: connect Kommo", format!("{base}#kommo-title")),
            overview::Step::AddKeys => ("Next: add the Flutterwave keys", format!("{base}#flw-title")),
            overview::Step::ChooseTrigger => ("Next: choose the trigger stage", format!("{base}/settings")),
            overview::Step::AwaitFlutterwaveWebhook => {
                ("Next: point Flutterwave's webhook here", format!("{base}#urls-title"))
            }
        });
        ChecklistView {
            items: vec![
                ChecklistItem { label: "Kommo connected", done: list.kommo },
                ChecklistItem { label: "Flutterwave keys checked", done: list.keys },
                ChecklistItem { label: "Trigger stage chosen", done: list.trigger },
                ChecklistItem { label: "A Flutterwave webhook received", done: list.flutterwave_webhook },
            ],
            next,
            ready: list.makes_links() && !paused,
            done: list.done(),
        }
    }

    /// The overall state as a label and a tone.
    pub fn status(&self) -> (&'static str, &'static str) {
        match (self.ready, self.next.is_some()) {
            (true, false) => ("Ready", "good"),
            (true, true) => ("Makes links", "good"),
            (false, _) if self.done == 0 => ("Not set up", "none"),
            (false, _) => ("Setup unfinished", "warn"),
        }
    }
}

/// One row of the health table, worded for people.
pub struct HealthRow {
    pub id: String,
    pub name: String,
    pub setup: ChecklistView,
    pub setup_label: &'static str,
    pub setup_tone: &'static str,
    /// Links by state, in words ("3 open, 1 paid"), and what was ever paid, per currency.
    pub links: String,
    pub paid_ever: Vec<String>,
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

/// "1,234.50 KES (2 payments)"
fn paid_line(currency: &str, total: rust_decimal::Decimal, count: usize) -> String {
    let total = super::view::money(currency, total);
    format!("{total} ({count} payment{})", if count == 1 { "" } else { "s" })
}

fn links_line(totals: &payments::Totals) -> String {
    let words: Vec<String> = [
        (LinkState::Open, "open"),
        (LinkState::Paid, "paid"),
        (LinkState::Superseded, "replaced"),
        (LinkState::Cancelled, "disabled"),
    ]
    .into_iter()
    .filter_map(|(state, word)| totals.links.get(&state).map(|n| format!("{n} {word}")))
    .collect();
    if words.is_empty() { "None yet".to_owned() } else { words.join(", ") }
}

fn row(agency: AgencyId, client: overview::ClientHealth, totals: &payments::Totals) -> HealthRow {
    let (kommo, kommo_tone) = kommo_label(client.kommo.as_ref().map(|(h, _)| h.as_str()));
    let (flutterwave, flutterwave_tone) = flutterwave_label(client.flutterwave);
    let base = format!("/app/agencies/{agency}/clients/{}", client.id);
    let setup = ChecklistView::new(client.checklist, &base, client.paused.is_some());
    let (setup_label, setup_tone) = setup.status();
    HealthRow {
        setup,
        setup_label,
        setup_tone,
        links: links_line(totals),
        paid_ever: totals
            .paid
            .iter()
            .map(|(currency, (total, count))| paid_line(currency, *total, *count))
            .collect(),
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
            .map(|(currency, total, count)| paid_line(currency, *total, *count))
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
    page: &AgencyPage,
    done: Option<&str>,
    name: String,
    errors: FormErrors,
) -> Result<HomePage> {
    let AgencyPage { viewer, access, agency } = page;
    let agency = *agency;
    let chrome = Chrome::new(state, viewer, Some(agency), "clients").await?.with_notice(done);
    let totals = payments::totals(&state.db, access).await?;
    let none = payments::Totals::default();
    let clients = overview::clients(&state.db, &state.vault, access)
        .await?
        .into_iter()
        .map(|c| {
            let totals = totals.get(&c.id).unwrap_or(&none);
            row(agency, c, totals)
        })
        .collect();
    Ok(HomePage { chrome, clients, name, errors })
}

async fn home(State(state): State<AppState>, opened: AgencyPage, Query(done): Query<Done>) -> Response {
    page(
        home_page(&state, &opened, done.done.as_deref(), String::new(), FormErrors::none())
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
    PostedTo { page: opened, form }: PostedTo<AgencyPage, NewClient>,
) -> Response {
    let agency = opened.agency;
    match clients::create(&state.db, &state.vault, &state.public_url, &opened.access, &form.name).await {
        Ok((client, _)) => done(&format!("/app/agencies/{agency}/clients/{}", client.id), "client-created"),
        Err(error) => {
            let home = home_page(&state, &opened, None, form.name.clone(), FormErrors::none());
            refused(home, error, |home, errors| home.errors = errors).await
        }
    }
}
