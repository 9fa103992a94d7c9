//! The storage contract every backend honours, starting with migrations and readiness.

use pipepay::store::{DatabaseUrl, Db};

use crate::on_both_engines;
use crate::support::{Engine, TestApp, TestDb, problem};

on_both_engines!(
    migrations_apply_once_and_readiness_follows_them,
    a_database_missing_a_migration_is_not_ready,
    two_instances_migrate_at_once
);

async fn connect(db: &TestDb) -> Db {
    let url: DatabaseUrl = db.url.parse().unwrap();
    Db::connect(&url, 2).await.unwrap()
}

async fn migrations_apply_once_and_readiness_follows_them(engine: Engine) {
    let test_db = TestDb::new(engine).await;
    let db = connect(&test_db).await;

    // A fresh database has every migration pending, in order, and is not ready.
    let before = db.readiness().await.unwrap();
    assert!(!before.is_ready(), "{before:?}");
    assert_eq!(before.pending_migrations, shipped_versions(&test_db), "every shipped migration pends");
    db.migrate().await.unwrap();
    let migrated = db.readiness().await.unwrap();
    assert!(migrated.is_ready(), "{migrated:?}");
    assert!(migrated.pending_migrations.is_empty());

    db.migrate().await.expect("migrating again changes nothing and succeeds");
    assert!(db.readiness().await.unwrap().is_ready());
    db.close().await;
}

/// A database where one migration is not recorded (an older binary's database, a migration
/// added since) reports that migration pending, and the server says 503 until it is applied.
async fn a_database_missing_a_migration_is_not_ready(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let latest = *shipped_versions(&app.test_db).last().unwrap();
    pipepay::on_db!(&app.db, pool => sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(latest)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))
    .unwrap();
    assert_eq!(app.db.readiness().await.unwrap().pending_migrations, vec![latest]);
    let body = problem(app.get("/readyz").await, 503).await;
    assert!(body["detail"].as_str().unwrap().contains(&latest.to_string()), "{body}");
    app.stop().await;
}

/// The versions of the migration files for `db`'s engine, read from the folder the binary
/// embeds, so the test does not trust the code under test to list them.
fn shipped_versions(db: &TestDb) -> Vec<i64> {
    let folder = match db.engine {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(folder);
    let mut versions: Vec<i64> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| name.split('_').next().unwrap().parse().unwrap())
        .collect();
    versions.sort();
    versions
}

async fn two_instances_migrate_at_once(engine: Engine) {
    let test_db = TestDb::new(engine).await;
    let (a, b) = (connect(&test_db).await, connect(&test_db).await);
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    assert!(a.readiness().await.unwrap().is_ready());
    a.close().await;
    b.close().await;
}

/// SQLite's write-ahead log is checkpointed by `store::checkpoint::run` on a read connection,
/// not by the write connection inside a COMMIT (which would hold up the ingress's batch and
/// every webhook behind it), and the log still starts over once it is copied.
#[tokio::test]
async fn sqlite_checkpoints_happen_off_the_write_connection() {
    let test_db = TestDb::new(Engine::Sqlite).await;
    let db = connect(&test_db).await;
    let Db::Sqlite(sqlite) = &db else { unreachable!() };
    let writes = sqlite.writes();
    let pragma = |name: &'static str, pool: &sqlx::SqlitePool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        pragma("wal_autocheckpoint", writes).await,
        16_384,
        "the writer's own checkpoints are a fallback"
    );
    assert_eq!(pragma("temp_store", writes).await, 2, "temporary structures in memory");
    assert_eq!(pragma("cache_size", writes).await, -32_768, "the writer's page cache holds the hot indexes");
    assert_eq!(pragma("temp_store", sqlite).await, 2);

    sqlx::query("CREATE TABLE scratch (body BLOB NOT NULL)").execute(writes).await.unwrap();
    let write_pages = |pages: usize| async move {
        for _ in 0..pages / 100 {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
                 INSERT INTO scratch (body) SELECT randomblob(4000) FROM n",
            )
            .execute(writes)
            .await
            .unwrap();
        }
    };
    // The log's header counts the times it started over (its "checkpoint sequence number",
    // bytes 12-15, big-endian), which happens at the first write after a checkpoint copied it all.
    let wal = std::path::PathBuf::from(format!("{}-wal", test_db.url.trim_start_matches("sqlite://")));
    let restarts = || {
        let header = std::fs::read(&wal).unwrap();
        u32::from_be_bytes(header[12..16].try_into().unwrap())
    };
    write_pages(100).await;
    let before = restarts();
    // 3,000 pages of 4 KB in 30 commits: past SQLite's default of 1,000 pages per checkpoint.
    write_pages(3_000).await;
    let wal_bytes = std::fs::metadata(&wal).unwrap().len();
    assert!(wal_bytes > 3_000 * 4_096, "the writer checkpointed by itself: the log is {wal_bytes} bytes");
    assert_eq!(restarts(), before, "the writer checkpointed by itself");

    let stop = tokio_util::sync::CancellationToken::new();
    let checkpoints = tokio::spawn(pipepay::store::checkpoint::run(db.clone(), stop.clone()));
    let mut started_over = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        sqlx::query("INSERT INTO scratch (body) VALUES (x'00')").execute(writes).await.unwrap();
        if restarts() != before {
            started_over = true;
            break;
        }
    }
    stop.cancel();
    checkpoints.await.unwrap();
    assert!(started_over, "the log was never checkpointed and started over");
    db.close().await;
}
