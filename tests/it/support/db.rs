//! A fresh database per test: a temporary SQLite file, or a PostgreSQL schema of its own.

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;

pub const POSTGRES_ENV: &str = "PIPEPAY_TEST_DATABASE_URL";
const SCHEMA_PREFIX: &str = "pipepay_t_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A database no other test sees; removed when dropped.
pub struct TestDb {
    pub engine: Engine,
    pub url: String,
    _dir: Option<TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("data/pipepay.db").display());
                TestDb { engine, url, _dir: Some(dir), postgres: None }
            }
            Engine::Postgres => {
                // Built with the variable (build.rs compiled these tests in) but run without it.
                let admin = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
                    panic!("PostgreSQL tests need {POSTGRES_ENV} when they run, as when built")
                });
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but PostgreSQL does not answer: {e}"));
                drop_stale_schemas(&mut conn).await;
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                let schema = format!("{SCHEMA_PREFIX}{now}_{}", uuid::Uuid::new_v4().simple());
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                    .await
                    .expect("create test schema");
                let _ = conn.close().await;
                let mut url = url::Url::parse(&admin).expect("PostgreSQL URL parses");
                url.query_pairs_mut().append_pair("options", &format!("-c search_path={schema}"));
                TestDb { engine, url: url.to_string(), _dir: None, postgres: Some((admin, schema)) }
            }
        }
    }
}

/// Schemas left by test runs that were killed before they could clean up.
async fn drop_stale_schemas(conn: &mut PgConnection) {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'pipepay\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for schema in schemas {
        let created = schema
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| c + 6 * 3600 < now) {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
                .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, schema)) = self.postgres.take() else { return };
        // Drop runs outside async context; a short-lived runtime on its own thread does it.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
