//! The ingress's group commit (issue 14): webhooks arriving together are stored in one
//! transaction, each answered only once it is stored, with every guarantee of one-by-one.

use std::sync::Arc;
use std::time::Duration;

use pipepay::ids::ClientId;
use pipepay::ingress::writer::{Stored, Webhook, WriteError, Writer};
use pipepay::queue::{Queue, Settings};

use super::{HASH, Shop};
use crate::on_both_engines;
use crate::support::Engine;

on_both_engines!(
    concurrent_webhooks_are_all_stored_and_a_repeat_in_the_same_batch_is_one,
    a_token_rotated_before_the_batch_commits_stores_nothing_of_its_webhooks,
    a_batch_that_cannot_be_stored_answers_503_and_acknowledges_nothing,
    stopping_stores_what_was_handed_over_and_refuses_the_rest,
);

/// A v3 `charge.completed` for a reference that is not one of pipepay's links.
fn charge(id: u64) -> String {
    format!(
        r#"{{"event":"charge.completed","data":{{"id":{id},"tx_ref":"other-{id}","flw_ref":"X/FLW{id}","amount":10,"currency":"NGN","charged_amount":10,"status":"successful","payment_type":"card","customer":{{"id":1,"email":"a@example.com"}}}},"event.type":"CARD_TRANSACTION"}}"#
    )
}

async fn deliver(shop: &Shop, body: String) -> u16 {
    let response =
        shop.app.http.post(&shop.flw_hook).header("verif-hash", HASH).body(body).send().await.unwrap();
    response.status().as_u16()
}

async fn count(shop: &Shop, sql: &'static str) -> i64 {
    pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar(sql).fetch_one(pool).await).unwrap()
}

async fn concurrent_webhooks_are_all_stored_and_a_repeat_in_the_same_batch_is_one(engine: Engine) {
    let shop =
        Arc::new(Shop::open_with(engine, &["--ingress-rate", "10000", "--ingress-burst", "10000"]).await);
    // Forty different webhooks and ten deliveries of one more, all at once.
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..50u64 {
        let shop = shop.clone();
        sends.spawn(async move { deliver(&shop, charge(if n < 40 { 1000 + n } else { 999 })).await });
    }
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(count(&shop, "SELECT COUNT(*) FROM inbound_events WHERE source = 'flutterwave'").await, 41);
    let timeline =
        count(&shop, "SELECT COUNT(*) FROM activity WHERE detail LIKE 'Flutterwave: other-%'").await;
    assert_eq!(timeline, 41, "one timeline entry per stored webhook, none for a repeat");
    Arc::into_inner(shop).unwrap().app.stop().await;
}

/// A writer of the test's own on the test's database, and the client's id and token hash.
async fn writer_for(shop: &Shop) -> (Writer, ClientId, Vec<u8>) {
    let db = shop.app.db.writer().await.unwrap();
    let queue = Queue::new(
        db.clone(),
        Settings {
            workers: 1,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            poll: Duration::from_secs(1),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
        },
    );
    let token = shop.flw_hook.split('/').rev().nth(1).unwrap();
    (Writer::start(db, queue), shop.client.parse().unwrap(), pipepay::auth::tokens::hash(token))
}

fn webhook(client: ClientId, token_hash: &[u8], n: u64) -> Webhook {
    Webhook {
        client,
        token_hash: token_hash.to_vec(),
        source: "flutterwave",
        dedup_key: format!("test:{n}"),
        payload: charge(n),
        received_at: 1,
        what: format!("Flutterwave: other-{n} successful"),
        ignored: Some("a test".into()),
        link: None,
        job: None,
    }
}

async fn a_token_rotated_before_the_batch_commits_stores_nothing_of_its_webhooks(engine: Engine) {
    let shop = Shop::open(engine).await;
    let (writer, client, token_hash) = writer_for(&shop).await;
    let writer = Arc::new(writer);
    // Half carry the current token, half one the account no longer has (rotated meanwhile).
    let mut stores = tokio::task::JoinSet::new();
    for n in 0..20u64 {
        let (writer, hash) =
            (writer.clone(), if n % 2 == 0 { token_hash.clone() } else { b"rotated".to_vec() });
        stores.spawn(async move { (n, writer.store(webhook(client, &hash, n)).await.unwrap()) });
    }
    while let Some(done) = stores.join_next().await {
        let (n, stored) = done.unwrap();
        assert_eq!(stored, if n % 2 == 0 { Stored::Recorded } else { Stored::TokenGone }, "{n}");
    }
    assert_eq!(count(&shop, "SELECT COUNT(*) FROM inbound_events WHERE dedup_key LIKE 'test:%'").await, 10);
    writer.drain().await;
    shop.app.stop().await;
}

async fn a_batch_that_cannot_be_stored_answers_503_and_acknowledges_nothing(engine: Engine) {
    let shop =
        Arc::new(Shop::open_with(engine, &["--ingress-rate", "10000", "--ingress-burst", "10000"]).await);
    assert_eq!(deliver(&shop, charge(1)).await, 200);
    pipepay::on_db!(&shop.app.db, pool => sqlx::query("DROP TABLE activity").execute(pool).await.map(|_| ()))
        .unwrap();
    let mut sends = tokio::task::JoinSet::new();
    for n in 2..22u64 {
        let shop = shop.clone();
        sends.spawn(async move { deliver(&shop, charge(n)).await });
    }
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), 503, "the timeline could not be written, so nothing is acknowledged");
    }
    let stored = count(&shop, "SELECT COUNT(*) FROM inbound_events WHERE source = 'flutterwave'").await;
    assert_eq!(stored, 1, "the failed batches' events were rolled back with them");
    Arc::into_inner(shop).unwrap().app.stop().await;
}

async fn stopping_stores_what_was_handed_over_and_refuses_the_rest(engine: Engine) {
    let shop = Shop::open(engine).await;
    let (writer, client, token_hash) = writer_for(&shop).await;
    let writer = Arc::new(writer);
    let mut stores = tokio::task::JoinSet::new();
    for n in 0..30u64 {
        let (writer, hash) = (writer.clone(), token_hash.clone());
        stores.spawn(async move { writer.store(webhook(client, &hash, n)).await });
    }
    // Every store is handed over before the writer is told to stop.
    while writer.handed_over() < 30 {
        tokio::task::yield_now().await;
    }
    writer.drain().await;
    let mut acknowledged = 0;
    while let Some(done) = stores.join_next().await {
        assert_eq!(done.unwrap().unwrap(), Stored::Recorded);
        acknowledged += 1;
    }
    assert_eq!(acknowledged, 30);
    assert_eq!(count(&shop, "SELECT COUNT(*) FROM inbound_events WHERE dedup_key LIKE 'test:%'").await, 30);
    assert!(matches!(writer.store(webhook(client, &token_hash, 99)).await, Err(WriteError::Stopped)));
    shop.app.stop().await;
}
