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
    a_batch_stores_each_payload_exactly_and_the_first_of_a_key_wins,
    an_ignored_payload_over_the_prefix_keeps_its_prefix_digest_and_length,
    writes_take_turns_on_one_connection_and_the_ingress_waits_its_turn,
    a_batch_queues_one_job_per_webhook_acted_on_and_none_for_the_rest,
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
    let db = shop.app.db.clone();
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

/// Payloads that JSON has to escape (the SQLite batch travels as one JSON text), in one batch:
/// each is stored byte for byte, and of two with one dedup key the first handed over wins.
async fn a_batch_stores_each_payload_exactly_and_the_first_of_a_key_wins(engine: Engine) {
    let shop = Shop::open(engine).await;
    let (writer, client, token_hash) = writer_for(&shop).await;
    let awkward = [
        "quotes \" and backslashes \\ and a tab\t and a newline\n".to_owned(),
        "unicode: ₦1,500.75 — naïve 👍 \u{7f} \u{1}".to_owned(),
        "[1, 2, {\"not\": \"an array of rows\"}]".to_owned(),
        String::new(),
        "x".repeat(5000),
    ];
    // Handed over one after the other before the writer looks: all in one batch, in order.
    let mut stores = Vec::new();
    for (n, payload) in awkward.iter().enumerate() {
        let mut w = webhook(client, &token_hash, n as u64);
        w.payload = payload.clone();
        w.ignored = None;
        stores.push(writer.store(w));
    }
    let mut first = webhook(client, &token_hash, 100);
    first.payload = "the first of key 100".into();
    let mut second = webhook(client, &token_hash, 100);
    second.payload = "the second of key 100".into();
    stores.push(writer.store(first));
    stores.push(writer.store(second));
    let stored: Vec<Stored> =
        futures_util::future::join_all(stores).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(stored[..awkward.len()], vec![Stored::Recorded; awkward.len()]);
    let pair = &stored[awkward.len()..];
    // One writer (SQLite) takes them in order; PostgreSQL's writers may put the two in batches
    // that commit in either order, as two requests at once would be.
    let winner = match engine {
        Engine::Sqlite => {
            assert_eq!(pair, [Stored::Recorded, Stored::Duplicate]);
            "the first of key 100"
        }
        Engine::Postgres => match pair {
            [Stored::Recorded, Stored::Duplicate] => "the first of key 100",
            [Stored::Duplicate, Stored::Recorded] => "the second of key 100",
            other => panic!("exactly one of a key is stored: {other:?}"),
        },
    };
    for (n, payload) in awkward.iter().enumerate() {
        let key = format!("test:{n}");
        let got: (String, Option<String>, Option<i64>, String) =
            pipepay::on_db!(&shop.app.db, pool => sqlx::query_as(
            "SELECT payload, payload_sha256, payload_bytes, outcome FROM inbound_events WHERE dedup_key = $1",
        )
        .bind(&key)
        .fetch_one(pool)
        .await)
            .unwrap();
        assert_eq!(got, (payload.clone(), None, None, "queued".to_owned()), "{key}");
    }
    let kept: String = pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar(
        "SELECT payload FROM inbound_events WHERE dedup_key = 'test:100'",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(kept, winner);
    let client_id: uuid::Uuid = pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar(
        "SELECT client_id FROM activity WHERE detail LIKE 'Flutterwave: other-100 successful%'",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(client_id, client.0, "the timeline entry is the client's");
    writer.drain().await;
    shop.app.stop().await;
}

/// Ignored webhooks keep a prefix of a long payload with the whole's digest and length, as one
/// stored alone does.
async fn an_ignored_payload_over_the_prefix_keeps_its_prefix_digest_and_length(engine: Engine) {
    use sha2::Digest;
    let shop = Shop::open(engine).await;
    let (writer, client, token_hash) = writer_for(&shop).await;
    let long = format!("{}€{}", "a".repeat(2047), "b".repeat(3000));
    let mut w = webhook(client, &token_hash, 1);
    w.payload = long.clone();
    assert_eq!(writer.store(w).await.unwrap(), Stored::Recorded);
    let got: (String, Option<String>, Option<i64>, String, Option<String>) = pipepay::on_db!(&shop.app.db, pool => sqlx::query_as(
        "SELECT payload, payload_sha256, payload_bytes, outcome, detail FROM inbound_events WHERE dedup_key = 'test:1'",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    let digest = hex::encode(sha2::Sha256::digest(long.as_bytes()));
    let length = i64::try_from(long.len()).unwrap();
    // The cut falls inside the euro sign, so it goes back to the character boundary.
    let expected =
        ("a".repeat(2047), Some(digest), Some(length), "ignored".to_owned(), Some("a test".to_owned()));
    assert_eq!(got, expected);
    writer.drain().await;
    shop.app.stop().await;
}

/// Every write transaction of the process takes the same turn: while another write (say the
/// queue claiming a job) holds it, a webhook waits rather than failing or sleeping on a lock,
/// and is stored, and acknowledged, once that write commits.
async fn writes_take_turns_on_one_connection_and_the_ingress_waits_its_turn(engine: Engine) {
    let shop = Arc::new(Shop::open(engine).await);
    let db = shop.app.db.clone();
    let holding = db.write().await.unwrap();
    let delivery = {
        let shop = shop.clone();
        tokio::spawn(async move { deliver(&shop, charge(7)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    if engine == Engine::Sqlite {
        // One write connection: a second write waits for it.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), db.write()).await.is_err(),
            "a second write transaction got a connection while the first was open"
        );
        assert!(!delivery.is_finished(), "the webhook was answered before it could be stored");
    }
    holding.commit().await.unwrap();
    assert_eq!(delivery.await.unwrap(), 200);
    assert_eq!(count(&shop, "SELECT COUNT(*) FROM inbound_events WHERE source = 'flutterwave'").await, 1);
    Arc::into_inner(shop).unwrap().app.stop().await;
}

/// The jobs of a batch go in with one statement: each webhook acted on gets exactly one job,
/// tied to its own event; an ignored one, a reference that is not the client's link and a
/// repeat get none.
async fn a_batch_queues_one_job_per_webhook_acted_on_and_none_for_the_rest(engine: Engine) {
    use pipepay::ids::TxRef;
    use pipepay::queue::job::{Job, PaymentJob};
    let shop = Shop::open(engine).await;
    let (writer, client, token_hash) = writer_for(&shop).await;
    let paying = |n: u64| {
        let mut w = webhook(client, &token_hash, n);
        w.ignored = None;
        w.job = Some(Job::Payment(PaymentJob {
            status: "successful".into(),
            transaction_id: Some(n as i64),
            tx_ref: TxRef(format!("other-{n}")),
        }));
        w
    };
    let mut stores = Vec::new();
    for n in 0..5 {
        stores.push(writer.store(paying(n)));
    }
    let mut ignored = paying(5);
    ignored.ignored = Some("a test".into());
    stores.push(writer.store(ignored));
    let mut not_ours = paying(6);
    not_ours.link = Some(("never-issued".into(), "not one of our links".into()));
    stores.push(writer.store(not_ours));
    stores.push(writer.store(paying(0)));
    let stored: Vec<Stored> =
        futures_util::future::join_all(stores).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(&stored[..5], &[Stored::Queued; 5]);
    assert_eq!(&stored[5..], &[Stored::Recorded, Stored::Recorded, Stored::Duplicate]);
    let jobs: Vec<(String, String)> = pipepay::on_db!(&shop.app.db, pool => sqlx::query_as(
        "SELECT e.dedup_key, j.payload FROM jobs j JOIN inbound_events e ON e.id = j.event_id \
         WHERE j.kind = 'payment' ORDER BY e.dedup_key",
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    let keys: Vec<&str> = jobs.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["test:0", "test:1", "test:2", "test:3", "test:4"], "one job per webhook acted on");
    for (key, payload) in &jobs {
        let n = key.trim_start_matches("test:");
        assert!(payload.contains(&format!("other-{n}")), "{key}'s job carries its own reference: {payload}");
    }
    writer.drain().await;
    shop.app.stop().await;
}
