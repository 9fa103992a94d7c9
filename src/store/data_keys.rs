//! The vault's per-client data keys, stored wrapped.

use crate::clock::now_ms;
use crate::ids::ClientId;
use crate::on_tx;

use super::{StoreError, Tx};

/// A data key as stored: wrapped by the master key named (the vault wraps and unwraps it).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WrappedKey {
    pub client_id: ClientId,
    pub key_id: String,
    pub master_key_id: String,
    pub wrapped: Vec<u8>,
}

pub async fn insert(tx: &mut Tx, key: &WrappedKey) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO data_keys (client_id, key_id, master_key_id, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key.client_id)
    .bind(&key.key_id)
    .bind(&key.master_key_id)
    .bind(&key.wrapped)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get(tx: &mut Tx, client: ClientId) -> Result<Option<WrappedKey>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT client_id, key_id, master_key_id, wrapped FROM data_keys WHERE client_id = $1",
    )
    .bind(client)
    .fetch_optional(c)
    .await)?)
}

/// Data keys in client id order, after `after`: keyset pages, so a rotation can resume anywhere.
pub async fn page(tx: &mut Tx, after: Option<ClientId>, limit: i64) -> Result<Vec<WrappedKey>, StoreError> {
    Ok(match after {
        None => on_tx!(tx, c => sqlx::query_as(
            "SELECT client_id, key_id, master_key_id, wrapped FROM data_keys ORDER BY client_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(c)
        .await)?,
        Some(after) => on_tx!(tx, c => sqlx::query_as(
            "SELECT client_id, key_id, master_key_id, wrapped FROM data_keys WHERE client_id > $1 \
             ORDER BY client_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await)?,
    })
}

/// Replaces a wrapping only if it is still the one read (compare-and-set on the master key id).
pub async fn replace_wrapping(tx: &mut Tx, old: &WrappedKey, new: &WrappedKey) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE data_keys SET master_key_id = $3, wrapped = $4, rewrapped_at = $5 \
         WHERE client_id = $1 AND master_key_id = $2",
    )
    .bind(old.client_id)
    .bind(&old.master_key_id)
    .bind(&new.master_key_id)
    .bind(&new.wrapped)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}
