//! The outbox: mail and alert webhooks, each row its own delivery job (claimed with a lease,
//! finished only by the attempt that claimed it, retried later on failure).

use crate::ids::AgencyId;
use crate::on_tx;

use super::{StoreError, Tx};

macro_rules! outbox_columns {
    () => {
        "id, agency_id, channel, recipient, subject, body, state, attempts, max_attempts, run_at, last_error, \
         created_at, sent_at"
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: uuid::Uuid,
    pub agency_id: Option<AgencyId>,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

pub mod channel {
    pub const EMAIL: &str = "email";
    pub const WEBHOOK: &str = "webhook";
}

pub mod state {
    pub const READY: &str = "ready";
    pub const SENDING: &str = "sending";
    pub const SENT: &str = "sent";
    /// Mail with no SMTP server configured: kept for the outbox page, never sent.
    pub const UNSENT: &str = "unsent";
    pub const DEAD: &str = "dead";
}

#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub agency: Option<AgencyId>,
    pub channel: &'a str,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// The body carries a one-time link: blanked once sent.
    pub secret_body: bool,
    pub max_attempts: i64,
    pub now: i64,
}

pub async fn insert(tx: &mut Tx, message: &NewMessage<'_>) -> Result<uuid::Uuid, StoreError> {
    let id = uuid::Uuid::now_v7();
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO outbox (id, agency_id, channel, recipient, subject, body, state, attempts, max_attempts, \
         run_at, created_at, secret_body) VALUES ($1, $2, $3, $4, $5, $6, 'ready', 0, $7, $8, $8, $9)",
    )
    .bind(id)
    .bind(message.agency)
    .bind(message.channel)
    .bind(message.recipient)
    .bind(message.subject)
    .bind(message.body)
    .bind(message.max_attempts)
    .bind(message.now)
    .bind(i64::from(message.secret_body))
    .execute(c)
    .await
    .map(drop))?;
    Ok(id)
}

/// Claims the oldest due row (ready, or sending with a lapsed lease) until `until`. The state
/// test is repeated outside the subquery so that, on PostgreSQL, a second instance that picked
/// the same row re-checks it after the first one's update and finds nothing to claim.
pub async fn claim(tx: &mut Tx, now: i64, until: i64) -> Result<Option<OutboxRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(concat!(
        "UPDATE outbox SET state = 'sending', attempts = attempts + 1, lease_until = $2 \
         WHERE id = (SELECT id FROM outbox WHERE (state = 'ready' AND run_at <= $1) \
                       OR (state = 'sending' AND lease_until < $1) ORDER BY run_at LIMIT 1) \
           AND ((state = 'ready' AND run_at <= $1) OR (state = 'sending' AND lease_until < $1)) \
         RETURNING ",
        outbox_columns!()
    ))
    .bind(now)
    .bind(until)
    .fetch_optional(c)
    .await)?)
}

/// Records how an attempt ended, fenced on that attempt; `false` if another one took over.
pub async fn finish(
    tx: &mut Tx,
    id: uuid::Uuid,
    attempt: i64,
    state: &str,
    run_at: i64,
    error: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE outbox SET state = $3, run_at = $4, last_error = $5, lease_until = NULL, \
         sent_at = CASE WHEN $3 = 'sent' THEN $6 ELSE sent_at END, \
         body = CASE WHEN $3 = 'sent' AND secret_body = 1 THEN '(sent; the one-time link in it is not kept)' \
                ELSE body END \
         WHERE id = $1 AND attempts = $2 AND state = 'sending'",
    )
    .bind(id)
    .bind(attempt)
    .bind(state)
    .bind(run_at)
    .bind(error)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// An agency's own mail and webhooks, newest first.
pub async fn for_agency(tx: &mut Tx, agency: AgencyId, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(concat!(
        "SELECT ", outbox_columns!(), " FROM outbox WHERE agency_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(agency)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

/// Every row, newest first: the development outbox page.
pub async fn recent(tx: &mut Tx, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(concat!(
        "SELECT ", outbox_columns!(), " FROM outbox ORDER BY created_at DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

/// Deletes up to `limit` rows in `state` that finished before `before` (a finished row's
/// `run_at` is when it finished); how many went. Only final states are asked for: a row still
/// to deliver is never old enough.
pub async fn delete_finished_before(
    tx: &mut Tx,
    state: &str,
    before: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query(
        "DELETE FROM outbox WHERE id IN \
         (SELECT id FROM outbox WHERE state = $1 AND run_at < $2 ORDER BY run_at LIMIT $3)",
    )
    .bind(state)
    .bind(before)
    .bind(limit)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}
