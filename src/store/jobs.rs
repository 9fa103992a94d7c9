//! The durable job queue's rows: enqueue, fair claiming with leases, fenced completion.

use crate::ids::ClientId;
use crate::on_tx;

use super::ingress_batch::{hex_id, json};
use super::{StoreError, Tx};

/// Every column of `JobRow`, in order.
macro_rules! job_columns {
    () => {
        "id, client_id, kind, event_id, payload, state, attempts, max_attempts, run_at, last_error, trace, \
         created_at, updated_at"
    };
}

/// An upsert's `SET` bringing a queue head's `ready_at` forward to the proposed row's, never
/// back: the head may be early, never late.
macro_rules! ready_earlier {
    () => {
        "ready_at = CASE WHEN queue_turns.ready_at IS NULL OR queue_turns.ready_at > excluded.ready_at \
         THEN excluded.ready_at ELSE queue_turns.ready_at END"
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: uuid::Uuid,
    pub client_id: ClientId,
    pub kind: String,
    pub event_id: Option<uuid::Uuid>,
    pub payload: String,
    pub state: JobState,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub last_error: Option<String>,
    pub trace: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

crate::text_enum! {
    /// Where a job is in its life. The words are those stored since the first migration.
    pub enum JobState {
        /// Waiting for its `run_at`, or for a worker.
        Ready = "ready",
        /// Claimed by a worker whose lease runs until `lease_until`.
        Running = "running",
        Done = "done",
        /// Gave up (or could never run); replayable by a person.
        Dead = "dead",
        /// Waits, with its client account's pause, for a person to fix something.
        Paused = "paused",
    }
}

use JobState::{Dead, Paused, Ready, Running};

#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: uuid::Uuid,
    pub client: ClientId,
    pub kind: &'a str,
    pub event_id: Option<uuid::Uuid>,
    pub payload: &'a str,
    pub max_attempts: i64,
    pub trace: Option<&'a str>,
    pub dedup_key: Option<&'a str>,
    pub now: i64,
}

/// Enqueues a job (in the caller's transaction). With a dedup key, a second job with the same
/// key is not added; returns whether this one was.
pub async fn insert(tx: &mut Tx, job: &NewJob<'_>) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "INSERT INTO jobs (id, client_id, kind, event_id, payload, state, attempts, max_attempts, run_at, trace, \
         dedup_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $10, 0, $6, $7, $8, $9, $7, $7) \
         ON CONFLICT (client_id, dedup_key) DO NOTHING",
    )
    .bind(job.id)
    .bind(job.client)
    .bind(job.kind)
    .bind(job.event_id)
    .bind(job.payload)
    .bind(job.max_attempts)
    .bind(job.now)
    .bind(job.trace)
    .bind(job.dedup_key)
    .bind(Ready)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if done == 1 {
        ready_by(tx, job.client, job.now).await?;
        if let Tx::Postgres(t) = tx {
            // Wakes workers on every instance; delivered only if this transaction commits.
            sqlx::query("SELECT pg_notify('pipepay_jobs', '')").execute(&mut **t).await?;
        }
    }
    Ok(done == 1)
}

/// The client account has a ready job due at `at`: its queue head's `ready_at` comes forward
/// to it (see migration 0018). Every statement that makes a job ready calls this in its
/// transaction, or the claim would not see the job until the account's next claim.
async fn ready_by(tx: &mut Tx, client: ClientId, at: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(concat!(
        "INSERT INTO queue_turns (client_id, served_at, ready_at) VALUES ($1, 0, $2) \
         ON CONFLICT (client_id) DO UPDATE SET ", ready_earlier!()))
    .bind(client)
    .bind(at)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
}

/// Enqueues jobs without dedup keys (a batch of webhooks' jobs) in one statement, and wakes the
/// workers of every instance once for all of them.
pub async fn insert_many(tx: &mut Tx, jobs: &[NewJob<'_>]) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    if jobs.iter().any(|j| j.dedup_key.is_some()) {
        // A key could make a row of the batch not go in, which this statement does not report.
        return Err(StoreError::Corrupt("a batch of jobs carries a dedup key".to_owned()));
    }
    match tx {
        Tx::Postgres(t) => {
            let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.id).collect();
            let clients: Vec<uuid::Uuid> = jobs.iter().map(|j| j.client.0).collect();
            let kinds: Vec<&str> = jobs.iter().map(|j| j.kind).collect();
            let events: Vec<Option<uuid::Uuid>> = jobs.iter().map(|j| j.event_id).collect();
            let payloads: Vec<&str> = jobs.iter().map(|j| j.payload).collect();
            let attempts: Vec<i64> = jobs.iter().map(|j| j.max_attempts).collect();
            let now: Vec<i64> = jobs.iter().map(|j| j.now).collect();
            let traces: Vec<Option<&str>> = jobs.iter().map(|j| j.trace).collect();
            // The notification is delivered only if this transaction commits. The queue heads
            // are taken in the order of their keys, so two writers' batches never wait on each
            // other's rows in opposite orders.
            sqlx::query(concat!(
                "WITH added AS ( \
                     INSERT INTO jobs (id, client_id, kind, event_id, payload, state, attempts, max_attempts, \
                                       run_at, trace, created_at, updated_at) \
                     SELECT id, client_id, kind, event_id, payload, $9, 0, max_attempts, now, trace, now, now \
                     FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::bigint[], \
                                 $7::bigint[], $8::text[]) \
                          AS j(id, client_id, kind, event_id, payload, max_attempts, now, trace) \
                     RETURNING 1 \
                 ), heads AS ( \
                     INSERT INTO queue_turns (client_id, served_at, ready_at) \
                     SELECT client_id, 0, MIN(now) FROM UNNEST($2::uuid[], $7::bigint[]) AS h(client_id, now) \
                     GROUP BY client_id ORDER BY client_id \
                     ON CONFLICT (client_id) DO UPDATE SET ",
                ready_earlier!(),
                " \
                 ) \
                 SELECT pg_notify('pipepay_jobs', '') WHERE EXISTS (SELECT 1 FROM added)",
            ))
            .bind(&ids)
            .bind(&clients)
            .bind(&kinds)
            .bind(&events)
            .bind(&payloads)
            .bind(&attempts)
            .bind(&now)
            .bind(&traces)
            .bind(Ready)
            .execute(&mut **t)
            .await?;
        }
        Tx::Sqlite(t) => {
            let rows: Vec<_> = jobs
                .iter()
                .map(|j| {
                    (
                        hex_id(j.id),
                        hex_id(j.client.0),
                        j.kind,
                        j.event_id.map(hex_id),
                        j.payload,
                        j.max_attempts,
                        j.now,
                        j.trace,
                    )
                })
                .collect();
            let rows = json(&rows)?;
            sqlx::query(
                "INSERT INTO jobs (id, client_id, kind, event_id, payload, state, attempts, max_attempts, run_at, \
                                   trace, created_at, updated_at) \
                 SELECT unhex(value->>0), unhex(value->>1), value->>2, unhex(value->>3), value->>4, $2, 0, \
                        value->>5, value->>6, value->>7, value->>6, value->>6 \
                 FROM json_each($1) ORDER BY key",
            )
            .bind(&rows)
            .bind(Ready)
            .execute(&mut **t)
            .await?;
            // `WHERE true`: SQLite's parser needs it before an upsert's ON CONFLICT.
            sqlx::query(concat!(
                "INSERT INTO queue_turns (client_id, served_at, ready_at) \
                 SELECT unhex(value->>1), 0, MIN(value->>6) FROM json_each($1) WHERE true \
                 GROUP BY value->>1 ON CONFLICT (client_id) DO UPDATE SET ",
                ready_earlier!()
            ))
            .bind(&rows)
            .execute(&mut **t)
            .await?;
        }
    }
    Ok(())
}

/// The job an event caused: its id, state and stored trace context.
pub async fn trace_by_event(
    tx: &mut Tx,
    client: ClientId,
    event: uuid::Uuid,
) -> Result<Option<(uuid::Uuid, JobState, Option<String>)>, StoreError> {
    Ok(
        on_tx!(tx, c => sqlx::query_as("SELECT id, state, trace FROM jobs WHERE client_id = $1 AND event_id = $2")
        .bind(client)
        .bind(event)
        .fetch_optional(c)
        .await)?,
    )
}

pub async fn set_trace(tx: &mut Tx, id: uuid::Uuid, trace: &str) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE jobs SET trace = $2 WHERE id = $1")
        .bind(id)
        .bind(trace)
        .execute(c)
        .await
        .map(drop))?;
    Ok(())
}

/// Client accounts with claimable work, least recently served first: the fairness rule.
/// A client account with a job running (lease unexpired) or paused is skipped, so each
/// client account's jobs run one at a time, in order.
///
/// Reads the queue heads (`queue_turns`, migration 0018), one row per account with work, in
/// served order, and stops at `limit`: its cost does not grow with the backlog. A head may be
/// early (the account then turns out to have nothing, and [`claim_for`] puts the head right),
/// never late.
pub async fn next_clients(tx: &mut Tx, now: i64, limit: i64) -> Result<Vec<ClientId>, StoreError> {
    // The first condition is the partial index's own, so that both engines walk that index.
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT t.client_id FROM queue_turns t \
         WHERE (t.ready_at IS NOT NULL OR t.busy_until IS NOT NULL) \
           AND ((t.busy_until IS NULL AND t.ready_at <= $1) OR t.busy_until < $1) \
           AND NOT EXISTS (SELECT 1 FROM client_pauses p WHERE p.client_id = t.client_id) \
         ORDER BY t.served_at, t.client_id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

/// Claims the client account's next job: its oldest ready job, or one whose worker's lease
/// ran out. Bumps the attempt (the fencing token) and records the turn. Checks again that no
/// job of the account is running: on PostgreSQL another instance may have claimed one after
/// `next_clients` looked and before the turn row was locked (each statement sees the latest
/// commits, so the check here is the one that counts).
pub async fn claim_for(
    tx: &mut Tx,
    client: ClientId,
    owner: &str,
    now: i64,
    lease_until: i64,
) -> Result<Option<JobRow>, StoreError> {
    let claimed: Option<JobRow> = match tx {
        Tx::Postgres(t) => {
            // The turn row (the queue head `next_clients` found) serialises claimers of one
            // client account across instances; whoever cannot lock it at once moves on.
            let locked: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM queue_turns WHERE client_id = $1 FOR UPDATE SKIP LOCKED",
            )
            .bind(client)
            .fetch_optional(&mut **t)
            .await?;
            if locked.is_none() {
                return Ok(None);
            }
            sqlx::query_as(CLAIM_POSTGRES)
                .bind(client)
                .bind(owner)
                .bind(now)
                .bind(lease_until)
                .bind(Ready)
                .bind(Running)
                .fetch_optional(&mut **t)
                .await?
        }
        // SQLite serialises writers (the claim runs in BEGIN IMMEDIATE), so nothing to lock.
        Tx::Sqlite(t) => {
            sqlx::query_as(CLAIM_SQLITE)
                .bind(client)
                .bind(owner)
                .bind(now)
                .bind(lease_until)
                .bind(Ready)
                .bind(Running)
                .fetch_optional(&mut **t)
                .await?
        }
    };
    // Claimed: the account is busy until the lease ends, its next ready job waits behind it.
    // Not claimed: the head was early, and is put right from the jobs themselves.
    match &claimed {
        Some(_) => on_tx!(tx, c => sqlx::query(
            "UPDATE queue_turns SET served_at = $2, busy_until = $3, \
             ready_at = (SELECT MIN(run_at) FROM jobs WHERE client_id = $1 AND state = $4) \
             WHERE client_id = $1",
        )
        .bind(client)
        .bind(now)
        .bind(lease_until)
        .bind(Ready)
        .execute(c)
        .await
        .map(drop))?,
        None => on_tx!(tx, c => sqlx::query(
            "UPDATE queue_turns SET \
             busy_until = (SELECT MAX(lease_until) FROM jobs WHERE client_id = $1 AND state = $3), \
             ready_at = (SELECT MIN(run_at) FROM jobs WHERE client_id = $1 AND state = $2) \
             WHERE client_id = $1",
        )
        .bind(client)
        .bind(Ready)
        .bind(Running)
        .execute(c)
        .await
        .map(drop))?,
    }
    Ok(claimed)
}

const CLAIM_POSTGRES: &str = concat!(
    "UPDATE jobs SET state = $6, attempts = attempts + 1, lease_owner = $2, \
     lease_until = $4, updated_at = $3 WHERE id = (SELECT id FROM jobs WHERE client_id = $1 \
     AND ((state = $5 AND run_at <= $3) OR (state = $6 AND lease_until < $3)) \
     AND NOT EXISTS (SELECT 1 FROM jobs b WHERE b.client_id = $1 AND b.state = $6 \
                     AND b.lease_until >= $3) \
     ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING ",
    job_columns!()
);

const CLAIM_SQLITE: &str = concat!(
    "UPDATE jobs SET state = $6, attempts = attempts + 1, lease_owner = $2, \
     lease_until = $4, updated_at = $3 WHERE id = (SELECT id FROM jobs WHERE client_id = $1 \
     AND ((state = $5 AND run_at <= $3) OR (state = $6 AND lease_until < $3)) \
     AND NOT EXISTS (SELECT 1 FROM jobs b WHERE b.client_id = $1 AND b.state = $6 \
                     AND b.lease_until >= $3) \
     ORDER BY run_at, id LIMIT 1) \
     RETURNING ",
    job_columns!()
);

/// Extends a running job's lease, only for the attempt that holds it.
pub async fn heartbeat(tx: &mut Tx, id: uuid::Uuid, attempt: i64, until: i64) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND attempts = $2 AND state = $4",
    )
    .bind(id)
    .bind(attempt)
    .bind(until)
    .bind(Running)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Moves a running job on, fenced on the attempt that claimed it: a stale worker whose job
/// was reclaimed changes nothing. `run_at` matters for `ready` (a retry); `error` is kept.
pub async fn finish(
    tx: &mut Tx,
    id: uuid::Uuid,
    attempt: i64,
    to_state: JobState,
    run_at: i64,
    error: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let moved: Option<ClientId> = on_tx!(tx, c => sqlx::query_scalar(
        "UPDATE jobs SET state = $3, run_at = $4, last_error = COALESCE($5, last_error), lease_owner = NULL, \
         lease_until = NULL, updated_at = $6 WHERE id = $1 AND attempts = $2 AND state = $7 \
         RETURNING client_id",
    )
    .bind(id)
    .bind(attempt)
    .bind(to_state)
    .bind(run_at)
    .bind(error)
    .bind(now)
    .bind(Running)
    .fetch_optional(c)
    .await)?;
    let Some(client) = moved else { return Ok(false) };
    idle(tx, client, (to_state == Ready).then_some(run_at)).await?;
    Ok(true)
}

/// The client account's running job stopped: its queue head is no longer busy, and a job made
/// ready again brings `ready_at` forward to its `run_at`.
async fn idle(tx: &mut Tx, client: ClientId, ready_at: Option<i64>) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE queue_turns SET busy_until = NULL, ready_at = CASE \
         WHEN CAST($2 AS BIGINT) IS NOT NULL AND (ready_at IS NULL OR ready_at > $2) THEN $2 \
         ELSE ready_at END WHERE client_id = $1",
    )
    .bind(client)
    .bind(ready_at)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
}

/// Gives a claimed job back untouched (shutdown): the attempt does not count.
pub async fn release(tx: &mut Tx, id: uuid::Uuid, attempt: i64, now: i64) -> Result<bool, StoreError> {
    let released: Option<ClientId> = on_tx!(tx, c => sqlx::query_scalar(
        "UPDATE jobs SET state = $4, attempts = attempts - 1, run_at = $3, lease_owner = NULL, \
         lease_until = NULL, updated_at = $3 WHERE id = $1 AND attempts = $2 AND state = $5 \
         RETURNING client_id",
    )
    .bind(id)
    .bind(attempt)
    .bind(now)
    .bind(Ready)
    .bind(Running)
    .fetch_optional(c)
    .await)?;
    let Some(client) = released else { return Ok(false) };
    idle(tx, client, Some(now)).await?;
    Ok(true)
}

pub async fn pause_client(tx: &mut Tx, client: ClientId, reason: &str, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO client_pauses (client_id, reason, since) VALUES ($1, $2, $3) \
         ON CONFLICT (client_id) DO UPDATE SET reason = excluded.reason",
    )
    .bind(client)
    .bind(reason)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Lifts a pause: paused jobs become ready. Returns how many.
pub async fn resume_client(tx: &mut Tx, client: ClientId, now: i64) -> Result<u64, StoreError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM client_pauses WHERE client_id = $1")
        .bind(client)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    let resumed = on_tx!(tx, c => sqlx::query(
        "UPDATE jobs SET state = $3, run_at = $2, updated_at = $2 WHERE client_id = $1 AND state = $4",
    )
    .bind(client)
    .bind(now)
    .bind(Ready)
    .bind(Paused)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if resumed > 0 {
        ready_by(tx, client, now).await?;
    }
    Ok(resumed)
}

pub async fn pause_reason(tx: &mut Tx, client: ClientId) -> Result<Option<(String, i64)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as("SELECT reason, since FROM client_pauses WHERE client_id = $1")
        .bind(client)
        .fetch_optional(c)
        .await)?)
}

/// The job's state, if the job is the client account's.
pub async fn state_of(tx: &mut Tx, client: ClientId, id: uuid::Uuid) -> Result<Option<JobState>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar("SELECT state FROM jobs WHERE client_id = $1 AND id = $2")
        .bind(client)
        .bind(id)
        .fetch_optional(c)
        .await)?)
}

/// Dead jobs back to ready, with a fresh set of attempts. Another client's job is not found.
pub async fn replay(tx: &mut Tx, client: ClientId, id: uuid::Uuid, now: i64) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE jobs SET state = $4, attempts = 0, run_at = $3, updated_at = $3 \
         WHERE client_id = $1 AND id = $2 AND state = $5",
    )
    .bind(client)
    .bind(id)
    .bind(now)
    .bind(Ready)
    .bind(Dead)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if done == 1 {
        ready_by(tx, client, now).await?;
    }
    Ok(done == 1)
}

pub async fn list(
    tx: &mut Tx,
    client: ClientId,
    state: Option<JobState>,
    limit: i64,
) -> Result<Vec<JobRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", job_columns!(), " FROM jobs WHERE client_id = $1 AND ($2 IS NULL OR state = $2) \
         ORDER BY created_at DESC, id DESC LIMIT $3"),
    )
    .bind(client)
    .bind(state)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

/// Job counts by state for one client account.
pub async fn counts(tx: &mut Tx, client: ClientId) -> Result<Vec<(JobState, i64)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as("SELECT state, COUNT(*) FROM jobs WHERE client_id = $1 GROUP BY state")
        .bind(client)
        .fetch_all(c)
        .await)?)
}

/// Whether the client account has at least `n` ready jobs. Reads at most `n` index entries,
/// so it costs little while the backlog is short, and stays bounded when it is not.
pub async fn ready_at_least(tx: &mut Tx, client: ClientId, n: i64) -> Result<bool, StoreError> {
    let found: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE client_id = $1 AND state = $3 LIMIT $2) backlog",
    )
    .bind(client)
    .bind(n)
    .bind(Ready)
    .fetch_one(c)
    .await)?;
    Ok(found >= n)
}
