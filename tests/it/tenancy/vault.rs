//! The vault: secrets bound to their tenant and field, destroyed with their account, and
//! master keys rotated while pipepay serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pipepay::ids::ClientId;
use pipepay::tenants::flutterwave_keys::{SECRET_KEY, WEBHOOK_HASH};
use pipepay::vault::{MasterKeys, Vault, VaultError};
use reqwest::Method;
use serde_json::json;

use crate::on_both_engines;
use crate::support::agent::PASSWORD;
use crate::support::{Engine, TestApp, TestDb, problem};

on_both_engines!(
    ciphertext_moved_to_another_tenant_or_field_does_not_open,
    deleting_a_client_account_destroys_its_data_key,
    master_keys_rotate_while_pipepay_serves,
);

const SECRET: &str = "FLWSECK_TEST-5f1e0c3a9b7d4e2f8a6c1b3d5e7f9a0b-X";

async fn set_keys(
    app: &TestApp,
    owner: &crate::support::agent::Owner,
    client: &str,
    secret: &str,
    hash: &str,
) {
    app.flutterwave_merchant(secret, hash);
    owner
        .agent
        .expect(
            Method::PUT,
            &format!("/api/v1/agencies/{}/clients/{client}/flutterwave-keys", owner.agency),
            Some(json!({"secret_key": secret, "webhook_hash": hash})),
            200,
        )
        .await;
}

async fn sealed(app: &TestApp, client: &str, name: &str) -> String {
    let id: uuid::Uuid = client.parse().unwrap();
    pipepay::on_db!(&app.db, pool => sqlx::query_scalar(
        "SELECT sealed FROM client_secrets WHERE client_id = $1 AND name = $2")
        .bind(id).bind(name).fetch_one(pool).await)
    .unwrap()
}

fn client_id(id: &str) -> ClientId {
    ClientId(id.parse().unwrap())
}

async fn ciphertext_moved_to_another_tenant_or_field_does_not_open(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("vault@agency.ng", "Vault").await;
    let (x, _) = app.add_client(&owner.agent, &owner.agency, "X").await;
    let (y, _) = app.add_client(&owner.agent, &owner.agency, "Y").await;
    set_keys(&app, &owner, &x, SECRET, "x-webhook-hash-0123456789").await;
    set_keys(
        &app,
        &owner,
        &y,
        "FLWSECK_TEST-00000000000000000000000000000000-X",
        "y-webhook-hash-0123456789",
    )
    .await;

    let x_secret = sealed(&app, &x, "flutterwave_secret_key").await;
    assert!(x_secret.starts_with("pp1."), "sealed values record their format: {x_secret}");
    assert!(!x_secret.contains("5f1e0c3a"), "no plaintext at rest");

    let vault = Vault::new(app.master_keys.parse().unwrap());
    let mut tx = app.db.read().await.unwrap();
    let opened = vault.open(&mut tx, client_id(&x), SECRET_KEY, &x_secret).await.unwrap();
    assert_eq!(opened.expose(), SECRET);
    let other_tenant = vault.open(&mut tx, client_id(&y), SECRET_KEY, &x_secret).await;
    assert!(matches!(other_tenant, Err(VaultError::Open)), "{other_tenant:?}");
    let other_field = vault.open(&mut tx, client_id(&x), WEBHOOK_HASH, &x_secret).await;
    assert!(matches!(other_field, Err(VaultError::Open)), "{other_field:?}");
    tx.commit().await.unwrap();

    // Through the API as well: a row holding another tenant's ciphertext is an error, never
    // the other tenant's key.
    let y_id: uuid::Uuid = y.parse().unwrap();
    pipepay::on_db!(&app.db, pool => sqlx::query(
        "UPDATE client_secrets SET sealed = $1 WHERE client_id = $2 AND name = 'flutterwave_secret_key'")
        .bind(&x_secret).bind(y_id).execute(pool).await.map(|_| ()))
    .unwrap();
    let response =
        owner.agent.get(&format!("/api/v1/agencies/{}/clients/{y}/flutterwave-keys", owner.agency)).await;
    let body = problem(response, 500).await;
    assert!(!body.to_string().contains("9a0b-X") && !body.to_string().contains("pp1."), "{body}");
    app.stop().await;
}

async fn deleting_a_client_account_destroys_its_data_key(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("shred@agency.ke", "Shred").await;
    let (x, _) = app.add_client(&owner.agent, &owner.agency, "Gone Soon").await;
    set_keys(&app, &owner, &x, SECRET, "x-webhook-hash-0123456789").await;
    let kept_aside = sealed(&app, &x, "flutterwave_secret_key").await;

    owner
        .agent
        .expect(Method::DELETE, &format!("/api/v1/agencies/{}/clients/{x}", owner.agency), None, 204)
        .await;
    let vault = Vault::new(app.master_keys.parse().unwrap());
    let mut tx = app.db.read().await.unwrap();
    let opened = vault.open(&mut tx, client_id(&x), SECRET_KEY, &kept_aside).await;
    assert!(matches!(opened, Err(VaultError::NoDataKey(_))), "{opened:?}");
    tx.commit().await.unwrap();
    let left: i64 = pipepay::on_db!(&app.db, pool => sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM data_keys) + (SELECT COUNT(*) FROM client_secrets)").fetch_one(pool).await).unwrap();
    assert_eq!(left, 0);
    let audit = owner.agent.json(&format!("/api/v1/agencies/{}/audit?client_id={x}", owner.agency)).await;
    assert_eq!(audit[0]["action"], "client.deleted", "the history outlives the account");
    app.stop().await;
}

async fn master_keys_rotate_while_pipepay_serves(engine: Engine) {
    let test_db = Arc::new(TestDb::new(engine).await);
    let old = MasterKeys::generate_entry("old");
    let new = MasterKeys::generate_entry("new");
    let first = TestApp::start(test_db.clone(), &old, &[]).await;
    let owner = first.sign_up("rotate@agency.gh", "Rotation").await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let (id, _) = first.add_client(&owner.agent, &owner.agency, &format!("Client {i}")).await;
        set_keys(
            &first,
            &owner,
            &id,
            &format!("FLWSECK_TEST-{i:032}-X"),
            &format!("hash-{i}-0123456789abcdef"),
        )
        .await;
        clients.push(id);
    }
    first.stop().await;

    // Step 1 of a rotation: serve with the new key in front of the old one.
    let both = format!("{new},{old}");
    let serving = TestApp::start(test_db.clone(), &both, &[]).await;
    let mut reader = serving.anonymous();
    reader.log_in("rotate@agency.gh", PASSWORD).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
        let paths: Vec<String> = clients
            .iter()
            .map(|c| format!("/api/v1/agencies/{}/clients/{c}/flutterwave-keys", owner.agency))
            .collect();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for path in &paths {
                    let response = reader.get(path).await;
                    reads.fetch_add(1, Ordering::Relaxed);
                    if response.status() != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // Step 2: `pipepay keys rotate`, twice: the second run finds nothing left to do.
    let (url, keys) = (test_db.url.clone(), both.clone());
    let rotate = move || {
        let out = crate::support::process::pipepay(
            std::env::temp_dir().as_path(),
            &[("PIPEPAY_DATABASE_URL", url.as_str()), ("PIPEPAY_MASTER_KEYS", keys.as_str())],
        )
        .args(["keys", "rotate"])
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let report = tokio::task::spawn_blocking(rotate.clone()).await.unwrap();
    assert!(
        report.contains("rewrapped 3 data keys under master key new; 0 were under it already"),
        "{report}"
    );
    let again = tokio::task::spawn_blocking(rotate).await.unwrap();
    assert!(again.contains("rewrapped 0 data keys") && again.contains("3 were under it already"), "{again}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "every read during the rotation succeeded");
    serving.stop().await;

    // Step 3: drop the old key. Every secret still opens.
    let after = TestApp::start(test_db.clone(), &new, &[]).await;
    let mut agent = after.anonymous();
    agent.log_in("rotate@agency.gh", PASSWORD).await;
    for (i, client) in clients.iter().enumerate() {
        let keys =
            agent.json(&format!("/api/v1/agencies/{}/clients/{client}/flutterwave-keys", owner.agency)).await;
        assert_eq!(keys["secret_key"], format!("••••{i:02}-X"), "{keys}");
    }
    after.stop().await;
}
