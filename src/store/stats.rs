//! Whole-system counts for the operator's gauges: the queue and the Kommo connections.

use super::{Db, StoreError};
use crate::on_db;

/// Jobs per state, with the creation time of the oldest.
pub async fn queue(db: &Db) -> Result<Vec<(String, i64, i64)>, StoreError> {
    Ok(on_db!(db, pool => sqlx::query_as(
        "SELECT state, COUNT(*), MIN(created_at) FROM jobs WHERE state <> $1 GROUP BY state",
    )
    .bind(super::jobs::JobState::Done)
    .fetch_all(pool)
    .await)?)
}

/// Kommo connections per health.
pub async fn connections(db: &Db) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(on_db!(db, pool => sqlx::query_as("SELECT health, COUNT(*) FROM kommo_connections GROUP BY health")
        .fetch_all(pool)
        .await)?)
}
