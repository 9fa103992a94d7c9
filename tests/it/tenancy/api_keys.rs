//! API keys: shown once, stored hashed, scoped to their agency, revocable, last use recorded.

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_engines;
use crate::support::agent::Owner;
use crate::support::{Agent, Engine, TestApp, problem};

on_both_engines!(
    automation_uses_a_key_until_it_is_revoked,
    malformed_keys_are_refused,
    a_demoted_admins_key_can_no_longer_do_admin_things,
    a_removed_members_keys_are_revoked_with_them,
    a_key_made_during_a_demotion_never_outranks_its_creator,
);

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

/// An admin and the admin key they made; returns the admin's session, user id and the key.
async fn admin_with_key(app: &TestApp, owner: &Owner, email: &str) -> (Agent, String, String, String) {
    let admin = app.add_member(owner, email, "admin").await;
    let admin_id = admin.json("/api/v1/me").await["user"]["id"].as_str().unwrap().to_owned();
    let (key_id, key) = app.add_api_key(&admin, &owner.agency, "admin").await;
    (admin, admin_id, key_id, key)
}

fn listed<'a>(keys: &'a Value, id: &str) -> &'a Value {
    keys.as_array().unwrap().iter().find(|k| k["id"] == id).unwrap()
}

async fn a_demoted_admins_key_can_no_longer_do_admin_things(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@agency.gh", "Accra").await;
    let (_, admin_id, key_id, key) = admin_with_key(&app, &owner, "admin@agency.gh").await;
    let clients = format!("/api/v1/agencies/{}/clients", owner.agency);
    let script = app.with_key(&key);
    script.expect(Method::POST, &clients, Some(json!({"name": "Before"})), 201).await;

    let member = format!("/api/v1/agencies/{}/members/{admin_id}", owner.agency);
    owner.agent.expect(Method::PATCH, &member, Some(json!({"role": "member"})), 200).await;
    problem(script.post(&clients, json!({"name": "After"})).await, 403).await;
    script.json(&clients).await;

    let keys = owner.agent.json(&format!("/api/v1/agencies/{}/api-keys", owner.agency)).await;
    let shown = listed(&keys, &key_id);
    assert_eq!(shown["role"], "member", "{shown}");
    assert_eq!(shown["created_by"], "admin@agency.gh");
    assert!(shown["revoked_at"].is_null());
    let audit = owner.agent.json(&format!("/api/v1/agencies/{}/audit", owner.agency)).await;
    let lowered = audit.as_array().unwrap().iter().find(|e| e["action"] == "api_key.role_lowered").unwrap();
    assert_eq!(lowered["actor"], "owner@agency.gh");
    assert_eq!(lowered["detail"]["id"], key_id.as_str());

    // Made admin again, the person does not raise the key again: it stays what it was lowered to.
    owner.agent.expect(Method::PATCH, &member, Some(json!({"role": "admin"})), 200).await;
    problem(script.post(&clients, json!({"name": "Still not"})).await, 403).await;

    // A key stored with more power than its creator has (made before the rule) is worth
    // only the creator's role when it is used.
    owner.agent.expect(Method::PATCH, &member, Some(json!({"role": "member"})), 200).await;
    pipepay::on_db!(&app.db, pool => sqlx::query("UPDATE api_keys SET role = 'admin'")
        .execute(pool).await.map(|_| ()))
    .unwrap();
    problem(script.post(&clients, json!({"name": "Legacy"})).await, 403).await;
    app.stop().await;
}

async fn a_removed_members_keys_are_revoked_with_them(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@agency.sn", "Dakar").await;
    let (_, admin_id, key_id, key) = admin_with_key(&app, &owner, "admin@agency.sn").await;
    let (_, owners_key) = app.add_api_key(&owner.agent, &owner.agency, "admin").await;
    let clients = format!("/api/v1/agencies/{}/clients", owner.agency);
    let script = app.with_key(&key);
    script.json(&clients).await;

    let member = format!("/api/v1/agencies/{}/members/{admin_id}", owner.agency);
    owner.agent.expect(Method::DELETE, &member, None, 204).await;
    problem(script.get(&clients).await, 401).await;
    app.with_key(&owners_key).json(&clients).await;

    let keys = owner.agent.json(&format!("/api/v1/agencies/{}/api-keys", owner.agency)).await;
    let shown = listed(&keys, &key_id);
    assert!(shown["revoked_at"].is_string(), "{shown}");
    assert_eq!(shown["created_by"], "admin@agency.sn");
    let audit = owner.agent.json(&format!("/api/v1/agencies/{}/audit", owner.agency)).await;
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions[..2], ["member.removed", "api_key.revoked"], "one change, newest first");
    assert_eq!(audit[1]["detail"]["id"], key_id.as_str());

    // Invited back, the person does not bring the key back to life.
    owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/invitations", owner.agency),
            Some(json!({"email": "admin@agency.sn", "role": "admin"})),
            201,
        )
        .await;
    problem(script.get(&clients).await, 401).await;

    // A live key whose creator is gone (made before the rule) is refused when it is used.
    pipepay::on_db!(&app.db, pool => sqlx::query("UPDATE api_keys SET revoked_at = NULL")
        .execute(pool).await.map(|_| ()))
    .unwrap();
    problem(script.get(&clients).await, 401).await;
    app.stop().await;
}

/// An admin creating a key while an owner makes them a member: whichever commits first, no
/// admin key of theirs is left once they are a member.
async fn a_key_made_during_a_demotion_never_outranks_its_creator(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@agency.ml", "Bamako").await;
    let (admin, admin_id, _, _) = admin_with_key(&app, &owner, "admin@agency.ml").await;
    let member = format!("/api/v1/agencies/{}/members/{admin_id}", owner.agency);
    let keys = format!("/api/v1/agencies/{}/api-keys", owner.agency);
    for round in 0..12 {
        owner.agent.expect(Method::PATCH, &member, Some(json!({"role": "admin"})), 200).await;
        let body = json!({"name": format!("Race {round}"), "role": "admin"});
        let (created, demoted) =
            tokio::join!(admin.post(&keys, body), owner.agent.patch(&member, json!({"role": "member"})));
        assert_eq!(demoted.status(), 200, "round {round}");
        assert!(matches!(created.status().as_u16(), 201 | 403), "round {round}: {}", created.status());
        let live_admin_keys: i64 = pipepay::on_db!(&app.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL",
        )
        .fetch_one(pool).await)
        .unwrap();
        assert_eq!(live_admin_keys, 0, "round {round}: a member holds an admin key");
    }
    app.stop().await;
}
