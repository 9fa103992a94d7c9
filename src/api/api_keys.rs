//! `/api/v1/agencies/{agency}/api-keys`: keys for automation.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::error::Result;
use crate::extract::{Admin, AgencyAccess, Person};
use crate::ids::{AgencyId, ApiKeyId};
use crate::problem::Problem;
use crate::roles::Role;
use crate::state::AppState;
use crate::tenants::api_keys::{self, ApiKeyView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_keys, create_key)).routes(routes!(revoke_key))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// `admin` (manage client accounts) or `member` (read only).
    pub role: Role,
}

/// The key itself is in `key`, shown this once. Send it as `Authorization: Bearer <key>`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyCreated {
    pub api_key: ApiKeyView,
    pub key: String,
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}/api-keys", tag = "api-keys",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<ApiKeyView>), (status = 404, body = Problem)))]
async fn list_keys(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<Vec<ApiKeyView>>> {
    Ok(Json(api_keys::list(&state.db, &access).await?))
}

/// Create an API key (admins and owners, logged in).
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/api-keys", tag = "api-keys",
    params(("agency" = String, Path, format = Uuid)), request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn create_key(
    State(state): State<AppState>,
    Person(Admin(AgencyAccess { access, .. })): Person<Admin<AgencyAccess>>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response> {
    let (api_key, key) = api_keys::create(&state.db, &access, &body.name, body.role).await?;
    Ok((StatusCode::CREATED, Json(KeyCreated { api_key, key: key.expose().to_owned() })).into_response())
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/agencies/{agency}/api-keys/{key}", tag = "api-keys",
    params(("agency" = String, Path, format = Uuid), ("key" = String, Path, format = Uuid)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_key(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
    Path((_, key)): Path<(AgencyId, ApiKeyId)>,
) -> Result<StatusCode> {
    api_keys::revoke(&state.db, &access, key).await?;
    Ok(StatusCode::NO_CONTENT)
}
