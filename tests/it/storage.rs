//! The storage contract every backend honours, starting with migrations and readiness.

use pipepay::store::{DatabaseUrl, Db};

use crate::on_both_engines;
use crate::support::{Engine, TestDb};

on_both_engines!(migrations_apply_once_and_readiness_follows_them, two_instances_migrate_at_once);

async fn connect(db: &TestDb) -> Db {
    let url: DatabaseUrl = db.url.parse().unwrap();
    Db::connect(&url, 2).await.unwrap()
}

async fn migrations_apply_once_and_readiness_follows_them(engine: Engine) {
    let test_db = TestDb::new(engine).await;
    let db = connect(&test_db).await;

    let before = db.readiness().await.unwrap();
    let migrated = {
        db.migrate().await.unwrap();
        db.readiness().await.unwrap()
    };
    assert!(migrated.is_ready(), "{migrated:?}");
    assert!(migrated.pending_migrations.is_empty());
    // Whatever was pending before is exactly what migrating applied.
    assert_eq!(before.is_ready(), before.pending_migrations.is_empty());

    db.migrate().await.expect("migrating again changes nothing and succeeds");
    assert!(db.readiness().await.unwrap().is_ready());
    db.close().await;
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
