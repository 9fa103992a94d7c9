//! Invitations, roles and leaving.

use reqwest::Method;
use serde_json::json;

use crate::on_both_engines;
use crate::support::agent::PASSWORD;
use crate::support::{Engine, TestApp, problem};

on_both_engines!(
    an_invitation_link_works_once,
    expired_and_revoked_invitations_do_not_work,
    an_existing_user_accepts_while_logged_in,
    the_last_owner_stays,
    a_removed_member_loses_access,
);

async fn invite(
    _app: &TestApp,
    owner: &crate::support::agent::Owner,
    email: &str,
    role: &str,
) -> serde_json::Value {
    owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/invitations", owner.agency),
            Some(json!({"email": email, "role": role})),
            201,
        )
        .await
}

async fn an_invitation_link_works_once(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("amara@agency.ng", "Lagos Growth").await;
    let invited = invite(&app, &owner, "Bola@Agency.ng", "admin").await;
    assert!(invited["accept_url"].as_str().unwrap().ends_with(invited["token"].as_str().unwrap()));
    assert_eq!(invited["invitation"]["email"], "bola@agency.ng");

    let newcomer = app.anonymous();
    let accept = json!({"token": invited["token"], "password": PASSWORD});
    let joined = newcomer.expect(Method::POST, "/api/v1/invitations/accept", Some(accept.clone()), 201).await;
    assert_eq!(joined["agency_id"], owner.agency.as_str());
    let me = newcomer.json("/api/v1/me").await;
    assert_eq!(me["agencies"][0]["role"], "admin");

    problem(app.anonymous().post("/api/v1/invitations/accept", accept).await, 404).await;
    let pending = owner.agent.json(&format!("/api/v1/agencies/{}/invitations", owner.agency)).await;
    assert!(pending.as_array().unwrap().is_empty());
    app.stop().await;
}

async fn expired_and_revoked_invitations_do_not_work(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("musa@agency.ng", "Kano").await;
    let expired = invite(&app, &owner, "late@agency.ng", "member").await;
    let revoked = invite(&app, &owner, "unwanted@agency.ng", "member").await;
    pipepay::on_db!(&app.db, pool => sqlx::query("UPDATE invitations SET expires_at = 0 WHERE email = 'late@agency.ng'")
        .execute(pool).await.map(|_| ())).unwrap();
    owner
        .agent
        .expect(
            Method::DELETE,
            &format!(
                "/api/v1/agencies/{}/invitations/{}",
                owner.agency,
                revoked["invitation"]["id"].as_str().unwrap()
            ),
            None,
            204,
        )
        .await;
    for invitation in [expired, revoked] {
        let accept = json!({"token": invitation["token"], "password": PASSWORD});
        problem(app.anonymous().post("/api/v1/invitations/accept", accept).await, 404).await;
    }
    let users: i64 = pipepay::on_db!(&app.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await).unwrap();
    assert_eq!(users, 1, "no account was created from a dead link");
    app.stop().await;
}

async fn an_existing_user_accepts_while_logged_in(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let first = app.sign_up("owner@first.example", "First").await;
    let second = app.sign_up("owner@second.example", "Second").await;
    let wrong_person = invite(&app, &first, "someone-else@second.example", "member").await;
    let body = problem(
        second.agent.post("/api/v1/invitations/accept", json!({"token": wrong_person["token"]})).await,
        403,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("another email"));

    let right = invite(&app, &first, "owner@second.example", "member").await;
    second
        .agent
        .expect(Method::POST, "/api/v1/invitations/accept", Some(json!({"token": right["token"]})), 200)
        .await;
    let me = second.agent.json("/api/v1/me").await;
    assert_eq!(me["agencies"].as_array().unwrap().len(), 2);
    app.stop().await;
}

async fn the_last_owner_stays(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("solo@agency.rw", "Kigali").await;
    let members = format!("/api/v1/agencies/{}/members/{}", owner.agency, owner.user);
    let body = problem(owner.agent.patch(&members, json!({"role": "admin"})).await, 409).await;
    assert_eq!(body["errors"][0]["field"], "role");
    problem(owner.agent.delete(&members).await, 409).await;

    let partner = app.add_member(&owner, "partner@agency.rw", "member").await;
    let partner_id = partner.json("/api/v1/me").await["user"]["id"].as_str().unwrap().to_owned();
    owner
        .agent
        .expect(
            Method::PATCH,
            &format!("/api/v1/agencies/{}/members/{partner_id}", owner.agency),
            Some(json!({"role": "owner"})),
            200,
        )
        .await;
    owner.agent.expect(Method::PATCH, &members, Some(json!({"role": "member"})), 200).await;
    let audit = partner.json(&format!("/api/v1/agencies/{}/audit", owner.agency)).await;
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "member.role_changed").count(), 2, "{actions:?}");
    app.stop().await;
}

async fn a_removed_member_loses_access(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@agency.tz", "Dar").await;
    let member = app.add_member(&owner, "leaver@agency.tz", "member").await;
    let member_id = member.json("/api/v1/me").await["user"]["id"].as_str().unwrap().to_owned();
    member.json(&format!("/api/v1/agencies/{}/clients", owner.agency)).await;
    owner
        .agent
        .expect(Method::DELETE, &format!("/api/v1/agencies/{}/members/{member_id}", owner.agency), None, 204)
        .await;
    problem(member.get(&format!("/api/v1/agencies/{}/clients", owner.agency)).await, 404).await;
    let audit = owner.agent.json(&format!("/api/v1/agencies/{}/audit", owner.agency)).await;
    assert_eq!(audit[0]["action"], "member.removed");
    assert_eq!(audit[0]["actor"], "owner@agency.tz");
    app.stop().await;
}
