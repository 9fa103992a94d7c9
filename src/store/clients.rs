//! Client accounts (tenants), their sealed secrets and their data keys.

use crate::ids::{AgencyId, ClientId};
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub id: ClientId,
    pub agency_id: AgencyId,
    pub name: String,
    /// The settings document as JSON text; `tenants::settings` owns its shape.
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn insert(tx: &mut Tx, row: &ClientRow, ingress_token_hash: &[u8]) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO clients (id, agency_id, name, ingress_token_hash, settings, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(row.id)
    .bind(row.agency_id)
    .bind(&row.name)
    .bind(ingress_token_hash)
    .bind(&row.settings)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn list(tx: &mut Tx, agency: AgencyId) -> Result<Vec<ClientRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, name, settings, created_at, updated_at FROM clients \
         WHERE agency_id = $1 ORDER BY created_at, id",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// The client account, if it belongs to this agency. Another agency's id is simply not found.
pub async fn get(tx: &mut Tx, agency: AgencyId, id: ClientId) -> Result<Option<ClientRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, name, settings, created_at, updated_at FROM clients \
         WHERE agency_id = $1 AND id = $2",
    )
    .bind(agency)
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// The client account by id alone, for flows that arrive without an agency (OAuth callbacks,
/// webhooks) and have already proven their right to it another way.
pub async fn by_id(tx: &mut Tx, id: ClientId) -> Result<Option<ClientRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, name, settings, created_at, updated_at FROM clients WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

pub async fn delete(tx: &mut Tx, agency: AgencyId, id: ClientId) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query("DELETE FROM clients WHERE agency_id = $1 AND id = $2")
        .bind(agency)
        .bind(id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn update_settings(
    tx: &mut Tx,
    agency: AgencyId,
    id: ClientId,
    name: &str,
    settings: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE clients SET name = $3, settings = $4, updated_at = $5 WHERE agency_id = $1 AND id = $2",
    )
    .bind(agency)
    .bind(id)
    .bind(name)
    .bind(settings)
    .bind(at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn set_ingress_token(
    tx: &mut Tx,
    agency: AgencyId,
    id: ClientId,
    hash: &[u8],
    at: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE clients SET ingress_token_hash = $3, updated_at = $4 WHERE agency_id = $1 AND id = $2",
    )
    .bind(agency)
    .bind(id)
    .bind(hash)
    .bind(at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// The client account an ingress token belongs to, found by the token's hash.
pub async fn by_ingress_token(tx: &mut Tx, hash: &[u8]) -> Result<Option<ClientRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, name, settings, created_at, updated_at FROM clients WHERE ingress_token_hash = $1",
    )
    .bind(hash)
    .fetch_optional(c)
    .await)?)
}

pub async fn put_secret(
    tx: &mut Tx,
    client: ClientId,
    name: &str,
    sealed: &str,
    at: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO client_secrets (client_id, name, sealed, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (client_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
    )
    .bind(client)
    .bind(name)
    .bind(sealed)
    .bind(at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get_secret(tx: &mut Tx, client: ClientId, name: &str) -> Result<Option<String>, StoreError> {
    Ok(
        on_tx!(tx, c => sqlx::query_scalar("SELECT sealed FROM client_secrets WHERE client_id = $1 AND name = $2")
        .bind(client)
        .bind(name)
        .fetch_optional(c)
        .await)?,
    )
}

pub async fn delete_secret(tx: &mut Tx, client: ClientId, name: &str) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM client_secrets WHERE client_id = $1 AND name = $2")
        .bind(client)
        .bind(name)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}
