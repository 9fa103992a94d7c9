//! `/api/v1/agencies/{agency}/clients/{client}/{activity,jobs,pipeline}`: what the pipeline did,
//! its jobs, and replaying the dead ones.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Result;
use crate::extract::ClientAccess;
use crate::ids::{AgencyId, ClientId, LeadId};
use crate::problem::Problem;
use crate::state::AppState;
use crate::store::activity::Filter;
use crate::tenants::activity::{self, ActivityEntry, JobView, PipelineStatus};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(activity))
        .routes(routes!(jobs))
        .routes(routes!(replay))
        .routes(routes!(status))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub lead_id: Option<i64>,
    /// Entries older than this entry id (for paging).
    #[param(value_type = Option<String>, format = Uuid)]
    pub before: Option<uuid::Uuid>,
    /// At most this many (1-500, default 100).
    pub limit: Option<u32>,
}

/// The client account's timeline, newest first.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/activity", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid), ActivityQuery),
    responses((status = 200, body = Vec<ActivityEntry>), (status = 404, body = Problem)))]
async fn activity(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Query(query): Query<ActivityQuery>,
) -> Result<Json<Vec<ActivityEntry>>> {
    let filter = Filter {
        kind: query.kind,
        outcome: query.outcome,
        lead_id: query.lead_id.map(LeadId),
        before: query.before,
    };
    let limit = i64::from(query.limit.unwrap_or(100));
    Ok(Json(activity::activity(&state.db, &access, client, &filter, limit).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this state, e.g. `dead`.
    pub state: Option<String>,
    pub limit: Option<u32>,
}

/// The client account's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/jobs", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid), JobsQuery),
    responses((status = 200, body = Vec<JobView>), (status = 404, body = Problem)))]
async fn jobs(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Vec<JobView>>> {
    let limit = i64::from(query.limit.unwrap_or(100));
    Ok(Json(activity::jobs(&state.db, &access, client, query.state.as_deref(), limit).await?))
}

/// Run a dead job again, with a fresh set of attempts (admins and owners).
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/clients/{client}/jobs/{job}/replay", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid),
           ("job" = String, Path, format = Uuid)),
    responses((status = 202), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn replay(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Path((_, _, job)): Path<(AgencyId, ClientId, uuid::Uuid)>,
) -> Result<axum::http::StatusCode> {
    activity::replay(&state.db, &state.queue, &access, client, job).await?;
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// Whether the pipeline runs for this client account, and its queue.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/pipeline", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = PipelineStatus), (status = 404, body = Problem)))]
async fn status(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
) -> Result<Json<PipelineStatus>> {
    Ok(Json(activity::status(&state.db, &access, client).await?))
}
