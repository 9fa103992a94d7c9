//! Agency API keys, stored only as hashes.

use crate::ids::{AgencyId, ApiKeyId, UserId};
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: ApiKeyId,
    pub agency_id: AgencyId,
    pub name: String,
    pub role: String,
    /// The first characters of the key, enough to recognise it in a list, never to use it.
    pub prefix: String,
    pub created_by: Option<UserId>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Last-use stamps are written at most this often per key, so busy automation does not turn
/// every read into a write.
const TOUCH_EVERY_MS: i64 = 60_000;

pub async fn insert(tx: &mut Tx, row: &ApiKeyRow, key_hash: &[u8]) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO api_keys (id, agency_id, name, role, prefix, key_hash, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.id)
    .bind(row.agency_id)
    .bind(&row.name)
    .bind(&row.role)
    .bind(&row.prefix)
    .bind(key_hash)
    .bind(row.created_by)
    .bind(row.created_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn list(tx: &mut Tx, agency: AgencyId) -> Result<Vec<ApiKeyRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, name, role, prefix, created_by, created_at, last_used_at, revoked_at \
         FROM api_keys WHERE agency_id = $1 ORDER BY created_at, id",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// The live (unrevoked) key with this hash.
pub async fn by_hash(tx: &mut Tx, key_hash: &[u8]) -> Result<Option<ApiKeyRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, name, role, prefix, created_by, created_at, last_used_at, revoked_at \
         FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(c)
    .await)?)
}

pub async fn revoke(tx: &mut Tx, agency: AgencyId, id: ApiKeyId, now: i64) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE api_keys SET revoked_at = $3 WHERE agency_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(agency)
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn touch(tx: &mut Tx, id: ApiKeyId, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
    )
    .bind(id)
    .bind(now)
    .bind(now - TOUCH_EVERY_MS)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
