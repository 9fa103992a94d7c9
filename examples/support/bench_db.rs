//! What the benchmarks share (compiled into each through `#[path]`): a database of the run's
//! own, removed when the run ends.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, PgConnection};

/// Removes what [`fresh_database`] made when the run ends, even on an error.
pub enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin: String, schema: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Guard::Postgres { admin, schema } = self else { return };
        let (admin, schema) = (admin.clone(), schema.clone());
        // Drop cannot await; a small runtime on its own thread drops the schema.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                    let _ = conn.execute(sqlx::AssertSqlSafe(drop)).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A database nobody else uses: a temporary SQLite file, or a new PostgreSQL schema.
pub async fn fresh_database(url: Option<&str>, prefix: &str) -> anyhow::Result<(String, Guard)> {
    match url {
        None => {
            let dir = tempfile::tempdir().context("temporary folder for SQLite")?;
            let url = format!("sqlite://{}", dir.path().join("pipepay.db").display());
            Ok((url, Guard::Sqlite(dir)))
        }
        Some(admin) if admin.starts_with("postgres") => {
            let mut conn = PgConnection::connect(admin).await.context("connecting to PostgreSQL")?;
            let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let schema = format!("{prefix}_{secs}_{}", uuid::Uuid::new_v4().simple());
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                .await
                .context("creating the benchmark's schema")?;
            let _ = conn.close().await;
            let mut url = url::Url::parse(admin).context("the PostgreSQL URL")?;
            url.query_pairs_mut().append_pair("options", &format!("-c search_path={schema}"));
            Ok((url.to_string(), Guard::Postgres { admin: admin.to_owned(), schema }))
        }
        Some(other) => bail!("--database-url must be a postgres:// URL (or unset for SQLite), not {other}"),
    }
}
