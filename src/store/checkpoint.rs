//! SQLite's WAL checkpoints, taken off the write path.
//!
//! By default the connection whose COMMIT takes the write-ahead log past 1,000 pages copies the
//! log into the database file and syncs it before that COMMIT returns. With one write
//! connection for the process (see `SqliteDb`), that connection is the ingress's group commit,
//! so every few dozen batches one batch, and every webhook waiting behind it, paid for a whole
//! checkpoint: the ingress's tail latency. Here a read connection checkpoints a few times a
//! second instead (PASSIVE: it never blocks the writer, and readers never block it for long),
//! and the writer checkpoints itself only past [`WRITER_FALLBACK_PAGES`], should this task ever
//! fall behind. A checkpoint moves committed pages from one file to the other; it has no part in
//! whether a commit is durable.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Db;

/// The write connection's own `wal_autocheckpoint`: 64 MB of log with 4 KB pages.
pub const WRITER_FALLBACK_PAGES: u32 = 16_384;

/// How often the log is checkpointed.
const EVERY: Duration = Duration::from_millis(250);

/// Checkpoints a SQLite database's log until `stop`; returns at once on PostgreSQL, which
/// checkpoints itself.
pub async fn run(db: Db, stop: CancellationToken) {
    let Db::Sqlite(sqlite) = db else { return };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        // (busy, pages in the log, pages copied): nothing to act on, the next round goes on.
        let result: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&*sqlite).await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not checkpoint the SQLite write-ahead log");
        }
    }
}
