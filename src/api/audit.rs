//! `/api/v1/agencies/{agency}/audit`: who did what, newest first.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Result;
use crate::extract::AgencyAccess;
use crate::ids::{AuditId, ClientId};
use crate::problem::Problem;
use crate::state::AppState;
use crate::tenants::audit::{self, AuditEntry};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries about this client account.
    #[param(value_type = Option<String>, format = Uuid)]
    pub client_id: Option<ClientId>,
    /// Entries older than this entry id (for paging).
    #[param(value_type = Option<String>, format = Uuid)]
    pub before: Option<AuditId>,
    /// At most this many (1-500, default 100).
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}/audit", tag = "audit",
    params(("agency" = String, Path, format = Uuid), AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn list_audit(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>> {
    let entries =
        audit::list(&state.db, &access, query.client_id, query.before, query.limit.unwrap_or(100)).await?;
    Ok(Json(entries))
}
