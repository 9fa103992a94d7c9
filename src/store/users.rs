//! People and their login sessions.

use crate::ids::{SessionId, UserId};
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub password_hash: String,
    pub created_at: i64,
    pub password_changed_at: i64,
}

pub async fn insert(tx: &mut Tx, user: &UserRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at, password_changed_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.password_hash)
    .bind(user.created_at)
    .bind(user.password_changed_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn by_email(tx: &mut Tx, email: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, email, password_hash, created_at, password_changed_at FROM users WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(c)
    .await)?)
}

pub async fn by_id(tx: &mut Tx, id: UserId) -> Result<Option<UserRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, email, password_hash, created_at, password_changed_at FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

pub async fn set_password(tx: &mut Tx, id: UserId, hash: &str, at: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE id = $1")
        .bind(id)
        .bind(hash)
        .bind(at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn insert_session(
    tx: &mut Tx,
    id: SessionId,
    user: UserId,
    created_at: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(user)
    .bind(created_at)
    .bind(expires_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The email of the session's user, if the session is unrevoked and within its absolute
/// lifetime: one query answers both "is this session live" and "who is it".
pub async fn live_session_email(
    tx: &mut Tx,
    id: SessionId,
    user: UserId,
    now: i64,
) -> Result<Option<String>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT u.email FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3",
    )
    .bind(id)
    .bind(user)
    .bind(now)
    .fetch_optional(c)
    .await)?)
}

pub async fn revoke_session(tx: &mut Tx, id: SessionId, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn revoke_all_sessions(tx: &mut Tx, user: UserId, now: i64) -> Result<u64, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done)
}

/// The user and email of a live session.
pub async fn session_user(
    tx: &mut Tx,
    id: SessionId,
    now: i64,
) -> Result<Option<(UserId, String)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT u.id, u.email FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(c)
    .await)?)
}
