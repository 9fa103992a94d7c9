//! Workers: claim, run with a heartbeat, record the outcome. They wake at once on an enqueue
//! (in this process, or through PostgreSQL's LISTEN/NOTIFY from another) and poll as well.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Outcome, Queue};
use crate::store::Db;
use crate::store::jobs::JobRow;

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
        // Registered before claiming, so an enqueue during the claim is not missed.
        let woken = wake.notified();
        let job = match queue.claim(&owner).await {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(%error, "claiming a job failed");
                None
            }
        };
        let Some(job) = job else {
            tokio::select! {
                () = stop.cancelled() => break,
                () = woken => {}
                () = tokio::time::sleep(queue.settings().poll) => {}
            }
            continue;
        };
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
    let handled = handler.handle(job);
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
    match outcome {
        Ended::Lost => {
            tracing::warn!(job = %job.id, "lost the job's lease; stopped it so that only one worker runs it");
        }
        Ended::Finished(outcome) => match queue.finish(job, &outcome).await {
            Ok(true) => tracing::debug!(job = %job.id, kind = %job.kind, ?outcome, "job finished"),
            Ok(false) => tracing::warn!(job = %job.id, "job was reclaimed meanwhile; its outcome is dropped"),
            Err(error) => {
                tracing::error!(job = %job.id, %error, "could not record a job's outcome; it will run again")
            }
        },
        Ended::Abandoned => {
            if let Err(error) = queue.release(job).await {
                tracing::warn!(job = %job.id, %error, "could not release a job at shutdown; its lease will expire");
            }
        }
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
