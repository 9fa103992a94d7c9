//! Storage: connection pools for SQLite and PostgreSQL, migrations, and one contract over both.
//!
//! Every query is written once in SQL both engines accept (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`) and run through [`on_db!`], which monomorphises it for each driver. Where the
//! engines must differ (claiming jobs, say), the match is written out by hand next to the
//! reason. Timestamps are integer milliseconds since the epoch in both engines and money is
//! decimal text, so no value changes shape between backends.

pub mod activity;
pub mod agencies;
pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod calls;
pub mod checkpoint;
pub mod clients;
pub mod data_keys;
pub mod email_tokens;
pub mod events;
pub mod ingress_batch;
pub mod jobs;
pub mod kommo;
pub mod leases;
pub mod links;
pub mod notices;
pub mod outbox;
pub mod overview;
pub mod pauses;
pub mod payments;
pub mod stats;
pub mod telemetry;
mod text_enum;
pub mod timeline;
mod tx;
mod url;
pub mod users;

use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use self::tx::{Tx, counting};
pub use self::url::DatabaseUrl;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long start-up waits for the database before giving up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite serialises writers; a writer waits this long for the lock instead of failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The write connection's page cache, as SQLite's `cache_size` takes it: negative is KiB.
const WRITER_CACHE_KIB: &str = "-32768";

/// Runs `$body` with `$pool` bound to whichever pool (or connection, or transaction) `$db`
/// holds. The body is compiled once per backend, so a query written once serves both.
/// On SQLite `$pool` is the pool for reads (see [`SqliteDb`]); write through [`Db::write`].
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                let $pool: &sqlx::SqlitePool = sqlite;
                $body
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the folder for the SQLite database at {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the database at {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot lock the SQLite database for migrating")]
    LockFile(#[source] std::io::Error),
    #[error("cannot apply migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("stored data is not what this version expects: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether a unique constraint refused the write; callers turn it into a 409 or 422.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A connection pool to one of the two supported engines.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// SQLite's two pools: one connection that every write transaction of the process takes in
/// turn, and the rest for reads. SQLite lets one writer in at a time whatever the pool; with
/// writers on many connections each one that finds the lock taken sleeps in SQLite's busy
/// handler (backing off up to 100 ms a time) while the lock may well be free again, and the
/// tail latency of every write, the ingress's group commit included, is those sleeps. Waiting
/// for the one write connection instead is a queue in tokio (first come, first served) that
/// hands the lock over the moment it is released. WAL readers never wait on the writer.
///
/// Dereferences to the read pool, for queries run on the pool directly.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    reads: SqlitePool,
    writes: SqlitePool,
}

impl SqliteDb {
    /// The pool of one connection that write transactions take in turn.
    pub fn writes(&self) -> &SqlitePool {
        &self.writes
    }

    async fn close(&self) {
        // Writes first: a write in flight finishes before the readers go.
        self.writes.close().await;
        self.reads.close().await;
    }
}

impl std::ops::Deref for SqliteDb {
    type Target = SqlitePool;

    fn deref(&self) -> &SqlitePool {
        &self.reads
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub backend: Backend,
    /// Migrations this binary carries that the database has not applied.
    pub pending_migrations: Vec<i64>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.pending_migrations.is_empty()
    }
}

impl Db {
    /// Opens a pool, creating the SQLite file and its folder when needed.
    pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> Result<Db, StoreError> {
        match url {
            DatabaseUrl::Sqlite(options) => {
                if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                        path: dir.display().to_string(),
                        source,
                    })?;
                }
                // FULL sync: a webhook is acknowledged only once it is on disk, even in WAL.
                let options = options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    // Sorters and statement journals in memory, not in files created and
                    // deleted per statement (the ingress's batch inserts made one every other
                    // batch). Neither has a part in recovering from a crash.
                    .pragma("temp_store", "memory");
                probe::<SqliteConnection>(&options, url).await?;
                // No ping before each acquire: the database is a file in this process, and a
                // ping is one more hand-off to the connection's thread on every write batch.
                let pool = |max, options: SqliteConnectOptions| {
                    SqlitePoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .test_before_acquire(false)
                        .connect_with(options)
                };
                let failed = |source| StoreError::Connect { url: url.redacted(), source };
                // The write connection is one of the `max_connections`, unless there is only one.
                // It checkpoints the log itself only as a fallback: `checkpoint::run` keeps
                // checkpoints off the write path.
                // And a page cache big enough for the indexes every batch touches (SQLite's
                // default is 2 MB, so a busy ingress re-read evicted pages from the file on
                // every batch); it grows only as far as pages are used.
                let fallback = checkpoint::WRITER_FALLBACK_PAGES.to_string();
                let writer = options
                    .clone()
                    .pragma("wal_autocheckpoint", fallback)
                    .pragma("cache_size", WRITER_CACHE_KIB);
                let writes = pool(1, writer).await.map_err(failed)?;
                let reads = pool(max_connections.saturating_sub(1).max(1), options).await.map_err(failed)?;
                Ok(Db::Sqlite(SqliteDb { reads, writes }))
            }
            DatabaseUrl::Postgres(options) => {
                probe::<PgConnection>(options, url).await?;
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options.clone())
                    .await
                    .map_err(|source| StoreError::Connect { url: url.redacted(), source })?;
                Ok(Db::Postgres(pool))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Db::Sqlite(_) => &SQLITE_MIGRATIONS,
            Db::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies every pending migration. Safe to run from several processes at once: sqlx takes
    /// an advisory lock on PostgreSQL; on SQLite, whose migrator locks nothing, a lock file next
    /// to the database serialises them.
    #[tracing::instrument(skip(self), fields(backend = self.backend().name()))]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Db::Sqlite(sqlite) => {
                let _lock = sqlite_migration_lock(sqlite.writes()).await?;
                SQLITE_MIGRATIONS.run(sqlite.writes()).await?;
            }
        }
        Ok(())
    }

    /// Checks the database answers and holds every migration this binary knows.
    pub async fn readiness(&self) -> Result<Readiness, StoreError> {
        let applied: Vec<i64> = on_db!(self, pool => {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(pool)
                .await
        })
        .or_else(|e| match &e {
            // A database nobody has migrated yet has no bookkeeping table: everything pends.
            sqlx::Error::Database(db) if is_undefined_table(db.as_ref()) => Ok(Vec::new()),
            _ => Err(e),
        })?;
        let pending_migrations = self
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect();
        Ok(Readiness { backend: self.backend(), pending_migrations })
    }

    /// Closes every connection; waits for checked-out ones to come back.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(sqlite) => sqlite.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// An exclusive lock on `<database>.migrate-lock`, held until dropped.
async fn sqlite_migration_lock(pool: &SqlitePool) -> Result<std::fs::File, StoreError> {
    let path = format!("{}.migrate-lock", pool.connect_options().get_filename().display());
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::LockFile(std::io::Error::other(e)))?;
    locked.map_err(StoreError::LockFile)
}

/// Opens and closes one connection, because a pool that cannot connect only reports that it
/// timed out, and the operator needs the reason (refused, unknown host, bad password).
async fn probe<C: Connection>(options: &C::Options, url: &DatabaseUrl) -> Result<(), StoreError> {
    let failed = |source| StoreError::Connect { url: url.redacted(), source };
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, C::connect_with(options))
        .await
        .map_err(|_| failed(sqlx::Error::PoolTimedOut))?
        .map_err(failed)?;
    connection.close().await.map_err(failed)
}

fn is_undefined_table(error: &dyn sqlx::error::DatabaseError) -> bool {
    // PostgreSQL reports 42P01; SQLite has no code for it, only the message.
    error.code().as_deref() == Some("42P01") || error.message().contains("no such table")
}
