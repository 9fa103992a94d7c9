//! Agencies' own OTLP endpoints.

use crate::ids::AgencyId;
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TelemetryRow {
    pub agency_id: AgencyId,
    pub endpoint: String,
    /// Sealed JSON object of header names to values.
    pub headers: Option<String>,
    pub updated_at: i64,
}

pub async fn put(tx: &mut Tx, row: &TelemetryRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO agency_telemetry (agency_id, endpoint, headers, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (agency_id) DO UPDATE SET endpoint = excluded.endpoint, headers = excluded.headers, \
         updated_at = excluded.updated_at",
    )
    .bind(row.agency_id)
    .bind(&row.endpoint)
    .bind(&row.headers)
    .bind(row.updated_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get(tx: &mut Tx, agency: AgencyId) -> Result<Option<TelemetryRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT agency_id, endpoint, headers, updated_at FROM agency_telemetry WHERE agency_id = $1",
    )
    .bind(agency)
    .fetch_optional(c)
    .await)?)
}

pub async fn all(tx: &mut Tx) -> Result<Vec<TelemetryRow>, StoreError> {
    Ok(
        on_tx!(tx, c => sqlx::query_as("SELECT agency_id, endpoint, headers, updated_at FROM agency_telemetry")
        .fetch_all(c)
        .await)?,
    )
}

pub async fn delete(tx: &mut Tx, agency: AgencyId) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query("DELETE FROM agency_telemetry WHERE agency_id = $1")
        .bind(agency)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn set_headers(tx: &mut Tx, agency: AgencyId, headers: &str) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE agency_telemetry SET headers = $2 WHERE agency_id = $1")
        .bind(agency)
        .bind(headers)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}
