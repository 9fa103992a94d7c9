//! Signing up, logging in and out, sessions, CSRF and password changes.

use reqwest::Method;
use serde_json::json;

use crate::on_both_engines;
use crate::support::agent::PASSWORD;
use crate::support::{Engine, TestApp, problem};

on_both_engines!(
    an_agency_signs_up_and_is_logged_in,
    one_email_one_account_whatever_its_case,
    weak_passwords_and_bad_emails_are_refused,
    log_in_attempts_are_limited_per_email,
    log_out_ends_the_session,
    a_password_change_ends_every_other_session,
    cookie_changes_need_the_csrf_token,
    an_active_session_is_renewed,
);

async fn an_agency_signs_up_and_is_logged_in(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let mut agent = app.anonymous();
    let response = agent
        .post(
            "/api/v1/auth/signup",
            json!({"email": " Ada@Acme.Africa ", "password": PASSWORD, "agency_name": "Acme"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let cookies: Vec<String> =
        response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let session = cookies.iter().find(|c| c.starts_with("pipepay_session=")).expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"), "{session}");
    assert!(!session.contains("Secure"), "no Secure flag over plain http");
    let me: serde_json::Value = response.json().await.unwrap();
    assert_eq!(me["user"]["email"], "ada@acme.africa");
    assert_eq!(me["agencies"][0]["role"], "owner");
    agent.csrf = me["csrf_token"].as_str().map(str::to_owned);

    let again = agent.json("/api/v1/me").await;
    assert_eq!(again["user"], me["user"]);
    assert_eq!(app.anonymous().get("/api/v1/me").await.status(), 401);
    app.stop().await;
}

async fn one_email_one_account_whatever_its_case(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    app.sign_up("kofi@agency.gh", "First").await;
    let response = app
        .anonymous()
        .post(
            "/api/v1/auth/signup",
            json!({"email": "KOFI@agency.gh", "password": PASSWORD, "agency_name": "Second"}),
        )
        .await;
    let body = problem(response, 409).await;
    assert_eq!(body["errors"][0]["field"], "email");
    let agencies: i64 = pipepay::on_db!(&app.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM agencies")
        .fetch_one(pool).await)
    .unwrap();
    assert_eq!(agencies, 1, "the refused sign-up left no agency behind");
    app.stop().await;
}

async fn weak_passwords_and_bad_emails_are_refused(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let anon = app.anonymous();
    for (email, password, field) in [
        ("ama@agency.gh", "short", "password"),
        ("ama@agency.gh", "password1234", "password"),
        ("ama@agency.gh", "ama@agency.gh!", "password"),
        ("not-an-email", PASSWORD, "email"),
    ] {
        let response = anon
            .post("/api/v1/auth/signup", json!({"email": email, "password": password, "agency_name": "A"}))
            .await;
        let body = problem(response, 422).await;
        let fields: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, [field], "{email} / {password}: {body}");
        assert!(!body.to_string().contains(password) || password == PASSWORD, "the password is not echoed");
    }
    let users: i64 = pipepay::on_db!(&app.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(pool).await)
    .unwrap();
    assert_eq!(users, 0);
    app.stop().await;
}

async fn log_in_attempts_are_limited_per_email(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    app.sign_up("wanjiru@agency.ke", "Nairobi").await;
    let anon = app.anonymous();
    let wrong = json!({"email": "wanjiru@agency.ke", "password": "not the password at all"});
    for _ in 0..5 {
        problem(anon.post("/api/v1/auth/login", wrong.clone()).await, 401).await;
    }
    let limited =
        anon.post("/api/v1/auth/login", json!({"email": "wanjiru@agency.ke", "password": PASSWORD})).await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    problem(limited, 429).await;
    // Another email from the same place is not held back by this one's failures.
    let other =
        anon.post("/api/v1/auth/login", json!({"email": "someone@agency.ke", "password": PASSWORD})).await;
    problem(other, 401).await;
    app.stop().await;
}

async fn log_out_ends_the_session(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("tunde@agency.ng", "Lagos").await;
    // A copy of the cookie as it was, as an attacker who stole it would hold it.
    let stolen = owner.agent.clone();
    let out = owner.agent.post("/api/v1/auth/logout", json!({})).await;
    assert_eq!(out.status(), 204);
    let cleared =
        out.headers().get_all("set-cookie").iter().any(|v| v.to_str().unwrap().contains("Max-Age=0"));
    assert!(cleared, "log-out clears the cookie");
    problem(stolen.get("/api/v1/me").await, 401).await;
    app.stop().await;
}

async fn a_password_change_ends_every_other_session(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("zainab@agency.ng", "Abuja").await;
    let mut laptop = app.anonymous();
    laptop.log_in("zainab@agency.ng", PASSWORD).await;

    let wrong_current = owner
        .agent
        .post(
            "/api/v1/auth/password",
            json!({"current_password": "nope nope nope", "new_password": "a brand new passphrase 77"}),
        )
        .await;
    assert_eq!(problem(wrong_current, 422).await["errors"][0]["field"], "current_password");

    let mut phone = owner.agent.clone();
    let me = phone
        .expect(
            Method::POST,
            "/api/v1/auth/password",
            Some(json!({"current_password": PASSWORD, "new_password": "a brand new passphrase 77"})),
            200,
        )
        .await;
    phone.csrf = me["csrf_token"].as_str().map(str::to_owned);
    phone.json("/api/v1/me").await;
    problem(laptop.get("/api/v1/me").await, 401).await;
    problem(
        app.anonymous()
            .post("/api/v1/auth/login", json!({"email": "zainab@agency.ng", "password": PASSWORD}))
            .await,
        401,
    )
    .await;
    app.anonymous().log_in("zainab@agency.ng", "a brand new passphrase 77").await;
    app.stop().await;
}

async fn cookie_changes_need_the_csrf_token(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("efua@agency.gh", "Accra").await;
    let path = format!("/api/v1/agencies/{}/clients", owner.agency);
    let mut forged = owner.agent.clone();
    forged.csrf = None;
    let body = problem(forged.post(&path, json!({"name": "Shop"})).await, 403).await;
    assert!(body["detail"].as_str().unwrap().contains("x-csrf-token"));
    forged.csrf = Some("guessed".into());
    problem(forged.post(&path, json!({"name": "Shop"})).await, 403).await;
    // A browser on another site is refused before the token is even looked at.
    let cross_site = owner
        .agent
        .http
        .post(format!("{}{path}", owner.agent.base))
        .header("x-csrf-token", owner.agent.csrf.clone().unwrap())
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .json(&json!({"name": "Shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    assert!(forged.json(&path).await.as_array().unwrap().is_empty(), "nothing was created");
    owner.agent.expect(Method::POST, &path, Some(json!({"name": "Shop"})), 201).await;
    app.stop().await;
}

async fn an_active_session_is_renewed(engine: Engine) {
    use pipepay::auth::session::SessionKeys;
    let app = TestApp::spawn_with(engine, &["--session-ttl", "600"]).await;
    let owner = app.sign_up("chidi@agency.ng", "Enugu").await;
    // Mint a token for the same live session that is close to expiry, as if the user had been
    // idle for most of its life.
    let keys =
        SessionKeys::derive(&app.master_keys.parse().unwrap(), std::time::Duration::from_secs(60)).unwrap();
    let jar_cookie = owner.agent.get("/api/v1/me").await;
    drop(jar_cookie);
    let mut tx = app.db.read().await.unwrap();
    let (session, user): (uuid::Uuid, uuid::Uuid) = pipepay::on_tx!(&mut tx, c => sqlx::query_as(
        "SELECT id, user_id FROM sessions").fetch_one(c).await)
    .unwrap();
    tx.commit().await.unwrap();
    let (token, _) = keys
        .issue(
            pipepay::ids::UserId(user),
            pipepay::ids::SessionId(session),
            owner.agent.csrf.as_deref().unwrap(),
        )
        .unwrap();
    let response = app
        .http
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("pipepay_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let renewed = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("pipepay_session="))
        .expect("a token past half its life is renewed");
    assert!(renewed.contains("Max-Age=600"), "{renewed}");
    // A fresh token is not renewed on every request.
    let fresh = owner.agent.get("/api/v1/me").await;
    assert!(fresh.headers().get("set-cookie").is_none());
    app.stop().await;
}
