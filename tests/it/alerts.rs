//! Issue 15: alerts proven through the real pipeline. Kommo refuses pipepay's tokens, Kommo
//! uninstalls the integration, Flutterwave refuses the secret key: each reached through the
//! real ingress, queue and pipeline (only Kommo and Flutterwave are fakes); then the alert duty
//! opens one incident, mails the owner once and posts once to the signed webhook, and once the
//! cause is fixed, tells its recovery once.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fakes::flutterwave::Fault;
use crate::kommo::{ACME, connect};
use crate::mail::{Receiver, count, outbox_mail, signed_by};
use crate::on_both_engines;
use crate::pipeline::{HASH, SECRET, Shop, eventually};
use crate::support::Engine;
use crate::web::{Page, submit};

on_both_engines!(
    kommo_refusing_the_refresh_alerts_once_and_recovers_once,
    an_uninstall_from_kommo_alerts_once_and_recovers_once,
    flutterwave_refusing_the_key_alerts_once_and_recovers_once,
);

const WAIT: Duration = Duration::from_secs(20);
const OWNER: &str = "shop@agency.co.ke";

/// A wired client account whose agency's alerts go to the owner and a steady webhook receiver.
struct Watched {
    shop: Shop,
    receiver: Receiver,
    secret: String,
}

async fn watched(engine: Engine) -> Watched {
    let receiver = Receiver::steady();
    let hook = receiver.start().await;
    let shop = Shop::open_with(engine, &["--alert-allow-private", "--alert-every", "3600"]).await;
    let base = format!("/app/agencies/{}/alerts", shop.owner.agency);
    let saved =
        Page::read(submit(&shop.owner.agent, &base, &[("email_owners", "on"), ("webhook_url", &hook)]).await)
            .await;
    assert_eq!(saved.status, 200);
    let secret = saved.attr("#webhook-secret", "value").unwrap();
    Watched { shop, receiver, secret }
}

impl Watched {
    /// Runs the alert duty twice (the second must change nothing) and waits for the outbox to
    /// deliver what it wrote.
    async fn duty(&self) {
        let quiet = Duration::from_secs(3 * 86_400);
        pipepay::alerts::evaluate(&self.shop.app.db, quiet).await.unwrap();
        pipepay::alerts::evaluate(&self.shop.app.db, quiet).await.unwrap();
        let app = &self.shop.app;
        eventually(WAIT, "the outbox delivered", || async {
            count(app, "SELECT COUNT(*) FROM outbox WHERE state IN ('ready', 'sending')").await == 0
        })
        .await;
    }

    async fn mails(&self, subject: &str) -> i64 {
        let rows: Vec<String> = pipepay::on_db!(&self.shop.app.db, pool => sqlx::query_scalar(
            "SELECT subject FROM outbox WHERE channel = 'email' AND recipient = $1",
        )
        .bind(OWNER)
        .fetch_all(pool)
        .await)
        .unwrap();
        i64::try_from(rows.iter().filter(|s| s.contains(subject)).count()).unwrap()
    }

    /// The incident of `kind` opened once: one open row, one mail, one signed webhook call.
    async fn opened_once(&self, kind: &str, title: &str) -> Value {
        self.duty().await;
        let app = &self.shop.app;
        assert_eq!(count(app, "SELECT COUNT(*) FROM incidents").await, 1, "one incident");
        let open: String = pipepay::on_db!(&app.db, pool => sqlx::query_scalar(
            "SELECT kind FROM incidents WHERE closed_at IS NULL",
        )
        .fetch_one(pool)
        .await)
        .unwrap();
        assert_eq!(open, kind);
        let mail = outbox_mail(app, OWNER, title).await;
        assert!(mail.contains("Acme Kenya"), "{mail}");
        assert_eq!(self.mails(title).await, 1, "mailed once");
        let calls = self.receiver.wait_for(1).await;
        assert_eq!(calls.len(), 1, "posted once");
        let (headers, body) = &calls[0];
        assert!(signed_by(headers, body, &self.secret));
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(sent["event"], "incident.opened");
        assert_eq!(sent["incident"]["kind"], kind);
        sent
    }

    /// Fixed: the incident closes, and its recovery is mailed once and posted once.
    async fn recovered_once(&self, title: &str) {
        self.duty().await;
        let app = &self.shop.app;
        assert_eq!(count(app, "SELECT COUNT(*) FROM incidents WHERE closed_at IS NULL").await, 0, "closed");
        assert_eq!(count(app, "SELECT COUNT(*) FROM incidents").await, 1, "nothing new opened");
        let mail = outbox_mail(app, OWNER, title).await;
        assert!(mail.contains("(resolved)"), "{mail}");
        assert_eq!(self.mails(title).await, 1, "recovery mailed once");
        let calls = self.receiver.wait_for(2).await;
        assert_eq!(calls.len(), 2, "recovery posted once");
        let (headers, body) = &calls[1];
        assert!(signed_by(headers, body, &self.secret));
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["event"], "incident.resolved");
    }

    async fn pause_cause(&self) -> Option<String> {
        pipepay::on_db!(&self.shop.app.db, pool => sqlx::query_scalar(
            "SELECT cause FROM client_pauses",
        )
        .fetch_optional(pool)
        .await)
        .unwrap()
        .flatten()
    }

    /// A deal moved to the trigger stage in Kommo: its webhook goes through the real ingress and
    /// its job through the real queue and pipeline.
    async fn deal_moves(&self, lead: i64) {
        self.shop.lead(lead, "75");
        self.shop.to_invoice(lead).await;
        self.shop.app.queue_settled().await;
    }

    /// Kommo connected again by the owner, through the consent.
    async fn reconnect(&self) {
        let shop = &self.shop;
        let (status, page) =
            connect(&shop.owner.agent, &shop.owner.agency, &shop.client, &shop.kommo, ACME).await;
        assert_eq!(status, 200, "{page}");
    }
}

async fn kommo_refusing_the_refresh_alerts_once_and_recovers_once(engine: Engine) {
    let w = watched(engine).await;
    // Every token dies: the API answers 401, and so does the refresh.
    w.shop.kommo.revoke_all(ACME);
    w.deal_moves(911).await;
    assert_eq!(w.pause_cause().await.as_deref(), Some("kommo_reauth"), "paused for the typed cause");
    // The refused refresh is in the attempt's call log, without the refresh token it spent.
    let logs: Vec<String> = pipepay::on_db!(&w.shop.app.db, pool => sqlx::query_scalar(
        "SELECT calls FROM job_attempts ORDER BY started_at",
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    let refreshes: Vec<Value> = logs
        .iter()
        .flat_map(|log| serde_json::from_str::<Vec<Value>>(log).unwrap())
        .filter(|call| call["path"].as_str().is_some_and(|p| p.ends_with("/oauth2/access_token")))
        .collect();
    assert!(refreshes.iter().any(|call| call["status"] == 401), "{logs:?}");
    for token in w.shop.kommo.issued_tokens(ACME) {
        assert!(logs.iter().all(|log| !log.contains(&token)), "a token is in the call log: {logs:?}");
    }
    let sent = w.opened_once("kommo", "Kommo needs you").await;
    assert!(sent["incident"]["detail"].as_str().unwrap().contains("authorised again"), "{sent}");

    // The owner connects Kommo again: the paused job runs, the deal gets its link.
    w.reconnect().await;
    eventually(WAIT, "the link for 911", || async { w.shop.notes(911).len() == 1 }).await;
    w.shop.app.queue_settled().await;
    w.recovered_once("Kommo is connected again").await;
    w.shop.app.stop().await;
}

async fn an_uninstall_from_kommo_alerts_once_and_recovers_once(engine: Engine) {
    let w = watched(engine).await;
    let hook = w.shop.app.url("/oauth/kommo/uninstall");
    assert_eq!(w.shop.kommo.uninstall(ACME, &hook).await, 200);
    let sent = w.opened_once("kommo", "Kommo needs you").await;
    assert!(sent["incident"]["detail"].as_str().unwrap().contains("uninstalled"), "{sent}");

    // Installed again: the incident closes once.
    w.reconnect().await;
    w.recovered_once("Kommo is connected again").await;
    w.shop.app.stop().await;
}

async fn flutterwave_refusing_the_key_alerts_once_and_recovers_once(engine: Engine) {
    let w = watched(engine).await;
    // The key is revoked in the dashboard: the link request meets 401.
    w.shop.flw.fail_next(SECRET, vec![Fault::Unauthorized]);
    w.deal_moves(912).await;
    assert!(w.shop.flw.created(SECRET).is_empty());
    assert_eq!(w.pause_cause().await.as_deref(), Some("flutterwave_key_refused"));
    let sent = w.opened_once("flutterwave_key", "Flutterwave refused the secret key").await;
    assert!(sent["text"].as_str().unwrap().contains("Acme Kenya"), "{sent}");

    // The keys are pasted again (checked with Flutterwave): the pause lifts, the link is made.
    w.shop
        .owner
        .agent
        .expect(
            Method::PUT,
            &w.shop.path("/flutterwave-keys"),
            Some(json!({"secret_key": SECRET, "webhook_hash": HASH})),
            200,
        )
        .await;
    eventually(WAIT, "the link for 912", || async { w.shop.notes(912).len() == 1 }).await;
    w.shop.app.queue_settled().await;
    assert_eq!(w.pause_cause().await, None);
    w.recovered_once("Flutterwave accepts the keys again").await;
    w.shop.app.stop().await;
}
