//! `/api/v1/agencies/{agency}/telemetry`: the agency's own OTLP export.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::error::Result;
use crate::extract::{Admin, AgencyAccess};
use crate::problem::Problem;
use crate::state::AppState;
use crate::tenants::telemetry::{self, TelemetryInput, TelemetryView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_telemetry, put_telemetry, delete_telemetry))
}

/// Where the agency's client accounts' spans are exported, besides the operator's collector.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/telemetry", tag = "telemetry",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = TelemetryView), (status = 404, body = Problem)))]
async fn get_telemetry(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<TelemetryView>> {
    Ok(Json(telemetry::get(&state.db, &state.vault, &access).await?))
}

/// Export the agency's spans to its own OTLP/HTTP endpoint (admins and owners).
#[utoipa::path(put, path = "/api/v1/agencies/{agency}/telemetry", tag = "telemetry",
    params(("agency" = String, Path, format = Uuid)), request_body = TelemetryInput,
    responses((status = 200, body = TelemetryView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn put_telemetry(
    State(state): State<AppState>,
    Admin(AgencyAccess { access, .. }): Admin<AgencyAccess>,
    ApiJson(input): ApiJson<TelemetryInput>,
) -> Result<Json<TelemetryView>> {
    let view =
        telemetry::set(&state.db, &state.vault, &access, input, state.config.telemetry_allow_private).await?;
    if let Some(routes) = crate::telemetry::agency_routes() {
        telemetry::sync(&state.db, &state.vault, &routes).await?;
    }
    Ok(Json(view))
}

/// Stop exporting to the agency's endpoint.
#[utoipa::path(delete, path = "/api/v1/agencies/{agency}/telemetry", tag = "telemetry",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_telemetry(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<StatusCode> {
    telemetry::delete(&state.db, &access).await?;
    if let Some(routes) = crate::telemetry::agency_routes() {
        telemetry::sync(&state.db, &state.vault, &routes).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
