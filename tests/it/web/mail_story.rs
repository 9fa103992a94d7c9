//! Mail in a real Chromium, with no SMTP server (the development outbox shows what was sent):
//! a person resets a forgotten password through the mailed link; an agency sees an alert and
//! its recovery on its alerts page.

use std::time::Duration;

use super::browser::story;
use crate::support::agent::PASSWORD;
use crate::support::{Engine, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "install Debian's chromium and chromium-driver to run browser stories"
)]
async fn a_forgotten_password_is_reset_through_the_mailed_link() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    app.sign_up("forgetful@browser.example", "Forgetful Co").await;
    let base = app.url("");
    let app_ref = &app;
    story("password_reset", |browser| async move {
        browser.goto(&format!("{base}/login")).await;
        browser.press("Forgot your password?").await;
        browser.fill("#email", "forgetful@browser.example").await;
        browser.press("Mail me a link").await;
        browser.wait_for_text("Check your mail", false).await;

        // No SMTP here: the development outbox shows the mail, link and all.
        browser.goto(&format!("{base}/dev/outbox")).await;
        browser.wait_for_text("Reset your pipepay password", true).await;
        let body = browser.text(".outbox-message .body").await;
        let link = body.split_whitespace().find(|w| w.contains("/reset/")).unwrap().to_owned();
        browser.goto(&link).await;
        browser.wait_for_text("forgetful@browser.example", false).await;
        browser.fill("#password", "short").await;
        browser.press("Save the new password").await;
        browser.find("#password-error").await;
        browser.fill("#password", "copper lantern river 2290 pebble").await;
        browser.press("Save the new password").await;
        browser.wait_for_text("Every other session of yours was logged out", false).await;

        // The link was for one use.
        browser.goto(&link).await;
        browser.wait_for_text("This link no longer works", false).await;
        let mut old = app_ref.anonymous();
        old.expect(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            Some(serde_json::json!({"email": "forgetful@browser.example", "password": PASSWORD})),
            401,
        )
        .await;
        old.log_in("forgetful@browser.example", "copper lantern river 2290 pebble").await;
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "install Debian's chromium and chromium-driver to run browser stories"
)]
async fn an_agency_sees_an_alert_and_its_recovery_in_its_outbox() {
    let app = TestApp::spawn_with(Engine::Sqlite, &["--alert-every", "3600"]).await;
    let owner = app.sign_up("owner@alert-story.example", "Alert Story Co").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;
    let base = app.url("");
    let alerts = format!("{base}/app/agencies/{}/alerts", owner.agency);
    let (app_ref, client_ref) = (&app, &client);
    story("alert_recovery", |browser| async move {
        let (app, client) = (app_ref, client_ref);
        browser.log_in(&base, "owner@alert-story.example", PASSWORD).await;
        browser.press("Alerts").await;
        browser.wait_for_text("No incidents so far", false).await;

        // A job dies; the next evaluation opens an incident and mails the owner.
        crate::mail::dead_job(app, client.parse().unwrap()).await;
        let quiet = Duration::from_secs(3 * 86_400);
        pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
        browser.goto(&alerts).await;
        browser.wait_for_text_in(".incident", "job(s) failed for good", true).await;
        browser.wait_for_text_in(".outbox", "Acme Kenya: Jobs failed for good", true).await;
        assert!(browser.text(".incident").await.contains("not yet"), "still open");

        // Replayed and done: the incident resolves, and the recovery is mailed once.
        pipepay::on_db!(&app.db, pool => sqlx::query("UPDATE jobs SET state = 'done'").execute(pool).await.map(drop))
            .unwrap();
        pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
        pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
        browser.wait_for_text_in(".outbox", "Acme Kenya: No failed jobs left", true).await;
        assert!(!browser.text(".incident").await.contains("not yet"), "resolved");
        let listed = browser.text(".outbox").await;
        assert_eq!(listed.matches("[pipepay] Acme Kenya: No failed jobs left").count(), 1, "{listed}");
        assert_eq!(listed.matches("[pipepay] Acme Kenya: Jobs failed for good").count(), 1, "{listed}");
    })
    .await;
    app.stop().await;
}
