//! The durable job queue: jobs enqueued with the event that caused them, claimed fairly across
//! client accounts with a lease, kept alive by heartbeats, finished only by the attempt that
//! claimed them, retried with backoff and jitter, dead after too many attempts, paused when a
//! client account needs a person.

pub mod job;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::{ms_after, now_ms};
use crate::ids::ClientId;
use crate::store::calls::AttemptRow;
use crate::store::jobs::{self, JobRow, JobState, NewJob};
use crate::store::pauses::PauseCause;
use crate::store::{Db, StoreError, Tx};

pub use self::job::Job;

/// What handling a job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Try again later; `after` is the upstream's Retry-After, if it gave one.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The client account needs a person (Kommo revoked, keys missing): park the job until
    /// the cause is fixed, without spending attempts.
    Pause {
        reason: String,
        /// What the alerts read: the reason's words are for people.
        cause: PauseCause,
    },
    /// Retrying cannot help.
    Dead {
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub lease: Duration,
    pub max_attempts: i64,
    pub poll: Duration,
    /// The first retry's wait; it doubles with each attempt.
    pub retry_base: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
}

/// Client accounts one claim looks at before it tries the next ones.
const CANDIDATES: i64 = 8;

#[derive(Debug, Clone)]
pub struct Queue {
    db: Db,
    settings: Settings,
    wake: Arc<Notify>,
}

impl Queue {
    pub fn new(db: Db, settings: Settings) -> Queue {
        Queue { db, settings, wake: Arc::new(Notify::new()) }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Wakes one idle worker of this process (after an enqueue commits). One, not all: each
    /// worker that claims a job wakes the next ([`worker`]), so as many wake as there is work,
    /// where waking every idle worker on every enqueue had hundreds of them claim nothing.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Adds a job in the caller's transaction, so it exists exactly when its cause does.
    pub async fn enqueue(
        &self,
        tx: &mut Tx,
        client: ClientId,
        job: &Job,
        event_id: Option<uuid::Uuid>,
        dedup_key: Option<&str>,
    ) -> Result<bool, StoreError> {
        let payload = job.payload();
        // The job joins the trace of whatever caused it (the webhook's request span).
        let trace = crate::telemetry::context::current();
        let job = NewJob {
            id: uuid::Uuid::now_v7(),
            client,
            kind: job.kind(),
            event_id,
            payload: &payload,
            max_attempts: self.settings.max_attempts,
            trace: trace.as_deref(),
            dedup_key,
            now: now_ms(),
        };
        jobs::insert(tx, &job).await
    }

    /// Adds the jobs a batch of webhooks caused, in the caller's transaction and in one
    /// statement: for each, its client account, the job, the event that caused it and the
    /// request span whose trace it joins.
    pub async fn enqueue_batch(
        &self,
        tx: &mut Tx,
        caused: &[(ClientId, &Job, uuid::Uuid, &tracing::Span)],
    ) -> Result<(), StoreError> {
        let payloads: Vec<String> = caused.iter().map(|(_, job, _, _)| job.payload()).collect();
        let traces: Vec<Option<String>> =
            caused.iter().map(|(.., span)| span.in_scope(crate::telemetry::context::current)).collect();
        let now = now_ms();
        let rows: Vec<NewJob<'_>> = caused
            .iter()
            .zip(payloads.iter().zip(&traces))
            .map(|((client, job, event, _), (payload, trace))| NewJob {
                id: uuid::Uuid::now_v7(),
                client: *client,
                kind: job.kind(),
                event_id: Some(*event),
                payload,
                max_attempts: self.settings.max_attempts,
                trace: trace.as_deref(),
                dedup_key: None,
                now,
            })
            .collect();
        jobs::insert_many(tx, &rows).await
    }

    /// A webhook repeated `event` (a redelivery): the current request span links to the trace
    /// of the job the original caused, and the job, if not finished, links back to it, so its
    /// next attempt shows every delivery that asked for it.
    pub async fn caused_again(
        &self,
        tx: &mut Tx,
        client: ClientId,
        event: uuid::Uuid,
    ) -> Result<(), StoreError> {
        let Some((id, state, stored)) = jobs::trace_by_event(tx, client, event).await? else {
            return Ok(());
        };
        crate::telemetry::context::link_current(stored.as_deref());
        if state != JobState::Done
            && let Some(linked) = crate::telemetry::context::with_link(stored.as_deref())
        {
            jobs::set_trace(tx, id, &linked).await?;
        }
        Ok(())
    }

    /// Claims the next job, taking client accounts in least-recently-served order.
    pub async fn claim(&self, owner: &str) -> Result<Option<JobRow>, StoreError> {
        let now = now_ms();
        let until = ms_after(self.settings.lease);
        let mut tx = self.db.write().await?;
        // A head that was early is put right by the claim that found nothing behind it, so a
        // full round of early heads is followed by a look at the next ones.
        for _ in 0..4 {
            let candidates = jobs::next_clients(&mut tx, now, CANDIDATES).await?;
            for client in &candidates {
                if let Some(job) = jobs::claim_for(&mut tx, *client, owner, now, until).await? {
                    tx.commit().await?;
                    return Ok(Some(job));
                }
            }
            if candidates.len() < CANDIDATES as usize {
                break;
            }
        }
        tx.commit().await?;
        Ok(None)
    }

    pub async fn heartbeat(&self, job: &JobRow) -> Result<bool, StoreError> {
        let mut tx = self.db.write().await?;
        let alive = jobs::heartbeat(&mut tx, job.id, job.attempts, ms_after(self.settings.lease)).await?;
        tx.commit().await?;
        Ok(alive)
    }

    /// Records the outcome, fenced on the claiming attempt. `false` if the job was reclaimed
    /// meanwhile (this worker's lease had run out), in which case nothing changed.
    pub async fn finish(&self, job: &JobRow, outcome: &Outcome) -> Result<bool, StoreError> {
        self.finish_keeping(job, outcome, None).await
    }

    /// [`Queue::finish`], storing the attempt's calls in the same transaction: one commit (on
    /// SQLite one fsync) per attempt rather than two.
    pub async fn finish_keeping(
        &self,
        job: &JobRow,
        outcome: &Outcome,
        attempt: Option<&AttemptRow>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.db.write().await?;
        if let Some(attempt) = attempt {
            crate::store::calls::record(&mut tx, attempt).await?;
        }
        let moved = match outcome {
            Outcome::Done => {
                jobs::finish(&mut tx, job.id, job.attempts, JobState::Done, now, None, now).await?
            }
            Outcome::Retry { error, after } if job.attempts < job.max_attempts => {
                let wait = backoff(self.settings.retry_base, self.settings.retry_max, job.attempts)
                    .max(after.unwrap_or_default());
                let run_at = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                jobs::finish(&mut tx, job.id, job.attempts, JobState::Ready, run_at, Some(error), now).await?
            }
            Outcome::Retry { error, .. } | Outcome::Dead { error } => {
                jobs::finish(&mut tx, job.id, job.attempts, JobState::Dead, now, Some(error), now).await?
            }
            Outcome::Pause { reason, cause } => {
                let moved =
                    jobs::finish(&mut tx, job.id, job.attempts, JobState::Paused, now, Some(reason), now)
                        .await?;
                if moved {
                    jobs::pause_client(&mut tx, job.client_id, reason, now).await?;
                    crate::store::pauses::set_cause(&mut tx, job.client_id, *cause).await?;
                }
                moved
            }
        };
        tx.commit().await?;
        Ok(moved)
    }

    /// Hands a claimed job back untouched, for shutdown.
    pub async fn release(&self, job: &JobRow) -> Result<bool, StoreError> {
        let mut tx = self.db.write().await?;
        let released = jobs::release(&mut tx, job.id, job.attempts, now_ms()).await?;
        tx.commit().await?;
        Ok(released)
    }
}

/// Lifts a client account's pause (its cause was fixed): its parked jobs run again.
pub async fn resume(tx: &mut Tx, client: ClientId) -> Result<u64, StoreError> {
    jobs::resume_client(tx, client, now_ms()).await
}

/// base, 2×base, 4×base ... up to 30 minutes, each ±25% so retries of many jobs do not arrive
/// together.
pub fn backoff(first: Duration, max: Duration, attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.clamp(1, 20) - 1).unwrap_or(0);
    let base = first.saturating_mul(2u32.saturating_pow(exponent)).min(max);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let two = Duration::from_secs(2);
        for _ in 0..100 {
            let max = Duration::from_secs(1800);
            let first = backoff(two, max, 1);
            assert!(
                first >= Duration::from_millis(1500) && first <= Duration::from_millis(2500),
                "{first:?}"
            );
            let fourth = backoff(two, max, 4);
            assert!(fourth >= Duration::from_secs(12) && fourth <= Duration::from_secs(20), "{fourth:?}");
            assert!(backoff(two, max, 40) <= Duration::from_secs(1800 * 5 / 4));
            assert!(backoff(two, Duration::from_secs(3), 10) <= Duration::from_millis(3750));
        }
    }
}
