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
