//! Invariant 1: secrets leave the vault only into an outbound request. This runs a whole
//! agency story against the real binary with debug logging and searches everything it wrote,
//! and everything it answered, for the plaintexts.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::agent::PASSWORD;
use crate::support::process::Running;
use crate::support::{Agent, Engine, TestDb};

const FLW_SECRET: &str = "FLWSECK_TEST-7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f-X";
const FLW_PUBLIC: &str = "FLWPUBK_TEST-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d-X";
const WEBHOOK_HASH: &str = "hash-that-only-flutterwave-knows-42";
const NEW_PASSWORD: &str = "saffron kettle 9921 orbit";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_or_a_response_on_sqlite() {
    no_secret_reaches_a_log_line_or_a_response(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "set PIPEPAY_TEST_DATABASE_URL to run on PostgreSQL")]
async fn no_secret_reaches_a_log_line_or_a_response_on_postgres() {
    no_secret_reaches_a_log_line_or_a_response(Engine::Postgres).await;
}

async fn no_secret_reaches_a_log_line_or_a_response(engine: Engine) {
    let db = TestDb::new(engine).await;
    let dir = tempfile::tempdir().unwrap();
    let master = pipepay::vault::MasterKeys::generate_entry("m1");
    let flw = crate::fakes::flutterwave::FakeFlutterwave::start().await;
    flw.add_merchant(FLW_SECRET, WEBHOOK_HASH);
    let running = Running::start(
        dir.path(),
        &[
            ("PIPEPAY_DATABASE_URL", &db.url),
            ("PIPEPAY_MASTER_KEYS", &master),
            ("PIPEPAY_LOG", "trace"),
            ("PIPEPAY_FLUTTERWAVE_API_URL", &flw.base()),
        ],
    );
    let mut secrets: Vec<String> =
        vec![PASSWORD.into(), NEW_PASSWORD.into(), FLW_SECRET.into(), WEBHOOK_HASH.into(), FLW_PUBLIC.into()];
    secrets.push(master.split(':').nth(1).unwrap().to_owned());
    let mut answers = Vec::new();

    let mut owner = Agent::new(running.url(""));
    let signed_up = owner
        .send(
            Method::POST,
            "/api/v1/auth/signup",
            Some(&json!({"email": "secret@agency.ng", "password": PASSWORD, "agency_name": "Hush"})),
        )
        .await;
    for cookie in signed_up.headers().get_all("set-cookie") {
        let value = cookie.to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
        secrets.push(value);
    }
    let me: Value = signed_up.json().await.unwrap();
    owner.csrf = me["csrf_token"].as_str().map(str::to_owned);
    let agency = me["agencies"][0]["id"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/agencies/{agency}");

    // Wrong passwords and malformed keys on the way: errors must not echo them either.
    let wrong = owner
        .post(
            "/api/v1/auth/login",
            json!({"email": "secret@agency.ng", "password": "wrong-password-typed-here"}),
        )
        .await;
    secrets.push("wrong-password-typed-here".into());
    answers.push(wrong.text().await.unwrap());

    let created =
        owner.expect(Method::POST, &format!("{base}/clients"), Some(json!({"name": "Quiet Ltd"})), 201).await;
    let client = created["client"]["id"].as_str().unwrap().to_owned();
    secrets.push(created["ingress_token"].as_str().unwrap().into());
    let keys_path = format!("{base}/clients/{client}/flutterwave-keys");
    let almost = "FLWSECK_TEST-almost-a-key-but-not-quite";
    secrets.push(almost.into());
    let refused = owner.put(&keys_path, json!({"secret_key": almost, "webhook_hash": WEBHOOK_HASH})).await;
    assert_eq!(refused.status(), 422);
    answers.push(refused.text().await.unwrap());
    let set = owner
        .expect(
            Method::PUT,
            &keys_path,
            Some(json!({"secret_key": FLW_SECRET, "webhook_hash": WEBHOOK_HASH, "public_key": FLW_PUBLIC})),
            200,
        )
        .await;
    assert_eq!(set["secret_key"], "••••5f-X", "shown masked to its last four characters");
    assert_eq!(set["mode"], "test");
    // This answer deliberately shows the webhook URL (with the ingress token) to paste into
    // Flutterwave; of the Flutterwave secrets it holds only masks.
    let set_text = set.to_string();
    assert!(
        !set_text.contains(FLW_SECRET) && !set_text.contains(WEBHOOK_HASH) && !set_text.contains(FLW_PUBLIC)
    );
    answers.push(owner.json(&keys_path).await.to_string());

    let rotated =
        owner.expect(Method::POST, &format!("{base}/clients/{client}/ingress-token"), None, 200).await;
    secrets.push(rotated["ingress_token"].as_str().unwrap().into());
    let key = owner
        .expect(
            Method::POST,
            &format!("{base}/api-keys"),
            Some(json!({"name": "zapier", "role": "admin"})),
            201,
        )
        .await;
    secrets.push(key["key"].as_str().unwrap().into());
    let script = Agent { bearer: Some(key["key"].as_str().unwrap().into()), ..Agent::new(running.url("")) };
    answers.push(script.json(&keys_path).await.to_string());
    let invited = owner
        .expect(
            Method::POST,
            &format!("{base}/invitations"),
            Some(json!({"email": "new@agency.ng", "role": "member"})),
            201,
        )
        .await;
    secrets.push(invited["token"].as_str().unwrap().into());
    let newcomer = Agent::new(running.url(""));
    newcomer
        .expect(
            Method::POST,
            "/api/v1/invitations/accept",
            Some(json!({"token": invited["token"], "password": PASSWORD})),
            201,
        )
        .await;
    owner
        .expect(
            Method::POST,
            "/api/v1/auth/password",
            Some(json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
            200,
        )
        .await;
    answers.push(owner.json(&format!("{base}/audit")).await.to_string());
    answers.push(owner.json(&format!("{base}/clients")).await.to_string());

    let logs = running.terminate();
    assert!(logs.lines().count() > 20, "the scenario was logged: {logs}");
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a log line holds a secret ({}...)",
            &secret[..6.min(secret.len())]
        );
        for answer in &answers {
            assert!(!answer.contains(secret.as_str()), "an answer holds a secret: {answer}");
        }
    }
}
