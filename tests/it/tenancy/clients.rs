//! Client accounts: the ingress token is shown once, stored hashed, and rotation retires it.

use pipepay::auth::tokens;
use reqwest::Method;

use crate::on_both_engines;
use crate::support::{Engine, TestApp};

on_both_engines!(the_ingress_token_is_shown_once_and_rotation_retires_it);

async fn lookup(app: &TestApp, token: &str) -> Option<String> {
    let mut tx = app.db.read().await.unwrap();
    let found = pipepay::store::clients::by_ingress_token(&mut tx, &tokens::hash(token)).await.unwrap();
    tx.commit().await.unwrap();
    found.map(|c| c.id.to_string())
}

async fn the_ingress_token_is_shown_once_and_rotation_retires_it(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--public-url", "https://pay.agency.example"]).await;
    let owner = app.sign_up("hooks@agency.ng", "Hooks").await;
    let created = owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/clients", owner.agency),
            Some(serde_json::json!({"name": "Hooked"})),
            201,
        )
        .await;
    let client = created["client"]["id"].as_str().unwrap();
    let token = created["ingress_token"].as_str().unwrap();
    assert!(token.len() >= 40, "at least 128 random bits: {token}");
    assert_eq!(created["webhook_urls"]["kommo"], format!("https://pay.agency.example/hooks/{token}/kommo"));
    assert_eq!(
        created["webhook_urls"]["flutterwave"],
        format!("https://pay.agency.example/hooks/{token}/flutterwave")
    );
    let shown = owner.agent.json(&format!("/api/v1/agencies/{}/clients/{client}", owner.agency)).await;
    assert!(!shown.to_string().contains(token), "never shown again");
    assert_eq!(lookup(&app, token).await.as_deref(), Some(client));

    let rotated = owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/clients/{client}/ingress-token", owner.agency),
            None,
            200,
        )
        .await;
    let new_token = rotated["ingress_token"].as_str().unwrap();
    assert_ne!(new_token, token);
    assert_eq!(lookup(&app, token).await, None, "the old token stops working at once");
    assert_eq!(lookup(&app, new_token).await.as_deref(), Some(client));
    let audit =
        owner.agent.json(&format!("/api/v1/agencies/{}/audit?client_id={client}", owner.agency)).await;
    assert_eq!(audit[0]["action"], "client.ingress_token_rotated");
    app.stop().await;
}
