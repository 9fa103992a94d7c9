//! `/api/v1/agencies/{agency}/clients/{client}/{activity,jobs,pipeline}`: what the pipeline did,
//! its jobs, and replaying the dead ones.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access;
use crate::auth::Principal;
use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::http::{AppState, Problem};
use crate::ids::{AgencyId, ClientId};
use crate::roles::Role;
use crate::store::{self, activity::Filter};
use crate::tenants::clients;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(activity))
        .routes(routes!(jobs))
        .routes(routes!(replay))
        .routes(routes!(status))
}

type ClientPath = Path<(AgencyId, ClientId)>;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActivityEntry {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub at: String,
    /// received, ignored, link_created, link_reused, link_disabled, note_posted, payment_verified,
    /// deal_closed, payment_rejected, payment_failed, failure, paused, dead.
    pub kind: String,
    /// ok, ignored or failed.
    pub outcome: String,
    pub lead_id: Option<i64>,
    pub tx_ref: Option<String>,
    pub detail: String,
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
    principal: Principal,
    path: ClientPath,
    Query(query): Query<ActivityQuery>,
) -> Result<Json<Vec<ActivityEntry>>> {
    let Path((agency, client)) = path;
    let access = access(&state, &principal, agency).await?;
    clients::get(&state.db, &access, client).await?;
    let filter =
        Filter { kind: query.kind, outcome: query.outcome, lead_id: query.lead_id, before: query.before };
    let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 500));
    let mut tx = state.db.read().await?;
    let rows = store::activity::list(&mut tx, client, &filter, limit).await?;
    tx.commit().await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ActivityEntry {
                id: r.id,
                at: rfc3339(r.at),
                kind: r.kind,
                outcome: r.outcome,
                lead_id: r.lead_id,
                tx_ref: r.tx_ref,
                detail: r.detail,
            })
            .collect(),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// lead, payment or reconcile.
    pub kind: String,
    /// ready, running, done, dead or paused.
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub run_at: String,
    pub created_at: String,
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
    principal: Principal,
    path: ClientPath,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Vec<JobView>>> {
    let Path((agency, client)) = path;
    let access = access(&state, &principal, agency).await?;
    clients::get(&state.db, &access, client).await?;
    let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 500));
    let mut tx = state.db.read().await?;
    let rows = store::jobs::list(&mut tx, client, query.state.as_deref(), limit).await?;
    tx.commit().await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| JobView {
                id: r.id,
                kind: r.kind,
                state: r.state,
                attempts: r.attempts,
                max_attempts: r.max_attempts,
                last_error: r.last_error,
                run_at: rfc3339(r.run_at),
                created_at: rfc3339(r.created_at),
            })
            .collect(),
    ))
}

/// Run a dead job again, with a fresh set of attempts (admins and owners).
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/clients/{client}/jobs/{job}/replay", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid),
           ("job" = String, Path, format = Uuid)),
    responses((status = 202), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    Path((agency, client, job)): Path<(AgencyId, ClientId, uuid::Uuid)>,
) -> Result<axum::http::StatusCode> {
    let access = access(&state, &principal, agency).await?;
    clients::get(&state.db, &access, client).await?;
    let mut tx = state.db.write().await?;
    // Looked up first so another client's job is a 404 for everyone.
    let found = store::jobs::state_of(&mut tx, client, job).await?.ok_or(Error::NotFound)?;
    access.require(Role::Admin)?;
    if found != store::jobs::state::DEAD || !store::jobs::replay(&mut tx, client, job, now_ms()).await? {
        return Err(Error::conflict("job", format!("only a dead job can be replayed; this one is {found}")));
    }
    crate::tenants::audit::record(
        &mut tx,
        &access,
        Some(client),
        "job.replayed",
        serde_json::json!({ "job": job }),
    )
    .await?;
    tx.commit().await?;
    state.queue.wake();
    Ok(axum::http::StatusCode::ACCEPTED)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PipelineStatus {
    /// Why the client account's jobs wait for a person, if they do.
    pub paused: Option<Paused>,
    /// Job counts by state.
    #[schema(value_type = Object)]
    pub jobs: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Paused {
    pub reason: String,
    pub since: String,
}

/// Whether the pipeline runs for this client account, and its queue.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/pipeline", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    responses((status = 200, body = PipelineStatus), (status = 404, body = Problem)))]
async fn status(
    State(state): State<AppState>,
    principal: Principal,
    path: ClientPath,
) -> Result<Json<PipelineStatus>> {
    let Path((agency, client)) = path;
    let access = access(&state, &principal, agency).await?;
    clients::get(&state.db, &access, client).await?;
    let mut tx = state.db.read().await?;
    let paused = store::jobs::pause_reason(&mut tx, client).await?;
    let counts = store::jobs::counts(&mut tx, client).await?;
    tx.commit().await?;
    Ok(Json(PipelineStatus {
        paused: paused.map(|(reason, since)| Paused { reason, since: rfc3339(since) }),
        jobs: counts.into_iter().map(|(state, n)| (state, serde_json::Value::from(n))).collect(),
    }))
}
