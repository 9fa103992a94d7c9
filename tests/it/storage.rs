//! The storage contract every backend honours, starting with migrations and readiness.

use pipepay::ids::{AgencyId, ClientId, LeadId, TxRef};
use pipepay::money::Money;
use pipepay::store::{DatabaseUrl, Db, activity, agencies, clients, links, payments, timeline};
use rust_decimal::Decimal;

use crate::on_both_engines;
use crate::support::{Engine, TestApp, TestDb, problem};

on_both_engines!(
    migrations_apply_once_and_readiness_follows_them,
    a_database_missing_a_migration_is_not_ready,
    two_instances_migrate_at_once,
    an_unknown_stored_activity_word_fails_the_read_naming_it,
    a_stored_amount_that_is_no_decimal_fails_the_read_naming_it,
    amounts_are_stored_as_the_same_text_and_read_back_exactly,
    a_references_all_digit_tail_finds_its_link_and_a_deal_id_its_deal,
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

/// A migrated database with one agency and one client account in it, written by the store.
async fn with_client(engine: Engine) -> (TestDb, Db, AgencyId, ClientId) {
    let test_db = TestDb::new(engine).await;
    let db = connect(&test_db).await;
    db.migrate().await.unwrap();
    let agency = agencies::AgencyRow { id: AgencyId::new(), name: "Agency".into(), created_at: 1 };
    let client = clients::ClientRow {
        id: ClientId::new(),
        agency_id: agency.id,
        name: "Client".into(),
        settings: "{}".into(),
        created_at: 1,
        updated_at: 1,
    };
    let mut tx = db.write().await.unwrap();
    agencies::insert(&mut tx, &agency).await.unwrap();
    clients::insert(&mut tx, &client, b"ingress token hash").await.unwrap();
    tx.commit().await.unwrap();
    (test_db, db, agency.id, client.id)
}

/// Runs one statement with `$1` the client account and `$2` a fresh row id; returns the id.
async fn given(db: &Db, client: ClientId, sql: &'static str) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let mut tx = db.write().await.unwrap();
    pipepay::on_tx!(&mut tx, c => sqlx::query(sql).bind(client).bind(id).execute(c).await.map(drop)).unwrap();
    tx.commit().await.unwrap();
    id
}

/// Only pipepay writes the timeline, so a word it does not know (a newer version's, or a
/// damaged row) is an error that says which column holds what, never a guess or a panic.
async fn an_unknown_stored_activity_word_fails_the_read_naming_it(engine: Engine) {
    let (_test_db, db, _, client) = with_client(engine).await;
    let good = given(
        &db,
        client,
        "INSERT INTO activity (id, client_id, at, kind, outcome, lead_id, tx_ref, detail) \
         VALUES ($2, $1, 1, 'link_created', 'ok', 7, 'pp-1', 'fine')",
    )
    .await;
    let mut tx = db.read().await.unwrap();
    let read = timeline::entry(&mut tx, client, good).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(read.kind, activity::ActivityKind::LinkCreated);
    assert_eq!((read.lead_id, read.tx_ref), (Some(LeadId(7)), Some(TxRef("pp-1".into()))));

    let cases = [
        (
            "kind",
            "teleported",
            "INSERT INTO activity (id, client_id, at, kind, outcome, detail) \
             VALUES ($2, $1, 2, 'teleported', 'ok', 'from the future')",
        ),
        (
            "outcome",
            "shrugged",
            "INSERT INTO activity (id, client_id, at, kind, outcome, detail) \
             VALUES ($2, $1, 3, 'received', 'shrugged', 'from the future')",
        ),
    ];
    for (column, word, sql) in cases {
        let id = given(&db, client, sql).await;
        let mut tx = db.read().await.unwrap();
        let one = timeline::entry(&mut tx, client, id).await.map(drop).unwrap_err().to_string();
        let all = activity::list(&mut tx, client, &activity::Filter::default(), 10)
            .await
            .map(drop)
            .unwrap_err()
            .to_string();
        tx.commit().await.unwrap();
        for error in [one, all] {
            assert!(error.contains(&format!("\"{column}\"")), "names the column {column}: {error}");
            assert!(error.contains(&format!("\"{word}\"")), "names the word {word}: {error}");
        }
        let mut tx = db.write().await.unwrap();
        pipepay::on_tx!(&mut tx, c => sqlx::query("DELETE FROM activity WHERE id = $1").bind(id).execute(c).await.map(drop))
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// A price that is not a decimal would charge or close wrong if guessed at: the read fails,
/// naming the column and the text, for the link's price and for what was paid.
async fn a_stored_amount_that_is_no_decimal_fails_the_read_naming_it(engine: Engine) {
    let (_test_db, db, agency, client) = with_client(engine).await;
    let cases = [
        (
            "pp-bad-price",
            "\"amount\"",
            "\"about 10\"",
            "INSERT INTO payment_links (id, client_id, lead_id, pipeline_id, tx_ref, amount, currency, state, \
             created_at, updated_at) VALUES ($2, $1, 7, 1, 'pp-bad-price', 'about 10', 'KES', 'open', 1, 1)",
        ),
        (
            "pp-bad-paid",
            "\"paid_amount\"",
            "\"1,075.00\"",
            "INSERT INTO payment_links (id, client_id, lead_id, pipeline_id, tx_ref, amount, currency, state, \
             paid_amount, paid_currency, created_at, updated_at) \
             VALUES ($2, $1, 8, 1, 'pp-bad-paid', '1075.00', 'KES', 'paid', '1,075.00', 'KES', 1, 1)",
        ),
        (
            "pp-half-paid",
            "\"paid_currency\"",
            "\"1075.00\"",
            "INSERT INTO payment_links (id, client_id, lead_id, pipeline_id, tx_ref, amount, currency, state, \
             paid_amount, created_at, updated_at) \
             VALUES ($2, $1, 9, 1, 'pp-half-paid', '1075.00', 'KES', 'paid', '1075.00', 1, 1)",
        ),
    ];
    for (tx_ref, column, text, sql) in cases {
        given(&db, client, sql).await;
        let mut tx = db.read().await.unwrap();
        let link = links::by_tx_ref(&mut tx, client, &TxRef(tx_ref.into())).await.map(drop).unwrap_err();
        // The payments page reads the same columns, and fails the same way.
        let search = payments::Search { lead_id: None, text: Some(payments::like_pattern(tx_ref)) };
        let page = payments::list(&mut tx, agency, client, &search, 10, 0).await.map(drop).unwrap_err();
        tx.commit().await.unwrap();
        for error in [link.to_string(), page.to_string()] {
            assert!(error.contains(column), "{tx_ref}: names the column {column}: {error}");
            assert!(error.contains(text), "{tx_ref}: names the text {text}: {error}");
        }
    }
}

/// Amounts are written as the same decimal text as before they were typed (the currency's
/// decimals for a price, Flutterwave's own figure for a payment) and read back exactly.
async fn amounts_are_stored_as_the_same_text_and_read_back_exactly(engine: Engine) {
    let (_test_db, db, agency, client) = with_client(engine).await;
    let id = uuid::Uuid::now_v7();
    let tx_ref = TxRef::new();
    let price = Money::new(Decimal::new(10_750, 1), "KES");
    let paid = Money::new(Decimal::new(1_075_005, 3), "KES");
    let mut tx = db.write().await.unwrap();
    links::insert_creating(&mut tx, id, client, LeadId(42), 5, &tx_ref, &price, 1).await.unwrap();
    assert!(links::paid(&mut tx, id, 99, &paid, "card", "FLW-1", 2).await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = db.read().await.unwrap();
    let stored: (String, String, Option<String>, Option<String>) = pipepay::on_tx!(&mut tx, c =>
        sqlx::query_as("SELECT amount, currency, paid_amount, paid_currency FROM payment_links WHERE id = $1")
            .bind(id)
            .fetch_one(c)
            .await)
    .unwrap();
    let read = links::by_tx_ref(&mut tx, client, &tx_ref).await.unwrap().unwrap();
    let by_lead = links::for_lead(&mut tx, client, LeadId(42)).await.unwrap();
    let listed = payments::list(&mut tx, agency, client, &payments::Search::default(), 10, 0).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored, ("1075.00".into(), "KES".into(), Some("1075.005".into()), Some("KES".into())));
    assert_eq!((read.lead_id, read.pipeline_id, &read.tx_ref), (LeadId(42), 5, &tx_ref));
    assert_eq!(read.price, price);
    assert_eq!(read.price.amount.to_string(), "1075.00", "the stored text, to the digit");
    assert_eq!(read.paid.as_ref().map(|p| p.amount.to_string()), Some("1075.005".into()));
    assert_eq!(read.paid, Some(paid));
    assert_eq!(by_lead.len(), 1);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].lead_id, &listed[0].tx_ref, listed[0].state),
        (LeadId(42), &tx_ref, links::LinkState::Paid)
    );
    assert_eq!((&listed[0].price, &listed[0].paid), (&read.price, &read.paid));
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

/// A reference's tail can be all digits: searched for, it must find its link, not be taken for a
/// deal id that has no link. A number that is a deal with links still finds only that deal.
async fn a_references_all_digit_tail_finds_its_link_and_a_deal_id_its_deal(engine: Engine) {
    let (_test_db, db, agency, client) = with_client(engine).await;
    let price = Money::new(Decimal::new(500, 0), "KES");
    let digits = TxRef("pp-0190aaaabbbbcccc7d1234567890".into());
    let mut tx = db.write().await.unwrap();
    links::insert_creating(&mut tx, uuid::Uuid::now_v7(), client, LeadId(801), 5, &digits, &price, 1)
        .await
        .unwrap();
    // Deal 567 has a link, and 567 is also inside the first reference.
    links::insert_creating(&mut tx, uuid::Uuid::now_v7(), client, LeadId(567), 5, &TxRef::new(), &price, 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.read().await.unwrap();
    let mut deals_for = async |q: &str| -> Vec<i64> {
        let search = pipepay::tenants::payments::search(q);
        let rows = payments::list(&mut tx, agency, client, &search, 10, 0).await.unwrap();
        rows.iter().map(|r| r.lead_id.0).collect()
    };
    assert_eq!(deals_for("1234567890").await, [801], "the tail of the reference");
    assert_eq!(deals_for("801").await, [801], "a deal id with a link");
    assert_eq!(deals_for("567").await, [567], "a deal id with a link, though also in a reference");
    assert!(deals_for("999").await.is_empty());
}
