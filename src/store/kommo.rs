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

/// What the shared limiter row is asked to do for one request: the account's window of the
/// last `limit` requests, and the spacing (the adaptive pace's, computed from the row's pace
/// columns exactly as `kommo::limits` computes it, so no second statement reads them).
#[derive(Debug, Clone, Copy)]
pub struct WindowRule {
    pub limit: i64,
    /// The configured pace's spacing, which a 429's cut never goes below.
    pub base_us: i64,
    /// The spacing when no cut is in force (`1 s / limit`): only keeps requests from bunching.
    pub even_us: i64,
    /// Requests per second a cut pace regains each second.
    pub ramp: f64,
    /// The caller's wall clock (microseconds), which the pace's times are written in.
    pub wall_us: i64,
    /// A request whose answer was never recorded (its instance died) counts as answered this
    /// long after it was sent: longer than any request can take.
    pub stale_us: i64,
    /// How long to wait before looking again when the request `limit` places back is in flight.
    pub poll_us: i64,
}

/// One step of the shared window, in one statement under the account row's lock, on
/// PostgreSQL's clock so instances with skewed clocks agree: either the request may go (its
/// number is returned, `Ok`; record its answer with [`window_answered`]) or how many
/// microseconds to wait (`Err`). It may go when the spacing since the last request has passed
/// and the request `limit` places before it was answered over a second ago, as was every one
/// before that (`horizon_us`).
///
/// Under contention the statement waits for the row lock and then sees the row as the holder
/// left it, but the window's rows as they were when the statement began (READ COMMITTED): a
/// front row that view misses, or shows in flight, means looking again (`poll_us`), unless a
/// later row shows the front was folded into the horizon already (a smaller `limit` elsewhere).
/// A stale view only ever errs slow.
pub async fn window_take(
    db: &Db,
    account_id: i64,
    rule: &WindowRule,
) -> Result<Result<i64, i64>, StoreError> {
    let Db::Postgres(pool) = db else { return Ok(Ok(0)) };
    for _ in 0..2 {
        let row: Option<(Option<i64>, i64)> = sqlx::query_as(
            "WITH now AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT AS us), \
             cur AS (SELECT r.tat_us, r.seq, r.horizon_us, r.pace_from_us, r.pace_start_us, now.us AS now_us \
                     FROM kommo_rate r, now WHERE r.account_id = $1 FOR UPDATE OF r), \
             win AS (SELECT w.seq, COALESCE(w.answered_us, CASE WHEN w.sent_us + $6 <= cur.now_us \
                                            THEN w.sent_us + $6 END) AS answered \
                     FROM kommo_rate_window w, cur WHERE w.account_id = $1), \
             front AS (SELECT win.* FROM win, cur WHERE win.seq = cur.seq + 1 - $2), \
             waits AS (SELECT cur.*, GREATEST(cur.tat_us - cur.now_us, \
                         CASE WHEN cur.seq + 1 - $2 <= 0 THEN 0 \
                              WHEN EXISTS (SELECT 1 FROM front WHERE answered IS NULL) THEN $7 \
                              WHEN EXISTS (SELECT 1 FROM front) \
                                OR EXISTS (SELECT 1 FROM win WHERE win.seq > cur.seq + 1 - $2) \
                                THEN GREATEST((SELECT answered FROM front), cur.horizon_us) + 1000000 - cur.now_us \
                              ELSE $7 END, 0) AS wait_us FROM cur), \
             go AS (SELECT * FROM waits WHERE wait_us <= 0), \
             cut AS (SELECT CASE WHEN go.pace_start_us IS NULL OR go.pace_from_us IS NULL THEN 0 \
                          ELSE floor(1e6 / (1e6 / GREATEST(go.pace_start_us, 1)::float8 \
                               + $5 * GREATEST($8 - go.pace_from_us, 0)::float8 / 1e6))::BIGINT END AS us \
                     FROM go), \
             upd AS (UPDATE kommo_rate r SET seq = go.seq + 1, \
                       tat_us = go.now_us + CASE WHEN cut.us > $3 THEN cut.us ELSE $4 END, \
                       horizon_us = GREATEST(r.horizon_us, \
                                    (SELECT max(win.answered) FROM win WHERE win.seq <= go.seq + 1 - $2)) \
                     FROM go, cut WHERE r.account_id = $1 RETURNING r.seq), \
             ins AS (INSERT INTO kommo_rate_window (account_id, seq, sent_us) \
                     SELECT $1, go.seq + 1, go.now_us FROM go RETURNING seq), \
             del AS (DELETE FROM kommo_rate_window w USING go \
                     WHERE w.account_id = $1 AND w.seq <= go.seq + 1 - $2) \
             SELECT (SELECT seq FROM ins), wait_us FROM waits",
        )
        .bind(account_id)
        .bind(rule.limit)
        .bind(rule.base_us)
        .bind(rule.even_us)
        .bind(rule.ramp)
        .bind(rule.stale_us)
        .bind(rule.poll_us)
        .bind(rule.wall_us)
        .fetch_optional(pool)
        .await?;
        match row {
            Some((Some(seq), _)) => return Ok(Ok(seq)),
            Some((None, wait)) => return Ok(Err(wait.max(1))),
            // The account's first request anywhere: make its row, then take.
            None => {
                sqlx::query(
                    "INSERT INTO kommo_rate (account_id, tat_us) VALUES ($1, 0) ON CONFLICT (account_id) DO NOTHING",
                )
                .bind(account_id)
                .execute(pool)
                .await?;
            }
        }
    }
    Err(StoreError::Corrupt("the Kommo limiter row vanished while it was taken".into()))
}

/// The answer to the shared window's request `seq` is in (or it was given up): its time is
/// PostgreSQL's now, at or after the answer, which errs on the safe side.
pub async fn window_answered(db: &Db, account_id: i64, seq: i64) -> Result<(), StoreError> {
    let Db::Postgres(pool) = db else { return Ok(()) };
    sqlx::query(
        "UPDATE kommo_rate_window SET answered_us = (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT \
         WHERE account_id = $1 AND seq = $2 AND answered_us IS NULL",
    )
    .bind(account_id)
    .bind(seq)
    .execute(pool)
    .await?;
    Ok(())
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
