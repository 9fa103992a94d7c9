//! Group commit: handlers verify a webhook, then hand it here; a writer stores whatever has
//! queued meanwhile in one transaction and answers each handler only once that transaction has
//! committed. One commit (one fsync) then serves a whole batch instead of one webhook.
//!
//! Every guarantee of storing webhooks one by one holds per webhook: it is on disk before its
//! 200; a repeat (stored before, or earlier in the same batch) is recognised as one; the token
//! is checked again inside the batch's transaction; and if the batch cannot be stored, every
//! webhook in it (and only those) is answered 503, so its sender delivers it again.
//!
//! On SQLite one writer runs (its transactions take their turn on the process's one write
//! connection, see `store::SqliteDb`); on PostgreSQL a few run side by side, as the server
//! commits concurrent transactions together.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ids::ClientId;
use crate::queue::Queue;
use crate::queue::job::Job;
use crate::store::activity::{ActivityKind, ActivityOutcome, ActivityRow};
use crate::store::events::NewEvent;
use crate::store::ingress_batch::Asked;
use crate::store::{Backend, Db, StoreError, events, ingress_batch};

/// Webhooks one transaction stores at most.
const MAX_BATCH: usize = 512;
/// Webhooks waiting for a writer at most; beyond it handlers wait to hand theirs over.
const BACKLOG: usize = 8192;
/// Writers side by side on PostgreSQL.
const POSTGRES_WRITERS: usize = 2;

/// A verified webhook, ready to store.
#[derive(Debug)]
pub struct Webhook {
    pub client: ClientId,
    /// The hash of the token it came with: it must still be the client's when stored.
    pub token_hash: Vec<u8>,
    pub source: &'static str,
    pub dedup_key: String,
    pub payload: String,
    pub received_at: i64,
    /// The timeline's summary ("Flutterwave: <ref> successful").
    pub what: String,
    /// Why it is ignored whatever is stored; `None` if it may be acted on.
    pub ignored: Option<String>,
    /// A reference that must be one of the client's payment links for it to be acted on, and
    /// why it is ignored if it is not.
    pub link: Option<(String, String)>,
    /// The job to queue when it is acted on: its kind and payload.
    pub job: Option<Job>,
}

/// What became of a stored webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The token was rotated or the account deleted: nothing stored.
    TokenGone,
    /// A repeat of one stored before: nothing new stored.
    Duplicate,
    /// Stored with its timeline entry, nothing to do.
    Recorded,
    /// Stored, and its job queued.
    Queued,
}

/// Why a webhook was not stored: the batch's transaction failed, or the writer is gone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("storing the batch failed: {0}")]
    Store(Arc<StoreError>),
    #[error("the ingress writer has stopped")]
    Stopped,
}

/// Batches and webhooks this process committed, and where their time went: what the load
/// tool reports, so a slow ingress can be told apart from a slow disk.
#[derive(Debug, Default)]
pub struct Counters {
    pub batches: AtomicU64,
    pub webhooks: AtomicU64,
    /// Inside batch transactions, from `BEGIN` to the end of `COMMIT`.
    pub busy_us: AtomicU64,
    /// Inside `COMMIT` alone: on SQLite (FULL) the WAL's fsync, on PostgreSQL the WAL flush.
    pub commit_us: AtomicU64,
    /// Summed over webhooks: from being handed over to its batch being taken up.
    pub waited_us: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    batches: AtomicU64::new(0),
    webhooks: AtomicU64::new(0),
    busy_us: AtomicU64::new(0),
    commit_us: AtomicU64::new(0),
    waited_us: AtomicU64::new(0),
};

impl Counters {
    /// The counters as they are now: `[batches, webhooks, busy µs, commit µs, waited µs]`.
    pub fn snapshot(&self) -> [u64; 5] {
        [&self.batches, &self.webhooks, &self.busy_us, &self.commit_us, &self.waited_us]
            .map(|c| c.load(Relaxed))
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

struct Request {
    webhook: Webhook,
    /// The handler's span: the job joins its trace, and a repeat links to the original's.
    span: tracing::Span,
    handed_over: Instant,
    reply: oneshot::Sender<Result<Stored, WriteError>>,
}

pub struct Writer {
    sender: mpsc::Sender<Request>,
    stop: CancellationToken,
    tasks: std::sync::Mutex<Option<JoinSet<()>>>,
    handed_over: AtomicU64,
}

impl Writer {
    /// Starts the writers on `db`, queueing jobs on `queue`.
    pub fn start(db: Db, queue: Queue) -> Writer {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        let receiver = Arc::new(Mutex::new(receiver));
        let stop = CancellationToken::new();
        let writers = match db.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_WRITERS,
        };
        let mut tasks = JoinSet::new();
        for _ in 0..writers {
            tasks.spawn(run(db.clone(), queue.clone(), receiver.clone(), stop.clone()));
        }
        Writer { sender, stop, tasks: std::sync::Mutex::new(Some(tasks)), handed_over: AtomicU64::new(0) }
    }

    /// Stores the webhook with whatever else is waiting; returns once that is committed.
    pub async fn store(&self, webhook: Webhook) -> Result<Stored, WriteError> {
        let (reply, answer) = oneshot::channel();
        let request = Request { webhook, span: tracing::Span::current(), handed_over: Instant::now(), reply };
        self.sender.send(request).await.map_err(|_| WriteError::Stopped)?;
        self.handed_over.fetch_add(1, Relaxed);
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }

    /// Stores what was handed over already, then stops; later webhooks are answered 503.
    /// Called once the HTTP server has drained, before the database closes.
    pub async fn drain(&self) {
        self.stop.cancel();
        let tasks = self.tasks.lock().ok().and_then(|mut t| t.take());
        if let Some(mut tasks) = tasks {
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Webhooks handed to the writers so far.
    pub fn handed_over(&self) -> u64 {
        self.handed_over.load(Relaxed)
    }
}

async fn run(db: Db, queue: Queue, receiver: Arc<Mutex<mpsc::Receiver<Request>>>, stop: CancellationToken) {
    while let Some(batch) = next_batch(&receiver, &stop).await {
        let webhooks: Vec<&Request> = batch.iter().collect();
        let result = store_batch(&db, &queue, &webhooks).await;
        match result {
            Ok(stored) => {
                if stored.contains(&Stored::Queued) {
                    queue.wake();
                }
                for (request, stored) in batch.into_iter().zip(stored) {
                    let _ = request.reply.send(Ok(stored));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for request in batch {
                    let _ = request.reply.send(Err(WriteError::Store(error.clone())));
                }
            }
        }
    }
}

/// Waits for one webhook, then takes whatever else is waiting, up to [`MAX_BATCH`]. `None`
/// once stopped and nothing is left.
async fn next_batch(
    receiver: &Mutex<mpsc::Receiver<Request>>,
    stop: &CancellationToken,
) -> Option<Vec<Request>> {
    let mut receiver = receiver.lock().await;
    let first = tokio::select! {
        biased;
        request = receiver.recv() => request,
        () = stop.cancelled() => {
            // No new webhooks; what is waiting is still stored.
            receiver.close();
            receiver.recv().await
        }
    }?;
    let mut batch = Vec::with_capacity(receiver.len().min(MAX_BATCH) + 1);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Stores a batch in one transaction; what became of each webhook, in order.
async fn store_batch(db: &Db, queue: &Queue, batch: &[&Request]) -> Result<Vec<Stored>, StoreError> {
    let started = Instant::now();
    let waited: u64 = batch.iter().map(|r| micros(r.handed_over)).sum();
    let mut tx = db.write().await?;
    // A reference is looked up only where it decides what happens: not for a webhook ignored
    // whatever it refers to.
    let asked: Vec<Asked<'_>> = batch
        .iter()
        .map(|r| Asked {
            client: r.webhook.client,
            token_hash: &r.webhook.token_hash,
            tx_ref: r.webhook.link.as_ref().filter(|_| r.webhook.ignored.is_none()).map(|(r, _)| r.as_str()),
        })
        .collect();
    let checked = ingress_batch::check(&mut tx, &asked).await?;
    let why: Vec<Option<&str>> = batch
        .iter()
        .zip(&checked)
        .map(|(r, checked)| match (&r.webhook.ignored, &r.webhook.link) {
            (Some(why), _) => Some(why.as_str()),
            (None, Some((_, why))) if !checked.issued => Some(why.as_str()),
            _ => None,
        })
        .collect();

    let ids: Vec<uuid::Uuid> = batch.iter().map(|_| uuid::Uuid::now_v7()).collect();
    let stored_ones: Vec<usize> = (0..batch.len()).filter(|&i| checked[i].current).collect();
    let new_events: Vec<NewEvent<'_>> = stored_ones
        .iter()
        .map(|&i| {
            let w = &batch[i].webhook;
            NewEvent {
                id: ids[i],
                client: w.client,
                source: w.source,
                dedup_key: &w.dedup_key,
                payload: &w.payload,
                received_at: w.received_at,
                outcome: if why[i].is_some() { "ignored" } else { "queued" },
                detail: why[i],
            }
        })
        .collect();
    let timeline: Vec<ActivityRow> = stored_ones
        .iter()
        .map(|&i| {
            let w = &batch[i].webhook;
            let (kind, outcome, detail) = match why[i] {
                Some(why) => (ActivityKind::Ignored, ActivityOutcome::Ignored, format!("{}: {why}", w.what)),
                None => (ActivityKind::Received, ActivityOutcome::Ok, w.what.clone()),
            };
            ActivityRow {
                id: uuid::Uuid::now_v7(),
                client_id: w.client,
                at: w.received_at,
                kind,
                outcome,
                lead_id: None,
                tx_ref: None,
                job_id: None,
                detail,
            }
        })
        .collect();
    let inserted = ingress_batch::store(&mut tx, &new_events, &timeline).await?;

    let mut outcome = vec![Stored::TokenGone; batch.len()];
    for (&i, inserted) in stored_ones.iter().zip(inserted) {
        outcome[i] = if inserted { Stored::Recorded } else { Stored::Duplicate };
    }

    // Jobs, then repeats: a repeat of a webhook earlier in this batch finds its job.
    let mut caused = Vec::new();
    for i in 0..batch.len() {
        if let (Stored::Recorded, Some(job), None) = (outcome[i], &batch[i].webhook.job, why[i]) {
            caused.push((batch[i].webhook.client, job, ids[i], &batch[i].span));
            outcome[i] = Stored::Queued;
        }
    }
    queue.enqueue_batch(&mut tx, &caused).await?;
    for i in 0..batch.len() {
        let (request, w) = (batch[i], &batch[i].webhook);
        if outcome[i] == Stored::Duplicate {
            let original = events::id_by_dedup(&mut tx, w.client, &w.dedup_key).await?;
            if let Some(original) = original {
                queue.caused_again(&mut tx, w.client, original).instrument(request.span.clone()).await?;
            }
        }
    }
    let committing = Instant::now();
    tx.commit().await?;
    COUNTERS.commit_us.fetch_add(micros(committing), Relaxed);
    COUNTERS.batches.fetch_add(1, Relaxed);
    COUNTERS.webhooks.fetch_add(batch.len() as u64, Relaxed);
    COUNTERS.busy_us.fetch_add(micros(started), Relaxed);
    COUNTERS.waited_us.fetch_add(waited, Relaxed);
    Ok(outcome)
}
