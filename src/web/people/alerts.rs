//! The agency's alerts: where they go (owners' mail, a signed webhook), its incidents, and the
//! outbox of its own mail and webhook calls.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::alerts::settings;
use crate::error::Result;
use crate::roles::Role;
use crate::state::AppState;
use crate::store::outbox::OutboxRow;
use crate::web::Page;
use crate::web::access::{AgencyPage, PostedTo};
use crate::web::view::{Chrome, Done, FormErrors, done, page as render, refused as refused_page, when};

/// One mail or webhook call, as the outbox lists show it.
pub struct MessageRow {
    pub subject: String,
    pub channel: String,
    pub recipient: String,
    pub created: String,
    pub state: String,
    pub error: Option<String>,
    pub body: String,
}

impl From<OutboxRow> for MessageRow {
    fn from(row: OutboxRow) -> MessageRow {
        MessageRow {
            subject: row.subject,
            channel: row.channel,
            recipient: row.recipient,
            created: when(row.created_at),
            state: row.state,
            error: row.last_error,
            body: row.body,
        }
    }
}

pub struct IncidentRow {
    pub client: String,
    pub detail: String,
    pub opened: String,
    pub closed: String,
}

#[derive(Template)]
#[template(path = "people_alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    is_owner: bool,
    email_owners: bool,
    webhook_url: String,
    has_webhook: bool,
    secret: Option<String>,
    quiet_days: u64,
    incidents: Vec<IncidentRow>,
    messages: Vec<MessageRow>,
    mail_configured: bool,
    errors: FormErrors,
}

async fn view(state: &AppState, page: &AgencyPage, done: Option<&str>) -> Result<AlertsPage> {
    let AgencyPage { viewer, access, agency } = page;
    let agency = *agency;
    let chrome = Chrome::new(state, viewer, Some(agency), "alerts").await?.with_notice(done);
    let current = settings::get(&state.db, access).await?;
    let is_owner = access.role >= Role::Owner;
    let names: Vec<(crate::ids::ClientId, String)> = {
        let mut tx = state.db.read().await?;
        let clients = crate::store::clients::list(&mut tx, agency).await?;
        tx.commit().await?;
        clients.into_iter().map(|c| (c.id, c.name)).collect()
    };
    let incidents = settings::incidents(&state.db, access)
        .await?
        .into_iter()
        .map(|i| IncidentRow {
            client: names
                .iter()
                .find(|(id, _)| *id == i.client_id)
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            detail: i.detail,
            opened: when(i.opened_at),
            closed: i.closed_at.map(when).unwrap_or_else(|| "not yet".into()),
        })
        .collect();
    let messages = if is_owner {
        settings::outbox(&state.db, access).await?.into_iter().map(MessageRow::from).collect()
    } else {
        Vec::new()
    };
    Ok(AlertsPage {
        chrome,
        is_owner,
        email_owners: current.email_owners,
        has_webhook: current.webhook_url.is_some(),
        webhook_url: current.webhook_url.unwrap_or_default(),
        secret: None,
        quiet_days: state.config.alert_quiet_days,
        incidents,
        messages,
        mail_configured: state.config.smtp_url.is_some(),
        errors: FormErrors::none(),
    })
}

pub async fn page(State(state): State<AppState>, page: AgencyPage, Query(done): Query<Done>) -> Response {
    render(view(&state, &page, done.done.as_deref()).await.map(|p| Page::render(StatusCode::OK, &p)))
}

#[derive(Deserialize)]
pub struct AlertsForm {
    email_owners: Option<String>,
    #[serde(default)]
    webhook_url: String,
    new_secret: Option<String>,
}

pub async fn save(
    State(state): State<AppState>,
    PostedTo { page, form }: PostedTo<AgencyPage, AlertsForm>,
) -> Response {
    let agency = page.agency;
    let saved = settings::save(
        &state.db,
        &state.vault,
        &page.access,
        state.config.alert_allow_private,
        form.email_owners.is_some(),
        &form.webhook_url,
        form.new_secret.is_some(),
    )
    .await;
    match saved {
        // A new secret is shown on this answer only: nothing stores it readable.
        Ok(Some(secret)) => render(view(&state, &page, Some("alerts-saved")).await.map(|mut p| {
            p.secret = Some(secret.expose().to_owned());
            Page::render(StatusCode::OK, &p)
        })),
        Ok(None) => done(&format!("/app/agencies/{agency}/alerts"), "alerts-saved"),
        Err(error) => {
            let url = form.webhook_url.clone();
            refused_page(view(&state, &page, None), error, |shown, errors| {
                shown.webhook_url = url;
                shown.errors = errors;
            })
            .await
        }
    }
}
