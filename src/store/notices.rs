//! Once-only notices on leads that belong to no one link (what is missing, a payment problem),
//! keyed by what they say: claimed, attempted, then marked posted.

use super::links::{Attempt, attempt_of};
use super::{StoreError, Tx};
use crate::ids::ClientId;
use crate::on_tx;

/// Claims a once-only notice. `true` if it was not claimed before (the caller posts it).
pub async fn claim(tx: &mut Tx, client: ClientId, key: &str) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "INSERT INTO lead_notices (client_id, notice_key) VALUES ($1, $2) ON CONFLICT (client_id, notice_key) DO NOTHING",
    )
    .bind(client)
    .bind(key)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Whether a claimed notice is still to be posted (a crash came between claim and post).
pub async fn pending(tx: &mut Tx, client: ClientId, key: &str) -> Result<bool, StoreError> {
    let posted: Option<Option<i64>> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT posted_at FROM lead_notices WHERE client_id = $1 AND notice_key = $2",
    )
    .bind(client)
    .bind(key)
    .fetch_optional(c)
    .await)?;
    Ok(matches!(posted, Some(None)))
}

pub async fn posted(tx: &mut Tx, client: ClientId, key: &str, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE lead_notices SET posted_at = $3 WHERE client_id = $1 AND notice_key = $2")
        .bind(client)
        .bind(key)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// A claimed notice is about to be sent as `text`: records it as the attempt unless one was
/// made before, and returns that earlier attempt if so (it may have reached Kommo).
pub async fn attempt(
    tx: &mut Tx,
    client: ClientId,
    key: &str,
    text: &str,
    now: i64,
) -> Result<Option<Attempt>, StoreError> {
    let earlier = on_tx!(tx, c => sqlx::query_as(
        "SELECT attempt, attempted_at FROM lead_notices WHERE client_id = $1 AND notice_key = $2",
    )
    .bind(client)
    .bind(key)
    .fetch_optional(c)
    .await)?;
    on_tx!(tx, c => sqlx::query(
        "UPDATE lead_notices SET attempt = $3, attempted_at = $4 \
         WHERE client_id = $1 AND notice_key = $2 AND attempt IS NULL",
    )
    .bind(client)
    .bind(key)
    .bind(text)
    .bind(now)
    .execute(c)
    .await
    .map(drop))?;
    Ok(attempt_of(earlier))
}
