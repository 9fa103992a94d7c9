//! Invariant 3: a crash at any point after a webhook is acknowledged loses nothing and
//! duplicates nothing the customer or the CRM can see. The real binary is killed (SIGKILL)
//! after Flutterwave created the link and before the note reached Kommo, then started again.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::{INVOICE, SECRET, eventually};
use crate::fakes::flutterwave::FakeFlutterwave;
use crate::fakes::kommo::{FakeKommo, Fault};
use crate::kommo::{ACME, CLIENT_ID, CLIENT_SECRET};
use crate::support::process::Running;
use crate::support::{Agent, Engine, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_link_and_its_note_duplicates_nothing_on_sqlite() {
    crash_between_link_and_note(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "set PIPEPAY_TEST_DATABASE_URL to run on PostgreSQL")]
async fn a_crash_between_the_link_and_its_note_duplicates_nothing_on_postgres() {
    crash_between_link_and_note(Engine::Postgres).await;
}

async fn crash_between_link_and_note(engine: Engine) {
    let db = TestDb::new(engine).await;
    let dir = tempfile::tempdir().unwrap();
    let kommo = FakeKommo::start().await;
    let flw = FakeFlutterwave::start().await;
    let master = pipepay::vault::MasterKeys::generate_entry("crash");
    let mut env = super::child_env(&db, &master, &kommo, &flw);
    env.extend([("PIPEPAY_KOMMO_TIMEOUT", "60".into()), ("PIPEPAY_JOB_LEASE", "2".into())]);
    let env = super::borrowed(&env);
    // A fixed port, so the webhook and OAuth URLs stay valid across the restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let first = Running::start_at(dir.path(), &env, &listen);

    kommo.register_integration(CLIENT_ID, CLIENT_SECRET, &first.url("/oauth/kommo/callback"));
    super::open_acme(&kommo);
    let mut owner = Agent::new(first.url(""));
    let me = owner
        .expect(Method::POST, "/api/v1/auth/signup", Some(json!({"email": "crash@agency.ke", "password": crate::support::agent::PASSWORD, "agency_name": "Crash"})), 201)
        .await;
    owner.csrf = me["csrf_token"].as_str().map(str::to_owned);
    let agency = me["agencies"][0]["id"].as_str().unwrap().to_owned();
    let created = owner
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{agency}/clients"),
            Some(json!({"name": "Crash Ltd"})),
            201,
        )
        .await;
    let client = created["client"]["id"].as_str().unwrap().to_owned();
    super::wire(&owner, &agency, &client, &kommo, &flw).await;

    kommo.add_contact(ACME, 70, "Achieng", Some("achieng@example.co.ke"), None);
    kommo.add_lead(ACME, super::sale(7, "Crash order", 450, 70));
    assert_eq!(kommo.move_lead(ACME, 7, INVOICE).await, [200]);

    // The moment Flutterwave has created the link, Kommo stops answering: the note is in
    // flight when pipepay dies.
    eventually(Duration::from_secs(20), "the link created", || async { !flw.created(SECRET).is_empty() })
        .await;
    kommo.fail_next(ACME, vec![Fault::Timeout]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(kommo.notes(ACME, 7).is_empty(), "the note had not reached Kommo when pipepay died");
    first.crash();

    let second = Running::start_at(dir.path(), &env, &listen);
    eventually(Duration::from_secs(30), "the note after the restart", || async {
        kommo.notes(ACME, 7).len() == 1
    })
    .await;
    let url: pipepay::store::DatabaseUrl = db.url.parse().unwrap();
    let store = pipepay::store::Db::connect(&url, 1).await.unwrap();
    crate::support::queue_settled(&store).await;
    store.close().await;
    assert_eq!(flw.created(SECRET).len(), 1, "one link: the restart did not create another");
    assert_eq!(kommo.notes(ACME, 7).len(), 1, "one note");
    assert!(kommo.notes(ACME, 7)[0].text.contains(&flw.created(SECRET)[0].link));
    second.terminate();
}
