//! Mail and alerts (issue 15): password reset by a single-use link, invitations and address
//! checks by mail, SMTP retried after a refusal, alerts opened once and resolved once, to the
//! owners' mail and a signed webhook.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fakes::smtp::FakeSmtp;
use crate::on_both_engines;
use crate::pipeline::eventually;
use crate::support::agent::PASSWORD;
use crate::support::{Engine, TestApp};
use crate::web::{Page, get, location, submit};

const WAIT: Duration = Duration::from_secs(20);

on_both_engines!(
    a_reset_link_works_once_and_ends_other_sessions,
    a_reset_link_expires_and_a_wrong_one_is_refused,
    forgot_password_answers_the_same_for_unknown_addresses,
    an_invitation_is_mailed_through_smtp,
    mail_refused_for_a_while_is_sent_later,
    a_new_account_confirms_its_address,
    an_alert_opens_once_then_resolves_by_mail_and_webhook,
    each_condition_opens_its_own_incident_and_closes_when_fixed,
);

/// Waits for an outbox row to `to` whose subject contains `subject`; returns its body.
pub async fn outbox_mail(app: &TestApp, to: &str, subject: &str) -> String {
    let what = format!("mail {subject:?} to {to}");
    eventually(WAIT, &what, || async { newest_mail(app, to, subject).await.is_some() }).await;
    newest_mail(app, to, subject).await.unwrap()
}

async fn newest_mail(app: &TestApp, to: &str, subject: &str) -> Option<String> {
    let rows: Vec<(String, String)> = pipepay::on_db!(&app.db, pool => sqlx::query_as(
        "SELECT subject, body FROM outbox WHERE recipient = $1 ORDER BY created_at DESC",
    )
    .bind(to)
    .fetch_all(pool)
    .await)
    .unwrap();
    rows.into_iter().find(|(s, _)| s.contains(subject)).map(|(_, body)| body)
}

/// The path of the first link in `text` that contains `/{kind}/`.
pub fn link_path(text: &str, kind: &str) -> String {
    let at = text.find(&format!("/{kind}/")).unwrap_or_else(|| panic!("no /{kind}/ link in {text}"));
    text[at..].split_whitespace().next().unwrap().to_owned()
}

/// Waits until the outbox rows to `to` have left the delivery loop; returns (state, attempts).
async fn delivered(app: &TestApp, to: &str) -> (String, i64) {
    let what = format!("the mail to {to} to leave the delivery loop");
    eventually(WAIT, &what, || async { settled_mail(app, to).await.is_some() }).await;
    settled_mail(app, to).await.unwrap()
}

async fn settled_mail(app: &TestApp, to: &str) -> Option<(String, i64)> {
    pipepay::on_db!(&app.db, pool => sqlx::query_as(
        "SELECT state, attempts FROM outbox WHERE recipient = $1 AND state NOT IN ('ready', 'sending')",
    )
    .bind(to)
    .fetch_optional(pool)
    .await)
    .unwrap()
}

pub async fn count(app: &TestApp, sql: &'static str) -> i64 {
    pipepay::on_db!(&app.db, pool => sqlx::query_scalar(sql).fetch_one(pool).await).unwrap()
}

async fn a_reset_link_works_once_and_ends_other_sessions(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("forgetful@reset.example", "Reset Co").await;
    let visitor = app.anonymous();
    let login = get(&visitor, "/login").await;
    assert_eq!(login.attr("a[href=\"/forgot\"]", "href").as_deref(), Some("/forgot"));
    let asked = submit(&visitor, "/forgot", &[("email", "Forgetful@reset.example")]).await;
    assert_eq!(asked.status(), 200);
    let body = outbox_mail(&app, "forgetful@reset.example", "Reset your pipepay password").await;
    let path = link_path(&body, "reset");
    let token = path.trim_start_matches("/reset/");
    let stored: i64 = pipepay::on_db!(&app.db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_tokens WHERE token_hash = $1 AND purpose = 'reset'",
    )
    .bind(pipepay::auth::tokens::hash(token))
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(stored, 1, "only the token's hash is stored");

    let form = get(&visitor, &path).await;
    assert_eq!(form.status, 200);
    assert!(form.text.contains("forgetful@reset.example"));
    let weak = submit(&visitor, &path, &[("password", "short")]).await;
    assert_eq!(weak.status(), 422, "a weak password is refused and the link still works");
    assert_eq!(get(&visitor, &path).await.status, 200);

    let new_password = "copper lantern river 2290 pebble";
    let reset = submit(&visitor, &path, &[("password", new_password)]).await;
    assert_eq!(reset.status(), 303);
    assert_eq!(location(&reset), "/app/account?done=password-reset");
    let account = get(&visitor, "/app/account?done=password-reset").await;
    assert_eq!(account.status, 200, "the reset logs this browser in");
    // The owner's older session has ended.
    owner.agent.expect(Method::GET, "/api/v1/me", None, 401).await;
    app.anonymous()
        .expect(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"email": "forgetful@reset.example", "password": PASSWORD})),
            401,
        )
        .await;
    let mut again = app.anonymous();
    again.log_in("forgetful@reset.example", new_password).await;

    // Used once: the same link is refused, for a view and for a post.
    assert_eq!(get(&visitor, &path).await.status, 404);
    let replayed = submit(&app.anonymous(), &path, &[("password", "another strong one 8812 kettle")]).await;
    assert_eq!(replayed.status(), 404);
    app.stop().await;
}

async fn a_reset_link_expires_and_a_wrong_one_is_refused(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    app.sign_up("late@reset.example", "Late Co").await;
    let visitor = app.anonymous();
    assert_eq!(get(&visitor, "/reset/ppr_not-a-real-token").await.status, 404);
    assert_eq!(submit(&visitor, "/reset/ppr_nope", &[("password", PASSWORD)]).await.status(), 404);

    submit(&visitor, "/forgot", &[("email", "late@reset.example")]).await;
    let first = link_path(&outbox_mail(&app, "late@reset.example", "Reset").await, "reset");
    // A second request: only the newest link works.
    pipepay::on_db!(&app.db, pool => sqlx::query("DELETE FROM outbox").execute(pool).await.map(drop))
        .unwrap();
    submit(&visitor, "/forgot", &[("email", "late@reset.example")]).await;
    let second = link_path(&outbox_mail(&app, "late@reset.example", "Reset").await, "reset");
    assert_ne!(first, second);
    assert_eq!(get(&visitor, &first).await.status, 404, "an older link stops working");
    assert_eq!(get(&visitor, &second).await.status, 200);
    // An hour later it has expired.
    pipepay::on_db!(&app.db, pool => sqlx::query("UPDATE email_tokens SET expires_at = $1")
        .bind(pipepay::clock::now_ms() - 1)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    assert_eq!(get(&visitor, &second).await.status, 404);
    assert_eq!(
        submit(&visitor, &second, &[("password", "copper lantern river 2290 pebble")]).await.status(),
        404
    );
    app.stop().await;
}

async fn forgot_password_answers_the_same_for_unknown_addresses(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    app.sign_up("known@reset.example", "Known Co").await;
    let known =
        Page::read(submit(&app.anonymous(), "/forgot", &[("email", "known@reset.example")]).await).await;
    let unknown =
        Page::read(submit(&app.anonymous(), "/forgot", &[("email", "nobody@reset.example")]).await).await;
    assert_eq!((known.status, unknown.status), (200, 200));
    assert_eq!(known.one("main"), unknown.one("main"), "the same answer either way");
    outbox_mail(&app, "known@reset.example", "Reset").await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox WHERE recipient = 'nobody@reset.example'").await, 0);
    // Limited like logging in: a burst for one address, then a wait.
    let visitor = app.anonymous();
    let mut refused = 0;
    for _ in 0..8 {
        if submit(&visitor, "/forgot", &[("email", "known@reset.example")]).await.status() == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 2, "refused {refused}");
    app.stop().await;
}

async fn an_invitation_is_mailed_through_smtp(engine: Engine) {
    let smtp = FakeSmtp::start().await;
    let url = smtp.url();
    let app = TestApp::spawn_with(
        engine,
        &["--smtp-url", &url, "--email-from", "pipepay <alerts@pipepay.example>"],
    )
    .await;
    let owner = app.sign_up("boss@invite.example", "Invite Co").await;
    let invited = owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/invitations", owner.agency),
            Some(json!({"email": "new.hire@invite.example", "role": "member"})),
            201,
        )
        .await;
    let mail = smtp.mail_to("new.hire@invite.example").await;
    assert!(mail.data.contains("From: pipepay <alerts@pipepay.example>"), "{}", mail.data);
    assert!(mail.data.contains("Invite Co"), "{}", mail.data);
    let token = invited["token"].as_str().unwrap();
    assert!(mail.data.contains(&format!("/join/{token}")), "the mail carries the join link: {}", mail.data);
    assert_eq!(delivered(&app, "new.hire@invite.example").await.0, "sent");
    let kept: String = pipepay::on_db!(&app.db, pool => sqlx::query_scalar(
        "SELECT body FROM outbox WHERE recipient = 'new.hire@invite.example'",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert!(!kept.contains(token), "a sent link is not kept in the outbox: {kept}");
    // The sign-up's address check went out too; with SMTP configured, /dev/outbox does not exist.
    smtp.mail_to("boss@invite.example").await;
    assert_eq!(get(&app.anonymous(), "/dev/outbox").await.status, 404);
    app.stop().await;
}

async fn mail_refused_for_a_while_is_sent_later(engine: Engine) {
    let smtp = FakeSmtp::start().await;
    smtp.refuse_next(2);
    let url = smtp.url();
    let app = TestApp::spawn_with(engine, &["--smtp-url", &url, "--job-retry-base", "100"]).await;
    app.sign_up("patient@retry.example", "Retry Co").await;
    let mail = smtp.mail_to("patient@retry.example").await;
    assert!(mail.data.contains("/verify/"));
    assert_eq!(smtp.refused.load(std::sync::atomic::Ordering::SeqCst), 2, "refused twice, then accepted");
    let (state, attempts) = delivered(&app, "patient@retry.example").await;
    assert_eq!((state.as_str(), attempts), ("sent", 3));
    assert_eq!(smtp.mails().len(), 1, "sent once");
    app.stop().await;
}

async fn a_new_account_confirms_its_address(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let visitor = app.anonymous();
    let signed_up = submit(
        &visitor,
        "/signup",
        &[("agency_name", "Verify Co"), ("email", "fresh@verify.example"), ("password", PASSWORD)],
    )
    .await;
    let home = location(&signed_up);
    let page = get(&visitor, &home).await;
    assert!(page.one(".banner").contains("Confirm your email address"), "unverified: a banner");
    let link = link_path(&outbox_mail(&app, "fresh@verify.example", "Confirm your email").await, "verify");

    // Resending makes a new link; the old one stops working.
    let mut agent = app.anonymous();
    agent.log_in("fresh@verify.example", PASSWORD).await;
    pipepay::on_db!(&app.db, pool => sqlx::query("DELETE FROM outbox").execute(pool).await.map(drop))
        .unwrap();
    let resent = submit(&agent, "/app/account/verify", &[]).await;
    assert_eq!(location(&resent), "/app/account?done=verification-sent");
    let newer = link_path(&outbox_mail(&app, "fresh@verify.example", "Confirm your email").await, "verify");
    assert_eq!(get(&visitor, &link).await.status, 404);

    let confirmed = get(&app.anonymous(), &newer).await;
    assert_eq!(confirmed.status, 200);
    assert_eq!(confirmed.one("h1"), "Address confirmed");
    assert!(get(&visitor, &home).await.all(".banner").is_empty(), "no banner once confirmed");
    assert_eq!(get(&visitor, &newer).await.status, 404, "single use");
    app.stop().await;
}

/// A webhook receiver on loopback: answers 500 to the first call (unless steady), then 200, and
/// keeps each call.
#[derive(Clone, Default)]
pub struct Receiver {
    calls: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    steady: bool,
}

impl Receiver {
    /// A receiver that answers 200 every time: each call it keeps is one delivery.
    pub fn steady() -> Receiver {
        Receiver { steady: true, ..Receiver::default() }
    }

    pub async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    let mut calls = me.calls.lock().unwrap();
                    calls.push((headers, body));
                    if calls.len() == 1 && !me.steady {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/hook")
    }

    pub async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, String)> {
        let started = Instant::now();
        loop {
            let calls = self.calls.lock().unwrap().clone();
            if calls.len() >= n {
                return calls;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{} webhook calls, wanted {n}", calls.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks `Pipepay-Signature: t=..,v1=..` against the secret, independently of pipepay's code.
pub fn signed_by(headers: &HeaderMap, body: &str, secret: &str) -> bool {
    let header = headers.get("pipepay-signature").unwrap().to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes()) == v1
}

async fn an_alert_opens_once_then_resolves_by_mail_and_webhook(engine: Engine) {
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let app = TestApp::spawn_with(
        engine,
        &["--alert-allow-private", "--alert-every", "3600", "--job-retry-base", "100"],
    )
    .await;
    let owner = app.sign_up("owner@alerts.example", "Alert Co").await;
    app.add_member(&owner, "helper@alerts.example", "admin").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;

    // The owner points alerts at their webhook; the signing secret is shown once.
    let base = format!("/app/agencies/{}/alerts", owner.agency);
    let saved =
        Page::read(submit(&owner.agent, &base, &[("email_owners", "on"), ("webhook_url", &hook)]).await)
            .await;
    assert_eq!(saved.status, 200);
    let secret = saved.attr("#webhook-secret", "value").unwrap();
    assert!(secret.starts_with("ppw_"));
    assert!(get(&owner.agent, &base).await.attr("#webhook-secret", "value").is_none(), "shown once");

    // A job dies: one incident, one mail to the owner (not the admin), one webhook call.
    dead_job(&app, client.parse().unwrap()).await;
    let quiet = Duration::from_secs(3 * 86_400);
    pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
    pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
    assert_eq!(count(&app, "SELECT COUNT(*) FROM incidents").await, 1, "opened once, not on each evaluation");
    let opened = outbox_mail(&app, "owner@alerts.example", "Jobs failed for good").await;
    assert!(opened.contains("Acme Kenya"), "{opened}");
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM outbox WHERE recipient = 'helper@alerts.example' AND subject LIKE '%Jobs%'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM outbox WHERE recipient = 'owner@alerts.example' AND subject LIKE '%Jobs%'"
        )
        .await,
        1
    );

    // The receiver answered 500 the first time: the call came again, signed, with Slack's text.
    let calls = receiver.wait_for(2).await;
    let (headers, body) = &calls[1];
    assert_eq!(&calls[0].1, body, "the same body, retried");
    assert!(signed_by(headers, body, &secret), "the signature verifies with the secret shown once");
    assert!(!signed_by(headers, body, "ppw_wrong"));
    let sent: Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent["event"], "incident.opened");
    assert!(sent["text"].as_str().unwrap().contains("Acme Kenya: Jobs failed for good"), "{sent}");

    // The job is dealt with: the incident closes, and its recovery is told once.
    pipepay::on_db!(&app.db, pool => sqlx::query("UPDATE jobs SET state = 'done'").execute(pool).await.map(drop)).unwrap();
    pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
    pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
    assert_eq!(count(&app, "SELECT COUNT(*) FROM incidents WHERE closed_at IS NOT NULL").await, 1);
    let resolved = outbox_mail(&app, "owner@alerts.example", "No failed jobs left").await;
    assert!(resolved.contains("(resolved)"), "{resolved}");
    let calls = receiver.wait_for(3).await;
    let resolved: Value = serde_json::from_str(&calls[2].1).unwrap();
    assert_eq!(resolved["event"], "incident.resolved");
    assert!(signed_by(&calls[2].0, &calls[2].1, &secret));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox WHERE channel = 'webhook'").await, 2);

    // The alerts page lists the incident and the agency's own outbox (owners only).
    let page = get(&owner.agent, &base).await;
    assert_eq!(page.all(".incident").len(), 1);
    assert!(page.all(".outbox-message h3").iter().any(|s| s.contains("No failed jobs left")));
    // Another agency sees none of it.
    let other = app.sign_up("stranger@other.example", "Other Co").await;
    assert_eq!(get(&other.agent, &base).await.status, 404);
    let theirs = get(&other.agent, &format!("/app/agencies/{}/alerts", other.agency)).await;
    assert!(theirs.all(".outbox-message").is_empty() && theirs.all(".incident").is_empty());
    app.stop().await;
}

/// A job for `client` that has died after its last attempt, as Kommo refused it.
pub async fn dead_job(app: &TestApp, client: uuid::Uuid) {
    let now = pipepay::clock::now_ms();
    pipepay::on_db!(&app.db, pool => sqlx::query(
        "INSERT INTO jobs (id, client_id, kind, payload, state, attempts, max_attempts, run_at, last_error, \
         created_at, updated_at) VALUES ($1, $2, 'lead', '{}', 'dead', 10, 10, $3, 'Kommo refused (400)', $3, $3)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(client)
    .bind(now)
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
}

/// Runs one statement with a client account id and a time bound as `$1` and `$2`.
async fn given(app: &TestApp, sql: &'static str, client: uuid::Uuid, at: i64) {
    pipepay::on_db!(&app.db, pool => sqlx::query(sql).bind(client).bind(at).execute(pool).await.map(drop))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn open_kinds(app: &TestApp) -> Vec<String> {
    pipepay::on_db!(&app.db, pool => sqlx::query_scalar(
        "SELECT kind FROM incidents WHERE closed_at IS NULL ORDER BY kind",
    )
    .fetch_all(pool)
    .await)
    .unwrap()
}

async fn each_condition_opens_its_own_incident_and_closes_when_fixed(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--alert-every", "3600"]).await;
    let owner = app.sign_up("owner@conditions.example", "Conditions Co").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Lagos Homes").await;
    let client: uuid::Uuid = client.parse().unwrap();
    let now = pipepay::clock::now_ms();
    let days_ago = now - 4 * 86_400_000;
    // Kommo uninstalled; the pipeline paused on a refused key; a link open for four days with no
    // Flutterwave webhook, and a payment for it refused as too small; a dead job.
    given(
        &app,
        "INSERT INTO kommo_connections (client_id, account_id, host, subdomain, account_name, refreshed_at, \
         health, health_changed_at, webhook_status, connected_at, updated_at) \
         VALUES ($1, 4242, 'lagos.kommo.com', 'lagos', 'Lagos', $2, 'revoked', $2, 'subscribed', $2, $2)",
        client,
        now,
    )
    .await;
    given(
        &app,
        "INSERT INTO client_pauses (client_id, reason, since, cause) \
         VALUES ($1, 'Flutterwave refused the secret key; paste the current keys', $2, 'flutterwave_key_refused')",
        client,
        now,
    )
    .await;
    given(
        &app,
        "INSERT INTO payment_links (id, client_id, lead_id, pipeline_id, tx_ref, amount, currency, state, \
         created_at, updated_at) VALUES ($1, $1, 7, 1, 'pp-tx-1', '5000.00', 'NGN', 'open', $2, $2)",
        client,
        days_ago,
    )
    .await;
    given(
        &app,
        "INSERT INTO activity (id, client_id, at, kind, outcome, tx_ref, detail) \
         VALUES ($1, $1, $2, 'payment_rejected', 'failed', 'pp-tx-1', 'paid 10.00 NGN')",
        client,
        now,
    )
    .await;
    given(
        &app,
        "INSERT INTO jobs (id, client_id, kind, payload, state, attempts, max_attempts, run_at, \
         created_at, updated_at) VALUES ($1, $1, 'lead', '{}', 'dead', 10, 10, $2, $2, $2)",
        client,
        now,
    )
    .await;
    let quiet = Duration::from_secs(3 * 86_400);
    pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
    assert_eq!(
        open_kinds(&app).await,
        ["dead_jobs", "flutterwave_key", "kommo", "quiet_flutterwave", "underpaid"],
        "one incident per condition"
    );
    for subject in [
        "Kommo needs you",
        "Flutterwave refused the secret key",
        "No Flutterwave webhooks",
        "A payment was too small",
        "Jobs failed for good",
    ] {
        outbox_mail(&app, "owner@conditions.example", subject).await;
    }

    // Fixed: reconnected, keys accepted, a webhook arrived and the link was paid. The dead job
    // is still there, so its incident stays open.
    given(
        &app,
        "UPDATE kommo_connections SET health = 'active' WHERE client_id = $1 AND updated_at <= $2",
        client,
        now,
    )
    .await;
    given(&app, "DELETE FROM client_pauses WHERE client_id = $1 AND since <= $2", client, now).await;
    given(
        &app,
        "INSERT INTO inbound_events (id, client_id, source, dedup_key, payload, received_at, outcome) \
         VALUES ($1, $1, 'flutterwave', 'fw-1', '{}', $2, 'queued')",
        client,
        now,
    )
    .await;
    given(
        &app,
        "UPDATE payment_links SET state = 'paid' WHERE client_id = $1 AND created_at <= $2",
        client,
        now,
    )
    .await;
    pipepay::alerts::evaluate(&app.db, quiet).await.unwrap();
    assert_eq!(open_kinds(&app).await, ["dead_jobs"]);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM incidents WHERE closed_at IS NOT NULL").await, 4);
    for subject in [
        "Kommo is connected again",
        "Flutterwave accepts the keys again",
        "Flutterwave webhooks arrive again",
        "No underpaid link left open",
    ] {
        outbox_mail(&app, "owner@conditions.example", subject).await;
    }
    app.stop().await;
}
