//! `/api/v1/agencies/{agency}/clients`: client accounts, their settings, tokens and keys.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::error::{Error, Result};
use crate::extract::{Admin, AgencyAccess, ClientAccess};
use crate::problem::Problem;
use crate::state::AppState;
use crate::tenants::clients::{self, ClientView, WebhookUrls};
use crate::tenants::flutterwave_keys::{self, KeysInput, KeysView};
use crate::tenants::settings::ClientSettings;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clients, create_client))
        .routes(routes!(get_client, delete_client))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(rotate_token))
        .routes(routes!(webhook_urls))
        .routes(routes!(get_flutterwave_keys, put_flutterwave_keys))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    pub name: String,
}

/// The ingress token is shown here once; only its hash is kept. Paste the webhook URLs into
/// Kommo and Flutterwave now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientCreated {
    pub client: ClientView,
    pub ingress_token: String,
    pub webhook_urls: WebhookUrls,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenRotated {
    pub ingress_token: String,
    pub webhook_urls: WebhookUrls,
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients", tag = "clients",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<ClientView>), (status = 404, body = Problem)))]
async fn list_clients(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<Vec<ClientView>>> {
    Ok(Json(clients::list(&state.db, &access).await?))
}

/// Add a client account (admins and owners).
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/clients", tag = "clients",
    params(("agency" = String, Path, format = Uuid)), request_body = CreateClient,
    responses((status = 201, body = ClientCreated), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn create_client(
    State(state): State<AppState>,
    Admin(AgencyAccess { access, .. }): Admin<AgencyAccess>,
    ApiJson(body): ApiJson<CreateClient>,
) -> Result<Response> {
    let (client, issued) =
        clients::create(&state.db, &state.vault, &state.public_url, &access, &body.name).await?;
    let created = ClientCreated {
        client,
        ingress_token: issued.token.expose().to_owned(),
        webhook_urls: issued.webhook_urls,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = ClientView), (status = 404, body = Problem)))]
async fn get_client(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<ClientView>> {
    Ok(Json(clients::get(&state.db, &access, client).await?))
}

/// Go ahead with a removal even when Kommo cannot take the webhook off.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Force {
    /// `true`: remove anyway, and delete the webhook in Kommo by hand.
    #[serde(default)]
    pub force: bool,
}

/// Delete a client account. Its Kommo webhook is removed first; if Kommo cannot be reached the
/// answer is a 502 naming `force` and nothing is deleted. Its data key is destroyed with it, so
/// its secrets are gone for good.
#[utoipa::path(delete, path = "/api/v1/agencies/{agency}/clients/{client}", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid), Force),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 502, body = Problem)))]
async fn delete_client(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Query(Force { force }): Query<Force>,
) -> Result<StatusCode> {
    crate::actions::delete_client(&state, &access, client, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/settings", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = ClientSettings), (status = 404, body = Problem)))]
async fn get_settings(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<ClientSettings>> {
    Ok(Json(clients::get(&state.db, &access, client).await?.settings))
}

/// Replace the settings document. Every invalid field is named in the answer; nothing is saved
/// unless all of it is valid.
#[utoipa::path(put, path = "/api/v1/agencies/{agency}/clients/{client}/settings", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    request_body = ClientSettings,
    responses((status = 200, body = ClientSettings), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn put_settings(
    State(state): State<AppState>,
    Admin(ClientAccess { access, client, .. }): Admin<ClientAccess>,
    ApiJson(settings): ApiJson<ClientSettings>,
) -> Result<Json<ClientSettings>> {
    Ok(Json(crate::actions::update_settings(&state, &access, client, settings).await?.settings))
}

/// Issue a new ingress token. The old one stops working at once: update both webhook URLs.
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/clients/{client}/ingress-token", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = TokenRotated), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn rotate_token(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<TokenRotated>> {
    let issued = crate::actions::rotate_ingress_token(&state, &access, client).await?;
    Ok(Json(TokenRotated {
        ingress_token: issued.token.expose().to_owned(),
        webhook_urls: issued.webhook_urls,
    }))
}

/// The two webhook URLs to paste into Kommo and Flutterwave (admins and owners).
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/webhook-urls", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = WebhookUrls), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn webhook_urls(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<WebhookUrls>> {
    Ok(Json(
        clients::current_webhook_urls(&state.db, &state.vault, &state.public_url, &access, client).await?,
    ))
}

/// The Flutterwave keys, masked to their last four characters.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/flutterwave-keys", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = KeysView), (status = 404, body = Problem)))]
async fn get_flutterwave_keys(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<KeysView>> {
    flutterwave_keys::get(&state.db, &state.vault, &access, client).await?.map(Json).ok_or(Error::NotFound)
}

/// Set or replace the Flutterwave keys (admins and owners). Sealed at once; shown masked.
#[utoipa::path(put, path = "/api/v1/agencies/{agency}/clients/{client}/flutterwave-keys", tag = "clients",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    request_body = KeysInput,
    responses((status = 200, body = KeysView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn put_flutterwave_keys(
    State(state): State<AppState>,
    Admin(ClientAccess { access, client, .. }): Admin<ClientAccess>,
    ApiJson(input): ApiJson<KeysInput>,
) -> Result<Json<KeysView>> {
    Ok(Json(crate::actions::set_flutterwave_keys(&state, &access, client, input).await?))
}
