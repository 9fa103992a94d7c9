//! API keys: shown once, stored hashed, scoped to their agency, revocable, last use recorded.

use reqwest::Method;
use serde_json::json;

use crate::on_both_engines;
use crate::support::{Engine, TestApp, problem};

on_both_engines!(automation_uses_a_key_until_it_is_revoked, malformed_keys_are_refused);

async fn automation_uses_a_key_until_it_is_revoked(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("ops@agency.za", "Cape").await;
    let keys = format!("/api/v1/agencies/{}/api-keys", owner.agency);
    let (id, key) = app.add_api_key(&owner.agent, &owner.agency, "admin").await;
    assert!(key.starts_with("ppk_") && key.len() >= 40, "{key}");

    let listed = owner.agent.json(&keys).await;
    assert!(!listed.to_string().contains(&key), "the key is never shown again");
    assert_eq!(listed[0]["prefix"], &key[..8]);
    assert!(listed[0]["last_used_at"].is_null());

    let script = app.with_key(&key);
    let created = script
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/clients", owner.agency),
            Some(json!({"name": "Via API"})),
            201,
        )
        .await;
    assert!(created["ingress_token"].as_str().unwrap().starts_with("pph_"));
    let listed = owner.agent.json(&keys).await;
    assert!(listed[0]["last_used_at"].is_string(), "last use is recorded");
    let stored: Vec<u8> =
        pipepay::on_db!(&app.db, pool => sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(pool).await)
        .unwrap();
    assert_eq!(stored.len(), 32, "only a SHA-256 of the key is stored");

    let audit = owner.agent.json(&format!("/api/v1/agencies/{}/audit", owner.agency)).await;
    assert_eq!(audit[0]["action"], "client.created");
    assert_eq!(audit[0]["actor_kind"], "api_key");
    assert_eq!(audit[0]["actor"], "admin automation");

    owner.agent.expect(Method::DELETE, &format!("{keys}/{id}"), None, 204).await;
    problem(script.get(&format!("/api/v1/agencies/{}/clients", owner.agency)).await, 401).await;
    app.stop().await;
}

async fn malformed_keys_are_refused(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("ops@agency.ug", "Kampala").await;
    let path = format!("/api/v1/agencies/{}/clients", owner.agency);
    for header in ["Bearer nope", "Basic dXNlcjpwYXNz", "Bearer ppk_madeup", "Bearer "] {
        let response = app.http.get(app.url(&path)).header("authorization", header).send().await.unwrap();
        problem(response, 401).await;
    }
    let owners_key = app.add_api_key(&owner.agent, &owner.agency, "member").await.1;
    let body = problem(app.with_key(&owners_key).get("/api/v1/me").await, 403).await;
    assert!(body["detail"].as_str().unwrap().contains("agency"));
    app.stop().await;
}
