//! Deletes ignored webhooks older than `PIPEPAY_RETENTION_DAYS`, hourly, in short batches.
//! Events that caused a job are kept (a job's timeline and redelivery links point at them),
//! and so are events that were acted on: their dedup keys keep Kommo's repeats collapsing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::background::{self, Lease};
use crate::clock::now_ms;
use crate::store::{Db, StoreError, events};

const EVERY: Duration = Duration::from_secs(3600);
/// After the first heartbeat has settled who holds the background lease.
const FIRST: Duration = Duration::from_secs(10);
/// Rows per transaction: a pass never holds the write lock for long.
const BATCH: i64 = 1000;

/// Runs a pass soon after start and then every hour until `stop`, while this instance holds
/// the background lease (one sweeper per database).
pub async fn run(db: Db, keep: Duration, lease: Arc<Lease>, stop: CancellationToken) {
    background::every(lease, FIRST, EVERY, stop, || async {
        match sweep(&db, keep).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "old ignored webhooks deleted"),
            Err(error) => tracing::warn!(%error, "could not delete old ignored webhooks"),
        }
    })
    .await
}

/// Deletes ignored events received more than `keep` ago; how many went.
pub async fn sweep(db: &Db, keep: Duration) -> Result<u64, StoreError> {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let before = now_ms().saturating_sub(keep_ms);
    let mut total = 0;
    loop {
        let mut tx = db.write().await?;
        let deleted = events::delete_ignored_before(&mut tx, before, BATCH).await?;
        tx.commit().await?;
        total += deleted;
        if deleted < BATCH.unsigned_abs() {
            return Ok(total);
        }
    }
}
