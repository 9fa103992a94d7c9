//! What one timeline entry is about: its job, the webhook that caused it, and the other entries
//! of the same job. Read-only lookups, always within one client account.

use crate::ids::ClientId;
use crate::on_tx;

use super::activity::ActivityRow;
use super::jobs::JobRow;
use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: uuid::Uuid,
    pub source: String,
    /// As received (for an ignored one, perhaps only its start: `store::events`).
    pub payload: String,
    pub received_at: i64,
    pub outcome: String,
    pub detail: Option<String>,
}

pub async fn entry(tx: &mut Tx, client: ClientId, id: uuid::Uuid) -> Result<Option<ActivityRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail FROM activity \
         WHERE client_id = $1 AND id = $2",
    )
    .bind(client)
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// The job's entries, oldest first.
pub async fn entries_of_job(
    tx: &mut Tx,
    client: ClientId,
    job: uuid::Uuid,
) -> Result<Vec<ActivityRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail FROM activity \
         WHERE client_id = $1 AND job_id = $2 ORDER BY id LIMIT 200",
    )
    .bind(client)
    .bind(job)
    .fetch_all(c)
    .await)?)
}

/// Every column of `JobRow`, in order.
macro_rules! job_columns {
    () => {
        "id, client_id, kind, event_id, payload, state, attempts, max_attempts, run_at, last_error, trace, \
         created_at, updated_at"
    };
}

pub async fn job(tx: &mut Tx, client: ClientId, id: uuid::Uuid) -> Result<Option<JobRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", job_columns!(), " FROM jobs WHERE client_id = $1 AND id = $2"),
    )
    .bind(client)
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// The latest job the event caused (a replay adds another).
pub async fn job_of_event(
    tx: &mut Tx,
    client: ClientId,
    event: uuid::Uuid,
) -> Result<Option<JobRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", job_columns!(), " FROM jobs WHERE client_id = $1 AND event_id = $2 \
         ORDER BY created_at DESC, id DESC LIMIT 1"),
    )
    .bind(client)
    .bind(event)
    .fetch_optional(c)
    .await)?)
}

pub async fn event(tx: &mut Tx, client: ClientId, id: uuid::Uuid) -> Result<Option<EventRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, source, payload, received_at, outcome, detail FROM inbound_events WHERE client_id = $1 AND id = $2",
    )
    .bind(client)
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// Events received at exactly `at` (ms): the ingress writes an event and its timeline entry
/// with the same clock reading, and the entry does not name the event.
pub async fn events_at(tx: &mut Tx, client: ClientId, at: i64) -> Result<Vec<EventRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, source, payload, received_at, outcome, detail FROM inbound_events \
         WHERE client_id = $1 AND received_at = $2 ORDER BY id LIMIT 100",
    )
    .bind(client)
    .bind(at)
    .fetch_all(c)
    .await)?)
}
