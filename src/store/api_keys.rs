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

/// A key as listed, with whoever created it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedKey {
    #[sqlx(flatten)]
    pub key: ApiKeyRow,
    /// The creator's email; `None` once their account is gone.
    pub creator_email: Option<String>,
}

pub async fn list(tx: &mut Tx, agency: AgencyId) -> Result<Vec<ListedKey>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT k.id, k.agency_id, k.name, k.role, k.prefix, k.created_by, k.created_at, k.last_used_at, \
         k.revoked_at, u.email AS creator_email \
         FROM api_keys k LEFT JOIN users u ON u.id = k.created_by \
         WHERE k.agency_id = $1 ORDER BY k.created_at, k.id",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// A live key presented by a request, with its creator's role in the key's agency as of now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInUse {
    #[sqlx(flatten)]
    pub key: ApiKeyRow,
    /// `None` when the creator is no longer a member (or no longer exists).
    pub creator_role: Option<String>,
}

/// The live (unrevoked) key with this hash.
pub async fn by_hash(tx: &mut Tx, key_hash: &[u8]) -> Result<Option<KeyInUse>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT k.id, k.agency_id, k.name, k.role, k.prefix, k.created_by, k.created_at, k.last_used_at, \
         k.revoked_at, m.role AS creator_role \
         FROM api_keys k LEFT JOIN memberships m ON m.agency_id = k.agency_id AND m.user_id = k.created_by \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(c)
    .await)?)
}

/// A key changed because of its creator, for the audit log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Changed {
    pub id: ApiKeyId,
    pub name: String,
}

/// Revokes every live key `creator` made in `agency` (they are leaving it).
pub async fn revoke_created_by(
    tx: &mut Tx,
    agency: AgencyId,
    creator: UserId,
    now: i64,
) -> Result<Vec<Changed>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "UPDATE api_keys SET revoked_at = $3 \
         WHERE agency_id = $1 AND created_by = $2 AND revoked_at IS NULL RETURNING id, name",
    )
    .bind(agency)
    .bind(creator)
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// Lowers every live admin key `creator` made in `agency` to member (they were made a member).
pub async fn demote_created_by(
    tx: &mut Tx,
    agency: AgencyId,
    creator: UserId,
) -> Result<Vec<Changed>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "UPDATE api_keys SET role = 'member' \
         WHERE agency_id = $1 AND created_by = $2 AND revoked_at IS NULL AND role = 'admin' \
         RETURNING id, name",
    )
    .bind(agency)
    .bind(creator)
    .fetch_all(c)
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
