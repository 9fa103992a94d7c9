//! `/api/v1/agencies/{agency}/clients/{client}/activity/{entry}`: one timeline entry in full,
//! and running its job again, over `tenants::entry`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::rfc3339;
use crate::error::Result;
use crate::extract::ClientAccess;
use crate::ids::{AgencyId, ClientId};
use crate::problem::Problem;
use crate::state::AppState;
use crate::tenants::activity::{ActivityEntry, JobView};
use crate::tenants::entry;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(detail)).routes(routes!(replay))
}

/// The webhook behind an entry, with secrets and personal data hidden.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// kommo or flutterwave.
    pub source: String,
    pub received_at: String,
    /// queued or ignored.
    pub outcome: String,
    pub detail: Option<String>,
    /// JSON pretty-printed, or a form one field a line; sensitive values read `[hidden]`.
    pub body: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntryDetail {
    pub entry: ActivityEntry,
    pub event: Option<EventView>,
    pub job: Option<JobView>,
    /// The job's timeline entries, oldest first.
    pub steps: Vec<ActivityEntry>,
}

/// One timeline entry in full: its webhook (masked), its job and the job's other steps.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/activity/{entry}", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid),
           ("entry" = String, Path, format = Uuid)),
    responses((status = 200, body = EntryDetail), (status = 404, body = Problem)))]
async fn detail(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Path((_, _, id)): Path<(AgencyId, ClientId, uuid::Uuid)>,
) -> Result<Json<EntryDetail>> {
    let found = entry::detail(&state.db, &access, client, id).await?;
    Ok(Json(EntryDetail {
        entry: ActivityEntry::from(found.entry),
        event: found.event.map(|e| EventView {
            source: e.source,
            received_at: rfc3339(e.received_at),
            outcome: e.outcome,
            detail: e.detail,
            body: e.body,
        }),
        job: found.job.map(|j| JobView {
            id: j.id,
            kind: j.kind,
            state: j.state.as_str().to_owned(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            last_error: j.last_error,
            run_at: rfc3339(j.run_at),
            created_at: rfc3339(j.created_at),
            created_at_ms: j.created_at,
        }),
        steps: found.steps.into_iter().map(ActivityEntry::from).collect(),
    }))
}

/// Run the entry's job again (admins and owners; audited): a dead one with fresh attempts, a
/// finished one as a new job with the same event. 409 while it still waits to run, or when
/// nothing ran for the entry.
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/clients/{client}/activity/{entry}/replay", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid),
           ("entry" = String, Path, format = Uuid)),
    responses((status = 202), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
async fn replay(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Path((_, _, id)): Path<(AgencyId, ClientId, uuid::Uuid)>,
) -> Result<StatusCode> {
    entry::replay(&state.db, &state.queue, &access, client, id).await?;
    Ok(StatusCode::ACCEPTED)
}
