//! Background duties run on one instance at a time, and move to another when it goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pipepay::background::{self, LEASE, Lease};
use pipepay::store::{DatabaseUrl, Db, leases};
use tokio_util::sync::CancellationToken;

use crate::on_both_engines;
use crate::support::{Engine, TestDb};

async fn connect(db: &TestDb) -> Db {
    let url: DatabaseUrl = db.url.parse().unwrap();
    let db = Db::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    db
}

fn lease(db: &Db, name: &str) -> Arc<Lease> {
    Lease::with_timing(db.clone(), name.to_owned(), Duration::from_millis(50), Duration::from_millis(400))
}

async fn holder(db: &Db) -> Option<String> {
    let mut tx = db.read().await.unwrap();
    let held = leases::holder(&mut tx, LEASE).await.unwrap();
    tx.commit().await.unwrap();
    held.map(|(holder, _)| holder)
}

async fn one_instance_holds_the_lease_and_another_takes_over_when_it_stops(engine: Engine) {
    let test_db = TestDb::new(engine).await;
    let (db_a, db_b) = (connect(&test_db).await, connect(&test_db).await);
    let (a, b) = (lease(&db_a, "a"), lease(&db_b, "b"));

    assert!(a.beat().await.unwrap(), "a free lease is taken");
    assert!(!b.beat().await.unwrap(), "a running lease is not taken");
    assert!(a.beat().await.unwrap(), "the holder renews");
    assert!(a.is_held() && !b.is_held());

    // A clean stop releases at once: b takes over at its next beat.
    let stop_a = CancellationToken::new();
    let running = tokio::spawn(a.clone().run(stop_a.clone()));
    stop_a.cancel();
    running.await.unwrap();
    assert!(!a.is_held());
    assert_eq!(holder(&db_a).await, None);
    assert!(b.beat().await.unwrap());

    // A holder that dies (stops beating without releasing) loses the lease once its term lapses.
    assert!(!a.beat().await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.beat().await.unwrap(), "a lapsed lease is taken over");
    assert!(!b.beat().await.unwrap());
    assert_eq!(holder(&db_a).await.as_deref(), Some("a"));
}

async fn a_duty_runs_only_on_the_instance_holding_the_lease(engine: Engine) {
    let test_db = TestDb::new(engine).await;
    let (db_a, db_b) = (connect(&test_db).await, connect(&test_db).await);
    let (a, b) = (lease(&db_a, "a"), lease(&db_b, "b"));
    let stop = CancellationToken::new();
    let runs = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut tasks = Vec::new();
    // a beats first, so it is the holder; b only ever watches.
    assert!(a.beat().await.unwrap());
    for (lease, count) in [(a.clone(), runs[0].clone()), (b.clone(), runs[1].clone())] {
        tasks.push(tokio::spawn(lease.clone().run(stop.clone())));
        tasks.push(tokio::spawn(background::every(
            lease,
            Duration::from_millis(10),
            Duration::from_millis(20),
            stop.clone(),
            move || {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            },
        )));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(runs[0].load(Ordering::SeqCst) >= 3, "the holder ran its duty");
    assert_eq!(runs[1].load(Ordering::SeqCst), 0, "the other instance never did");
}

on_both_engines!(
    one_instance_holds_the_lease_and_another_takes_over_when_it_stops,
    a_duty_runs_only_on_the_instance_holding_the_lease,
);
