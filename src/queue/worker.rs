//! Workers: claim, run with a heartbeat, record the outcome. An enqueue (in this process, or
//! through PostgreSQL's LISTEN/NOTIFY from another) wakes one idle worker, each worker that
//! claims a job wakes one more, and all poll as well.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Outcome, Queue};
use crate::clock::now_ms;
use crate::store::calls::AttemptRow;
use crate::store::jobs::JobRow;
use crate::store::{self, Db};
use crate::telemetry::calls::CallLog;

/// Runs one job; implemented by the pipeline.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, job: &JobRow) -> impl Future<Output = Outcome> + Send;
}

/// Runs the workers until `stop` (no new claims), abandoning in-flight jobs back to the queue
/// if `abandon` fires first.
pub async fn run<H: Handler>(
    queue: Queue,
    db: Db,
    handler: Arc<H>,
    stop: CancellationToken,
    abandon: CancellationToken,
) {
    if let Db::Postgres(pool) = &db {
        tokio::spawn(listen(pool.clone(), queue.clone(), stop.clone()));
    }
    let mut workers = JoinSet::new();
    for index in 0..queue.settings().workers.max(1) {
        let owner = format!("{}-{index}", uuid::Uuid::new_v4().simple());
        workers.spawn(work(queue.clone(), handler.clone(), owner, stop.clone(), abandon.clone()));
    }
    while workers.join_next().await.is_some() {}
}

async fn work<H: Handler>(
    queue: Queue,
    handler: Arc<H>,
    owner: String,
    stop: CancellationToken,
    abandon: CancellationToken,
) {
    let wake = queue.waker();
    while !stop.is_cancelled() {
        // A wake during the claim goes to another idle worker, or, with none waiting, is kept
        // as a permit this `notified()` takes: either way the enqueue is not missed.
        let woken = wake.notified();
        let job = match queue.claim(&owner).await {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(%error, "claiming a job failed");
                None
            }
        };
        let Some(job) = job else {
            // Nothing to claim: wait for an enqueue (or another worker's baton), or the poll.
            tokio::select! {
                () = stop.cancelled() => break,
                () = woken => {}
                () = tokio::time::sleep(queue.settings().poll) => {}
            }
            continue;
        };
        // There may be more work: pass the baton to one more idle worker, which claims and
        // passes it on, until a claim comes back empty.
        queue.wake();
        run_one(&queue, handler.as_ref(), &job, &abandon).await;
    }
}

enum Ended {
    Finished(Outcome),
    /// Shutdown: the job goes back to the queue.
    Abandoned,
    /// The lease ran out or was taken over: another worker may be running the job.
    Lost,
}

async fn run_one<H: Handler>(queue: &Queue, handler: &H, job: &JobRow, abandon: &CancellationToken) {
    let lease = queue.settings().lease;
    let beat = lease / 3;
    // Until when this worker surely holds the job: past it another worker may have claimed it.
    let mut held_until = tokio::time::Instant::now() + lease;
    // Every Kommo and Flutterwave call the attempt makes, kept with it whatever becomes of it.
    let log = CallLog::default();
    let started_at = now_ms();
    let handled = log.scope(handler.handle(job));
    tokio::pin!(handled);
    let outcome = loop {
        tokio::select! {
            outcome = &mut handled => break Ended::Finished(outcome),
            () = abandon.cancelled() => break Ended::Abandoned,
            () = tokio::time::sleep(beat) => {
                let asked = tokio::time::Instant::now();
                match queue.heartbeat(job).await {
                    Ok(true) => held_until = asked + lease,
                    Ok(false) => break Ended::Lost,
                    Err(error) => tracing::warn!(job = %job.id, %error, "heartbeat failed"),
                }
                if tokio::time::Instant::now() >= held_until {
                    break Ended::Lost;
                }
            }
        }
    };
    // Dropping the handler mid-way is a crash as far as the job is concerned, and every step
    // is safe to crash between (each records its outcome before the next starts); running on
    // beside the worker that now holds the job is not.
    let attempt = attempt_row(job, started_at, ended_word(&outcome), &log);
    match outcome {
        Ended::Lost => {
            keep_attempt(&queue.db, job, attempt.as_ref()).await;
            tracing::warn!(job = %job.id, "lost the job's lease; stopped it so that only one worker runs it");
        }
        Ended::Finished(outcome) => {
            // The attempt's calls and the outcome in one commit. Keeping the calls must never
            // cost the outcome, so should the two together fail, the outcome goes alone.
            let finished = match queue.finish_keeping(job, &outcome, attempt.as_ref()).await {
                Err(error) if attempt.is_some() => {
                    tracing::warn!(job = %job.id, %error, "could not keep the attempt's calls with its outcome");
                    queue.finish(job, &outcome).await
                }
                finished => finished,
            };
            match finished {
                Ok(true) => tracing::debug!(job = %job.id, kind = %job.kind, ?outcome, "job finished"),
                Ok(false) => {
                    tracing::warn!(job = %job.id, "job was reclaimed meanwhile; its outcome is dropped")
                }
                Err(error) => {
                    tracing::error!(job = %job.id, %error, "could not record a job's outcome; it will run again")
                }
            }
        }
        Ended::Abandoned => {
            keep_attempt(&queue.db, job, attempt.as_ref()).await;
            if let Err(error) = queue.release(job).await {
                tracing::warn!(job = %job.id, %error, "could not release a job at shutdown; its lease will expire");
            }
        }
    }
}

fn ended_word(ended: &Ended) -> &'static str {
    match ended {
        Ended::Finished(Outcome::Done) => "done",
        Ended::Finished(Outcome::Retry { .. }) => "retry",
        Ended::Finished(Outcome::Pause { .. }) => "paused",
        Ended::Finished(Outcome::Dead { .. }) => "dead",
        Ended::Abandoned => "abandoned",
        Ended::Lost => "lost",
    }
}

/// The attempt with its calls, as stored; `None` (logged) if the calls cannot be written.
fn attempt_row(job: &JobRow, started_at: i64, ended: &str, log: &CallLog) -> Option<AttemptRow> {
    let (calls, dropped) = log.take();
    let calls = match serde_json::to_string(&calls) {
        Ok(calls) => calls,
        Err(error) => {
            tracing::warn!(job = %job.id, %error, "could not write the attempt's calls");
            return None;
        }
    };
    Some(AttemptRow {
        id: uuid::Uuid::now_v7(),
        job_id: job.id,
        attempt: job.attempts,
        started_at,
        finished_at: now_ms(),
        ended: ended.to_owned(),
        calls,
        calls_dropped: i64::try_from(dropped).unwrap_or(i64::MAX),
    })
}

/// Stores the attempt of a job that did not finish (lease lost, shutdown). Kept even when the
/// lease was lost (the calls were made all the same); a failure to keep it is logged and
/// changes nothing about the job.
async fn keep_attempt(db: &Db, job: &JobRow, row: Option<&AttemptRow>) {
    let Some(row) = row else { return };
    let kept = async {
        let mut tx = db.write().await?;
        store::calls::record(&mut tx, row).await?;
        tx.commit().await
    };
    if let Err(error) = kept.await {
        tracing::warn!(job = %job.id, %error, "could not keep the attempt's calls");
    }
}

/// Forwards PostgreSQL notifications of new jobs to this process's workers.
async fn listen(pool: sqlx::PgPool, queue: Queue, stop: CancellationToken) {
    let mut pause = std::time::Duration::from_millis(500);
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => return,
            result = forward(&pool, &queue) => {
                let Err(error) = result;
                tracing::debug!(%error, "job notifications interrupted; polling meanwhile");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(30));
    }
}

async fn forward(pool: &sqlx::PgPool, queue: &Queue) -> Result<std::convert::Infallible, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen("pipepay_jobs").await?;
    loop {
        listener.recv().await?;
        queue.wake();
    }
}
