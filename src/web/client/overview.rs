//! A client account's overview: its Kommo connection, its Flutterwave keys, the webhook URLs
//! to paste into both, and the changes that go with them (connect, disconnect, keys, a new
//! ingress token, deleting the account).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ClientHead, NoFields, Opened, open, refused_or_again};
use crate::connections::{self, ConnectionView, ManualSetup};
use crate::error::{Error, Result};
use crate::kommo::health;
use crate::state::AppState;
use crate::tenants::clients::{self, WebhookUrls};
use crate::tenants::flutterwave_keys::{self, Dashboard, KeysInput, KeysView};
use crate::tenants::overview::Drivers;
use crate::tenants::{activity, test_event};
use crate::vault::Secret;
use crate::web::Page;
use crate::web::access::{ClientPage, PostedTo};
use crate::web::agency::{ChecklistView, flutterwave_label, kommo_label};
use crate::web::session::Viewer;
use crate::web::view::{Chrome, Done, FormErrors, done, page as render};

/// The Kommo connection, worded for people.
pub struct KommoStatus {
    pub label: &'static str,
    pub tone: &'static str,
    pub reason: Option<String>,
    pub subdomain: String,
    pub account_name: String,
    pub host: String,
    pub connected_at: crate::web::view::Time,
    pub subscribed: bool,
    pub webhook_detail: Option<String>,
    /// Steps to add the webhook by hand, when Kommo refused the subscription.
    pub manual: Option<ManualSetup>,
}

impl From<ConnectionView> for KommoStatus {
    fn from(view: ConnectionView) -> KommoStatus {
        let (label, tone) = kommo_label(Some(view.health.as_str()));
        KommoStatus {
            label,
            tone,
            reason: view.health_reason,
            subdomain: view.subdomain,
            account_name: view.account_name,
            host: view.host,
            connected_at: crate::web::view::Time::from_rfc3339(&view.connected_at),
            subscribed: view.webhook.status == connections::webhook::SUBSCRIBED,
            webhook_detail: view.webhook.detail,
            manual: view.webhook.manual_setup,
        }
    }
}

#[derive(Template)]
#[template(path = "client_overview.html")]
pub struct OverviewPage {
    chrome: Chrome,
    client: ClientHead,
    kommo: Option<KommoStatus>,
    /// The connect button's words, when connecting (again) would help.
    connect_label: Option<&'static str>,
    /// Why Kommo cannot be connected on this instance at all (the operator's settings).
    kommo_not_configured: Option<&'static str>,
    keys: Option<KeysView>,
    keys_label: &'static str,
    keys_tone: &'static str,
    /// Right after saving keys: what to set in Flutterwave's dashboard (with a generated
    /// secret hash, shown this once).
    saved: Option<Dashboard>,
    /// Admins only: the URLs carry the ingress token.
    urls: Option<WebhookUrls>,
    errors: FormErrors,
    setup: ChecklistView,
    setup_label: &'static str,
    setup_tone: &'static str,
    /// What "Send a test event" showed, right after it was sent.
    tested: Option<Vec<test_event::Check>>,
    /// Which of the trigger stages and the Digital Pipeline action drive this client account.
    drivers: String,
}

/// [`Drivers`] in a sentence for the overview.
fn drivers_words(drivers: Drivers) -> String {
    let last = crate::web::view::when;
    match (drivers.trigger, drivers.digital_pipeline) {
        (true, Some(at)) => format!(
            "both: trigger stages are set in Settings, and Kommo's Digital Pipeline action last asked for a link at {}.",
            last(at)
        ),
        (true, None) => {
            "pipepay's trigger stages. No call from Kommo's Digital Pipeline action has arrived.".to_owned()
        }
        (false, Some(at)) => format!(
            "Kommo's Digital Pipeline action (last call at {}). No trigger stage is set in Settings.",
            last(at)
        ),
        (false, None) => {
            "nothing yet: choose a trigger stage in Settings, or add the action to a stage in Kommo."
                .to_owned()
        }
    }
}

fn connect_label(kommo: Option<&KommoStatus>, health: Option<&str>) -> Option<&'static str> {
    match (kommo, health) {
        (None, _) => Some("Connect Kommo"),
        (Some(_), Some(health::NEEDS_REAUTH | health::REVOKED)) => Some("Reconnect Kommo"),
        _ => None,
    }
}

async fn overview(state: &AppState, page: &ClientPage, done: Option<&str>) -> Result<OverviewPage> {
    let client = page.client;
    let Opened { access, chrome, head, .. } = open(state, page, "overview", done).await?;
    let connection = match connections::status(&state.kommo, &access, client).await {
        Ok(view) => Some(view),
        // The client account exists (checked above): not found means not connected.
        Err(Error::NotFound) => None,
        Err(error) => return Err(error),
    };
    let health = connection.as_ref().map(|c| c.health.clone());
    let kommo = connection.map(KommoStatus::from);
    let keys = flutterwave_keys::get(&state.db, &state.vault, &access, client).await?;
    let (keys_label, keys_tone) = flutterwave_label(keys.as_ref().map(|k| k.mode));
    let urls = if chrome.is_admin() {
        Some(
            clients::current_webhook_urls(&state.db, &state.vault, &state.public_url, &access, client)
                .await?,
        )
    } else {
        None
    };
    let checklist = crate::tenants::overview::checklist(&state.db, &state.vault, &access, client).await?;
    let paused = activity::status(&state.db, &access, client).await?.paused.is_some();
    let setup = ChecklistView::new(checklist, &head.base, paused);
    let (setup_label, setup_tone) = setup.status();
    let kommo_not_configured =
        (!connections::configured(&state.kommo)).then_some(connections::NOT_CONFIGURED);
    let drivers = drivers_words(crate::tenants::overview::drivers(&state.db, &access, client).await?);
    Ok(OverviewPage {
        drivers,
        setup,
        setup_label,
        setup_tone,
        tested: None,
        connect_label: connect_label(kommo.as_ref(), health.as_deref())
            .filter(|_| kommo_not_configured.is_none()),
        kommo_not_configured,
        chrome,
        client: head,
        kommo,
        keys,
        keys_label,
        keys_tone,
        saved: None,
        urls,
        errors: FormErrors::none(),
    })
}

/// The connect form ends on Kommo's consent page, another origin the page policy must allow.
fn render_page(state: &AppState, status: StatusCode, page: &OverviewPage) -> Page {
    Page::render(status, page)
        .allow_form_target(&state.kommo.settings.auth_url.origin().ascii_serialization())
}

pub async fn page(State(state): State<AppState>, page: ClientPage, Query(done): Query<Done>) -> Response {
    render(
        overview(&state, &page, done.done.as_deref()).await.map(|p| render_page(&state, StatusCode::OK, &p)),
    )
}

pub async fn connect_kommo(
    State(state): State<AppState>,
    PostedTo { page, .. }: PostedTo<ClientPage, NoFields>,
) -> Response {
    match connections::start(&state.kommo, &page.access, page.viewer.session, page.client).await {
        Ok(consent) => {
            let mut headers = HeaderMap::new();
            if let Ok(value) = consent.as_str().parse() {
                headers.insert(header::LOCATION, value);
            }
            (StatusCode::SEE_OTHER, headers).into_response()
        }
        Err(error) => crate::web::error_page(error).into_response(),
    }
}

/// A removal form: `force` is set by the "anyway" button shown when Kommo could not take the
/// webhook off.
#[derive(Deserialize)]
pub struct RemovalForm {
    #[serde(default)]
    force: Option<String>,
}

impl RemovalForm {
    fn force(&self) -> bool {
        matches!(self.force.as_deref(), Some("true" | "1" | "on"))
    }
}

/// Kommo could not take the webhook off: says so, and offers to try again or go ahead anyway.
#[derive(Template)]
#[template(path = "client_force.html")]
struct ForcePage {
    title: &'static str,
    message: String,
    action: String,
    again_label: &'static str,
    anyway_label: &'static str,
    back: String,
    csrf: String,
}

/// The removal's answer as a page: done, the "anyway" page, or the error.
fn removal_answer(
    result: Result<()>,
    viewer: &Viewer,
    back: String,
    action: String,
    labels: (&'static str, &'static str, &'static str),
    done_at: (&str, &str),
) -> Response {
    match result {
        Ok(()) => done(done_at.0, done_at.1),
        Err(Error::Upstream { field: Some(connections::FORCE), message }) => {
            let (title, again_label, anyway_label) = labels;
            let page = ForcePage {
                title,
                message,
                action,
                again_label,
                anyway_label,
                back,
                csrf: viewer.csrf.clone(),
            };
            Page::render(StatusCode::BAD_GATEWAY, &page).into_response()
        }
        Err(error) => crate::web::error_page(error).into_response(),
    }
}

pub async fn disconnect_kommo(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<ClientPage, RemovalForm>,
) -> Response {
    let ClientPage { viewer, access, agency, client } = page;
    let result = crate::actions::disconnect_kommo(&state, &access, client, form.force()).await;
    let base = format!("/app/agencies/{agency}/clients/{client}");
    removal_answer(
        result,
        &viewer,
        base.clone(),
        format!("{base}/kommo/disconnect"),
        ("Kommo could not be reached", "Try disconnecting again", "Disconnect anyway"),
        (&base, "kommo-disconnected"),
    )
}

/// Only what a person may see again: secrets typed into the form are never sent back.
#[derive(Deserialize)]
pub struct KeysForm {
    #[serde(default)]
    secret_key: String,
    #[serde(default)]
    webhook_hash: String,
    #[serde(default)]
    public_key: String,
}

impl KeysForm {
    fn input(self) -> KeysInput {
        let optional = |value: String| (!value.trim().is_empty()).then(|| Secret::new(value));
        KeysInput {
            secret_key: Secret::new(self.secret_key),
            webhook_hash: optional(self.webhook_hash),
            public_key: optional(self.public_key),
        }
    }
}

pub async fn save_keys(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<ClientPage, KeysForm>,
) -> Response {
    let saved = crate::actions::set_flutterwave_keys(&state, &page.access, page.client, form.input()).await;
    let page = overview(&state, &page, None).await;
    match (saved, page) {
        (_, Err(error)) => crate::web::error_page(error).into_response(),
        // Rendered here rather than redirected: a generated secret hash is shown only now.
        (Ok(keys), Ok(mut page)) => {
            page.saved = keys.dashboard;
            page.chrome = page.chrome.with_notice(Some("keys-saved"));
            render_page(&state, StatusCode::OK, &page).into_response()
        }
        (Err(error), Ok(mut page)) => refused_or_again(error, |status, errors| {
            page.errors = errors;
            render_page(&state, status, &page)
        }),
    }
}

pub async fn rotate_token(
    State(state): State<AppState>,
    PostedTo { page, .. }: PostedTo<ClientPage, NoFields>,
) -> Response {
    let ClientPage { access, agency, client, .. } = page;
    match crate::actions::rotate_ingress_token(&state, &access, client).await.map(drop) {
        Ok(()) => done(&format!("/app/agencies/{agency}/clients/{client}"), "token-rotated"),
        Err(error) => crate::web::error_page(error).into_response(),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<ClientPage, RemovalForm>,
) -> Response {
    let ClientPage { viewer, access, agency, client } = page;
    let deleted = crate::actions::delete_client(&state, &access, client, form.force()).await;
    let base = format!("/app/agencies/{agency}/clients/{client}");
    removal_answer(
        deleted,
        &viewer,
        base.clone(),
        format!("{base}/delete"),
        ("Kommo could not be reached", "Try deleting again", "Delete anyway"),
        (&format!("/app/agencies/{agency}"), "client-deleted"),
    )
}

/// Sends a test webhook to each of the client account's addresses and shows what came back.
pub async fn send_test_event(
    State(state): State<AppState>,
    PostedTo { page, .. }: PostedTo<ClientPage, NoFields>,
) -> Response {
    let sent = test_event::send(&state.db, &state.vault, &state.public_url, &page.access, page.client).await;
    match (sent, overview(&state, &page, None).await) {
        (Ok(checks), Ok(mut page)) => {
            page.tested = Some(checks);
            render_page(&state, StatusCode::OK, &page).into_response()
        }
        (Err(error), _) | (_, Err(error)) => crate::web::error_page(error).into_response(),
    }
}
