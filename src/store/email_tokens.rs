//! One-time links sent by mail (password resets, address checks), kept only as hashes, and the
//! verified mark on a person's address.

use crate::ids::UserId;
use crate::on_tx;

use super::{StoreError, Tx};

pub mod purpose {
    pub const RESET: &str = "reset";
    pub const VERIFY: &str = "verify";
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailTokenRow {
    pub user_id: UserId,
    pub purpose: String,
    pub email: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub async fn insert(
    tx: &mut Tx,
    hash: &[u8],
    user: UserId,
    purpose: &str,
    email: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hash)
    .bind(user)
    .bind(purpose)
    .bind(email)
    .bind(now)
    .bind(expires_at)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
}

/// Marks a live token of `purpose` used and returns it; `None` if unknown, used or expired. One
/// statement, so two requests racing with the same link cannot both use it.
pub async fn take(
    tx: &mut Tx,
    hash: &[u8],
    purpose: &str,
    now: i64,
) -> Result<Option<EmailTokenRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "UPDATE email_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL \
         AND expires_at > $3 RETURNING user_id, purpose, email, expires_at, used_at",
    )
    .bind(hash)
    .bind(purpose)
    .bind(now)
    .fetch_optional(c)
    .await)?)
}

/// A live token of `purpose`, without using it (the reset form is shown before it is posted).
pub async fn peek(
    tx: &mut Tx,
    hash: &[u8],
    purpose: &str,
    now: i64,
) -> Result<Option<EmailTokenRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT user_id, purpose, email, expires_at, used_at FROM email_tokens \
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(hash)
    .bind(purpose)
    .bind(now)
    .fetch_optional(c)
    .await)?)
}

/// Ends every unused token of `purpose` for the user (a newer link, or the password changed).
pub async fn expire_all(tx: &mut Tx, user: UserId, purpose: &str, now: i64) -> Result<u64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query(
        "UPDATE email_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
    )
    .bind(user)
    .bind(purpose)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

/// Marks the address verified, if it is still the user's address.
pub async fn mark_verified(tx: &mut Tx, user: UserId, email: &str, now: i64) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE users SET email_verified_at = $3 WHERE id = $1 AND email = $2 AND email_verified_at IS NULL",
    )
    .bind(user)
    .bind(email)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Whether the user's address has been verified.
pub async fn is_verified(tx: &mut Tx, user: UserId) -> Result<bool, StoreError> {
    let at: Option<Option<i64>> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT email_verified_at FROM users WHERE id = $1",
    )
    .bind(user)
    .fetch_optional(c)
    .await)?;
    Ok(matches!(at, Some(Some(_))))
}
