//! Webhooks as received, deduplicated per client account.

use crate::ids::ClientId;
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: uuid::Uuid,
    pub client: ClientId,
    pub source: &'a str,
    pub dedup_key: &'a str,
    pub payload: &'a str,
    pub received_at: i64,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// Stores the event unless one with the same key was stored before; `false` for a duplicate.
pub async fn insert(tx: &mut Tx, event: &NewEvent<'_>) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "INSERT INTO inbound_events (id, client_id, source, dedup_key, payload, received_at, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (client_id, dedup_key) DO NOTHING",
    )
    .bind(event.id)
    .bind(event.client)
    .bind(event.source)
    .bind(event.dedup_key)
    .bind(event.payload)
    .bind(event.received_at)
    .bind(event.outcome)
    .bind(event.detail)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// The id of the event stored under `dedup_key`: the original a duplicate repeats.
pub async fn id_by_dedup(
    tx: &mut Tx,
    client: ClientId,
    dedup_key: &str,
) -> Result<Option<uuid::Uuid>, StoreError> {
    Ok(
        on_tx!(tx, c => sqlx::query_scalar("SELECT id FROM inbound_events WHERE client_id = $1 AND dedup_key = $2")
        .bind(client)
        .bind(dedup_key)
        .fetch_optional(c)
        .await)?,
    )
}

/// Whether the token hash still belongs to the client: checked in the transaction that stores
/// a webhook, so a rotated or deleted token stops working at once, whatever any cache says.
pub async fn token_is_current(tx: &mut Tx, client: ClientId, token_hash: &[u8]) -> Result<bool, StoreError> {
    let found: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT CAST(1 AS BIGINT) FROM clients WHERE id = $1 AND ingress_token_hash = $2",
    )
    .bind(client)
    .bind(token_hash)
    .fetch_optional(c)
    .await)?;
    Ok(found.is_some())
}
