//! `/api/v1/agencies/{agency}/clients/{client}/kommo`: connecting Kommo and what it reports.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::clients::Force;
use crate::auth::Principal;
use crate::connections::{self, ConnectionView};
use crate::error::{Error, Result};
use crate::extract::ClientAccess;
use crate::kommo::model::{CustomField, Pipeline};
use crate::problem::Problem;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_connection, disconnect))
        .routes(routes!(start_connect))
        .routes(routes!(pipelines))
        .routes(routes!(lead_fields))
}

/// Where to send the browser to give pipepay access in Kommo.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectStarted {
    /// Kommo's consent page; the single-use state in it expires in 10 minutes.
    pub authorize_url: String,
}

/// The Kommo connection: account, health and webhook subscription.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/kommo", tag = "kommo",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = ConnectionView), (status = 404, body = Problem)))]
async fn get_connection(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<ConnectionView>> {
    Ok(Json(connections::status(&state.kommo, &access, client).await?))
}

/// Start connecting (or reconnecting) Kommo. Needs a logged-in admin: the consent happens in
/// the browser and comes back to this session.
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/clients/{client}/kommo/connect", tag = "kommo",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = ConnectStarted), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 502, body = Problem),
              (status = 503, body = Problem, description = "Kommo is not configured on this pipepay (urn:pipepay:problem:kommo-not-configured)")))]
async fn start_connect(
    State(state): State<AppState>,
    ClientAccess { principal, access, client }: ClientAccess,
) -> Result<Json<ConnectStarted>> {
    // Another agency's client account is a 404 before anything else is said about it.
    crate::tenants::clients::get(&state.db, &access, client).await?;
    let Principal::User { session, .. } = principal else {
        return Err(Error::Forbidden("connecting Kommo needs a person in a browser; log in to pipepay"));
    };
    let url = connections::start(&state.kommo, &access, session, client).await?;
    Ok(Json(ConnectStarted { authorize_url: url.to_string() }))
}

/// Disconnect Kommo: the webhook subscription is removed and the tokens forgotten. If Kommo
/// cannot take the webhook off, the answer is a 502 naming `force` and nothing changes.
#[utoipa::path(delete, path = "/api/v1/agencies/{agency}/clients/{client}/kommo", tag = "kommo",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid), Force),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 502, body = Problem)))]
async fn disconnect(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Query(Force { force }): Query<Force>,
) -> Result<StatusCode> {
    crate::actions::disconnect_kommo(&state, &access, client, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The Kommo account's pipelines and their stages, to pick the trigger and won stages from.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/kommo/pipelines", tag = "kommo",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<Pipeline>), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 502, body = Problem)))]
async fn pipelines(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<Vec<Pipeline>>> {
    crate::tenants::clients::get(&state.db, &access, client).await?;
    Ok(Json(state.kommo.pipelines(client).await?))
}

/// The Kommo account's lead custom fields, to pick the currency and link fields from.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/kommo/lead-fields", tag = "kommo",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<CustomField>), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 502, body = Problem)))]
async fn lead_fields(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<Vec<CustomField>>> {
    crate::tenants::clients::get(&state.db, &access, client).await?;
    Ok(Json(state.kommo.lead_fields(client).await?))
}
