//! Transactions over either engine, and the `on_tx!` macro that runs one query text on both.

use std::cell::Cell;
use std::future::Future;

use sqlx::{Postgres, Sqlite, Transaction};

use super::{Backend, Db, StoreError};

/// An open transaction. Dropping it without [`Tx::commit`] rolls back, so an early `?` never
/// leaves half a change behind.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection, compiled once per engine.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::store::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

tokio::task_local! {
    static OPENED: Cell<u64>;
}

/// Runs `work`, counting the transactions it opens (for a job's trace: each one is a round trip
/// and, on SQLite, a turn at the write lock).
pub async fn counting<F: Future>(work: F) -> (F::Output, u64) {
    OPENED
        .scope(Cell::new(0), async {
            let output = work.await;
            (output, OPENED.with(Cell::get))
        })
        .await
}

fn opened() {
    let _ = OPENED.try_with(|count| count.set(count.get() + 1));
}

impl Db {
    /// A transaction that will write. On SQLite it runs on the process's one write
    /// connection (see `SqliteDb`), so writes wait in turn here rather than on SQLite's lock,
    /// and it still takes the lock up front (`BEGIN IMMEDIATE`): another process (a second
    /// instance, the CLI) may hold it, and a deferred transaction that reads and then writes
    /// can fail with SQLITE_BUSY without waiting, because upgrading its snapshot is unsafe.
    ///
    /// Never open a write transaction while holding another: on SQLite the second waits for
    /// the connection the first holds (as it would wait for the lock) and fails after the
    /// acquire timeout.
    pub async fn write(&self) -> Result<Tx, StoreError> {
        opened();
        Ok(match self {
            Db::Sqlite(sqlite) => Tx::Sqlite(sqlite.writes().begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A transaction that only reads: a consistent snapshot that does not block writers.
    pub async fn read(&self) -> Result<Tx, StoreError> {
        opened();
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }
}
