//! Kommo connections, OAuth states, marketplace installs and the shared rate limiter's rows.

use crate::ids::ClientId;
use crate::on_tx;

use super::{Db, StoreError, Tx};

/// Connection health as stored in `kommo_connections.health` (and as the API shows it).
pub mod health {
    pub const ACTIVE: &str = "active";
    pub const NEEDS_REAUTH: &str = "needs_reauth";
    pub const REVOKED: &str = "revoked";
    pub const PAYMENT_REQUIRED: &str = "payment_required";
    pub const BLOCKED: &str = "blocked";
}

/// Every column of `ConnectionRow`, in order.
macro_rules! connection_columns {
    () => {
        "client_id, account_id, host, subdomain, account_name, currency, access_token, refresh_token, \
         access_expires_at, token_version, refresh_owner, refresh_until, refreshed_at, health, health_reason, \
         health_changed_at, webhook_status, webhook_detail, connected_at, updated_at"
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub client_id: ClientId,
    pub account_id: i64,
    pub host: String,
    pub subdomain: String,
    pub account_name: String,
    pub currency: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub access_expires_at: Option<i64>,
    pub token_version: i64,
    pub refresh_owner: Option<String>,
    pub refresh_until: Option<i64>,
    pub refreshed_at: i64,
    pub health: String,
    pub health_reason: Option<String>,
    pub health_changed_at: i64,
    pub webhook_status: String,
    pub webhook_detail: Option<String>,
    pub connected_at: i64,
    pub updated_at: i64,
}

/// Creates the connection, or replaces the tokens and account details of the client's existing
/// one (a reconnect). A Kommo account already connected to another client account violates the
/// unique account id, which the caller turns into a clear refusal.
pub async fn upsert_connection(tx: &mut Tx, row: &ConnectionRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO kommo_connections (client_id, account_id, host, subdomain, account_name, currency, \
         access_token, refresh_token, access_expires_at, token_version, refreshed_at, health, health_reason, \
         health_changed_at, webhook_status, webhook_detail, connected_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, NULL, $10, $12, $13, $10, $10) \
         ON CONFLICT (client_id) DO UPDATE SET account_id = excluded.account_id, host = excluded.host, \
         subdomain = excluded.subdomain, account_name = excluded.account_name, currency = excluded.currency, \
         access_token = excluded.access_token, refresh_token = excluded.refresh_token, \
         access_expires_at = excluded.access_expires_at, \
         token_version = kommo_connections.token_version + 1, refresh_owner = NULL, refresh_until = NULL, \
         refreshed_at = excluded.refreshed_at, health = excluded.health, health_reason = NULL, \
         health_changed_at = excluded.health_changed_at, webhook_status = excluded.webhook_status, \
         webhook_detail = excluded.webhook_detail, updated_at = excluded.updated_at",
    )
    .bind(row.client_id)
    .bind(row.account_id)
    .bind(&row.host)
    .bind(&row.subdomain)
    .bind(&row.account_name)
    .bind(&row.currency)
    .bind(&row.access_token)
    .bind(&row.refresh_token)
    .bind(row.access_expires_at)
    .bind(row.connected_at)
    .bind(&row.health)
    .bind(&row.webhook_status)
    .bind(&row.webhook_detail)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn connection(tx: &mut Tx, client: ClientId) -> Result<Option<ConnectionRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", connection_columns!(), " FROM kommo_connections WHERE client_id = $1"),
    )
    .bind(client)
    .fetch_optional(c)
    .await)?)
}

pub async fn connection_by_account(
    tx: &mut Tx,
    account_id: i64,
) -> Result<Option<ConnectionRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", connection_columns!(), " FROM kommo_connections WHERE account_id = $1"),
    )
    .bind(account_id)
    .fetch_optional(c)
    .await)?)
}

/// Takes the refresh lease if the tokens are still at `version` and nobody holds an unexpired
/// lease: the compare-and-set that makes one refresh per connection across instances.
pub async fn try_lease_refresh(
    tx: &mut Tx,
    client: ClientId,
    version: i64,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE kommo_connections SET refresh_owner = $3, refresh_until = $5 \
         WHERE client_id = $1 AND token_version = $2 AND refresh_token IS NOT NULL \
         AND (refresh_until IS NULL OR refresh_until < $4)",
    )
    .bind(client)
    .bind(version)
    .bind(owner)
    .bind(now)
    .bind(until)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Stores a refreshed pair, fenced on the lease owner and the version it refreshed from.
#[allow(clippy::too_many_arguments)]
pub async fn store_refreshed(
    tx: &mut Tx,
    client: ClientId,
    version: i64,
    owner: &str,
    access_token: &str,
    refresh_token: &str,
    access_expires_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE kommo_connections SET access_token = $4, refresh_token = $5, access_expires_at = $6, \
         token_version = token_version + 1, refresh_owner = NULL, refresh_until = NULL, refreshed_at = $7, \
         health = 'active', health_reason = NULL, health_changed_at = CASE WHEN health = 'active' \
         THEN health_changed_at ELSE $7 END, updated_at = $7 \
         WHERE client_id = $1 AND token_version = $2 AND refresh_owner = $3",
    )
    .bind(client)
    .bind(version)
    .bind(owner)
    .bind(access_token)
    .bind(refresh_token)
    .bind(access_expires_at)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn release_lease(tx: &mut Tx, client: ClientId, owner: &str) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE kommo_connections SET refresh_owner = NULL, refresh_until = NULL \
         WHERE client_id = $1 AND refresh_owner = $2",
    )
    .bind(client)
    .bind(owner)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Sets the connection's health. With `at_version`, only if the tokens are still that version:
/// a failure seen with old tokens must not condemn tokens someone refreshed meanwhile.
pub async fn set_health(
    tx: &mut Tx,
    client: ClientId,
    health: &str,
    reason: Option<&str>,
    at_version: Option<i64>,
    now: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE kommo_connections SET health = $2, health_reason = $3, health_changed_at = $5, \
         refresh_owner = NULL, refresh_until = NULL, updated_at = $5 \
         WHERE client_id = $1 AND ($4 IS NULL OR token_version = $4) AND health <> 'revoked' \
         AND (health <> $2 OR health_reason IS DISTINCT FROM $3)",
    )
    .bind(client)
    .bind(health)
    .bind(reason)
    .bind(at_version)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Kommo said the integration was uninstalled: erase the tokens, mark it revoked.
pub async fn revoke(
    tx: &mut Tx,
    account_id: i64,
    reason: &str,
    now: i64,
) -> Result<Option<ClientId>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "UPDATE kommo_connections SET access_token = NULL, refresh_token = NULL, access_expires_at = NULL, \
         token_version = token_version + 1, refresh_owner = NULL, refresh_until = NULL, health = 'revoked', \
         health_reason = $2, health_changed_at = CASE WHEN health = 'revoked' THEN health_changed_at ELSE $3 END, \
         updated_at = $3 WHERE account_id = $1 RETURNING client_id",
    )
    .bind(account_id)
    .bind(reason)
    .bind(now)
    .fetch_optional(c)
    .await)?)
}

pub async fn delete_connection(tx: &mut Tx, client: ClientId) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query("DELETE FROM kommo_connections WHERE client_id = $1")
        .bind(client)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn set_webhook(
    tx: &mut Tx,
    client: ClientId,
    status: &str,
    detail: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE kommo_connections SET webhook_status = $2, webhook_detail = $3, updated_at = $4 WHERE client_id = $1",
    )
    .bind(client)
    .bind(status)
    .bind(detail)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Active connections whose tokens were last refreshed before `before`.
pub async fn due_for_refresh(tx: &mut Tx, before: i64, limit: i64) -> Result<Vec<ClientId>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT client_id FROM kommo_connections WHERE health = 'active' AND refresh_token IS NOT NULL \
         AND refreshed_at < $1 ORDER BY refreshed_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateRow {
    pub client_id: ClientId,
    pub session_id: uuid::Uuid,
}

pub async fn insert_state(
    tx: &mut Tx,
    hash: &[u8],
    client: ClientId,
    session: uuid::Uuid,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO oauth_states (state_hash, client_id, session_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash)
    .bind(client)
    .bind(session)
    .bind(now)
    .bind(expires_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Uses up a state: returns it only the first time, and only before it expires.
pub async fn take_state(tx: &mut Tx, hash: &[u8], now: i64) -> Result<Option<StateRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "UPDATE oauth_states SET used_at = $2 WHERE state_hash = $1 AND used_at IS NULL AND expires_at > $2 \
         RETURNING client_id, session_id",
    )
    .bind(hash)
    .bind(now)
    .fetch_optional(c)
    .await)?)
}

/// Every column of `InstallRow`, in order.
macro_rules! install_columns {
    () => {
        "id, host, account_id, subdomain, account_name, status, detail, claimed_by, created_at"
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstallRow {
    pub id: uuid::Uuid,
    pub host: String,
    pub account_id: Option<i64>,
    pub subdomain: Option<String>,
    pub account_name: Option<String>,
    pub status: String,
    pub detail: Option<String>,
    pub claimed_by: Option<ClientId>,
    pub created_at: i64,
}

/// Records an install; `false` when one with this code is already recorded (the same call
/// made again), so its code is not exchanged twice.
pub async fn insert_install(
    tx: &mut Tx,
    id: uuid::Uuid,
    host: &str,
    code_hash: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "INSERT INTO kommo_installs (id, host, code_hash, status, created_at, updated_at) \
         VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT (code_hash) DO NOTHING",
    )
    .bind(id)
    .bind(host)
    .bind(code_hash)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Forgets installs nobody claimed that were made before `before`.
pub async fn expire_installs(tx: &mut Tx, before: i64) -> Result<u64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query(
        "DELETE FROM kommo_installs WHERE status <> 'claimed' AND created_at < $1",
    )
    .bind(before)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

#[allow(clippy::too_many_arguments)]
pub async fn update_install(
    tx: &mut Tx,
    id: uuid::Uuid,
    status: &str,
    account_id: Option<i64>,
    subdomain: Option<&str>,
    account_name: Option<&str>,
    detail: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE kommo_installs SET status = $2, account_id = COALESCE($3, account_id), \
         subdomain = COALESCE($4, subdomain), account_name = COALESCE($5, account_name), detail = $6, \
         updated_at = $7 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(account_id)
    .bind(subdomain)
    .bind(account_name)
    .bind(detail)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn install(tx: &mut Tx, id: uuid::Uuid) -> Result<Option<InstallRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", install_columns!(), " FROM kommo_installs WHERE id = $1"),
    )
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

pub async fn claim_installs(
    tx: &mut Tx,
    account_id: i64,
    client: ClientId,
    now: i64,
) -> Result<u64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query(
        "UPDATE kommo_installs SET status = 'claimed', claimed_by = $2, updated_at = $3 \
         WHERE account_id = $1 AND status IN ('ready', 'pending')",
    )
    .bind(account_id)
    .bind(client)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

/// One GCRA step on the shared limiter row, on PostgreSQL's clock so instances with skewed
/// clocks agree. Returns how many microseconds to wait before the caller may send; zero means
/// the slot is taken and the caller may go now.
pub async fn gcra_take(
    db: &Db,
    account_id: i64,
    interval_us: i64,
    tolerance_us: i64,
) -> Result<i64, StoreError> {
    let Db::Postgres(pool) = db else { return Ok(0) };
    sqlx::query(
        "INSERT INTO kommo_rate (account_id, tat_us) VALUES ($1, 0) ON CONFLICT (account_id) DO NOTHING",
    )
    .bind(account_id)
    .execute(pool)
    .await?;
    // Either advance the theoretical arrival time and go, or leave it and report the wait.
    let row: (bool, i64) = sqlx::query_as(
        "WITH now AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT AS us), \
         cur AS (SELECT GREATEST(r.tat_us, now.us) AS tat, now.us AS now_us FROM kommo_rate r, now \
                 WHERE r.account_id = $1 FOR UPDATE OF r), \
         upd AS (UPDATE kommo_rate SET tat_us = cur.tat + $2 FROM cur \
                 WHERE kommo_rate.account_id = $1 AND cur.tat - cur.now_us <= $3 RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM upd), (SELECT cur.tat - cur.now_us - $3 FROM cur)",
    )
    .bind(account_id)
    .bind(interval_us)
    .bind(tolerance_us)
    .fetch_one(pool)
    .await?;
    Ok(if row.0 { 0 } else { row.1.max(1) })
}

/// Pushes the shared limiter's next slot at least `delay_us` into the future: Kommo said 429,
/// and every instance should hold back, not only the one that was told.
pub async fn gcra_back_off(db: &Db, account_id: i64, delay_us: i64) -> Result<(), StoreError> {
    let Db::Postgres(pool) = db else { return Ok(()) };
    sqlx::query(
        "INSERT INTO kommo_rate (account_id, tat_us) VALUES ($1, \
         (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT + $2) \
         ON CONFLICT (account_id) DO UPDATE SET tat_us = GREATEST(kommo_rate.tat_us, excluded.tat_us)",
    )
    .bind(account_id)
    .bind(delay_us)
    .execute(pool)
    .await?;
    Ok(())
}

/// The shared adaptive pace of a Kommo account, `(from_us, start_us)`, if a 429 cut it.
pub async fn pace(db: &Db, account_id: i64) -> Result<Option<(i64, i64)>, StoreError> {
    let Db::Postgres(pool) = db else { return Ok(None) };
    let row: Option<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT pace_from_us, pace_start_us FROM kommo_rate WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(from, start)| Some((from?, start?))))
}

/// Sets the shared pace if it is still `seen` (compare-and-set): when two instances are told 429
/// at once, one cut counts, not two.
pub async fn set_pace(
    db: &Db,
    account_id: i64,
    seen: Option<(i64, i64)>,
    pace: (i64, i64),
) -> Result<bool, StoreError> {
    let Db::Postgres(pool) = db else { return Ok(false) };
    let done = sqlx::query(
        "UPDATE kommo_rate SET pace_from_us = $2, pace_start_us = $3 WHERE account_id = $1 \
         AND pace_from_us IS NOT DISTINCT FROM $4 AND pace_start_us IS NOT DISTINCT FROM $5",
    )
    .bind(account_id)
    .bind(pace.0)
    .bind(pace.1)
    .bind(seen.map(|s| s.0))
    .bind(seen.map(|s| s.1))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
