//! `/api/v1/agencies/{agency}/alerts`: the agency's alert settings (mail to the owners, a
//! signed webhook), over `alerts::settings`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::alerts::settings;
use crate::error::Result;
use crate::extract::{AgencyAccess, Owner};
use crate::problem::Problem;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_alerts, put_alerts))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AlertsView {
    /// Whether alerts are mailed to the agency's owners.
    pub email_owners: bool,
    /// Where alerts are posted, signed with `Pipepay-Signature`.
    pub webhook_url: Option<String>,
    /// The webhook's new signing secret: shown in this answer only, when a new one was made
    /// (a new webhook URL, or `new_secret`). pipepay keeps it sealed and never shows it again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsInput {
    pub email_owners: bool,
    /// A public https:// address; null or empty for none.
    pub webhook_url: Option<String>,
    /// Make a new signing secret for the same webhook URL.
    #[serde(default)]
    pub new_secret: bool,
}

/// How the agency hears of client accounts that need a person.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/alerts", tag = "alerts",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = AlertsView), (status = 404, body = Problem)))]
async fn get_alerts(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<AlertsView>> {
    let current = settings::get(&state.db, &access).await?;
    Ok(Json(AlertsView {
        email_owners: current.email_owners,
        webhook_url: current.webhook_url,
        webhook_secret: None,
    }))
}

/// Change the alert settings (owners only; audited).
#[utoipa::path(put, path = "/api/v1/agencies/{agency}/alerts", tag = "alerts",
    params(("agency" = String, Path, format = Uuid)), request_body = AlertsInput,
    responses((status = 200, body = AlertsView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn put_alerts(
    State(state): State<AppState>,
    Owner(AgencyAccess { access, .. }): Owner<AgencyAccess>,
    ApiJson(input): ApiJson<AlertsInput>,
) -> Result<Json<AlertsView>> {
    let secret = settings::save(
        &state.db,
        &state.vault,
        &access,
        state.config.alert_allow_private,
        input.email_owners,
        input.webhook_url.as_deref().unwrap_or_default(),
        input.new_secret,
    )
    .await?;
    let saved = settings::get(&state.db, &access).await?;
    Ok(Json(AlertsView {
        email_owners: saved.email_owners,
        webhook_url: saved.webhook_url,
        webhook_secret: secret.map(|s| s.expose().to_owned()),
    }))
}
