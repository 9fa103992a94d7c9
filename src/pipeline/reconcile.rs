//! `reconcile` jobs, and their schedule: open links are verified by reference now and then, so
//! a payment whose webhook was lost (or never sent: Flutterwave retries only if the merchant
//! enabled it) still closes its deal.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{JobContext, Pipeline, Step, read_tx, write_tx};
use crate::background::{self, Lease};
use crate::clock::now_ms;
use crate::queue::{Job, Queue};
use crate::store::links;
use crate::store::{Db, StoreError};

/// Links checked per client account per run; Flutterwave's limits are per merchant account.
/// They are taken least recently checked first, so every open link's turn comes.
const PER_RUN: i64 = 25;

impl Pipeline {
    pub(super) async fn reconcile(&self, cx: &JobContext) -> Step {
        let before = now_ms() - i64::try_from(self.reconcile_after.as_millis()).unwrap_or(0);
        let open = read_tx!(self.db, tx => links::open_before(&mut tx, cx.client, before, PER_RUN).await?)?;
        if open.is_empty() {
            return Ok(());
        }
        let secret = cx.secret()?;
        for link in &open {
            // Marked first: a link whose check fails (its lead deleted in Kommo, say) then waits
            // behind the others instead of stopping every run at the same place.
            write_tx!(self.db, tx => links::checked(&mut tx, link.id, now_ms()).await?)?;
            let found = self.flutterwave.verify_by_reference(secret, link.tx_ref.as_str()).await?;
            // Only a completed payment matters here; failures were (or will be) reported by
            // their own webhooks, and an unpaid link simply stays open.
            if let Some(transaction) = found.filter(|t| t.is_successful()) {
                self.settle(cx, link, &transaction).await?;
            }
        }
        Ok(())
    }
}

/// Enqueues a reconcile job for every client account with open links, once per interval, while
/// this instance holds the background lease. The dedup key names the interval as well, so a
/// lease changing hands mid-interval still adds one job.
pub async fn schedule(db: Db, queue: Queue, every: Duration, lease: Arc<Lease>, stop: CancellationToken) {
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(600_000).max(1000);
    background::every(lease, every, every, stop, || async {
        match enqueue_all(&db, &queue, every_ms).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::debug!(count, "reconciliation scheduled");
                queue.wake();
            }
            Err(error) => tracing::warn!(%error, "could not schedule reconciliation"),
        }
    })
    .await
}

async fn enqueue_all(db: &Db, queue: &Queue, every_ms: i64) -> Result<usize, StoreError> {
    let window = now_ms() / every_ms;
    let mut tx = db.write().await?;
    let clients = links::clients_with_open_links(&mut tx, 10_000).await?;
    let mut added = 0;
    for client in clients {
        let key = format!("reconcile:{window}");
        if queue.enqueue(&mut tx, client, &Job::Reconcile, None, Some(&key)).await? {
            added += 1;
        }
    }
    tx.commit().await?;
    Ok(added)
}

/// Runs reconciliation for every client account now (used at start-up and by tests).
pub async fn run_now(db: &Db, queue: &Queue) -> Result<usize, StoreError> {
    let added = enqueue_all(db, queue, 1).await?;
    queue.wake();
    Ok(added)
}
