//! Job attempts and the vendor calls each made (`job_attempts`): written by the queue worker
//! when an attempt ends, read by a timeline entry's detail.

use crate::ids::ClientId;
use crate::on_tx;

use super::{StoreError, Tx};

/// Attempts kept per job: a job retried for days keeps its latest ones.
pub const KEPT_PER_JOB: i64 = 12;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: uuid::Uuid,
    pub job_id: uuid::Uuid,
    pub attempt: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// done | retry | paused | dead | lost | abandoned
    pub ended: String,
    /// A JSON array of `telemetry::calls::Call`, already masked.
    pub calls: String,
    pub calls_dropped: i64,
}

/// Stores an attempt, and forgets the job's attempts beyond the newest [`KEPT_PER_JOB`].
pub async fn record(tx: &mut Tx, row: &AttemptRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO job_attempts (id, job_id, attempt, started_at, finished_at, ended, calls, calls_dropped) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.id)
    .bind(row.job_id)
    .bind(row.attempt)
    .bind(row.started_at)
    .bind(row.finished_at)
    .bind(&row.ended)
    .bind(&row.calls)
    .bind(row.calls_dropped)
    .execute(c)
    .await
    .map(drop))?;
    on_tx!(tx, c => sqlx::query(
        "DELETE FROM job_attempts WHERE job_id = $1 AND id NOT IN \
         (SELECT id FROM job_attempts WHERE job_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2)",
    )
    .bind(row.job_id)
    .bind(KEPT_PER_JOB)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
}

/// The client account's job's attempts, oldest first (another client's job has none).
pub async fn of_job(tx: &mut Tx, client: ClientId, job: uuid::Uuid) -> Result<Vec<AttemptRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT a.id, a.job_id, a.attempt, a.started_at, a.finished_at, a.ended, a.calls, a.calls_dropped \
         FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE a.job_id = $1 AND j.client_id = $2 \
         ORDER BY a.started_at, a.id",
    )
    .bind(job)
    .bind(client)
    .fetch_all(c)
    .await)?)
}

/// Deletes up to `limit` attempts that finished before `before` (ms), oldest first; returns how
/// many went.
pub async fn delete_before(tx: &mut Tx, before: i64, limit: i64) -> Result<u64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query(
        "DELETE FROM job_attempts WHERE id IN \
         (SELECT id FROM job_attempts WHERE finished_at < $1 ORDER BY finished_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}
